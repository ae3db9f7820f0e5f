#include <stampede/api_client.hpp>

#include <stampede/backoff.hpp>
#include <stampede/detail/http_connection.hpp>
#include <stampede/detail/log.hpp>
#include <stampede/detail/token_wire.hpp>
#include <stampede/detail/url.hpp>
#include <stampede/error.hpp>
#include <stampede/rate_limiter.hpp>
#include <stampede/retry.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <list>
#include <ostream>
#include <set>
#include <vector>

namespace stampede {

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;

using boost::system::error_code;
using std::chrono::steady_clock;

namespace {

constexpr auto as_awaitable = asio::as_tuple(asio::use_awaitable);

error_code reject_setting(diagnostics& diag, std::string message)
{
    diag.set_client_message(std::move(message));
    return client_errc::invalid_settings;
}

std::string format_ms(milliseconds duration)
{
    return std::to_string(duration.count()) + " ms";
}

bool iequals(std::string_view a, std::string_view b) noexcept
{
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

bool icontains(std::string_view text, std::string_view needle) noexcept
{
    return std::search(text.begin(), text.end(), needle.begin(), needle.end(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           }) != text.end();
}

} // namespace

error_code validate(const api_client_settings& s, diagnostics& diag)
{
    diag.clear();
    detail::endpoint_url url;
    if (error_code ec =
            detail::parse_endpoint_url(s.base_url, "base_url", s.transport, url, diag)) {
        return ec;
    }
    if (url.target.find('?') != std::string::npos) {
        return reject_setting(diag, "base_url has a query; give the API root without one, such "
                                    "as https://global.stampede.ai/");
    }
    if (std::string message = validate(s.transport); !message.empty()) {
        return reject_setting(diag, message);
    }
    if (std::string message = validate(s.rate_limit); !message.empty()) {
        return reject_setting(diag, "rate_limit: " + message);
    }
    if (std::string message = validate(s.backoff); !message.empty()) {
        return reject_setting(diag, "backoff: " + message);
    }
    if (s.max_connections == 0) {
        return reject_setting(diag, "max_connections is 0, so no request could ever be sent; "
                                    "set it to 1 or more");
    }
    return {};
}

std::ostream& operator<<(std::ostream& os, const api_client_stats& s)
{
    os << "api_client_stats{requests_sent=" << s.requests_sent
       << ", token_retries=" << s.token_retries << ", retries=" << s.retries
       << ", connection_waits=" << s.connection_waits
       << ", connections_opened=" << s.connections_opened
       << ", rate_limited_waits=" << s.rate_limited_waits << "}";
    return os;
}

namespace detail {

namespace {

/// The kept-alive connections of one client, lent to one request at a time.
///
/// A request takes an idle connection, opens a new one while fewer than the maximum
/// exist, or else waits in FIFO order. Used only on the client's strand.
class connection_pool {
public:
    connection_pool(const api_strand& strand, endpoint_url origin, transport_settings transport,
                    std::shared_ptr<asio::ssl::context> tls, logger lg, std::size_t max)
        : strand_(strand)
        , origin_(std::move(origin))
        , transport_(std::move(transport))
        , tls_(std::move(tls))
        , logger_(std::move(lg))
        , max_(max)
    {
    }

