// A token fetch over TLS on loopback. A refresh on the kept-alive connection (one source,
// `invalidate()` then `token()`) is compared with a fetch by a new source, which opens a
// new TCP connection and makes a full TLS handshake. Both time the `token()` call alone;
// the new source is built before its clock starts.

#include "support.hpp"

#include <stampede/token_source.hpp>

#include <benchmark/benchmark.h>
#include <boost/asio/this_coro.hpp>

#include <string>
#include <vector>

namespace stampede::bench {
namespace {

constexpr int fetches_per_repetition = 100;

struct fetch_result {
    std::vector<double> fetch_ns;
    std::uint64_t connections_accepted = 0;
};

asio::awaitable<void> fetch_kept_alive_loop(token_source& auth, fetch_result& result)
{
    access_token_view first = co_await auth.token();
    std::string previous(first.value());
    for (int i = 0; i < fetches_per_repetition; ++i) {
        auth.invalidate(previous);
        const auto start = clock::now();
        access_token_view token = co_await auth.token();
        result.fetch_ns.push_back(to_ns(clock::now() - start));
        previous.assign(token.value());
    }
}

asio::awaitable<void> fetch_new_connection_loop(const token_source_settings& settings,
                                                fetch_result& result)
{
    const auto ex = co_await asio::this_coro::executor;
    for (int i = 0; i < fetches_per_repetition; ++i) {
        token_source auth(ex, settings);
        const auto start = clock::now();
        access_token_view token = co_await auth.token();
        result.fetch_ns.push_back(to_ns(clock::now() - start));
        benchmark::DoNotOptimize(token.value().data());
    }
}

void report(benchmark::State& state, fetch_result& result)
{
    const double median_ns = median(result.fetch_ns);
    state.SetIterationTime(median_ns * 1e-9);
    state.counters["fetch_ns"] = median_ns;
    state.counters["connections_accepted"] = double(result.connections_accepted);
}

void fetch_kept_alive(benchmark::State& state)
{
    emulator_fixture& fixture = shared_emulator();
    for (auto _ : state) {
        asio::io_context io;
        token_source auth(io.get_executor(), fixture.settings());
        fetch_result result;
        const auto accepted_before = fixture.server().get_stats().connections_accepted;
        run_until_done(io, fetch_kept_alive_loop(auth, result));
        result.connections_accepted =
            fixture.server().get_stats().connections_accepted - accepted_before;
        report(state, result);
    }
}

void fetch_new_connection(benchmark::State& state)
{
    emulator_fixture& fixture = shared_emulator();
    const token_source_settings settings = fixture.settings();
    for (auto _ : state) {
        asio::io_context io;
        fetch_result result;
        const auto accepted_before = fixture.server().get_stats().connections_accepted;
        run_until_done(io, fetch_new_connection_loop(settings, result));
        result.connections_accepted =
            fixture.server().get_stats().connections_accepted - accepted_before;
        report(state, result);
    }
}

BENCHMARK(fetch_kept_alive)
    ->Iterations(1)
    ->Repetitions(5)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(fetch_new_connection)
    ->Iterations(1)
    ->Repetitions(5)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

} // namespace
} // namespace stampede::bench
