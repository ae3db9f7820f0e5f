// The cached paths: `co_await token()` and `try_token()` with a token in the cache, on one
// and on two threads, and `rate_limiter::acquire()` with permits free, each next to the
// baseline it is compared with. The token comes from a fetcher that returns at once,
// because these paths never fetch once the first token is cached.

#include "support.hpp"

#include <stampede/rate_limiter.hpp>
#include <stampede/token_source.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace stampede::bench {
namespace {

// Repetitions of each single-thread loop; the figures take their median.
constexpr int micro_repetitions = 10;

// Calls in the multi-thread runs: coroutines x chunks x calls per chunk. Each coroutine
// yields to the scheduler between chunks, so the coroutines share both threads.
constexpr int load_coroutines = 64;
constexpr int chunks_per_coroutine = 400;
constexpr int calls_per_chunk = 256;

token_source_settings instant_settings()
{
    token_source_settings s;
    s.client_id = "bench-client";
    s.client_secret = secret_string("bench-secret");
    s.token_url = "https://127.0.0.1/oauth/token"; // never contacted: the fetcher is local
    return s;
}

asio::awaitable<void> prime(token_source& auth)
{
    access_token_view token = co_await auth.token();
    benchmark::DoNotOptimize(token.value().data());
}

// A token source on its own io_context, with a token in the calling thread's cache.
struct primed_source {
    asio::io_context io;
    token_source auth{io.get_executor(), instant_settings(), std::make_unique<instant_fetcher>()};

    primed_source() { run_until_done(io, prime(auth)); }
};

// The baseline of the coroutine loops: an awaitable that completes at once.
asio::awaitable<int> ready_value(int value)
{
    co_return value;
}

asio::awaitable<void> loop_bare_co_await(benchmark::State& state)
{
    int i = 0;
    for (auto _ : state) {
        int value = co_await ready_value(++i);
        benchmark::DoNotOptimize(value);
    }
}

void bare_co_await(benchmark::State& state)
{
    asio::io_context io;
    run_until_done(io, loop_bare_co_await(state));
}

asio::awaitable<void> loop_cached_token(benchmark::State& state, token_source& auth)
{
    for (auto _ : state) {
        access_token_view token = co_await auth.token();
        benchmark::DoNotOptimize(token.value().data());
    }
}

void cached_token(benchmark::State& state)
{
    primed_source source;
    run_until_done(source.io, loop_cached_token(state, source.auth));
}

void mutex_lock_unlock(benchmark::State& state)
{
    std::mutex mutex;
    for (auto _ : state) {
        mutex.lock();
        mutex.unlock();
    }
}

void try_token(benchmark::State& state)
{
    primed_source source;
    for (auto _ : state) {
        std::optional<access_token_view> token = source.auth.try_token();
        benchmark::DoNotOptimize(token->value().data());
    }
}

asio::awaitable<void> loop_limiter_acquire(benchmark::State& state, rate_limiter& limiter)
{
    for (auto _ : state) {
        co_await limiter.acquire();
    }
}

void limiter_acquire(benchmark::State& state)
{
    // A billion permits at once and one more per millisecond: the loop never runs out.
    // After the first few dozen permits the bucket is no longer full, so the limiter
    // decides from CLOCK_MONOTONIC_COARSE, as it does under steady use.
    asio::io_context io;
    rate_limiter limiter(io.get_executor(),
                         rate_limit_settings{1'000'000'000, std::chrono::milliseconds(1)});
    run_until_done(io, loop_limiter_acquire(state, limiter));
}

// Calls made by the current thread in `token_threads`.
thread_local std::uint64_t calls_on_this_thread = 0;

asio::awaitable<void> token_load(token_source& auth, asio::io_context& io,
                                 std::atomic<int>& running)
{
    for (int chunk = 0; chunk < chunks_per_coroutine; ++chunk) {
        for (int i = 0; i < calls_per_chunk; ++i) {
            access_token_view token = co_await auth.token();
            benchmark::DoNotOptimize(token.value().data());
        }
        calls_on_this_thread += calls_per_chunk;
        co_await asio::post(io.get_executor(), asio::use_awaitable);
    }
    if (running.fetch_sub(1) == 1) {
        io.stop();
    }
}

struct thread_result {
    std::uint64_t calls = 0;
    clock::duration wall{};
    clock::duration cpu{};
};

// Cached `token()` calls from many coroutines on an io_context run by `state.range(0)`
// threads. Reports the calls per second of wall-clock time, and the sum over threads of
// each thread's calls per second of its own CPU time. The second figure is what the
// threads would reach if each had a core to itself, so it shows whether the threads slow
// each other down even when other processes take the cores.
void token_threads(benchmark::State& state)
{
    const auto threads = static_cast<std::size_t>(state.range(0));
    double calls_per_wall_second = 0;
    double calls_per_cpu_second = 0;
    for (auto _ : state) {
        primed_source source;
        std::atomic<int> running{load_coroutines};
        for (int i = 0; i < load_coroutines; ++i) {
            asio::co_spawn(source.io, token_load(source.auth, source.io, running), asio::detached);
        }

        std::vector<thread_result> results(threads);
        std::vector<std::thread> pool;
        for (thread_result& result : results) {
            pool.emplace_back([&source, &result] {
                calls_on_this_thread = 0;
                const auto cpu_start = thread_cpu_time();
                const auto wall_start = clock::now();
                source.io.run();
                result.wall = clock::now() - wall_start;
                result.cpu = thread_cpu_time() - cpu_start;
                result.calls = calls_on_this_thread;
            });
        }
        for (std::thread& t : pool) {
            t.join();
        }

        std::uint64_t calls = 0;
        clock::duration wall{};
        calls_per_cpu_second = 0;
        for (const thread_result& result : results) {
            calls += result.calls;
            wall = std::max(wall, result.wall);
            if (result.cpu.count() > 0) {
                calls_per_cpu_second += double(result.calls) / (to_ns(result.cpu) * 1e-9);
            }
        }
        calls_per_wall_second = double(calls) / (to_ns(wall) * 1e-9);
        state.SetIterationTime(to_ns(wall) * 1e-9);
    }
    state.counters["calls_per_wall_s"] = calls_per_wall_second;
    state.counters["calls_per_cpu_s"] = calls_per_cpu_second;
}

BENCHMARK(bare_co_await)->Repetitions(micro_repetitions);
BENCHMARK(cached_token)->Repetitions(micro_repetitions);
BENCHMARK(mutex_lock_unlock)->Repetitions(micro_repetitions);
BENCHMARK(try_token)->Repetitions(micro_repetitions);
BENCHMARK(limiter_acquire)->Repetitions(micro_repetitions);
BENCHMARK(token_threads)
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->Repetitions(7)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

} // namespace
} // namespace stampede::bench
