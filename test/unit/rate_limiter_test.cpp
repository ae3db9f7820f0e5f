#define BOOST_TEST_MODULE rate_limiter
#include <boost/test/unit_test.hpp>

#include <stampede/error.hpp>
#include <stampede/rate_limiter.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using boost::system::error_code;
using stampede::rate_limit_settings;
using stampede::rate_limiter;
using stampede::token_bucket;

namespace {

using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;

// An arbitrary start for fake clocks, far from the epoch.
const time_point start_time = time_point{} + std::chrono::hours(1000);

rate_limit_settings make_settings(std::size_t capacity, std::chrono::milliseconds refill) {
    rate_limit_settings settings;
    settings.capacity = capacity;
    settings.refill_interval = refill;
    return settings;
}

// Returns the largest number of times in `sorted` that fit in a closed window of
// length `window`.
std::size_t max_in_window(const std::vector<time_point>& sorted, clock_type::duration window) {
    std::size_t best = 0;
    std::size_t end = 0;
    for (std::size_t begin = 0; begin < sorted.size(); ++begin) {
        end = std::max(end, begin);
        while (end < sorted.size() && sorted[end] <= sorted[begin] + window) {
            ++end;
        }
        best = std::max(best, end - begin);
    }
    return best;
}

std::size_t window_bound(const rate_limit_settings& settings, clock_type::duration window) {
    const auto refill = std::chrono::duration_cast<clock_type::duration>(settings.refill_interval);
    return settings.capacity + static_cast<std::size_t>(window / refill);
}

// Runs `body` as a coroutine on `ctx` until the context runs out of work, and rethrows
// its exception, if any.
template <class Body>
void run_coroutine(asio::io_context& ctx, Body body) {
    asio::co_spawn(ctx, std::move(body), [](std::exception_ptr e) {
        if (e) {
            std::rethrow_exception(e);
        }
    });
    ctx.run();
}

bool is_aborted(const error_code& ec) {
    return ec == asio::error::operation_aborted;
}

} // namespace

// token_bucket
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(bucket_starts_full) {
    token_bucket bucket(rate_limit_settings{});
    BOOST_TEST(bucket.time_until_available(start_time).count() == 0);
    for (int i = 0; i < 4; ++i) {
        BOOST_TEST(bucket.try_acquire(start_time));
    }
    BOOST_TEST(!bucket.try_acquire(start_time));
}

BOOST_AUTO_TEST_CASE(bucket_refills_one_per_interval) {
    token_bucket bucket(rate_limit_settings{});
    for (int i = 0; i < 4; ++i) {
        BOOST_TEST(bucket.try_acquire(start_time));
    }
    BOOST_TEST((bucket.time_until_available(start_time) == 4s));
    BOOST_TEST((bucket.time_until_available(start_time + 1s) == 3s));
    BOOST_TEST(!bucket.try_acquire(start_time + 4s - 1ns));
    BOOST_TEST(bucket.try_acquire(start_time + 4s));
    BOOST_TEST(!bucket.try_acquire(start_time + 4s));
    BOOST_TEST((bucket.time_until_available(start_time + 4s) == 4s));
    BOOST_TEST(bucket.try_acquire(start_time + 8s));
}

BOOST_AUTO_TEST_CASE(bucket_never_exceeds_capacity) {
    token_bucket bucket(rate_limit_settings{});
    BOOST_TEST(bucket.try_acquire(start_time));

    // After a long idle time the bucket holds `capacity` permits, no more.
    const auto later = start_time + 1h;
    for (int i = 0; i < 4; ++i) {
        BOOST_TEST(bucket.try_acquire(later));
    }
    BOOST_TEST(!bucket.try_acquire(later));
}

BOOST_AUTO_TEST_CASE(bucket_partial_refill) {
    token_bucket bucket(rate_limit_settings{});
    for (int i = 0; i < 4; ++i) {
        BOOST_TEST(bucket.try_acquire(start_time));
    }

    // 9 s later two permits have come back, the third is 3 s away.
    const auto later = start_time + 9s;
    BOOST_TEST(bucket.try_acquire(later));
    BOOST_TEST(bucket.try_acquire(later));
    BOOST_TEST(!bucket.try_acquire(later));
    BOOST_TEST((bucket.time_until_available(later) == 3s));
}

