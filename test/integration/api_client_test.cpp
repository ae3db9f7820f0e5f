// Integration tests of api_client and the guests resource against the in-process
// emulator over TLS on loopback: bearer tokens, the refresh-and-retry after 401, retries
// after 429 and 5xx, the API rate limiter, the connection pool, pagination and the
// guest conversions.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE api_client
#include <boost/test/unit_test.hpp>

#include <emulator.hpp>
#include <stampede/api_client.hpp>
#include <stampede/error.hpp>
#include <stampede/guests.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <thread>
#include <cstdlib>
#include <iostream>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

// Lets BOOST_TEST print the optional fields of the guest records.
namespace boost::test_tools::tt_detail {
template <class T>
struct print_log_value<std::optional<T>> {
    void operator()(std::ostream& os, const std::optional<T>& value)
    {
        if (value) {
            os << *value;
        } else {
            os << "(empty)";
        }
    }
};
} // namespace boost::test_tools::tt_detail

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
namespace emulator = stampede::emulator;

using boost::system::error_code;
using stampede::api_client;
using stampede::api_client_settings;
using stampede::api_response;
using stampede::client_errc;
using stampede::diagnostics;
using stampede::make_http_error;
using stampede::request_options;
using steady_clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// NOTE: the coroutines below start each operation whose arguments are class temporaries in
// a statement of their own and co_await the result in the next one. GCC 12 miscompiles
// class temporaries in a co_await expression (they are relocated bitwise into the frame),
// which corrupts strings passed by value.

constexpr auto as_awaitable = asio::as_tuple(asio::use_awaitable);

// A file name in the temporary directory, unique to this process and call, removed on exit.
class temp_file {
public:
    temp_file()
    {
        static std::atomic<int> counter{0};
        path_ = std::filesystem::temp_directory_path() /
                ("stampede-api-client-" + std::to_string(::getpid()) + "-" +
                 std::to_string(counter++) + ".pem");
    }
    ~temp_file()
    {
        std::error_code ignored;
        std::filesystem::remove(path_, ignored);
    }
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;

    std::string string() const { return path_.string(); }

private:
    std::filesystem::path path_;
};

// Log lines of the SDK, collected from any thread.
struct log_capture {
    std::mutex mutex;
    std::vector<std::string> lines;

    stampede::logger logger(stampede::log_level level = stampede::log_level::trace)
    {
        stampede::logger lg;
        lg.level = level;
        lg.sink = [this](stampede::log_level, std::string_view line) {
            std::lock_guard lock(mutex);
            lines.emplace_back(line);
            // Set STAMPEDE_TEST_LOG to see the SDK's records while a test runs.
            if (std::getenv("STAMPEDE_TEST_LOG") != nullptr) {
                std::clog << line << '\n';
            }
        };
        return lg;
    }

    std::vector<std::string> snapshot()
    {
        std::lock_guard lock(mutex);
        return lines;
    }
};

// Arrival times of /v1/ requests, from the emulator's log, which runs on its thread.
struct api_arrivals {
    std::mutex mutex;
    std::vector<steady_clock::time_point> times;

    void record(std::string_view line)
    {
        const auto space = line.find(' ');
        if (space != std::string_view::npos && line.substr(space + 1).starts_with("/v1/")) {
            std::lock_guard lock(mutex);
            times.push_back(steady_clock::now());
        }
    }

    std::vector<steady_clock::time_point> snapshot()
    {
        std::lock_guard lock(mutex);
        return times;
    }

    void clear()
    {
        std::lock_guard lock(mutex);
        times.clear();
    }
};

emulator::options default_emulator_options()
{
    emulator::options opts;
    // The emulator's API budget is set high, because these tests check the client's own
    // limiter.
    opts.api_rate = {100000, std::chrono::seconds(900)};
    return opts;
}

// An emulator on loopback, a token source and an io_context to run clients on.
struct api_env {
    explicit api_env(emulator::options opts = default_emulator_options())
        : server(start_server(std::move(opts)))
    {
    }

    std::unique_ptr<emulator::server> start_server(emulator::options opts)
    {
        opts.cert_out = cert_file.string();
        opts.logger = [this](std::string_view line) { arrivals.record(line); };
        auto started = std::make_unique<emulator::server>(std::move(opts));
        started->start();
        return started;
    }

    ~api_env() { server->stop(); }

    stampede::token_source_settings auth_settings()
    {
        stampede::token_source_settings s;
        s.client_id = "demo-client";
        s.client_secret = stampede::secret_string("demo-secret");
        s.token_url = server->token_url();
        s.transport.ca_file = cert_file.string();
        s.backoff.initial_delay = 10ms;
        s.backoff.min_delay = 5ms;
        s.backoff.max_delay = 50ms;
        s.logger = log.logger();
        return s;
    }

    api_client_settings client_settings()
    {
        api_client_settings s;
        s.base_url = server->base_url();
        s.transport.ca_file = cert_file.string();
        s.rate_limit = {1000, 1ms};
        s.backoff.initial_delay = 10ms;
        s.backoff.min_delay = 5ms;
        s.backoff.max_delay = 50ms;
        s.logger = log.logger();
        return s;
    }