    /// Lends a connection in `out`. Completes with `operation_aborted` when the calling
    /// coroutine is cancelled while waiting, or after `shutdown()`. Sets `waited` when the
    /// request had to queue.
    asio::awaitable<error_code> acquire(http_connection*& out, bool& waited)
    {
        waited = false;
        if (stopped_) {
            co_return asio::error::operation_aborted;
        }
        if (!idle_.empty()) {
            // The most recently used connection is the likeliest to be still open.
            out = idle_.back();
            idle_.pop_back();
            co_return error_code{};
        }
        if (all_.size() < max_) {
            all_.push_back(std::make_unique<http_connection>(asio::any_io_executor(strand_),
                                                             origin_, transport_, tls_, logger_));
            out = all_.back().get();
            co_return error_code{};
        }

        waited = true;
        waiter self(strand_);
        const auto position = waiters_.insert(waiters_.end(), &self);
        // Leaves the queue if this frame is destroyed while waiting, as when its io_context
        // is destroyed, so that `release` never hands a connection to a dead frame.
        struct registration {
            std::list<waiter*>& queue;
            std::list<waiter*>::iterator position;
            const waiter& self;
            ~registration()
            {
                if (self.granted == nullptr && !self.left) {
                    queue.erase(position);
                }
            }
        } guard{waiters_, position, self};
        log(logger_, log_level::trace, [&] {
            return "waiting for one of " + std::to_string(max_) + " API connections (" +
                   std::to_string(waiters_.size()) + " waiting)";
        });

        // `release` hands the connection over and cancels the timer. A cancellation of the
        // coroutine also ends the wait, with nothing granted.
        co_await self.timer.async_wait(as_awaitable);
        if (self.granted != nullptr) {
            out = self.granted;
            co_return error_code{};
        }
        waiters_.erase(position);
        self.left = true;
        co_return asio::error::operation_aborted;
    }

    /// Takes back a connection: hands it to the first waiter, or keeps it idle. After
    /// `shutdown()` it keeps every connection idle, because the waiters are leaving.
    void release(http_connection* connection)
    {
        if (!stopped_ && !waiters_.empty()) {
            waiter* next = waiters_.front();
            waiters_.pop_front();
            next->granted = connection;
            next->timer.cancel();
            return;
        }
        idle_.push_back(connection);
    }

    /// Closes every connection and ends every wait with `operation_aborted`.
    void shutdown()
    {
        stopped_ = true;
        for (auto& connection : all_) {
            connection->close();
        }
        for (waiter* w : waiters_) {
            w->timer.cancel();
        }
    }

private:
    struct waiter {
        explicit waiter(const api_strand& strand)
            : timer(strand, steady_clock::time_point::max())
        {
        }

        asio::steady_timer timer;
        http_connection* granted = nullptr;
        bool left = false; ///< removed itself from the queue after a cancellation
    };

    api_strand strand_;
    endpoint_url origin_;
    transport_settings transport_;
    std::shared_ptr<asio::ssl::context> tls_;
    logger logger_;
    std::size_t max_;
    bool stopped_ = false;
    std::vector<std::unique_ptr<http_connection>> all_;
    std::vector<http_connection*> idle_;
    std::list<waiter*> waiters_;
};

/// A connection lent by the pool, given back on destruction or by `release()`.
class connection_lease {
public:
    connection_lease(connection_pool& pool, http_connection* connection) noexcept
        : pool_(pool)
        , connection_(connection)
    {
    }
    ~connection_lease() { release(); }
    connection_lease(const connection_lease&) = delete;
    connection_lease& operator=(const connection_lease&) = delete;

    http_connection& get() const noexcept { return *connection_; }

