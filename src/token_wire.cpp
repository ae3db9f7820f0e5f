#include <stampede/detail/form_encoding.hpp>
#include <stampede/detail/token_wire.hpp>
#include <stampede/error.hpp>
#include <stampede/retry.hpp>

#include <boost/beast/http/field.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace stampede::detail {

namespace {

namespace http = boost::beast::http;
namespace json = boost::json;

using std::chrono::milliseconds;

constexpr std::string_view redacted_text = "[redacted]";

// Redacting shorter values would replace common substrings of unrelated text.
constexpr std::size_t min_secret_size = 4;

// Lifetimes above ten years are cut, so adding one to a time point cannot overflow.
constexpr std::chrono::seconds max_expires_in{std::int64_t{10} * 365 * 24 * 3600};

// Limits for server text quoted inside the SDK's own client messages.
constexpr std::size_t max_quoted_code_chars = 64;
constexpr std::size_t max_quoted_header_chars = 100;

//
// Encoded forms of secrets
//

constexpr std::string_view base64_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view base64url_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Returns the base64 characters that depend only on `secret` when it is encoded after
// `offset` other bytes (0, 1 or 2). Those characters appear whenever the secret is
// encoded inside a longer value at that alignment, such as "client_id:secret".
std::string stable_base64(std::string_view secret, std::size_t offset, std::string_view alphabet) {
    std::string input(offset, '\0');
    input += secret;

    std::string encoded;
    std::uint32_t bits = 0;
    int bit_count = 0;
    for (char c : input) {
        bits = (bits << 8) | static_cast<unsigned char>(c);
        bit_count += 8;
        while (bit_count >= 6) {
            bit_count -= 6;
            encoded += alphabet[(bits >> bit_count) & 0x3f];
        }
    }
    OPENSSL_cleanse(input.data(), input.size());

    // Character i covers input bits [6i, 6i + 6); keep those inside the secret's bits.
    const std::size_t first = (8 * offset + 5) / 6;
    const std::size_t last = (8 * (offset + secret.size())) / 6;
    std::string stable = encoded.substr(first, last - first);
    OPENSSL_cleanse(encoded.data(), encoded.size());
    return stable;
}

//
// Matching a secret in raw, percent-encoded and JSON-escaped text
//

enum class escaping { none, percent, json };

// One unit of text: the bytes it stands for and how many text bytes it spans.
struct text_unit {
    std::array<char, 4> bytes{};
    std::size_t size = 0;
    std::size_t consumed = 0;
    bool plus = false; // '+' in percent-encoded text: either '+' or a space
};

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool read_hex4(std::string_view text, std::size_t pos, std::uint32_t& out) noexcept {
    if (pos + 4 > text.size()) {
        return false;
    }
    out = 0;
    for (std::size_t i = 0; i < 4; ++i) {
        const int digit = hex_value(text[pos + i]);
        if (digit < 0) {
            return false;
        }
        out = (out << 4) | static_cast<std::uint32_t>(digit);
    }
    return true;
}

void append_utf8(std::uint32_t code_point, text_unit& unit) noexcept {
    auto put = [&](std::uint32_t byte) { unit.bytes[unit.size++] = static_cast<char>(byte); };
    if (code_point < 0x80) {
        put(code_point);
    } else if (code_point < 0x800) {
        put(0xc0 | (code_point >> 6));
        put(0x80 | (code_point & 0x3f));
    } else if (code_point < 0x10000) {
        put(0xe0 | (code_point >> 12));
        put(0x80 | ((code_point >> 6) & 0x3f));
        put(0x80 | (code_point & 0x3f));
    } else {
        put(0xf0 | (code_point >> 18));
        put(0x80 | ((code_point >> 12) & 0x3f));
        put(0x80 | ((code_point >> 6) & 0x3f));
        put(0x80 | (code_point & 0x3f));
    }
}

// Decodes the JSON escape sequence that starts with the backslash at `pos`. Returns false
// when the sequence is invalid.
bool decode_json_escape(std::string_view text, std::size_t pos, text_unit& unit) noexcept {
    if (pos + 1 >= text.size()) {
        return false;
    }
    unit.consumed = 2;
    switch (text[pos + 1]) {
    case '"':
    case '\\':
    case '/':
        append_utf8(static_cast<unsigned char>(text[pos + 1]), unit);
        return true;
    case 'b':
        append_utf8('\b', unit);
        return true;
    case 'f':
        append_utf8('\f', unit);
        return true;
    case 'n':
        append_utf8('\n', unit);
        return true;
    case 'r':
        append_utf8('\r', unit);
        return true;
    case 't':
        append_utf8('\t', unit);
        return true;
    case 'u':
        break;
    default:
        return false;
    }

    std::uint32_t code_point = 0;
    if (!read_hex4(text, pos + 2, code_point)) {
        return false;
    }
    unit.consumed = 6;

    // A high surrogate followed by an escaped low surrogate encodes one code point.
    std::uint32_t low = 0;
    if (code_point >= 0xd800 && code_point < 0xdc00 && pos + 7 < text.size() &&
        text[pos + 6] == '\\' && text[pos + 7] == 'u' && read_hex4(text, pos + 8, low) &&
        low >= 0xdc00 && low < 0xe000) {
        code_point = 0x10000 + ((code_point - 0xd800) << 10) + (low - 0xdc00);
        unit.consumed = 12;
    }
    append_utf8(code_point, unit);
    return true;
}

text_unit next_unit(std::string_view text, std::size_t pos, escaping mode) noexcept {
    text_unit unit;
    if (mode == escaping::percent) {
        if (text[pos] == '%' && pos + 2 < text.size() && hex_value(text[pos + 1]) >= 0 &&
            hex_value(text[pos + 2]) >= 0) {
            unit.bytes[0] =
                static_cast<char>(hex_value(text[pos + 1]) * 16 + hex_value(text[pos + 2]));
            unit.size = 1;
            unit.consumed = 3;
            return unit;
        }
        if (text[pos] == '+') {
            unit.plus = true;
            unit.consumed = 1;
            return unit;
        }
    }
    if (mode == escaping::json && text[pos] == '\\') {
        text_unit escaped;
        if (decode_json_escape(text, pos, escaped)) {
            return escaped;
        }
    }
    unit.bytes[0] = text[pos];
    unit.size = 1;
    unit.consumed = 1;
    return unit;
}

// Returns how many bytes of `text` from `pos` encode `secret` under `mode`, or 0.
std::size_t match_length(std::string_view text, std::size_t pos, std::string_view secret,
                         escaping mode) noexcept {
    std::size_t p = pos;
    std::size_t i = 0;
    while (i < secret.size()) {
        if (p >= text.size()) {
            return 0;
        }
        const text_unit unit = next_unit(text, p, mode);
        if (unit.plus) {
            if (secret[i] != '+' && secret[i] != ' ') {
                return 0;
            }
            ++i;
        } else {
            if (unit.size > secret.size() - i ||
                std::memcmp(unit.bytes.data(), secret.data() + i, unit.size) != 0) {
                return 0;
            }
            i += unit.size;
        }
        p += unit.consumed;
    }
    return p - pos;
}

//
// Sanitizing untrusted text
//

// Decodes one UTF-8 sequence at `pos`. Returns its length, or 0 when it is invalid.
std::size_t utf8_sequence(std::string_view text, std::size_t pos, std::uint32_t& code_point) {
    const auto lead = static_cast<unsigned char>(text[pos]);
    std::size_t length = 0;
    std::uint32_t min_value = 0;
    if (lead < 0x80) {
        code_point = lead;
        return 1;
    } else if ((lead & 0xe0) == 0xc0) {
        length = 2;
        code_point = lead & 0x1f;
        min_value = 0x80;
    } else if ((lead & 0xf0) == 0xe0) {
        length = 3;
        code_point = lead & 0x0f;
        min_value = 0x800;
    } else if ((lead & 0xf8) == 0xf0) {
        length = 4;
        code_point = lead & 0x07;
        min_value = 0x10000;
    } else {
        return 0;
    }
    if (pos + length > text.size()) {
        return 0;
    }
    for (std::size_t i = 1; i < length; ++i) {
        const auto next = static_cast<unsigned char>(text[pos + i]);
        if ((next & 0xc0) != 0x80) {
            return 0;
        }
        code_point = (code_point << 6) | (next & 0x3f);
    }
    const bool surrogate = code_point >= 0xd800 && code_point < 0xe000;
    if (code_point < min_value || code_point > 0x10ffff || surrogate) {
        return 0;
    }
    return length;
}

// Control characters (C0, DEL, C1), line and paragraph separators, and bidirectional
// formatting characters, which could reorder or hide the surrounding text on a terminal.
bool is_unsafe(std::uint32_t code_point) noexcept {
    return code_point < 0x20 || (code_point >= 0x7f && code_point < 0xa0) || code_point == 0x2028 ||
           code_point == 0x2029 || (code_point >= 0x200e && code_point <= 0x200f) ||
           (code_point >= 0x202a && code_point <= 0x202e) ||
           (code_point >= 0x2066 && code_point <= 0x2069);
}

std::string quoted_server_text(std::string_view text, const redactor& secrets,
                               std::size_t max_chars) {
    return "\"" + sanitize_server_text(text, secrets, max_chars) + "\"";
}

//
// Response interpretation
//

bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

std::string_view trim(std::string_view text) noexcept {
    const auto first = text.find_first_not_of(" \t");
    if (first == std::string_view::npos) {
        return {};
    }
    const auto last = text.find_last_not_of(" \t");
    return text.substr(first, last - first + 1);
}

// Returns whether a Content-Type value names JSON: application/json or a +json type,
// with any parameters and in any case.
bool is_json_content_type(std::string_view value) noexcept {
    const auto media_type = trim(value.substr(0, value.find(';')));
    if (iequals(media_type, "application/json")) {
        return true;
    }
    return media_type.size() > 5 && iequals(media_type.substr(media_type.size() - 5), "+json");
}

// Describes the response for client messages: `HTTP 503 (Content-Type "text/html")`.
std::string describe_response(const http_response& response, const redactor& secrets) {
    std::string text = "HTTP " + std::to_string(response.result_int());
    const auto content_type = response.find(http::field::content_type);
    if (content_type == response.end()) {
        text += " (no Content-Type)";
    } else {
        text += " (Content-Type " +
                quoted_server_text(content_type->value(), secrets, max_quoted_header_chars) + ")";
    }
    return text;
}

std::string_view advice_for(oauth_errc code) noexcept {
    switch (code) {
    case oauth_errc::invalid_client:
    case oauth_errc::unauthorized_client:
    case oauth_errc::access_denied:
        return "; check client_id and client_secret";
    case oauth_errc::invalid_scope:
        return "; check the scopes granted to the API key";
    case oauth_errc::slow_down:
    case oauth_errc::temporarily_unavailable:
    case oauth_errc::server_error:
    case oauth_errc::rate_limit_exceeded:
    case oauth_errc::too_many_requests:
        return "; retry later";
    default:
        return "";
    }
}

std::string_view advice_for_status(unsigned status) noexcept {
    if (status >= 300 && status < 400) {
        return "; redirects are not followed, so set token_url to the final URL";
    }
    if (status == 401 || status == 403) {
        return "; check client_id and client_secret";
    }
    if (status == 404 || status == 405) {
        return "; check token_url";
    }
    if (status == 429 || status >= 500) {
        return "; retry later";
    }
    return "";
}

// Returns a note quoting the WWW-Authenticate challenge of a 401, which names the
// authentication scheme the server expected; empty for other responses.
std::string challenge_note(const http_response& response, const redactor& secrets) {
    const auto challenge = response.find(http::field::www_authenticate);
    if (response.result_int() != 401 || challenge == response.end()) {
        return {};
    }
    return " (WWW-Authenticate " +
           quoted_server_text(challenge->value(), secrets, max_quoted_header_chars) + ")";
}

boost::system::error_code oauth_failure(const json::object& body, const json::string& code,
                                        const http_response& response, const redactor& secrets,
                                        diagnostics& diag) {
    const oauth_errc errc = oauth_errc_from_string(code);
    diag.set_server_error_code(sanitize_server_text(code, secrets, max_quoted_code_chars));

    std::string server_text;
    if (const auto* description = body.if_contains("error_description");
        description && description->is_string()) {
        server_text = description->get_string();
    }
    if (const auto* uri = body.if_contains("error_uri"); uri && uri->is_string()) {
        server_text += server_text.empty() ? "" : " ";
        server_text += "(error_uri: ";
        server_text += uri->get_string();
        server_text += ")";
    }
    diag.set_server_message(sanitize_server_text(server_text, secrets));

    const std::string_view advice =
        advice_for(errc).empty() ? advice_for_status(response.result_int()) : advice_for(errc);
    diag.set_client_message("the token endpoint returned " + describe_response(response, secrets) +
                            " with OAuth error " +
                            quoted_server_text(code, secrets, max_quoted_code_chars) +
                            challenge_note(response, secrets) + std::string(advice));
    return make_error_code(errc);
}

boost::system::error_code http_failure(const http_response& response, const redactor& secrets,
                                       std::string_view body_description, diagnostics& diag) {
    diag.set_client_message("the token endpoint returned " + describe_response(response, secrets) +
                            " " + std::string(body_description) +
                            challenge_note(response, secrets) +
                            std::string(advice_for_status(response.result_int())));
    diag.set_server_message(sanitize_server_text(response.body(), secrets));
    return make_http_error(response.result_int());
}

boost::system::error_code malformed(const http_response& response, const redactor& secrets,
                                    std::string_view problem, diagnostics& diag) {
    diag.set_client_message("the token endpoint returned " + describe_response(response, secrets) +
                            " " + std::string(problem));
    diag.set_server_message(sanitize_server_text(response.body(), secrets));
    return make_error_code(client_errc::malformed_response);
}

boost::system::error_code invalid_expires_in(std::string_view value_text, diagnostics& diag) {
    diag.set_client_message("the token response has an invalid expires_in " +
                            std::string(value_text) + "; expected a positive number of seconds");
    return make_error_code(client_errc::invalid_expires_in);
}

std::string format_seconds(double seconds) {
    std::array<char, 32> text{};
    const auto result = std::to_chars(text.data(), text.data() + text.size(), seconds);
    return std::string(text.data(), result.ptr);
}

// Converts a number of seconds to milliseconds, rounding down and cutting at ten years.
// Returns false for values that are not positive or round down to zero milliseconds.
bool seconds_to_lifetime(double seconds, milliseconds& out) noexcept {
    if (std::isnan(seconds) || !(seconds > 0)) {
        return false;
    }
    if (seconds >= static_cast<double>(max_expires_in.count())) {
        out = max_expires_in;
        return true;
    }
    out = milliseconds(static_cast<std::int64_t>(std::floor(seconds * 1000)));
    return out.count() > 0;
}

// Accepts "3600" and "3600.5": digits with an optional fraction, and nothing else (no
// sign, exponent or spaces).
bool parse_decimal_seconds(std::string_view text, double& out) noexcept {
    const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
    const auto point = text.find('.');
    const auto whole = text.substr(0, point);
    const auto fraction =
        point == std::string_view::npos ? std::string_view{} : text.substr(point + 1);
    if (whole.empty() || !std::all_of(whole.begin(), whole.end(), is_digit)) {
        return false;
    }
    if (point != std::string_view::npos &&
        (fraction.empty() || !std::all_of(fraction.begin(), fraction.end(), is_digit))) {
        return false;
    }
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && ptr == text.data() + text.size();
}

boost::system::error_code parse_expires_in(const json::value* value, const redactor& secrets,
                                           std::optional<milliseconds>& out, diagnostics& diag) {
    out.reset();
    if (value == nullptr || value->is_null()) {
        return {};
    }

    milliseconds lifetime{};
    switch (value->kind()) {
    case json::kind::int64:
        if (value->get_int64() > 0 &&
            seconds_to_lifetime(static_cast<double>(value->get_int64()), lifetime)) {
            out = lifetime;
            return {};
        }
        return invalid_expires_in(std::to_string(value->get_int64()), diag);
    case json::kind::uint64:
        if (seconds_to_lifetime(static_cast<double>(value->get_uint64()), lifetime)) {
            out = lifetime;
            return {};
        }
        return invalid_expires_in(std::to_string(value->get_uint64()), diag);
    case json::kind::double_:
        if (seconds_to_lifetime(value->get_double(), lifetime)) {
            out = lifetime;
            return {};
        }
        return invalid_expires_in(format_seconds(value->get_double()), diag);
    case json::kind::string: {
        const std::string_view text = value->get_string();
        double seconds = 0;
        if (parse_decimal_seconds(text, seconds) && seconds_to_lifetime(seconds, lifetime)) {
            out = lifetime;
            return {};
        }
        return invalid_expires_in(quoted_server_text(text, secrets, max_quoted_code_chars), diag);
    }
    case json::kind::bool_:
        return invalid_expires_in(value->get_bool() ? "true" : "false", diag);
    case json::kind::array:
        return invalid_expires_in("(an array)", diag);
    case json::kind::object:
        return invalid_expires_in("(an object)", diag);
    case json::kind::null:
        break;
    }
    return {};
}

// Returns whether every byte can go into an Authorization header: visible ASCII only, so
// a hostile value cannot add header lines.
bool is_header_safe_token(std::string_view token) noexcept {
    return std::all_of(token.begin(), token.end(), [](char c) {
        const auto byte = static_cast<unsigned char>(c);
        return byte > 0x20 && byte < 0x7f;
    });
}

boost::system::error_code parse_success(const json::object& body, const http_response& response,
                                        const redactor& secrets, token_response& out,
                                        diagnostics& diag) {
    const auto* access_token = body.if_contains("access_token");
    if (access_token == nullptr || access_token->is_null()) {
        diag.set_client_message("the token endpoint returned " +
                                describe_response(response, secrets) + " without access_token");
        return make_error_code(client_errc::missing_access_token);
    }
    if (!access_token->is_string()) {
        diag.set_client_message("the token endpoint returned " +
                                describe_response(response, secrets) +
                                " with an access_token that is not a string");
        return make_error_code(client_errc::missing_access_token);
    }
    const std::string_view token = access_token->get_string();
    if (token.empty()) {
        diag.set_client_message("the token endpoint returned " +
                                describe_response(response, secrets) +
                                " with an empty access_token");
        return make_error_code(client_errc::missing_access_token);
    }
    if (!is_header_safe_token(token)) {
        diag.set_client_message("the token endpoint returned " +
                                describe_response(response, secrets) +
                                " with an access_token containing spaces, control or non-ASCII "
                                "characters, which cannot be sent in an Authorization header");
        return make_error_code(client_errc::missing_access_token);
    }

    // A missing token_type is taken as Bearer, the only type the API issues.
    std::string token_type = "Bearer";
    if (const auto* type = body.if_contains("token_type"); type && !type->is_null()) {
        if (!type->is_string() || !iequals(type->get_string(), "bearer")) {
            const std::string quoted_type =
                type->is_string()
                    ? quoted_server_text(type->get_string(), secrets, max_quoted_code_chars)
                    : std::string("(not a string)");
            diag.set_client_message("the token endpoint returned token_type " + quoted_type +
                                    "; only Bearer tokens are supported");
            return make_error_code(client_errc::unsupported_token_type);
        }
    }

    std::optional<milliseconds> expires_in;
    if (auto ec = parse_expires_in(body.if_contains("expires_in"), secrets, expires_in, diag)) {
        return ec;
    }

    // A scope of another type (some servers send an array) is ignored.
    std::string scope;
    if (const auto* value = body.if_contains("scope"); value && value->is_string()) {
        scope = value->get_string();
    }

    out.access_token = secret_string(token);
    out.token_type = std::move(token_type);
    out.scope = std::move(scope);
    out.expires_in = expires_in;
    return {};
}

// Overwrites the bytes of a parsed JSON tree's strings that may hold a token.
void wipe_token(json::value& document) {
    if (auto* object = document.if_object()) {
        if (auto* token = object->if_contains("access_token"); token && token->is_string()) {
            auto& text = token->get_string();
            OPENSSL_cleanse(text.data(), text.size());
        }
    }
}

} // namespace

