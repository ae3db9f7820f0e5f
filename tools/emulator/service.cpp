// Request handling without I/O: option checks, fault scripts, rate limits, tokens,
// the control endpoints and the counters.

#include "emulator_service.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/ipv4_address.hpp>
#include <boost/url/ipv6_address.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <system_error>

namespace stampede::emulator {

namespace {

using detail::steady_clock;
using detail::system_clock;

constexpr std::size_t max_recorded_request_times = 10000;
constexpr std::size_t max_guests = 100000;
constexpr std::int64_t max_retry_after_seconds = 1000000000;
constexpr std::int64_t max_slow_milliseconds = 3600000;
constexpr std::int64_t max_oversize_bytes = 256 * 1024 * 1024;
constexpr std::size_t access_token_bytes = 32;

// Sweep expired tokens after this many issues, so long runs keep bounded memory.
constexpr std::uint64_t issues_per_token_sweep = 4096;

std::string_view trim(std::string_view text)
{
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
        text.remove_prefix(1);
    }
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
        text.remove_suffix(1);
    }
    return text;
}

char to_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b)
{
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return to_lower(x) == to_lower(y);
           });
}

template <class Integer>
std::optional<Integer> parse_integer(std::string_view text)
{
    Integer value{};
    const char* end = text.data() + text.size();
    auto [stop, error] = std::from_chars(text.data(), end, value);
    if (text.empty() || error != std::errc{} || stop != end) {
        return std::nullopt;
    }
    return value;
}

std::optional<double> parse_decimal(std::string_view text)
{
    double value = 0;
    const char* end = text.data() + text.size();
    auto [stop, error] = std::from_chars(text.data(), end, value, std::chars_format::fixed);
    if (text.empty() || error != std::errc{} || stop != end || !std::isfinite(value)) {
        return std::nullopt;
    }
    return value;
}

