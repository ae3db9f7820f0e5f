// Every emulator fault, each met in three situations: a cold start with fifty waiters, a
// refresh ahead of expiry while a valid token is cached, and an API request whose revoked
// token makes the API client fetch a new one.
//
// Each cell checks its own outcome: the error and its class, a success after retries, or
// the old token served. It also checks that every waiter completes and that the token
// requests the servers saw stay within the rate limiter's bound for the elapsed time.
// Last, it checks that the token source's counters add up and that no handler is left
// pending after shutdown.
//
// A retryable fault runs twice: once (the first response is faulted, the retry succeeds)
// and always (every response is faulted until the fetch gives up). Certificate faults need the
// token URL to reach a different server mid-test, so those cells point the token source at
// a TCP forwarder on loopback that the test switches from the emulator to a second server.
//
// Short timeouts, backoff delays and token lifetimes keep the matrix fast. A watchdog
// timer bounds every wait, so a cell that hangs fails instead of blocking the run.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE fault_matrix
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "../support/emulator_fixture.hpp"

#include <stampede/api_client.hpp>
#include <stampede/error.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace data = boost::unit_test::data;
namespace http = boost::beast::http;

using asio::ip::tcp;
using boost::system::error_code;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using stampede::test::running_emulator;
using namespace std::chrono_literals;

namespace {

constexpr auto as_awaitable = asio::as_tuple(asio::use_awaitable);

constexpr int cold_start_waiters = 50;
constexpr int refresh_callers = 50;
constexpr int api_request_count = 8;
constexpr unsigned max_attempts = 2;
constexpr milliseconds poll_interval{20};
constexpr milliseconds default_lifetime = std::chrono::hours(2);
constexpr milliseconds max_lifetime = std::chrono::hours(24 * 7);
constexpr milliseconds read_timeout{400};

// The emulator states lifetimes in whole seconds, so a second is the shortest lifetime
// that the client sees as it is.
constexpr milliseconds shortest_lifetime{1000};
constexpr std::string_view client_secret = "test-secret";

// The token source's limiter: at most capacity + floor(W / refill_interval) requests in any
// window of length W.
const stampede::rate_limit_settings token_limit{4, milliseconds(100)};

// A cell that runs longer than this is reported as hanging and shut down.
constexpr auto hang_limit = 30s;

// After shutdown, the io_context must run out of work within this time.
constexpr auto drain_limit = 10s;

//
// The fault table
//

enum class fault_class {
    retryable, // a fetch that meets it retries
    permanent, // a fetch that meets it fails at once, and the error is remembered
    accepted,  // the response is odd but usable, so the fetch succeeds at once
};

enum class certificate_fault { none, untrusted, wrong_host };

enum class fault_mode {
    once,   // the first response is faulted, later ones are normal
    always, // every response is faulted
};

struct fault_case {
    // The emulator's script item, or a description for certificate faults.
    std::string name;
    fault_class kind = fault_class::retryable;

    // The error a fetch ends with when the fault ends it. Empty: only its class is checked.
    error_code error{};

    // `diagnostics::http_status()` with that error: the status of the response whenever its
    // status line arrived, even if its body did not, and 0 when none did. Empty: not checked.
    std::optional<unsigned> http_status{};

    // Accepted faults: the lifetime the client must give the token. Empty: not checked.
    std::optional<milliseconds> lifetime{};

    // The smallest gap the server requests (`Retry-After`) after each faulted response.
    milliseconds retry_after{0};

    certificate_fault certificate = certificate_fault::none;

    // Lifetime of the token that a refresh-ahead cell in `once` mode refreshes. The refresh
    // starts at 45 % of it and the token goes stale at 90 %, so the retry must fit between.
    milliseconds recovery_lifetime = shortest_lifetime;

