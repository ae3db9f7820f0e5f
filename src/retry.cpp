#include <stampede/error.hpp>
#include <stampede/retry.hpp>

#include <boost/asio/error.hpp>
#include <boost/system/errc.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>

namespace stampede {
namespace {

namespace chrono = std::chrono;

// Retry-After parsing
// -----------------------------------------------------------------------------------------

constexpr std::array<std::string_view, 7> short_day_names{"Mon", "Tue", "Wed", "Thu",
                                                          "Fri", "Sat", "Sun"};

constexpr std::array<std::string_view, 7> long_day_names{
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};

constexpr std::array<std::string_view, 12> month_names{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}

bool is_alpha(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

char to_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return to_lower(x) == to_lower(y);
           });
}

template <std::size_t N>
bool is_one_of(std::string_view word, const std::array<std::string_view, N>& names) noexcept {
    return std::any_of(names.begin(), names.end(),
                       [&](std::string_view name) { return iequals(word, name); });
}

std::string_view trim(std::string_view s) noexcept {
    const auto is_space = [](char c) { return c == ' ' || c == '\t'; };
    while (!s.empty() && is_space(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is_space(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

// Reads an HTTP-date from left to right. Every method returns false (or nullopt) and
// leaves the position unspecified when the input does not match.
class date_reader {
public:
    explicit date_reader(std::string_view text) noexcept
        : text_(text) {}

    bool at_end() const noexcept { return pos_ == text_.size(); }

    bool literal(std::string_view expected) noexcept {
        if (text_.substr(pos_, expected.size()) != expected) {
            return false;
        }
        pos_ += expected.size();
        return true;
    }

    bool peek(char c) const noexcept { return pos_ < text_.size() && text_[pos_] == c; }

    // Reads the longest run of ASCII letters.
    std::string_view word() noexcept {
        const std::size_t start = pos_;
        while (pos_ < text_.size() && is_alpha(text_[pos_])) {
            ++pos_;
        }
        return text_.substr(start, pos_ - start);
    }

    // Reads exactly `count` decimal digits.
    std::optional<int> digits(std::size_t count) noexcept {
        if (text_.size() - pos_ < count) {
            return std::nullopt;
        }
        int value = 0;
        for (std::size_t i = 0; i < count; ++i) {
            const char c = text_[pos_ + i];
            if (!is_digit(c)) {
                return std::nullopt;
            }
            value = value * 10 + (c - '0');
        }
        pos_ += count;
        return value;
    }

    // Reads a three-letter month name and returns 1 to 12.
    std::optional<unsigned> month() noexcept {
        const std::string_view name = text_.substr(pos_, 3);
        for (std::size_t i = 0; i < month_names.size(); ++i) {
            if (iequals(name, month_names[i])) {
                pos_ += 3;
                return static_cast<unsigned>(i + 1);
            }
        }
        return std::nullopt;
    }

    // Reads `hour ":" minute ":" second` and returns the time since midnight.
    std::optional<chrono::seconds> time_of_day() noexcept {
        const auto hour = digits(2);
        if (!hour || !literal(":")) {
            return std::nullopt;
        }
        const auto minute = digits(2);
        if (!minute || !literal(":")) {
            return std::nullopt;
        }
        const auto second = digits(2);

        // RFC 9110 allows second 60 for a leap second.
        if (!second || *hour > 23 || *minute > 59 || *second > 60) {
            return std::nullopt;
        }
        return chrono::hours(*hour) + chrono::minutes(*minute) + chrono::seconds(*second);
    }

private:
    std::string_view text_;
    std::size_t pos_ = 0;
};

std::optional<chrono::sys_seconds> make_time(int year, unsigned month, int day,
                                             chrono::seconds time_of_day) noexcept {
    const chrono::year_month_day date{chrono::year(year), chrono::month(month),
                                      chrono::day(static_cast<unsigned>(day))};
    if (!date.ok()) {
        return std::nullopt;
    }
    return chrono::sys_days(date) + time_of_day;
}

// Expands an RFC 850 two-digit year to the year nearest to `now`, so that it lies at
// most 50 years in the future (RFC 9110, section 5.6.7).
int expand_two_digit_year(int two_digits, chrono::system_clock::time_point now) noexcept {
    const chrono::year_month_day today{chrono::floor<chrono::days>(now)};
    const int current = static_cast<int>(today.year());

    int year = current - current % 100 + two_digits;
    if (year > current + 50) {
        year -= 100;
    } else if (year <= current - 50) {
        year += 100;
    }
    return year;
}

// Parses `DD Mon YYYY HH:MM:SS GMT`, the part of an IMF-fixdate after `Sun, `.
std::optional<chrono::sys_seconds> parse_imf_fixdate_rest(date_reader& in) {
    const auto day = in.digits(2);
    if (!day || !in.literal(" ")) {
        return std::nullopt;
    }
    const auto month = in.month();
    if (!month || !in.literal(" ")) {
        return std::nullopt;
    }
    const auto year = in.digits(4);
    if (!year || !in.literal(" ")) {
        return std::nullopt;
    }
    const auto time = in.time_of_day();
    if (!time || !in.literal(" ") || !iequals(in.word(), "GMT") || !in.at_end()) {
        return std::nullopt;
    }
    return make_time(*year, *month, *day, *time);
}

// Parses `DD-Mon-YY HH:MM:SS GMT`, the part of an RFC 850 date after `Sunday, `.
std::optional<chrono::sys_seconds> parse_rfc850_rest(date_reader& in,
                                                     chrono::system_clock::time_point now) {
    const auto day = in.digits(2);
    if (!day || !in.literal("-")) {
        return std::nullopt;
    }
    const auto month = in.month();
    if (!month || !in.literal("-")) {
        return std::nullopt;
    }
    const auto year = in.digits(2);
    if (!year || !in.literal(" ")) {
        return std::nullopt;
    }
    const auto time = in.time_of_day();
    if (!time || !in.literal(" ") || !iequals(in.word(), "GMT") || !in.at_end()) {
        return std::nullopt;
    }
    return make_time(expand_two_digit_year(*year, now), *month, *day, *time);
}

// Parses `Mon  D HH:MM:SS YYYY` or `Mon DD HH:MM:SS YYYY`, the part of an asctime date
// after `Sun `.
std::optional<chrono::sys_seconds> parse_asctime_rest(date_reader& in) {
    const auto month = in.month();
    if (!month || !in.literal(" ")) {
        return std::nullopt;
    }
    std::optional<int> day;
    if (in.literal(" ")) {
        day = in.digits(1);
    } else {
        day = in.digits(2);
    }
    if (!day || !in.literal(" ")) {
        return std::nullopt;
    }
    const auto time = in.time_of_day();
    if (!time || !in.literal(" ")) {
        return std::nullopt;
    }
    const auto year = in.digits(4);
    if (!year || !in.at_end()) {
        return std::nullopt;
    }
    return make_time(*year, *month, *day, *time);
}

std::optional<chrono::sys_seconds> parse_http_date(std::string_view text,
                                                   chrono::system_clock::time_point now) {
    date_reader in(text);
    const std::string_view day_name = in.word();

    if (is_one_of(day_name, short_day_names)) {
        if (in.literal(", ")) {
            return parse_imf_fixdate_rest(in);
        }
        if (in.literal(" ")) {
            return parse_asctime_rest(in);
        }
        return std::nullopt;
    }
    if (is_one_of(day_name, long_day_names) && in.literal(", ")) {
        return parse_rfc850_rest(in, now);
    }
    return std::nullopt;
}

std::optional<chrono::milliseconds> parse_delta_seconds(std::string_view text) noexcept {
    constexpr std::int64_t max_seconds =
        std::numeric_limits<chrono::milliseconds::rep>::max() / 1000;

    std::int64_t seconds = 0;
    for (const char c : text) {
        if (!is_digit(c)) {
            return std::nullopt;
        }
        const int digit = c - '0';
        if (seconds > (max_seconds - digit) / 10) {
            return std::nullopt;
        }
        seconds = seconds * 10 + digit;
    }
    return chrono::seconds(seconds);
}

} // namespace

std::optional<chrono::milliseconds> parse_retry_after(std::string_view header_value,
                                                      chrono::system_clock::time_point now) {
    const std::string_view value = trim(header_value);
    if (value.empty()) {
        return std::nullopt;
    }
    if (is_digit(value.front())) {
        return parse_delta_seconds(value);
    }

    const auto date = parse_http_date(value, now);
    if (!date) {
        return std::nullopt;
    }

    // Subtract in milliseconds, because a far-future date overflows the nanosecond
    // time_point of system_clock. Since the date is a whole number of milliseconds,
    // date - floor(now) is the difference rounded up.
    const auto date_ms = chrono::time_point_cast<chrono::milliseconds>(*date);
    const auto now_ms = chrono::floor<chrono::milliseconds>(now);
    if (date_ms <= now_ms) {
        return chrono::milliseconds(0);
    }
    return date_ms - now_ms;
}

// Classification
// -----------------------------------------------------------------------------------------

retry_classifier::retry_classifier(std::vector<std::string> retryable_oauth_errors)
    : retryable_oauth_errors_(std::move(retryable_oauth_errors)) {}

bool retry_classifier::is_retryable_oauth_error(std::string_view error) const noexcept {
    return std::find(retryable_oauth_errors_.begin(), retryable_oauth_errors_.end(), error) !=
           retryable_oauth_errors_.end();
}

failure_kind retry_classifier::classify(const boost::system::error_code& ec,
                                        const diagnostics& diag) const {
    // Cancellation comes first, because the caller stops whatever the response contained.
    if (ec == boost::asio::error::operation_aborted ||
        ec == boost::system::errc::operation_canceled) {
        return failure_kind::aborted;
    }
    if (!ec) {
        return failure_kind::permanent;
    }

    // A 401 from the token endpoint means the credentials are wrong, so it is permanent
    // whatever error string or body came with it.
    const bool is_http_code = ec.category() == http_category();
    const unsigned status = is_http_code ? static_cast<unsigned>(ec.value()) : diag.http_status();
    if (status == 401) {
        return failure_kind::permanent;
    }

    if (ec.category() == oauth_category()) {
        // The status takes precedence when it reports overload or an outage.
        if (status == 408 || status == 429 || (status >= 500 && status <= 599)) {
            return failure_kind::retryable;
        }

        const std::string_view raw = diag.server_error_code().empty()
                                         ? to_string(static_cast<oauth_errc>(ec.value()))
                                         : std::string_view(diag.server_error_code());
        return is_retryable_oauth_error(raw) ? failure_kind::retryable : failure_kind::permanent;
    }

    return is_retryable(ec) ? failure_kind::retryable : failure_kind::permanent;
}

} // namespace stampede
