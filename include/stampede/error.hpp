#ifndef STAMPEDE_ERROR_HPP
#define STAMPEDE_ERROR_HPP

#include <boost/system/error_category.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/error_condition.hpp>

#include <ostream>
#include <string_view>
#include <type_traits>

namespace stampede {

/// Errors raised by the SDK itself (category "stampede.client").
enum class client_errc {
    /// A settings field is invalid; the diagnostics name the field and the fix.
    invalid_settings = 1,

    /// The URL uses plain `http://` for a host that is not a loopback address.
    insecure_url,

    /// Resolving the host name took longer than `transport_settings::resolve_timeout`.
    resolve_timeout,

    /// Opening the TCP connection took longer than `transport_settings::connect_timeout`.
    connect_timeout,

    /// The TLS handshake took longer than `transport_settings::handshake_timeout`.
    handshake_timeout,

    /// Sending the request took longer than `transport_settings::write_timeout`.
    write_timeout,

    /// Receiving the response took longer than `transport_settings::read_timeout`.
    read_timeout,

    /// The whole request took longer than `transport_settings::request_timeout`.
    request_timeout,

    /// The response headers exceed `transport_settings::max_header_bytes`.
    header_too_large,

    /// The response body exceeds `transport_settings::max_body_bytes`.
    body_too_large,

    /// The response body is not valid JSON (or is truncated) where JSON was expected.
    malformed_response,

    /// A successful token response has no usable `access_token` string.
    missing_access_token,

    /// The token response names a `token_type` other than `Bearer`.
    unsupported_token_type,

    /// The token response has an `expires_in` that is zero, negative or not a number.
    invalid_expires_in,

    /// The server's certificate failed verification (untrusted issuer, expired, wrong host).
    certificate_verification_failed,
};

/// Error codes an OAuth 2.0 token endpoint returns in the `error` field (category
/// "stampede.oauth"). The raw string is kept in `diagnostics::server_error_code()`.
enum class oauth_errc {
    /// The request is missing a parameter or is otherwise malformed.
    invalid_request = 1,

    /// Client authentication failed: unknown client id or wrong secret.
    invalid_client,

    /// The grant is invalid, expired or revoked.
    invalid_grant,

    /// The client may not use this grant type.
    unauthorized_client,

    /// The server does not support `client_credentials`.
    unsupported_grant_type,

    /// The requested scope is invalid or exceeds what the client may request.
    invalid_scope,

    /// The server refused access.
    access_denied,

    /// The server asks the client to send requests less often.
    slow_down,

    /// The server is temporarily unable to handle the request.
    temporarily_unavailable,

    /// The server hit an unexpected condition.
    server_error,

    /// Non-standard rate-limit code used by some servers.
    rate_limit_exceeded,

    /// Non-standard rate-limit code used by some servers.
    too_many_requests,

    /// Any other `error` value; the raw string is in the diagnostics.
    other,
};

/// Broad classes of errors, usable as `ec == stampede::condition::retryable`.
enum class condition {
    /// Retrying later may succeed: rate limiting, 5xx, network faults, timeouts,
    /// malformed bodies, and the default set of temporary OAuth codes. An HTTP 400 in
    /// `http_category()` (one without an OAuth `error` field, as a proxy sends) counts too.
    retryable = 1,

    /// Retrying cannot help: wrong credentials, invalid request or scope, bad settings,
    /// certificate failures, oversized responses, 4xx statuses other than 400, 408 and
    /// 429. Cancellation matches neither `retryable` nor `permanent`.
    permanent,

    /// Any of the per-phase timeouts, the overall request timeout, a socket `ETIMEDOUT`
    /// or `beast::error::timeout`. HTTP 408 and 504 are not included.
    timeout,
};

const boost::system::error_category& client_category() noexcept;
const boost::system::error_category& oauth_category() noexcept;
const boost::system::error_category& condition_category() noexcept;

/// HTTP status codes returned by a server (category "stampede.http"); the value is the
/// status code itself, e.g. 503.
const boost::system::error_category& http_category() noexcept;

inline boost::system::error_code make_error_code(client_errc e) noexcept
{
    return {static_cast<int>(e), client_category()};
}

inline boost::system::error_code make_error_code(oauth_errc e) noexcept
{
    return {static_cast<int>(e), oauth_category()};
}

inline boost::system::error_condition make_error_condition(condition e) noexcept
{
    return {static_cast<int>(e), condition_category()};
}

/// Returns the error code for an HTTP status, in `http_category()`.
inline boost::system::error_code make_http_error(unsigned status) noexcept
{
    return {static_cast<int>(status), http_category()};
}

/// Maps an OAuth `error` string to its enumerator; unknown strings give `oauth_errc::other`.
oauth_errc oauth_errc_from_string(std::string_view code) noexcept;

/// Returns the OAuth wire string for `e` (`"invalid_client"`, ...); `"other"` for `other`.
std::string_view to_string(oauth_errc e) noexcept;

/// Returns whether `ec` is retryable under the default classification.
/// `retry_classifier` in <stampede/retry.hpp> applies the configurable one.
bool is_retryable(const boost::system::error_code& ec) noexcept;

/// Writes the enumerator's message, for tests and logs.
inline std::ostream& operator<<(std::ostream& os, client_errc e)
{
    return os << make_error_code(e).message();
}

inline std::ostream& operator<<(std::ostream& os, oauth_errc e)
{
    return os << to_string(e);
}

inline std::ostream& operator<<(std::ostream& os, condition e)
{
    return os << make_error_condition(e).message();
}

} // namespace stampede

namespace boost::system {
template <>
struct is_error_code_enum<stampede::client_errc> : std::true_type {};
template <>
struct is_error_code_enum<stampede::oauth_errc> : std::true_type {};
template <>
struct is_error_condition_enum<stampede::condition> : std::true_type {};
} // namespace boost::system

#endif