BOOST_AUTO_TEST_CASE(bucket_capacity_one) {
    token_bucket bucket(make_settings(1, 100ms));
    BOOST_TEST(bucket.try_acquire(start_time));
    BOOST_TEST(!bucket.try_acquire(start_time + 99ms));
    BOOST_TEST(bucket.try_acquire(start_time + 100ms));
    BOOST_TEST(!bucket.try_acquire(start_time + 100ms));
}

BOOST_AUTO_TEST_CASE(bucket_failure_changes_nothing) {
    token_bucket bucket(make_settings(1, 100ms));
    BOOST_TEST(bucket.try_acquire(start_time));
    for (int i = 0; i < 1000; ++i) {
        BOOST_TEST(!bucket.try_acquire(start_time + 50ms));
    }
    BOOST_TEST(bucket.try_acquire(start_time + 100ms));
}

BOOST_AUTO_TEST_CASE(greedy_schedule_reaches_bound) {
    // Taking each permit as soon as it is available fills a 60-second window with
    // exactly 19 permits under the defaults, so the property test below can fail.
    const rate_limit_settings settings;
    token_bucket bucket(settings);
    std::vector<time_point> granted;
    time_point now = start_time;
    while (now < start_time + 10min) {
        now += bucket.time_until_available(now);
        BOOST_TEST_REQUIRE(bucket.try_acquire(now));
        granted.push_back(now);
    }
    BOOST_TEST(max_in_window(granted, 60s) == 19u);
    BOOST_TEST(max_in_window(granted, 60s - 1ns) == 18u);
}

