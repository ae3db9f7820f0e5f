#ifndef STAMPEDE_API_CLIENT_HPP
#define STAMPEDE_API_CLIENT_HPP

#include <stampede/diagnostics.hpp>
#include <stampede/logger.hpp>
#include <stampede/settings.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace stampede {

/// Settings of an `api_client`.
struct api_client_settings {
    /// Base URL of the API. Request targets such as `/v1/guests` are appended to its path,
    /// so `https://host/` sends `https://host/v1/guests`. It must not contain a query.
    std::string base_url{default_api_url};

    /// TLS trust, timeouts and size limits of the API connections. The defaults are those
    /// of `transport_settings`, except `max_body_bytes`, raised to 8 MiB for list pages.
    transport_settings transport = [] {
        transport_settings t;
        t.max_body_bytes = 8 * 1024 * 1024;
        return t;
    }();

    /// Limits the requests sent to the API, retries included. The API allows about 100
    /// requests per 15 minutes. A bucket of 9 that earns one request back every 10 s lets
    /// at most 9 + floor(900 s / 10 s) = 99 requests through in any 900-second window,
    /// one below the limit to absorb clock differences. Sustained, that is 6 per minute.
    rate_limit_settings rate_limit{9, std::chrono::seconds(10)};

    /// Delays between retries of one request after `429`, `5xx` or a network failure.
    backoff_settings backoff;

    /// Maximum number of kept-alive connections, and so of requests in flight at once.
    /// Further requests wait for a free connection in FIFO order.
    std::size_t max_connections = 4;

    /// Receives the client's log records. Off by default. Records never contain an access
    /// token, the client secret, request bodies or query strings.
    stampede::logger logger;
};

/// Checks every field. On failure returns `client_errc::invalid_settings` (or
/// `insecure_url`) and puts a message naming the field and the fix in `diag`.
boost::system::error_code validate(const api_client_settings& settings, diagnostics& diag);

/// Options of one API request.
struct request_options {
    /// Parse a 2xx response body as JSON into `api_response::json()`. A body that is not
    /// valid JSON then fails the request with `client_errc::malformed_response`.
    bool parse_json = false;

    /// Retry `POST` and `PATCH` after a `5xx` status or a network failure, as idempotent
    /// methods are. Set it only when repeating the request is harmless, because the server
    /// may have processed the first attempt. `429` is retried for every method regardless.
    bool retry_non_idempotent = false;
};

/// A response from the API.
struct api_response {
    /// HTTP status code.
    unsigned status = 0;

    /// Response headers.
    boost::beast::http::fields headers;

    /// Response body, as received.
    std::string body;

    /// Returns the body parsed as JSON when `request_options::parse_json` was set and the
    /// body is not empty, and null otherwise.
    const boost::json::value& json() const noexcept { return json_; }
    boost::json::value& json() noexcept { return json_; }

private:
    boost::json::value json_;
};

/// Counters of one `api_client` and its copies, totals since it was created.
struct api_client_stats {
    /// Requests sent to the API, retries included.
    std::uint64_t requests_sent = 0;

    /// Requests sent again with a fresh token after the server rejected the token.
    std::uint64_t token_retries = 0;

    /// Requests sent again after `429`, `5xx` or a network failure.
    std::uint64_t retries = 0;

    /// Requests that had to wait for a free connection.
    std::uint64_t connection_waits = 0;

    /// Connections opened to the API, reconnects included.
    std::uint64_t connections_opened = 0;

    /// Requests that had to wait for the rate limiter.
    std::uint64_t rate_limited_waits = 0;
};

std::ostream& operator<<(std::ostream& os, const api_client_stats& stats);