    // A part of `diagnostics::client_message()` with the error. Empty: not checked.
    std::string client_message_part{};
};

std::vector<fault_case> fault_cases()
{
    using stampede::client_errc;
    using stampede::make_http_error;
    using stampede::oauth_errc;
    const auto retryable = fault_class::retryable;
    const auto permanent = fault_class::permanent;
    const auto accepted = fault_class::accepted;

    return {
        {.name = "5xx-html:503", .kind = retryable, .error = make_http_error(503),
         .http_status = 503u},
        // The emulator's 429 body is {"error":"rate_limit_exceeded",...}.
        {.name = "429", .kind = retryable, .error = oauth_errc::rate_limit_exceeded, .http_status = 429u},
        {.name = "429-seconds:1", .kind = retryable, .error = oauth_errc::rate_limit_exceeded,
         .http_status = 429u, .retry_after = 1000ms, .recovery_lifetime = 4000ms},
        // An HTTP date has one-second resolution, so "2 s ahead" requests at least 1 s.
        {.name = "429-date:2", .kind = retryable, .error = oauth_errc::rate_limit_exceeded,
         .http_status = 429u, .retry_after = 1000ms, .recovery_lifetime = 6000ms},
        {.name = "reset", .kind = retryable, .error = asio::error::connection_reset,
         .http_status = 0u},
        {.name = "close-mid-body", .kind = retryable, .http_status = 200u},
        {.name = "stall", .kind = retryable, .error = client_errc::read_timeout,
         .http_status = 0u, .recovery_lifetime = 3000ms},
        {.name = "slow:150", .kind = accepted},
        {.name = "garbage-json", .kind = retryable, .error = client_errc::malformed_response,
         .http_status = 200u},
        {.name = "truncated-json", .kind = retryable, .error = client_errc::malformed_response,
         .http_status = 200u},
        {.name = "html-200", .kind = retryable, .error = client_errc::malformed_response,
         .http_status = 200u},
        {.name = "error-200", .kind = permanent, .error = oauth_errc::invalid_client,
         .http_status = 200u},
        {.name = "oversize:100000", .kind = permanent, .error = client_errc::body_too_large,
         .http_status = 200u},
        {.name = "expires-in:0", .kind = retryable, .error = client_errc::invalid_expires_in,
         .http_status = 200u},
        {.name = "expires-in:-5", .kind = retryable, .error = client_errc::invalid_expires_in,
         .http_status = 200u},
        {.name = "expires-in:1e12", .kind = accepted, .lifetime = max_lifetime},
        {.name = "expires-in:3599.5", .kind = accepted, .lifetime = 3599500ms},
        {.name = "expires-in:\"3600\"", .kind = accepted, .lifetime = 3600000ms},
        {.name = "expires-in:null", .kind = accepted, .lifetime = default_lifetime},
        {.name = "expires-in-missing", .kind = accepted, .lifetime = default_lifetime},
        {.name = "no-access-token", .kind = retryable, .error = client_errc::missing_access_token,
         .http_status = 200u},
        {.name = "token-type:mac", .kind = permanent, .error = client_errc::unsupported_token_type,
         .http_status = 200u},
        // RFC 6749 (section 5.1) makes token_type case-insensitive.
        {.name = "token-type:bearer", .kind = accepted},
        {.name = "untrusted certificate", .kind = permanent,
         .error = client_errc::certificate_verification_failed, .http_status = 0u,
         .certificate = certificate_fault::untrusted},
        {.name = "certificate for another host", .kind = permanent,
         .error = client_errc::certificate_verification_failed, .http_status = 0u,
         .certificate = certificate_fault::wrong_host, .client_message_part = "mismatch"},
    };
}

// One fault in one mode. Each test case runs every cell in its situation.
struct fault_cell {
    fault_case fault;
    fault_mode mode = fault_mode::once;

    bool ends_in_error() const
    {
        return fault.kind == fault_class::permanent ||
               (fault.kind == fault_class::retryable && mode == fault_mode::always);
    }

    // The emulator script that applies the fault.
    std::string script() const { return mode == fault_mode::always ? fault.name + "*" : fault.name; }

    // Requests of one fetch that meets the fault, as the token source counts them.
    unsigned requests_per_fetch() const
    {
        switch (fault.kind) {
        case fault_class::retryable:
            return mode == fault_mode::always ? max_attempts : 2;
        case fault_class::permanent:
        case fault_class::accepted:
            break;
        }
        return 1;
    }

    // Those requests as the emulator counts them: a failed TLS handshake sends none.
    unsigned emulator_requests_per_fetch() const
    {
        return fault.certificate == certificate_fault::none ? requests_per_fetch() : 0;
    }

    // Lifetime of the first token in the refresh-ahead situation.
    milliseconds refresh_lifetime() const
    {
        const bool recovers = fault.kind == fault_class::retryable && mode == fault_mode::once;
        return recovers ? fault.recovery_lifetime : shortest_lifetime;
    }

