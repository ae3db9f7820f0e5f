#ifndef STAMPEDE_REDIS_ERROR_HPP
#define STAMPEDE_REDIS_ERROR_HPP

#include <boost/system/error_category.hpp>
#include <boost/system/error_code.hpp>

#include <ostream>
#include <type_traits>

namespace stampede::redis {

/// Errors of the Redis connection, the token store and the entry format (category
/// "stampede.redis"). Socket, resolver and TLS failures keep their Asio codes.
enum class errc {
    /// The Redis URL is invalid. The diagnostics name the invalid part and the fix.
    invalid_url = 1,

    /// A field of `redis::config` is invalid; the message names the field and the fix.
    invalid_config,

    /// Opening the connection (resolve, TCP connect, TLS handshake, AUTH and SELECT)
    /// took longer than `config::connect_timeout`.
    connect_timeout,

    /// No reply arrived within `config::command_timeout`. The connection is closed,
    /// because a late reply would be matched with the wrong command.
    command_timeout,

    /// The server rejected AUTH: wrong user name or password, or a disabled user.
    auth_failed,

    /// The server requires a password but none was configured.
    auth_required,

    /// The server rejected SELECT, usually because the database index is out of range.
    select_failed,

    /// The server certificate failed verification (untrusted issuer, expired or wrong
    /// host).
    certificate_verification_failed,

    /// The command got an error reply; the reply contains the server's text.
    server_error,

    /// The reply is not valid RESP.
    protocol_error,

    /// The reply has another type or shape than the command returns.
    unexpected_reply,

    /// The connection is down and the next attempt waits for the reconnect backoff.
    not_connected,

    /// A stored entry is too short or its fields are malformed.
    malformed_entry,

    /// A stored entry has a format version this library does not read.
    unsupported_entry_version,

    /// A stored entry failed authentication: it was written with another client secret
    /// or for another cache key, or it was modified.
    entry_authentication_failed,

    /// A reply is larger than `config::max_reply_bytes`. The connection is closed, because
    /// the rest of the reply cannot be skipped without reading it.
    reply_too_large,
};

const boost::system::error_category& redis_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept
{
    return {static_cast<int>(e), redis_category()};
}

/// Writes the enumerator's message, for tests and logs.
inline std::ostream& operator<<(std::ostream& os, errc e)
{
    return os << make_error_code(e).message();
}

} // namespace stampede::redis

namespace boost::system {
template <>
struct is_error_code_enum<stampede::redis::errc> : std::true_type {};
} // namespace boost::system

#endif