    void release() noexcept
    {
        if (connection_ != nullptr) {
            pool_.release(std::exchange(connection_, nullptr));
        }
    }

private:
    connection_pool& pool_;
    http_connection* connection_;
};

/// Parsed parts of a JSON error body.
struct error_body {
    std::string error;       ///< the `error` string, if any
    std::string description; ///< `error_description`, else `message`, else `error`
};

std::string string_member(const json::object& object, std::string_view key)
{
    const json::value* value = object.if_contains(key);
    if (value != nullptr && value->is_string()) {
        return std::string(value->get_string());
    }
    return {};
}

error_body parse_error_body(std::string_view body)
{
    error_body out;
    error_code ec;
    const json::value parsed = json::parse(body, ec);
    if (ec || !parsed.is_object()) {
        return out;
    }
    const json::object& object = parsed.get_object();
    out.error = string_member(object, "error");
    for (std::string_view key : {"error_description", "message", "error"}) {
        out.description = string_member(object, key);
        if (!out.description.empty()) {
            break;
        }
    }
    return out;
}

bool is_idempotent(http::verb method) noexcept
{
    switch (method) {
    case http::verb::get:
    case http::verb::head:
    case http::verb::put:
    case http::verb::delete_:
    case http::verb::options:
        return true;
    default:
        return false;
    }
}

// Returns whether the response rejects the bearer token itself (invalid, expired or
// revoked), so that a fresh token may succeed. RFC 6750 (section 3.1) specifies 401 with
// `error="invalid_token"`, but some servers respond with 403 for the same cause.
bool is_token_rejection(const http_response& response, const error_body& body)
{
    const unsigned status = response.result_int();
    if (status == 401) {
        return true;
    }
    if (status != 403) {
        return false;
    }
    const auto [first, last] = response.equal_range(http::field::www_authenticate);
    for (auto it = first; it != last; ++it) {
        if (icontains(it->value(), "invalid_token")) {
            return true;
        }
    }
    for (std::string_view code : {"invalid_token", "expired_token", "token_expired"}) {
        if (iequals(body.error, code)) {
            return true;
        }
    }
    return false;
}

// Returns the target without its query, for messages and logs, because a query may
// contain personal data such as a searched email address.
std::string_view shown_path(std::string_view target) noexcept
{
    return target.substr(0, target.find('?'));
}

error_code check_request(http::verb method, std::string_view target, diagnostics& diag)
{
    // TODO: allow HEAD once http_connection marks the parser of a HEAD response as having
    // no body. Until then the read would wait for a body until read_timeout.
    if (method == http::verb::head) {
        diag.set_client_message("HEAD requests are not supported yet; use GET");
        return make_error_code(boost::system::errc::operation_not_supported);
    }
    const bool bad_char = std::any_of(target.begin(), target.end(), [](char c) {
        const auto byte = static_cast<unsigned char>(c);
        return byte <= 0x20 || byte == 0x7f || c == '#';
    });
    if (target.empty() || target.front() != '/' || bad_char) {
        diag.set_client_message(
            "invalid request target: it must be a path relative to base_url that starts with "
            "'/', with spaces, control characters and '#' percent-encoded");
        return make_error_code(boost::system::errc::invalid_argument);
    }
    return {};
}

} // namespace

/// The state shared by the copies of one `api_client`. Everything but the counters, the
/// limiter and the immutable members is used only on `strand`.
class api_client_impl : public std::enable_shared_from_this<api_client_impl> {
public:
    api_client_impl(const asio::any_io_executor& ex, token_source source,
                    api_client_settings validated_settings, endpoint_url url,
                    std::shared_ptr<asio::ssl::context> tls_context)
        : executor(ex)
        , strand(asio::make_strand(ex))
        , auth(std::move(source))
        , settings(std::move(validated_settings))
        , origin(std::move(url))
        , path_prefix(origin.target.substr(0, origin.target.find_last_not_of('/') + 1))
        , limiter(strand, settings.rate_limit, settings.logger)
        , backoff(settings.backoff)
        , pool(strand, origin, settings.transport, std::move(tls_context), settings.logger,
               settings.max_connections)
    {
    }

    asio::awaitable<error_code> send(const request_spec& spec, api_response& out,
                                     diagnostics& diag);
    void shutdown();
    api_client_stats stats() const;

    const asio::any_io_executor executor;
    const api_strand strand;
    token_source auth;
    const api_client_settings settings;

private:
    struct attempt_state;

    asio::awaitable<error_code> obtain_token(access_token& out, diagnostics& diag);
    asio::awaitable<error_code> wait_for_limiter();
    asio::awaitable<error_code> wait_before_retry(milliseconds delay);
    std::optional<milliseconds> next_delay(attempt_state& state,
                                           std::optional<milliseconds> retry_after);
    void describe_failure(const attempt_state& state, const http_response& response,
                          diagnostics& diag) const;
    error_code finish_success(const attempt_state& state, http_response& response,
                              api_response& out, diagnostics& diag) const;