    api_client make_client() { return make_client(client_settings()); }

    api_client make_client(api_client_settings settings)
    {
        return api_client(io.get_executor(), auth, std::move(settings));
    }

    // Runs the io_context until `done()` holds. `run()` would not return, because the
    // token source keeps a refresh timer pending.
    void run_until(const std::function<bool()>& done)
    {
        io.restart();
        while (!done()) {
            if (io.run_one() == 0) {
                BOOST_FAIL("io_context ran out of work before the condition held");
            }
        }
    }

    // Runs `body` as a coroutine on the io_context until it ends, and rethrows its
    // exception.
    void run(std::function<asio::awaitable<void>()> body)
    {
        bool finished = false;
        std::exception_ptr failure;
        asio::co_spawn(io, body(), [&](std::exception_ptr e) {
            failure = e;
            finished = true;
        });
        run_until([&] { return finished; });
        if (failure) {
            std::rethrow_exception(failure);
        }
    }

    // Returns the cached token, fetching one first if none is cached.
    stampede::access_token current_token()
    {
        stampede::access_token token;
        run([&]() -> asio::awaitable<void> {
            token = co_await auth.async_token(asio::use_awaitable);
        });
        return token;
    }

    emulator::stats stats() const { return server->get_stats(); }

    temp_file cert_file;
    api_arrivals arrivals;
    log_capture log;
    std::unique_ptr<emulator::server> server;
    asio::io_context io;
    stampede::token_source auth{io, auth_settings()};
};

asio::awaitable<void> sleep_for(steady_clock::duration duration)
{
    asio::steady_timer timer(co_await asio::this_coro::executor, duration);
    co_await timer.async_wait(asio::use_awaitable);
}

stampede::new_guest full_guest(std::string email)
{
    stampede::new_guest g;
    g.email = std::move(email);
    g.first = "Zoë";
    g.last = "O'Connor-Nakamura";
    g.phone = "+61 400 111 222";
    g.lat = -33.8688;
    g.lng = 151.2093;
    g.birth_day = 29;
    g.birth_month = 2;
    g.postcode = "2000";
    g.country = "AU";
    g.gender = "female";
    g.data_opt_in = true;
    g.sms_opt_in = true;
    g.email_opt_in = false;
    return g;
}

std::int64_t elapsed_ms(steady_clock::time_point from, steady_clock::time_point to)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
}

request_options json_options()
{
    request_options options;
    options.parse_json = true;
    return options;
}

request_options retry_anything_options()
{
    request_options options;
    options.retry_non_idempotent = true;
    return options;
}

stampede::guest_query query_cursor(std::string cursor)
{
    stampede::guest_query query;
    query.cursor = std::move(cursor);
    return query;
}

stampede::guest_query query_limit(unsigned limit)
{
    stampede::guest_query query;
    query.limit = limit;
    return query;
}

std::string lower(std::string text)
{
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return text;
}

} // namespace

BOOST_AUTO_TEST_SUITE(requests)

BOOST_AUTO_TEST_CASE(request_carries_current_token)
{
    api_env env;
    api_client client = env.make_client();

    env.run([&]() -> asio::awaitable<void> {
        auto [ec, response] = co_await client.async_get(
            "/v1/guests?limit=5", json_options(), as_awaitable);
        BOOST_TEST(!ec, ec.message());
        BOOST_TEST(response.status == 200u);
        const std::string content_type(response.headers[http::field::content_type]);
        BOOST_TEST(content_type.starts_with("application/json"));
        BOOST_TEST_REQUIRE(response.json().is_object());
        BOOST_TEST(response.json().at("data").as_array().size() == 5u);
    });

    const auto stats = env.stats();
    BOOST_TEST(stats.api_requests == 1u);
    BOOST_TEST(stats.api_unauthorized == 0u);
    BOOST_TEST(stats.token_requests == 1u);
    BOOST_TEST(client.stats().requests_sent == 1u);
    BOOST_TEST(client.stats().token_retries == 0u);
}

BOOST_AUTO_TEST_CASE(completion_runs_on_handler_executor)
{
    api_env env;
    api_client client = env.make_client();
    auto handler_strand = asio::make_strand(env.io);

    bool initiation_returned = false;
    bool completed = false;
    client.async_get("/v1/guests?limit=1",
                     asio::bind_executor(handler_strand, [&](error_code ec, api_response) {
                         BOOST_TEST(!ec, ec.message());
                         BOOST_TEST(initiation_returned);
                         BOOST_TEST(handler_strand.running_in_this_thread());
                         completed = true;
                     }));
    initiation_returned = true;
    env.run_until([&] { return completed; });
}