//
// redactor
//

void redactor::add(std::string_view secret) {
    if (secret.size() < min_secret_size) {
        return;
    }

    auto add_pattern = [this](std::string pattern) {
        const bool known = std::any_of(patterns_.begin(), patterns_.end(),
                                       [&](const auto& p) { return p.reveal() == pattern; });
        if (pattern.size() >= min_secret_size && !known) {
            patterns_.emplace_back(pattern);
        }
        OPENSSL_cleanse(pattern.data(), pattern.size());
    };

    add_pattern(std::string(secret));
    for (std::size_t offset = 0; offset < 3; ++offset) {
        add_pattern(stable_base64(secret, offset, base64_alphabet));
        add_pattern(stable_base64(secret, offset, base64url_alphabet));
    }

    // Longer patterns first, so that a match covers as much as possible.
    std::stable_sort(patterns_.begin(), patterns_.end(),
                     [](const auto& a, const auto& b) { return a.size() > b.size(); });
}

std::string redactor::redact(std::string_view text) const {
    if (patterns_.empty()) {
        return std::string(text);
    }

    std::string out;
    out.reserve(text.size());
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t longest = 0;
        for (const auto& pattern : patterns_) {
            for (auto mode : {escaping::none, escaping::percent, escaping::json}) {
                longest = std::max(longest, match_length(text, pos, pattern.reveal(), mode));
            }
        }
        if (longest > 0) {
            out += redacted_text;
            pos += longest;
        } else {
            out += text[pos];
            ++pos;
        }
    }
    return out;
}

