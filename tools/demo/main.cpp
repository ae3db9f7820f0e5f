// stampede-demo: starts the emulator on loopback with TLS and shows the SDK under load.
//
// 1. Cold start: N coroutines call `co_await auth.token()` at once on a multi-threaded
//    io_context; they share one token request.
// 2. Load: every coroutine keeps calling `token()` for --duration seconds while the
//    token passes through its refresh window, so background refreshes happen under load.
// 3. Halfway through, the emulator revokes the token, and API requests recover through
//    the 401 path: one invalidation, one new token, one retry each.
//
// With --processes N and --redis URL it runs N worker processes that share one Redis
// token store (fleet mode) and one emulator, started by this process, and reports the
// fleet's totals (see fleet.cpp). A fleet runs only the cold start unless --duration is
// given. The workers are this program again,
// started with the hidden --worker options.

#include "demo_options.hpp"
#include "emulator.hpp"

#include <stampede/api_client.hpp>
#include <stampede/token_source.hpp>

#ifdef STAMPEDE_DEMO_FLEET
#include <stampede/redis/config.hpp>
#include <stampede/redis/redis_token_store.hpp>
#endif

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <future>
#include <iostream>
#include <limits>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

namespace {

using stampede::demo::demo_options;

constexpr const char* usage = R"(Usage: stampede-demo [options]

Starts the Stampede emulator on 127.0.0.1 with TLS and runs the SDK against it:
a cold start of many concurrent token() callers, continued load through several
refreshes ahead of expiry, and API requests that recover from a revoked token.

Options:
  --callers N               concurrent coroutines calling token() (default 10000)
  --token-lifetime SECONDS  lifetime of the emulator's tokens (default 6)
  --duration SECONDS        how long the load continues after the cold start (default 8;
                            in fleet mode 0, the cold start alone)
  --threads N               threads running the io_context (default: the number of
                            cores, at least 2)
  --api-requests N          concurrent API requests sent after the token is revoked
                            (default 4; the API allows about 100 per 15 minutes)
  --processes N             run the load in N worker processes that share one Redis
                            token store (fleet mode) and this process's emulator; the
                            numbers are the fleet's totals (default 1, at most 1024;
                            needs --redis)
  --redis URL               redis:// or rediss:// URL of the shared token store, such as
                            redis://user:password@127.0.0.1:6379/0; turns on fleet mode.
                            Without it, the environment variable STAMPEDE_DEMO_REDIS_URL
                            is used when set, which keeps a password off the command line
  --redis-ca-file PATH      PEM file of the CAs that sign the Redis server's certificate
  --json                    print the summary as one JSON object
  --help                    show this help

Exit status: 0 when every caller got a token, 1 otherwise, 2 for bad options.
)";

// Log-scale latency histogram, safe to update from several threads.
class latency_histogram {
public:
    void record(steady_clock::duration d) noexcept
    {
        const double ns = std::max<double>(1.0, static_cast<double>(
                                                    std::chrono::nanoseconds(d).count()));
        const auto bucket = std::min<std::size_t>(
            buckets_.size() - 1, static_cast<std::size_t>(std::log(ns) / std::log(growth)));
        buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
        count_.fetch_add(1, std::memory_order_relaxed);
        auto seen = max_ns_.load(std::memory_order_relaxed);
        const auto value = static_cast<std::uint64_t>(ns);
        while (value > seen && !max_ns_.compare_exchange_weak(seen, value)) {
        }
    }

    std::uint64_t count() const noexcept { return count_.load(); }
    std::uint64_t max_ns() const noexcept { return max_ns_.load(); }

    /// Returns the upper edge of the bucket holding the q-quantile, in nanoseconds.
    std::uint64_t quantile_ns(double q) const noexcept
    {
        const auto total = count();
        if (total == 0) {
            return 0;
        }
        const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total)));
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < buckets_.size(); ++i) {
            seen += buckets_[i].load();
            if (seen >= rank) {
                return std::min(max_ns(), static_cast<std::uint64_t>(std::pow(growth, i + 1)));
            }
        }
        return max_ns();
    }

