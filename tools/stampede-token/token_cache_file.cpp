#include "token_cache_file.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

namespace stampede::token_cli {
namespace {

using bytes = std::vector<unsigned char>;

constexpr std::string_view file_magic = "STMPTOKC";
constexpr unsigned char format_version = 1;
constexpr std::string_view kdf_label = "stampede-token cache v1";
constexpr std::size_t salt_size = 32;
constexpr std::size_t nonce_size = 12;
constexpr std::size_t tag_size = 16;
constexpr std::size_t key_size = 32;
constexpr std::size_t header_size = file_magic.size() + 1 + salt_size + nonce_size;

// The SDK's default limit on a token response body is 64 KiB, so this tool never writes a
// file this large.
constexpr std::size_t max_file_size = 256 * 1024;

constexpr std::int64_t min_refresh_margin_ms = 60 * 1000;
constexpr std::int64_t max_clock_skew_ms = 60 * 1000;

// A fixed-capacity byte buffer for keys and plaintext, overwritten with zeros when
// destroyed. It never reallocates, so no copy of its contents is left behind.
class secure_buffer {
public:
    explicit secure_buffer(std::size_t capacity)
        : data_(std::make_unique<unsigned char[]>(capacity))
        , capacity_(capacity)
    {
    }

    secure_buffer(const secure_buffer&) = delete;
    secure_buffer& operator=(const secure_buffer&) = delete;

    ~secure_buffer() { OPENSSL_cleanse(data_.get(), capacity_); }

    unsigned char* data() noexcept { return data_.get(); }
    const unsigned char* data() const noexcept { return data_.get(); }
    std::size_t size() const noexcept { return size_; }

    void set_size(std::size_t size) noexcept
    {
        assert(size <= capacity_);
        size_ = size;
    }

    void append(const void* source, std::size_t count) noexcept
    {
        assert(size_ + count <= capacity_);
        std::memcpy(data_.get() + size_, source, count);
        size_ += count;
    }

private:
    std::unique_ptr<unsigned char[]> data_;
    std::size_t capacity_;
    std::size_t size_ = 0;
};

struct cipher_context_deleter {
    void operator()(EVP_CIPHER_CTX* context) const noexcept { EVP_CIPHER_CTX_free(context); }
};
using cipher_context = std::unique_ptr<EVP_CIPHER_CTX, cipher_context_deleter>;

struct kdf_context_deleter {
    void operator()(EVP_KDF_CTX* context) const noexcept { EVP_KDF_CTX_free(context); }
};
using kdf_context = std::unique_ptr<EVP_KDF_CTX, kdf_context_deleter>;

template <class MakeMessage>
void log_debug(const logger& lg, MakeMessage&& make_message)
{
    if (lg.enabled(log_level::debug)) {
        const std::string message = make_message();
        lg.sink(log_level::debug, message);
    }
}

std::string errno_text(int error)
{
    return std::strerror(error);
}

// Byte order and encoding

template <class Buffer>
void append_u32(Buffer& out, std::uint32_t value)
{
    const unsigned char encoded[4] = {
        static_cast<unsigned char>(value >> 24), static_cast<unsigned char>(value >> 16),
        static_cast<unsigned char>(value >> 8), static_cast<unsigned char>(value)};
    out.append(encoded, sizeof encoded);
}

template <class Buffer>
void append_u64(Buffer& out, std::uint64_t value)
{
    append_u32(out, static_cast<std::uint32_t>(value >> 32));
    append_u32(out, static_cast<std::uint32_t>(value));
}

template <class Buffer>
void append_field(Buffer& out, std::string_view text)
{
    append_u32(out, static_cast<std::uint32_t>(text.size()));
    out.append(text.data(), text.size());
}

// Adapts `bytes` to the `append` interface of `secure_buffer`.
struct bytes_appender {
    bytes& out;

    void append(const void* source, std::size_t count)
    {
        const auto* first = static_cast<const unsigned char*>(source);
        out.insert(out.end(), first, first + count);
    }
};

// Reads big-endian integers and length-prefixed fields, failing on any overrun.
class byte_reader {
public:
    byte_reader(const unsigned char* data, std::size_t size) noexcept
        : data_(data)
        , left_(size)
    {
    }