std::size_t redactor::max_encoded_size() const noexcept {
    std::size_t longest = 0;
    for (const auto& pattern : patterns_) {
        longest = std::max(longest, pattern.reveal().size());
    }
    // A JSON escape of one byte (backslash, u and four hex digits) takes six bytes, the most
    // of any form that `redact` recognises.
    return longest * 6;
}

namespace {

// Replaces unsafe characters with spaces and invalid UTF-8 bytes with U+FFFD, and folds
// each run of white space into one space, so the text stays on one line.
std::string fold_to_one_line(std::string_view text) {
    std::string clean;
    clean.reserve(text.size());
    bool pending_space = false;
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::uint32_t code_point = 0;
        std::size_t length = utf8_sequence(text, pos, code_point);
        if (length == 0) {
            if (pending_space && !clean.empty()) {
                clean += ' ';
            }
            pending_space = false;
            clean += "\xef\xbf\xbd"; // U+FFFD REPLACEMENT CHARACTER
            ++pos;
            continue;
        }
        if (is_unsafe(code_point) || code_point == ' ') {
            pending_space = true;
        } else {
            if (pending_space && !clean.empty()) {
                clean += ' ';
            }
            pending_space = false;
            clean.append(text.substr(pos, length));
        }
        pos += length;
    }
    return clean;
}