private:
    static constexpr double growth = 1.1;
    std::array<std::atomic<std::uint64_t>, 256> buckets_{};
    std::atomic<std::uint64_t> count_{0};
    std::atomic<std::uint64_t> max_ns_{0};
};

constexpr double max_processes = 1024;
constexpr double max_seconds = 24 * 3600;

bool parse_number(std::string_view text, double& out, bool zero_allowed)
{
    try {
        std::size_t used = 0;
        out = std::stod(std::string(text), &used);
        return used == text.size() && (out > 0 || (zero_allowed && out == 0)) &&
               std::isfinite(out);
    } catch (const std::exception&) {
        return false;
    }
}

// Returns 0 on success, 2 on a bad option (with a message on stderr), -1 for --help.
int parse_options(int argc, char** argv, demo_options& o)
{
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::cout << usage;
            return -1;
        }
        if (arg == "--json") {
            o.json = true;
            continue;
        }
        if (arg == "--worker") {
            o.worker = true;
            continue;
        }
        constexpr std::string_view text_options[] = {
            "--redis", "--redis-ca-file", "--worker-token-url", "--worker-api-url",
            "--worker-ca-file",
        };
        if (std::find(std::begin(text_options), std::end(text_options), arg) !=
            std::end(text_options)) {
            if (i + 1 >= argc) {
                std::cerr << "stampede-demo: " << arg << " needs a value; see --help\n";
                return 2;
            }
            const std::string value = argv[++i];
            if (arg == "--redis") {
                o.redis_url = value;
            } else if (arg == "--redis-ca-file") {
                o.redis_ca_file = value;
            } else if (arg == "--worker-token-url") {
                o.token_url = value;
            } else if (arg == "--worker-api-url") {
                o.api_url = value;
            } else {
                o.ca_file = value;
            }
            continue;
        }
        constexpr std::string_view numeric_options[] = {
            "--callers", "--token-lifetime", "--duration", "--threads", "--api-requests",
            "--processes",
        };
        if (std::find(std::begin(numeric_options), std::end(numeric_options), arg) ==
            std::end(numeric_options)) {
            std::cerr << "stampede-demo: unknown option " << arg << "; see --help\n";
            return 2;
        }
        if (i + 1 >= argc) {
            std::cerr << "stampede-demo: " << arg << " needs a value; see --help\n";
            return 2;
        }
        const std::string_view value = argv[++i];
        double number = 0;
        const bool zero_allowed = arg == "--duration";
        if (!parse_number(value, number, zero_allowed)) {
            std::cerr << "stampede-demo: " << arg << " expects a "
                      << (zero_allowed ? "non-negative" : "positive") << " number, got '"
                      << value << "'\n";
            return 2;
        }
        const bool whole_number_option = arg == "--callers" || arg == "--threads" ||
                                         arg == "--api-requests" || arg == "--processes";
        if (whole_number_option && number != std::floor(number)) {
            std::cerr << "stampede-demo: " << arg << " expects a whole number, got '" << value
                      << "'\n";
            return 2;
        }
        // Each worker is a process of this machine with its own threads, so their number is
    // bounded.
        const double max_value = arg == "--processes" ? max_processes
                                 : whole_number_option ? std::numeric_limits<int>::max()
                                                       : max_seconds;
        if (number > max_value) {
            std::cerr << "stampede-demo: " << arg << " is at most "
                      << static_cast<long long>(max_value) << ", got '" << value << "'\n";
            return 2;
        }
        if (arg == "--callers") {
            o.callers = static_cast<int>(number);
        } else if (arg == "--token-lifetime") {
            o.token_lifetime_s = number;
        } else if (arg == "--duration") {
            o.duration_s = number;
        } else if (arg == "--threads") {
            o.threads = static_cast<unsigned>(number);
        } else if (arg == "--api-requests") {
            o.api_requests = static_cast<int>(number);
        } else if (arg == "--processes") {
            o.processes = static_cast<int>(number);
        } else {
            std::cerr << "stampede-demo: unknown option " << arg << "; see --help\n";
            return 2;
        }
    }
    // The environment keeps a Redis password off the command line.
    if (const char* from_environment = std::getenv(stampede::demo::redis_url_variable);
        o.redis_url.empty() && from_environment != nullptr && !o.worker) {
        o.redis_url = from_environment;
    }
    if (o.processes > 1 && o.redis_url.empty()) {
        std::cerr << "stampede-demo: --processes " << o.processes
                  << " needs --redis URL, the token store the processes share\n";
        return 2;
    }
    if (o.worker && (o.token_url.empty() || o.api_url.empty() || o.ca_file.empty())) {
        std::cerr << "stampede-demo: --worker needs --worker-token-url, --worker-api-url and "
                     "--worker-ca-file\n";
        return 2;
    }