    stampede::condition error_condition() const
    {
        return fault.kind == fault_class::permanent ? stampede::condition::permanent
                                                    : stampede::condition::retryable;
    }
};

std::ostream& operator<<(std::ostream& os, const fault_cell& cell)
{
    if (cell.fault.kind != fault_class::retryable) {
        return os << cell.fault.name;
    }
    return os << cell.fault.name << (cell.mode == fault_mode::always ? " always" : " once");
}

std::vector<fault_cell> fault_cells()
{
    std::vector<fault_cell> cells;
    for (const fault_case& fault : fault_cases()) {
        cells.push_back({fault, fault_mode::once});
        if (fault.kind == fault_class::retryable) {
            cells.push_back({fault, fault_mode::always});
        }
    }
    return cells;
}

//
// A switchable TCP forwarder
//

// Forwards TCP connections from a port on 127.0.0.1 to a backend port on 127.0.0.1, on its
// own thread. `switch_to` changes the backend and closes the forwarded connections, so the
// client's next request connects to the new backend under the same URL.
class tcp_forwarder {
public:
    explicit tcp_forwarder(unsigned short backend_port)
        : backend_port_(backend_port)
    {
        acceptor_.open(tcp::v4());
        acceptor_.set_option(tcp::acceptor::reuse_address(true));
        acceptor_.bind(tcp::endpoint(asio::ip::address_v4::loopback(), 0));
        acceptor_.listen();
        port_ = acceptor_.local_endpoint().port();
        asio::co_spawn(io_, accept_loop(), asio::detached);
        thread_ = std::thread([this] { io_.run(); });
    }

    ~tcp_forwarder()
    {
        io_.stop();
        thread_.join();
    }

    tcp_forwarder(const tcp_forwarder&) = delete;
    tcp_forwarder& operator=(const tcp_forwarder&) = delete;

    unsigned short port() const { return port_; }

    // Sends new connections to `backend_port` and closes the open ones. Returns once done.
    void switch_to(unsigned short backend_port)
    {
        std::promise<void> switched;
        asio::post(io_, [&] {
            backend_port_ = backend_port;
            for (const auto& weak : tunnels_) {
                if (auto tunnel = weak.lock()) {
                    tunnel->close();
                }
            }
            tunnels_.clear();
            switched.set_value();
        });
        switched.get_future().wait();
    }

private:
    struct tunnel {
        tcp::socket client;
        tcp::socket server;

        void close()
        {
            error_code ignored;
            client.close(ignored);
            server.close(ignored);
        }
    };

    asio::awaitable<void> accept_loop()
    {
        for (;;) {
            auto [accept_ec, socket] = co_await acceptor_.async_accept(as_awaitable);
            if (accept_ec) {
                co_return;
            }
            auto forwarded = std::make_shared<tunnel>(std::move(socket), tcp::socket(io_));
            const tcp::endpoint backend(asio::ip::address_v4::loopback(), backend_port_);
            auto [connect_ec] = co_await forwarded->server.async_connect(backend, as_awaitable);
            if (connect_ec) {
                forwarded->close();
                continue;
            }
            tunnels_.push_back(forwarded);
            asio::co_spawn(io_, pump(forwarded, forwarded->client, forwarded->server),
                           asio::detached);
            asio::co_spawn(io_, pump(forwarded, forwarded->server, forwarded->client),
                           asio::detached);
        }
    }

    // Copies bytes from `from` to `to` until either side ends. A reset on one side is passed
    // on as a reset (SO_LINGER 0) on the other.
    static asio::awaitable<void> pump(std::shared_ptr<tunnel> forwarded, tcp::socket& from,
                                      tcp::socket& to)
    {
        std::array<char, 16 * 1024> buffer;
        for (;;) {
            auto [read_ec, size] = co_await from.async_read_some(asio::buffer(buffer), as_awaitable);
            if (read_ec) {
                if (read_ec != asio::error::eof) {
                    error_code ignored;
                    to.set_option(tcp::socket::linger(true, 0), ignored);
                }
                forwarded->close();
                co_return;
            }
            auto [write_ec, written] =
                co_await asio::async_write(to, asio::buffer(buffer.data(), size), as_awaitable);
            if (write_ec) {
                forwarded->close();
                co_return;
            }
        }
    }

    asio::io_context io_;
    tcp::acceptor acceptor_{io_};
    unsigned short port_ = 0;
    unsigned short backend_port_; // used on the forwarder's thread once it runs
    std::vector<std::weak_ptr<tunnel>> tunnels_;
    std::thread thread_;
};

//
// The servers of one cell
//

stampede::emulator::options emulator_options(milliseconds token_lifetime)
{
    stampede::emulator::options opts;
    opts.token_lifetime = token_lifetime;
    // The servers' own limits stay out of the way: the cells check the client's limiter.
    opts.token_rate = {100000, std::chrono::seconds(60)};
    opts.api_rate = {100000, std::chrono::seconds(900)};
    return opts;
}

// The emulator of one cell, and for a certificate fault a second server with the wrong
// certificate and a forwarder that the token URL points at. `start_fault` applies the
// fault: it sets the emulator's fault script, or switches the forwarder to the second
// server.
class cell_servers {
public:
    cell_servers(const fault_cell& cell, milliseconds token_lifetime)
        : cell_(cell)
        , emulator_(emulator_options(token_lifetime))
        , trust_file_(emulator_.ca_file())
    {
        if (cell.fault.certificate == certificate_fault::none) {
            return;
        }
        auto impostor_options = emulator_options(token_lifetime);
        if (cell.fault.certificate == certificate_fault::wrong_host) {
            impostor_options.cert_host = "wrong.example";
        }
        impostor_.emplace(impostor_options);
        forwarder_.emplace(emulator_.server().port());
        if (cell.fault.certificate == certificate_fault::wrong_host) {
            // The client trusts both certificates, so only the host name check can fail.
            trust_file_ = (emulator_.dir() / "trust.pem").string();
            std::ofstream(trust_file_) << emulator_.server().certificate_pem()
                                       << impostor_->server().certificate_pem();
        }
    }

