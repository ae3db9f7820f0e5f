#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE token_source
#include <boost/test/unit_test.hpp>

#include "../support/fake_fetcher.hpp"

#include <stampede/detail/token_schedule.hpp>
#include <stampede/error.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using boost::system::error_code;
using stampede::test::fake_answer;
using stampede::test::fake_endpoint;
using stampede::test::fake_fetcher;

namespace {

stampede::token_source_settings fast_settings()
{
    stampede::token_source_settings s;
    s.client_id = "test-client";
    s.client_secret = stampede::secret_string("test-secret-value");
    s.token_url = "https://127.0.0.1:9/oauth/token";
    s.transport.request_timeout = 100ms;
    s.backoff.initial_delay = 10ms;
    s.backoff.min_delay = 5ms;
    s.backoff.max_delay = 40ms;
    s.refresh_ahead = 300ms;
    s.rate_limit.capacity = 1000;
    s.rate_limit.refill_interval = 1ms;
    return s;
}

struct fixture {
    asio::io_context ctx;
    std::shared_ptr<fake_endpoint> endpoint = std::make_shared<fake_endpoint>();

    stampede::token_source make_source(stampede::token_source_settings s = fast_settings())
    {
        return stampede::token_source(ctx.get_executor(), std::move(s),
                                      std::make_unique<fake_fetcher>(endpoint));
    }

    // Runs the context until `done` is true; fails the test if the context runs dry.
    void run_until(const bool& done)
    {
        while (!done) {
            if (ctx.run_one() == 0) {
                BOOST_FAIL("io_context ran out of work before the condition held");
            }
        }
    }

    void run_for(std::chrono::milliseconds d)
    {
        ctx.restart();
        ctx.run_for(d);
    }

    // Runs `body` as a coroutine on the context until it finishes; rethrows its exception.
    template <class Body>
    void run(Body body)
    {
        bool done = false;
        std::exception_ptr error;
        asio::co_spawn(ctx, std::move(body), [&](std::exception_ptr e) {
            error = e;
            done = true;
        });
        ctx.restart();
        run_until(done);
        if (error) {
            std::rethrow_exception(error);
        }
    }

    // Runs the context until `counter` reaches `target`.
    void run_until_count(const int& counter, int target)
    {
        ctx.restart();
        while (counter < target) {
            if (ctx.run_one() == 0) {
                BOOST_FAIL("io_context ran out of work with " << counter << " of " << target);
            }
        }
    }
};

asio::awaitable<void> sleep_for(std::chrono::milliseconds d)
{
    asio::steady_timer timer(co_await asio::this_coro::executor, d);
    co_await timer.async_wait(asio::use_awaitable);
}

} // namespace


BOOST_FIXTURE_TEST_CASE(cold_start_coalesces_ten_thousand_callers, fixture)
{
    endpoint->fallback.delay = 20ms;
    auto source = make_source();
    constexpr int callers = 10000;
    int served = 0;
    std::set<std::string> tokens;

    for (int i = 0; i < callers; ++i) {
        asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
            auto token = co_await source.token();
            tokens.insert(std::string(token.value()));
            ++served;
        }, asio::detached);
    }
    run_until_count(served, callers);

    BOOST_TEST(endpoint->requests.load() == 1);
    BOOST_TEST(tokens.size() == 1u);
    const auto stats = source.stats();
    BOOST_TEST(stats.requests == 1u);
    BOOST_TEST(stats.tokens_fetched == 1u);
    BOOST_TEST(stats.waiters == static_cast<std::uint64_t>(callers));
    BOOST_TEST(stats.coalesced_waiters == static_cast<std::uint64_t>(callers - 1));
}

BOOST_FIXTURE_TEST_CASE(waiting_callers_are_not_cache_hits, fixture)
{
    endpoint->fallback.delay = 5ms;
    auto source = make_source();
    constexpr int callers = 20;
    int served = 0;
    for (int i = 0; i < callers; ++i) {
        asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
            auto token = co_await source.token();
            BOOST_TEST(!token.value().empty());
            ++served;
        }, asio::detached);
    }
    run_until_count(served, callers);

    const auto stats = source.stats();
    BOOST_TEST(stats.waiters == static_cast<std::uint64_t>(callers));
    BOOST_TEST(stats.cache_hits == 0u);
}