BOOST_AUTO_TEST_CASE(default_window_bound_property) {
    // Random schedules with bursts, short gaps and long pauses: no sliding 60-second
    // window ever contains more than 19 permits.
    std::mt19937_64 random(20240601);
    std::uniform_int_distribution<int> kind(0, 9);
    std::uniform_int_distribution<std::int64_t> short_gap(0, 200'000'000);
    std::uniform_int_distribution<std::int64_t> medium_gap(0, 5'000'000'000);
    std::uniform_int_distribution<std::int64_t> long_gap(0, 30'000'000'000);

    for (int run = 0; run < 20; ++run) {
        token_bucket bucket(rate_limit_settings{});
        std::vector<time_point> granted;
        time_point now = start_time;
        for (int i = 0; i < 20000; ++i) {
            const int k = kind(random);
            if (k < 3) {
                // Same instant: a burst.
            } else if (k < 7) {
                now += std::chrono::nanoseconds(short_gap(random));
            } else if (k < 9) {
                now += std::chrono::nanoseconds(medium_gap(random));
            } else {
                now += std::chrono::nanoseconds(long_gap(random));
            }
            if (bucket.try_acquire(now)) {
                granted.push_back(now);
            }
        }
        BOOST_TEST_CONTEXT("run " << run << ", " << granted.size() << " permits") {
            BOOST_TEST(granted.size() > 1000u);
            BOOST_TEST(max_in_window(granted, 60s) <= 19u);
        }
    }
}

BOOST_AUTO_TEST_CASE(general_window_bound_property) {
    // Random settings, schedules and window lengths:
    // at most capacity + floor(W / refill_interval) permits in any window of length W.
    std::mt19937_64 random(7);
    std::uniform_int_distribution<std::size_t> capacity(1, 12);
    std::uniform_int_distribution<int> refill_ms(1, 5000);
    std::uniform_int_distribution<int> kind(0, 3);

    for (int run = 0; run < 200; ++run) {
        const auto settings =
            make_settings(capacity(random), std::chrono::milliseconds(refill_ms(random)));
        const auto refill =
            std::chrono::duration_cast<clock_type::duration>(settings.refill_interval);
        std::uniform_int_distribution<std::int64_t> gap(0, refill.count() * 3 / 2);

        token_bucket bucket(settings);
        std::vector<time_point> granted;
        time_point now = start_time;
        for (int i = 0; i < 3000; ++i) {
            if (kind(random) != 0) {
                now += clock_type::duration(gap(random));
            }
            if (bucket.try_acquire(now)) {
                granted.push_back(now);
            }
        }

        std::uniform_int_distribution<std::int64_t> window(0, refill.count() * 40);
        for (int w = 0; w < 20; ++w) {
            const clock_type::duration length(window(random));
            BOOST_TEST_CONTEXT("capacity " << settings.capacity << ", refill "
                                           << settings.refill_interval.count() << " ms, window "
                                           << length.count() << " ns") {
                BOOST_TEST(max_in_window(granted, length) <= window_bound(settings, length));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(window_bound_with_clock_going_backwards) {
    // The bound holds for the `now` values of successful calls even when callers pass
    // times out of order.
    std::mt19937_64 random(99);
    std::uniform_int_distribution<std::int64_t> step(0, 3'000'000'000);
    std::uniform_int_distribution<std::int64_t> noise(-2'000'000'000, 2'000'000'000);

    const rate_limit_settings settings;
    token_bucket bucket(settings);
    std::vector<time_point> granted;
    time_point base = start_time;
    for (int i = 0; i < 50000; ++i) {
        base += std::chrono::nanoseconds(step(random));
        const time_point now = base + std::chrono::nanoseconds(noise(random));
        if (bucket.try_acquire(now)) {
            granted.push_back(now);
        }
    }
    std::sort(granted.begin(), granted.end());
    BOOST_TEST(max_in_window(granted, 60s) <= 19u);
    BOOST_TEST(max_in_window(granted, 10min) <= window_bound(settings, 10min));
}

BOOST_AUTO_TEST_CASE(coarse_reading_decides_like_precise) {
    // When gcra::lower_bound_decides accepts a lagging reading, the decision and the new
    // theoretical arrival time equal those of the true time.
    const stampede::detail::gcra gcra{4'000'000'000, 12'000'000'000};
    const std::int64_t max_lag = 64'000'000;
    std::mt19937_64 random(3);
    std::uniform_int_distribution<std::int64_t> tat_offset(-20'000'000'000, 20'000'000'000);
    std::uniform_int_distribution<std::int64_t> lag(0, max_lag - 1);

    int decided = 0;
    for (int i = 0; i < 1'000'000; ++i) {
        const std::int64_t now = 1'000'000'000'000;
        const std::int64_t tat = now + tat_offset(random);
        const std::int64_t lower = now - lag(random);
        if (gcra.lower_bound_decides(tat, lower, max_lag)) {
            ++decided;
            BOOST_TEST_REQUIRE(gcra.admits(tat, now));
            BOOST_TEST_REQUIRE(gcra.admits(tat, lower));
            BOOST_TEST_REQUIRE(gcra.next(tat, lower) == gcra.next(tat, now));
        }
    }
    BOOST_TEST(decided > 100'000);
}

BOOST_AUTO_TEST_CASE(validate_settings) {
    BOOST_TEST(stampede::validate(rate_limit_settings{}).empty());
    BOOST_TEST(stampede::validate(make_settings(0, 1s)).find("capacity") != std::string::npos);
    BOOST_TEST(stampede::validate(make_settings(1, 0ms)).find("refill_interval") !=
               std::string::npos);
    BOOST_TEST(stampede::validate(make_settings(1, -5ms)).find("refill_interval") !=
               std::string::npos);
    BOOST_TEST(!stampede::validate(make_settings(1'000'000, std::chrono::hours(24 * 365))).empty());
    BOOST_TEST(!stampede::validate(make_settings(std::size_t(-1), 1ms)).empty());
}

BOOST_AUTO_TEST_CASE(invalid_settings_throw) {
    asio::io_context ctx;
    try {
        token_bucket bucket(make_settings(0, 1s));
        BOOST_FAIL("no exception");
    } catch (const boost::system::system_error& e) {
        BOOST_TEST((e.code() == stampede::client_errc::invalid_settings));
    }
    try {
        rate_limiter limiter(ctx.get_executor(), make_settings(1, 0ms));
        BOOST_FAIL("no exception");
    } catch (const boost::system::system_error& e) {
        BOOST_TEST((e.code() == stampede::client_errc::invalid_settings));
    }
}

// rate_limiter: permits and ordering
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(limiter_burst_then_empty) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(3, 1h));
    BOOST_TEST(limiter.try_acquire());
    BOOST_TEST(limiter.try_acquire());
    BOOST_TEST(limiter.try_acquire());
    BOOST_TEST(!limiter.try_acquire());
    BOOST_TEST(limiter.stats().acquired == 3u);
    BOOST_TEST(limiter.stats().waited == 0u);
}

BOOST_AUTO_TEST_CASE(callback_never_inline_when_free) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 1h));
    std::optional<error_code> result;
    limiter.async_acquire([&](error_code ec) { result = ec; });
    BOOST_TEST(!result.has_value());

    ctx.run();
    BOOST_TEST_REQUIRE(result.has_value());
    BOOST_TEST(!*result);
    BOOST_TEST(limiter.stats().acquired == 1u);
}

BOOST_AUTO_TEST_CASE(callback_never_inline_after_shutdown) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 1h));
    limiter.shutdown();
    std::optional<error_code> result;
    limiter.async_acquire([&](error_code ec) { result = ec; });
    BOOST_TEST(!result.has_value());

    ctx.run();
    BOOST_TEST_REQUIRE(result.has_value());
    BOOST_TEST(is_aborted(*result));
}

