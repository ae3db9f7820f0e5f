// Fleet mode of token_source without servers: several sources stand for the processes of
// a fleet and share a memory_token_store; a store wrapper fails on demand.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE token_source_fleet
#include <boost/test/unit_test.hpp>

#include "../support/fake_fetcher.hpp"

#include <stampede/error.hpp>
#include <stampede/shared_rate_limiter.hpp>
#include <stampede/token_cache_key.hpp>
#include <stampede/token_source.hpp>
#include <stampede/token_store.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <future>
#include <memory>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using boost::system::error_code;
using stampede::test::fake_answer;
using stampede::test::fake_endpoint;
using stampede::test::fake_fetcher;

namespace {

stampede::token_source_settings fleet_settings(std::shared_ptr<stampede::token_store> store)
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
    s.fleet.store = std::move(store);
    s.fleet.lease_ttl = 2s;
    s.fleet.max_wait = 200ms;
    return s;
}

// A memory_token_store whose operations fail with `connection_refused` while `failing`
// is set, as a Redis store does while its server is down.
class flaky_store final : public stampede::token_store {
public:
    explicit flaky_store(executor_type ex)
        : inner_(ex)
    {}

    std::atomic<bool> failing{false};
    std::atomic<int> failures{0};

    executor_type get_executor() const noexcept override { return inner_.get_executor(); }

private:
    template <class Handler, class... Args>
    bool fail(Handler& handler, Args... empty)
    {
        if (!failing.load()) {
            return false;
        }
        ++failures;
        asio::post(inner_.get_executor(), [h = std::move(handler), empty...]() mutable {
            std::move(h)(make_error_code(boost::system::errc::connection_refused), empty...);
        });
        return true;
    }

    void do_get(stampede::token_key key,
                stampede::detail::store_handler<std::optional<stampede::stored_token>> handler)
        override
    {
        if (!fail(handler, std::optional<stampede::stored_token>())) {
            inner_.async_get(std::move(key), std::move(handler));
        }
    }

    void do_put(stampede::token_key key, stampede::stored_token value,
                stampede::detail::store_handler<> handler) override
    {
        if (!fail(handler)) {
            inner_.async_put(std::move(key), std::move(value), std::move(handler));
        }
    }

    void do_try_lease(std::string cache_key, std::chrono::milliseconds ttl,
                      stampede::detail::store_handler<std::optional<stampede::token_lease>>
                          handler) override
    {
        if (!fail(handler, std::optional<stampede::token_lease>())) {
            inner_.async_try_lease(std::move(cache_key), ttl, std::move(handler));
        }
    }

    void do_release(stampede::token_lease lease,
                    stampede::detail::store_handler<bool> handler) override
    {
        if (!fail(handler, false)) {
            inner_.async_release(std::move(lease), std::move(handler));
        }
    }

    void do_wait(stampede::token_key key, stampede::secret_string replaced_token,
                 std::chrono::milliseconds max_wait,
                 stampede::detail::store_handler<std::optional<stampede::stored_token>> handler)
        override
    {
        if (!fail(handler, std::optional<stampede::stored_token>())) {
            inner_.async_wait_for_replacement(std::move(key), std::move(replaced_token), max_wait,
                                              std::move(handler));
        }
    }

    void do_invalidate(stampede::token_key key, stampede::secret_string token_value,
                       stampede::detail::store_handler<bool> handler) override
    {
        if (!fail(handler, false)) {
            inner_.async_invalidate(std::move(key), std::move(token_value), std::move(handler));
        }
    }

    stampede::memory_token_store inner_;
};

// A fleet limiter that denies the first `denials` requests for `retry_after` each.
class scripted_limiter final : public stampede::shared_rate_limiter {
public:
    scripted_limiter(asio::any_io_executor ex, int denials, std::chrono::milliseconds retry_after)
        : executor_(std::move(ex))
        , denials_(denials)
        , retry_after_(retry_after)
    {}

    int calls = 0;

private:
    void do_try_acquire(try_acquire_handler handler) override
    {
        ++calls;
        stampede::limit_decision decision;
        decision.allowed = calls > denials_;
        decision.retry_after = decision.allowed ? 0ms : retry_after_;
        asio::post(executor_, [h = std::move(handler), decision]() mutable {
            std::move(h)(error_code(), decision);
        });
    }

    asio::any_io_executor executor_;
    int denials_;
    std::chrono::milliseconds retry_after_;
};

// Sources that share one store and one fake endpoint, each with its own fetcher, as the
// processes of a fleet do.
struct fleet_fixture {
    asio::io_context ctx;
    std::shared_ptr<fake_endpoint> endpoint = std::make_shared<fake_endpoint>();
    std::shared_ptr<flaky_store> store = std::make_shared<flaky_store>(ctx.get_executor());
    std::deque<stampede::token_source> sources;