#ifndef STAMPEDE_DEMO_FLEET
    if (!o.redis_url.empty()) {
        std::cerr << "stampede-demo: --redis needs stampede::redis, which this build lacks "
                     "(configure with -DSTAMPEDE_BUILD_REDIS=ON)\n";
        return 2;
    }
#else
    // Checked here once, rather than by each worker after the emulator has started.
    if (!o.redis_url.empty() && !o.worker) {
        stampede::redis::config parsed;
        stampede::diagnostics diag;
        if (stampede::redis::parse_url(o.redis_url, parsed, diag)) {
            std::cerr << "stampede-demo: invalid Redis URL (from --redis or "
                      << stampede::demo::redis_url_variable << "): " << diag.client_message()
                      << '\n';
            return 2;
        }
    }
#endif
    return 0;
}

std::string format_ns(std::uint64_t ns)
{
    char buffer[32];
    if (ns < 10'000) {
        std::snprintf(buffer, sizeof buffer, "%llu ns", static_cast<unsigned long long>(ns));
    } else if (ns < 10'000'000) {
        std::snprintf(buffer, sizeof buffer, "%.1f us", static_cast<double>(ns) / 1e3);
    } else {
        std::snprintf(buffer, sizeof buffer, "%.1f ms", static_cast<double>(ns) / 1e6);
    }
    return buffer;
}

boost::json::object latency_json(const latency_histogram& h)
{
    return {{"calls", h.count()},
            {"p50_ns", h.quantile_ns(0.50)},
            {"p99_ns", h.quantile_ns(0.99)},
            {"p999_ns", h.quantile_ns(0.999)},
            {"max_ns", h.max_ns()}};
}

// Threads that run an io_context, kept from running out of work until stop().
class context_threads {
public:
    context_threads(asio::io_context& ctx, unsigned count)
        : ctx_(ctx)
        , work_(asio::make_work_guard(ctx))
    {
        for (unsigned i = 0; i < count; ++i) {
            threads_.emplace_back([this] { ctx_.run(); });
        }
    }

    // Waits until the load has ended (and one more second has passed) and `api_requests`
    // API requests have finished, or until two minutes after the load, whichever is first.
    void wait_for_load(steady_clock::time_point load_until, const std::atomic<int>& api_finished,
                       int api_requests) const
    {
        while (steady_clock::now() < load_until + 1s || api_finished.load() < api_requests) {
            std::this_thread::sleep_for(50ms);
            if (steady_clock::now() > load_until + 120s) {
                break;
            }
        }
    }

    // Stops the io_context and joins the threads.
    void stop()
    {
        work_.reset();
        ctx_.stop();
        for (auto& thread : threads_) {
            thread.join();
        }
        threads_.clear();
    }

    ~context_threads()
    {
        if (!threads_.empty()) {
            stop();
        }
    }

private:
    asio::io_context& ctx_;
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    std::vector<std::thread> threads_;
};

struct demo_results {
    std::atomic<int> callers_served{0};
    std::atomic<int> errors{0};
    latency_histogram cold_start;
    latency_histogram under_load;
    std::atomic<int> api_ok{0};
};

