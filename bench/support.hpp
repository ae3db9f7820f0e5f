#ifndef STAMPEDE_BENCH_SUPPORT_HPP
#define STAMPEDE_BENCH_SUPPORT_HPP

// Shared pieces of the benchmarks: allocation counters, fetchers that wrap or replace the
// HTTP fetcher, an in-process emulator set up for benchmarking, and helpers that run a
// coroutine to completion and summarise samples.

#include <emulator.hpp>
#include <stampede/detail/token_fetcher.hpp>
#include <stampede/settings.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace stampede::bench {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;

/// Heap bytes and blocks allocated by the calling thread and not yet freed (see
/// alloc_counter.cpp). Only differences taken on one thread mean anything: a block freed
/// on another thread than the one that allocated it moves the count from one thread to
/// the other.
struct live_allocations {
    std::int64_t bytes = 0;
    std::int64_t blocks = 0;

    /// Blocks freed by the calling thread since it started.
    std::int64_t frees = 0;
};

live_allocations live_allocations_on_this_thread() noexcept;

/// Returns the CPU time consumed by the calling thread.
clock::duration thread_cpu_time() noexcept;

/// Returns the nanoseconds in `d` as a double.
inline double to_ns(clock::duration d)
{
    return std::chrono::duration<double, std::nano>(d).count();
}

/// Returns the median of `values`, which it reorders. Zero when empty.
double median(std::vector<double>& values);

/// Returns the value below which `fraction` (0 to 1) of `values` lie, by the nearest-rank
/// method. Reorders `values`. Zero when empty.
std::uint64_t percentile(std::vector<std::uint64_t>& values, double fraction);

/// A fetcher that returns at once a fixed token valid for an hour, for the
/// benchmarks of cached calls, which never fetch after the first call.
class instant_fetcher final : public detail::token_fetcher {
public:
    asio::awaitable<boost::system::error_code> fetch(detail::fetched_token& out,
                                                     diagnostics& diag) override;
    void close() override {}
    std::size_t connections_opened() const noexcept override { return 0; }
};

/// Wraps a fetcher and calls `on_fetch_start` just before each request and
/// `on_response` just after the response is parsed, on the token source's strand.
class probing_fetcher final : public detail::token_fetcher {
public:
    probing_fetcher(std::unique_ptr<detail::token_fetcher> inner,
                    std::function<void()> on_fetch_start, std::function<void()> on_response);

    asio::awaitable<boost::system::error_code> fetch(detail::fetched_token& out,
                                                     diagnostics& diag) override;
    void close() override { inner_->close(); }
    std::size_t connections_opened() const noexcept override
    {
        return inner_->connections_opened();
    }

private:
    std::unique_ptr<detail::token_fetcher> inner_;
    std::function<void()> on_fetch_start_;
    std::function<void()> on_response_;
};

/// An in-process emulator over TLS on loopback, with a token rate limit high enough never
/// to reject a benchmark's request, and the certificate in a temporary file.
class emulator_fixture {
public:
    /// Starts a server with `opts`, after replacing its clients, `token_rate` and
    /// `cert_out`.
    explicit emulator_fixture(emulator::options opts = {});
    ~emulator_fixture();

    emulator_fixture(const emulator_fixture&) = delete;
    emulator_fixture& operator=(const emulator_fixture&) = delete;

    /// Returns settings for a token source of this server's client. Their rate limit
    /// (a million requests at once, one more per millisecond) never delays a benchmark's
    /// fetch. The SDK's default (4 at once, one more every 4 s) would.
    token_source_settings settings() const;

    emulator::server& server() noexcept { return *server_; }

private:
    std::filesystem::path cert_file_;
    std::unique_ptr<emulator::server> server_;
};

/// Returns an emulator with default options, started on first use and shared by the
/// benchmarks that count its requests and connections as differences.
emulator_fixture& shared_emulator();

/// Spawns `body` on `io` and runs `io` one handler at a time until `body` finishes, then
/// rethrows what it threw. Unlike `io.run()` it returns while a token source still keeps
/// its refresh timer pending.
void run_until_done(asio::io_context& io, asio::awaitable<void> body);

} // namespace stampede::bench

#endif