namespace detail {

class api_client_impl;
struct api_client_owner;

using api_strand = boost::asio::strand<boost::asio::any_io_executor>;

/// The outcome of an operation started by `launch`: the error, the details of a failure,
/// and the value on success.
template <class T>
struct op_result {
    boost::system::error_code ec;
    diagnostics diag;
    T value{};
};

/// One request as the public templates pass it to the compiled code.
struct request_spec {
    boost::beast::http::verb method = boost::beast::http::verb::get;
    std::string target;
    std::optional<boost::json::value> body;
    request_options options;
};

/// Sets up the cancellation of an operation's top-level coroutine: terminal and partial
/// cancellation are honoured, and reported as `operation_aborted` codes rather than
/// exceptions. Await it once, first.
boost::asio::awaitable<void> begin_operation();

/// Sends one request with the retries and token refresh of `api_client::async_request`,
/// and fills `response` and `diag`. Must be awaited on `impl`'s strand by a coroutine that
/// keeps `impl` and `spec` alive. Throws only `std::bad_alloc`.
boost::asio::awaitable<boost::system::error_code> send_request(api_client_impl& impl,
                                                               const request_spec& spec,
                                                               api_response& response,
                                                               diagnostics& diag);

/// The coroutine of `api_client::async_request`: `begin_operation()`, then `send_request`.
boost::asio::awaitable<op_result<api_response>> run_request(std::shared_ptr<api_client_impl> impl,
                                                            request_spec spec);

/// The cancellation signal between a caller's slot and the coroutine of one operation.
///
/// The caller's slot gets a handler that owns a reference to this object and emits on the client's
/// strand, so co_spawn's own cancellation handler only ever runs there, and a
/// cancellation that races the completion finds the signal alive and its slot empty.
struct operation_cancellation {
    boost::asio::cancellation_signal signal;

    struct forwarder {
        std::shared_ptr<operation_cancellation> target;
        api_strand strand;

        void operator()(boost::asio::cancellation_type type) const
        {
            boost::asio::dispatch(strand, [target = target, type] { target->signal.emit(type); });
        }
    };
};

/// Completes a handler with the result of a coroutine spawned on the client's strand.
///
/// Its associated executor is the strand, so that co_spawn delivers the result there.
/// From the strand it posts the handler to the handler's own associated executor, so the
/// handler never runs inside the strand or the initiating call.
template <class T, class Handler>
class completion_relay {
    using handler_executor =
        boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>;
    using work_executor = std::decay_t<decltype(boost::asio::prefer(
        std::declval<handler_executor>(), boost::asio::execution::outstanding_work.tracked))>;

public:
    using executor_type = api_strand;

    completion_relay(Handler handler, api_strand strand,
                     const boost::asio::any_io_executor& fallback, diagnostics* diag_out,
                     std::shared_ptr<operation_cancellation> cancellation)
        : handler_(std::move(handler))
        , strand_(std::move(strand))
        , work_(boost::asio::prefer(boost::asio::get_associated_executor(handler_, fallback),
                                    boost::asio::execution::outstanding_work.tracked))
        , diag_out_(diag_out)
        , cancellation_(std::move(cancellation))
    {
    }

    executor_type get_executor() const noexcept { return strand_; }

    void operator()(std::exception_ptr error, op_result<T> result)
    {
        // The coroutines catch everything they expect, so this is a bug: let it surface
        // from the executor's run() as Asio does for a throwing handler.
        if (error) {
            std::rethrow_exception(error);
        }
        // On the strand, where every emit runs: co_spawn's handler points into the
        // finished coroutine, so later emits must find the slot empty.
        if (cancellation_) {
            cancellation_->signal.slot().clear();
        }
        boost::asio::post(work_, [handler = std::move(handler_), diag_out = diag_out_,
                                  result = std::move(result)]() mutable {
            // On the caller's executor, where its slot is used.
            auto slot = boost::asio::get_associated_cancellation_slot(handler);
            if (slot.is_connected()) {
                slot.clear();
            }
            if (diag_out != nullptr) {
                *diag_out = std::move(result.diag);
            }
            std::move(handler)(result.ec, std::move(result.value));
        });
    }

private:
    Handler handler_;
    api_strand strand_;
    work_executor work_;
    diagnostics* diag_out_;
    std::shared_ptr<operation_cancellation> cancellation_;
};

/// The initiation of every asynchronous operation of `api_client` and the typed
/// resources: spawns the coroutine made by `make_operation` on the client's strand.
template <class T>
struct launch_initiation {
    api_strand strand;
    boost::asio::any_io_executor fallback;