    stampede::token_source& add_source(stampede::token_source_settings s)
    {
        return sources.emplace_back(ctx.get_executor(), std::move(s),
                                    std::make_unique<fake_fetcher>(endpoint));
    }

    stampede::token_source& add_source() { return add_source(fleet_settings(store)); }

    // Starts `callers` token() calls on every source and runs until all have completed.
    // Returns the number that got a token.
    int call_all(int callers)
    {
        int finished = 0;
        int served = 0;
        for (auto& source : sources) {
            for (int i = 0; i < callers; ++i) {
                asio::co_spawn(
                    ctx,
                    [&]() -> asio::awaitable<void> {
                        try {
                            auto token = co_await source.token();
                            if (!token.value().empty()) {
                                ++served;
                            }
                        } catch (const std::exception&) {
                        }
                        ++finished;
                    },
                    asio::detached);
            }
        }
        const int expected = callers * static_cast<int>(sources.size());
        ctx.restart();
        while (finished < expected) {
            if (ctx.run_one() == 0) {
                BOOST_FAIL("io_context ran out of work with " << finished << " of " << expected);
            }
        }
        return served;
    }

    std::string current_token(stampede::token_source& source)
    {
        auto token = source.try_token();
        return token ? std::string(token->value()) : std::string();
    }

    void shutdown_all()
    {
        for (auto& source : sources) {
            source.shutdown();
        }
        ctx.restart();
        ctx.run_for(50ms);
    }
};

} // namespace

BOOST_FIXTURE_TEST_CASE(fleet_cold_start_fetches_once, fleet_fixture)
{
    endpoint->fallback.delay = 20ms;
    for (int i = 0; i < 8; ++i) {
        add_source();
    }
    BOOST_TEST(call_all(100) == 800);
    BOOST_TEST(endpoint->requests.load() == 1);

    std::uint64_t shared_hits = 0;
    std::uint64_t leases_taken = 0;
    for (auto& source : sources) {
        BOOST_TEST(current_token(source) == "fake-token-1");
        shared_hits += source.stats().shared_hits;
        leases_taken += source.stats().leases_taken;
        BOOST_TEST(source.stats().store_errors == 0u);
    }
    BOOST_TEST(shared_hits == 7u);
    BOOST_TEST(leases_taken == 1u);
    shutdown_all();
}

BOOST_FIXTURE_TEST_CASE(fleet_refresh_ahead_fetches_once, fleet_fixture)
{
    // 1 s tokens: stale 100 ms before expiry, refreshed 300 ms before that.
    endpoint->fallback.expires_in = 1000ms;
    for (int i = 0; i < 4; ++i) {
        add_source();
    }
    BOOST_TEST(call_all(10) == 40);
    BOOST_TEST(endpoint->requests.load() == 1);

    // The refresh is due 600 ms after the first request, the next one 600 ms later.
    ctx.restart();
    ctx.run_for(850ms);
    BOOST_TEST(endpoint->requests.load() == 2);
    std::uint64_t refreshes = 0;
    for (auto& source : sources) {
        BOOST_TEST(current_token(source) == "fake-token-2");
        refreshes += source.stats().refreshes_ahead;
    }
    BOOST_TEST(refreshes == 4u);
    shutdown_all();
}

BOOST_FIXTURE_TEST_CASE(fleet_store_failure_falls_back_locally, fleet_fixture)
{
    store->failing = true;
    for (int i = 0; i < 3; ++i) {
        add_source();
    }
    BOOST_TEST(call_all(50) == 150);

    // Each source fetched for itself, once, coalescing its own callers.
    BOOST_TEST(endpoint->requests.load() == 3);
    for (auto& source : sources) {
        BOOST_TEST(source.stats().store_errors >= 1u);
        BOOST_TEST(source.stats().shared_hits == 0u);
        BOOST_TEST(source.stats().coalesced_waiters == 49u);
    }
    shutdown_all();
}

