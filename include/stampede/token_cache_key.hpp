#ifndef STAMPEDE_TOKEN_CACHE_KEY_HPP
#define STAMPEDE_TOKEN_CACHE_KEY_HPP

#include <stampede/settings.hpp>

#include <string>

namespace stampede {

/// Returns the key that identifies the tokens `settings` request, for caches shared
/// between processes, such as the cache file of `stampede-token`.
///
/// The key is 64 lower-case hex digits: the SHA-256 of a versioned, length-prefixed
/// encoding of `token_url` (as written), `client_id`, `auth_method`, `scope` (its tokens
/// sorted, repeats dropped), `audience`, `resource` and `extra_parameters` (sorted by
/// name). Settings that differ in any of these get different keys, so callers with
/// different scopes never share a token. No other field takes part: the secret does not,
/// so the key reveals nothing about it and survives a secret rotation.
///
/// The same settings give the same key in every process; the encoding is fixed by its
/// version tag, and changing it means a new tag.
/// Throws `std::runtime_error` when OpenSSL provides no SHA-256.
std::string token_cache_key(const token_source_settings& settings);

} // namespace stampede

#endif