BOOST_FIXTURE_TEST_CASE(expired_token_is_not_served_late, fixture)
{
    // The context does not run while the token expires, so its stale timer cannot drop
    // it; the slow path must notice the expiry itself.
    endpoint->fallback.expires_in = 200ms;
    auto s = fast_settings();
    s.refresh_ahead = 60s; // cut to half the lifetime
    auto source = make_source(s);
    std::string first;
    run([&]() -> asio::awaitable<void> {
        first = std::string((co_await source.token()).value());
    });
    std::this_thread::sleep_for(300ms);

    std::string second;
    bool done = false;
    source.async_token([&](error_code ec, stampede::access_token token) {
        BOOST_TEST(!ec);
        second = std::string(token.value());
        done = true;
    });
    ctx.restart();
    run_until(done);
    BOOST_TEST(second != first);
    BOOST_TEST(endpoint->requests.load() >= 2);
}

BOOST_AUTO_TEST_CASE(destroyed_context_destroys_pending_handlers)
{
    // Handlers whose completion is queued when the io_context is destroyed are destroyed
    // with it, not leaked.
    auto endpoint = std::make_shared<fake_endpoint>();
    endpoint->fallback.delay = 10s;
    auto sentinel = std::make_shared<int>(0);
    std::weak_ptr<int> watch = sentinel;
    {
        asio::io_context ctx;
        stampede::token_source source(ctx.get_executor(), fast_settings(),
                                      std::make_unique<fake_fetcher>(endpoint));
        for (int i = 0; i < 3; ++i) {
            source.async_token([keep = sentinel](error_code, stampede::access_token) {
                BOOST_ERROR("handler ran although the context never ran it");
            });
        }
        sentinel.reset();
        ctx.poll();
        source.shutdown(); // queues the completions; the context never runs them
    }
    BOOST_TEST(watch.expired());
}

BOOST_AUTO_TEST_CASE(destroyed_context_frees_waiting_source)
{
    // The only copy of the source lives in the frame of a coroutine waiting for a token.
    // Destroying the context must destroy that frame and so the source, as it would for a
    // coroutine waiting on a timer.
    auto endpoint = std::make_shared<fake_endpoint>();
    endpoint->fallback.delay = 10s;
    auto sentinel = std::make_shared<int>(0);
    std::weak_ptr<int> watch = sentinel;
    {
        asio::io_context ctx;
        {
            stampede::token_source source(ctx.get_executor(), fast_settings(),
                                          std::make_unique<fake_fetcher>(endpoint));
            asio::co_spawn(
                ctx,
                [source, keep = sentinel]() mutable -> asio::awaitable<void> {
                    (void)co_await source.token();
                },
                asio::detached);
        }
        sentinel.reset();
        ctx.poll();
    }
    BOOST_TEST(watch.expired());
}

BOOST_FIXTURE_TEST_CASE(cached_token_needs_no_request, fixture)
{
    auto source = make_source();
    run([&]() -> asio::awaitable<void> {
        const std::string first((co_await source.token()).value());
        for (int i = 0; i < 100; ++i) {
            auto again = co_await source.token();
            BOOST_TEST(again.value() == first);
        }
    });
    BOOST_TEST(endpoint->requests.load() == 1);
    BOOST_TEST(source.stats().cache_hits >= 100u);
}

BOOST_FIXTURE_TEST_CASE(try_token_peeks_without_fetching, fixture)
{
    auto source = make_source();
    BOOST_TEST(!source.try_token().has_value());
    BOOST_TEST(endpoint->requests.load() == 0);

    run([&]() -> asio::awaitable<void> { (void)co_await source.token(); });
    auto peeked = source.try_token();
    BOOST_REQUIRE(peeked.has_value());
    BOOST_TEST(peeked->value() == "fake-token-1");
    BOOST_TEST(peeked->token_type() == "Bearer");
    BOOST_TEST(peeked->scope() == "ALL:ALL");
}