    stampede::emulator::server& emulator() { return emulator_.server(); }

    std::string token_url()
    {
        if (forwarder_) {
            return "https://127.0.0.1:" + std::to_string(forwarder_->port()) + "/oauth/token";
        }
        return emulator_.server().token_url();
    }

    // CA file of the token source.
    const std::string& trust_file() const { return trust_file_; }

    // CA file of the API client, which always talks to the emulator directly.
    const std::string& api_ca_file() const { return emulator_.ca_file(); }

    void start_fault()
    {
        if (forwarder_) {
            forwarder_->switch_to(impostor_->server().port());
        } else {
            emulator_.server().set_fault_script(cell_.script());
        }
    }

    // Token requests at the emulator.
    std::uint64_t emulator_token_requests() { return emulator_.server().get_stats().token_requests; }

    // The attempts the servers saw: token requests at the emulator, plus the connections to
    // the second server, where each attempt ends in its failed handshake.
    std::uint64_t attempts_seen()
    {
        std::uint64_t seen = emulator_token_requests();
        if (impostor_) {
            seen += impostor_->server().get_stats().connections_accepted;
        }
        return seen;
    }

    std::vector<std::int64_t> token_request_times()
    {
        return emulator_.server().get_stats().token_request_times_ms;
    }

private:
    const fault_cell& cell_;
    running_emulator emulator_;
    std::optional<running_emulator> impostor_;
    std::optional<tcp_forwarder> forwarder_;
    std::string trust_file_;
};

// Set STAMPEDE_TEST_LOG to see the SDK's records while a cell runs.
stampede::logger test_logger()
{
    stampede::logger logger;
    if (std::getenv("STAMPEDE_TEST_LOG") != nullptr) {
        logger.level = stampede::log_level::debug;
        logger.sink = [](stampede::log_level, std::string_view line) { std::clog << line << '\n'; };
    }
    return logger;
}

stampede::token_source_settings source_settings(cell_servers& servers)
{
    stampede::token_source_settings s;
    s.client_id = "test-client";
    s.client_secret = stampede::secret_string(std::string(client_secret));
    s.token_url = servers.token_url();
    s.transport.ca_file = servers.trust_file();
    s.transport.read_timeout = read_timeout;
    s.transport.request_timeout = 1000ms;
    s.backoff.initial_delay = 20ms;
    s.backoff.min_delay = 10ms;
    s.backoff.max_delay = 50ms;
    s.backoff.max_attempts = max_attempts;
    s.backoff.max_elapsed = 20s;
    // Longer than any lifetime here, so the refresh starts halfway through the usable life.
    s.refresh_ahead = 60s;
    s.default_lifetime = default_lifetime;
    s.max_lifetime = max_lifetime;
    s.rate_limit = token_limit;
    // Longer than a refresh-ahead cell, so a permanent error stays remembered throughout.
    s.permanent_error_cooldown = 10s;
    s.logger = test_logger();
    return s;
}

stampede::api_client_settings client_settings(cell_servers& servers)
{
    stampede::api_client_settings s;
    s.base_url = servers.emulator().base_url();
    s.transport.ca_file = servers.api_ca_file();
    s.rate_limit = {1000, 1ms};
    s.backoff.initial_delay = 10ms;
    s.backoff.min_delay = 5ms;
    s.backoff.max_delay = 50ms;
    s.max_connections = 4;
    s.logger = test_logger();
    return s;
}

//
// Running and checking a cell
//

// Runs `ctx` until `done()` returns true or `hang_limit` passes, and returns the last
// `done()`. The watchdog timer turns a hang into a failed cell.
bool run_until(asio::io_context& ctx, const std::function<bool()>& done)
{
    bool expired = false;
    bool watchdog_ran = false;
    asio::steady_timer watchdog(ctx, hang_limit);
    watchdog.async_wait([&](error_code ec) {
        expired = !ec;
        watchdog_ran = true;
    });
    ctx.restart();
    while (!done() && !expired) {
        ctx.run_one();
    }
    watchdog.cancel();
    while (!watchdog_ran && ctx.run_one() > 0) {
    }
    return done();
}

// Shuts the API client and the token source down, then checks that the io_context runs out
// of work: a handler left pending would keep `io_context::run()` from returning.
void shut_down_and_drain(asio::io_context& ctx, stampede::token_source& source,
                         stampede::api_client* client)
{
    if (client != nullptr) {
        client->shutdown();
    }
    source.shutdown();
    ctx.restart();
    ctx.run_for(drain_limit);
    BOOST_TEST(ctx.stopped(), "work is still pending on the io_context after shutdown");
}

// Checks that the attempts the servers saw since the source was created stay within the
// token bucket's bound for that time.
void check_within_limiter(std::uint64_t attempts, steady_clock::time_point created)
{
    const auto elapsed = steady_clock::now() - created;
    const auto bound = token_limit.capacity +
                       static_cast<std::uint64_t>(elapsed / token_limit.refill_interval);
    BOOST_TEST(attempts <= bound, "the servers saw " << attempts << " token requests in "
                                                     << std::chrono::duration_cast<milliseconds>(elapsed).count()
                                                     << " ms, more than the limiter allows");
}

// Checks that each request after a faulted 429 came at least its `Retry-After` later.
// `first_faulted` indexes the first faulted request in the arrival times.
void check_retry_after_gaps(const fault_cell& cell, const std::vector<std::int64_t>& times,
                            std::size_t first_faulted)
{
    if (cell.fault.retry_after == 0ms) {
        return;
    }
    const std::size_t last_faulted = cell.mode == fault_mode::always ? times.size() : first_faulted + 1;
    for (std::size_t i = first_faulted; i + 1 < times.size() && i < last_faulted; ++i) {
        BOOST_TEST(times[i + 1] - times[i] >= cell.fault.retry_after.count(),
                   "token request " << i + 1 << " followed a 429 after " << times[i + 1] - times[i]
                                    << " ms");
    }
}

// Checks that the counters count each call for a token once: served from the cache without
// waiting, waiting for a fetch, or failed at once with a remembered error.
void check_each_call_counted_once(const stampede::token_source_stats& stats, int calls)
{
    BOOST_TEST(stats.cache_hits + stats.waiters + stats.cooldown_rejections == std::uint64_t(calls),
               "of " << calls << " calls, the counters show " << stats.cache_hits
                     << " cache hits, " << stats.waiters << " waiters and "
                     << stats.cooldown_rejections << " cool-down rejections");
}

// The outcome of one call for a token.
struct token_result {
    error_code ec;
    stampede::diagnostics diag;
    stampede::access_token token;
    std::string unexpected_exception;
};

// Checks a failure against the cell's expected error.
void check_failure(const fault_cell& cell, const error_code& ec, const stampede::diagnostics& diag)
{
    BOOST_TEST_MESSAGE("first outcome: " << ec.message() << ", HTTP status " << diag.http_status());
    BOOST_TEST(ec.failed(), "the call succeeded");
    if (cell.fault.error) {
        BOOST_TEST(ec == cell.fault.error, ec.message());
    }
    BOOST_TEST(ec == cell.error_condition(), ec.message());
    if (cell.fault.error == stampede::client_errc::read_timeout) {
        BOOST_TEST(ec == stampede::condition::timeout);
    }
    if (cell.fault.http_status) {
        BOOST_TEST(diag.http_status() == *cell.fault.http_status);
    }
    BOOST_TEST(!diag.client_message().empty());
    if (!cell.fault.client_message_part.empty()) {
        BOOST_TEST(diag.client_message().find(cell.fault.client_message_part) != std::string::npos,
                   diag.client_message());
    }
    BOOST_TEST(diag.server_message().find(client_secret) == std::string::npos);
}

std::chrono::milliseconds remaining(const stampede::access_token& token)
{
    return std::chrono::duration_cast<milliseconds>(token.expires_at() - steady_clock::now());
}

// Checks the lifetime the client gave a token from an accepted odd response.
void check_lifetime(const fault_cell& cell, const stampede::access_token& token)
{
    if (!cell.fault.lifetime) {
        return;
    }
    BOOST_TEST(remaining(token) <= *cell.fault.lifetime);
    BOOST_TEST(remaining(token) > *cell.fault.lifetime - 60s);
}

// Checks that every call failed alike, with the cell's error.
void check_all_failed(const fault_cell& cell, const std::vector<token_result>& results)
{
    const token_result& first = results.front();
    BOOST_TEST(first.unexpected_exception.empty(), first.unexpected_exception);
    check_failure(cell, first.ec, first.diag);
    const auto alike = std::count_if(results.begin(), results.end(), [&](const token_result& r) {
        return r.ec == first.ec && !r.token;
    });
    BOOST_TEST(alike == static_cast<std::ptrdiff_t>(results.size()),
               alike << " of " << results.size() << " calls failed with " << first.ec.message());
}

// Checks that every call got the same usable token. Never prints a token.
void check_all_got_one_token(const fault_cell& cell, const std::vector<token_result>& results)
{
    std::set<std::string> values;
    int failed = 0;
    for (const token_result& r : results) {
        if (r.ec || !r.token || r.token.value().empty()) {
            ++failed;
            continue;
        }
        values.emplace(r.token.value());
    }
    BOOST_TEST(failed == 0, failed << " calls failed, the first with "
                                   << results.front().ec.message() << " "
                                   << results.front().unexpected_exception);
    BOOST_TEST(values.size() == 1u, "the calls got " << values.size() << " different tokens");
    if (results.front().token) {
        check_lifetime(cell, results.front().token);
    }
}

// Calls `token()` once and stores the outcome.
asio::awaitable<void> call_token(stampede::token_source& source, token_result& out,
                                 int& completed)
{
    try {
        auto token = co_await source.token();
        out.token = token.to_owned();
    } catch (const stampede::error_with_diagnostics& e) {
        out.ec = e.code();
        out.diag = e.get_diagnostics();
    } catch (const std::exception& e) {
        out.ec = make_error_code(boost::system::errc::state_not_recoverable);
        out.unexpected_exception = e.what();
    }
    ++completed;
}

// Fetches the first token with no fault applied.
stampede::access_token first_token(asio::io_context& ctx, stampede::token_source& source)
{
    token_result first;
    int completed = 0;
    asio::co_spawn(ctx, call_token(source, first, completed), asio::detached);
    BOOST_TEST_REQUIRE(run_until(ctx, [&] { return completed == 1; }));
    BOOST_TEST_REQUIRE(!first.ec, first.ec.message());
    return first.token;
}

// The calls of one caller that polls `token()` while a refresh meets the fault.
struct poll_result {
    int calls = 0;
    int old_served = 0;              // calls that returned the old token
    int old_served_during_fault = 0; // of those, calls after a refresh request had failed
    int old_served_after_expiry = 0; // of those, calls made after the old token expired
    token_result last;               // the call that ended the polling: a new token or an error
};

// Calls `token()` every `poll_interval` until it returns a token other than `old` or fails.
asio::awaitable<void> poll_until_change(stampede::token_source& source,
                                        const stampede::access_token& old, poll_result& out,
                                        int& finished)
{
    asio::steady_timer pause(co_await asio::this_coro::executor);
    for (bool changed = false; !changed;) {
        const auto called_at = steady_clock::now();
        ++out.calls;
        try {
            auto token = co_await source.token();
            if (token.value() != old.value()) {
                out.last.token = token.to_owned();
                changed = true;
            } else {
                ++out.old_served;
                if (called_at >= old.expires_at()) {
                    ++out.old_served_after_expiry;
                }
                const auto stats = source.stats();
                if (stats.retryable_failures + stats.permanent_failures > 0) {
                    ++out.old_served_during_fault;
                }
            }
        } catch (const stampede::error_with_diagnostics& e) {
            out.last.ec = e.code();
            out.last.diag = e.get_diagnostics();
            changed = true;
        } catch (const std::exception& e) {
            out.last.ec = make_error_code(boost::system::errc::state_not_recoverable);
            out.last.unexpected_exception = e.what();
            changed = true;
        }
        if (!changed) {
            pause.expires_after(poll_interval);
            co_await pause.async_wait(as_awaitable);
        }
    }
    ++finished;
}

// The outcome of one API request.
struct api_result {
    error_code ec;
    unsigned status = 0;
    stampede::diagnostics diag;
};

} // namespace