BOOST_AUTO_TEST_CASE(waiter_gets_refilled_permit) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 30ms));
    const auto begin = clock_type::now();
    BOOST_TEST(limiter.try_acquire());

    std::optional<error_code> result;
    limiter.async_acquire([&](error_code ec) { result = ec; });
    BOOST_TEST(!result.has_value());
    ctx.run();

    BOOST_TEST_REQUIRE(result.has_value());
    BOOST_TEST(!*result);
    BOOST_TEST((clock_type::now() - begin >= 30ms));
    BOOST_TEST(limiter.stats().acquired == 2u);
    BOOST_TEST(limiter.stats().waited == 1u);
}

BOOST_AUTO_TEST_CASE(waiters_complete_in_fifo_order) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 20ms));
    const auto begin = clock_type::now();
    BOOST_TEST(limiter.try_acquire());

    std::vector<int> order;
    for (int i = 0; i < 6; ++i) {
        limiter.async_acquire([&order, i](error_code ec) {
            BOOST_TEST(!ec);
            order.push_back(i);
        });
    }

    // A caller that does not wait may not overtake the queue either.
    BOOST_TEST(!limiter.try_acquire());
    ctx.run();

    BOOST_TEST(order == (std::vector<int>{0, 1, 2, 3, 4, 5}));
    BOOST_TEST((clock_type::now() - begin >= 6 * 20ms));
    BOOST_TEST(limiter.stats().acquired == 7u);
    BOOST_TEST(limiter.stats().waited == 6u);
    BOOST_TEST(limiter.stats().cancelled == 0u);
}

BOOST_AUTO_TEST_CASE(fast_path_resumes_after_queue_drains) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(2, 10ms));
    BOOST_TEST(limiter.try_acquire());
    BOOST_TEST(limiter.try_acquire());
    int done = 0;
    limiter.async_acquire([&](error_code ec) {
        BOOST_TEST(!ec);
        ++done;
    });
    ctx.run();
    BOOST_TEST(done == 1);

    // Once the queue is empty and the bucket has refilled, try_acquire works again.
    asio::steady_timer timer(ctx, 50ms);
    timer.wait();
    BOOST_TEST(limiter.try_acquire());
}