    const endpoint_url origin;
    const std::string path_prefix;
    rate_limiter limiter;
    backoff_policy backoff;
    const retry_classifier classifier{{}};
    connection_pool pool;
    std::set<asio::steady_timer*> retry_timers;
    std::atomic<bool> stopping{false};

    std::atomic<std::uint64_t> requests_sent{0};
    std::atomic<std::uint64_t> token_retries{0};
    std::atomic<std::uint64_t> retries{0};
    std::atomic<std::uint64_t> connection_waits{0};
    std::atomic<std::uint64_t> connections_opened{0};
};

/// The progress of one request through its attempts.
struct api_client_impl::attempt_state {
    attempt_state(const request_spec& request)
        : spec(request)
        , path(shown_path(request.target))
        , may_retry_failure(is_idempotent(request.method) ||
                            request.options.retry_non_idempotent)
    {
    }

    const request_spec& spec;
    std::string_view path;
    bool may_retry_failure;
    steady_clock::time_point first_attempt = steady_clock::now();
    unsigned failed_attempts = 0;
    bool token_refreshed = false;
    std::vector<access_token> tokens_used;
};

/// Destroyed with the last `api_client` handle, which shuts the client down.
struct api_client_owner {
    explicit api_client_owner(std::shared_ptr<api_client_impl> client)
        : impl(std::move(client))
    {
    }
    ~api_client_owner() { impl->shutdown(); }
    api_client_owner(const api_client_owner&) = delete;
    api_client_owner& operator=(const api_client_owner&) = delete;