//
// Situation 1: a cold start, fifty callers waiting for the first token
//

BOOST_DATA_TEST_CASE(cold_start_fifty_waiters, data::make(fault_cells()), cell)
{
    cell_servers servers(cell, std::chrono::hours(24));
    std::vector<token_result> results(cold_start_waiters);
    int completed = 0;
    asio::io_context ctx;
    const auto created = steady_clock::now();
    stampede::token_source source(ctx, source_settings(servers));
    servers.start_fault();

    for (token_result& result : results) {
        asio::co_spawn(ctx, call_token(source, result, completed), asio::detached);
    }
    const bool finished = run_until(ctx, [&] { return completed == cold_start_waiters; });
    BOOST_TEST(finished, completed << " of " << cold_start_waiters << " waiters completed");

    const auto stats = source.stats();
    BOOST_TEST(stats.waiters == std::uint64_t(cold_start_waiters));
    check_each_call_counted_once(stats, cold_start_waiters);
    BOOST_TEST(stats.coalesced_waiters == std::uint64_t(cold_start_waiters - 1));
    BOOST_TEST(stats.cancelled_waiters == 0u);
    BOOST_TEST(stats.requests == cell.requests_per_fetch());
    BOOST_TEST(servers.emulator_token_requests() == cell.emulator_requests_per_fetch());
    check_within_limiter(servers.attempts_seen(), created);
    check_retry_after_gaps(cell, servers.token_request_times(), 0);

    if (cell.ends_in_error()) {
        check_all_failed(cell, results);
        BOOST_TEST(stats.tokens_fetched == 0u);
    } else {
        check_all_got_one_token(cell, results);
        BOOST_TEST(stats.tokens_fetched == 1u);
        BOOST_TEST(stats.retries == cell.requests_per_fetch() - 1);
    }

    if (cell.fault.kind == fault_class::permanent) {
        // Within the cool-down a new caller fails at once, without a request.
        std::vector<token_result> late(1);
        int late_completed = 0;
        asio::co_spawn(ctx, call_token(source, late.front(), late_completed), asio::detached);
        BOOST_TEST(run_until(ctx, [&] { return late_completed == 1; }));
        check_all_failed(cell, late);
        BOOST_TEST(source.stats().cooldown_rejections == 1u);
        BOOST_TEST(source.stats().requests == stats.requests);
    }

    shut_down_and_drain(ctx, source, nullptr);
}

