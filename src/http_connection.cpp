#include <stampede/detail/http_connection.hpp>
#include <stampede/detail/log.hpp>
#include <stampede/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <tuple>

namespace stampede::detail {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;

using asio::ip::tcp;
using boost::system::error_code;
using steady_clock = std::chrono::steady_clock;

constexpr auto as_awaitable = asio::as_tuple(asio::use_awaitable);

// Responses in 100..199 (other than 101) that may precede the final response; more than
// this many is treated as a broken server.
constexpr int max_interim_responses = 8;

std::string to_ms_text(milliseconds duration) {
    return std::to_string(duration.count()) + " ms";
}

steady_clock::time_point saturating_add(steady_clock::time_point start, milliseconds duration) {
    if (duration <= milliseconds::zero()) {
        return start;
    }
    const auto room = steady_clock::time_point::max() - start;
    if (std::chrono::duration_cast<milliseconds>(room) <= duration) {
        return steady_clock::time_point::max();
    }
    return start + duration;
}

bool is_ip_literal(const std::string& host) {
    error_code ec;
    asio::ip::make_address(host, ec);
    return !ec;
}

error_code last_ssl_error() {
    const auto code = ::ERR_get_error();
    if (code == 0) {
        return ssl::error::unspecified_system_error;
    }
    return {static_cast<int>(code), asio::error::get_ssl_category()};
}

// Errors that mean the server closed a kept-alive connection before reading the request.
bool is_stale_connection_error(const error_code& ec) {
    return ec == http::error::end_of_stream || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::connection_aborted ||
           ec == asio::error::broken_pipe || ec == asio::error::not_connected ||
           ec == ssl::error::stream_truncated;
}

// One step of a request, as named in messages and bounded by its own timeout setting.
struct phase {
    std::string_view failed_step; ///< "connecting to", followed by host:port
    std::string_view activity;    ///< "connecting", after "timed out while"
    client_errc timeout_code;
    std::string_view timeout_setting;
};

constexpr phase resolve_phase{"resolving", "resolving the host name", client_errc::resolve_timeout,
                              "transport.resolve_timeout"};
constexpr phase connect_phase{"connecting to", "connecting", client_errc::connect_timeout,
                              "transport.connect_timeout"};
constexpr phase handshake_phase{"the TLS handshake with", "performing the TLS handshake",
                                client_errc::handshake_timeout, "transport.handshake_timeout"};
constexpr phase write_phase{"sending the request to", "sending the request",
                            client_errc::write_timeout, "transport.write_timeout"};
constexpr phase read_phase{"reading the response from", "reading the response",
                           client_errc::read_timeout, "transport.read_timeout"};

error_code set_client_message(diagnostics& diag, std::string message, error_code ec) {
    diag.set_client_message(std::move(message));
    return ec;
}

// Resolving races the resolver against a timer. getaddrinfo cannot be interrupted, so on
// timeout the coroutine moves on and this state, shared with the handlers, outlives it
// until the resolver finishes in the background.
struct resolve_race {
    explicit resolve_race(const asio::any_io_executor& ex)
        : resolver(ex)
        , deadline(ex)
        , wake(ex) {}

    void finish(error_code ec) {
        if (result) {
            return;
        }
        result = ec;
        deadline.cancel();
        wake.cancel();
    }

    tcp::resolver resolver;
    asio::steady_timer deadline;
    asio::steady_timer wake;
    std::optional<error_code> result;
    tcp::resolver::results_type endpoints;
};

} // namespace

//
// TLS context
//