    template <class Handler, class MakeOperation>
    void operator()(Handler&& handler, MakeOperation make_operation, diagnostics* diag_out) const
    {
        using relay = completion_relay<T, std::decay_t<Handler>>;
        auto slot = boost::asio::get_associated_cancellation_slot(handler);
        std::shared_ptr<operation_cancellation> cancellation;
        boost::asio::cancellation_slot inner_slot;
        if (slot.is_connected()) {
            cancellation = std::make_shared<operation_cancellation>();
            inner_slot = cancellation->signal.slot();
            slot.template emplace<operation_cancellation::forwarder>(
                operation_cancellation::forwarder{cancellation, strand});
        }
        boost::asio::co_spawn(
            strand, make_operation(),
            boost::asio::bind_cancellation_slot(
                inner_slot, relay(std::forward<Handler>(handler), strand, fallback, diag_out,
                                  std::move(cancellation))));
    }
};

/// Returns the strand that runs every operation of the client.
const api_strand& strand_of(const api_client_impl& impl) noexcept;

/// Returns the executor given to the client.
const boost::asio::any_io_executor& executor_of(const api_client_impl& impl) noexcept;

/// Whether `T` is an argument of the request overloads, which the overloads that end
/// with a completion token must not take for one.
template <class T>
inline constexpr bool is_request_argument_v =
    std::is_same_v<std::decay_t<T>, diagnostics> ||
    std::is_same_v<std::decay_t<T>, request_options>;

} // namespace detail

/// A client of the Stampede API: sends each request with a bearer token from a
/// `token_source`, refreshes the token and retries once when the server rejects it,
/// keeps to the API rate limit, retries `429` and `5xx` with backoff, and spreads
/// concurrent requests over a small pool of kept-alive connections.
///
/// Copies are handles that share the connections, the rate limiter and the counters.
/// When the last copy is destroyed, the client shuts down (see `shutdown()`).
///
/// Thread safety: every member function may be called from any thread. Internally, all
/// requests of one client run on one strand of the executor.
class api_client {
public:
    using executor_type = boost::asio::any_io_executor;

    /// Validates `settings` and creates a client that runs on `ex` and takes its tokens from
    /// `auth`. The client keeps a copy of `auth`, which shares the token cache with it. No
    /// connection is opened before the first request.
    /// Throws `error_with_diagnostics` with `client_errc::invalid_settings` (or
    /// `insecure_url`) naming the field and the fix when the settings are invalid, or when
    /// `transport.ca_file` or `transport.ca_directory` cannot be loaded.
    api_client(const executor_type& ex, token_source auth, api_client_settings settings = {});

    /// As above, on the token source's executor.
    explicit api_client(token_source auth, api_client_settings settings = {});

    /// Returns the executor given at construction, which runs the handlers that have no
    /// associated executor of their own.
    const executor_type& get_executor() const noexcept;

    /// Returns the token source the client takes its tokens from.
    const token_source& auth() const noexcept;