//
// Situation 2: a refresh ahead of expiry meets the fault while callers poll
//

BOOST_DATA_TEST_CASE(refresh_ahead_keeps_old_token, data::make(fault_cells()), cell)
{
    cell_servers servers(cell, cell.refresh_lifetime());
    std::vector<poll_result> callers(refresh_callers);
    int finished = 0;
    asio::io_context ctx;
    const auto created = steady_clock::now();
    stampede::token_source source(ctx, source_settings(servers));
    const stampede::access_token old = first_token(ctx, source);
    servers.start_fault();

    for (poll_result& caller : callers) {
        asio::co_spawn(ctx, poll_until_change(source, old, caller, finished), asio::detached);
    }
    const bool all_finished = run_until(ctx, [&] { return finished == refresh_callers; });
    BOOST_TEST(all_finished, finished << " of " << refresh_callers << " callers finished");

    int calls = 1; // the call for the first token
    int old_served = 0;
    int old_served_during_fault = 0;
    int old_served_after_expiry = 0;
    std::vector<token_result> outcomes;
    for (const poll_result& caller : callers) {
        calls += caller.calls;
        old_served += caller.old_served;
        old_served_during_fault += caller.old_served_during_fault;
        old_served_after_expiry += caller.old_served_after_expiry;
        outcomes.push_back(caller.last);
    }
    BOOST_TEST(old_served >= refresh_callers, "the old token was served " << old_served << " times");
    BOOST_TEST(old_served_after_expiry == 0, "the old token was served "
                                                 << old_served_after_expiry
                                                 << " times after it expired");

    const auto stats = source.stats();
    check_each_call_counted_once(stats, calls);
    BOOST_TEST(stats.refreshes_ahead >= 1u);
    BOOST_TEST(stats.cancelled_waiters == 0u);
    if (cell.fault.certificate == certificate_fault::none) {
        BOOST_TEST(stats.requests == servers.emulator_token_requests());
    }
    check_within_limiter(servers.attempts_seen(), created);
    check_retry_after_gaps(cell, servers.token_request_times(), 1);

    if (!cell.ends_in_error()) {
        // The refresh recovered before the old token went stale, so no caller waited.
        check_all_got_one_token(cell, outcomes);
        BOOST_TEST((outcomes.front().token.value() != old.value()), "the new token is the old one");
        if (cell.fault.retry_after > 0ms) {
            // The retry waits a second or more, so callers come during the fault.
            BOOST_TEST(old_served_during_fault > 0);
        }
        BOOST_TEST(stats.waiters == 1u);
        BOOST_TEST(stats.refreshes_ahead == 1u);
        BOOST_TEST(stats.tokens_fetched == 2u);
        BOOST_TEST(stats.requests == 1 + cell.requests_per_fetch());
    } else if (cell.fault.kind == fault_class::permanent) {
        // The old token is served until it goes stale, then the remembered error.
        check_all_failed(cell, outcomes);
        BOOST_TEST(old_served_during_fault > 0);
        BOOST_TEST(stats.waiters == 1u);
        BOOST_TEST(stats.cooldown_rejections == std::uint64_t(refresh_callers));
        BOOST_TEST(stats.permanent_failures == 1u);
        BOOST_TEST(stats.tokens_fetched == 1u);
        BOOST_TEST(stats.requests == 2u);
        BOOST_TEST(servers.emulator_token_requests() == 1u + cell.emulator_requests_per_fetch());
    } else {
        // The refresh keeps failing, so the old token is served until it goes stale. Then
        // each caller waits once for the last attempts and gets their error.
        check_all_failed(cell, outcomes);
        BOOST_TEST(old_served_during_fault > 0);
        BOOST_TEST(stats.waiters == 1u + refresh_callers);
        BOOST_TEST(stats.tokens_fetched == 1u);
        BOOST_TEST(stats.requests >= 1u + max_attempts);
    }

    shut_down_and_drain(ctx, source, nullptr);
}