boost::system::error_code make_tls_context(const transport_settings& transport,
                                           std::shared_ptr<asio::ssl::context>& out,
                                           diagnostics& diag) {
    auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
    if (::SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION) != 1) {
        return set_client_message(diag, "could not require TLS 1.2 or newer", last_ssl_error());
    }
    context->set_options(ssl::context::default_workarounds | ssl::context::no_compression);
    context->set_verify_mode(ssl::verify_peer);

    error_code ec;
    if (!transport.ca_file.empty()) {
        if (!std::filesystem::is_regular_file(transport.ca_file, ec)) {
            return set_client_message(diag,
                                      "transport.ca_file \"" + transport.ca_file +
                                          "\" is not a readable file; set it to a PEM file of "
                                          "certificate authorities",
                                      make_error_code(client_errc::invalid_settings));
        }
        context->load_verify_file(transport.ca_file, ec);
        if (ec) {
            return set_client_message(diag,
                                      "transport.ca_file \"" + transport.ca_file +
                                          "\" could not be loaded (" + ec.message() +
                                          "); set it to a PEM file of certificate authorities",
                                      make_error_code(client_errc::invalid_settings));
        }
    }
    if (!transport.ca_directory.empty()) {
        if (!std::filesystem::is_directory(transport.ca_directory, ec)) {
            return set_client_message(diag,
                                      "transport.ca_directory \"" + transport.ca_directory +
                                          "\" is not a directory; set it to a directory of "
                                          "hashed PEM certificates (see openssl rehash)",
                                      make_error_code(client_errc::invalid_settings));
        }
        context->add_verify_path(transport.ca_directory, ec);
        if (ec) {
            return set_client_message(diag,
                                      "transport.ca_directory \"" + transport.ca_directory +
                                          "\" could not be used (" + ec.message() + ")",
                                      make_error_code(client_errc::invalid_settings));
        }
    }
    if (transport.ca_file.empty() && transport.ca_directory.empty()) {
        context->set_default_verify_paths(ec);
        if (ec) {
            return set_client_message(diag,
                                      "the system certificate store could not be loaded (" +
                                          ec.message() + "); set transport.ca_file",
                                      make_error_code(client_errc::invalid_settings));
        }
    }

    out = std::move(context);
    return {};
}

//
// Connection state
//

struct http_connection::impl {
    impl(asio::any_io_executor executor, endpoint_url url, transport_settings settings,
         std::shared_ptr<ssl::context> context, logger log)
        : ex(std::move(executor))
        , origin(std::move(url))
        , transport(std::move(settings))
        , tls(std::move(context))
        , lg(std::move(log))
        , buffer(read_buffer_limit(transport)) {}

    // The read buffer contains the headers, and then each chunk line and trailer of a chunked
    // body, so it needs the header limit and one read's worth more. Beast 1.81 applies no
    // limit of its own to chunk extensions and trailers, so without this bound a hostile
    // server could grow the buffer until memory runs out.
    static std::size_t read_buffer_limit(const transport_settings& t) {
        return t.max_header_bytes + 64 * 1024;
    }

    // Time left for one phase: the phase's own timeout or what is left of the request
    // timeout, whichever ends first.
    struct phase_budget {
        milliseconds limit{};
        bool overall = false; ///< the request timeout, not the phase timeout, is binding
    };

    struct exchange_result {
        error_code ec;
        bool response_started = false;
    };

    asio::awaitable<error_code> send(http_request& request, http_response& response,
                                     bool replayable, diagnostics& diag);
    asio::awaitable<error_code> connect(diagnostics& diag);
    asio::awaitable<error_code> resolve(tcp::resolver::results_type& endpoints, diagnostics& diag);
    asio::awaitable<error_code> handshake(diagnostics& diag);
    asio::awaitable<exchange_result> exchange(http_request& request, http_response& response,
                                              diagnostics& diag);

    error_code configure_tls_stream();
    bool reusable();
    bool peer_closed();
    void prepare(http_request& request) const;
    void close_stream();
    void wipe_spare_buffer();
    void close();

