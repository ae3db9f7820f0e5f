// The encrypted token cache of stampede-token: one file per token cache key (token URL,
// client id, authentication method and request parameters), so that a tool run once per
// shell command does not request a token every time.

#ifndef STAMPEDE_TOKEN_CACHE_FILE_HPP
#define STAMPEDE_TOKEN_CACHE_FILE_HPP

#include <stampede/logger.hpp>
#include <stampede/secret_string.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace stampede::token_cli {

/// A token as stored in the cache file. Times are wall-clock Unix milliseconds because
/// the file outlives the process and the monotonic clock restarts with every boot.
struct cached_token {
    secret_string access_token;
    std::string token_type;
    std::string scope;

    /// When the token was received, which starts its lifetime.
    std::int64_t received_at_ms = 0;

    /// When the server considers the token expired.
    std::int64_t expires_at_ms = 0;
};

/// Returns the time before expiry from which a cached token is no longer handed out:
/// the larger of 60 s and a tenth of the token's lifetime.
std::chrono::milliseconds refresh_margin(const cached_token& token) noexcept;

/// Returns whether `token` may be handed out at `now_ms`: it has more than
/// `refresh_margin()` left, a positive lifetime, and was not received more than 60 s in
/// the future (which would mean the wall clock was set back since).
bool is_fresh(const cached_token& token, std::int64_t now_ms) noexcept;

/// Returns the current wall-clock time in Unix milliseconds.
std::int64_t unix_now_ms() noexcept;

/// Returns `$XDG_CACHE_HOME/stampede` when XDG_CACHE_HOME is an absolute path, otherwise
/// `$HOME/.cache/stampede`, or an empty path when HOME is not set either.
std::filesystem::path default_cache_directory();

/// The cache file of one cache key in `directory`. The key comes from
/// `stampede::token_cache_key`, so runs that request different scopes, audiences,
/// resources or authentication methods never share a token.
///
/// The file is named by the hex SHA-256 of the length-prefixed key and contains:
///
///     magic "STMPTOKC" (8 bytes) | format version 1 (1 byte) | salt (32 bytes)
///     | nonce (12 bytes) | AES-256-GCM ciphertext | GCM tag (16 bytes)
///
/// The file key is HKDF-SHA256 of the client secret with the per-file salt and an info
/// string naming the format version and the cache key. The header and the cache key are
/// the additional authenticated data, so a file written for other settings or another
/// secret fails authentication and is ignored.
///
/// The directory is created with mode 0700 and the file written with mode 0600. Each
/// write goes to a temporary file in the same directory, which is synced and then renamed
/// over the old file, so concurrent runs never leave a partly written file.
/// NOTE: no lock is held across processes, so runs that start together with no usable
/// cache file each request a token, and the last rename wins.
///
/// `load()` and `store()` report a failure by their result and a debug line to `lg`, not
/// by an exception (except `std::bad_alloc`). A missing, foreign, corrupt or unreadable
/// file reads as empty, and a failed write leaves the cache as it was.
class token_cache_file {
public:
    /// Throws `std::runtime_error` when OpenSSL provides no SHA-256 to name the file.
    token_cache_file(std::filesystem::path directory, std::string cache_key,
                     secret_string client_secret, logger lg);

    /// Returns the path of the cache file.
    const std::filesystem::path& path() const noexcept { return path_; }

    /// Reads and decrypts the file. Returns nothing when it is missing or cannot be
    /// trusted. Freshness is the caller's decision (`is_fresh`).
    std::optional<cached_token> load() const;

    /// Encrypts `token` and replaces the file with it. Returns whether the file was written.
    bool store(const cached_token& token) const;

private:
    std::filesystem::path directory_;
    std::filesystem::path path_;
    std::string cache_key_;
    secret_string client_secret_;
    logger logger_;
};

} // namespace stampede::token_cli

#endif
