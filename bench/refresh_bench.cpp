// Refresh ahead under load: coroutines on two threads call `token()` without pause while
// the token source refreshes its token in the background, the emulator sending each
// refresh response 50 ms late (fault `slow:50`). The baseline is the same load with a token that
// is not due for refresh. Each call is timed on its own.
//
// A call slower than 10 ms can come from the SDK (the caller waited for a fetch or a lock)
// or from the kernel preempting the thread in the middle of the call, which happens on a
// loaded machine whatever the SDK does. getrusage(RUSAGE_THREAD) around each call tells
// the two apart: a call during which the thread switched involuntarily and never
// voluntarily, and that ended on the thread it started on, was preempted.

#include "support.hpp"

#include <stampede/token_source.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <sys/resource.h>
#include <thread>
#include <vector>

namespace stampede::bench {
namespace {

constexpr int load_threads = 2;
constexpr int load_coroutines = 8;
constexpr auto load_duration = std::chrono::milliseconds(2200);
constexpr auto slow_call = std::chrono::milliseconds(10);

// With a 2 s token the source refreshes 0.9 s after each request was sent (halfway
// through the usable life, which ends 0.2 s before expiry), so twice in the load window.
constexpr auto refreshing_lifetime = std::chrono::seconds(2);
constexpr auto steady_lifetime = std::chrono::hours(24);

// Index of the load thread running the current coroutine; 0 elsewhere.
thread_local int load_thread_index = 0;

struct context_switches {
    long voluntary = 0;
    long involuntary = 0;
};

context_switches thread_context_switches() noexcept
{
    rusage usage{};
    getrusage(RUSAGE_THREAD, &usage);
    return {usage.ru_nvcsw, usage.ru_nivcsw};
}

struct load_tally {
    std::vector<std::uint64_t> samples_ns;
    std::uint64_t slow_calls = 0;
    std::uint64_t slow_calls_preempted = 0;
};

asio::awaitable<void> token_load(token_source& auth, clock::time_point end, load_tally& tally,
                                 std::atomic<int>& running, asio::io_context& io)
{
    for (;;) {
        const int thread_before = load_thread_index;
        const context_switches switches_before = thread_context_switches();
        const auto start = clock::now();
        access_token_view token = co_await auth.token();
        const auto finish = clock::now();
        const context_switches switches_after = thread_context_switches();
        benchmark::DoNotOptimize(token.value().data());

        const auto elapsed = finish - start;
        tally.samples_ns.push_back(std::uint64_t(to_ns(elapsed)));
        if (elapsed > slow_call) {
            ++tally.slow_calls;
            const bool preempted = load_thread_index == thread_before &&
                                   switches_after.voluntary == switches_before.voluntary &&
                                   switches_after.involuntary > switches_before.involuntary;
            tally.slow_calls_preempted += preempted ? 1 : 0;
        }
        if (finish >= end) {
            break;
        }
        co_await asio::post(io.get_executor(), asio::use_awaitable);
    }
    if (running.fetch_sub(1) == 1) {
        io.stop();
    }
}

asio::awaitable<void> prime(token_source& auth)
{
    access_token_view token = co_await auth.token();
    benchmark::DoNotOptimize(token.value().data());
}

struct load_result {
    std::uint64_t calls = 0;
    std::uint64_t p50_ns = 0;
    std::uint64_t p999_ns = 0;
    std::uint64_t max_ns = 0;
    std::uint64_t slow_calls = 0;
    std::uint64_t slow_calls_preempted = 0;
    std::uint64_t waiters = 0;
    std::uint64_t refreshes = 0;
    std::uint64_t tokens_fetched = 0;
};

load_result run_load(std::chrono::milliseconds token_lifetime)
{
    emulator::options opts;
    opts.token_lifetime = token_lifetime;
    opts.fault_script = "ok,slow:50*"; // the first token at once, every later one after 50 ms
    emulator_fixture fixture(opts);

    asio::io_context io;
    token_source auth(io.get_executor(), fixture.settings());
    run_until_done(io, prime(auth));
    const token_source_stats before = auth.stats();

    std::vector<load_tally> tallies(load_coroutines);
    std::atomic<int> running{load_coroutines};
    const auto end = clock::now() + load_duration;
    for (load_tally& tally : tallies) {
        tally.samples_ns.reserve(1 << 20);
        asio::co_spawn(io, token_load(auth, end, tally, running, io), asio::detached);
    }
    std::vector<std::thread> threads;
    for (int i = 1; i <= load_threads; ++i) {
        threads.emplace_back([&io, i] {
            load_thread_index = i;
            io.run();
        });
    }
    for (std::thread& t : threads) {
        t.join();
    }
    const token_source_stats after = auth.stats();

    load_result r;
    std::vector<std::uint64_t> samples;
    for (const load_tally& tally : tallies) {
        samples.insert(samples.end(), tally.samples_ns.begin(), tally.samples_ns.end());
        r.slow_calls += tally.slow_calls;
        r.slow_calls_preempted += tally.slow_calls_preempted;
    }
    r.calls = samples.size();
    r.max_ns = percentile(samples, 1.0);
    r.p999_ns = percentile(samples, 0.999);
    r.p50_ns = percentile(samples, 0.5);
    r.waiters = after.waiters - before.waiters;
    r.refreshes = after.refreshes_ahead - before.refreshes_ahead;
    r.tokens_fetched = after.tokens_fetched - before.tokens_fetched;
    return r;
}

void token_under_load(benchmark::State& state, std::chrono::milliseconds token_lifetime,
                      bool expect_refresh)
{
    for (auto _ : state) {
        const load_result r = run_load(token_lifetime);
        if (expect_refresh && r.tokens_fetched == 0) {
            state.SkipWithError("no refresh completed during the load");
            return;
        }
        state.SetIterationTime(std::chrono::duration<double>(load_duration).count());
        state.counters["calls"] = double(r.calls);
        state.counters["p50_ns"] = double(r.p50_ns);
        state.counters["p999_ns"] = double(r.p999_ns);
        state.counters["max_ns"] = double(r.max_ns);
        state.counters["slow_calls"] = double(r.slow_calls);
        state.counters["slow_calls_not_preempted"] = double(r.slow_calls - r.slow_calls_preempted);
        state.counters["waiters"] = double(r.waiters);
        state.counters["refreshes"] = double(r.refreshes);
        state.counters["tokens_fetched"] = double(r.tokens_fetched);
    }
}

void load_no_refresh(benchmark::State& state)
{
    token_under_load(state, steady_lifetime, false);
}

void load_refresh_ahead(benchmark::State& state)
{
    token_under_load(state, refreshing_lifetime, true);
}

BENCHMARK(load_no_refresh)
    ->Iterations(1)
    ->Repetitions(3)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(load_refresh_ahead)
    ->Iterations(1)
    ->Repetitions(3)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

} // namespace
} // namespace stampede::bench