BOOST_AUTO_TEST_CASE(cancellations_racing_completions_on_two_threads)
{
    // Each caller runs on its own strand of a two-thread io_context and cancels its request
    // with a timer that fires around the time the 30 ms response arrives, so cancellations
    // race completions. Every request must complete exactly once; sanitizer builds also
    // check that a late cancellation touches no freed memory.
    auto opts = default_emulator_options();
    opts.api_fault_script = "slow:30*";
    api_env env(opts);
    auto client_settings = env.client_settings();
    client_settings.max_connections = 8;
    client_settings.logger = {};
    auto auth_settings = env.auth_settings();
    auth_settings.logger = {};
    stampede::token_source auth(env.io, auth_settings);
    api_client client(auth, client_settings);

    constexpr int requests = 400;
    std::atomic<int> finished{0};
    std::atomic<int> completions{0};
    for (int i = 0; i < requests; ++i) {
        asio::co_spawn(asio::make_strand(env.io), [&, i]() -> asio::awaitable<void> {
            using namespace asio::experimental::awaitable_operators;
            asio::steady_timer batch(co_await asio::this_coro::executor,
                                     std::chrono::milliseconds(100 * (i / 100)));
            co_await batch.async_wait(asio::use_awaitable);
            asio::steady_timer timer(co_await asio::this_coro::executor,
                                     std::chrono::microseconds((i * 7919) % 60000));
            auto request = client.async_get("/v1/guests?limit=1", as_awaitable);
            auto wait = timer.async_wait(as_awaitable);
            (void)co_await (std::move(request) || std::move(wait));
            ++completions;
            if (++finished == requests) {
                client.shutdown();
                auth.shutdown();
            }
        }, asio::detached);
    }
    std::thread second([&] { env.io.run(); });
    env.io.run();
    second.join();
    BOOST_TEST(completions.load() == requests);
}

BOOST_AUTO_TEST_CASE(error_keeps_server_text_in_diagnostics)
{
    api_env env;
    api_client client = env.make_client();
    stampede::guests guests(client);

    env.run([&]() -> asio::awaitable<void> {
        diagnostics diag;
        const std::string id = "no such guest?";
        auto lookup = guests.async_get(id, diag, as_awaitable);
        auto [ec, found] = co_await std::move(lookup);
        BOOST_TEST(ec == make_http_error(404));
        BOOST_TEST(diag.http_status() == 404u);
        BOOST_TEST(diag.server_error_code() == "not_found");
        // The id reached the single-guest route as one segment, its space and '?'
        // percent-encoded.
        BOOST_TEST(diag.server_message().find("no guest with id 'no such guest?'") !=
                       std::string::npos,
                   diag.server_message());
        BOOST_TEST(diag.client_message().find("HTTP 404") != std::string::npos);

        const stampede::error_with_diagnostics error(ec, diag);
        BOOST_TEST(std::string(error.what()).find("no guest") == std::string::npos);
    });

    env.run([&]() -> asio::awaitable<void> {
        try {
            const std::string id = "missing";
            auto lookup = guests.async_get(id, asio::use_awaitable);
            co_await std::move(lookup);
            BOOST_FAIL("a missing guest did not fail");
        } catch (const boost::system::system_error& e) {
            BOOST_TEST(e.code() == make_http_error(404));
            BOOST_TEST(std::string(e.what()).find("no guest") == std::string::npos);
        }
    });
    BOOST_TEST(env.stats().api_requests == 2u);
}

BOOST_AUTO_TEST_CASE(client_error_is_not_retried)
{
    api_env env;
    api_client client = env.make_client();

    env.run([&]() -> asio::awaitable<void> {
        diagnostics diag;
        json::object body;
        body["email"] = "a@example.com";
        auto request = client.async_request(http::verb::put, "/v1/guests", std::move(body), {},
                                            diag, as_awaitable);
        auto [ec, response] = co_await std::move(request);
        BOOST_TEST(ec == make_http_error(405));
        BOOST_TEST(response.status == 405u);
        BOOST_TEST(std::string(response.headers[http::field::allow]) == "GET, POST");
        BOOST_TEST(diag.server_message() == "use GET or POST on /v1/guests");
    });
    BOOST_TEST(env.stats().api_requests == 1u);
    BOOST_TEST(client.stats().retries == 0u);
}

BOOST_AUTO_TEST_CASE(malformed_json_is_reported)
{
    api_env env;
    api_client client = env.make_client();
    env.server->set_api_fault_script("garbage-json");

    env.run([&]() -> asio::awaitable<void> {
        diagnostics diag;
        auto [ec, response] =
            co_await client.async_request(http::verb::get, "/v1/guests", std::nullopt,
                                          json_options(), diag, as_awaitable);
        BOOST_TEST(ec == client_errc::malformed_response);
        BOOST_TEST(diag.server_message().find("this is not JSON") != std::string::npos);
        BOOST_TEST(diag.client_message().find("not valid JSON") != std::string::npos);
    });
    BOOST_TEST(env.stats().api_requests == 1u);
}

