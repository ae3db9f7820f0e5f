// Stress tests of token_source with tokens that live a few milliseconds. Two threads and
// many coroutines call token(), async_token(), try_token() and invalidate(). They cancel
// their waits (cancellation slots, and awaitable_operators `||` with a timer) and shut the
// source down while calls are in flight. Every call must complete exactly once, and the
// counters must add up.
//
// The first cases use the scripted fetcher of test/support for speed; the last runs
// against the in-process emulator over TLS. The amount of work is fixed by counts, and no
// check depends on how long anything takes.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE token_source_stress
#include <boost/test/unit_test.hpp>

#include "../support/fake_fetcher.hpp"

#include <emulator.hpp>
#include <stampede/error.hpp>
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
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>
#include <variant>
#include <vector>

namespace asio = boost::asio;
namespace emulator = stampede::emulator;

using boost::system::error_code;
using stampede::test::fake_answer;
using stampede::test::fake_endpoint;
using stampede::test::fake_fetcher;
using namespace std::chrono_literals;

namespace {

constexpr auto as_awaitable = asio::as_tuple(asio::use_awaitable);

// Outcomes of the calls of one run, counted from any thread. Boost.Test is not
// thread-safe, so the workers record problems here and the test thread checks them.
struct call_counts {
    std::atomic<std::uint64_t> started{0};
    std::atomic<std::uint64_t> completed{0};
    std::atomic<std::uint64_t> succeeded{0};
    std::atomic<std::uint64_t> aborted{0};
    std::atomic<std::uint64_t> failed{0};

    /// Calls of token() and async_token(), each of which stats() counts once.
    std::atomic<std::uint64_t> token_calls{0};

    /// Calls of token() alone.
    std::atomic<std::uint64_t> coroutine_calls{0};

    /// try_token() calls that returned a token.
    std::atomic<std::uint64_t> try_hits{0};

    /// Waits cancelled through a cancellation slot that completed with operation_aborted.
    std::atomic<std::uint64_t> cancelled{0};

    /// Races against a timer that the timer won.
    std::atomic<std::uint64_t> timer_wins{0};

    /// invalidate() calls that returned true.
    std::atomic<std::uint64_t> invalidated{0};

    /// Set once shutdown() has returned. Calls that start later must be aborted.
    std::atomic<bool> shut_down{false};

    std::mutex mutex;
    std::vector<std::string> problems;

    void problem(std::string text)
    {
        std::lock_guard lock(mutex);
        problems.push_back(std::move(text));
    }

    // Counts the completion of a call that started when `after_shutdown` was as given.
    void complete(const error_code& ec, bool after_shutdown)
    {
        if (!ec) {
            ++succeeded;
        } else if (ec == asio::error::operation_aborted) {
            ++aborted;
        } else {
            ++failed;
        }
        if (after_shutdown && ec != asio::error::operation_aborted) {
            problem("a call started after shutdown() completed with \"" + ec.message() + "\"");
        }
        ++completed;
    }

    std::vector<std::string> take_problems()
    {
        std::lock_guard lock(mutex);
        return std::move(problems);
    }
};

enum class call_kind {
    token,
    async_token,
    callback,
    cancel_at_once,
    cancel_later,
    race_timer,
    invalidate,
    try_token,
    pause,
};

constexpr call_kind all_kinds[] = {
    call_kind::token,          call_kind::async_token,  call_kind::callback,
    call_kind::cancel_at_once, call_kind::cancel_later, call_kind::race_timer,
    call_kind::invalidate,     call_kind::try_token,    call_kind::pause,
};

// One coroutine of the stress run, on a strand of its own so that cancellation signals
// and the handlers they cancel are serialized.
class worker {
public:
    worker(stampede::token_source& source, call_counts& counts, std::string_view token_prefix,
           unsigned seed)
        : source_(source)
        , counts_(counts)
        , token_prefix_(token_prefix)
        , random_(seed)
    {}