BOOST_FIXTURE_TEST_CASE(completion_tokens_all_work, fixture)
{
    auto source = make_source();

    // Callback.
    int callbacks = 0;
    source.async_token([&](error_code ec, stampede::access_token token) {
        BOOST_TEST(!ec);
        BOOST_TEST(token.value() == "fake-token-1");
        ++callbacks;
    });
    BOOST_TEST(callbacks == 0); // never inside the initiating call
    run_until_count(callbacks, 1);

    // Cached, still never inline.
    source.async_token([&](error_code ec, stampede::access_token) {
        BOOST_TEST(!ec);
        ++callbacks;
    });
    BOOST_TEST(callbacks == 1);
    run_until_count(callbacks, 2);

    // Deferred, as_tuple and redirect_error inside a coroutine.
    run([&]() -> asio::awaitable<void> {
        auto op = source.async_token(asio::deferred);
        stampede::access_token t1 = co_await std::move(op)(asio::use_awaitable);
        auto [ec, t2] = co_await source.async_token(asio::as_tuple(asio::use_awaitable));
        error_code redirected;
        auto t3 = co_await source.async_token(asio::redirect_error(asio::use_awaitable, redirected));
        BOOST_TEST(!ec);
        BOOST_TEST(!redirected);
        BOOST_TEST(t1 == t2);
        BOOST_TEST(t2 == t3);
    });

    // use_future, with the context on another thread.
    ctx.restart();
    auto work = asio::make_work_guard(ctx);
    std::thread runner([&] { ctx.run(); });
    auto future = source.async_token(asio::use_future);
    BOOST_TEST(future.get().value() == "fake-token-1");
    source.shutdown(); // stops the refresh timer that keeps the context busy
    work.reset();
    runner.join();
    BOOST_TEST(endpoint->requests.load() == 1);
}

BOOST_FIXTURE_TEST_CASE(refresh_ahead_serves_old_token_meanwhile, fixture)
{
    // Lifetime 1 s: stale at 900 ms, refresh at 600 ms (refresh_ahead 300 ms).
    endpoint->push({.expires_in = 1000ms});
    endpoint->push({.expires_in = 1000ms, .delay = 200ms}); // the refresh answers slowly
    endpoint->fallback.expires_in = 1h;
    auto source = make_source();

    run([&]() -> asio::awaitable<void> {
        BOOST_TEST((co_await source.token()).value() == "fake-token-1");
        co_await sleep_for(650ms); // inside the refresh window, refresh in flight
        BOOST_TEST(endpoint->requests.load() == 2);
        for (int i = 0; i < 50; ++i) {
            BOOST_TEST((co_await source.token()).value() == "fake-token-1");
        }
        co_await sleep_for(250ms); // the refresh has answered
        BOOST_TEST((co_await source.token()).value() == "fake-token-2");
    });
    BOOST_TEST(endpoint->requests.load() == 2);
    BOOST_TEST(source.stats().refreshes_ahead == 1u);
    BOOST_TEST(source.stats().waiters == 1u); // only the cold start waited
}

BOOST_FIXTURE_TEST_CASE(failed_refresh_keeps_old_token, fixture)
{
    endpoint->push({.expires_in = 2000ms});
    // Every refresh attempt fails with a retryable error.
    endpoint->fallback.ec = stampede::make_http_error(503);
    auto s = fast_settings();
    s.refresh_ahead = 1000ms; // refresh from 900 ms on; stale at 1800 ms
    auto source = make_source(s);

    run([&]() -> asio::awaitable<void> {
        BOOST_TEST((co_await source.token()).value() == "fake-token-1");
        co_await sleep_for(1300ms);
        BOOST_TEST(endpoint->requests.load() >= 3); // refresh retried
        BOOST_TEST((co_await source.token()).value() == "fake-token-1");
    });
    BOOST_TEST(source.stats().retries >= 2u);
    BOOST_TEST(source.stats().waiters == 1u);
}