    std::shared_ptr<api_client_impl> impl;
};

const api_strand& strand_of(const api_client_impl& impl) noexcept
{
    return impl.strand;
}

const asio::any_io_executor& executor_of(const api_client_impl& impl) noexcept
{
    return impl.executor;
}

asio::awaitable<void> begin_operation()
{
    co_await asio::this_coro::throw_if_cancelled(false);
    co_await asio::this_coro::reset_cancellation_state(asio::enable_partial_cancellation());
}

asio::awaitable<error_code> send_request(api_client_impl& impl, const request_spec& spec,
                                         api_response& response, diagnostics& diag)
{
    try {
        co_return co_await impl.send(spec, response, diag);
    } catch (const boost::system::system_error& e) {
        // Cancellation while a nested coroutine waits surfaces as an exception.
        diag.set_client_message(std::string(shown_path(spec.target)) + ": " + e.what());
        co_return e.code();
    }
}

asio::awaitable<op_result<api_response>> run_request(std::shared_ptr<api_client_impl> impl,
                                                     request_spec spec)
{
    op_result<api_response> result;
    co_await begin_operation();
    result.ec = co_await send_request(*impl, spec, result.value, result.diag);
    co_return result;
}

asio::awaitable<error_code> api_client_impl::obtain_token(access_token& out, diagnostics& diag)
{
    try {
        // The view is valid only until the next co_await, so keep an owning copy.
        out = (co_await auth.token()).to_owned();
        co_return error_code{};
    } catch (const error_with_diagnostics& e) {
        diag = e.get_diagnostics();
        co_return e.code();
    }
}

asio::awaitable<error_code> api_client_impl::wait_for_limiter()
{
    if (limiter.try_acquire()) {
        co_return error_code{};
    }
    auto [ec] = co_await limiter.async_acquire(as_awaitable);
    co_return ec;
}

asio::awaitable<error_code> api_client_impl::wait_before_retry(milliseconds delay)
{
    asio::steady_timer timer(strand, delay);
    retry_timers.insert(&timer);
    auto [ec] = co_await timer.async_wait(as_awaitable);
    retry_timers.erase(&timer);
    if (!ec && stopping.load(std::memory_order_relaxed)) {
        ec = asio::error::operation_aborted;
    }
    co_return ec;
}

std::optional<milliseconds> api_client_impl::next_delay(attempt_state& state,
                                                        std::optional<milliseconds> retry_after)
{
    ++state.failed_attempts;
    const auto elapsed =
        std::chrono::duration_cast<milliseconds>(steady_clock::now() - state.first_attempt);
    return backoff.next_delay(state.failed_attempts, elapsed, retry_after);
}

asio::awaitable<error_code> api_client_impl::send(const request_spec& spec, api_response& out,
                                                  diagnostics& diag)
{
    diag.clear();
    out = api_response{};
    if (error_code ec = check_request(spec.method, spec.target, diag)) {
        co_return ec;
    }

    attempt_state state(spec);
    const std::string target = path_prefix + spec.target;
    const std::string body = spec.body ? json::serialize(*spec.body) : std::string();
    const std::string method_name(http::to_string(spec.method));

    for (;;) {
        if (stopping.load(std::memory_order_relaxed)) {
            diag.set_client_message(method_name + " " + std::string(state.path) +
                                    ": the API client was shut down");
            co_return asio::error::operation_aborted;
        }

        // Take the token before waiting for the limiter and a connection, so that requests
        // started together use the same token and its rejection invalidates it once.
        access_token token;
        if (error_code ec = co_await obtain_token(token, diag)) {
            co_return ec;
        }

        if (error_code ec = co_await wait_for_limiter()) {
            diag.set_client_message(method_name + " " + std::string(state.path) +
                                    ": cancelled while waiting for the API rate limiter");
            co_return ec;
        }

        http_connection* connection = nullptr;
        bool waited = false;
        if (error_code ec = co_await pool.acquire(connection, waited)) {
            diag.set_client_message(method_name + " " + std::string(state.path) +
                                    ": cancelled while waiting for a free API connection");
            co_return ec;
        }
        if (waited) {
            connection_waits.fetch_add(1, std::memory_order_relaxed);
        }
        connection_lease lease(pool, connection);
        if (stopping.load(std::memory_order_relaxed)) {
            diag.set_client_message(method_name + " " + std::string(state.path) +
                                    ": the API client was shut down");
            co_return asio::error::operation_aborted;
        }

        // The waits for the limiter and a connection can outlast the token. Once the
        // token source would no longer hand it out, take the current one.
        if (steady_clock::now() >= token.snapshot()->stale_at) {
            if (error_code ec = co_await obtain_token(token, diag)) {
                co_return ec;
            }
        }
        state.tokens_used.push_back(token);

        http_request request{spec.method, target, 11};
        request.set(http::field::accept, "application/json");
        request.set(http::field::authorization, token.authorization_header());
        if (spec.body) {
            request.set(http::field::content_type, "application/json");
            request.body() = body;
        }
        request.keep_alive(true);
        request.prepare_payload();

        const std::size_t connects_before = connection->stats().connects;
        requests_sent.fetch_add(1, std::memory_order_relaxed);
        log(settings.logger, log_level::trace, [&] {
            return method_name + " " + std::string(state.path) + ": sending attempt " +
                   std::to_string(state.failed_attempts + 1) +
                   (state.token_refreshed ? " with a fresh token" : "");
        });

        http_response response;
        diagnostics attempt_diag;
        const error_code send_ec =
            co_await connection->async_send(request, response, state.may_retry_failure,
                                            attempt_diag);
        connections_opened.fetch_add(connection->stats().connects - connects_before,
                                     std::memory_order_relaxed);
        lease.release();

        if (send_ec) {
            const bool aborted = send_ec == asio::error::operation_aborted ||
                                 stopping.load(std::memory_order_relaxed);
            if (!aborted && state.may_retry_failure &&
                classifier.classify(send_ec, attempt_diag) == failure_kind::retryable) {
                if (auto delay = next_delay(state, std::nullopt)) {
                    retries.fetch_add(1, std::memory_order_relaxed);
                    log(settings.logger, log_level::warning, [&] {
                        return method_name + " " + std::string(state.path) + " failed (" +
                               send_ec.message() + "), retrying in " + format_ms(*delay);
                    });
                    if (error_code ec = co_await wait_before_retry(*delay)) {
                        diag.set_client_message(method_name + " " + std::string(state.path) +
                                                ": cancelled while waiting to retry");
                        co_return ec;
                    }
                    continue;
                }
            }
            diag = std::move(attempt_diag);
            log(settings.logger, state.failed_attempts > 0 ? log_level::warning : log_level::debug,
                [&] {
                    return method_name + " " + std::string(state.path) + " failed after " +
                           std::to_string(state.failed_attempts + 1) + " attempt(s): " +
                           send_ec.message();
                });
            co_return send_ec;
        }

        const unsigned status = response.result_int();
        log(settings.logger, log_level::debug, [&] {
            return method_name + " " + std::string(state.path) + ": HTTP " +
                   std::to_string(status);
        });
        if (status >= 200 && status < 300) {
            co_return finish_success(state, response, out, diag);
        }

        const error_body error = parse_error_body(response.body());
        if (is_token_rejection(response, error) && !state.token_refreshed) {
            // One retry with a fresh token. Invalidation compares values, so it drops the
            // cached token only if no other request has replaced it already.
            state.token_refreshed = true;
            const bool dropped = auth.invalidate(token);
            token_retries.fetch_add(1, std::memory_order_relaxed);
            log(settings.logger, log_level::info, [&] {
                return method_name + " " + std::string(state.path) +
                       ": the API rejected the access token with HTTP " +
                       std::to_string(status) + "; " +
                       (dropped ? "dropped it and retrying" : "retrying") +
                       " once with a fresh token";
            });
            continue;
        }

        describe_failure(state, response, diag);
        const bool retryable_status =
            status == 429 || ((status == 408 || status >= 500) && state.may_retry_failure);
        if (retryable_status) {
            if (auto delay = next_delay(state, diag.retry_after())) {
                retries.fetch_add(1, std::memory_order_relaxed);
                log(settings.logger, log_level::warning, [&] {
                    return method_name + " " + std::string(state.path) +
                           " was answered with HTTP " + std::to_string(status) +
                           ", retrying in " + format_ms(*delay) +
                           (diag.retry_after() ? " (the server sent Retry-After)" : "");
                });
                if (error_code ec = co_await wait_before_retry(*delay)) {
                    diag.set_client_message(method_name + " " + std::string(state.path) +
                                            ": cancelled while waiting to retry");
                    co_return ec;
                }
                continue;
            }
            log(settings.logger, log_level::warning, [&] {
                return method_name + " " + std::string(state.path) + " was answered with HTTP " +
                       std::to_string(status) + " " + std::to_string(state.failed_attempts) +
                       " times; giving up";
            });
        }

        out.status = status;
        out.headers = response.base();
        out.body = std::move(response.body());
        co_return make_http_error(status);
    }
}

// Fills `diag` for a non-2xx response. The SDK's own text goes to `client_message`, and
// the server's untrusted text, sanitized and redacted, to `server_message`.
void api_client_impl::describe_failure(const attempt_state& state, const http_response& response,
                                       diagnostics& diag) const
{
    redactor secrets;
    secrets.add(auth.settings().client_secret.reveal());
    for (const access_token& token : state.tokens_used) {
        secrets.add(token.value());
    }

    const unsigned status = response.result_int();
    const error_body error = parse_error_body(response.body());
    diag.clear();
    diag.set_http_status(status);
    diag.set_server_error_code(sanitize_server_text(error.error, secrets, 100));
    if (!error.description.empty()) {
        diag.set_server_message(sanitize_server_text(error.description, secrets));
    } else if (!response.body().empty()) {
        diag.set_server_message(sanitize_server_text(response.body(), secrets));
    }
    if (auto it = response.find(http::field::retry_after); it != response.end()) {
        diag.set_retry_after(parse_retry_after(it->value(), std::chrono::system_clock::now()));
    }

    std::string message = std::string(http::to_string(state.spec.method)) + " " +
                          std::string(state.path) + ": the API responded with HTTP " +
                          std::to_string(status);
    if (state.failed_attempts > 0) {
        message += " after " + std::to_string(state.failed_attempts + 1) + " attempts";
    }
    if (state.token_refreshed && (status == 401 || status == 403)) {
        message += "; the request was sent again with a fresh token and rejected again, so "
                   "check that the API key is active and may use this endpoint";
    }
    diag.set_client_message(std::move(message));
}

error_code api_client_impl::finish_success(const attempt_state& state, http_response& response,
                                           api_response& out, diagnostics& diag) const
{
    out.status = response.result_int();
    out.headers = response.base();
    out.body = std::move(response.body());
    if (!state.spec.options.parse_json) {
        return {};
    }

    const bool blank = std::all_of(out.body.begin(), out.body.end(), [](char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
    });
    if (blank) {
        return {};
    }
    error_code ec;
    out.json() = json::parse(out.body, ec);
    if (!ec) {
        return {};
    }

    redactor secrets;
    secrets.add(auth.settings().client_secret.reveal());
    for (const access_token& token : state.tokens_used) {
        secrets.add(token.value());
    }
    diag.set_http_status(out.status);
    diag.set_server_message(sanitize_server_text(out.body, secrets));
    diag.set_client_message(
        std::string(http::to_string(state.spec.method)) + " " + std::string(state.path) +
        ": the HTTP " + std::to_string(out.status) + " response body is not valid JSON (" +
        ec.message() + ", Content-Type '" +
        sanitize_server_text(out.headers[http::field::content_type], secrets, 80) + "')");
    out.json() = nullptr;
    return client_errc::malformed_response;
}

void api_client_impl::shutdown()
{
    if (stopping.exchange(true)) {
        return;
    }
    limiter.shutdown();
    asio::dispatch(strand, [self = shared_from_this()] {
        self->pool.shutdown();
        for (asio::steady_timer* timer : self->retry_timers) {
            timer->cancel();
        }
    });
}

api_client_stats api_client_impl::stats() const
{
    api_client_stats out;
    out.requests_sent = requests_sent.load(std::memory_order_relaxed);
    out.token_retries = token_retries.load(std::memory_order_relaxed);
    out.retries = retries.load(std::memory_order_relaxed);
    out.connection_waits = connection_waits.load(std::memory_order_relaxed);
    out.connections_opened = connections_opened.load(std::memory_order_relaxed);
    out.rate_limited_waits = limiter.stats().waited;
    return out;
}

} // namespace detail

namespace {

std::shared_ptr<detail::api_client_impl> make_impl(const asio::any_io_executor& ex,
                                                   token_source auth, api_client_settings settings)
{
    diagnostics diag;
    if (error_code ec = validate(settings, diag)) {
        throw error_with_diagnostics(ec, std::move(diag));
    }
    detail::endpoint_url url;
    error_code ec = detail::parse_endpoint_url(settings.base_url, "base_url", settings.transport,
                                               url, diag);
    std::shared_ptr<asio::ssl::context> tls;
    if (!ec && url.tls) {
        ec = detail::make_tls_context(settings.transport, tls, diag);
    }
    if (ec) {
        throw error_with_diagnostics(ec, std::move(diag));
    }
    return std::make_shared<detail::api_client_impl>(ex, std::move(auth), std::move(settings),
                                                     std::move(url), std::move(tls));
}

} // namespace

api_client::api_client(const executor_type& ex, token_source auth, api_client_settings settings)
    : impl_(make_impl(ex, std::move(auth), std::move(settings)))
{
    owner_ = std::make_shared<detail::api_client_owner>(impl_);
}

api_client::api_client(token_source auth, api_client_settings settings)
    : api_client(auth.get_executor(), auth, std::move(settings))
{
}

const api_client::executor_type& api_client::get_executor() const noexcept
{
    return impl_->executor;
}

const token_source& api_client::auth() const noexcept
{
    return impl_->auth;
}

void api_client::shutdown()
{
    impl_->shutdown();
}

api_client_stats api_client::stats() const
{
    return impl_->stats();
}

const api_client_settings& api_client::settings() const noexcept
{
    return impl_->settings;
}

} // namespace stampede