    bool read_u32(std::uint32_t& value) noexcept
    {
        if (left_ < 4) {
            return false;
        }
        value = (std::uint32_t{data_[0]} << 24) | (std::uint32_t{data_[1]} << 16) |
                (std::uint32_t{data_[2]} << 8) | std::uint32_t{data_[3]};
        skip(4);
        return true;
    }

    bool read_u64(std::uint64_t& value) noexcept
    {
        std::uint32_t high = 0;
        std::uint32_t low = 0;
        if (!read_u32(high) || !read_u32(low)) {
            return false;
        }
        value = (std::uint64_t{high} << 32) | low;
        return true;
    }

    bool read_field(std::string_view& text) noexcept
    {
        std::uint32_t size = 0;
        if (!read_u32(size) || size > left_) {
            return false;
        }
        text = std::string_view(reinterpret_cast<const char*>(data_), size);
        skip(size);
        return true;
    }

    bool at_end() const noexcept { return left_ == 0; }

private:
    void skip(std::size_t count) noexcept
    {
        data_ += count;
        left_ -= count;
    }

    const unsigned char* data_;
    std::size_t left_;
};

// The cache key, length-prefixed. It names the file and is bound into the file key and
// the authenticated data.
bytes encode_context(std::string_view cache_key)
{
    bytes out;
    bytes_appender appender{out};
    append_field(appender, cache_key);
    return out;
}

std::string sha256_hex(const bytes& input)
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
        hex.push_back(hex_digits[digest[i] >> 4]);
        hex.push_back(hex_digits[digest[i] & 0x0f]);
    }
    return hex;
}

// Plaintext

std::size_t encoded_size(const cached_token& token)
{
    return 2 * 8 + 3 * 4 + token.access_token.size() + token.token_type.size() +
           token.scope.size();
}

void encode_token(const cached_token& token, secure_buffer& out)
{
    append_u64(out, static_cast<std::uint64_t>(token.received_at_ms));
    append_u64(out, static_cast<std::uint64_t>(token.expires_at_ms));
    append_field(out, token.access_token.reveal());
    append_field(out, token.token_type);
    append_field(out, token.scope);
}

std::optional<cached_token> decode_token(const secure_buffer& plaintext)
{
    byte_reader reader(plaintext.data(), plaintext.size());
    std::uint64_t received_at = 0;
    std::uint64_t expires_at = 0;
    std::string_view value;
    std::string_view token_type;
    std::string_view scope;
    if (!reader.read_u64(received_at) || !reader.read_u64(expires_at) ||
        !reader.read_field(value) || !reader.read_field(token_type) ||
        !reader.read_field(scope) || !reader.at_end() || value.empty()) {
        return std::nullopt;
    }

    cached_token token;
    token.access_token = secret_string(value);
    token.token_type = std::string(token_type);
    token.scope = std::string(scope);
    token.received_at_ms = static_cast<std::int64_t>(received_at);
    token.expires_at_ms = static_cast<std::int64_t>(expires_at);
    return token;
}

// Cryptography

// Derives the file key: HKDF-SHA256 with the client secret as input key material.
bool derive_key(const secret_string& secret, const unsigned char* salt, const bytes& context,
                secure_buffer& key)
{
    bytes info(kdf_label.begin(), kdf_label.end());
    info.push_back(0);
    info.insert(info.end(), context.begin(), context.end());

    EVP_KDF* kdf = EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_HKDF, nullptr);
    if (kdf == nullptr) {
        return false;
    }
    kdf_context kctx(EVP_KDF_CTX_new(kdf));
    EVP_KDF_free(kdf);
    if (!kctx) {
        return false;
    }

    char digest_name[] = "SHA256";
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest_name, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                          const_cast<char*>(secret.reveal().data()),
                                          secret.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                          const_cast<unsigned char*>(salt), salt_size),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_KDF_derive(kctx.get(), key.data(), key_size, params) != 1) {
        return false;
    }
    key.set_size(key_size);
    return true;
}