BOOST_FIXTURE_TEST_CASE(cancelling_one_waiter_leaves_the_other, fixture)
{
    endpoint->fallback.delay = 50ms;
    auto source = make_source();
    asio::cancellation_signal signal;
    error_code cancelled_ec;
    error_code other_ec;
    std::string other_token;
    int completed = 0;

    source.async_token(asio::bind_cancellation_slot(
        signal.slot(), [&](error_code ec, stampede::access_token) {
            cancelled_ec = ec;
            ++completed;
        }));
    source.async_token([&](error_code ec, stampede::access_token token) {
        other_ec = ec;
        other_token = std::string(token.value());
        ++completed;
    });

    ctx.poll();
    signal.emit(asio::cancellation_type::terminal);
    run_until_count(completed, 2);

    BOOST_TEST(cancelled_ec == asio::error::operation_aborted);
    BOOST_TEST(!other_ec);
    BOOST_TEST(other_token == "fake-token-1");
    BOOST_TEST(endpoint->requests.load() == 1);
    BOOST_TEST(source.stats().cancelled_waiters == 1u);
    BOOST_REQUIRE(source.try_token().has_value()); // the cache was still filled
}

BOOST_FIXTURE_TEST_CASE(terminal_cancellation_of_coroutine_waiter, fixture)
{
    endpoint->fallback.delay = 100ms;
    auto source = make_source();
    asio::cancellation_signal signal;
    error_code result;
    bool done = false;

    asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
        try {
            (void)co_await source.token();
        } catch (const boost::system::system_error& e) {
            result = e.code();
        }
        done = true;
    }, asio::bind_cancellation_slot(signal.slot(), asio::detached));

    ctx.poll();
    signal.emit(asio::cancellation_type::terminal);
    ctx.restart();
    run_until(done);
    BOOST_TEST(result == asio::error::operation_aborted);
}

BOOST_FIXTURE_TEST_CASE(partial_and_total_cancellation_of_waiter, fixture)
{
    endpoint->fallback.delay = 50ms;
    auto source = make_source();
    int completed = 0;
    for (auto type : {asio::cancellation_type::partial, asio::cancellation_type::total}) {
        asio::cancellation_signal signal;
        error_code result;
        source.async_token(asio::bind_cancellation_slot(
            signal.slot(), [&](error_code ec, stampede::access_token) {
                result = ec;
                ++completed;
            }));
        ctx.restart();
        ctx.poll();
        signal.emit(type);
        run_until_count(completed, completed + 1);
        BOOST_TEST(result == asio::error::operation_aborted);
    }
    BOOST_TEST(source.stats().cancelled_waiters == 2u);
}

BOOST_FIXTURE_TEST_CASE(shutdown_completes_every_waiter, fixture)
{
    endpoint->fallback.delay = 10s; // never answers in time
    auto source = make_source();
    int aborted = 0;
    for (int i = 0; i < 100; ++i) {
        source.async_token([&](error_code ec, stampede::access_token) {
            if (ec == asio::error::operation_aborted) {
                ++aborted;
            }
        });
    }
    ctx.poll();
    source.shutdown();
    run_until_count(aborted, 100);

    int late = 0;
    source.async_token([&](error_code ec, stampede::access_token) {
        BOOST_TEST(ec == asio::error::operation_aborted);
        ++late;
    });
    run_until_count(late, 1);
}

BOOST_FIXTURE_TEST_CASE(destroying_last_copy_aborts_waiters, fixture)
{
    endpoint->fallback.delay = 10s;
    int aborted = 0;
    {
        auto source = make_source();
        auto copy = source;
        for (int i = 0; i < 10; ++i) {
            copy.async_token([&](error_code ec, stampede::access_token) {
                if (ec == asio::error::operation_aborted) {
                    ++aborted;
                }
            });
        }
        ctx.poll();
    }
    run_until_count(aborted, 10);
    ctx.restart();
    ctx.run(); // everything drains: nothing keeps the context busy
}

