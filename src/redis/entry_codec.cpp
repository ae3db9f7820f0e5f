#include <stampede/redis/entry_codec.hpp>
#include <stampede/redis/error.hpp>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

namespace stampede::redis {
namespace {

using boost::system::error_code;
using std::chrono::system_clock;

constexpr std::string_view kdf_label = "stampede redis token entry v1";
constexpr std::size_t salt_size = 16;
constexpr std::size_t nonce_size = 12;
constexpr std::size_t tag_size = 16;
constexpr std::size_t key_size = 32;
constexpr std::size_t header_size = 1 + salt_size + nonce_size;

// A byte string for keys and plaintext, overwritten with zeros when destroyed. It is
// sized once and never reallocates, so no copy of its contents is left behind.
class secure_bytes {
public:
    explicit secure_bytes(std::size_t size)
        : data_(std::make_unique<unsigned char[]>(size))
        , size_(size)
    {}

    secure_bytes(const secure_bytes&) = delete;
    secure_bytes& operator=(const secure_bytes&) = delete;
    ~secure_bytes() { OPENSSL_cleanse(data_.get(), size_); }

    unsigned char* data() noexcept { return data_.get(); }
    const unsigned char* data() const noexcept { return data_.get(); }
    std::size_t size() const noexcept { return size_; }

private:
    std::unique_ptr<unsigned char[]> data_;
    std::size_t size_;
};

struct cipher_deleter {
    void operator()(EVP_CIPHER_CTX* ctx) const noexcept { EVP_CIPHER_CTX_free(ctx); }
};
using cipher_ptr = std::unique_ptr<EVP_CIPHER_CTX, cipher_deleter>;

struct kdf_deleter {
    void operator()(EVP_KDF_CTX* ctx) const noexcept { EVP_KDF_CTX_free(ctx); }
};
using kdf_ptr = std::unique_ptr<EVP_KDF_CTX, kdf_deleter>;

// Plaintext layout: u64 issued_at_ms | u64 expires_at_ms | u32 size + token
// | u32 size + token_type | u32 size + scope, big-endian.
class plaintext_writer {
public:
    explicit plaintext_writer(secure_bytes& out) noexcept
        : out_(out)
    {}

    void u32(std::uint32_t value) noexcept
    {
        for (int shift = 24; shift >= 0; shift -= 8) {
            out_.data()[at_++] = static_cast<unsigned char>(value >> shift);
        }
    }

    void u64(std::uint64_t value) noexcept
    {
        u32(static_cast<std::uint32_t>(value >> 32));
        u32(static_cast<std::uint32_t>(value));
    }

    void field(std::string_view text) noexcept
    {
        u32(static_cast<std::uint32_t>(text.size()));
        std::memcpy(out_.data() + at_, text.data(), text.size());
        at_ += text.size();
    }

private:
    secure_bytes& out_;
    std::size_t at_ = 0;
};

class plaintext_reader {
public:
    plaintext_reader(const unsigned char* data, std::size_t size) noexcept
        : data_(data)
        , left_(size)
    {}

    bool u32(std::uint32_t& value) noexcept
    {
        if (left_ < 4) {
            return false;
        }
        value = 0;
        for (int i = 0; i < 4; ++i) {
            value = (value << 8) | data_[i];
        }
        data_ += 4;
        left_ -= 4;
        return true;
    }

    bool u64(std::uint64_t& value) noexcept
    {
        std::uint32_t high = 0;
        std::uint32_t low = 0;
        if (!u32(high) || !u32(low)) {
            return false;
        }
        value = (std::uint64_t{high} << 32) | low;
        return true;
    }

    bool field(std::string_view& text) noexcept
    {
        std::uint32_t size = 0;
        if (!u32(size) || size > left_) {
            return false;
        }
        text = std::string_view(reinterpret_cast<const char*>(data_), size);
        data_ += size;
        left_ -= size;
        return true;
    }

    bool at_end() const noexcept { return left_ == 0; }

private:
    const unsigned char* data_;
    std::size_t left_;
};

std::int64_t to_unix_ms(system_clock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

system_clock::time_point from_unix_ms(std::int64_t ms)
{
    return system_clock::time_point(
        std::chrono::duration_cast<system_clock::duration>(std::chrono::milliseconds(ms)));
}

// HKDF-SHA256(IKM = client secret, salt, info = label || 0 || cache key).
void derive_key(const secret_string& secret, const unsigned char* salt, std::string_view cache_key,
                secure_bytes& key)
{
    std::string info(kdf_label);
    info.push_back('\0');
    info.append(cache_key);

    EVP_KDF* kdf = EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_HKDF, nullptr);
    if (kdf == nullptr) {
        throw std::runtime_error("OpenSSL provides no HKDF");
    }
    kdf_ptr ctx(EVP_KDF_CTX_new(kdf));
    EVP_KDF_free(kdf);
    if (!ctx) {
        throw std::runtime_error("OpenSSL could not create an HKDF context");
    }

    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                          const_cast<char*>(secret.reveal().data()), secret.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<unsigned char*>(salt),
                                          salt_size),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_KDF_derive(ctx.get(), key.data(), key.size(), params) != 1) {
        throw std::runtime_error("HKDF-SHA256 key derivation failed in OpenSSL");
    }
}

