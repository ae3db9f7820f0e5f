#include <stampede/error.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/system/errc.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <array>
#include <string>
#include <utility>

namespace stampede {
namespace {

namespace asio_error = boost::asio::error;
namespace beast_http = boost::beast::http;

using boost::system::error_code;

// Classes
// -----------------------------------------------------------------------------------------

// Class of an error code under the default rules. Codes that are `neither` match no
// condition: cancellation, success, the end of a retry budget and unknown categories.
enum class code_class { retryable, permanent, neither };

// Pairs of OAuth `error` strings and their enumerators, in declaration order.
constexpr std::array<std::pair<std::string_view, oauth_errc>, 12> oauth_names{{
    {"invalid_request", oauth_errc::invalid_request},
    {"invalid_client", oauth_errc::invalid_client},
    {"invalid_grant", oauth_errc::invalid_grant},
    {"unauthorized_client", oauth_errc::unauthorized_client},
    {"unsupported_grant_type", oauth_errc::unsupported_grant_type},
    {"invalid_scope", oauth_errc::invalid_scope},
    {"access_denied", oauth_errc::access_denied},
    {"slow_down", oauth_errc::slow_down},
    {"temporarily_unavailable", oauth_errc::temporarily_unavailable},
    {"server_error", oauth_errc::server_error},
    {"rate_limit_exceeded", oauth_errc::rate_limit_exceeded},
    {"too_many_requests", oauth_errc::too_many_requests},
}};

code_class classify_client(client_errc e) noexcept {
    switch (e) {
    case client_errc::resolve_timeout:
    case client_errc::connect_timeout:
    case client_errc::handshake_timeout:
    case client_errc::write_timeout:
    case client_errc::read_timeout:
    case client_errc::request_timeout:
    // A body that is malformed, truncated or lacks required fields is a server fault
    // that often clears on the next attempt.
    case client_errc::malformed_response:
    case client_errc::missing_access_token:
    case client_errc::invalid_expires_in:
        return code_class::retryable;

    // Oversized headers and bodies are permanent, because the limits are local settings
    // and a server that sends too much usually does so every time. The fix is to raise
    // `transport_settings::max_header_bytes` or `max_body_bytes`.
    case client_errc::header_too_large:
    case client_errc::body_too_large:
    case client_errc::invalid_settings:
    case client_errc::insecure_url:
    case client_errc::unsupported_token_type:
    case client_errc::certificate_verification_failed:
        return code_class::permanent;
    }
    return code_class::neither;
}

code_class classify_oauth(oauth_errc e) noexcept {
    switch (e) {
    case oauth_errc::slow_down:
    case oauth_errc::temporarily_unavailable:
    case oauth_errc::server_error:
    case oauth_errc::rate_limit_exceeded:
    case oauth_errc::too_many_requests:
        return code_class::retryable;
    default:
        return code_class::permanent;
    }
}

code_class classify_http(int status) noexcept {
    // A 400 in the http category carries no OAuth `error` field, which points to a proxy
    // or load balancer rather than the token endpoint, so it is retried.
    if (status == 400 || status == 408 || status == 429 || (status >= 500 && status <= 599)) {
        return code_class::retryable;
    }
    return code_class::permanent;
}

// Classifies system and generic (errno-style) codes from sockets and the resolver.
code_class classify_system(int value) noexcept {
    if (value == 0) {
        return code_class::neither;
    }
    if (value == asio_error::operation_aborted) {
        return code_class::neither;
    }

    switch (value) {
    case asio_error::connection_reset:
    case asio_error::connection_aborted:
    case asio_error::connection_refused:
    case asio_error::broken_pipe:
    case asio_error::network_down:
    case asio_error::network_reset:
    case asio_error::network_unreachable:
    case asio_error::host_unreachable:
    case asio_error::timed_out:
    case asio_error::try_again:
    case asio_error::interrupted:
    case asio_error::no_buffer_space:
    case asio_error::no_descriptors:
    case asio_error::not_connected:
    case asio_error::shut_down:
        return code_class::retryable;
    default:
        break;
    }

    // Not every platform defines these as distinct asio enumerators.
    if (value == static_cast<int>(boost::system::errc::address_not_available) ||
        value == static_cast<int>(boost::system::errc::too_many_files_open_in_system)) {
        return code_class::retryable;
    }
#ifdef EHOSTDOWN
    if (value == EHOSTDOWN) {
        return code_class::retryable;
    }
#endif
    return code_class::permanent;
}

// Classifies resolver failures. A name that does not resolve may be a DNS outage or
// failover as well as a typo, so only the answers that name a local fault are permanent.
code_class classify_netdb(int value) noexcept {
    if (value == asio_error::host_not_found || value == asio_error::host_not_found_try_again) {
        return code_class::retryable;
    }
    return code_class::permanent;
}

// Classifies OpenSSL errors as stored by asio: the packed `ERR_get_error()` value.
code_class classify_openssl(int value) noexcept {
    const unsigned long packed = static_cast<unsigned int>(value);

    // OpenSSL 3 reports a socket error as a system error, and an unclean close by the
    // peer as "unexpected eof while reading". Both are network faults.
    if (ERR_SYSTEM_ERROR(packed)) {
        return code_class::retryable;
    }
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
    if (ERR_GET_LIB(packed) == ERR_LIB_SSL &&
        ERR_GET_REASON(packed) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        return code_class::retryable;
    }
#endif

    // Everything else is a handshake or protocol failure (certificate verification,
    // protocol version, cipher mismatch, alerts), which the same peer repeats.
    return code_class::permanent;
}

code_class classify_beast_http(beast_http::error e) noexcept {
    switch (e) {
    case beast_http::error::end_of_stream:
    case beast_http::error::partial_message:
    case beast_http::error::short_read:
    case beast_http::error::bad_line_ending:
    case beast_http::error::bad_method:
    case beast_http::error::bad_target:
    case beast_http::error::bad_version:
    case beast_http::error::bad_status:
    case beast_http::error::bad_reason:
    case beast_http::error::bad_field:
    case beast_http::error::bad_value:
    case beast_http::error::bad_content_length:
    case beast_http::error::bad_transfer_encoding:
    case beast_http::error::bad_chunk:
    case beast_http::error::bad_chunk_extension:
    case beast_http::error::bad_obs_fold:
    case beast_http::error::multiple_content_length:
        return code_class::retryable;
    case beast_http::error::header_limit:
    case beast_http::error::body_limit:
    case beast_http::error::buffer_overflow:
        return code_class::permanent;
    default:
        // need_more, need_buffer, end_of_chunk and friends are parser signals that a
        // caller handles, not failures of a request.
        return code_class::neither;
    }
}

const boost::system::error_category& beast_core_category() noexcept {
    static const error_code ec = boost::beast::error::timeout;
    return ec.category();
}

const boost::system::error_category& beast_http_category() noexcept {
    static const error_code ec = beast_http::error::end_of_stream;
    return ec.category();
}

code_class classify(const error_code& ec) noexcept {
    const auto& cat = ec.category();
    const int value = ec.value();

    if (!ec) {
        return code_class::neither;
    }
    if (cat == client_category()) {
        return classify_client(static_cast<client_errc>(value));
    }
    if (cat == oauth_category()) {
        return classify_oauth(static_cast<oauth_errc>(value));
    }
    if (cat == http_category()) {
        return classify_http(value);
    }
    if (cat == boost::system::system_category() || cat == boost::system::generic_category()) {
        return classify_system(value);
    }
    if (cat == asio_error::get_netdb_category()) {
        return classify_netdb(value);
    }
    if (cat == asio_error::get_addrinfo_category()) {
        return code_class::permanent;
    }
    if (cat == asio_error::get_misc_category()) {
        return value == asio_error::eof ? code_class::retryable : code_class::permanent;
    }
    if (cat == boost::asio::ssl::error::get_stream_category()) {
        // stream_truncated, an unexplained system error and an unexpected OpenSSL result
        // all arise from the connection, not from the configuration.
        return code_class::retryable;
    }
    if (cat == boost::asio::error::get_ssl_category()) {
        return classify_openssl(value);
    }
    if (cat == beast_core_category()) {
        return value == static_cast<int>(boost::beast::error::timeout) ? code_class::retryable
                                                                       : code_class::neither;
    }
    if (cat == beast_http_category()) {
        return classify_beast_http(static_cast<beast_http::error>(value));
    }
    return code_class::neither;
}

bool is_timeout(const error_code& ec) noexcept {
    const auto& cat = ec.category();

    if (cat == client_category()) {
        switch (static_cast<client_errc>(ec.value())) {
        case client_errc::resolve_timeout:
        case client_errc::connect_timeout:
        case client_errc::handshake_timeout:
        case client_errc::write_timeout:
        case client_errc::read_timeout:
        case client_errc::request_timeout:
            return true;
        default:
            return false;
        }
    }
    if (cat == boost::system::system_category() || cat == boost::system::generic_category()) {
        return ec.value() == asio_error::timed_out;
    }
    if (cat == beast_core_category()) {
        return ec.value() == static_cast<int>(boost::beast::error::timeout);
    }
    return false;
}

// Messages
// -----------------------------------------------------------------------------------------

std::string client_message(client_errc e) {
    switch (e) {
    case client_errc::invalid_settings:
        return "invalid settings (the diagnostics name the field and the fix)";
    case client_errc::insecure_url:
        return "the URL uses plain http:// for a host that is not a loopback address; use "
               "https:// or set transport_settings::allow_insecure_http";
    case client_errc::resolve_timeout:
        return "resolving the host name timed out (transport_settings::resolve_timeout)";
    case client_errc::connect_timeout:
        return "connecting to the server timed out (transport_settings::connect_timeout)";
    case client_errc::handshake_timeout:
        return "the TLS handshake timed out (transport_settings::handshake_timeout)";
    case client_errc::write_timeout:
        return "sending the request timed out (transport_settings::write_timeout)";
    case client_errc::read_timeout:
        return "receiving the response timed out (transport_settings::read_timeout)";
    case client_errc::request_timeout:
        return "the request timed out (transport_settings::request_timeout)";
    case client_errc::header_too_large:
        return "the response headers exceed transport_settings::max_header_bytes";
    case client_errc::body_too_large:
        return "the response body exceeds transport_settings::max_body_bytes";
    case client_errc::malformed_response:
        return "the response body is malformed or truncated";
    case client_errc::missing_access_token:
        return "the token response has no access_token string";
    case client_errc::unsupported_token_type:
        return "the token response has a token_type other than Bearer";
    case client_errc::invalid_expires_in:
        return "the token response has an expires_in that is zero, negative or not a number";
    case client_errc::certificate_verification_failed:
        return "the server certificate failed verification (untrusted issuer, expired or "
               "wrong host); check transport_settings::ca_file and ca_directory";
    }
    return "unknown stampede.client error " + std::to_string(static_cast<int>(e));
}

std::string oauth_message(oauth_errc e) {
    switch (e) {
    case oauth_errc::invalid_request:
        return "invalid_request: the token request is missing a parameter or is malformed";
    case oauth_errc::invalid_client:
        return "invalid_client: client authentication failed (unknown client id or wrong "
               "client secret)";
    case oauth_errc::invalid_grant:
        return "invalid_grant: the grant is invalid, expired or revoked";
    case oauth_errc::unauthorized_client:
        return "unauthorized_client: the client may not use the client_credentials grant";
    case oauth_errc::unsupported_grant_type:
        return "unsupported_grant_type: the server does not support client_credentials";
    case oauth_errc::invalid_scope:
        return "invalid_scope: the requested scope is invalid or exceeds the client's scope";
    case oauth_errc::access_denied:
        return "access_denied: the server rejected the request";
    case oauth_errc::slow_down:
        return "slow_down: the server asks the client to send requests less often";
    case oauth_errc::temporarily_unavailable:
        return "temporarily_unavailable: the token endpoint cannot handle the request now";
    case oauth_errc::server_error:
        return "server_error: the token endpoint hit an unexpected condition";
    case oauth_errc::rate_limit_exceeded:
        return "rate_limit_exceeded: the token endpoint's rate limit was reached";
    case oauth_errc::too_many_requests:
        return "too_many_requests: the token endpoint's rate limit was reached";
    case oauth_errc::other:
        return "the token endpoint returned an unknown OAuth error (the diagnostics contain "
               "the raw value)";
    }
    return "unknown stampede.oauth error " + std::to_string(static_cast<int>(e));
}

// Reason phrases of RFC 9110, plus 428, 429, 431 and 511 (RFC 6585) and 451 (RFC 7725).
constexpr std::array<std::pair<int, std::string_view>, 50> http_reasons{{
    {100, "Continue"},
    {101, "Switching Protocols"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {305, "Use Proxy"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Content"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {511, "Network Authentication Required"},
}};

std::string_view http_reason(int status) noexcept {
    for (const auto& [code, reason] : http_reasons) {
        if (code == status) {
            return reason;
        }
    }
    return {};
}

// Categories
// -----------------------------------------------------------------------------------------

class client_category_impl final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "stampede.client"; }

    std::string message(int ev) const override {
        return client_message(static_cast<client_errc>(ev));
    }
};

class oauth_category_impl final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "stampede.oauth"; }