    /// Sends a request to the API and reads the whole response.
    /// Completion signature: `void(boost::system::error_code, api_response)`.
    ///
    /// `target` is the path and query relative to the base URL, starting with `/`, with
    /// reserved characters already percent-encoded (for example `/v1/guests?limit=10`).
    /// `body`, when given, is sent as JSON with `Content-Type: application/json`. Every
    /// request carries `Accept: application/json` and `authorization: Bearer <token>`
    /// with the token that `auth().token()` returns when the attempt starts.
    ///
    /// Each attempt waits for the rate limiter, then for a free connection. On `401`, or
    /// on `403` whose `WWW-Authenticate` header or JSON `error` names an invalid or expired
    /// token (`invalid_token`, `expired_token`), the client invalidates the token it used
    /// and sends the request once more with the token that `auth()` then returns. Because
    /// invalidation compares the token's value, many requests rejected with the same token
    /// cause one token fetch.
    /// `429` is retried for every method. `408`, `5xx` and network failures are retried
    /// only for the idempotent `GET`, `PUT`, `DELETE` and `OPTIONS`, unless
    /// `options.retry_non_idempotent` is set. Retries wait for the `backoff_policy` delay,
    /// at least the server's `Retry-After`, until `backoff.max_attempts` or
    /// `backoff.max_elapsed` is reached.
    ///
    /// Completes with success for a 2xx status, with the response. Errors:
    /// - `make_http_error(status)` for any other status (category `http_category()`),
    ///   once retries end. A request rejected again after its token was refreshed
    ///   completes with `make_http_error(401)` (or 403), and the client message states
    ///   that a fresh token was tried. The response passed to the handler holds the status, headers
    ///   and body of the last response.
    /// - Errors of `auth().async_token()` when no token can be obtained.
    /// - Transport errors: timeouts (`client_errc::*_timeout`), size limits,
    ///   `certificate_verification_failed`, and network errors of the Asio, Beast and SSL
    ///   categories.
    /// - `client_errc::malformed_response` when `options.parse_json` is set and a 2xx body
    ///   is not JSON.
    /// - `boost::system::errc::invalid_argument` when `target` is not a path starting with
    ///   `/`, or contains a space, a control character or `#`.
    /// - `boost::system::errc::operation_not_supported` for `HEAD`, which the transport
    ///   cannot read yet.
    /// - `operation_aborted` on cancellation or after `shutdown()`.
    ///
    /// Cancellation: terminal and partial cancellation complete the request with
    /// `operation_aborted`. Cancelled while waiting for a token, the limiter, a connection
    /// or a backoff delay, it sends nothing more. Cancelled while the request is in flight,
    /// it closes the connection, and the server may have processed the request.
    ///
    /// The handler runs on its associated executor (`get_executor()` when it has none),
    /// never inside this call. `target` is copied before this function returns.
    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
        requires(!detail::is_request_argument_v<CompletionToken>)
    auto async_request(boost::beast::http::verb method, std::string_view target,
                       std::optional<boost::json::value> body, request_options options,
                       CompletionToken&& token = CompletionToken())
    {
        return initiate_request(method, target, std::move(body), options, nullptr,
                                std::forward<CompletionToken>(token));
    }

    /// As above, and on completion also stores the failure's details (or clears them on
    /// success) in `diag`, which must stay valid until then. `diag.server_message()` contains
    /// the server's `error_description`, `message` or `error`, or a short preview of a
    /// body that is not JSON, sanitized and with tokens and the client secret redacted.
    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
    auto async_request(boost::beast::http::verb method, std::string_view target,
                       std::optional<boost::json::value> body, request_options options,
                       diagnostics& diag, CompletionToken&& token = CompletionToken())
    {
        return initiate_request(method, target, std::move(body), options, &diag,
                                std::forward<CompletionToken>(token));
    }

    /// Sends `GET target`, as `async_request` describes.
    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
        requires(!detail::is_request_argument_v<CompletionToken>)
    auto async_get(std::string_view target, CompletionToken&& token = CompletionToken())
    {
        return async_get(target, request_options{}, std::forward<CompletionToken>(token));
    }

    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
    auto async_get(std::string_view target, request_options options,
                   CompletionToken&& token = CompletionToken())
    {
        return async_request(boost::beast::http::verb::get, target, std::nullopt, options,
                             std::forward<CompletionToken>(token));
    }

    /// Sends `POST target` with `body` as JSON, as `async_request` describes.
    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
        requires(!detail::is_request_argument_v<CompletionToken>)
    auto async_post(std::string_view target, boost::json::value body,
                    CompletionToken&& token = CompletionToken())
    {
        return async_post(target, std::move(body), request_options{},
                          std::forward<CompletionToken>(token));
    }

    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
    auto async_post(std::string_view target, boost::json::value body, request_options options,
                    CompletionToken&& token = CompletionToken())
    {
        return async_request(boost::beast::http::verb::post, target, std::move(body), options,
                             std::forward<CompletionToken>(token));
    }