bool is_token_char(char c) noexcept {
    const auto byte = static_cast<unsigned char>(c);
    return std::isalnum(byte) != 0 || c == '-' || c == '_' || c == '.' || c == '~' || c == '+' ||
           c == '/' || c == '=';
}

// Keys whose value is a credential, as in `access_token=...` or `"client_secret": "..."`.
// Compared in lower case.
constexpr std::string_view credential_keys[] = {
    "access_token", "refresh_token", "id_token", "client_secret", "password",
};

bool is_credential_key(std::string_view word) {
    std::string lower(word);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return std::find(std::begin(credential_keys), std::end(credential_keys), lower) !=
           std::end(credential_keys);
}

bool is_bearer(std::string_view word) noexcept {
    return word.size() == 6 && iequals(word, "bearer");
}

// Returns whether `word` has the shape of a random credential: 24 or more token characters
// mixing upper case, lower case and digits. Words, numbers, hex ids and UUIDs do not.
bool looks_random(std::string_view word) noexcept {
    if (word.size() < 24) {
        return false;
    }
    bool upper = false;
    bool lower = false;
    bool digit = false;
    for (char c : word) {
        const auto byte = static_cast<unsigned char>(c);
        upper = upper || std::isupper(byte) != 0;
        lower = lower || std::islower(byte) != 0;
        digit = digit || std::isdigit(byte) != 0;
    }
    return upper && lower && digit;
}

