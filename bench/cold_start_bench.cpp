// Cold start: N coroutines call `token()` on a new token source at once, against the
// emulator over TLS on loopback. Measures the requests the emulator receives, the time
// from the parsed response to the resumption of the last caller, and the memory that each
// waiting caller holds. The baseline is N coroutines suspended on one `steady_timer`,
// measured in the same way: its bytes while they wait, and the time from `cancel()` to
// the resumption of the last of them.

#include "support.hpp"

#include <stampede/detail/http_token_fetcher.hpp>
#include <stampede/token_source.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace stampede::bench {
namespace {

struct resume_progress {
    explicit resume_progress(std::size_t callers)
        : expected(callers)
    {}

    std::size_t expected;
    std::size_t resumed = 0;
    clock::time_point last_resumed_at;
    clock::duration last_resumed_cpu{};
    std::int64_t frees_at_last_resumed = 0;

    void on_resumed()
    {
        if (++resumed == expected) {
            last_resumed_at = clock::now();
            last_resumed_cpu = thread_cpu_time();
            frees_at_last_resumed = live_allocations_on_this_thread().frees;
        }
    }
};

asio::awaitable<void> token_caller(token_source& auth, resume_progress& progress)
{
    access_token_view token = co_await auth.token();
    benchmark::DoNotOptimize(token.value().data());
    progress.on_resumed();
}

asio::awaitable<void> timer_caller(asio::steady_timer& timer, resume_progress& progress)
{
    auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    benchmark::DoNotOptimize(ec);
    progress.on_resumed();
}

struct waiters_measurement {
    // Bytes and blocks allocated per waiting caller, all callers suspended.
    double bytes_per_waiter = 0;
    double blocks_per_waiter = 0;