std::string make_aad(std::string_view header, std::string_view cache_key)
{
    std::string aad(header);
    aad.append(cache_key);
    return aad;
}

bool fits_int(std::size_t size)
{
    return size <= static_cast<std::size_t>(std::numeric_limits<int>::max());
}

} // namespace

std::string seal_token_entry(const stored_token& token, const secret_string& client_secret,
                             std::string_view cache_key)
{
    const std::string_view value = token.access_token.reveal();
    const std::size_t plain_size =
        2 * 8 + 3 * 4 + value.size() + token.token_type.size() + token.scope.size();
    if (!fits_int(plain_size) || !fits_int(cache_key.size() + header_size)) {
        throw std::length_error("the token entry is too large to encrypt");
    }

    secure_bytes plaintext(plain_size);
    plaintext_writer writer(plaintext);
    writer.u64(static_cast<std::uint64_t>(to_unix_ms(token.issued_at)));
    writer.u64(static_cast<std::uint64_t>(to_unix_ms(token.expires_at)));
    writer.field(value);
    writer.field(token.token_type);
    writer.field(token.scope);

    std::string out(header_size + plain_size + tag_size, '\0');
    auto* bytes = reinterpret_cast<unsigned char*>(out.data());
    bytes[0] = token_entry_version;
    if (RAND_bytes(bytes + 1, salt_size + nonce_size) != 1) {
        throw std::runtime_error("OpenSSL's random generator failed");
    }
    const unsigned char* salt = bytes + 1;
    const unsigned char* nonce = salt + salt_size;

    secure_bytes key(key_size);
    derive_key(client_secret, salt, cache_key, key);
    const std::string aad = make_aad(std::string_view(out.data(), header_size), cache_key);

    cipher_ptr ctx(EVP_CIPHER_CTX_new());
    int length = 0;
    int final_length = 0;
    if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, nonce_size, nullptr) != 1 ||
        EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), nonce) != 1 ||
        EVP_EncryptUpdate(ctx.get(), nullptr, &length,
                          reinterpret_cast<const unsigned char*>(aad.data()),
                          static_cast<int>(aad.size())) != 1 ||
        EVP_EncryptUpdate(ctx.get(), bytes + header_size, &length, plaintext.data(),
                          static_cast<int>(plaintext.size())) != 1 ||
        EVP_EncryptFinal_ex(ctx.get(), bytes + header_size + length, &final_length) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, tag_size,
                            bytes + header_size + plain_size) != 1) {
        throw std::runtime_error("AES-256-GCM encryption failed in OpenSSL");
    }
    return out;
}

error_code open_token_entry(std::string_view entry, const secret_string& client_secret,
                            std::string_view cache_key, stored_token& out)
{
    if (entry.empty()) {
        return errc::malformed_entry;
    }
    if (static_cast<unsigned char>(entry[0]) != token_entry_version) {
        return errc::unsupported_entry_version;
    }
    if (entry.size() < header_size + tag_size || !fits_int(entry.size()) ||
        !fits_int(entry.size() + cache_key.size())) {
        return errc::malformed_entry;
    }

    const auto* bytes = reinterpret_cast<const unsigned char*>(entry.data());
    const unsigned char* salt = bytes + 1;
    const unsigned char* nonce = salt + salt_size;
    const std::size_t text_size = entry.size() - header_size - tag_size;
    unsigned char tag[tag_size];
    std::memcpy(tag, bytes + header_size + text_size, tag_size);

    secure_bytes key(key_size);
    try {
        derive_key(client_secret, salt, cache_key, key);
    } catch (const std::runtime_error&) {
        return errc::entry_authentication_failed;
    }
    const std::string aad = make_aad(entry.substr(0, header_size), cache_key);

    // One spare byte, so that an empty ciphertext still has a buffer.
    secure_bytes plaintext(text_size + 1);
    cipher_ptr ctx(EVP_CIPHER_CTX_new());
    int length = 0;
    int final_length = 0;
    if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, nonce_size, nullptr) != 1 ||
        EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), nonce) != 1 ||
        EVP_DecryptUpdate(ctx.get(), nullptr, &length,
                          reinterpret_cast<const unsigned char*>(aad.data()),
                          static_cast<int>(aad.size())) != 1 ||
        EVP_DecryptUpdate(ctx.get(), plaintext.data(), &length, bytes + header_size,
                          static_cast<int>(text_size)) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, tag_size, tag) != 1 ||
        EVP_DecryptFinal_ex(ctx.get(), plaintext.data() + length, &final_length) != 1) {
        return errc::entry_authentication_failed;
    }

    plaintext_reader reader(plaintext.data(), text_size);
    std::uint64_t issued_at = 0;
    std::uint64_t expires_at = 0;
    std::string_view value;
    std::string_view token_type;
    std::string_view scope;
    if (!reader.u64(issued_at) || !reader.u64(expires_at) || !reader.field(value) ||
        !reader.field(token_type) || !reader.field(scope) || !reader.at_end() || value.empty()) {
        return errc::malformed_entry;
    }

    stored_token token;
    token.access_token = secret_string(value);
    token.token_type = std::string(token_type);
    token.scope = std::string(scope);
    token.issued_at = from_unix_ms(static_cast<std::int64_t>(issued_at));
    token.expires_at = from_unix_ms(static_cast<std::int64_t>(expires_at));
    out = std::move(token);
    return {};
}

} // namespace stampede::redis