// Masks credentials that match no redactor pattern, such as a token issued to someone else
// that a hostile or careless server echoes: the value after a credential key and `:` or
// `=`, a word of 16 or more characters after `Bearer`, and every word that looks random.
std::string mask_unknown_credentials(std::string_view text) {
    enum class expect { nothing, separator, value, bearer_value };
    std::string out;
    out.reserve(text.size());
    expect state = expect::nothing;
    std::size_t pos = 0;
    while (pos < text.size()) {
        if (!is_token_char(text[pos])) {
            const char c = text[pos];
            if (c == ':' && state == expect::separator) {
                state = expect::value;
            } else if (c != '"' && c != '\'' && c != ' ' && c != '\\') {
                state = expect::nothing;
            }
            out += c;
            ++pos;
            continue;
        }
        std::size_t end = pos;
        while (end < text.size() && is_token_char(text[end])) {
            ++end;
        }
        std::string_view word = text.substr(pos, end - pos);
        pos = end;

        if (state == expect::value || (state == expect::bearer_value && word.size() >= 16) ||
            looks_random(word)) {
            out += redacted_text;
            state = expect::nothing;
            continue;
        }
        if (word == "=" && state == expect::separator) {
            out += word;
            state = expect::value;
            continue;
        }
        // `access_token=abc` is a single word of token characters.
        if (const auto equals = word.find('='); equals != std::string_view::npos && equals > 0 &&
                                                is_credential_key(word.substr(0, equals))) {
            out.append(word.substr(0, equals + 1));
            if (equals + 1 < word.size()) {
                out += redacted_text;
                state = expect::nothing;
            } else {
                state = expect::value;
            }
            continue;
        }
        out.append(word);
        if (is_bearer(word)) {
            state = expect::bearer_value;
        } else if (is_credential_key(word)) {
            state = expect::separator;
        } else {
            state = expect::nothing;
        }
    }
    return out;
}