bool equal_secrets(std::string_view a, std::string_view b)
{
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string random_token()
{
    std::array<unsigned char, access_token_bytes> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        throw std::runtime_error("RAND_bytes failed to generate an access token");
    }
    return detail::base64url_encode(
        std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

std::string json_string(std::string_view text)
{
    return boost::json::serialize(boost::json::string(text));
}

std::int64_t ceil_seconds(std::chrono::nanoseconds duration)
{
    return std::chrono::ceil<std::chrono::seconds>(duration).count();
}

// ---------------------------------------------------------------------------
// Fault script syntax

enum class argument_kind {
    none,
    status_5xx,
    seconds,
    oauth_error,
    milliseconds,
    bytes,
    raw_json,
    name
};

struct item_syntax {
    std::string_view name;
    std::string_view usage;
    fault_kind kind;
    argument_kind argument;
};

constexpr item_syntax item_table[] = {
    {"ok", "ok", fault_kind::ok, argument_kind::none},
    {"5xx-html", "5xx-html:CODE", fault_kind::html_5xx, argument_kind::status_5xx},
    {"429", "429", fault_kind::status_429, argument_kind::none},
    {"429-seconds", "429-seconds:N", fault_kind::retry_after_seconds, argument_kind::seconds},
    {"429-date", "429-date:N", fault_kind::retry_after_date, argument_kind::seconds},
    {"oauth-error", "oauth-error:CODE[:STATUS]", fault_kind::oauth_error,
     argument_kind::oauth_error},
    {"bare-400", "bare-400", fault_kind::bare_400, argument_kind::none},
    {"reset", "reset", fault_kind::reset, argument_kind::none},
    {"close-mid-body", "close-mid-body", fault_kind::close_mid_body, argument_kind::none},
    {"stall", "stall", fault_kind::stall, argument_kind::none},
    {"slow", "slow:MS", fault_kind::slow, argument_kind::milliseconds},
    {"garbage-json", "garbage-json", fault_kind::garbage_json, argument_kind::none},
    {"truncated-json", "truncated-json", fault_kind::truncated_json, argument_kind::none},
    {"html-200", "html-200", fault_kind::html_200, argument_kind::none},
    {"error-200", "error-200", fault_kind::error_200, argument_kind::none},
    {"oversize", "oversize:BYTES", fault_kind::oversize, argument_kind::bytes},
    {"expires-in", "expires-in:RAW", fault_kind::expires_in, argument_kind::raw_json},
    {"expires-in-missing", "expires-in-missing", fault_kind::expires_in_missing,
     argument_kind::none},
    {"no-access-token", "no-access-token", fault_kind::no_access_token, argument_kind::none},
    {"token-type", "token-type:NAME", fault_kind::token_type, argument_kind::name},
    {"echo-secret", "echo-secret", fault_kind::echo_secret, argument_kind::none},
    {"charset", "charset", fault_kind::charset, argument_kind::none},
    {"401", "401", fault_kind::unauthorized, argument_kind::none},
};

const item_syntax& syntax_of(fault_kind kind)
{
    for (const auto& syntax : item_table) {
        if (syntax.kind == kind) {
            return syntax;
        }
    }
    throw std::logic_error("fault kind missing from the item table");
}

std::string item_list()
{
    std::string list;
    for (const auto& syntax : item_table) {
        if (!list.empty()) {
            list += ", ";
        }
        list += syntax.usage;
    }
    return list;
}

[[noreturn]] void reject_item(std::string_view item, std::string_view reason)
{
    throw std::invalid_argument("invalid fault item '" + std::string(item) +
                                "': " + std::string(reason));
}

// Splits at commas outside JSON strings, so expires-in:"1,5" stays one item.
std::vector<std::string_view> split_items(std::string_view script)
{
    std::vector<std::string_view> items;
    bool in_string = false;
    std::size_t start = 0;
    for (std::size_t i = 0; i < script.size(); ++i) {
        char c = script[i];
        if (in_string && c == '\\') {
            ++i;
        } else if (c == '"') {
            in_string = !in_string;
        } else if (c == ',' && !in_string) {
            items.push_back(script.substr(start, i - start));
            start = i + 1;
        }
    }
    items.push_back(script.substr(start));
    return items;
}

// Returns the position of the last '*' outside JSON strings, or npos.
std::size_t find_repeat_marker(std::string_view item)
{
    std::size_t found = std::string_view::npos;
    bool in_string = false;
    for (std::size_t i = 0; i < item.size(); ++i) {
        char c = item[i];
        if (in_string && c == '\\') {
            ++i;
        } else if (c == '"') {
            in_string = !in_string;
        } else if (c == '*' && !in_string) {
            found = i;
        }
    }
    return found;
}

std::int64_t parse_bounded(std::string_view item, std::string_view text, std::int64_t low,
                           std::int64_t high, std::string_view expected)
{
    auto value = parse_integer<std::int64_t>(text);
    if (!value || *value < low || *value > high) {
        reject_item(item, expected);
    }
    return *value;
}

bool is_oauth_error_code(std::string_view code)
{
    return !code.empty() && std::all_of(code.begin(), code.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-' || c == '.';
    });
}

void parse_argument(fault& result, argument_kind kind, std::string_view item,
                    std::string_view argument)
{
    switch (kind) {
    case argument_kind::none:
        break;
    case argument_kind::status_5xx:
        result.status = static_cast<int>(
            parse_bounded(item, argument, 500, 599,
                          "expected a status code from 500 to 599, as in 5xx-html:503"));
        break;
    case argument_kind::seconds:
        result.number = parse_bounded(item, argument, 0, max_retry_after_seconds,
                                      "expected a whole number of seconds, as in 429-seconds:30");
        break;
    case argument_kind::milliseconds:
        result.number = parse_bounded(item, argument, 0, max_slow_milliseconds,
                                      "expected milliseconds from 0 to 3600000, as in slow:250");
        break;
    case argument_kind::bytes:
        result.number = parse_bounded(item, argument, 2, max_oversize_bytes,
                                      "expected a body size from 2 to 268435456 bytes");
        break;
    case argument_kind::oauth_error: {
        auto colon = argument.find(':');
        result.text = std::string(argument.substr(0, colon));
        result.status = 400;
        if (!is_oauth_error_code(result.text)) {
            reject_item(item, "expected an error code of letters, digits, '_', '-' or '.', "
                              "as in oauth-error:slow_down");
        }
        if (colon != std::string_view::npos) {
            result.status = static_cast<int>(parse_bounded(
                item, argument.substr(colon + 1), 200, 599,
                "expected a status from 200 to 599, as in oauth-error:invalid_client:401"));
        }
        break;
    }
    case argument_kind::raw_json: {
        boost::system::error_code error;
        boost::json::parse(argument, error);
        if (argument.empty() || error) {
            reject_item(item, "expected a JSON value, as in expires-in:\"3600\" or expires-in:-5");
        }
        result.text = std::string(argument);
        break;
    }
    case argument_kind::name:
        if (argument.empty() || !std::all_of(argument.begin(), argument.end(),
                                             [](char c) { return c > ' ' && c < 0x7f; })) {
            reject_item(item, "expected a name of printable characters, as in token-type:mac");
        }
        result.text = std::string(argument);
        break;
    }
}

fault parse_item(std::string_view raw_item)
{
    std::string_view item = trim(raw_item);
    if (item.empty()) {
        throw std::invalid_argument("invalid fault script: empty item between commas");
    }

    fault result;
    std::string_view body = item;
    auto marker = find_repeat_marker(item);
    if (marker != std::string_view::npos) {
        std::string_view count = item.substr(marker + 1);
        body = item.substr(0, marker);
        if (count.empty()) {
            result.forever = true;
        } else {
            auto repeat = parse_integer<std::size_t>(count);
            if (!repeat || *repeat == 0) {
                reject_item(item,
                            "expected a repeat count of at least 1 after '*', as in slow:100*3");
            }
            result.repeat = *repeat;
        }
    }

    auto colon = body.find(':');
    std::string_view name = body.substr(0, colon);
    const item_syntax* syntax = nullptr;
    for (const auto& candidate : item_table) {
        if (candidate.name == name) {
            syntax = &candidate;
        }
    }
    if (syntax == nullptr) {
        reject_item(item, "unknown item; expected one of " + item_list());
    }
    result.kind = syntax->kind;

    bool has_argument = colon != std::string_view::npos;
    if (syntax->argument == argument_kind::none && has_argument) {
        reject_item(item, "'" + std::string(name) + "' takes no argument");
    }
    if (syntax->argument != argument_kind::none && !has_argument) {
        reject_item(item, "expected " + std::string(syntax->usage));
    }
    if (has_argument) {
        parse_argument(result, syntax->argument, item, body.substr(colon + 1));
    }
    return result;
}

bool applies_only_to_tokens(fault_kind kind)
{
    switch (kind) {
    case fault_kind::expires_in:
    case fault_kind::expires_in_missing:
    case fault_kind::no_access_token:
    case fault_kind::token_type:
    case fault_kind::echo_secret:
        return true;
    default:
        return false;
    }
}

// Items that change the normal reply instead of replacing it.
bool modifies_normal_reply(fault_kind kind)
{
    switch (kind) {
    case fault_kind::ok:
    case fault_kind::slow:
    case fault_kind::charset:
    case fault_kind::expires_in:
    case fault_kind::expires_in_missing:
    case fault_kind::no_access_token:
    case fault_kind::token_type:
        return true;
    default:
        return false;
    }
}

// Applies the modifiers common to token and API replies.
void apply_common_modifier(detail::http_reply& reply, const std::optional<fault>& item)
{
    if (!item) {
        return;
    }
    if (item->kind == fault_kind::slow) {
        reply.delay = std::chrono::milliseconds(item->number);
    }
    if (item->kind == fault_kind::charset) {
        for (auto& [name, value] : reply.headers) {
            if (name == "Content-Type" && value == "application/json") {
                value = "application/json; charset=utf-8";
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Option checks

[[noreturn]] void reject_option(std::string_view option, std::string_view reason)
{
    throw std::invalid_argument("invalid option " + std::string(option) + ": " +
                                std::string(reason));
}

bool is_ip_address(std::string_view text)
{
    return boost::urls::parse_ipv4_address(text).has_value() ||
           boost::urls::parse_ipv6_address(text).has_value();
}

detail::listen_address parse_listen(std::string_view text)
{
    constexpr std::string_view expected =
        "expected ADDR:PORT with an IP address, such as 127.0.0.1:8443 or [::1]:0";
    detail::listen_address result;
    std::string_view port;
    if (text.starts_with('[')) {
        auto close = text.find("]:");
        if (close == std::string_view::npos) {
            reject_option("listen", expected);
        }
        result.host = std::string(text.substr(1, close - 1));
        port = text.substr(close + 2);
        if (!boost::urls::parse_ipv6_address(result.host)) {
            reject_option("listen", expected);
        }
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            reject_option("listen", expected);
        }
        result.host = std::string(text.substr(0, colon));
        port = text.substr(colon + 1);
        if (!boost::urls::parse_ipv4_address(result.host)) {
            reject_option("listen", expected);
        }
    }
    auto number = parse_integer<unsigned short>(port);
    if (!number) {
        reject_option("listen", "expected a port from 0 to 65535 after the last ':'");
    }
    result.port = *number;
    return result;
}

bool is_dns_name(std::string_view name)
{
    return !name.empty() && name.size() <= 253 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '.';
    });
}

void check_rate(std::string_view option, const rate& budget)
{
    if (budget.requests == 0 || budget.period <= std::chrono::milliseconds::zero()) {
        reject_option(option, "expected at least 1 request per a positive period");
    }
}

void check_clients(std::vector<std::pair<std::string, std::string>>& clients)
{
    if (clients.empty()) {
        clients.emplace_back("demo-client", "demo-secret");
    }
    std::unordered_set<std::string> ids;
    for (const auto& [id, secret] : clients) {
        if (id.empty() || id.find(':') != std::string::npos) {
            reject_option("clients", "a client id must be non-empty and contain no ':'");
        }
        if (secret.empty()) {
            reject_option("clients", "client '" + id + "' has an empty secret");
        }
        if (!ids.insert(id).second) {
            reject_option("clients", "client id '" + id + "' is registered twice");
        }
    }
}

} // namespace

// ---------------------------------------------------------------------------
// Public parsing functions

rate parse_rate(std::string_view text)
{
    auto slash = text.find('/');
    std::optional<std::size_t> requests;
    std::optional<double> seconds;
    if (slash != std::string_view::npos) {
        requests = parse_integer<std::size_t>(text.substr(0, slash));
        seconds = parse_decimal(text.substr(slash + 1));
    }
    if (!requests || !seconds || *requests == 0 || *seconds < 0.001 || *seconds > 1e9) {
        throw std::invalid_argument("invalid rate '" + std::string(text) +
                                    "': expected N/SECONDS with N >= 1 and SECONDS >= 0.001, "
                                    "as in 20/60");
    }
    auto period = std::chrono::milliseconds(std::llround(*seconds * 1000));
    return rate{*requests, period};
}

std::vector<fault> parse_fault_script(std::string_view script)
{
    std::vector<fault> items;
    if (trim(script).empty()) {
        return items;
    }
    for (auto text : split_items(script)) {
        if (!items.empty() && items.back().forever) {
            throw std::invalid_argument("invalid fault script: '" + to_string(items.back()) +
                                        "' repeats forever, so '" + std::string(trim(text)) +
                                        "' after it would never apply");
        }
        items.push_back(parse_item(text));
    }
    return items;
}

std::string to_string(const fault& item)
{
    std::string text(syntax_of(item.kind).name);
    switch (item.kind) {
    case fault_kind::html_5xx:
        text += ":" + std::to_string(item.status);
        break;
    case fault_kind::retry_after_seconds:
    case fault_kind::retry_after_date:
    case fault_kind::slow:
    case fault_kind::oversize:
        text += ":" + std::to_string(item.number);
        break;
    case fault_kind::oauth_error:
        text += ":" + item.text;
        if (item.status != 400) {
            text += ":" + std::to_string(item.status);
        }
        break;
    case fault_kind::expires_in:
    case fault_kind::token_type:
        text += ":" + item.text;
        break;
    default:
        break;
    }
    if (item.forever) {
        text += "*";
    } else if (item.repeat != 1) {
        text += "*" + std::to_string(item.repeat);
    }
    return text;
}

namespace detail {

std::vector<fault> parse_token_fault_script(std::string_view script)
{
    auto items = parse_fault_script(script);
    for (const auto& item : items) {
        if (item.kind == fault_kind::unauthorized) {
            throw std::invalid_argument("invalid fault item '401': it applies only to API "
                                        "requests; for token requests use "
                                        "oauth-error:invalid_client:401");
        }
    }
    return items;
}

std::vector<fault> parse_api_fault_script(std::string_view script)
{
    auto items = parse_fault_script(script);
    for (const auto& item : items) {
        if (applies_only_to_tokens(item.kind)) {
            throw std::invalid_argument("invalid fault item '" + to_string(item) +
                                        "': it applies only to token requests");
        }
    }
    return items;
}

listen_address validate_options(options& opts)
{
    auto address = parse_listen(opts.listen);
    check_clients(opts.clients);

    if (opts.token_lifetime <= std::chrono::milliseconds::zero()) {
        reject_option("token_lifetime", "expected a positive duration");
    }

    check_rate("token_rate", opts.token_rate);
    check_rate("api_rate", opts.api_rate);
    if (opts.rate_limit_status != 429 && opts.rate_limit_status != 400) {
        reject_option("rate_limit_status", "expected 429 or 400");
    }

    if (opts.plain_http && !opts.cert_out.empty()) {
        reject_option("cert_out", "plain_http serves no certificate to write");
    }
    if (opts.plain_http && !opts.cert_host.empty()) {
        reject_option("cert_host", "plain_http serves no certificate");
    }
    if (!opts.cert_host.empty() && !is_ip_address(opts.cert_host) && !is_dns_name(opts.cert_host)) {
        reject_option("cert_host", "expected a DNS name or an IP address");
    }

    if (opts.idle_timeout <= std::chrono::milliseconds::zero()) {
        reject_option("idle_timeout", "expected a positive duration");
    }
    if (opts.guests > max_guests) {
        reject_option("guests", "expected at most 100000 guests");
    }

    try {
        parse_token_fault_script(opts.fault_script);
    } catch (const std::invalid_argument& error) {
        reject_option("fault_script", error.what());
    }
    try {
        parse_api_fault_script(opts.api_fault_script);
    } catch (const std::invalid_argument& error) {
        reject_option("api_fault_script", error.what());
    }
    return address;
}

// ---------------------------------------------------------------------------
// Shared helpers

http_reply make_json_reply(unsigned status, const boost::json::value& body)
{
    http_reply reply;
    reply.status = status;
    reply.headers.emplace_back("Content-Type", "application/json");
    reply.body = boost::json::serialize(body);
    return reply;
}

http_reply make_error_reply(unsigned status, std::string_view code, std::string_view description)
{
    return make_json_reply(
        status, boost::json::object{{"error", code}, {"error_description", description}});
}

std::string format_iso8601(system_clock::time_point time)
{
    auto seconds = std::chrono::floor<std::chrono::seconds>(time);
    auto days = std::chrono::floor<std::chrono::days>(seconds);
    std::chrono::year_month_day date{days};
    std::chrono::hh_mm_ss clock{seconds - days};
    char text[32];
    std::snprintf(text, sizeof text, "%04d-%02u-%02uT%02d:%02d:%02dZ", int(date.year()),
                  unsigned(date.month()), unsigned(date.day()), int(clock.hours().count()),
                  int(clock.minutes().count()), int(clock.seconds().count()));
    return text;
}

std::string format_http_date(system_clock::time_point time)
{
    static constexpr std::array<const char*, 7> weekdays{"Sun", "Mon", "Tue", "Wed",
                                                         "Thu", "Fri", "Sat"};
    static constexpr std::array<const char*, 12> months{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    auto seconds = std::chrono::floor<std::chrono::seconds>(time);
    auto days = std::chrono::floor<std::chrono::days>(seconds);
    std::chrono::year_month_day date{days};
    std::chrono::weekday weekday{days};
    std::chrono::hh_mm_ss clock{seconds - days};
    char text[40];
    std::snprintf(text, sizeof text, "%s, %02u %s %04d %02d:%02d:%02d GMT",
                  weekdays[weekday.c_encoding()], unsigned(date.day()),
                  months[unsigned(date.month()) - 1], int(date.year()), int(clock.hours().count()),
                  int(clock.minutes().count()), int(clock.seconds().count()));
    return text;
}

namespace {
constexpr std::string_view base64url_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
}

std::string base64url_encode(std::string_view bytes)
{
    std::string text;
    text.reserve((bytes.size() * 4 + 2) / 3);
    std::uint32_t bits = 0;
    int bit_count = 0;
    for (unsigned char byte : bytes) {
        bits = (bits << 8) | byte;
        bit_count += 8;
        while (bit_count >= 6) {
            bit_count -= 6;
            text += base64url_alphabet[(bits >> bit_count) & 0x3f];
        }
    }
    if (bit_count > 0) {
        text += base64url_alphabet[(bits << (6 - bit_count)) & 0x3f];
    }
    return text;
}

std::optional<std::string> base64url_decode(std::string_view text)
{
    std::string bytes;
    std::uint32_t bits = 0;
    int bit_count = 0;
    for (char c : text) {
        auto position = base64url_alphabet.find(c);
        if (position == std::string_view::npos) {
            return std::nullopt;
        }
        bits = (bits << 6) | static_cast<std::uint32_t>(position);
        bit_count += 6;
        if (bit_count >= 8) {
            bit_count -= 8;
            bytes += static_cast<char>((bits >> bit_count) & 0xff);
        }
    }
    return bytes;
}

bool is_json_content_type(std::string_view content_type)
{
    auto media_type = trim(content_type.substr(0, content_type.find(';')));
    return iequals(media_type, "application/json");
}

// ---------------------------------------------------------------------------
// sliding_window and fault_queue

sliding_window::sliding_window(rate budget)
    : budget_(budget)
{}

std::optional<steady_clock::duration> sliding_window::try_acquire(steady_clock::time_point now)
{
    auto window_start = now - budget_.period;
    while (!accepted_.empty() && accepted_.front() <= window_start) {
        accepted_.pop_front();
    }
    if (accepted_.size() < budget_.requests) {
        accepted_.push_back(now);
        return std::nullopt;
    }
    return accepted_.front() + budget_.period - now;
}

void fault_queue::assign(std::vector<fault> items)
{
    items_.assign(items.begin(), items.end());
    used_ = 0;
}

std::optional<fault> fault_queue::next()
{
    if (items_.empty()) {
        return std::nullopt;
    }
    fault item = items_.front();
    if (!item.forever && ++used_ >= item.repeat) {
        items_.pop_front();
        used_ = 0;
    }
    return item;
}

// ---------------------------------------------------------------------------
// service

namespace {

http_reply rate_limit_reply(unsigned status, steady_clock::duration wait)
{
    auto seconds = std::max<std::int64_t>(1, ceil_seconds(wait));
    auto reply =
        make_error_reply(status, "rate_limit_exceeded",
                         "too many requests; retry after " + std::to_string(seconds) + " seconds");
    if (status == 429) {
        reply.headers.emplace_back("Retry-After", std::to_string(seconds));
    }
    return reply;
}

http_reply unauthorized_reply(std::string_view description)
{
    auto reply = make_error_reply(401, "invalid_token", description);
    reply.headers.emplace_back("WWW-Authenticate", "Bearer error=\"invalid_token\"");
    return reply;
}

http_reply html_reply(unsigned status, std::string_view title)
{
    http_reply reply;
    reply.status = status;
    reply.headers.emplace_back("Content-Type", "text/html; charset=utf-8");
    reply.body = "<!DOCTYPE html>\n<html><head><title>" + std::string(title) +
                 "</title></head>\n<body><h1>" + std::string(title) +
                 "</h1><p>stampede-emulator</p></body></html>\n";
    return reply;
}

std::string server_error_title(int status)
{
    std::string_view reason = "Server Error";
    switch (status) {
    case 500:
        reason = "Internal Server Error";
        break;
    case 502:
        reason = "Bad Gateway";
        break;
    case 503:
        reason = "Service Unavailable";
        break;
    case 504:
        reason = "Gateway Timeout";
        break;
    default:
        break;
    }
    return std::to_string(status) + " " + std::string(reason);
}

// Returns a string member of a JSON request body, or an empty string.
std::string body_member(std::string_view body, std::string_view name)
{
    boost::system::error_code error;
    auto value = boost::json::parse(body, error);
    if (error || !value.is_object()) {
        return {};
    }
    const auto* member = value.as_object().if_contains(name);
    if (member == nullptr || !member->is_string()) {
        return {};
    }
    return std::string(member->as_string());
}

std::string token_body(std::string_view token, std::string_view expires_in)
{
    return R"({"access_token":)" + json_string(token) + R"(,"expires_in":)" +
           std::string(expires_in) + R"(,"token_type":"Bearer","scope":"ALL:ALL"})";
}

// Returns a JSON object of exactly `size` bytes, built on `base` (an object) when it fits.
std::string padded_json(std::string_view base, std::size_t size)
{
    constexpr std::string_view padding_member = R"(,"padding":")";
    if (base.size() + padding_member.size() + 2 <= size) {
        std::string body(base.substr(0, base.size() - 1));
        body += padding_member;
        body.append(size - body.size() - 2, 'x');
        body += "\"}";
        return body;
    }
    std::string body = "{";
    body.append(size - 2, ' ');
    body += "}";
    return body;
}

} // namespace

service::service(const options& opts)
    : clients_(opts.clients)
    , token_lifetime_(opts.token_lifetime)
    , token_rate_(opts.token_rate)
    , api_rate_(opts.api_rate)
    , rate_limit_status_(opts.rate_limit_status)
    , start_time_(steady_clock::now())
    , guests_(opts.guests)
{
    token_faults_.assign(parse_token_fault_script(opts.fault_script));
    api_faults_.assign(parse_api_fault_script(opts.api_fault_script));
}

void service::set_start_time(steady_clock::time_point start)
{
    std::lock_guard lock(mutex_);
    start_time_ = start;
}

http_reply service::handle(const http_request& request, steady_clock::time_point now)
{
    auto target = boost::urls::parse_origin_form(request.target);
    if (!target) {
        return make_error_reply(400, "invalid_request", "the request target is not a valid path");
    }
    std::string path = target->path();
    query_params query;
    for (auto param : target->params()) {
        query.emplace_back(param.key, param.value);
    }

    std::lock_guard lock(mutex_);
    if (path == "/oauth/token") {
        return handle_token(request, now);
    }
    if (path == "/v1" || path.starts_with("/v1/")) {
        return handle_api(request, path, query, now);
    }
    if (path.starts_with("/_emulator/")) {
        return handle_control(request, path, now);
    }
    return make_error_reply(404, "not_found", "no resource at " + path);
}

http_reply service::handle_token(const http_request& request, steady_clock::time_point now)
{
    ++stats_.token_requests;
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now - start_time_);
    token_request_times_ms_.push_back(elapsed.count());
    if (token_request_times_ms_.size() > max_recorded_request_times) {
        token_request_times_ms_.pop_front();
    }

    auto item = token_faults_.next();
    if (item && item->kind != fault_kind::ok) {
        ++stats_.faults_applied;
    }
    http_reply reply;
    if (item && !modifies_normal_reply(item->kind)) {
        reply = fault_reply(*item, request, true, now);
        reply.client_id = body_member(request.body, "client_id");
    } else {
        reply = issue_token(request, now, item);
    }
    if (item) {
        reply.fault = to_string(*item);
    }
    reply.headers.emplace_back("Cache-Control", "no-store");
    return reply;
}

http_reply service::reject_token(unsigned status, std::string_view code,
                                 std::string_view description)
{
    ++stats_.rejections[std::string(code)];
    return make_error_reply(status, code, description);
}

http_reply service::issue_token(const http_request& request, steady_clock::time_point now,
                                const std::optional<fault>& modifier)
{
    if (request.method != "POST") {
        auto reply = reject_token(405, "invalid_request", "the token endpoint accepts only POST");
        reply.headers.emplace_back("Allow", "POST");
        return reply;
    }
    if (!is_json_content_type(request.content_type)) {
        return reject_token(400, "invalid_request", "Content-Type must be application/json");
    }
    boost::system::error_code error;
    auto body = boost::json::parse(request.body, error);
    if (error || !body.is_object()) {
        return reject_token(400, "invalid_request", "the request body is not a JSON object");
    }

    std::array<std::string_view, 3> fields{"client_id", "client_secret", "grant_type"};
    std::array<std::string, 3> values;
    for (std::size_t i = 0; i < fields.size(); ++i) {
        const auto* member = body.as_object().if_contains(fields[i]);
        if (member == nullptr) {
            return reject_token(400, "invalid_request", "missing " + std::string(fields[i]));
        }
        if (!member->is_string()) {
            return reject_token(400, "invalid_request",
                                std::string(fields[i]) + " must be a string");
        }
        values[i] = std::string(member->as_string());
    }
    const auto& [client_id, client_secret, grant_type] = values;
    if (grant_type != "client_credentials") {
        auto reply =
            reject_token(400, "unsupported_grant_type", "grant_type must be client_credentials");
        reply.client_id = client_id;
        return reply;
    }

    auto client = std::find_if(clients_.begin(), clients_.end(),
                               [&](const auto& entry) { return entry.first == client_id; });
    if (client == clients_.end() || !equal_secrets(client->second, client_secret)) {
        auto reply = reject_token(400, "invalid_client", "client authentication failed");
        reply.client_id = client_id;
        return reply;
    }

    auto& window = token_windows_.try_emplace(client_id, token_rate_).first->second;
    if (auto wait = window.try_acquire(now)) {
        ++stats_.rate_limited;
        auto reply = rate_limit_reply(static_cast<unsigned>(rate_limit_status_), *wait);
        reply.client_id = client_id;
        return reply;
    }

    fault_kind kind = modifier ? modifier->kind : fault_kind::ok;
    std::string token =
        kind == fault_kind::no_access_token ? std::string() : store_token(client_id, now);
    auto lifetime = std::chrono::duration_cast<std::chrono::nanoseconds>(token_lifetime_);
    std::string expires_in = std::to_string(ceil_seconds(lifetime));

    std::string response;
    switch (kind) {
    case fault_kind::expires_in:
        response = token_body(token, modifier->text);
        break;
    case fault_kind::expires_in_missing:
        response = R"({"access_token":)" + json_string(token) +
                   R"(,"token_type":"Bearer","scope":"ALL:ALL"})";
        break;
    case fault_kind::no_access_token:
        response =
            R"({"expires_in":)" + expires_in + R"(,"token_type":"Bearer","scope":"ALL:ALL"})";
        break;
    case fault_kind::token_type:
        response = R"({"access_token":)" + json_string(token) + R"(,"expires_in":)" + expires_in +
                   R"(,"token_type":)" + json_string(modifier->text) + R"(,"scope":"ALL:ALL"})";
        break;
    default:
        response = token_body(token, expires_in);
        break;
    }

    http_reply reply;
    reply.headers.emplace_back("Content-Type", "application/json");
    reply.headers.emplace_back("Pragma", "no-cache");
    reply.body = std::move(response);
    reply.client_id = client_id;
    apply_common_modifier(reply, modifier);
    return reply;
}

std::string service::store_token(const std::string& client_id, steady_clock::time_point now)
{
    if (++issues_since_sweep_ >= issues_per_token_sweep) {
        issues_since_sweep_ = 0;
        std::erase_if(tokens_, [&](const auto& entry) { return entry.second.expiry <= now; });
    }
    std::string token = random_token();
    tokens_.insert_or_assign(token, token_record{client_id, now + token_lifetime_, false});
    ++stats_.tokens_issued;
    return token;
}

http_reply service::fault_reply(const fault& item, const http_request& request, bool token_endpoint,
                                steady_clock::time_point now)
{
    // A body that looks like a normal reply, for the faults that damage one.
    std::string normal_body =
        token_endpoint
            ? token_body(random_token(), std::to_string(ceil_seconds(token_lifetime_)))
            : R"({"data":[],"links":{"first":null,"last":null,"next":null,"prev":null}})";

    http_reply reply;
    switch (item.kind) {
    case fault_kind::html_5xx:
        return html_reply(static_cast<unsigned>(item.status), server_error_title(item.status));
    case fault_kind::status_429:
        return make_error_reply(429, "rate_limit_exceeded", "too many requests");
    case fault_kind::retry_after_seconds:
        reply = make_error_reply(429, "rate_limit_exceeded", "too many requests");
        reply.headers.emplace_back("Retry-After", std::to_string(item.number));
        return reply;
    case fault_kind::retry_after_date:
        reply = make_error_reply(429, "rate_limit_exceeded", "too many requests");
        reply.headers.emplace_back(
            "Retry-After",
            format_http_date(system_clock::now() + std::chrono::seconds(item.number)));
        return reply;
    case fault_kind::oauth_error:
        reply = make_error_reply(static_cast<unsigned>(item.status), item.text,
                                 "error returned by the emulator's fault script");
        if (item.status == 401) {
            reply.headers.emplace_back("WWW-Authenticate", token_endpoint
                                                               ? "Basic realm=\"stampede\""
                                                               : "Bearer error=\"invalid_token\"");
        }
        return reply;
    case fault_kind::bare_400:
        return make_json_reply(400, boost::json::object{{"message", "Bad Request"}});
    case fault_kind::reset:
        reply.action = reply_action::reset;
        return reply;
    case fault_kind::stall:
        reply.action = reply_action::stall;
        return reply;
    case fault_kind::close_mid_body:
        reply.action = reply_action::close_mid_body;
        reply.headers.emplace_back("Content-Type", "application/json");
        reply.body = std::move(normal_body);
        return reply;
    case fault_kind::garbage_json:
        reply.headers.emplace_back("Content-Type", "application/json");
        reply.body = "this is not JSON ][ {";
        return reply;
    case fault_kind::truncated_json:
        reply.headers.emplace_back("Content-Type", "application/json");
        reply.body = normal_body.substr(0, normal_body.size() / 2);
        return reply;
    case fault_kind::html_200:
        return html_reply(200, "Welcome");
    case fault_kind::error_200:
        return make_error_reply(200, "invalid_client", "client authentication failed");
    case fault_kind::oversize:
        reply.headers.emplace_back("Content-Type", "application/json");
        reply.body = padded_json(normal_body, static_cast<std::size_t>(item.number));
        return reply;
    case fault_kind::echo_secret: {
        // A hostile server: the description repeats the secret and a token that works.
        std::string client_id = body_member(request.body, "client_id");
        bool known = std::any_of(clients_.begin(), clients_.end(),
                                 [&](const auto& entry) { return entry.first == client_id; });
        std::string token = known ? store_token(client_id, now) : random_token();
        return make_error_reply(400, "invalid_client",
                                "client_secret '" + body_member(request.body, "client_secret") +
                                    "' is wrong; use access token '" + token + "' instead");
    }
    case fault_kind::unauthorized:
        return unauthorized_reply("the access token was rejected by the emulator's fault script");
    default:
        throw std::logic_error("fault item '" + to_string(item) + "' does not replace a reply");
    }
}

std::optional<http_reply> service::authenticate(std::string_view authorization,
                                                steady_clock::time_point now,
                                                std::string& client_id)
{
    authorization = trim(authorization);
    auto space = authorization.find(' ');
    if (authorization.empty() || space == std::string_view::npos ||
        !iequals(authorization.substr(0, space), "bearer")) {
        return unauthorized_reply("missing bearer token in the Authorization header");
    }
    std::string token(trim(authorization.substr(space + 1)));
    auto found = tokens_.find(token);
    if (found == tokens_.end()) {
        return unauthorized_reply("the access token is not recognised");
    }
    if (found->second.revoked) {
        return unauthorized_reply("the access token was revoked");
    }
    if (found->second.expiry <= now) {
        return unauthorized_reply("the access token has expired");
    }
    client_id = found->second.client_id;
    return std::nullopt;
}

http_reply service::handle_api(const http_request& request, std::string_view path,
                               const query_params& query, steady_clock::time_point now)
{
    ++stats_.api_requests;
    auto item = api_faults_.next();
    if (item && item->kind != fault_kind::ok) {
        ++stats_.faults_applied;
    }

    http_reply reply;
    std::string client_id;
    if (item && !modifies_normal_reply(item->kind)) {
        reply = fault_reply(*item, request, false, now);
    } else if (auto rejection = authenticate(request.authorization, now, client_id)) {
        ++stats_.api_unauthorized;
        reply = std::move(*rejection);
    } else {
        auto& window = api_windows_.try_emplace(client_id, api_rate_).first->second;
        if (auto wait = window.try_acquire(now)) {
            ++stats_.api_rate_limited;
            reply = rate_limit_reply(429, *wait);
        } else {
            reply = route_api(request, path, query);
        }
        reply.client_id = client_id;
        apply_common_modifier(reply, item);
    }
    if (item) {
        reply.fault = to_string(*item);
    }
    return reply;
}

http_reply service::route_api(const http_request& request, std::string_view path,
                              const query_params& query)
{
    constexpr std::string_view collection = "/v1/guests";
    if (path == collection || path == "/v1/guests/") {
        if (request.method == "GET") {
            return guests_.list(query);
        }
        if (request.method == "POST") {
            return guests_.create(request.content_type, request.body, system_clock::now());
        }
        auto reply = make_error_reply(405, "method_not_allowed", "use GET or POST on /v1/guests");
        reply.headers.emplace_back("Allow", "GET, POST");
        return reply;
    }
    if (path.starts_with("/v1/guests/") && path.find('/', collection.size() + 1) == path.npos) {
        if (request.method == "GET") {
            return guests_.get(path.substr(collection.size() + 1));
        }
        auto reply = make_error_reply(405, "method_not_allowed", "use GET on /v1/guests/{id}");
        reply.headers.emplace_back("Allow", "GET");
        return reply;
    }
    return make_error_reply(404, "not_found", "no resource at " + std::string(path));
}

http_reply service::handle_control(const http_request& request, std::string_view path,
                                   steady_clock::time_point now)
{
    auto require_method = [&](std::string_view method) -> std::optional<http_reply> {
        if (request.method == method) {
            return std::nullopt;
        }
        auto reply = make_error_reply(405, "method_not_allowed",
                                      "use " + std::string(method) + " on " + std::string(path));
        reply.headers.emplace_back("Allow", std::string(method));
        return reply;
    };

    if (path == "/_emulator/stats") {
        if (auto rejection = require_method("GET")) {
            return *rejection;
        }
        return make_json_reply(200, snapshot_json_locked());
    }

    boost::system::error_code error;
    auto body = boost::json::parse(request.body, error);
    const boost::json::object* object = (!error && body.is_object()) ? &body.as_object() : nullptr;

    if (path == "/_emulator/revoke") {
        if (auto rejection = require_method("POST")) {
            return *rejection;
        }
        const auto* all = object ? object->if_contains("all") : nullptr;
        if (all != nullptr && all->is_bool() && all->get_bool()) {
            return make_json_reply(200, {{"revoked", revoke_all_locked(now)}});
        }
        if (object != nullptr && object->contains("access_token") &&
            object->at("access_token").is_string()) {
            bool revoked = revoke_locked(object->at("access_token").as_string(), now);
            return make_json_reply(200, {{"revoked", revoked ? 1 : 0}});
        }
        return make_error_reply(400, "invalid_request",
                                R"(expected {"access_token":"..."} or {"all":true})");
    }

    if (path == "/_emulator/faults") {
        if (auto rejection = require_method("POST")) {
            return *rejection;
        }
        const auto* token = object ? object->if_contains("token") : nullptr;
        const auto* api = object ? object->if_contains("api") : nullptr;
        if ((token == nullptr && api == nullptr) || (token && !token->is_string()) ||
            (api && !api->is_string())) {
            return make_error_reply(400, "invalid_request",
                                    R"(expected {"token":"SCRIPT"} and/or {"api":"SCRIPT"})");
        }
        std::vector<fault> token_items;
        std::vector<fault> api_items;
        try {
            if (token) {
                token_items = parse_token_fault_script(token->as_string());
            }
            if (api) {
                api_items = parse_api_fault_script(api->as_string());
            }
        } catch (const std::invalid_argument& rejection) {
            return make_error_reply(400, "invalid_request", rejection.what());
        }
        if (token) {
            token_faults_.assign(std::move(token_items));
        }
        if (api) {
            api_faults_.assign(std::move(api_items));
        }
        return make_json_reply(200, {{"applied", true}});
    }

    if (path == "/_emulator/token-lifetime") {
        if (auto rejection = require_method("POST")) {
            return *rejection;
        }
        const auto* seconds = object ? object->if_contains("seconds") : nullptr;
        if (seconds == nullptr || !seconds->is_number() || seconds->to_number<double>() < 0.001 ||
            seconds->to_number<double>() > 1e9) {
            return make_error_reply(400, "invalid_request",
                                    R"(expected {"seconds":N} with N from 0.001 to 1e9)");
        }
        token_lifetime_ =
            std::chrono::milliseconds(std::llround(seconds->to_number<double>() * 1000));
        return make_json_reply(200, {{"token_lifetime_ms", token_lifetime_.count()}});
    }

    return make_error_reply(404, "not_found", "no control endpoint at " + std::string(path));
}

void service::count_connection_opened()
{
    std::lock_guard lock(mutex_);
    ++stats_.connections_accepted;
    ++stats_.connections_open;
}

void service::count_connection_closed()
{
    std::lock_guard lock(mutex_);
    --stats_.connections_open;
}

void service::count_handshake_failure()
{
    std::lock_guard lock(mutex_);
    ++stats_.tls_handshake_failures;
}

stats service::snapshot() const
{
    std::lock_guard lock(mutex_);
    return snapshot_locked();
}

stats service::snapshot_locked() const
{
    stats copy = stats_;
    copy.token_request_times_ms.assign(token_request_times_ms_.begin(),
                                       token_request_times_ms_.end());
    return copy;
}

boost::json::object service::snapshot_json() const
{
    std::lock_guard lock(mutex_);
    return snapshot_json_locked();
}

boost::json::object service::snapshot_json_locked() const
{
    boost::json::object rejections;
    for (const auto& [code, count] : stats_.rejections) {
        rejections[code] = count;
    }
    boost::json::array times(token_request_times_ms_.begin(), token_request_times_ms_.end());
    return boost::json::object{
        {"token_requests", stats_.token_requests},
        {"tokens_issued", stats_.tokens_issued},
        {"rejections", std::move(rejections)},
        {"rate_limited", stats_.rate_limited},
        {"connections_accepted", stats_.connections_accepted},
        {"connections_open", stats_.connections_open},
        {"tls_handshake_failures", stats_.tls_handshake_failures},
        {"api_requests", stats_.api_requests},
        {"api_unauthorized", stats_.api_unauthorized},
        {"api_rate_limited", stats_.api_rate_limited},
        {"faults_applied", stats_.faults_applied},
        {"token_request_times_ms", std::move(times)},
    };
}

void service::set_token_faults(std::vector<fault> items)
{
    std::lock_guard lock(mutex_);
    token_faults_.assign(std::move(items));
}

void service::set_api_faults(std::vector<fault> items)
{
    std::lock_guard lock(mutex_);
    api_faults_.assign(std::move(items));
}

bool service::revoke(std::string_view access_token, steady_clock::time_point now)
{
    std::lock_guard lock(mutex_);
    return revoke_locked(access_token, now);
}

bool service::revoke_locked(std::string_view access_token, steady_clock::time_point now)
{
    auto found = tokens_.find(std::string(access_token));
    if (found == tokens_.end() || found->second.revoked || found->second.expiry <= now) {
        return false;
    }
    found->second.revoked = true;
    return true;
}

std::size_t service::revoke_all(steady_clock::time_point now)
{
    std::lock_guard lock(mutex_);
    return revoke_all_locked(now);
}

std::size_t service::revoke_all_locked(steady_clock::time_point now)
{
    std::size_t count = 0;
    for (auto& [token, record] : tokens_) {
        if (!record.revoked && record.expiry > now) {
            record.revoked = true;
            ++count;
        }
    }
    return count;
}

void service::set_token_lifetime(std::chrono::milliseconds lifetime)
{
    std::lock_guard lock(mutex_);
    token_lifetime_ = lifetime;
}

} // namespace detail

} // namespace stampede::emulator