// rate_limiter: cancellation and shutdown
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(cancel_one_waiter) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 30ms));
    BOOST_TEST(limiter.try_acquire());

    asio::cancellation_signal signal;
    std::vector<std::pair<int, error_code>> results;
    for (int i = 0; i < 4; ++i) {
        auto handler = [&results, i](error_code ec) { results.emplace_back(i, ec); };
        if (i == 1) {
            limiter.async_acquire(asio::bind_cancellation_slot(signal.slot(), handler));
        } else {
            limiter.async_acquire(handler);
        }
    }
    asio::post(ctx, [&] { signal.emit(asio::cancellation_type::terminal); });
    ctx.run();

    BOOST_TEST_REQUIRE(results.size() == 4u);
    BOOST_TEST(results[0].first == 1);
    BOOST_TEST(is_aborted(results[0].second));

    std::vector<int> granted;
    for (std::size_t i = 1; i < results.size(); ++i) {
        BOOST_TEST(!results[i].second);
        granted.push_back(results[i].first);
    }
    BOOST_TEST(granted == (std::vector<int>{0, 2, 3}));

    // The cancelled waiter consumed no permit.
    BOOST_TEST(limiter.stats().acquired == 4u);
    BOOST_TEST(limiter.stats().waited == 4u);
    BOOST_TEST(limiter.stats().cancelled == 1u);
}

BOOST_AUTO_TEST_CASE(cancelled_waiter_leaves_permit) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 40ms));
    BOOST_TEST(limiter.try_acquire());

    asio::cancellation_signal signal;
    std::optional<error_code> result;
    limiter.async_acquire(
        asio::bind_cancellation_slot(signal.slot(), [&](error_code ec) { result = ec; }));
    signal.emit(asio::cancellation_type::terminal);

    // After the refill interval the permit is still there for the next caller, and the
    // lock-free path is open again because the queue is empty.
    bool checked = false;
    asio::steady_timer timer(ctx, 50ms);
    timer.async_wait([&](error_code) {
        BOOST_TEST(limiter.try_acquire());
        BOOST_TEST(!limiter.try_acquire());
        checked = true;
    });
    ctx.run();

    BOOST_TEST_REQUIRE(result.has_value());
    BOOST_TEST(is_aborted(*result));
    BOOST_TEST(checked);
    BOOST_TEST(limiter.stats().acquired == 2u);
}

BOOST_AUTO_TEST_CASE(cancellation_types_honoured) {
    for (const auto type : {asio::cancellation_type::terminal, asio::cancellation_type::partial,
                            asio::cancellation_type::total}) {
        asio::io_context ctx;
        rate_limiter limiter(ctx.get_executor(), make_settings(1, 1h));
        BOOST_TEST(limiter.try_acquire());

        asio::cancellation_signal signal;
        std::optional<error_code> result;
        limiter.async_acquire(
            asio::bind_cancellation_slot(signal.slot(), [&](error_code ec) { result = ec; }));
        asio::post(ctx, [&] { signal.emit(type); });
        ctx.run();

        BOOST_TEST_CONTEXT("cancellation type " << static_cast<int>(type)) {
            BOOST_TEST_REQUIRE(result.has_value());
            BOOST_TEST(is_aborted(*result));
            BOOST_TEST(limiter.stats().cancelled == 1u);
        }
    }
}

BOOST_AUTO_TEST_CASE(cancel_after_free_permit_has_no_effect) {
    // A free permit is taken during async_acquire, so a later cancellation changes nothing.
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 1h));
    asio::cancellation_signal signal;
    std::optional<error_code> result;
    limiter.async_acquire(
        asio::bind_cancellation_slot(signal.slot(), [&](error_code ec) { result = ec; }));
    signal.emit(asio::cancellation_type::terminal);
    ctx.run();

    BOOST_TEST_REQUIRE(result.has_value());
    BOOST_TEST(!*result);
    BOOST_TEST(limiter.stats().cancelled == 0u);
}

BOOST_AUTO_TEST_CASE(shutdown_completes_waiters) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 1h));
    BOOST_TEST(limiter.try_acquire());

    std::vector<error_code> results;
    for (int i = 0; i < 3; ++i) {
        limiter.async_acquire([&](error_code ec) { results.push_back(ec); });
    }
    limiter.shutdown();
    BOOST_TEST(results.empty());
    ctx.run();

    BOOST_TEST_REQUIRE(results.size() == 3u);
    for (const auto& ec : results) {
        BOOST_TEST(is_aborted(ec));
    }
    BOOST_TEST(limiter.stats().cancelled == 3u);
    BOOST_TEST(!limiter.try_acquire());

    // Shutting down again changes nothing.
    limiter.shutdown();
    BOOST_TEST(limiter.stats().cancelled == 3u);
}