// Cuts valid UTF-8 `text` to `max_chars` code points, adding `...` when anything is cut.
std::string cut_to_chars(std::string text, std::size_t max_chars, bool more_follows) {
    std::size_t chars = 0;
    std::size_t pos = 0;
    while (pos < text.size() && chars < max_chars) {
        std::uint32_t code_point = 0;
        pos += std::max<std::size_t>(utf8_sequence(text, pos, code_point), 1);
        ++chars;
    }
    if (pos < text.size()) {
        text.resize(pos);
        more_follows = true;
    }
    if (more_follows) {
        // Do not leave a space before the ellipsis.
        if (!text.empty() && text.back() == ' ') {
            text.pop_back();
        }
        text += "...";
    }
    return text;
}

} // namespace

std::string sanitize_server_text(std::string_view text, const redactor& secrets,
                                 std::size_t max_chars) {
    // Only a prefix is examined, so that an 8 MiB body costs no more than a short one. The
    // prefix contains max_chars characters of up to four bytes each, plus room for a whole
    // secret in its longest encoded form, so a secret that starts before the cut is found.
    std::size_t window = text.size();
    if (max_chars < text.size() / 4) {
        window = std::min(text.size(), max_chars * 4 + secrets.max_encoded_size());
    }
    const bool more_follows = window < text.size();

    // Redacted before and after folding white space: a secret written with tabs or line
    // breaks where it has spaces only matches once those are folded.
    const std::string folded = fold_to_one_line(secrets.redact(text.substr(0, window)));
    const std::string masked = mask_unknown_credentials(secrets.redact(folded));
    return cut_to_chars(masked, max_chars, more_follows);
}