//
// Situation 3: API requests rejected with 401, and the token fetch after invalidation
// meets the fault
//

BOOST_DATA_TEST_CASE(api_401_token_fetch_meets_fault, data::make(fault_cells()), cell)
{
    cell_servers servers(cell, std::chrono::hours(24));
    std::vector<api_result> results(api_request_count);
    int completed = 0;
    asio::io_context ctx;
    const auto created = steady_clock::now();
    stampede::token_source source(ctx, source_settings(servers));
    stampede::api_client client(ctx.get_executor(), source, client_settings(servers));
    const stampede::access_token revoked = first_token(ctx, source);
    BOOST_TEST_REQUIRE(servers.emulator().revoke(revoked.value()));
    servers.start_fault();

    for (api_result& result : results) {
        client.async_request(http::verb::get, "/v1/guests?limit=1", std::nullopt, {}, result.diag,
                             [&result, &completed](error_code ec, stampede::api_response response) {
                                 result.ec = ec;
                                 result.status = response.status;
                                 ++completed;
                             });
    }
    const bool finished = run_until(ctx, [&] { return completed == api_request_count; });
    BOOST_TEST(finished, completed << " of " << api_request_count << " API requests completed");

    const auto api_stats = servers.emulator().get_stats();
    const auto stats = source.stats();
    BOOST_TEST(api_stats.api_unauthorized == std::uint64_t(api_request_count));
    BOOST_TEST(stats.invalidations == 1u);
    BOOST_TEST(stats.cancelled_waiters == 0u);
    BOOST_TEST(client.stats().token_retries == std::uint64_t(api_request_count));
    BOOST_TEST(client.stats().requests_sent == api_stats.api_requests);
    if (cell.fault.certificate == certificate_fault::none) {
        BOOST_TEST(stats.requests == servers.emulator_token_requests());
    }
    check_within_limiter(servers.attempts_seen(), created);
    check_retry_after_gaps(cell, servers.token_request_times(), 1);

    if (!cell.ends_in_error()) {
        const auto succeeded = std::count_if(results.begin(), results.end(), [](const api_result& r) {
            return !r.ec && r.status == 200;
        });
        BOOST_TEST(succeeded == api_request_count,
                   succeeded << " of " << api_request_count << " requests succeeded, the first ended with "
                             << results.front().ec.message());
        BOOST_TEST(api_stats.api_requests == 2u * api_request_count);
        BOOST_TEST(stats.tokens_fetched == 2u);
        BOOST_TEST(stats.requests == 1 + cell.requests_per_fetch());
    } else {
        check_failure(cell, results.front().ec, results.front().diag);
        const auto alike = std::count_if(results.begin(), results.end(), [&](const api_result& r) {
            return r.ec == results.front().ec;
        });
        BOOST_TEST(alike == api_request_count,
                   alike << " of " << api_request_count << " requests failed with "
                         << results.front().ec.message());
        // Each request was sent once, with the revoked token, because no new token came.
        BOOST_TEST(api_stats.api_requests == std::uint64_t(api_request_count));
        BOOST_TEST(stats.tokens_fetched == 1u);
        if (cell.fault.kind == fault_class::permanent) {
            BOOST_TEST(stats.requests == 2u);
            BOOST_TEST(stats.permanent_failures == 1u);
        } else {
            BOOST_TEST(stats.requests >= 1u + max_attempts);
        }
    }

    shut_down_and_drain(ctx, source, &client);
}