BOOST_FIXTURE_TEST_CASE(invalidate_is_by_value, fixture)
{
    auto source = make_source();
    run([&]() -> asio::awaitable<void> {
        auto first = (co_await source.token()).to_owned();
        BOOST_TEST(first.value() == "fake-token-1");

        // 100 reports about the same token drop it once.
        int dropped = 0;
        for (int i = 0; i < 100; ++i) {
            dropped += source.invalidate(first) ? 1 : 0;
        }
        BOOST_TEST(dropped == 1);

        auto second = (co_await source.token()).to_owned();
        BOOST_TEST(second.value() == "fake-token-2");

        // A late report about the old token does not evict the new one.
        BOOST_TEST(!source.invalidate(first));
        BOOST_TEST((co_await source.token()).value() == "fake-token-2");
    });
    BOOST_TEST(endpoint->requests.load() == 2);
    BOOST_TEST(source.stats().invalidations == 1u);
}

BOOST_FIXTURE_TEST_CASE(permanent_error_fails_all_and_is_remembered, fixture)
{
    endpoint->fallback.ec = stampede::oauth_errc::invalid_client;
    endpoint->fallback.delay = 20ms;
    endpoint->fallback.server_message = "client authentication failed";
    auto source = make_source();
    int failed = 0;
    for (int i = 0; i < 50; ++i) {
        source.async_token([&](error_code ec, stampede::access_token) {
            BOOST_TEST(ec == stampede::oauth_errc::invalid_client);
            ++failed;
        });
    }
    run_until_count(failed, 50);

    // Within the cool-down, new callers fail at once without a request.
    stampede::diagnostics diag;
    for (int i = 0; i < 50; ++i) {
        source.async_token(diag, [&](error_code ec, stampede::access_token) {
            BOOST_TEST(ec == stampede::oauth_errc::invalid_client);
            ++failed;
        });
    }
    run_until_count(failed, 100);
    BOOST_TEST(endpoint->requests.load() == 1);
    BOOST_TEST(diag.server_message() == "client authentication failed");
    BOOST_TEST(diag.client_message().find("remembered") != std::string::npos);
    BOOST_TEST(source.stats().cooldown_rejections == 50u);
}

BOOST_FIXTURE_TEST_CASE(token_throws_error_with_diagnostics, fixture)
{
    endpoint->fallback.ec = stampede::oauth_errc::invalid_client;
    endpoint->fallback.server_message = "bad secret";
    auto source = make_source();
    run([&]() -> asio::awaitable<void> {
        try {
            (void)co_await source.token();
            BOOST_FAIL("token() should have thrown");
        } catch (const stampede::error_with_diagnostics& e) {
            BOOST_TEST(e.code() == stampede::oauth_errc::invalid_client);
            BOOST_TEST(e.get_diagnostics().server_message() == "bad secret");
            BOOST_TEST(std::string(e.what()).find("bad secret") == std::string::npos);
        }
    });
}

BOOST_FIXTURE_TEST_CASE(retryable_errors_retry_then_succeed, fixture)
{
    endpoint->push({.ec = stampede::make_http_error(503)});
    endpoint->push({.ec = stampede::make_http_error(503)});
    endpoint->push({.ec = stampede::make_http_error(503)});
    auto source = make_source();
    run([&]() -> asio::awaitable<void> {
        BOOST_TEST((co_await source.token()).value() == "fake-token-4");
    });
    BOOST_TEST(endpoint->requests.load() == 4);
    BOOST_TEST(source.stats().retries == 3u);

    // The gaps between attempts are at least the backoff's minimum delay.
    for (std::size_t i = 1; i < endpoint->request_times.size(); ++i) {
        BOOST_TEST((endpoint->request_times[i] - endpoint->request_times[i - 1] >= 5ms));
    }
}

BOOST_FIXTURE_TEST_CASE(retries_exhausted_fail_waiters_with_last_error, fixture)
{
    endpoint->fallback.ec = stampede::make_http_error(503);
    auto s = fast_settings();
    s.backoff.max_attempts = 3;
    auto source = make_source(s);
    error_code result;
    int done = 0;
    source.async_token([&](error_code ec, stampede::access_token) {
        result = ec;
        ++done;
    });
    run_until_count(done, 1);
    BOOST_TEST(result == stampede::make_http_error(503));
    BOOST_TEST(result == stampede::condition::retryable);
    BOOST_TEST(endpoint->requests.load() == 3);
}

