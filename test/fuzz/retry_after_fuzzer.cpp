// Fuzzes stampede::parse_retry_after with the input as the header value, at several
// values of "now". A delay is never negative, spaces and tabs around the value do not
// change the result, delta-seconds give exactly that many seconds, and a date gives a
// delay that shrinks by the time that passes.

#include "fuzz_support.hpp"

#include <stampede/retry.hpp>

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>
#include <string>

namespace {

namespace fuzz = stampede::fuzz;

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::system_clock;

constexpr system_clock::time_point moments[] = {
    system_clock::time_point(seconds(0)),          // 1970-01-01
    system_clock::time_point(seconds(1700000000)), // 2023-11-14
    system_clock::time_point(seconds(4102444800)), // 2100-01-01
};

bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view text)
{
    while (!text.empty() && is_space(text.front())) {
        text.remove_prefix(1);
    }
    while (!text.empty() && is_space(text.back())) {
        text.remove_suffix(1);
    }
    return text;
}

std::string describe(const std::optional<milliseconds>& delay)
{
    return delay ? std::to_string(delay->count()) + " ms" : std::string("none");
}

void check_delta_seconds(std::string_view value, const std::optional<milliseconds>& delay)
{
    // Only plain digits are delta-seconds, and a number too large for milliseconds is
    // rejected.
    std::int64_t expected = 0;
    bool fits = true;
    for (const char c : value) {
        const int digit = c - '0';
        if (expected > (std::numeric_limits<milliseconds::rep>::max() / 1000 - digit) / 10) {
            fits = false;
            break;
        }
        expected = expected * 10 + digit;
    }
    if (fits) {
        fuzz::check(delay && *delay == seconds(expected), "delta-seconds gave the wrong delay",
                    describe(delay));
    } else {
        fuzz::check(!delay, "an out-of-range delta-seconds was accepted", describe(delay));
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string_view value = fuzz::as_text(data, size);
    const std::string_view trimmed = trim(value);
    const bool all_digits =
        !trimmed.empty() && trimmed.find_first_not_of("0123456789") == std::string_view::npos;

    for (const auto now : moments) {
        const auto delay = stampede::parse_retry_after(value, now);
        if (delay) {
            fuzz::check(delay->count() >= 0, "a negative delay", describe(delay));
        }
        fuzz::check(stampede::parse_retry_after(trimmed, now) == delay,
                    "surrounding spaces changed the result");
        fuzz::check(stampede::parse_retry_after(" \t" + std::string(value) + "\t ", now) == delay,
                    "added spaces changed the result");
        if (all_digits) {
            check_delta_seconds(trimmed, delay);
            continue;
        }

        // A date: one second later, the delay is one second shorter, down to zero. Dates
        // near 50 years ahead are left out, because there a two-digit RFC 850 year may
        // switch centuries as "now" moves.
        constexpr auto forty_nine_years = std::chrono::hours(24 * 365 * 49);
        if (delay && *delay < forty_nine_years) {
            const auto later = stampede::parse_retry_after(value, now + seconds(1));
            fuzz::check(later.has_value(), "a date stopped parsing one second later");
            const auto expected = std::max(*delay - seconds(1), milliseconds(0));
            fuzz::check(*later == expected, "a date's delay did not shrink by one second",
                        describe(delay) + " then " + describe(later));
        }
    }
    return 0;
}
