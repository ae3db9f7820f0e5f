#ifndef STAMPEDE_TEST_FUZZ_SUPPORT_HPP
#define STAMPEDE_TEST_FUZZ_SUPPORT_HPP

// Helpers shared by the fuzz harnesses: splitting an input into readable parts, and the
// checks that every harness applies to text the SDK shows to users.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace stampede::fuzz {

/// Prints `what` and `detail`, then aborts, so that libFuzzer records the input as a crash.
[[noreturn]] inline void fail(std::string_view what, std::string_view detail = {})
{
    std::fprintf(stderr, "fuzz check failed: %.*s\n", static_cast<int>(what.size()), what.data());
    if (!detail.empty()) {
        std::fprintf(stderr, "  detail: %.*s\n", static_cast<int>(detail.size()), detail.data());
    }
    std::abort();
}

inline void check(bool condition, std::string_view what, std::string_view detail = {})
{
    if (!condition) {
        fail(what, detail);
    }
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size)
{
    return {reinterpret_cast<const char*>(data), size};
}

/// Removes and returns the first line of `text` (without its `\n` and a trailing `\r`).
inline std::string_view take_line(std::string_view& text)
{
    const auto end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (!line.empty() && line.back() == '\r') {
        line.remove_suffix(1);
    }
    return line;
}

/// Reads `key=value` lines. A later line with the same key wins; lines without `=` are
/// ignored. The values may contain any byte but a line feed.
inline std::map<std::string, std::string, std::less<>> parse_key_values(std::string_view text)
{
    std::map<std::string, std::string, std::less<>> out;
    while (!text.empty()) {
        const std::string_view line = take_line(text);
        const auto equals = line.find('=');
        if (equals != std::string_view::npos) {
            out[std::string(line.substr(0, equals))] = std::string(line.substr(equals + 1));
        }
    }
    return out;
}

/// Parses a decimal integer with an optional leading `-`, saturating at the limits of
/// `std::int64_t`. Returns `fallback` when `text` is not such a number.
inline std::int64_t parse_integer(std::string_view text, std::int64_t fallback)
{
    const bool negative = !text.empty() && text.front() == '-';
    if (negative) {
        text.remove_prefix(1);
    }
    if (text.empty()) {
        return fallback;
    }

    // 2^63, the magnitude of the smallest value; larger magnitudes saturate to it.
    constexpr std::uint64_t limit = std::uint64_t{1} << 63;
    std::uint64_t magnitude = 0;
    for (const char c : text) {
        if (c < '0' || c > '9') {
            return fallback;
        }
        const auto digit = static_cast<std::uint64_t>(c - '0');
        magnitude = magnitude > (limit - digit) / 10 ? limit : magnitude * 10 + digit;
    }
    if (negative) {
        return magnitude == limit ? std::numeric_limits<std::int64_t>::min()
                                  : -static_cast<std::int64_t>(magnitude);
    }
    return magnitude == limit ? std::numeric_limits<std::int64_t>::max()
                              : static_cast<std::int64_t>(magnitude);
}

/// Encodes `bytes` in base64 with the given 64-character alphabet, without padding.
inline std::string encode_base64(std::string_view bytes, std::string_view alphabet)
{
    std::string out;
    std::uint32_t bits = 0;
    int bit_count = 0;
    for (const char c : bytes) {
        bits = (bits << 8) | static_cast<unsigned char>(c);
        bit_count += 8;
        while (bit_count >= 6) {
            bit_count -= 6;
            out += alphabet[(bits >> bit_count) & 0x3f];
        }
    }
    if (bit_count > 0) {
        out += alphabet[(bits << (6 - bit_count)) & 0x3f];
    }
    return out;
}

inline constexpr std::string_view base64_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
inline constexpr std::string_view base64url_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Text that the SDK inserts into server text in place of what it removed. An occurrence
/// of a secret that overlaps one of these was assembled by the replacement, so it does not
/// reveal the secret.
inline constexpr std::string_view inserted_markers[] = {"[redacted]", "...", "\xef\xbf\xbd"};

/// Returns whether the range [first, last) of `text` overlaps an inserted marker.
inline bool overlaps_marker(std::string_view text, std::size_t first, std::size_t last)
{
    for (const std::string_view marker : inserted_markers) {
        for (auto pos = text.find(marker); pos != std::string_view::npos;
             pos = text.find(marker, pos + 1)) {
            if (pos < last && first < pos + marker.size()) {
                return true;
            }
        }
    }
    return false;
}

/// Aborts when `text` contains `secret`, as is or (when `encoded` is set) base64 or
/// base64url encoded, other than where an occurrence overlaps an inserted marker.
inline void check_no_secret(std::string_view text, std::string_view secret, std::string_view where,
                            bool encoded = true)
{
    std::vector<std::string> forms{std::string(secret)};
    if (encoded) {
        forms.push_back(encode_base64(secret, base64_alphabet));
        forms.push_back(encode_base64(secret, base64url_alphabet));
    }
    for (const std::string& form : forms) {
        for (auto pos = text.find(form); pos != std::string_view::npos;
             pos = text.find(form, pos + 1)) {
            if (!overlaps_marker(text, pos, pos + form.size())) {
                fail("a secret appears in " + std::string(where), text);
            }
        }
    }
}

/// Aborts when `text` contains a C0 control character or DEL, which would let server text
/// break a log line or a terminal.
inline void check_single_line(std::string_view text, std::string_view where)
{
    for (const char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte == 0x7f) {
            fail("a control character appears in " + std::string(where), text);
        }
    }
}

} // namespace stampede::fuzz

#endif