    /// Sends `PUT target` with `body` as JSON, as `async_request` describes.
    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
        requires(!detail::is_request_argument_v<CompletionToken>)
    auto async_put(std::string_view target, boost::json::value body,
                   CompletionToken&& token = CompletionToken())
    {
        return async_put(target, std::move(body), request_options{},
                         std::forward<CompletionToken>(token));
    }

    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
    auto async_put(std::string_view target, boost::json::value body, request_options options,
                   CompletionToken&& token = CompletionToken())
    {
        return async_request(boost::beast::http::verb::put, target, std::move(body), options,
                             std::forward<CompletionToken>(token));
    }

    /// Sends `PATCH target` with `body` as JSON, as `async_request` describes.
    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
        requires(!detail::is_request_argument_v<CompletionToken>)
    auto async_patch(std::string_view target, boost::json::value body,
                     CompletionToken&& token = CompletionToken())
    {
        return async_patch(target, std::move(body), request_options{},
                           std::forward<CompletionToken>(token));
    }

    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
    auto async_patch(std::string_view target, boost::json::value body, request_options options,
                     CompletionToken&& token = CompletionToken())
    {
        return async_request(boost::beast::http::verb::patch, target, std::move(body), options,
                             std::forward<CompletionToken>(token));
    }

    /// Sends `DELETE target`, as `async_request` describes.
    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
        requires(!detail::is_request_argument_v<CompletionToken>)
    auto async_delete(std::string_view target, CompletionToken&& token = CompletionToken())
    {
        return async_delete(target, request_options{}, std::forward<CompletionToken>(token));
    }

    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
    auto async_delete(std::string_view target, request_options options,
                      CompletionToken&& token = CompletionToken())
    {
        return async_request(boost::beast::http::verb::delete_, target, std::nullopt, options,
                             std::forward<CompletionToken>(token));
    }

    /// Stops the client: closes every connection, so requests in flight complete with
    /// `operation_aborted`, as do requests waiting for a connection, the rate limiter or a
    /// backoff delay, and every later request. A request waiting for a token completes
    /// the same way once the token source completes its wait. The token source is left running,
    /// because other holders may share it. Called by the destructor of the last copy.
    void shutdown();

    /// Returns the counters.
    api_client_stats stats() const;

    /// Returns the settings, as validated.
    const api_client_settings& settings() const noexcept;

    /// Used by the typed resources to run their requests on the client's strand.
    const std::shared_ptr<detail::api_client_impl>& impl() const noexcept { return impl_; }

    /// Starts an operation whose coroutine `make_operation()` returns
    /// `awaitable<detail::op_result<T>>`, with the completion rules of `async_request`.
    template <class T, class CompletionToken, class MakeOperation>
    auto launch(MakeOperation make_operation, diagnostics* diag, CompletionToken&& token) const
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, T)>(
            detail::launch_initiation<T>{detail::strand_of(*impl_), detail::executor_of(*impl_)},
            token, std::move(make_operation), diag);
    }

private:
    template <class CompletionToken>
    auto initiate_request(boost::beast::http::verb method, std::string_view target,
                          std::optional<boost::json::value> body, request_options options,
                          diagnostics* diag, CompletionToken&& token)
    {
        detail::request_spec spec{method, std::string(target), std::move(body), options};
        return launch<api_response>(
            [impl = impl_, spec = std::move(spec)]() mutable {
                return detail::run_request(std::move(impl), std::move(spec));
            },
            diag, std::forward<CompletionToken>(token));
    }

    std::shared_ptr<detail::api_client_owner> owner_;
    std::shared_ptr<detail::api_client_impl> impl_;
};

} // namespace stampede

#endif