// One caller: a cold-start call, then calls every 50 ms until `load_until`. Calls
// `on_first_call` after its cold-start call, whatever its outcome.
asio::awaitable<void> caller(stampede::token_source& auth, demo_results& results,
                             steady_clock::time_point load_until,
                             std::function<void()> on_first_call)
{
    auto start = steady_clock::now();
    try {
        auto token = co_await auth.token();
        results.cold_start.record(steady_clock::now() - start);
        if (token.value().empty()) {
            ++results.errors;
        }
        ++results.callers_served;
        on_first_call();
    } catch (const std::exception&) {
        ++results.errors;
        on_first_call();
        co_return;
    }

    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (steady_clock::now() < load_until) {
        timer.expires_after(50ms);
        co_await timer.async_wait(asio::use_awaitable);
        start = steady_clock::now();
        try {
            auto token = co_await auth.token();
            results.under_load.record(steady_clock::now() - start);
            (void)token;
        } catch (const std::exception&) {
            ++results.errors;
        }
    }
}

// Sends API requests, each of which must end with 200, recovering from 401 if the token
// was revoked.
asio::awaitable<void> call_api(stampede::api_client& api, demo_results& results, int requests,
                               std::atomic<int>& finished)
{
    for (int i = 0; i < requests; ++i) {
        asio::co_spawn(co_await asio::this_coro::executor,
                       [&]() -> asio::awaitable<void> {
                           auto [ec, response] = co_await api.async_get(
                               "/v1/guests?limit=1", asio::as_tuple(asio::use_awaitable));
                           if (!ec && response.status == 200) {
                               ++results.api_ok;
                           } else {
                               ++results.errors;
                           }
                           ++finished;
                       },
                       asio::detached);
    }
    co_return;
}

// Revokes the token at the server, then sends API requests that must recover from 401.
asio::awaitable<void> revoke_and_call_api(stampede::emulator::server& server,
                                          stampede::api_client& api, demo_results& results,
                                          int requests, std::atomic<int>& finished)
{
    server.revoke_all();
    co_await call_api(api, results, requests, finished);
}