BOOST_AUTO_TEST_CASE(invalid_target_is_rejected)
{
    api_env env;
    api_client client = env.make_client();

    env.run([&]() -> asio::awaitable<void> {
        for (std::string_view target : {"", "v1/guests", "/v1/guests?search=a b", "https://x/"}) {
            auto [ec, response] = co_await client.async_get(target, as_awaitable);
            BOOST_TEST(ec == boost::system::errc::invalid_argument, target);
        }
    });
    env.run([&]() -> asio::awaitable<void> {
        auto [ec, response] = co_await client.async_request(http::verb::head, "/v1/guests",
                                                            std::nullopt, {}, as_awaitable);
        BOOST_TEST(ec == boost::system::errc::operation_not_supported);
    });
    BOOST_TEST(env.stats().api_requests == 0u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(token_rejection)

BOOST_AUTO_TEST_CASE(revoked_token_is_refreshed_once)
{
    api_env env;
    api_client client = env.make_client();
    const stampede::access_token first = env.current_token();
    BOOST_TEST_REQUIRE(env.server->revoke(first.value()));

    env.run([&]() -> asio::awaitable<void> {
        auto [ec, response] = co_await client.async_get("/v1/guests?limit=1", as_awaitable);
        BOOST_TEST(!ec, ec.message());
        BOOST_TEST(response.status == 200u);
    });

    const auto stats = env.stats();
    BOOST_TEST(stats.token_requests == 2u);
    BOOST_TEST(stats.api_requests == 2u);
    BOOST_TEST(stats.api_unauthorized == 1u);
    BOOST_TEST(env.auth.stats().invalidations == 1u);
    BOOST_TEST(client.stats().token_retries == 1u);
    BOOST_TEST(!(env.current_token() == first));
}

BOOST_AUTO_TEST_CASE(always_401_retries_once_then_fails)
{
    api_env env;
    api_client client = env.make_client();
    env.current_token();
    env.server->set_api_fault_script("401*");

    env.run([&]() -> asio::awaitable<void> {
        diagnostics diag;
        auto [ec, response] = co_await client.async_request(
            http::verb::get, "/v1/guests", std::nullopt, {}, diag, as_awaitable);
        BOOST_TEST(ec == make_http_error(401));
        BOOST_TEST(response.status == 401u);
        BOOST_TEST(diag.http_status() == 401u);
        BOOST_TEST(diag.server_error_code() == "invalid_token");
        BOOST_TEST(diag.client_message().find("fresh token") != std::string::npos);
    });

    const auto stats = env.stats();
    BOOST_TEST(stats.api_requests == 2u);
    BOOST_TEST(stats.token_requests == 2u);
    BOOST_TEST(client.stats().token_retries == 1u);
}

BOOST_AUTO_TEST_CASE(concurrent_401_cause_one_token_fetch)
{
    constexpr int request_count = 100;
    api_env env;
    api_client client = env.make_client();
    env.current_token();
    const auto before = env.stats();
    env.server->set_api_fault_script("401*");

    int completed = 0;
    int unauthorized = 0;
    for (int i = 0; i < request_count; ++i) {
        client.async_get("/v1/guests?limit=1", [&](error_code ec, api_response) {
            ++completed;
            if (ec == make_http_error(401)) {
                ++unauthorized;
            }
        });
    }
    env.run_until([&] { return completed == request_count; });

    const auto after = env.stats();
    BOOST_TEST(completed == request_count);
    BOOST_TEST(unauthorized == request_count);
    BOOST_TEST(after.api_requests - before.api_requests == 2u * request_count);
    BOOST_TEST(after.token_requests - before.token_requests == 1u);
    BOOST_TEST(client.stats().token_retries == std::uint64_t(request_count));
}

BOOST_AUTO_TEST_CASE(forbidden_invalid_token_is_refreshed)
{
    api_env env;
    api_client client = env.make_client();
    env.current_token();
    env.server->set_api_fault_script("oauth-error:invalid_token:403");

    env.run([&]() -> asio::awaitable<void> {
        auto [ec, response] = co_await client.async_get("/v1/guests?limit=1", as_awaitable);
        BOOST_TEST(!ec, ec.message());
    });
    BOOST_TEST(env.stats().token_requests == 2u);
    BOOST_TEST(env.stats().api_requests == 2u);
}

BOOST_AUTO_TEST_CASE(forbidden_for_other_reasons_is_returned)
{
    api_env env;
    api_client client = env.make_client();
    env.current_token();
    env.server->set_api_fault_script("oauth-error:insufficient_scope:403");

    env.run([&]() -> asio::awaitable<void> {
        diagnostics diag;
        auto [ec, response] = co_await client.async_request(
            http::verb::get, "/v1/guests", std::nullopt, {}, diag, as_awaitable);
        BOOST_TEST(ec == make_http_error(403));
        BOOST_TEST(diag.server_error_code() == "insufficient_scope");
    });
    BOOST_TEST(env.stats().token_requests == 1u);
    BOOST_TEST(env.stats().api_requests == 1u);
    BOOST_TEST(client.stats().token_retries == 0u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(retries)

BOOST_AUTO_TEST_CASE(get_is_retried_after_503)
{
    api_env env;
    api_client client = env.make_client();
    env.server->set_api_fault_script("5xx-html:503");

    env.run([&]() -> asio::awaitable<void> {
        auto [ec, response] = co_await client.async_get("/v1/guests?limit=1", as_awaitable);
        BOOST_TEST(!ec, ec.message());
    });
    BOOST_TEST(env.stats().api_requests == 2u);
    BOOST_TEST(client.stats().retries == 1u);
}

BOOST_AUTO_TEST_CASE(post_is_not_retried_after_503)
{
    api_env env;
    api_client client = env.make_client();
    stampede::guests guests(client);
    env.current_token();
    env.server->set_api_fault_script("5xx-html:503");

    env.run([&]() -> asio::awaitable<void> {
        diagnostics diag;
        auto create = guests.async_create(full_guest("retry.none@example.com"), diag, as_awaitable);
        auto [ec, created] = co_await std::move(create);
        BOOST_TEST(ec == make_http_error(503));
        // The HTML body is kept, sanitized, as the server's text.
        BOOST_TEST(!diag.server_message().empty());
    });
    BOOST_TEST(env.stats().api_requests == 1u);
    BOOST_TEST(client.stats().retries == 0u);
}

BOOST_AUTO_TEST_CASE(post_is_retried_after_503_when_allowed)
{
    api_env env;
    api_client client = env.make_client();
    env.current_token();
    env.server->set_api_fault_script("5xx-html:503");

    env.run([&]() -> asio::awaitable<void> {
        auto post = client.async_post("/v1/guests",
                                      json::value_from(full_guest("retry.allowed@example.com")),
                                      retry_anything_options(), as_awaitable);
        auto [ec, response] = co_await std::move(post);
        BOOST_TEST(!ec, ec.message());
        BOOST_TEST(response.status == 201u);
    });
    BOOST_TEST(env.stats().api_requests == 2u);
}

BOOST_AUTO_TEST_CASE(post_is_retried_after_429_with_retry_after)
{
    api_env env;
    api_client client = env.make_client();
    env.current_token();
    env.server->set_api_fault_script("429-seconds:1");

    const auto start = steady_clock::now();
    env.run([&]() -> asio::awaitable<void> {
        auto post = client.async_post(
            "/v1/guests", json::value_from(full_guest("after.429@example.com")), as_awaitable);
        auto [ec, response] = co_await std::move(post);
        BOOST_TEST(!ec, ec.message());
        BOOST_TEST(response.status == 201u);
    });
    BOOST_TEST(elapsed_ms(start, steady_clock::now()) >= 1000);
    BOOST_TEST(env.stats().api_requests == 2u);
    BOOST_TEST(client.stats().retries == 1u);
}

BOOST_AUTO_TEST_CASE(network_failure_retries_only_idempotent)
{
    api_env env;
    api_client client = env.make_client();
    env.current_token();

    env.server->set_api_fault_script("reset");
    env.run([&]() -> asio::awaitable<void> {
        auto [ec, response] = co_await client.async_get("/v1/guests?limit=1", as_awaitable);
        BOOST_TEST(!ec, ec.message());
    });
    BOOST_TEST(env.stats().api_requests == 2u);

    env.server->set_api_fault_script("reset");
    env.run([&]() -> asio::awaitable<void> {
        auto post = client.async_post(
            "/v1/guests", json::value_from(full_guest("reset.post@example.com")), as_awaitable);
        auto [ec, response] = co_await std::move(post);
        BOOST_TEST(ec.failed());
    });
    BOOST_TEST(env.stats().api_requests == 3u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(limits)

BOOST_AUTO_TEST_CASE(rate_limiter_holds_its_bound)
{
    constexpr std::size_t capacity = 5;
    constexpr auto refill = 400ms;
    constexpr std::size_t request_count = 15;
    // Allowance for loopback transit differences between two requests.
    constexpr auto transit_allowance = 150ms;

    api_env env;
    api_client_settings settings = env.client_settings();
    settings.rate_limit = {capacity, refill};
    api_client client = env.make_client(settings);

    // Send `count` requests at once and wait for all of them.
    auto send_burst = [&](std::size_t count) {
        std::size_t completed = 0;
        for (std::size_t i = 0; i < count; ++i) {
            client.async_get("/v1/guests?limit=1", [&](error_code ec, api_response) {
                BOOST_TEST(!ec, ec.message());
                ++completed;
            });
        }
        env.run_until([&] { return completed == count; });
    };

    // Open the pooled connections first, so that TLS handshakes cannot delay the measured
    // requests and bunch them up at the server. Then let the bucket fill again.
    send_burst(settings.max_connections);
    env.run([&]() -> asio::awaitable<void> { co_await sleep_for(capacity * refill); });
    env.arrivals.clear();
    const auto waits_before = client.stats().rate_limited_waits;

    const auto start = steady_clock::now();
    send_burst(request_count);

    const auto times = env.arrivals.snapshot();
    BOOST_TEST_REQUIRE(times.size() == request_count);
    BOOST_TEST(elapsed_ms(start, times.back()) >=
               static_cast<std::int64_t>(request_count - capacity) * refill.count());
    // Any n > capacity requests span at least (n - capacity) refill intervals.
    for (std::size_t i = 0; i < times.size(); ++i) {
        for (std::size_t j = i + capacity; j < times.size(); ++j) {
            const auto n = j - i + 1;
            const auto lower_bound = static_cast<std::int64_t>(n - capacity) * refill.count() -
                                     transit_allowance.count();
            BOOST_TEST(elapsed_ms(times[i], times[j]) >= lower_bound,
                       "requests " << i << " to " << j);
        }
    }
    BOOST_TEST(client.stats().rate_limited_waits - waits_before >= request_count - capacity);
}

BOOST_AUTO_TEST_CASE(token_expiring_in_limiter_wait_is_renewed)
{
    // Tokens live 1 s and the second request waits 1.5 s for the limiter, so a token
    // taken before that wait would have expired by the time the request is sent.
    auto opts = default_emulator_options();
    opts.token_lifetime = 1000ms;
    api_env env(opts);
    api_client_settings settings = env.client_settings();
    settings.rate_limit = {1, 1500ms};
    api_client client = env.make_client(settings);
    (void)env.current_token();

    std::size_t completed = 0;
    for (int i = 0; i < 2; ++i) {
        client.async_get("/v1/guests?limit=1", [&](error_code ec, api_response response) {
            BOOST_TEST(!ec, ec.message());
            BOOST_TEST(response.status == 200u);
            ++completed;
        });
    }
    env.run_until([&] { return completed == 2; });

    BOOST_TEST(client.stats().rate_limited_waits >= 1u);
    BOOST_TEST(env.stats().api_requests == 2u);
    BOOST_TEST(env.stats().api_unauthorized == 0u);
    BOOST_TEST(client.stats().token_retries == 0u);
}

BOOST_AUTO_TEST_CASE(pool_bounds_connections)
{
    constexpr std::size_t request_count = 10;
    api_env env;
    api_client_settings settings = env.client_settings();
    settings.max_connections = 2;
    api_client client = env.make_client(settings);

    std::size_t completed = 0;
    for (std::size_t i = 0; i < request_count; ++i) {
        client.async_get("/v1/guests?limit=1", [&](error_code ec, api_response) {
            BOOST_TEST(!ec, ec.message());
            ++completed;
        });
    }
    env.run_until([&] { return completed == request_count; });

    BOOST_TEST(client.stats().connections_opened <= 2u);
    BOOST_TEST(client.stats().connection_waits >= request_count - 2);
    // One connection of the token source, at most two of the client.
    BOOST_TEST(env.stats().connections_accepted <= 3u);
}

BOOST_AUTO_TEST_CASE(waiting_request_is_cancelled_alone)
{
    api_env env;
    api_client_settings settings = env.client_settings();
    settings.max_connections = 1;
    api_client client = env.make_client(settings);
    env.current_token();
    env.server->set_api_fault_script("stall");

    std::optional<error_code> stalled_result;
    std::optional<error_code> waiting_result;
    asio::cancellation_signal cancel_waiting;
    client.async_get("/v1/guests?limit=1",
                     [&](error_code ec, api_response) { stalled_result = ec; });
    client.async_get("/v1/guests?limit=1",
                     asio::bind_cancellation_slot(cancel_waiting.slot(),
                                                  [&](error_code ec, api_response) {
                                                      waiting_result = ec;
                                                  }));

    env.run([&]() -> asio::awaitable<void> {
        // Wait until the stalled request has reached the server.
        while (env.stats().api_requests == 0) {
            co_await sleep_for(10ms);
        }
        cancel_waiting.emit(asio::cancellation_type::terminal);
        while (!waiting_result) {
            co_await sleep_for(5ms);
        }
        BOOST_TEST(*waiting_result == asio::error::operation_aborted);
        BOOST_TEST(!stalled_result.has_value());

        client.shutdown();
        while (!stalled_result) {
            co_await sleep_for(5ms);
        }
        BOOST_TEST(*stalled_result == asio::error::operation_aborted);
    });
    BOOST_TEST(env.stats().api_requests == 1u);

    env.run([&]() -> asio::awaitable<void> {
        auto [ec, response] = co_await client.async_get("/v1/guests", as_awaitable);
        BOOST_TEST(ec == asio::error::operation_aborted);
    });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(guests)

BOOST_AUTO_TEST_CASE(pagination_walks_all_pages)
{
    api_env env;
    api_client client = env.make_client();
    stampede::guests guests(client);

    env.run([&]() -> asio::awaitable<void> {
        auto list = guests.async_list_all("", as_awaitable);
        auto [ec, all] = co_await std::move(list);
        BOOST_TEST_REQUIRE(!ec, ec.message());
        BOOST_TEST(all.size() == 60u);
        std::set<std::string> ids;
        for (const stampede::guest& g : all) {
            ids.insert(g.id);
        }
        BOOST_TEST(ids.size() == 60u);
    });
    BOOST_TEST(env.stats().api_requests == 3u);
}

BOOST_AUTO_TEST_CASE(pages_link_to_each_other)
{
    api_env env;
    api_client client = env.make_client();
    stampede::guests guests(client);

    env.run([&]() -> asio::awaitable<void> {
        auto list1 = guests.async_list({}, as_awaitable);
        auto [ec1, first] = co_await std::move(list1);
        BOOST_TEST_REQUIRE(!ec1, ec1.message());
        BOOST_TEST(first.data.size() == 25u);
        BOOST_TEST(!first.links.prev.has_value());
        BOOST_TEST_REQUIRE(first.links.next.has_value());
        // List items carry the summary fields only.
        BOOST_TEST(first.data[0].user_profile.email.has_value());
        BOOST_TEST(!first.data[0].user_profile.verified.has_value());
        BOOST_TEST(!first.data[0].custom_question_answers.has_value());

        auto list2 = guests.async_list(query_cursor(*first.links.next), as_awaitable);
        auto [ec2, second] = co_await std::move(list2);
        BOOST_TEST_REQUIRE(!ec2, ec2.message());
        BOOST_TEST(second.data.size() == 25u);
        BOOST_TEST(second.links.prev.has_value());
        BOOST_TEST_REQUIRE(second.links.next.has_value());

        auto list3 = guests.async_list(query_cursor(*second.links.next), as_awaitable);
        auto [ec3, third] = co_await std::move(list3);
        BOOST_TEST_REQUIRE(!ec3, ec3.message());
        BOOST_TEST(third.data.size() == 10u);
        BOOST_TEST(!third.links.next.has_value());
        BOOST_TEST(first.data[0].id != third.data[0].id);

        auto list4 = guests.async_list(query_limit(7), as_awaitable);
        auto [ec4, small] = co_await std::move(list4);
        BOOST_TEST_REQUIRE(!ec4, ec4.message());
        BOOST_TEST(small.data.size() == 7u);
    });
}

BOOST_AUTO_TEST_CASE(search_filters_guests)
{
    api_env env;
    api_client client = env.make_client();
    stampede::guests guests(client);

    env.run([&]() -> asio::awaitable<void> {
        auto search = guests.async_list_all("Olivia", as_awaitable);
        auto [ec, found] = co_await std::move(search);
        BOOST_TEST_REQUIRE(!ec, ec.message());
        BOOST_TEST(!found.empty());
        BOOST_TEST(found.size() < 60u);
        for (const stampede::guest& g : found) {
            const std::string text = lower(g.user_profile.first.value_or("") + " " +
                                           g.user_profile.last.value_or("") + " " +
                                           g.user_profile.email.value_or(""));
            BOOST_TEST(text.find("olivia") != std::string::npos, text);
        }
    });
}

BOOST_AUTO_TEST_CASE(created_guest_round_trips)
{
    api_env env;
    api_client client = env.make_client();
    stampede::guests guests(client);
    const stampede::new_guest input = full_guest("zoe.round.trip@example.com");

    env.run([&]() -> asio::awaitable<void> {
        auto create = guests.async_create(input, as_awaitable);
        auto [create_ec, created] = co_await std::move(create);
        BOOST_TEST_REQUIRE(!create_ec, create_ec.message());
        BOOST_TEST(!created.id.empty());

        const stampede::guest_user_profile& profile = created.user_profile;
        BOOST_TEST(profile.email == input.email);
        BOOST_TEST(profile.first == input.first);
        BOOST_TEST(profile.last == input.last);
        BOOST_TEST(profile.phone == input.phone);
        BOOST_TEST(profile.lat == input.lat);
        BOOST_TEST(profile.lng == input.lng);
        BOOST_TEST(profile.birth_day == input.birth_day);
        BOOST_TEST(profile.birth_month == input.birth_month);
        BOOST_TEST(profile.postcode == input.postcode);
        BOOST_TEST(profile.country == input.country);
        BOOST_TEST(profile.gender == input.gender);
        BOOST_TEST(created.data_opt_in_at.has_value());
        BOOST_TEST(created.sms_opt_in_at.has_value());
        BOOST_TEST(!created.email_opt_in_at.has_value());
        BOOST_TEST(created.created_at.has_value());

        auto get = guests.async_get(created.id, as_awaitable);
        auto [get_ec, fetched] = co_await std::move(get);
        BOOST_TEST_REQUIRE(!get_ec, get_ec.message());
        BOOST_TEST(fetched == created);

        // The JSON conversions are inverse to each other.
        BOOST_TEST(json::value_to<stampede::guest>(json::value_from(fetched)) == fetched);

        auto list = guests.async_list_all(input.email, as_awaitable);
        auto [list_ec, listed] = co_await std::move(list);
        BOOST_TEST_REQUIRE(!list_ec, list_ec.message());
        BOOST_TEST_REQUIRE(listed.size() == 1u);
        BOOST_TEST(listed[0].id == created.id);
    });
}

BOOST_AUTO_TEST_CASE(invalid_guest_is_rejected_with_reason)
{
    api_env env;
    api_client client = env.make_client();
    stampede::guests guests(client);

    env.run([&]() -> asio::awaitable<void> {
        diagnostics diag;
        auto create = guests.async_create(full_guest("not-an-email"), diag, as_awaitable);
        auto [ec, created] = co_await std::move(create);
        BOOST_TEST(ec == make_http_error(422));
        BOOST_TEST(diag.server_message() == "The email field must be a valid email address.");
    });
    BOOST_TEST(env.stats().api_requests == 1u);
}

BOOST_AUTO_TEST_CASE(conversions_tolerate_missing_and_unknown_fields)
{
    const json::value minimal = {{"id", "g-1"}, {"surprise", {1, 2, 3}}};
    const auto g = json::value_to<stampede::guest>(minimal);
    BOOST_TEST(g.id == "g-1");
    BOOST_TEST(g.profile_id == 0);
    BOOST_TEST(!g.created_at.has_value());
    BOOST_TEST(!g.user_profile.email.has_value());
    BOOST_TEST(g.organization_profile_tags.empty());

    const json::value strings = {{"id", "g-2"},
                                 {"user_profile", {{"lat", "-33.5"}, {"birth_day", "7"}}}};
    const auto h = json::value_to<stampede::guest>(strings);
    BOOST_TEST(h.user_profile.lat == -33.5);
    BOOST_TEST(h.user_profile.birth_day == 7);

    const json::value wrong = {{"id", 42}};
    BOOST_CHECK_EXCEPTION(json::value_to<stampede::guest>(wrong), boost::system::system_error,
                          [](const boost::system::system_error& e) {
                              return e.code() == client_errc::malformed_response &&
                                     std::string(e.what()).find("id") != std::string::npos;
                          });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(settings)

BOOST_AUTO_TEST_CASE(defaults_respect_api_limits)
{
    const api_client_settings s;
    const auto refills = std::chrono::duration_cast<std::chrono::milliseconds>(900s) /
                         s.rate_limit.refill_interval;
    BOOST_TEST(s.rate_limit.capacity + static_cast<std::size_t>(refills) <= 100u);
    BOOST_TEST(s.transport.max_body_bytes == 8u * 1024 * 1024);
    BOOST_TEST(s.max_connections == 4u);
    BOOST_TEST(s.base_url == "https://global.stampede.ai/");
}

BOOST_AUTO_TEST_CASE(invalid_settings_name_the_field)
{
    api_env env;
    struct invalid_case {
        std::function<void(api_client_settings&)> change;
        error_code expected;
        std::string field;
    };
    const std::vector<invalid_case> cases{
        {[](auto& s) { s.max_connections = 0; }, client_errc::invalid_settings, "max_connections"},
        {[](auto& s) { s.rate_limit.capacity = 0; }, client_errc::invalid_settings, "rate_limit"},
        {[](auto& s) { s.backoff.max_attempts = 0; }, client_errc::invalid_settings, "backoff"},
        {[](auto& s) { s.transport.read_timeout = 0ms; }, client_errc::invalid_settings,
         "transport.read_timeout"},
        {[](auto& s) { s.base_url = "http://api.example.com/"; }, client_errc::insecure_url,
         "base_url"},
        {[](auto& s) { s.base_url += "?x=1"; }, client_errc::invalid_settings, "base_url"},
        {[](auto& s) { s.transport.ca_file = "/nonexistent/ca.pem"; },
         client_errc::invalid_settings, "transport.ca_file"},
    };
    for (const invalid_case& c : cases) {
        api_client_settings s = env.client_settings();
        c.change(s);
        try {
            env.make_client(s);
            BOOST_ERROR("settings accepted, expected a rejection naming " << c.field);
        } catch (const stampede::error_with_diagnostics& e) {
            BOOST_TEST(e.code() == c.expected, c.field);
            BOOST_TEST(e.get_diagnostics().client_message().find(c.field) != std::string::npos,
                       e.get_diagnostics().client_message());
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(logging)

BOOST_AUTO_TEST_CASE(trace_log_never_contains_token)
{
    api_env env;
    api_client client = env.make_client();
    std::vector<stampede::access_token> tokens;

    auto get_once = [&] {
        env.run([&]() -> asio::awaitable<void> {
            co_await client.async_get("/v1/guests?search=olivia", as_awaitable);
        });
    };
    get_once();
    tokens.push_back(env.current_token());

    env.server->revoke(tokens.back().value());
    get_once();
    tokens.push_back(env.current_token());

    env.server->set_api_fault_script("5xx-html:503");
    get_once();
    env.server->set_api_fault_script("401*");
    get_once();
    tokens.push_back(env.current_token());
    env.server->set_api_fault_script("");

    const auto lines = env.log.snapshot();
    BOOST_TEST(lines.size() > 5u);
    bool saw_trace_line = false;
    for (const std::string& line : lines) {
        saw_trace_line = saw_trace_line || line.find("sending attempt") != std::string::npos;
        BOOST_TEST(line.find("demo-secret") == std::string::npos, line);
        BOOST_TEST(line.find("olivia") == std::string::npos, line);
        for (const stampede::access_token& token : tokens) {
            BOOST_TEST(line.find(token.value()) == std::string::npos, line);
        }
    }
    BOOST_TEST(saw_trace_line);
    BOOST_TEST(tokens.size() == 3u);
}

BOOST_AUTO_TEST_SUITE_END()