BOOST_FIXTURE_TEST_CASE(fleet_mode_returns_after_store_recovers, fleet_fixture)
{
    store->failing = true;
    auto& first = add_source();
    BOOST_TEST(call_all(1) == 1);
    BOOST_TEST(endpoint->requests.load() == 1);

    // The fallback fetch stores its token in the background, which fails too.
    ctx.restart();
    ctx.poll();
    const auto errors_while_down = first.stats().store_errors;
    BOOST_TEST(errors_while_down >= 2u);

    // Once the store works, a rejected token is replaced through the store, and a new
    // source takes that token instead of fetching.
    store->failing = false;
    BOOST_TEST(first.invalidate(current_token(first)));
    BOOST_TEST(call_all(1) == 1);
    BOOST_TEST(endpoint->requests.load() == 2);
    BOOST_TEST(first.stats().leases_taken == 1u);
    BOOST_TEST(first.stats().store_errors == errors_while_down);

    auto& second = add_source();
    BOOST_TEST(call_all(1) == 2);
    BOOST_TEST(endpoint->requests.load() == 2);
    BOOST_TEST(second.stats().shared_hits == 1u);
    BOOST_TEST(current_token(second) == "fake-token-2");
    shutdown_all();
}

BOOST_FIXTURE_TEST_CASE(fleet_invalidated_token_is_not_taken_back, fleet_fixture)
{
    auto& first = add_source();
    auto& second = add_source();
    BOOST_TEST(call_all(1) == 2);
    BOOST_TEST(endpoint->requests.load() == 1);
    BOOST_TEST(current_token(second) == "fake-token-1");

    // The API rejected the token: the first source drops it here and in the store.
    BOOST_TEST(first.invalidate("fake-token-1"));
    BOOST_TEST(call_all(1) == 2);
    BOOST_TEST(endpoint->requests.load() == 2);
    BOOST_TEST(current_token(first) == "fake-token-2");

    // The second source keeps the old token until it reports the 401 itself, then
    // takes the new token from the store.
    BOOST_TEST(current_token(second) == "fake-token-1");
    BOOST_TEST(second.invalidate("fake-token-1"));
    BOOST_TEST(call_all(1) == 2);
    BOOST_TEST(endpoint->requests.load() == 2);
    BOOST_TEST(current_token(second) == "fake-token-2");
    BOOST_TEST(second.stats().shared_hits == 2u);
    shutdown_all();
}

BOOST_FIXTURE_TEST_CASE(fleet_shutdown_releases_lease, fleet_fixture)
{
    // The first request hangs until the source shuts down.
    endpoint->push(fake_answer{.delay = 1h});
    auto& holder = add_source();
    int holder_done = 0;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
            try {
                co_await holder.token();
            } catch (const std::exception&) {
            }
            ++holder_done;
        },
        asio::detached);
    ctx.restart();
    while (endpoint->requests.load() < 1) {
        ctx.run_one();
    }
    BOOST_TEST(holder.stats().leases_taken == 1u);
    holder.shutdown();
    while (holder_done < 1) {
        ctx.run_one();
    }

    // With the lease released, another source fetches without waiting for it to expire.
    add_source();
    sources.pop_front();
    BOOST_TEST(call_all(1) == 1);
    BOOST_TEST(endpoint->requests.load() == 2);
    BOOST_TEST(sources.front().stats().lease_waits == 0u);
    BOOST_TEST(holder_done == 1);
    shutdown_all();
}

BOOST_FIXTURE_TEST_CASE(fleet_shutdown_ends_lease_wait, fleet_fixture)
{
    // The holder's request hangs, and the other source would wait an hour for it.
    endpoint->push(fake_answer{.delay = 1h});
    auto& holder = add_source();
    auto waiting_settings = fleet_settings(store);
    waiting_settings.fleet.max_wait = 1h;
    auto& waiter = add_source(waiting_settings);

    int done = 0;
    for (auto* source : {&holder, &waiter}) {
        asio::co_spawn(
            ctx,
            [&done, source]() -> asio::awaitable<void> {
                try {
                    co_await source->token();
                } catch (const std::exception&) {
                }
                ++done;
            },
            asio::detached);
    }
    ctx.restart();
    while (waiter.stats().lease_waits < 1) {
        ctx.run_one();
    }

    // Both shut down: the wait and the request end, so the context runs out of work.
    waiter.shutdown();
    holder.shutdown();
    ctx.restart();
    ctx.run();
    BOOST_TEST(done == 2);
    BOOST_TEST(endpoint->requests.load() == 1);
}