// Appends the AES-256-GCM ciphertext of `plaintext` and its tag to `out`.
bool seal(const secure_buffer& key, const unsigned char* nonce, const bytes& aad,
          const secure_buffer& plaintext, bytes& out)
{
    cipher_context ctx(EVP_CIPHER_CTX_new());
    int length = 0;
    if (!ctx ||
        EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, nonce_size, nullptr) != 1 ||
        EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), nonce) != 1 ||
        EVP_EncryptUpdate(ctx.get(), nullptr, &length, aad.data(),
                          static_cast<int>(aad.size())) != 1) {
        return false;
    }

    const std::size_t start = out.size();
    out.resize(start + plaintext.size() + tag_size);
    if (EVP_EncryptUpdate(ctx.get(), out.data() + start, &length, plaintext.data(),
                          static_cast<int>(plaintext.size())) != 1) {
        return false;
    }
    int final_length = 0;
    if (EVP_EncryptFinal_ex(ctx.get(), out.data() + start + length, &final_length) != 1) {
        return false;
    }
    const std::size_t tag_offset = start + static_cast<std::size_t>(length + final_length);
    return EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, tag_size,
                               out.data() + tag_offset) == 1;
}

// Decrypts `ciphertext` (which ends with the tag) into `plaintext`. Fails when the tag
// does not match, that is when the key, nonce, authenticated data or ciphertext differ.
bool open_sealed(const secure_buffer& key, const unsigned char* nonce, const bytes& aad,
                 const unsigned char* ciphertext, std::size_t size, secure_buffer& plaintext)
{
    const std::size_t text_size = size - tag_size;
    unsigned char tag[tag_size];
    std::memcpy(tag, ciphertext + text_size, tag_size);

    cipher_context ctx(EVP_CIPHER_CTX_new());
    int length = 0;
    if (!ctx ||
        EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, nonce_size, nullptr) != 1 ||
        EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), nonce) != 1 ||
        EVP_DecryptUpdate(ctx.get(), nullptr, &length, aad.data(),
                          static_cast<int>(aad.size())) != 1 ||
        EVP_DecryptUpdate(ctx.get(), plaintext.data(), &length, ciphertext,
                          static_cast<int>(text_size)) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, tag_size, tag) != 1) {
        return false;
    }
    int final_length = 0;
    if (EVP_DecryptFinal_ex(ctx.get(), plaintext.data() + length, &final_length) != 1) {
        return false;
    }
    plaintext.set_size(static_cast<std::size_t>(length + final_length));
    return true;
}

bytes make_aad(const unsigned char* header, const bytes& context)
{
    bytes aad(header, header + header_size);
    aad.insert(aad.end(), context.begin(), context.end());
    return aad;
}

// Files

// Reads the whole cache file, rejecting anything but a small regular file that belongs
// to this user and grants no access to group or others. Returns the reason on failure.
std::string read_cache_file(const std::filesystem::path& path, bytes& content)
{
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? "no cache file yet" : "cannot open it: " + errno_text(errno);
    }
    struct file_closer {
        int fd;
        ~file_closer() { ::close(fd); }
    } closer{fd};

    struct stat info {};
    if (::fstat(fd, &info) != 0) {
        return "cannot inspect it: " + errno_text(errno);
    }
    if (!S_ISREG(info.st_mode)) {
        return "it is not a regular file";
    }
    if (info.st_uid != ::geteuid()) {
        return "it is owned by another user";
    }
    if ((info.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        return "it is accessible by group or others";
    }
    const auto size = static_cast<std::size_t>(info.st_size);
    if (size < header_size + tag_size || size > max_file_size) {
        return "its size of " + std::to_string(size) + " bytes is not that of a cache file";
    }

    content.resize(size);
    std::size_t done = 0;
    while (done < size) {
        const ssize_t count = ::read(fd, content.data() + done, size - done);
        if (count < 0 && errno == EINTR) {
            continue;
        }
        if (count < 0) {
            return "reading it failed: " + errno_text(errno);
        }
        if (count == 0) {
            return "it was truncated while being read";
        }
        done += static_cast<std::size_t>(count);
    }
    return {};
}