    phase_budget budget(milliseconds phase_timeout) const;
    bool deadline_passed() const { return steady_clock::now() >= deadline; }
    error_code phase_failure(error_code ec, const phase& step, const phase_budget& limit,
                             diagnostics& diag) const;
    error_code aborted(diagnostics& diag) const;
    error_code request_timed_out(const phase& step, diagnostics& diag) const;
    error_code fail(error_code ec, const diagnostics& diag);

    beast::tcp_stream& tcp_layer() { return secure ? secure->next_layer() : *plain; }
    std::string host_header() const;

    template <class Log>
    void debug(Log&& make_message) const {
        log(lg, log_level::debug, std::forward<Log>(make_message));
    }

    asio::any_io_executor ex;
    endpoint_url origin;
    transport_settings transport;
    std::shared_ptr<ssl::context> tls;
    logger lg;

    // The current connection is in at most one of these. Each connect makes a new one.
    std::optional<beast::tcp_stream> plain;
    std::optional<ssl::stream<beast::tcp_stream>> secure;
    beast::flat_buffer buffer;
    bool open = false;
    steady_clock::time_point last_used;

    std::shared_ptr<resolve_race> resolving;
    bool busy = false;
    bool abort_requested = false;
    steady_clock::time_point deadline;
    connection_stats stats;
};

//
// Timeouts and error reporting
//

http_connection::impl::phase_budget
http_connection::impl::budget(milliseconds phase_timeout) const {
    const auto now = steady_clock::now();
    const auto remaining =
        deadline <= now ? milliseconds::zero() : std::chrono::ceil<milliseconds>(deadline - now);
    if (remaining <= phase_timeout) {
        return {remaining, true};
    }
    return {phase_timeout, false};
}

error_code http_connection::impl::aborted(diagnostics& diag) const {
    return set_client_message(diag,
                              "the request to " + origin.authority() +
                                  " was cancelled because the connection was closed",
                              asio::error::operation_aborted);
}

error_code http_connection::impl::request_timed_out(const phase& step, diagnostics& diag) const {
    return set_client_message(diag,
                              "the request to " + origin.authority() + " timed out after " +
                                  to_ms_text(transport.request_timeout) +
                                  " (transport.request_timeout) while " +
                                  std::string(step.activity),
                              make_error_code(client_errc::request_timeout));
}

error_code http_connection::impl::phase_failure(error_code ec, const phase& step,
                                                const phase_budget& limit,
                                                diagnostics& diag) const {
    if (abort_requested) {
        return aborted(diag);
    }
    if (ec == beast::error::timeout || ec == client_errc::resolve_timeout) {
        if (limit.overall) {
            return request_timed_out(step, diag);
        }
        return set_client_message(diag,
                                  std::string(step.failed_step) + " " + origin.authority() +
                                      " timed out after " + to_ms_text(limit.limit) + " (" +
                                      std::string(step.timeout_setting) + ")",
                                  make_error_code(step.timeout_code));
    }
    return set_client_message(
        diag, std::string(step.failed_step) + " " + origin.authority() + " failed: " + ec.message(),
        ec);
}

// Closes the connection after a failed request and logs why.
error_code http_connection::impl::fail(error_code ec, const diagnostics& diag) {
    debug([&] {
        return "request to " + origin.authority() +
               " failed, closing the connection: " + diag.client_message();
    });
    close_stream();
    return ec;
}

//
// Connecting
//

