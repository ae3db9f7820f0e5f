#ifndef STAMPEDE_REDIS_CONFIG_HPP
#define STAMPEDE_REDIS_CONFIG_HPP

#include <stampede/diagnostics.hpp>
#include <stampede/secret_string.hpp>
#include <stampede/settings.hpp>

#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>

namespace stampede::redis {

/// The address, credentials, TLS trust and timeouts of a Redis connection. `parse_url`
/// fills the address and credentials from a `redis://` or `rediss://` URL.
struct config {
    /// Host name or IP literal (without brackets).
    std::string host = "127.0.0.1";

    std::uint16_t port = 6379;

    /// Use TLS (`rediss://`), verifying the server certificate and host name.
    bool use_tls = false;

    /// ACL user for `AUTH user password`. Empty: `AUTH password` (the default user).
    std::string username;

    /// Password for AUTH. Empty: no AUTH is sent.
    secret_string password;

    /// Database index selected after connecting. Pub/sub channels are not scoped by it.
    int database = 0;

    /// PEM file of certificate authorities to trust instead of the system store.
    std::string ca_file;

    /// Directory of hashed PEM certificates to trust instead of the system store.
    std::string ca_directory;

    /// Maximum time to open a connection: resolve, TCP connect, TLS handshake, AUTH and
    /// SELECT together.
    std::chrono::milliseconds connect_timeout{2000};

    /// Maximum time from sending a command to receiving its reply. A command that times
    /// out closes the connection.
    std::chrono::milliseconds command_timeout{1000};

    /// Maximum size of one reply, in bytes of its RESP encoding, on the command and the
    /// subscriber connection. A larger reply fails with `errc::reply_too_large` and
    /// closes that connection, so a broken or hostile server cannot make the process
    /// allocate without limit. Once parsed, a reply takes more memory than its encoding,
    /// by an estimated factor of tens for arrays of tiny elements (not measured). The
    /// default is far above the size of token entries and of the library's own replies.
    /// Raise it if commands sent through `connection` return more.
    std::size_t max_reply_bytes = 1024 * 1024;

    /// Delays between failed connection attempts: exponential backoff with full jitter.
    /// Attempts never stop; `max_attempts` and `max_elapsed` are ignored, and after them
    /// the delay stays at `max_delay`.
    backoff_settings reconnect{.initial_delay = std::chrono::milliseconds(100),
                               .multiplier = 2.0,
                               .max_delay = std::chrono::milliseconds(5000),
                               .min_delay = std::chrono::milliseconds(50),
                               .max_retry_after = std::chrono::milliseconds(5000),
                               .max_attempts = 1000000,
                               .max_elapsed = std::chrono::hours(24 * 365),
                               .random = {}};
};

/// Parses `redis://[[user]:password@]host[:port][/db]` or the same with `rediss://`
/// (TLS) into `out`. It sets the host, port, TLS, user, password and database, with their
/// defaults when the URL omits them, and leaves the other fields unchanged. User and
/// password are percent-decoded. On failure returns `errc::invalid_url` and puts a message naming
/// the invalid part in `diag`; the message never contains the password.
boost::system::error_code parse_url(std::string_view url, config& out, diagnostics& diag);

/// Checks every field. Returns an empty string when the configuration is valid, or else a
/// message that names the first invalid field and the fix.
std::string validate(const config& cfg);

/// Writes `redis://user:[redacted]@host:port/db` (or `rediss://`), never the password.
std::ostream& operator<<(std::ostream& os, const config& cfg);

} // namespace stampede::redis

#endif
