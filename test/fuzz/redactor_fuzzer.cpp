// Fuzzes detail::redactor and detail::sanitize_server_text. The input is:
//
//     MAX_CHARS                  (the limit passed to sanitize_server_text)
//     SECRET                     (one secret per line, any number)
//                                (an empty line)
//     TEXT                       (the server text)
//
// The harness also appends each secret to the text as is, percent-encoded and
// JSON-escaped. No output may contain a secret in any of these forms, or base64-encoded,
// other than where the secret overlaps the replacement marker. The sanitized text must be
// valid UTF-8 on one line, and no longer than MAX_CHARS code points plus "...".

#include "fuzz_support.hpp"

#include <stampede/detail/token_wire.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace {

namespace fuzz = stampede::fuzz;

using stampede::detail::redactor;

std::string percent_encode_all(std::string_view secret)
{
    std::string out;
    for (const char c : secret) {
        char escaped[4];
        std::snprintf(escaped, sizeof escaped, "%%%02X", static_cast<unsigned char>(c));
        out += escaped;
    }
    return out;
}

// Escapes every ASCII byte as \u00XX and keeps the other bytes, which JSON allows raw.
std::string json_escape_all(std::string_view secret)
{
    std::string out;
    for (const char c : secret) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte < 0x80) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\u%04x", byte);
            out += escaped;
        } else {
            out += c;
        }
    }
    return out;
}

// Returns the number of code points, or aborts when `text` is not valid UTF-8.
std::size_t count_code_points(std::string_view text)
{
    std::size_t count = 0;
    std::size_t pos = 0;
    while (pos < text.size()) {
        const auto lead = static_cast<unsigned char>(text[pos]);
        std::size_t length = 1;
        if (lead >= 0xf0 && lead < 0xf5) {
            length = 4;
        } else if (lead >= 0xe0) {
            length = 3;
        } else if (lead >= 0xc2) {
            length = 2;
        } else {
            fuzz::check(lead < 0x80, "the sanitized text is not valid UTF-8", text);
        }
        fuzz::check(pos + length <= text.size(), "the sanitized text ends inside a character",
                    text);
        for (std::size_t i = 1; i < length; ++i) {
            fuzz::check((static_cast<unsigned char>(text[pos + i]) & 0xc0) == 0x80,
                        "the sanitized text is not valid UTF-8", text);
        }
        pos += length;
        ++count;
    }
    return count;
}

void check_sanitized(std::string_view sanitized, std::size_t max_chars)
{
    fuzz::check_single_line(sanitized, "the sanitized text");

    // C1 controls (U+0080..U+009F) are 0xC2 0x80..0x9F in UTF-8.
    for (std::size_t pos = 0; pos + 1 < sanitized.size(); ++pos) {
        const auto byte = static_cast<unsigned char>(sanitized[pos]);
        const auto next = static_cast<unsigned char>(sanitized[pos + 1]);
        fuzz::check(!(byte == 0xc2 && next >= 0x80 && next <= 0x9f),
                    "a C1 control character appears in the sanitized text");
    }

    std::string_view body = sanitized;
    if (body.ends_with("...")) {
        body.remove_suffix(3);
    }
    fuzz::check(count_code_points(body) <= max_chars, "the sanitized text is longer than max_chars",
                sanitized);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    std::string_view input = fuzz::as_text(data, size);
    const auto max_chars = static_cast<std::size_t>(
        std::clamp<std::int64_t>(fuzz::parse_integer(fuzz::take_line(input), 200), 0, 1000));

    std::vector<std::string> secrets;
    while (!input.empty()) {
        const std::string_view line = fuzz::take_line(input);
        if (line.empty()) {
            break;
        }
        secrets.emplace_back(line);
    }

    redactor r;
    std::string text(input);
    for (const std::string& secret : secrets) {
        r.add(secret);
        text += ' ' + secret + ' ' + percent_encode_all(secret) + ' ' + json_escape_all(secret);
    }

    const std::string redacted = r.redact(text);
    const std::string sanitized = stampede::detail::sanitize_server_text(text, r, max_chars);
    check_sanitized(sanitized, max_chars);
    for (const std::string& secret : secrets) {
        // The redactor ignores secrets shorter than 4 bytes.
        if (secret.size() < 4) {
            continue;
        }
        fuzz::check_no_secret(redacted, secret, "the redacted text");
        fuzz::check_no_secret(sanitized, secret, "the sanitized text");
        for (const std::string& form : {percent_encode_all(secret), json_escape_all(secret)}) {
            fuzz::check_no_secret(redacted, form, "the redacted text", false);
            fuzz::check_no_secret(sanitized, form, "the sanitized text", false);
        }
    }
    return 0;
}