BOOST_FIXTURE_TEST_CASE(fleet_stale_lease_is_waited_out, fleet_fixture)
{
    auto settings = fleet_settings(store);
    settings.fleet.lease_ttl = 300ms;
    settings.fleet.max_wait = 50ms;

    // Something else holds the lease for an hour and never stores a token.
    std::optional<stampede::token_lease> foreign;
    store->async_try_lease(stampede::token_cache_key(settings), 1h,
                           [&](boost::system::error_code, std::optional<stampede::token_lease> lease) {
                               foreign = std::move(lease);
                           });
    ctx.run();
    BOOST_TEST_REQUIRE(foreign.has_value());

    auto& waiter = add_source(settings);
    const auto started = std::chrono::steady_clock::now();
    BOOST_TEST(call_all(10) == 10);
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    const auto stale_after = 2 * settings.fleet.lease_ttl + settings.fleet.max_wait;
    BOOST_TEST(waited.count() >= stale_after.count());
    BOOST_TEST(endpoint->requests.load() == 1);
    BOOST_TEST(waiter.stats().stale_leases == 1u);
    BOOST_TEST(waiter.stats().lease_waits >= 1u);

    // The token fetched without the lease was stored: another process adopts it at once.
    ctx.restart();
    ctx.run_for(50ms);
    auto& late = add_source(settings);
    BOOST_TEST(call_all(1) == 2);
    BOOST_TEST(endpoint->requests.load() == 1);
    BOOST_TEST(late.stats().shared_hits == 1u);
    shutdown_all();
}

BOOST_FIXTURE_TEST_CASE(fleet_limiter_delays_the_request, fleet_fixture)
{
    auto limiter = std::make_shared<scripted_limiter>(ctx.get_executor(), 2, 20ms);
    auto settings = fleet_settings(store);
    settings.fleet.limiter = limiter;
    auto& source = add_source(settings);
    BOOST_TEST(call_all(5) == 5);
    BOOST_TEST(endpoint->requests.load() == 1);
    BOOST_TEST(limiter->calls == 3);
    BOOST_TEST(source.stats().fleet_limited_waits == 2u);
    // The lease covers the short waits, so it was taken once.
    BOOST_TEST(source.stats().leases_taken == 1u);
    shutdown_all();
}

BOOST_AUTO_TEST_CASE(fleet_sources_on_thread_pool)
{
    // Sources on a multi-threaded executor, called and invalidated from other threads.
    asio::thread_pool pool(4);
    auto endpoint = std::make_shared<fake_endpoint>();
    endpoint->fallback.delay = 20ms;
    auto store = std::make_shared<stampede::memory_token_store>(pool.get_executor());
    std::deque<stampede::token_source> sources;
    for (int i = 0; i < 4; ++i) {
        sources.emplace_back(pool.get_executor(), fleet_settings(store),
                             std::make_unique<fake_fetcher>(endpoint));
    }

    const auto call_all = [&] {
        std::vector<std::future<stampede::access_token>> futures;
        for (auto& source : sources) {
            for (int i = 0; i < 250; ++i) {
                futures.push_back(source.async_token(asio::use_future));
            }
        }
        std::vector<std::string> values;
        for (auto& f : futures) {
            values.emplace_back(f.get().value());
        }
        return values;
    };

    for (const auto& value : call_all()) {
        BOOST_TEST(value == "fake-token-1");
    }
    BOOST_TEST(endpoint->requests.load() == 1);

    // Every source reports the rejected token; the fleet replaces it once.
    for (auto& source : sources) {
        BOOST_TEST(source.invalidate("fake-token-1"));
    }
    for (const auto& value : call_all()) {
        BOOST_TEST(value == "fake-token-2");
    }
    BOOST_TEST(endpoint->requests.load() == 2);

    std::uint64_t shared_hits = 0;
    for (auto& source : sources) {
        shared_hits += source.stats().shared_hits;
        source.shutdown();
    }
    BOOST_TEST(shared_hits == 6u);
    pool.join();
}

BOOST_AUTO_TEST_CASE(fleet_settings_are_validated)
{
    asio::io_context ctx;
    auto store = std::make_shared<stampede::memory_token_store>(ctx.get_executor());
    stampede::diagnostics diag;

    auto valid = fleet_settings(store);
    BOOST_TEST(!stampede::validate(valid, diag));

    auto limiter_alone = fleet_settings(nullptr);
    limiter_alone.fleet.limiter = std::make_shared<scripted_limiter>(ctx.get_executor(), 0, 0ms);
    BOOST_TEST(stampede::validate(limiter_alone, diag) == stampede::client_errc::invalid_settings);
    BOOST_TEST(diag.client_message().find("fleet.store") != std::string::npos);

    auto short_lease = fleet_settings(store);
    short_lease.fleet.lease_ttl = short_lease.transport.request_timeout;
    BOOST_TEST(stampede::validate(short_lease, diag) == stampede::client_errc::invalid_settings);
    BOOST_TEST(diag.client_message().find("fleet.lease_ttl") != std::string::npos);

    auto no_wait = fleet_settings(store);
    no_wait.fleet.max_wait = 0ms;
    BOOST_TEST(stampede::validate(no_wait, diag) == stampede::client_errc::invalid_settings);
    BOOST_TEST(diag.client_message().find("fleet.max_wait") != std::string::npos);
}