    // From the event that wakes the callers to the resumption of the last one, in CPU
    // time of the thread that resumes them and in wall-clock time.
    double resume_ns_per_waiter = 0;
    double resume_wall_ns_per_waiter = 0;
    double resume_frees_per_waiter = 0;
    std::size_t resumed = 0;
};

// N coroutines suspended on one timer, then woken by cancelling it.
waiters_measurement measure_timer_waiters(std::size_t n)
{
    asio::io_context io;
    asio::steady_timer timer(io, std::chrono::hours(1));
    resume_progress progress(n);
    waiters_measurement m;

    const live_allocations before = live_allocations_on_this_thread();
    for (std::size_t i = 0; i < n; ++i) {
        asio::co_spawn(io, timer_caller(timer, progress), asio::detached);
    }
    io.poll();
    const live_allocations waiting = live_allocations_on_this_thread();
    m.bytes_per_waiter = double(waiting.bytes - before.bytes) / double(n);
    m.blocks_per_waiter = double(waiting.blocks - before.blocks) / double(n);

    const auto woken_at = clock::now();
    const auto woken_cpu = thread_cpu_time();
    const std::int64_t frees_before = live_allocations_on_this_thread().frees;
    timer.cancel();
    while (progress.resumed < n && io.run_one() != 0) {
    }
    m.resumed = progress.resumed;
    m.resume_frees_per_waiter = double(progress.frees_at_last_resumed - frees_before) / double(n);
    m.resume_ns_per_waiter = to_ns(progress.last_resumed_cpu - woken_cpu) / double(n);
    m.resume_wall_ns_per_waiter = to_ns(progress.last_resumed_at - woken_at) / double(n);
    return m;
}

struct token_cold_start : waiters_measurement {
    std::uint64_t token_requests = 0;
    std::uint64_t waiters_at_fetch_start = 0;
    double fetch_ms = 0;
};

// N coroutines wait in `token()` of a new source. The probe around the HTTP fetcher reads
// the allocation count when the request starts, when every caller is already queued
// (their starts were posted before the fetch's), and the time when the response has been
// parsed.
token_cold_start measure_token_waiters(std::size_t n)
{
    emulator_fixture& fixture = shared_emulator();
    const token_source_settings settings = fixture.settings();
    asio::io_context io;
    resume_progress progress(n);
    token_cold_start m;

    token_source* source = nullptr;
    live_allocations at_fetch_start;
    clock::time_point fetch_started_at;
    clock::time_point response_at;
    clock::duration response_cpu{};
    std::int64_t frees_at_response = 0;
    auto on_fetch_start = [&] {
        at_fetch_start = live_allocations_on_this_thread();
        fetch_started_at = clock::now();
        m.waiters_at_fetch_start = source->stats().waiters;
    };
    auto on_response = [&] {
        response_at = clock::now();
        response_cpu = thread_cpu_time();
        frees_at_response = live_allocations_on_this_thread().frees;
    };
    token_source auth(io.get_executor(), settings,
                      std::make_unique<probing_fetcher>(
                          detail::make_http_token_fetcher(io.get_executor(), settings),
                          on_fetch_start, on_response));
    source = &auth;

    const std::uint64_t requests_before = fixture.server().get_stats().token_requests;
    const live_allocations before = live_allocations_on_this_thread();
    for (std::size_t i = 0; i < n; ++i) {
        asio::co_spawn(io, token_caller(auth, progress), asio::detached);
    }
    while (progress.resumed < n && io.run_one() != 0) {
    }

    m.resumed = progress.resumed;
    m.token_requests = fixture.server().get_stats().token_requests - requests_before;
    m.bytes_per_waiter = double(at_fetch_start.bytes - before.bytes) / double(n);
    m.blocks_per_waiter = double(at_fetch_start.blocks - before.blocks) / double(n);
    m.resume_ns_per_waiter = to_ns(progress.last_resumed_cpu - response_cpu) / double(n);
    m.resume_wall_ns_per_waiter = to_ns(progress.last_resumed_at - response_at) / double(n);
    m.resume_frees_per_waiter =
        double(progress.frees_at_last_resumed - frees_at_response) / double(n);
    m.fetch_ms = to_ns(response_at - fetch_started_at) * 1e-6;
    return m;
}

void cold_start(benchmark::State& state)
{
    const auto n = static_cast<std::size_t>(state.range(0));
    for (auto _ : state) {
        const waiters_measurement timer = measure_timer_waiters(n);
        const token_cold_start token = measure_token_waiters(n);
        if (timer.resumed != n || token.resumed != n) {
            state.SkipWithError("not every caller was resumed");
            return;
        }
        state.SetIterationTime(token.resume_wall_ns_per_waiter * double(n) * 1e-9);

        state.counters["token_requests"] = double(token.token_requests);
        state.counters["waiters_at_fetch_start"] = double(token.waiters_at_fetch_start);
        state.counters["fetch_ms"] = token.fetch_ms;
        state.counters["resume_ns_per_waiter"] = token.resume_ns_per_waiter;
        state.counters["timer_resume_ns_per_waiter"] = timer.resume_ns_per_waiter;
        state.counters["resume_wall_ns_per_waiter"] = token.resume_wall_ns_per_waiter;
        state.counters["timer_resume_wall_ns_per_waiter"] = timer.resume_wall_ns_per_waiter;
        state.counters["resume_frees_per_waiter"] = token.resume_frees_per_waiter;
        state.counters["timer_resume_frees_per_waiter"] = timer.resume_frees_per_waiter;
        state.counters["bytes_per_waiter"] = token.bytes_per_waiter;
        state.counters["timer_bytes_per_waiter"] = timer.bytes_per_waiter;
        state.counters["extra_bytes_per_waiter"] = token.bytes_per_waiter - timer.bytes_per_waiter;
        state.counters["extra_blocks_per_waiter"] =
            token.blocks_per_waiter - timer.blocks_per_waiter;
    }
}

BENCHMARK(cold_start)
    ->Arg(1'000)
    ->Arg(10'000)
    ->Arg(100'000)
    ->Iterations(1)
    ->Repetitions(5)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

} // namespace
} // namespace stampede::bench