BOOST_AUTO_TEST_CASE(destructor_completes_waiters) {
    asio::io_context ctx;
    auto limiter = std::make_unique<rate_limiter>(ctx.get_executor(), make_settings(1, 1h));
    BOOST_TEST(limiter->try_acquire());

    asio::cancellation_signal signal;
    std::vector<error_code> results;
    limiter->async_acquire([&](error_code ec) { results.push_back(ec); });
    limiter->async_acquire(
        asio::bind_cancellation_slot(signal.slot(), [&](error_code ec) { results.push_back(ec); }));
    limiter.reset();
    ctx.run();

    BOOST_TEST_REQUIRE(results.size() == 2u);
    BOOST_TEST(is_aborted(results[0]));
    BOOST_TEST(is_aborted(results[1]));

    // The slot was cleared before the handler ran, so emitting now does nothing.
    signal.emit(asio::cancellation_type::terminal);
}

BOOST_AUTO_TEST_CASE(deferred_operation_outlives_limiter) {
    asio::io_context ctx;
    auto limiter = std::make_unique<rate_limiter>(ctx.get_executor(), make_settings(1, 1h));
    auto operation = limiter->async_acquire();
    limiter.reset();

    std::optional<error_code> result;
    std::move(operation)([&](error_code ec) { result = ec; });
    ctx.run();
    BOOST_TEST_REQUIRE(result.has_value());
    BOOST_TEST(is_aborted(*result));
}

// rate_limiter: completion tokens
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(default_token_is_deferred) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 1h));
    auto operation = limiter.async_acquire();
    BOOST_TEST(limiter.stats().acquired == 0u);

    std::optional<error_code> result;
    std::move(operation)([&](error_code ec) { result = ec; });
    BOOST_TEST(!result.has_value());
    ctx.run();
    BOOST_TEST_REQUIRE(result.has_value());
    BOOST_TEST(!*result);
    BOOST_TEST(limiter.stats().acquired == 1u);
}

BOOST_AUTO_TEST_CASE(deferred_awaited_in_coroutine) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 10ms));
    int acquired = 0;
    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        co_await limiter.async_acquire();
        co_await limiter.async_acquire(asio::deferred);
        acquired = 2;
    });
    BOOST_TEST(acquired == 2);
    BOOST_TEST(limiter.stats().waited == 1u);
}

BOOST_AUTO_TEST_CASE(use_awaitable_token) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 10ms));
    bool aborted = false;
    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        co_await limiter.async_acquire(asio::use_awaitable);
        co_await limiter.async_acquire(asio::use_awaitable);
        limiter.shutdown();
        try {
            co_await limiter.async_acquire(asio::use_awaitable);
        } catch (const boost::system::system_error& e) {
            aborted = is_aborted(e.code());
        }
    });
    BOOST_TEST(aborted);
}

BOOST_AUTO_TEST_CASE(as_tuple_token) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 10ms));
    std::vector<error_code> results;
    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto [first] = co_await limiter.async_acquire(asio::as_tuple(asio::use_awaitable));
        results.push_back(first);
        auto [second] = co_await limiter.async_acquire(asio::as_tuple(asio::deferred));
        results.push_back(second);
        limiter.shutdown();
        auto [third] = co_await limiter.async_acquire(asio::as_tuple(asio::use_awaitable));
        results.push_back(third);
    });
    BOOST_TEST_REQUIRE(results.size() == 3u);
    BOOST_TEST(!results[0]);
    BOOST_TEST(!results[1]);
    BOOST_TEST(is_aborted(results[2]));
}