#ifdef STAMPEDE_DEMO_FLEET
// Runs one worker of a fleet: the load of the single-process demo against the parent's
// emulator, with the token source in fleet mode. Writes `cold-start` on a line of its
// own once every caller has made its first call, then its counters as one JSON line.
// The parent revokes the token halfway; the API requests go out just after that.
int run_worker(const demo_options& opts)
{
    const char* redis_url = std::getenv(stampede::demo::redis_url_variable);
    if (redis_url == nullptr) {
        std::cerr << "stampede-demo worker: " << stampede::demo::redis_url_variable
                  << " is not set\n";
        return 2;
    }
    stampede::redis::config redis_config;
    stampede::diagnostics diag;
    if (stampede::redis::parse_url(redis_url, redis_config, diag)) {
        std::cerr << "stampede-demo worker: invalid Redis URL: " << diag.client_message() << '\n';
        return 2;
    }
    redis_config.ca_file = opts.redis_ca_file;
    // All the workers start at once on one machine, so Redis may answer slowly at first;
    // a command that timed out would make that worker fetch on its own.
    redis_config.connect_timeout = std::chrono::seconds(10);
    redis_config.command_timeout = std::chrono::seconds(5);

    asio::io_context ctx;
    const auto log = stampede::logger::to_stderr(stampede::log_level::warning);
    auto store = std::make_shared<stampede::redis::redis_token_store>(
        ctx.get_executor(), redis_config, stampede::redis::store_settings{}, log);
    stampede::token_source_settings settings;
    settings.client_id = "demo-client";
    settings.client_secret = stampede::secret_string("demo-secret");
    settings.token_url = opts.token_url;
    settings.transport.ca_file = opts.ca_file;
    settings.fleet.store = store;
    settings.logger = log;
    stampede::token_source auth(ctx, settings);

    stampede::api_client_settings api_settings;
    api_settings.base_url = opts.api_url;
    api_settings.transport.ca_file = opts.ca_file;
    stampede::api_client api(auth, api_settings);

    demo_results results;
    std::atomic<int> first_calls{0};
    const std::function<void()> on_first_call = [&] {
        if (first_calls.fetch_add(1) + 1 == opts.callers) {
            std::cout << "cold-start" << std::endl;
        }
    };
    const double duration_s = stampede::demo::load_duration(opts);
    const int api_requests = stampede::demo::revocation_api_requests(opts);
    const auto started = steady_clock::now();
    const auto load_until =
        started + std::chrono::milliseconds(static_cast<long long>(duration_s * 1000));
    for (int i = 0; i < opts.callers; ++i) {
        asio::co_spawn(ctx, caller(auth, results, load_until, on_first_call), asio::detached);
    }

    // The parent revokes the token halfway through its own run, which began just before
    // this worker's, so the API requests go 200 ms after this worker's halfway point.
    std::atomic<int> api_finished{0};
    asio::steady_timer api_timer(ctx, started + (load_until - started) / 2 + 200ms);
    if (api_requests > 0) {
        api_timer.async_wait([&](boost::system::error_code) {
            asio::co_spawn(ctx, call_api(api, results, api_requests, api_finished),
                           asio::detached);
        });
    }

    context_threads threads(ctx, opts.threads);
    threads.wait_for_load(load_until, api_finished, api_requests);
    const auto source_stats = auth.stats();
    const auto api_stats = api.stats();
    auth.shutdown();
    store->close();
    threads.stop();

    boost::json::object out{
        {"callers", opts.callers},
        {"callers_served", results.callers_served.load()},
        {"api_ok", results.api_ok.load()},
        {"errors", results.errors.load()},
        {"requests", source_stats.requests},
        {"refreshes_ahead", source_stats.refreshes_ahead},
        {"shared_hits", source_stats.shared_hits},
        {"lease_waits", source_stats.lease_waits},
        {"leases_taken", source_stats.leases_taken},
        {"store_errors", source_stats.store_errors},
        {"token_connections", source_stats.connections_opened},
        {"unauthorized_recoveries", api_stats.token_retries},
        {"cold_start", latency_json(results.cold_start)},
        {"under_load", latency_json(results.under_load)},
    };
    std::cout << boost::json::serialize(out) << std::endl;
    const bool all_served = results.callers_served.load() == opts.callers;
    return all_served && results.errors.load() == 0 ? 0 : 1;
}
#endif

} // namespace