asio::awaitable<error_code> http_connection::impl::resolve(tcp::resolver::results_type& endpoints,
                                                           diagnostics& diag) {
    if (deadline_passed()) {
        co_return request_timed_out(resolve_phase, diag);
    }
    const auto limit = budget(transport.resolve_timeout);

    auto race = std::make_shared<resolve_race>(ex);
    resolving = race;
    race->wake.expires_at(steady_clock::time_point::max());
    race->deadline.expires_after(limit.limit);
    race->resolver.async_resolve(origin.host, origin.port,
                                 [race](error_code ec, tcp::resolver::results_type results) {
                                     if (!race->result) {
                                         race->endpoints = std::move(results);
                                     }
                                     race->finish(ec);
                                 });
    race->deadline.async_wait([race](error_code ec) {
        if (!ec) {
            race->resolver.cancel();
            race->finish(make_error_code(client_errc::resolve_timeout));
        }
    });

    // The wait also ends early when the caller's coroutine is cancelled.
    if (!race->result) {
        co_await race->wake.async_wait(as_awaitable);
    }
    if (!race->result) {
        race->resolver.cancel();
        race->finish(asio::error::operation_aborted);
    }
    resolving.reset();

    const error_code ec = *race->result;
    if (ec) {
        co_return phase_failure(ec, resolve_phase, limit, diag);
    }
    endpoints = std::move(race->endpoints);
    co_return error_code{};
}

error_code http_connection::impl::configure_tls_stream() {
    SSL* handle = secure->native_handle();

    // A trailing dot (an absolute DNS name) is not part of the name in SNI or certificates.
    std::string name = origin.host;
    if (!name.empty() && name.back() == '.') {
        name.pop_back();
    }

    X509_VERIFY_PARAM* param = ::SSL_get0_param(handle);
    ::X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (is_ip_literal(name)) {
        // SNI carries DNS names only (RFC 6066), so an IP literal is checked but not sent.
        if (::X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) != 1) {
            return last_ssl_error();
        }
    } else {
        if (::SSL_set_tlsext_host_name(handle, name.c_str()) != 1) {
            return last_ssl_error();
        }
        if (::X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size()) != 1) {
            return last_ssl_error();
        }
    }
    secure->set_verify_mode(ssl::verify_peer);
    return {};
}

asio::awaitable<error_code> http_connection::impl::handshake(diagnostics& diag) {
    const auto limit = budget(transport.handshake_timeout);
    tcp_layer().expires_after(limit.limit);
    auto [ec] = co_await secure->async_handshake(ssl::stream_base::client, as_awaitable);
    tcp_layer().expires_never();
    if (!ec && !abort_requested) {
        co_return error_code{};
    }

    // Verification failures are reported with OpenSSL's reason and what to change.
    const long verify_result = ::SSL_get_verify_result(secure->native_handle());
    if (!abort_requested && ec != beast::error::timeout && verify_result != X509_V_OK) {
        std::string advice;
        switch (verify_result) {
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
            advice = "the certificate does not name this host, so check the host in the URL";
            break;
        case X509_V_ERR_CERT_HAS_EXPIRED:
        case X509_V_ERR_CERT_NOT_YET_VALID:
            advice = "check the system clock, or ask the server operator to renew the "
                     "certificate";
            break;
        default:
            advice = "if the server uses a private certificate authority, set "
                     "transport.ca_file to that authority's PEM certificate";
            break;
        }
        co_return set_client_message(diag,
                                     "certificate verification failed for " + origin.host + " (" +
                                         ::X509_verify_cert_error_string(verify_result) + "); " +
                                         advice,
                                     make_error_code(client_errc::certificate_verification_failed));
    }
    co_return phase_failure(ec, handshake_phase, limit, diag);
}