    asio::awaitable<void> run(int calls)
    {
        for (int i = 0; i < calls; ++i) {
            const auto kind = all_kinds[random_() % std::size(all_kinds)];
            co_await call(kind);
        }
    }

private:
    asio::awaitable<void> call(call_kind kind)
    {
        switch (kind) {
        case call_kind::token:
            co_await call_token();
            break;
        case call_kind::async_token:
            co_await call_async_token();
            break;
        case call_kind::callback:
            call_with_callback();
            break;
        case call_kind::cancel_at_once:
            co_await call_and_cancel(std::chrono::milliseconds(0));
            break;
        case call_kind::cancel_later:
            co_await call_and_cancel(std::chrono::milliseconds(random_() % 4));
            break;
        case call_kind::race_timer:
            co_await call_against_timer(std::chrono::milliseconds(random_() % 4));
            break;
        case call_kind::invalidate:
            call_invalidate();
            break;
        case call_kind::try_token:
            call_try_token();
            break;
        case call_kind::pause:
            co_await pause(std::chrono::milliseconds(random_() % 4));
            break;
        }
    }

    bool start()
    {
        ++counts_.started;
        ++counts_.token_calls;
        return counts_.shut_down.load();
    }

    void check_value(std::string_view value)
    {
        if (value.empty() || !value.starts_with(token_prefix_)) {
            counts_.problem("a call returned the unexpected token text of " +
                            std::to_string(value.size()) + " bytes");
        }
    }

    asio::awaitable<void> call_token()
    {
        const bool after_shutdown = start();
        ++counts_.coroutine_calls;
        try {
            const auto view = co_await source_.token();
            check_value(view.value());
            last_token_ = view.value();
            counts_.complete({}, after_shutdown);
        } catch (const stampede::error_with_diagnostics& e) {
            counts_.complete(e.code(), after_shutdown);
        }
    }

    asio::awaitable<void> call_async_token()
    {
        const bool after_shutdown = start();
        auto [ec, token] = co_await source_.async_token(as_awaitable);
        if (!ec) {
            check_value(token.value());
            last_token_ = token.value();
        }
        counts_.complete(ec, after_shutdown);
    }

    // Starts a call whose handler runs on the source's executor and is not awaited.
    void call_with_callback()
    {
        const bool after_shutdown = start();
        source_.async_token(
            [&counts = counts_, after_shutdown](error_code ec, stampede::access_token) {
                counts.complete(ec, after_shutdown);
            });
    }

    asio::cancellation_type random_cancellation_type()
    {
        constexpr asio::cancellation_type types[] = {asio::cancellation_type::terminal,
                                                     asio::cancellation_type::partial,
                                                     asio::cancellation_type::total};
        return types[random_() % std::size(types)];
    }

    // Starts a wait bound to a cancellation slot and emits the signal after `delay`,
    // unless the wait has completed by then.
    asio::awaitable<void> call_and_cancel(std::chrono::milliseconds delay)
    {
        const auto ex = co_await asio::this_coro::executor;
        const bool after_shutdown = start();
        asio::cancellation_signal signal;
        std::optional<error_code> result;
        asio::steady_timer wake(ex, asio::steady_timer::time_point::max());
        source_.async_token(asio::bind_cancellation_slot(
            signal.slot(), asio::bind_executor(ex, [&](error_code ec, stampede::access_token) {
                result = ec;
                wake.cancel();
            })));

        if (delay.count() > 0) {
            asio::steady_timer pause(ex, delay);
            co_await pause.async_wait(as_awaitable);
        }
        if (!result) {
            signal.emit(random_cancellation_type());
        }
        while (!result) {
            co_await wake.async_wait(as_awaitable);
        }
        if (*result == asio::error::operation_aborted && !after_shutdown) {
            ++counts_.cancelled;
        }
        counts_.complete(*result, after_shutdown);
    }

    asio::awaitable<void> call_against_timer(std::chrono::milliseconds delay)
    {
        using namespace asio::experimental::awaitable_operators;
        const auto ex = co_await asio::this_coro::executor;
        const bool after_shutdown = start();
        asio::steady_timer timer(ex, delay);
        auto outcome =
            co_await (source_.async_token(as_awaitable) || timer.async_wait(as_awaitable));
        if (outcome.index() == 0) {
            auto& [ec, token] = std::get<0>(outcome);
            counts_.complete(ec, after_shutdown);
        } else {
            ++counts_.timer_wins;
            counts_.complete(asio::error::operation_aborted, after_shutdown);
        }
    }

    // Drops the last token seen, one time in eight, so that most tokens live long enough
    // to be refreshed ahead or to go stale.
    void call_invalidate()
    {
        if (source_.invalidate("not-a-token-the-source-issued")) {
            counts_.problem("invalidate() dropped the token for an unknown value");
        }
        if (!last_token_.empty() && random_() % 8 == 0 && source_.invalidate(last_token_)) {
            ++counts_.invalidated;
        }
    }