int main(int argc, char** argv)
{
    demo_options opts;
    if (int rc = parse_options(argc, argv, opts); rc != 0) {
        return rc < 0 ? 0 : rc;
    }
#ifdef STAMPEDE_DEMO_FLEET
    if (opts.worker) {
        return run_worker(opts);
    }
    if (!opts.redis_url.empty()) {
        return stampede::demo::run_fleet(opts);
    }
#endif

    // The emulator, as the Stampede documentation describes the service: 20 token
    // requests a minute and about 100 API requests per 15 minutes.
    const auto work_dir = std::filesystem::temp_directory_path() /
                          ("stampede-demo-" + std::to_string(::getpid()));
    std::filesystem::create_directories(work_dir);
    stampede::emulator::options emulator_options;
    emulator_options.token_lifetime =
        std::chrono::milliseconds(static_cast<long long>(opts.token_lifetime_s * 1000));
    emulator_options.cert_out = (work_dir / "emulator.pem").string();
    emulator_options.log_requests = false;
    stampede::emulator::server server(emulator_options);
    server.start();
    const double duration_s = stampede::demo::load_duration(opts);
    const int api_requests = stampede::demo::revocation_api_requests(opts);
    if (!opts.json) {
        std::cout << "emulator: " << server.token_url() << " (TLS on loopback, tokens live "
                  << opts.token_lifetime_s << " s)\n"
                  << "scenario: " << opts.callers << " callers ask for a token at once on "
                  << opts.threads << (opts.threads == 1 ? " thread" : " threads");
        if (duration_s > 0) {
            std::cout << ", then each calls token() every 50 ms for " << duration_s
                      << " s; halfway through, the emulator revokes the token and "
                      << api_requests << " API requests recover from the 401";
        }
        std::cout << "\n\n";
    }

    asio::io_context ctx;
    stampede::token_source_settings settings;
    settings.client_id = "demo-client";
    settings.client_secret = stampede::secret_string("demo-secret");
    settings.token_url = server.token_url();
    settings.transport.ca_file = emulator_options.cert_out;
    stampede::token_source auth(ctx, settings);

    stampede::api_client_settings api_settings;
    api_settings.base_url = server.base_url();
    api_settings.transport.ca_file = emulator_options.cert_out;
    stampede::api_client api(auth, api_settings);

    demo_results results;
    const auto started = steady_clock::now();
    const auto load_until =
        started + std::chrono::milliseconds(static_cast<long long>(duration_s * 1000));
    for (int i = 0; i < opts.callers; ++i) {
        asio::co_spawn(ctx, caller(auth, results, load_until, [] {}), asio::detached);
    }

    // Halfway through the load, revoke the token and call the API.
    std::atomic<int> api_finished{0};
    asio::steady_timer revoke_timer(ctx, started + (load_until - started) / 2);
    if (api_requests > 0) {
        revoke_timer.async_wait([&](boost::system::error_code) {
            asio::co_spawn(ctx,
                           revoke_and_call_api(server, api, results, api_requests, api_finished),
                           asio::detached);
        });
    }

    context_threads threads(ctx, opts.threads);
    threads.wait_for_load(load_until, api_finished, api_requests);
    const auto source_stats = auth.stats();
    const auto api_stats = api.stats();
    auth.shutdown();
    threads.stop();
    const auto emulator_stats = server.get_stats();
    server.stop();
    std::filesystem::remove_all(work_dir);

    const bool all_served = results.callers_served.load() == opts.callers;
    if (opts.json) {
        boost::json::object out{
            {"callers", opts.callers},
            {"callers_served", results.callers_served.load()},
            {"token_requests", emulator_stats.token_requests},
            {"tokens_issued", emulator_stats.tokens_issued},
            {"rate_limited", emulator_stats.rate_limited},
            {"refreshes_ahead", source_stats.refreshes_ahead},
            {"connections", emulator_stats.connections_accepted},
            {"token_connections", source_stats.connections_opened},
            {"api_requests", emulator_stats.api_requests},
            {"unauthorized_recoveries", api_stats.token_retries},
            {"errors", results.errors.load()},
            {"cold_start", latency_json(results.cold_start)},
            {"under_load", latency_json(results.under_load)},
        };
        std::cout << boost::json::serialize(out) << '\n';
    } else {
        std::cout << "callers served:          " << results.callers_served.load() << " of "
                  << opts.callers << "\n"
                  << "token requests (server): " << emulator_stats.token_requests << " ("
                  << emulator_stats.rate_limited << " rate limited)\n"
                  << "token source:            " << source_stats.refreshes_ahead
                  << " refreshes ahead, " << source_stats.invalidations
                  << " invalidations of a rejected token, " << source_stats.retries
                  << " retries\n"
                  << "connections opened:      " << emulator_stats.connections_accepted
                  << " (token endpoint: " << source_stats.connections_opened << ")\n"
                  << "token() cold start:      p50 " << format_ns(results.cold_start.quantile_ns(0.5))
                  << ", p99 " << format_ns(results.cold_start.quantile_ns(0.99)) << ", max "
                  << format_ns(results.cold_start.max_ns()) << '\n'
                  << "token() under load:      " << results.under_load.count() << " calls, p50 "
                  << format_ns(results.under_load.quantile_ns(0.5)) << ", p99 "
                  << format_ns(results.under_load.quantile_ns(0.99)) << ", p99.9 "
                  << format_ns(results.under_load.quantile_ns(0.999)) << ", max "
                  << format_ns(results.under_load.max_ns()) << '\n'
                  << "API requests (server):   " << emulator_stats.api_requests << " ("
                  << api_stats.token_retries << " recovered from 401 with a fresh token)\n"
                  << "errors:                  " << results.errors.load() << '\n';
    }
    return all_served && results.errors.load() == 0 ? 0 : 1;
}