    std::string message(int ev) const override {
        return oauth_message(static_cast<oauth_errc>(ev));
    }
};

class http_category_impl final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "stampede.http"; }

    std::string message(int ev) const override {
        std::string text = "HTTP " + std::to_string(ev);
        const std::string_view reason = http_reason(ev);
        if (!reason.empty()) {
            text += ' ';
            text += reason;
        }
        return text;
    }
};

class condition_category_impl final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "stampede.condition"; }

    std::string message(int ev) const override {
        switch (static_cast<condition>(ev)) {
        case condition::retryable:
            return "retryable error (retrying later may succeed)";
        case condition::permanent:
            return "permanent error (retrying cannot help)";
        case condition::timeout:
            return "timeout";
        }
        return "unknown stampede.condition " + std::to_string(ev);
    }

    bool equivalent(const error_code& ec, int cond) const noexcept override {
        switch (static_cast<condition>(cond)) {
        case condition::retryable:
            return classify(ec) == code_class::retryable;
        case condition::permanent:
            return classify(ec) == code_class::permanent;
        case condition::timeout:
            return is_timeout(ec);
        }
        return false;
    }
};

} // namespace

const boost::system::error_category& client_category() noexcept {
    static const client_category_impl instance;
    return instance;
}

const boost::system::error_category& oauth_category() noexcept {
    static const oauth_category_impl instance;
    return instance;
}

const boost::system::error_category& http_category() noexcept {
    static const http_category_impl instance;
    return instance;
}

const boost::system::error_category& condition_category() noexcept {
    static const condition_category_impl instance;
    return instance;
}

oauth_errc oauth_errc_from_string(std::string_view code) noexcept {
    for (const auto& [name, value] : oauth_names) {
        if (name == code) {
            return value;
        }
    }
    return oauth_errc::other;
}

std::string_view to_string(oauth_errc e) noexcept {
    for (const auto& [name, value] : oauth_names) {
        if (value == e) {
            return name;
        }
    }
    return "other";
}

bool is_retryable(const boost::system::error_code& ec) noexcept {
    return classify(ec) == code_class::retryable;
}

} // namespace stampede