    asio::awaitable<void> pause(std::chrono::milliseconds delay)
    {
        asio::steady_timer timer(co_await asio::this_coro::executor, delay);
        co_await timer.async_wait(as_awaitable);
    }

    void call_try_token()
    {
        if (const auto view = source_.try_token()) {
            check_value(view->value());
            ++counts_.try_hits;
        }
    }

    stampede::token_source& source_;
    call_counts& counts_;
    std::string token_prefix_;
    std::minstd_rand random_;
    std::string last_token_;
};

// Polls until `done()` holds. Reports the counts every 10 s without progress, so that a
// run that hangs (and is stopped by the ctest timeout) shows where it stopped.
template <class Predicate>
void wait_until(Predicate done, const call_counts& counts)
{
    auto last_completed = counts.completed.load();
    auto last_change = std::chrono::steady_clock::now();
    while (!done()) {
        std::this_thread::sleep_for(1ms);
        const auto completed = counts.completed.load();
        const auto now = std::chrono::steady_clock::now();
        if (completed != last_completed) {
            last_completed = completed;
            last_change = now;
        } else if (now - last_change > 10s) {
            BOOST_TEST_MESSAGE("no call completed for 10 s: " << counts.started.load()
                                                              << " started, " << completed
                                                              << " completed");
            last_change = now;
        }
    }
}

// Coroutines started by `start_workers`, each on a strand of its own.
struct worker_group {
    std::atomic<int> finished{0};
    std::atomic<int> crashed{0};
    int size = 0;
};

std::shared_ptr<worker_group> start_workers(asio::thread_pool& pool, stampede::token_source& source,
                                            call_counts& counts, std::string_view token_prefix,
                                            int workers, int calls, unsigned seed)
{
    auto group = std::make_shared<worker_group>();
    group->size = workers;
    for (int i = 0; i < workers; ++i) {
        auto w = std::make_shared<worker>(source, counts, token_prefix, seed + i);
        asio::co_spawn(asio::make_strand(pool), w->run(calls), [w, group](std::exception_ptr e) {
            if (e) {
                ++group->crashed;
            }
            ++group->finished;
        });
    }
    return group;
}

// Waits until every worker has finished and every call has completed.
void wait_for_workers(const worker_group& group, const call_counts& counts)
{
    wait_until(
        [&] {
            return group.finished.load() == group.size &&
                   counts.completed.load() == counts.started.load();
        },
        counts);
    BOOST_TEST(group.crashed.load() == 0);
}

void check_no_problems(call_counts& counts)
{
    for (const std::string& problem : counts.take_problems()) {
        BOOST_ERROR(problem);
    }
}

// Checks the counters that depend only on the calls made, which must be settled: every
// call has completed and none started since.
void check_call_counters(const stampede::token_source_stats& stats, const call_counts& counts)
{
    BOOST_TEST_INFO("stats: " << stats);

    // Each token() or async_token() call is a cache hit, a waiter or a rejection during
    // the cooldown of a permanent error. try_token() counts only its hits.
    const auto counted = stats.cache_hits + stats.waiters + stats.cooldown_rejections;
    const auto calls = counts.token_calls.load() + counts.try_hits.load();
    BOOST_TEST(counted == calls);
    BOOST_TEST(stats.coalesced_waiters <= stats.waiters);
    BOOST_TEST(stats.invalidations == counts.invalidated.load());

    // A race lost to the timer cancels its wait only if the wait was still queued.
    BOOST_TEST(stats.cancelled_waiters >= counts.cancelled.load());
    BOOST_TEST(stats.cancelled_waiters <= counts.cancelled.load() + counts.timer_wins.load());
}

// Checks the counters of requests once the source is shut down and its executor idle.
void check_request_counters(const stampede::token_source_stats& stats)
{
    BOOST_TEST_MESSAGE("stats: " << stats);
    BOOST_TEST_INFO("stats: " << stats);

    // Every request ends as a token, a retryable or a permanent failure, except one that
    // shutdown() aborted.
    const auto ended = stats.tokens_fetched + stats.retryable_failures + stats.permanent_failures;
    BOOST_TEST(stats.requests >= ended);
    BOOST_TEST(stats.requests <= ended + 1);
    BOOST_TEST(stats.retries <= stats.retryable_failures);
    BOOST_TEST(stats.tokens_fetched > 0u);
}

void check_outcomes(const call_counts& counts)
{
    BOOST_TEST(counts.started.load() > 0u);
    BOOST_TEST(counts.completed.load() == counts.started.load());
    BOOST_TEST(counts.succeeded.load() + counts.aborted.load() + counts.failed.load() ==
               counts.completed.load());
    BOOST_TEST(counts.succeeded.load() > 0u);
}

//
// Scripted fetcher
//

stampede::token_source_settings fast_settings()
{
    stampede::token_source_settings s;
    s.client_id = "stress-client";
    s.client_secret = stampede::secret_string("stress-secret-value");
    s.token_url = "https://127.0.0.1:9/oauth/token";
    s.transport.request_timeout = 100ms;
    s.refresh_ahead = 300ms;
    s.expiry_margin = 1ms;
    s.backoff.initial_delay = 2ms;
    s.backoff.min_delay = 1ms;
    s.backoff.max_delay = 5ms;
    s.backoff.max_attempts = 4;
    s.rate_limit.capacity = 1000000;
    s.rate_limit.refill_interval = 1ms;
    return s;
}

// Scripted fetches whose tokens live 10 to 40 ms, which take 0 to 2 ms and fail with 503
// one time in seven, so that background refreshes, stale tokens and retries keep happening.
std::shared_ptr<fake_endpoint> short_lived_tokens()
{
    auto endpoint = std::make_shared<fake_endpoint>();
    for (int i = 0; i < 5000; ++i) {
        fake_answer answer;
        answer.delay = std::chrono::milliseconds(i % 3);
        if (i % 7 == 3) {
            answer.ec = stampede::make_http_error(503);
        } else {
            answer.expires_in = std::chrono::milliseconds(10 + i % 31);
        }
        endpoint->push(answer);
    }
    endpoint->fallback.expires_in = 20ms;
    endpoint->fallback.delay = 1ms;
    return endpoint;
}

//
// Emulator over TLS
//

// A file name in the temporary directory, unique to this process and call, removed on exit.
class temp_file {
public:
    temp_file()
    {
        static std::atomic<int> counter{0};
        path_ = std::filesystem::temp_directory_path() /
                ("stampede-stress-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
                 ".pem");
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

} // namespace

BOOST_AUTO_TEST_CASE(fake_calls_complete_and_add_up)
{
    asio::thread_pool pool(2);
    const auto endpoint = short_lived_tokens();
    stampede::token_source source(pool.get_executor(), fast_settings(),
                                  std::make_unique<fake_fetcher>(endpoint));

    call_counts counts;
    const auto group = start_workers(pool, source, counts, "fake-token-", 64, 150, 1);
    wait_for_workers(*group, counts);
    check_no_problems(counts);
    check_outcomes(counts);
    check_call_counters(source.stats(), counts);

    source.shutdown();
    pool.join();
    const auto stats = source.stats();
    check_request_counters(stats);
    BOOST_TEST(stats.requests == static_cast<std::uint64_t>(endpoint->requests.load()));
    // Whether a refresh ahead happens depends on timing: frequent invalidations and a slow
    // machine can drop every token before its refresh point. The unit tests cover it.
    BOOST_WARN(stats.refreshes_ahead > 0u);
    BOOST_TEST(endpoint->max_in_flight.load() == 1);
    BOOST_TEST(endpoint->in_flight.load() == 0);
}

BOOST_AUTO_TEST_CASE(shutdown_under_load_aborts_every_call)
{
    asio::thread_pool pool(2);
    const auto endpoint = short_lived_tokens();
    stampede::token_source source(pool.get_executor(), fast_settings(),
                                  std::make_unique<fake_fetcher>(endpoint));

    call_counts counts;
    const auto group = start_workers(pool, source, counts, "fake-token-", 64, 150, 1000);
    wait_until([&] { return counts.completed.load() >= 2000 || group->finished == group->size; },
               counts);
    source.shutdown();
    counts.shut_down = true;
    const auto aborted_before = counts.aborted.load();
    wait_for_workers(*group, counts);

    check_no_problems(counts);
    check_outcomes(counts);
    BOOST_TEST(counts.aborted.load() > aborted_before);
    BOOST_TEST(!source.try_token().has_value());

    pool.join();
    const auto stats = source.stats();
    check_request_counters(stats);
    BOOST_TEST(endpoint->in_flight.load() == 0);
}

BOOST_AUTO_TEST_CASE(destroying_last_copy_completes_waiters)
{
    asio::thread_pool pool(2);
    auto endpoint = std::make_shared<fake_endpoint>();
    endpoint->fallback.delay = 10s;
    auto source = std::make_unique<stampede::token_source>(
        pool.get_executor(), fast_settings(), std::make_unique<fake_fetcher>(endpoint));

    call_counts counts;
    constexpr int callers = 1000;
    for (int i = 0; i < callers; ++i) {
        ++counts.started;
        source->async_token([&counts](error_code ec, stampede::access_token token) {
            if (token) {
                counts.problem("a waiter got a token although the fetch never ended");
            }
            counts.complete(ec, true);
        });
    }

    // Wait until the fetch has started, so that the waiters are queued behind it.
    while (endpoint->in_flight.load() == 0) {
        std::this_thread::sleep_for(1ms);
    }
    source.reset();
    wait_until([&] { return counts.completed.load() == callers; }, counts);

    check_no_problems(counts);
    BOOST_TEST(counts.aborted.load() == static_cast<std::uint64_t>(callers));
    pool.join();
    BOOST_TEST(endpoint->in_flight.load() == 0);
}

BOOST_AUTO_TEST_CASE(emulator_calls_complete_and_add_up)
{
    temp_file cert_file;
    emulator::options opts;
    opts.cert_out = cert_file.string();
    opts.token_rate = {1000000, std::chrono::seconds(1)};
    opts.token_lifetime = 1s;
    // Network and server faults among the first requests, so retries and reconnects happen.
    opts.fault_script = "ok,5xx-html:503,ok,reset,ok*2,429-seconds:0,ok,close-mid-body,ok*2,"
                        "truncated-json,ok,reset,ok*2,5xx-html:502";
    emulator::server server(opts);
    server.start();

    stampede::token_source_settings settings;
    settings.client_id = "demo-client";
    settings.client_secret = stampede::secret_string("demo-secret");
    settings.token_url = server.token_url();
    settings.transport.ca_file = cert_file.string();
    settings.transport.request_timeout = 5s;
    // Each fetch opens a new connection, so resolving and connecting run under load too.
    settings.transport.idle_timeout = 1ms;
    settings.refresh_ahead = 20s;
    settings.expiry_margin = 1ms;
    settings.backoff.initial_delay = 2ms;
    settings.backoff.min_delay = 1ms;
    settings.backoff.max_delay = 5ms;
    settings.rate_limit.capacity = 1000000;
    settings.rate_limit.refill_interval = 1ms;

    asio::thread_pool pool(2);
    stampede::token_source source(pool.get_executor(), settings);

    call_counts counts;
    // Emulator tokens are 43 base64url characters, so any prefix of the alphabet matches.
    const auto group = start_workers(pool, source, counts, "", 16, 150, 5000);
    wait_for_workers(*group, counts);
    check_no_problems(counts);
    check_outcomes(counts);
    check_call_counters(source.stats(), counts);

    source.shutdown();
    pool.join();
    const auto stats = source.stats();
    check_request_counters(stats);

    // A connection the client opened last may still wait in the listen backlog.
    auto server_stats = server.get_stats();
    for (int i = 0; i < 200 && server_stats.connections_accepted < stats.connections_opened; ++i) {
        std::this_thread::sleep_for(10ms);
        server_stats = server.get_stats();
    }
    BOOST_TEST_INFO("stats: " << stats);
    BOOST_TEST(server_stats.tokens_issued >= stats.tokens_fetched);
    BOOST_TEST(server_stats.token_requests >= stats.tokens_fetched + stats.retryable_failures);
    BOOST_TEST(server_stats.connections_accepted >= stats.connections_opened);
    server.stop();
}

// A token() call that waits for a fetch counts as one waiter and no cache hit.
BOOST_AUTO_TEST_CASE(waiting_call_counts_once)
{
    asio::io_context io;
    stampede::token_source source(
        io.get_executor(), fast_settings(),
        std::make_unique<fake_fetcher>(std::make_shared<fake_endpoint>()));
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            (void)co_await source.token();
            done = true;
        },
        asio::detached);
    while (!done && io.run_one() != 0) {
    }
    BOOST_TEST_REQUIRE(done);
    const auto stats = source.stats();
    BOOST_TEST(stats.waiters == 1u);
    BOOST_TEST(stats.cache_hits == 0u);
    source.shutdown();
}