// Creates `directory` and its missing parents with mode 0700, and makes sure that the
// last one is a real directory (not a symbolic link) of this user with mode 0700. Returns
// the reason on failure.
std::string prepare_directory(const std::filesystem::path& directory)
{
    std::filesystem::path partial;
    for (const auto& part : directory) {
        partial /= part;
        if (::mkdir(partial.c_str(), 0700) == 0 || errno == EEXIST) {
            continue;
        }

        // Some systems report EACCES rather than EEXIST for an existing directory in a
        // parent that this user may not write.
        const int error = errno;
        struct stat info {};
        if (::stat(partial.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
            return "cannot create " + partial.string() + ": " + errno_text(error);
        }
    }

    struct stat info {};
    if (::lstat(directory.c_str(), &info) != 0) {
        return "cannot inspect " + directory.string() + ": " + errno_text(errno);
    }
    if (!S_ISDIR(info.st_mode)) {
        return directory.string() + " is not a directory";
    }
    if (info.st_uid != ::geteuid()) {
        return directory.string() + " is owned by another user";
    }
    if ((info.st_mode & (S_IRWXG | S_IRWXO)) != 0 && ::chmod(directory.c_str(), 0700) != 0) {
        return "cannot restrict " + directory.string() + " to mode 0700: " + errno_text(errno);
    }
    return {};
}

std::string write_all(int fd, const bytes& content)
{
    std::size_t done = 0;
    while (done < content.size()) {
        const ssize_t count = ::write(fd, content.data() + done, content.size() - done);
        if (count < 0 && errno == EINTR) {
            continue;
        }
        if (count < 0) {
            return "writing failed: " + errno_text(errno);
        }
        done += static_cast<std::size_t>(count);
    }
    return {};
}

// Writes `content` to a temporary file of mode 0600 next to `target`, syncs it and
// renames it to `target`, so readers see either the old file or the whole new one.
// Returns the reason on failure.
std::string replace_file(const std::filesystem::path& target, const bytes& content)
{
    std::string temporary = target.string() + ".XXXXXX";
    const int fd = ::mkstemp(temporary.data());
    if (fd < 0) {
        return "cannot create a temporary file: " + errno_text(errno);
    }

    std::string reason;
    if (::fchmod(fd, 0600) != 0) {
        reason = "cannot set mode 0600: " + errno_text(errno);
    }
    if (reason.empty()) {
        reason = write_all(fd, content);
    }
    if (reason.empty() && ::fsync(fd) != 0) {
        reason = "syncing failed: " + errno_text(errno);
    }
    if (::close(fd) != 0 && reason.empty()) {
        reason = "closing failed: " + errno_text(errno);
    }
    if (reason.empty() && ::rename(temporary.c_str(), target.c_str()) != 0) {
        reason = "renaming it into place failed: " + errno_text(errno);
    }
    if (!reason.empty()) {
        ::unlink(temporary.c_str());
        return reason;
    }

    // Make the rename itself durable; a failure here loses at most this cache update.
    const int directory_fd =
        ::open(target.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd >= 0) {
        ::fsync(directory_fd);
        ::close(directory_fd);
    }
    return {};
}

} // namespace

std::chrono::milliseconds refresh_margin(const cached_token& token) noexcept
{
    const std::int64_t lifetime = token.expires_at_ms - token.received_at_ms;
    return std::chrono::milliseconds(std::max(min_refresh_margin_ms, lifetime / 10));
}

bool is_fresh(const cached_token& token, std::int64_t now_ms) noexcept
{
    if (token.expires_at_ms <= token.received_at_ms) {
        return false;
    }
    if (token.received_at_ms > now_ms + max_clock_skew_ms) {
        return false;
    }
    return token.expires_at_ms - now_ms > refresh_margin(token).count();
}

