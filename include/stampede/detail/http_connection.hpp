#ifndef STAMPEDE_DETAIL_HTTP_CONNECTION_HPP
#define STAMPEDE_DETAIL_HTTP_CONNECTION_HPP

#include <stampede/detail/url.hpp>
#include <stampede/diagnostics.hpp>
#include <stampede/logger.hpp>
#include <stampede/settings.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/error_code.hpp>

#include <memory>

namespace stampede::detail {

using http_request = boost::beast::http::request<boost::beast::http::string_body>;
using http_response = boost::beast::http::response<boost::beast::http::string_body>;

/// Creates a TLS client context: TLS 1.2 or newer, peer verification on, trusting
/// `ca_file` / `ca_directory` when set and the system store otherwise.
/// Fails with `client_errc::invalid_settings` when a CA file or directory cannot be loaded.
boost::system::error_code make_tls_context(const transport_settings& transport,
                                           std::shared_ptr<boost::asio::ssl::context>& out,
                                           diagnostics& diag);

/// Counters of one connection, for tests and metrics.
struct connection_stats {
    std::size_t connects = 0;   ///< TCP connections opened (each followed by a handshake for TLS)
    std::size_t requests = 0;   ///< requests written, a resent request counted again
    /// Transparent reconnects after the server closed a kept-alive connection, whether
    /// found before sending (the idle socket reads end of file) or by a failed send.
    std::size_t reconnects = 0;
};

/// One keep-alive HTTP/1.1 connection to one origin, over TLS or plain TCP.
///
/// Requests on one connection are sequential: the caller must not start `async_send`
/// while another is in progress (it completes with `asio::error::in_progress`). Not
/// thread-safe; use it from one strand. Destroy it only when no `async_send` is in
/// progress: call `close()` and let the send complete first.
class http_connection {
public:
    http_connection(boost::asio::any_io_executor ex, endpoint_url origin,
                    transport_settings transport,
                    std::shared_ptr<boost::asio::ssl::context> tls, logger lg);
    ~http_connection();
    http_connection(const http_connection&) = delete;
    http_connection& operator=(const http_connection&) = delete;

    /// Sends `request` and reads the whole response into `response`.
    ///
    /// Sets the Host and User-Agent headers, connects (resolve, TCP, TLS with SNI and
    /// host name verification) when no connection is open, and reuses the open one
    /// otherwise. When a reused connection turns out to be closed by the server before
    /// any byte of the response arrives, it reconnects and sends once more if `replayable`
    /// is true. Each phase has its own timeout (`client_errc::resolve_timeout` ...) and the
    /// whole call is bounded by `transport_settings::request_timeout`
    /// (`client_errc::request_timeout`). Size limits give `client_errc::header_too_large` /
    /// `body_too_large`. Certificate failures give
    /// `client_errc::certificate_verification_failed` with the reason in the diagnostics.
    /// Other network errors are passed through (asio/beast/ssl categories).
    /// On any error the connection is closed. Completes with an error code, never throws
    /// for network failures. `diag` receives a client message naming the host and phase.
    boost::asio::awaitable<boost::system::error_code>
    async_send(http_request& request, http_response& response, bool replayable, diagnostics& diag);

    /// Closes the connection at once; an `async_send` in progress completes with
    /// `operation_aborted`. The next `async_send` opens a new connection.
    void close();

    bool is_open() const noexcept;
    const connection_stats& stats() const noexcept;
    const endpoint_url& origin() const noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

} // namespace stampede::detail

#endif
