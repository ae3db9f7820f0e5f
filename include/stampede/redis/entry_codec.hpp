#ifndef STAMPEDE_REDIS_ENTRY_CODEC_HPP
#define STAMPEDE_REDIS_ENTRY_CODEC_HPP

#include <stampede/secret_string.hpp>
#include <stampede/token_store.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace stampede::redis {

/// The format version that `seal_token_entry` writes.
inline constexpr std::uint8_t token_entry_version = 1;

/// Encrypts and authenticates `token` for storage under `cache_key`.
///
/// Format version 1:
///
///     version 0x01 (1 byte) | salt (16 bytes) | nonce (12 bytes)
///     | AES-256-GCM ciphertext | GCM tag (16 bytes)
///
/// The key is HKDF-SHA256 with the client secret as input key material, the per-entry
/// random salt, and an info string that names the format and contains the cache key.
/// The associated data is the header (version, salt, nonce) followed by the cache key,
/// so an entry moved to another key fails authentication. The plaintext contains the issue
/// and expiry times (Unix milliseconds), the token, its type and its scope. The key and
/// the plaintext are overwritten with zeros before returning.
///
/// Throws `std::runtime_error` when OpenSSL fails (no AES-256-GCM or HKDF available, or
/// the random generator fails).
std::string seal_token_entry(const stored_token& token, const secret_string& client_secret,
                             std::string_view cache_key);

/// Decrypts an entry written by `seal_token_entry` into `out`.
///
/// Returns `errc::unsupported_entry_version` for another format version,
/// `errc::malformed_entry` when the entry is too short or its plaintext is malformed, and
/// `errc::entry_authentication_failed` when the tag does not match: another client secret
/// or cache key, or modified bytes. `out` is changed only on success.
boost::system::error_code open_token_entry(std::string_view entry,
                                           const secret_string& client_secret,
                                           std::string_view cache_key, stored_token& out);

} // namespace stampede::redis

#endif