std::int64_t unix_now_ms() noexcept
{
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::filesystem::path default_cache_directory()
{
    // The XDG Base Directory specification (0.7 and later) calls a relative path invalid
    // and requires ignoring it.
    if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && xdg[0] == '/') {
        return std::filesystem::path(xdg) / "stampede";
    }
    if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') {
        return std::filesystem::path(home) / ".cache" / "stampede";
    }
    return {};
}

token_cache_file::token_cache_file(std::filesystem::path directory, std::string cache_key,
                                   secret_string client_secret, logger lg)
    : directory_(std::move(directory))
    , cache_key_(std::move(cache_key))
    , client_secret_(std::move(client_secret))
    , logger_(std::move(lg))
{
    path_ = directory_ / (sha256_hex(encode_context(cache_key_)) + ".token");
}

std::optional<cached_token> token_cache_file::load() const
{
    auto reject = [&](const std::string& reason) -> std::optional<cached_token> {
        log_debug(logger_,
                  [&] { return "token cache " + path_.string() + " not used: " + reason; });
        return std::nullopt;
    };

    bytes content;
    if (std::string reason = read_cache_file(path_, content); !reason.empty()) {
        return reject(reason);
    }

    // Check the header before spending a key derivation on the file.
    const unsigned char* header = content.data();
    if (std::memcmp(header, file_magic.data(), file_magic.size()) != 0) {
        return reject("it does not start with the cache file magic");
    }
    if (header[file_magic.size()] != format_version) {
        return reject("it has format version " + std::to_string(header[file_magic.size()]) +
                      ", expected " + std::to_string(format_version));
    }
    const unsigned char* salt = header + file_magic.size() + 1;
    const unsigned char* nonce = salt + salt_size;

    const bytes context = encode_context(cache_key_);
    secure_buffer key(key_size);
    if (!derive_key(client_secret_, salt, context, key)) {
        return reject("HKDF-SHA256 key derivation failed in OpenSSL");
    }

    const std::size_t sealed_size = content.size() - header_size;
    secure_buffer plaintext(sealed_size);
    if (!open_sealed(key, nonce, make_aad(header, context), content.data() + header_size,
                     sealed_size, plaintext)) {
        return reject("authentication failed (written with another client secret, or corrupt)");
    }

    std::optional<cached_token> token = decode_token(plaintext);
    if (!token) {
        return reject("its decrypted contents are malformed");
    }
    return token;
}

bool token_cache_file::store(const cached_token& token) const
{
    auto fail = [&](const std::string& reason) {
        log_debug(logger_,
                  [&] { return "token cache " + path_.string() + " not written: " + reason; });
        return false;
    };

    if (std::string reason = prepare_directory(directory_); !reason.empty()) {
        return fail(reason);
    }

    // A fresh random salt and nonce for every write, so no (key, nonce) pair repeats.
    std::array<unsigned char, salt_size> salt{};
    std::array<unsigned char, nonce_size> nonce{};
    if (RAND_bytes(salt.data(), salt_size) != 1 || RAND_bytes(nonce.data(), nonce_size) != 1) {
        return fail("the OpenSSL random generator failed");
    }

    const bytes context = encode_context(cache_key_);
    secure_buffer key(key_size);
    if (!derive_key(client_secret_, salt.data(), context, key)) {
        return fail("HKDF-SHA256 key derivation failed in OpenSSL");
    }

    bytes content(file_magic.begin(), file_magic.end());
    content.push_back(format_version);
    content.insert(content.end(), salt.begin(), salt.end());
    content.insert(content.end(), nonce.begin(), nonce.end());
    const bytes aad = make_aad(content.data(), context);

    secure_buffer plaintext(encoded_size(token));
    encode_token(token, plaintext);
    if (!seal(key, nonce.data(), aad, plaintext, content)) {
        return fail("AES-256-GCM encryption failed in OpenSSL");
    }

    if (std::string reason = replace_file(path_, content); !reason.empty()) {
        return fail(reason);
    }
    log_debug(logger_, [&] { return "token cache " + path_.string() + " written"; });
    return true;
}

} // namespace stampede::token_cli
