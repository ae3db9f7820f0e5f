#include <stampede/token_cache_key.hpp>

#include <openssl/evp.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

namespace stampede {

namespace {

// Version 1 of the encoding: this tag, then each field as an 8-byte big-endian length
// followed by its bytes, in the order of `token_cache_key`'s description. The extra
// parameters are preceded by their count, also as 8 bytes, and each is a name field
// followed by a value field.
constexpr std::string_view encoding_tag = "stampede token cache key v1";

void append_size(std::string& out, std::uint64_t size)
{
    for (int shift = 56; shift >= 0; shift -= 8) {
        out += static_cast<char>((size >> shift) & 0xff);
    }
}

void append_field(std::string& out, std::string_view field)
{
    append_size(out, field.size());
    out += field;
}

// Returns the scope tokens sorted and without repeats, separated by single spaces.
std::string canonical_scope(std::string_view scope)
{
    std::vector<std::string_view> tokens;
    while (!scope.empty()) {
        const auto space = scope.find(' ');
        const auto token = scope.substr(0, space);
        if (!token.empty()) {
            tokens.push_back(token);
        }
        scope = space == std::string_view::npos ? std::string_view{} : scope.substr(space + 1);
    }
    std::sort(tokens.begin(), tokens.end());
    tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());

    std::string out;
    for (const auto token : tokens) {
        if (!out.empty()) {
            out += ' ';
        }
        out += token;
    }
    return out;
}

std::string sha256_hex(std::string_view input)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_size = 0;
    if (EVP_Digest(input.data(), input.size(), digest, &digest_size, EVP_sha256(), nullptr) != 1) {
        throw std::runtime_error("SHA-256 is not available in OpenSSL");
    }

    constexpr std::string_view hex_digits = "0123456789abcdef";
    std::string hex;
    hex.reserve(2 * digest_size);
    for (unsigned int i = 0; i < digest_size; ++i) {
        hex += hex_digits[digest[i] >> 4];
        hex += hex_digits[digest[i] & 0x0f];
    }
    return hex;
}

} // namespace

std::string token_cache_key(const token_source_settings& settings)
{
    std::string encoded(encoding_tag);
    append_field(encoded, settings.token_url);
    append_field(encoded, settings.client_id);
    append_field(encoded, to_string(settings.auth_method));
    append_field(encoded, canonical_scope(settings.scope));
    append_field(encoded, settings.audience);
    append_field(encoded, settings.resource);

    std::vector<std::pair<std::string_view, std::string_view>> extra(
        settings.extra_parameters.begin(), settings.extra_parameters.end());
    std::sort(extra.begin(), extra.end());
    append_size(encoded, extra.size());
    for (const auto& [name, value] : extra) {
        append_field(encoded, name);
        append_field(encoded, value);
    }
    return sha256_hex(encoded);
}

} // namespace stampede