asio::awaitable<error_code> http_connection::impl::connect(diagnostics& diag) {
    debug([&] { return "connecting to " + origin.authority(); });

    tcp::resolver::results_type endpoints;
    if (auto ec = co_await resolve(endpoints, diag)) {
        co_return ec;
    }
    if (abort_requested) {
        co_return aborted(diag);
    }

    // Each connection gets fresh stream objects: an SSL object cannot be reused.
    plain.reset();
    secure.reset();
    buffer.clear();
    if (origin.tls) {
        if (!tls) {
            co_return set_client_message(diag, "no TLS context was given for " + origin.authority(),
                                         make_error_code(client_errc::invalid_settings));
        }
        secure.emplace(ex, *tls);
        if (auto ec = configure_tls_stream()) {
            co_return set_client_message(
                diag, "could not set up TLS for " + origin.authority() + ": " + ec.message(), ec);
        }
    } else {
        plain.emplace(ex);
    }

    if (deadline_passed()) {
        co_return request_timed_out(connect_phase, diag);
    }
    const auto limit = budget(transport.connect_timeout);
    tcp_layer().expires_after(limit.limit);
    auto [ec, endpoint] = co_await tcp_layer().async_connect(endpoints, as_awaitable);
    tcp_layer().expires_never();
    if (ec || abort_requested) {
        co_return phase_failure(ec, connect_phase, limit, diag);
    }
    ++stats.connects;

    error_code option_ec;
    tcp_layer().socket().set_option(tcp::no_delay(true), option_ec);

    if (origin.tls) {
        if (deadline_passed()) {
            co_return request_timed_out(handshake_phase, diag);
        }
        if (auto handshake_ec = co_await handshake(diag)) {
            co_return handshake_ec;
        }
    }

    open = true;
    last_used = steady_clock::now();
    debug([&] { return "connected to " + origin.authority(); });
    co_return error_code{};
}

//
// Reuse of kept-alive connections
//

// Peeks at the idle socket without blocking. Nothing to read means the connection is
// still open. End of file, an error or unexpected bytes (a late response, a TLS alert)
// mean it cannot carry another request.
bool http_connection::impl::peer_closed() {
    auto& socket = tcp_layer().socket();
    error_code ec;
    socket.non_blocking(true, ec);
    if (ec) {
        return true;
    }
    char byte = 0;
    socket.receive(asio::buffer(&byte, 1), tcp::socket::message_peek, ec);
    error_code restore_ec;
    socket.non_blocking(false, restore_ec);
    return !(ec == asio::error::would_block || ec == asio::error::try_again);
}

bool http_connection::impl::reusable() {
    const auto idle = steady_clock::now() - last_used;
    if (idle > transport.idle_timeout) {
        debug([&] {
            return "closing the connection to " + origin.authority() + " after " +
                   to_ms_text(std::chrono::duration_cast<milliseconds>(idle)) +
                   " idle (transport.idle_timeout)";
        });
        close_stream();
        return false;
    }
    if (peer_closed()) {
        debug([&] {
            return "reconnecting to " + origin.authority() +
                   ": the server closed the idle connection";
        });
        close_stream();
        ++stats.reconnects;
        return false;
    }
    debug([&] { return "reusing the connection to " + origin.authority(); });
    return true;
}

//
// One request and response
//

std::string http_connection::impl::host_header() const {
    const bool default_port =
        (origin.tls && origin.port == "443") || (!origin.tls && origin.port == "80");
    if (!default_port) {
        return origin.authority();
    }
    if (origin.host.find(':') != std::string::npos) {
        return "[" + origin.host + "]";
    }
    return origin.host;
}

void http_connection::impl::prepare(http_request& request) const {
    request.set(http::field::host, host_header());
    if (transport.user_agent.empty()) {
        request.erase(http::field::user_agent);
    } else {
        request.set(http::field::user_agent, transport.user_agent);
    }
    request.prepare_payload();
}