//
// Token request and response
//

boost::system::error_code parse_token_response(const http_response& response,
                                               const redactor& secrets,
                                               std::chrono::system_clock::time_point now,
                                               token_response& out, diagnostics& diag) {
    const unsigned status = response.result_int();
    diag.set_http_status(status);
    if (status < 200) {
        // The transport rejects these already; checked again because an error code made
        // from status 0 would read as success.
        return malformed(response, secrets, "with a status that is not a final response",
                         diag);
    }

    if (const auto retry_after = response.find(http::field::retry_after);
        retry_after != response.end()) {
        diag.set_retry_after(parse_retry_after(retry_after->value(), now));
    }

    const auto content_type = response.find(http::field::content_type);
    const bool declared_json =
        content_type != response.end() && is_json_content_type(content_type->value());
    const bool declared_form = content_type != response.end() &&
                               is_form_urlencoded_content_type(content_type->value());

    // JSON is parsed whatever the Content-Type is, because some servers label JSON as
    // text/plain. A body declared form-encoded is read as form fields instead, because
    // some servers still send form-encoded responses although RFC 6749 requires JSON.
    boost::system::error_code parse_ec;
    json::value document = declared_form
                               ? json::value(parse_form_urlencoded(response.body(), parse_ec))
                               : json::parse(response.body(), parse_ec);
    const bool is_success = status >= 200 && status < 300;

    if (parse_ec) {
        std::string problem;
        if (response.body().empty()) {
            problem = "with an empty body";
        } else if (declared_form) {
            problem = "with a form-encoded body that is not valid (" + parse_ec.message() + ")";
        } else if (!declared_json && !is_success) {
            // The parser's complaint about a text or HTML error page would only add noise.
            problem = "with a body that is not JSON";
        } else {
            problem = declared_json ? "with a body that is not valid JSON ("
                                    : "with a body that is not JSON (";
            problem += parse_ec.message();
            problem += ")";
        }
        return is_success ? malformed(response, secrets, problem, diag)
                          : http_failure(response, secrets, problem, diag);
    }

    const auto* object = document.if_object();
    if (object != nullptr) {
        if (const auto* error = object->if_contains("error");
            error && error->is_string() && !error->get_string().empty()) {
            wipe_token(document);
            return oauth_failure(*object, error->get_string(), response, secrets, diag);
        }
    }

    if (!is_success) {
        wipe_token(document);
        return http_failure(response, secrets, "without an OAuth error", diag);
    }
    if (object == nullptr) {
        return malformed(response, secrets, "with a JSON body that is not an object", diag);
    }

    const auto ec = parse_success(*object, response, secrets, out, diag);
    wipe_token(document);
    return ec;
}

} // namespace stampede::detail