BOOST_AUTO_TEST_CASE(two_threads_share_one_fetch)
{
    asio::thread_pool pool(2);
    auto endpoint = std::make_shared<fake_endpoint>();
    endpoint->fallback.delay = 20ms;
    stampede::token_source source(pool.get_executor(), fast_settings(),
                                  std::make_unique<fake_fetcher>(endpoint));
    std::atomic<int> served{0};
    std::atomic<int> mismatched{0};
    for (int i = 0; i < 2000; ++i) {
        asio::co_spawn(pool, [&]() -> asio::awaitable<void> {
            for (int j = 0; j < 50; ++j) {
                auto token = co_await source.token();
                if (token.value() != "fake-token-1") {
                    ++mismatched;
                }
            }
            ++served;
        }, asio::detached);
    }
    while (served.load() < 2000) {
        std::this_thread::sleep_for(1ms);
    }
    BOOST_TEST(mismatched.load() == 0);
    BOOST_TEST(endpoint->requests.load() == 1);
    BOOST_TEST(source.stats().cache_hits + source.stats().waiters >= 2000u * 50u);
    source.shutdown();
    pool.join();
}

BOOST_FIXTURE_TEST_CASE(logs_never_contain_secret_or_token, fixture)
{
    auto s = fast_settings();
    // The sink may be called until the context has destroyed the source's last handler,
    // so it owns what it writes to.
    struct captured {
        std::mutex mutex;
        std::ostringstream text;
    };
    auto log = std::make_shared<captured>();
    s.logger.level = stampede::log_level::trace;
    s.logger.sink = [log](stampede::log_level, std::string_view line) {
        std::lock_guard lock(log->mutex);
        log->text << line << '\n';
    };
    endpoint->push({.ec = stampede::make_http_error(503)});
    endpoint->push({.expires_in = 1000ms});
    auto source = make_source(s);
    run([&]() -> asio::awaitable<void> {
        auto token = (co_await source.token()).to_owned();
        source.invalidate(token);
        (void)co_await source.token();
        co_await sleep_for(700ms); // a refresh ahead
    });
    std::ostringstream printed;
    printed << s << source.settings();
    if (auto token = source.try_token()) {
        printed << *token;
    }
    std::string text;
    {
        std::lock_guard lock(log->mutex);
        text = log->text.str() + printed.str();
    }
    BOOST_TEST(!text.empty());
    BOOST_TEST(text.find("test-secret-value") == std::string::npos);
    BOOST_TEST(text.find("fake-token-") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(settings_validation_names_the_field)
{
    asio::io_context ctx;
    struct bad_case {
        std::function<void(stampede::token_source_settings&)> change;
        std::string field;
    };
    const std::vector<bad_case> cases = {
        {[](auto& s) { s.client_id.clear(); }, "client_id"},
        {[](auto& s) { s.client_secret = {}; }, "client_secret"},
        {[](auto& s) { s.token_url = "not a url"; }, "token_url"},
        {[](auto& s) { s.token_url = "http://example.com/oauth/token"; }, "token_url"},
        {[](auto& s) { s.transport.read_timeout = 0ms; }, "transport.read_timeout"},
        {[](auto& s) { s.rate_limit.capacity = 0; }, "rate_limit.capacity"},
        {[](auto& s) { s.refresh_ahead = 50ms; }, "refresh_ahead"},
        {[](auto& s) { s.default_lifetime = -1ms; }, "default_lifetime"},
        {[](auto& s) { s.backoff.multiplier = 0.5; }, "multiplier"},
        {[](auto& s) { s.client_id = "id\r\nX-Injected: 1"; }, "client_id"},
        {[](auto& s) { s.transport.user_agent = "agent\r\nX-Injected: 1"; },
         "transport.user_agent"},
        {[](auto& s) { s.transport.request_timeout = std::chrono::milliseconds::max(); },
         "transport.request_timeout"},
        {[](auto& s) { s.max_lifetime = std::chrono::hours(24 * 365 * 100); }, "max_lifetime"},
        {[](auto& s) { s.default_lifetime = std::chrono::hours(24 * 365 * 100); },
         "default_lifetime"},
        {[](auto& s) { s.permanent_error_cooldown = std::chrono::milliseconds::max(); },
         "permanent_error_cooldown"},
        {[](auto& s) { s.expiry_margin = std::chrono::milliseconds::max(); }, "expiry_margin"},
        {[](auto& s) { s.backoff.max_delay = std::chrono::milliseconds::max(); }, "max_delay"},
        {[](auto& s) {
             s.rate_limit.capacity = 4000000000;
             s.rate_limit.refill_interval = 9000000000ms;
         },
         "rate_limit"},
    };
    for (const auto& c : cases) {
        auto s = fast_settings();
        c.change(s);
        try {
            stampede::token_source source(ctx.get_executor(), s,
                                          std::make_unique<fake_fetcher>(std::make_shared<fake_endpoint>()));
            BOOST_ERROR("settings with a bad " << c.field << " were accepted");
        } catch (const stampede::error_with_diagnostics& e) {
            BOOST_TEST(e.get_diagnostics().client_message().find(c.field) != std::string::npos,
                       "message for " << c.field << ": " << e.get_diagnostics().client_message());
            BOOST_TEST((e.code() == stampede::client_errc::invalid_settings ||
                        e.code() == stampede::client_errc::insecure_url));
        }
    }
}

BOOST_AUTO_TEST_CASE(schedule_handles_every_lifetime)
{
    const auto s = fast_settings(); // refresh_ahead 300 ms, expiry_margin 10 s
    const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
    using stampede::detail::plan_token_schedule;

    // 24 h: stale 10 s before expiry, refresh 300 ms before that.
    auto day = plan_token_schedule(t0, 24h, s);
    BOOST_TEST((day.expires_at - t0 == 24h));
    BOOST_TEST((day.expires_at - day.stale_at == 10s));
    BOOST_TEST((day.stale_at - day.refresh_at == 300ms));

    // Short lifetime: margin at most a tenth, refresh no earlier than halfway.
    auto short_lived = plan_token_schedule(t0, 1000ms, s);
    BOOST_TEST((short_lived.stale_at - t0 == 900ms));
    BOOST_TEST((short_lived.refresh_at - t0 >= 450ms));
    BOOST_TEST((short_lived.refresh_at > t0));

    // Missing expires_in: the default lifetime.
    auto missing = plan_token_schedule(t0, std::nullopt, s);
    BOOST_TEST((missing.lifetime == s.default_lifetime));

    // Huge: cut to max_lifetime.
    auto huge = plan_token_schedule(t0, std::chrono::milliseconds(std::chrono::hours(24 * 365 * 10)), s);
    BOOST_TEST((huge.lifetime == s.max_lifetime));

    // Fractional (1.5 s) keeps milliseconds.
    auto fractional = plan_token_schedule(t0, 1500ms, s);
    BOOST_TEST((fractional.expires_at - t0 == 1500ms));

    // A margin far longer than the lifetime still refreshes after the token was issued.
    auto tiny = plan_token_schedule(t0, 10ms, s);
    BOOST_TEST((tiny.refresh_at > t0));
    BOOST_TEST((tiny.refresh_at <= tiny.stale_at));
    BOOST_TEST((tiny.stale_at < tiny.expires_at));
}

BOOST_AUTO_TEST_CASE(secret_string_redacts_and_compares)
{
    stampede::secret_string secret("hunter2-secret");
    std::ostringstream os;
    os << secret;
    BOOST_TEST(os.str() == "[redacted]");
    BOOST_TEST(secret.reveal() == "hunter2-secret");
    stampede::secret_string copy = secret;
    BOOST_TEST((copy == secret));
    stampede::secret_string moved = std::move(copy);
    BOOST_TEST(copy.empty());
    BOOST_TEST(moved.reveal() == "hunter2-secret");
    moved.wipe();
    BOOST_TEST(moved.empty());
}