asio::awaitable<http_connection::impl::exchange_result>
http_connection::impl::exchange(http_request& request, http_response& response, diagnostics& diag) {
    exchange_result result;

    // Send the request.
    if (deadline_passed()) {
        result.ec = request_timed_out(write_phase, diag);
        co_return result;
    }
    const auto write_limit = budget(transport.write_timeout);
    ++stats.requests;
    tcp_layer().expires_after(write_limit.limit);
    std::tuple<error_code, std::size_t> written;
    if (secure) {
        written = co_await http::async_write(*secure, request, as_awaitable);
    } else {
        written = co_await http::async_write(*plain, request, as_awaitable);
    }
    const error_code write_ec = std::get<0>(written);
    tcp_layer().expires_never();
    if (write_ec || abort_requested) {
        result.ec = phase_failure(write_ec, write_phase, write_limit, diag);
        co_return result;
    }

    // Read the response, skipping interim 1xx responses, within one read timeout.
    if (deadline_passed()) {
        result.ec = request_timed_out(read_phase, diag);
        co_return result;
    }
    const auto read_limit = budget(transport.read_timeout);
    tcp_layer().expires_after(read_limit.limit);
    std::optional<http::response_parser<http::string_body>> parser;
    for (int interim = 0;; ++interim) {
        parser.emplace();
        parser->header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(
            transport.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
        parser->body_limit(static_cast<std::uint64_t>(transport.max_body_bytes));

        // An if statement, not a conditional expression: GCC 12 evaluates the arguments in
        // both branches of `co_await (c ? f(a) : f(b))`, dereferencing the empty stream.
        std::tuple<error_code, std::size_t> read;
        if (secure) {
            read = co_await http::async_read(*secure, buffer, *parser, as_awaitable);
        } else {
            read = co_await http::async_read(*plain, buffer, *parser, as_awaitable);
        }
        const error_code read_ec = std::get<0>(read);
        result.response_started = result.response_started || parser->got_some();
        if (read_ec || abort_requested) {
            tcp_layer().expires_never();
            // The status line arrived even though the body did not, and it helps to see it.
            if (parser->is_header_done()) {
                diag.set_http_status(parser->get().result_int());
            }
            if (read_ec == http::error::header_limit && !abort_requested) {
                result.ec =
                    set_client_message(diag,
                                       "the response headers from " + origin.authority() +
                                           " exceed " + std::to_string(transport.max_header_bytes) +
                                           " bytes (transport.max_header_bytes)",
                                       make_error_code(client_errc::header_too_large));
            } else if (read_ec == http::error::buffer_overflow && !abort_requested) {
                result.ec =
                    set_client_message(diag,
                                       "a header, chunk line or trailer in the response from " +
                                           origin.authority() + " exceeds " +
                                           std::to_string(transport.max_header_bytes) +
                                           " bytes (transport.max_header_bytes)",
                                       make_error_code(client_errc::header_too_large));
            } else if (read_ec == http::error::body_limit && !abort_requested) {
                result.ec =
                    set_client_message(diag,
                                       "the response body from " + origin.authority() +
                                           " exceeds " + std::to_string(transport.max_body_bytes) +
                                           " bytes (transport.max_body_bytes)",
                                       make_error_code(client_errc::body_too_large));
            } else {
                result.ec = phase_failure(read_ec, read_phase, read_limit, diag);
            }
            co_return result;
        }

        const unsigned status = parser->get().result_int();
        const bool interim_response = status >= 100 && status < 200 && status != 101;
        if (!interim_response) {
            break;
        }
        if (interim == max_interim_responses) {
            tcp_layer().expires_never();
            result.ec = set_client_message(diag,
                                           "the server at " + origin.authority() +
                                               " sent more "
                                               "than " +
                                               std::to_string(max_interim_responses) +
                                               " interim 1xx responses",
                                           http::error::bad_status);
            co_return result;
        }
    }
    tcp_layer().expires_never();

    // Status codes below 100 do not exist, and 101 (Switching Protocols) was not asked for,
    // so neither is a final response to this request. Without this check a status of 0 would
    // become an error code of value 0, which reads as success.
    if (const unsigned status = parser->get().result_int(); status < 100 || status == 101) {
        close_stream();
        result.ec = set_client_message(diag,
                                       "the server at " + origin.authority() +
                                           " answered with the invalid HTTP status " +
                                           std::to_string(status) +
                                           "; check that the URL points to an HTTP server",
                                       http::error::bad_status);
        co_return result;
    }

    // The connection cannot carry another request after a response that ended at end of
    // file, carried `Connection: close` (or was HTTP/1.0) or was followed by stray bytes.
    const bool keep_alive = parser->keep_alive() && buffer.size() == 0;
    response = parser->release();
    wipe_spare_buffer();
    if (!keep_alive) {
        debug([&] {
            return "closing the connection to " + origin.authority() +
                   " because the response does not allow keep-alive";
        });
        close_stream();
    }
    co_return result;
}

asio::awaitable<error_code> http_connection::impl::send(http_request& request,
                                                        http_response& response, bool replayable,
                                                        diagnostics& diag) {
    if (busy) {
        co_return set_client_message(
            diag, "another request to " + origin.authority() + " is in progress on this connection",
            asio::error::in_progress);
    }
    busy = true;
    abort_requested = false;
    deadline = saturating_add(steady_clock::now(), transport.request_timeout);
    struct busy_guard {
        bool& flag;
        ~busy_guard() { flag = false; }
    } guard{busy};

    prepare(request);

    // Reuse the open connection unless it idled too long or the server closed it.
    const bool reused = open && reusable();
    if (!reused) {
        if (auto ec = co_await connect(diag)) {
            co_return fail(ec, diag);
        }
    }

    exchange_result result = co_await exchange(request, response, diag);

    // The server may have closed a kept-alive connection just before the request went out.
    // Sending once more is safe when no byte of a response arrived.
    if (result.ec && reused && replayable && !result.response_started && !abort_requested &&
        is_stale_connection_error(result.ec)) {
        debug([&] {
            return "reconnecting to " + origin.authority() +
                   ": the server closed the kept-alive connection (" + result.ec.message() + ")";
        });
        close_stream();
        ++stats.reconnects;
        if (auto ec = co_await connect(diag)) {
            co_return fail(ec, diag);
        }
        result = co_await exchange(request, response, diag);
    }

    if (result.ec) {
        co_return fail(result.ec, diag);
    }
    last_used = steady_clock::now();
    co_return error_code{};
}

//
// Closing
//

// Overwrites the read buffer's unused storage, which still contains the raw bytes of the last
// response (a token, or an API body) after the parser consumed them.
void http_connection::impl::wipe_spare_buffer() {
    if (buffer.size() == 0 && buffer.capacity() > 0) {
        const auto storage = buffer.prepare(buffer.capacity());
        OPENSSL_cleanse(storage.data(), storage.size());
    }
}

void http_connection::impl::close_stream() {
    if (secure) {
        secure->next_layer().close();
    }
    if (plain) {
        plain->close();
    }
    // The buffer is cleared by the next connect, not here: a read in progress may still
    // be parsing from it when close() runs on behalf of shutdown().
    open = false;
}

void http_connection::impl::close() {
    if (busy) {
        abort_requested = true;
    }
    if (auto race = resolving) {
        race->resolver.cancel();
        race->finish(asio::error::operation_aborted);
    }
    close_stream();
}

//
// Public interface
//

http_connection::http_connection(asio::any_io_executor ex, endpoint_url origin,
                                 transport_settings transport, std::shared_ptr<ssl::context> tls,
                                 logger lg)
    : impl_(std::make_unique<impl>(std::move(ex), std::move(origin), std::move(transport),
                                   std::move(tls), std::move(lg))) {}

http_connection::~http_connection() {
    if (impl_) {
        impl_->close();
    }
}

asio::awaitable<error_code> http_connection::async_send(http_request& request,
                                                        http_response& response, bool replayable,
                                                        diagnostics& diag) {
    co_return co_await impl_->send(request, response, replayable, diag);
}

void http_connection::close() {
    impl_->close();
}

bool http_connection::is_open() const noexcept {
    return impl_->open;
}

const connection_stats& http_connection::stats() const noexcept {
    return impl_->stats;
}

const endpoint_url& http_connection::origin() const noexcept {
    return impl_->origin;
}

} // namespace stampede::detail