BOOST_AUTO_TEST_CASE(use_future_token) {
    asio::io_context ctx;
    auto work = asio::make_work_guard(ctx);
    std::thread runner([&] { ctx.run(); });

    rate_limiter limiter(ctx.get_executor(), make_settings(1, 10ms));
    BOOST_CHECK_NO_THROW(limiter.async_acquire(asio::use_future).get());
    BOOST_CHECK_NO_THROW(limiter.async_acquire(asio::use_future).get());

    limiter.shutdown();
    auto aborted = limiter.async_acquire(asio::use_future);
    try {
        aborted.get();
        BOOST_FAIL("no exception");
    } catch (const boost::system::system_error& e) {
        BOOST_TEST(is_aborted(e.code()));
    }

    work.reset();
    runner.join();
}

BOOST_AUTO_TEST_CASE(handler_runs_on_its_executor) {
    asio::io_context ctx;
    auto strand = asio::make_strand(ctx);
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 10ms));

    int on_strand = 0;
    for (int i = 0; i < 2; ++i) {
        limiter.async_acquire(asio::bind_executor(strand, [&](error_code ec) {
            BOOST_TEST(!ec);
            if (strand.running_in_this_thread()) {
                ++on_strand;
            }
        }));
    }
    ctx.run();
    BOOST_TEST(on_strand == 2);
}

// rate_limiter: the awaitable form
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(acquire_does_not_suspend_when_free) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(3, 1h));
    bool other_ran = false;
    bool checked = false;
    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        asio::post(ctx, [&] { other_ran = true; });
        co_await limiter.acquire();
        co_await limiter.acquire();
        co_await limiter.acquire();

        // Had acquire() suspended, the posted function would have run.
        BOOST_TEST(!other_ran);
        checked = true;
    });
    BOOST_TEST(checked);
    BOOST_TEST(other_ran);
    BOOST_TEST(limiter.stats().acquired == 3u);
    BOOST_TEST(limiter.stats().waited == 0u);
}

BOOST_AUTO_TEST_CASE(acquire_waits_when_empty) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 25ms));
    const auto begin = clock_type::now();
    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        for (int i = 0; i < 4; ++i) {
            co_await limiter.acquire();
        }
    });
    BOOST_TEST((clock_type::now() - begin >= 3 * 25ms));
    BOOST_TEST(limiter.stats().acquired == 4u);
    BOOST_TEST(limiter.stats().waited == 3u);
}

BOOST_AUTO_TEST_CASE(acquire_throws_after_shutdown) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(3, 1h));
    limiter.shutdown();
    bool aborted = false;
    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        try {
            co_await limiter.acquire();
        } catch (const boost::system::system_error& e) {
            aborted = is_aborted(e.code());
        }
    });
    BOOST_TEST(aborted);
}

BOOST_AUTO_TEST_CASE(acquire_cancelled_through_coroutine) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1, 1h));
    BOOST_TEST(limiter.try_acquire());

    asio::cancellation_signal signal;
    bool aborted = false;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
            try {
                co_await limiter.acquire();
            } catch (const boost::system::system_error& e) {
                aborted = is_aborted(e.code());
            }
        },
        asio::bind_cancellation_slot(signal.slot(), asio::detached));
    asio::post(ctx, [&] { signal.emit(asio::cancellation_type::terminal); });
    ctx.run();

    BOOST_TEST(aborted);
    BOOST_TEST(limiter.stats().cancelled == 1u);
    BOOST_TEST(limiter.stats().acquired == 1u);
}

// rate_limiter: threads and logging
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(concurrent_try_acquire_hands_out_capacity) {
    // Four threads race for 1000 permits that do not refill during the test.
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(1000, 1h));
    std::atomic<int> granted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 1000; ++i) {
                if (limiter.try_acquire()) {
                    granted.fetch_add(1);
                }
            }
        });
    }
    for (auto& thread : threads) {
        thread.join();
    }
    BOOST_TEST(granted.load() == 1000);
    BOOST_TEST(limiter.stats().acquired == 1000u);
}

BOOST_AUTO_TEST_CASE(multithreaded_waiters_all_served) {
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), make_settings(4, 2ms));
    std::atomic<int> acquired{0};
    std::atomic<int> failed{0};

    const auto begin = clock_type::now();
    for (int c = 0; c < 8; ++c) {
        asio::co_spawn(
            asio::make_strand(ctx),
            [&]() -> asio::awaitable<void> {
                for (int i = 0; i < 10; ++i) {
                    if (i % 2 == 0) {
                        co_await limiter.acquire();
                    } else {
                        co_await limiter.async_acquire(asio::use_awaitable);
                    }
                    acquired.fetch_add(1);
                }
            },
            [&](std::exception_ptr e) {
                if (e) {
                    failed.fetch_add(1);
                }
            });
    }
    std::thread helper([&] { ctx.run(); });
    ctx.run();
    helper.join();

    BOOST_TEST(failed.load() == 0);
    BOOST_TEST(acquired.load() == 80);
    BOOST_TEST(limiter.stats().acquired == 80u);

    // 4 at once, then one every 2 ms.
    BOOST_TEST((clock_type::now() - begin >= 76 * 2ms));
}

BOOST_AUTO_TEST_CASE(mixed_callers_respect_bound) {
    // Coroutines that queue and threads that spin on try_acquire compete for permits.
    // Every permit is handed out between `begin` and `end`, so the count can be checked
    // against the bound for that span, however slow the machine is.
    const auto settings = make_settings(3, 5ms);
    asio::io_context ctx;
    rate_limiter limiter(ctx.get_executor(), settings);
    std::atomic<int> coroutines_done{0};
    std::atomic<int> failed{0};
    std::atomic<bool> stop{false};

    const auto begin = clock_type::now();
    for (int c = 0; c < 6; ++c) {
        asio::co_spawn(
            asio::make_strand(ctx),
            [&]() -> asio::awaitable<void> {
                for (int i = 0; i < 5; ++i) {
                    co_await limiter.acquire();
                }
                coroutines_done.fetch_add(1);
            },
            [&](std::exception_ptr e) {
                if (e) {
                    failed.fetch_add(1);
                }
            });
    }

    std::atomic<int> spun{0};
    std::vector<std::thread> spinners;
    for (int t = 0; t < 2; ++t) {
        spinners.emplace_back([&] {
            while (!stop.load()) {
                if (limiter.try_acquire()) {
                    spun.fetch_add(1);
                }
                std::this_thread::yield();
            }
        });
    }
    std::thread helper([&] { ctx.run(); });
    ctx.run();
    helper.join();
    stop = true;
    for (auto& thread : spinners) {
        thread.join();
    }
    const auto end = clock_type::now();

    BOOST_TEST(failed.load() == 0);
    BOOST_TEST(coroutines_done.load() == 6);
    BOOST_TEST(limiter.stats().acquired == static_cast<std::uint64_t>(30 + spun.load()));
    BOOST_TEST(limiter.stats().acquired <= window_bound(settings, end - begin));
}

BOOST_AUTO_TEST_CASE(each_wait_is_logged) {
    asio::io_context ctx;
    std::vector<std::string> records;
    stampede::logger log;
    log.level = stampede::log_level::debug;
    log.sink = [&](stampede::log_level level, std::string_view message) {
        BOOST_TEST((level == stampede::log_level::debug));
        records.emplace_back(message);
    };

    rate_limiter limiter(ctx.get_executor(), make_settings(1, 10ms), log);
    BOOST_TEST(limiter.try_acquire());
    BOOST_TEST(records.empty());

    limiter.async_acquire([](error_code) {});
    limiter.async_acquire([](error_code) {});
    ctx.run();

    BOOST_TEST_REQUIRE(records.size() == 2u);
    BOOST_TEST(records[0].find("waiting") != std::string::npos);
    BOOST_TEST(records[1].find("2 in the queue") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(logging_off_calls_no_sink) {
    asio::io_context ctx;
    int calls = 0;
    stampede::logger log;
    log.level = stampede::log_level::info;
    log.sink = [&](stampede::log_level, std::string_view) { ++calls; };

    rate_limiter limiter(ctx.get_executor(), make_settings(1, 10ms), log);
    BOOST_TEST(limiter.try_acquire());
    limiter.async_acquire([](error_code) {});
    ctx.run();
    BOOST_TEST(calls == 0);
}
