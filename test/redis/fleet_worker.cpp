// stampede_fleet_worker: one process of a fleet for the fleet-mode tests. It runs a
// token_source in fleet mode on a Redis token store and many concurrent token() callers,
// each calling again every --interval-ms until SIGTERM or --duration-ms. It writes
// --ready-file once every caller has had its first token, and its counters as one JSON
// object to --out when it stops.
//
// The Redis URL, which contains the password, comes from the STAMPEDE_REDIS_URL
// environment variable rather than the command line; STAMPEDE_REDIS_CA_FILE names the CA
// file for rediss:// URLs.
//
// Exit status: 0 when every caller got every token it asked for, 1 otherwise, 2 for
// invalid options.

#include <stampede/redis/config.hpp>
#include <stampede/redis/fleet_limiter.hpp>
#include <stampede/redis/redis_token_store.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>

#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

namespace {

struct worker_options {
    std::string token_url;
    std::string ca_file;
    std::string client_id = "test-client";
    std::string secret = "test-secret";
    std::string out_file;
    std::string ready_file;
    int callers = 100;
    milliseconds interval{50};
    milliseconds duration{0}; // 0: until SIGTERM
    milliseconds lease_ttl{45000};
    milliseconds request_timeout{30000};
    milliseconds refill_interval{4000};
    std::size_t fleet_capacity = 0; // 0: no fleet limiter
    milliseconds fleet_interval{4000};
};

bool parse_options(int argc, char** argv, worker_options& o)
{
    std::map<std::string, std::string> values;
    for (int i = 1; i + 1 < argc; i += 2) {
        values[argv[i]] = argv[i + 1];
    }
    if (argc % 2 == 0) {
        std::cerr << "stampede_fleet_worker: every option needs a value\n";
        return false;
    }
    const auto text = [&](const char* name, std::string& out) {
        if (auto it = values.find(name); it != values.end()) {
            out = it->second;
            values.erase(it);
        }
    };
    const auto number = [&](const char* name, auto& out) {
        if (auto it = values.find(name); it != values.end()) {
            out = static_cast<std::remove_reference_t<decltype(out)>>(std::stoll(it->second));
            values.erase(it);
        }
    };
    const auto duration = [&](const char* name, milliseconds& out) {
        long long ms = out.count();
        number(name, ms);
        out = milliseconds(ms);
    };
    text("--token-url", o.token_url);
    text("--ca-file", o.ca_file);
    text("--client-id", o.client_id);
    text("--secret", o.secret);
    text("--out", o.out_file);
    text("--ready-file", o.ready_file);
    number("--callers", o.callers);
    duration("--interval-ms", o.interval);
    duration("--duration-ms", o.duration);
    duration("--lease-ttl-ms", o.lease_ttl);
    duration("--request-timeout-ms", o.request_timeout);
    duration("--refill-interval-ms", o.refill_interval);
    number("--fleet-capacity", o.fleet_capacity);
    duration("--fleet-interval-ms", o.fleet_interval);
    if (!values.empty()) {
        std::cerr << "stampede_fleet_worker: unknown option " << values.begin()->first << '\n';
        return false;
    }
    if (o.token_url.empty() || o.out_file.empty()) {
        std::cerr << "stampede_fleet_worker: --token-url and --out are required\n";
        return false;
    }
    return true;
}

struct worker_results {
    std::atomic<int> first_tokens{0};
    std::atomic<std::uint64_t> calls{0};
    std::atomic<int> errors{0};
    std::atomic<int> finished{0};
    std::atomic<bool> stopping{false};
};

asio::awaitable<void> caller(stampede::token_source& source, worker_results& results,
                             milliseconds interval, const std::string& ready_file, int callers)
{
    bool first = true;
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (!results.stopping.load()) {
        try {
            auto token = co_await source.token();
            results.calls.fetch_add(1);
            if (token.value().empty()) {
                results.errors.fetch_add(1);
            }
            if (first && results.first_tokens.fetch_add(1) + 1 == callers &&
                !ready_file.empty()) {
                std::ofstream(ready_file) << "ready\n";
            }
        } catch (const std::exception& e) {
            if (results.errors.fetch_add(1) == 0) {
                std::cerr << "stampede_fleet_worker: token() failed: " << e.what() << '\n';
            }
        }
        first = false;
        timer.expires_after(interval);
        co_await timer.async_wait(asio::use_awaitable);
    }
    results.finished.fetch_add(1);
}

} // namespace

int main(int argc, char** argv)
{
    // A worker ends with the test that started it, even when that test crashes. Otherwise
    // its callers would go on calling until someone kills them.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() == 1) {
        return 2;
    }

    worker_options opts;
    try {
        if (!parse_options(argc, argv, opts)) {
            return 2;
        }
    } catch (const std::exception& e) {
        std::cerr << "stampede_fleet_worker: invalid option value: " << e.what() << '\n';
        return 2;
    }
    const char* redis_url = std::getenv("STAMPEDE_REDIS_URL");
    if (redis_url == nullptr) {
        std::cerr << "stampede_fleet_worker: STAMPEDE_REDIS_URL is not set\n";
        return 2;
    }

    stampede::redis::config redis_config;
    stampede::diagnostics diag;
    if (auto ec = stampede::redis::parse_url(redis_url, redis_config, diag)) {
        std::cerr << "stampede_fleet_worker: " << diag.client_message() << '\n';
        return 2;
    }
    if (const char* ca = std::getenv("STAMPEDE_REDIS_CA_FILE")) {
        redis_config.ca_file = ca;
    }
    // Generous timeouts: the tests start many processes at once on a shared machine, and a
    // timed-out command would make a process fetch on its own.
    redis_config.connect_timeout = 10s;
    redis_config.command_timeout = 5s;
    redis_config.reconnect.initial_delay = 50ms;
    redis_config.reconnect.min_delay = 20ms;
    redis_config.reconnect.max_delay = 200ms;

    asio::io_context ctx;
    const auto log = stampede::logger::to_stderr(stampede::log_level::info);
    stampede::redis::store_settings store_settings;
    store_settings.poll_interval = 100ms;
    auto store = std::make_shared<stampede::redis::redis_token_store>(
        ctx.get_executor(), redis_config, store_settings, log);

    stampede::token_source_settings settings;
    settings.client_id = opts.client_id;
    settings.client_secret = stampede::secret_string(opts.secret);
    settings.token_url = opts.token_url;
    settings.transport.ca_file = opts.ca_file;
    settings.transport.request_timeout = opts.request_timeout;
    settings.transport.read_timeout = std::min(settings.transport.read_timeout, opts.request_timeout);
    settings.rate_limit.refill_interval = opts.refill_interval;
    settings.logger = log;
    settings.fleet.store = store;
    settings.fleet.lease_ttl = opts.lease_ttl;
    if (opts.fleet_capacity > 0) {
        stampede::rate_limit_settings fleet_rate{opts.fleet_capacity, opts.fleet_interval};
        settings.fleet.limiter = std::make_shared<stampede::redis::fleet_limiter>(
            store, "stampede:{" + opts.client_id + "}:token-requests", fleet_rate);
    }
    stampede::token_source source(ctx, settings);

    worker_results results;
    for (int i = 0; i < opts.callers; ++i) {
        asio::co_spawn(ctx, caller(source, results, opts.interval, opts.ready_file, opts.callers),
                       asio::detached);
    }

    // Stops the callers; they end at their next wake-up.
    asio::signal_set signals(ctx, SIGTERM, SIGINT);
    asio::steady_timer deadline(ctx);
    const auto stop = [&] {
        results.stopping = true;
        signals.cancel();
        deadline.cancel();
    };
    signals.async_wait([&](boost::system::error_code ec, int) {
        if (!ec) {
            stop();
        }
    });
    if (opts.duration.count() > 0) {
        deadline.expires_after(opts.duration);
        deadline.async_wait([&](boost::system::error_code ec) {
            if (!ec) {
                stop();
            }
        });
    }

    while (results.finished.load() < opts.callers) {
        if (ctx.run_one() == 0) {
            break;
        }
    }
    const auto stats = source.stats();
    const auto store_stats = store->stats();
    source.shutdown();
    store->close();
    ctx.run_for(200ms);

    const bool all_served = results.first_tokens.load() == opts.callers && results.errors == 0;
    boost::json::object out{
        {"callers", opts.callers},
        {"callers_served", results.first_tokens.load()},
        {"calls", results.calls.load()},
        {"errors", results.errors.load()},
        {"requests", stats.requests},
        {"tokens_fetched", stats.tokens_fetched},
        {"refreshes_ahead", stats.refreshes_ahead},
        {"shared_hits", stats.shared_hits},
        {"lease_waits", stats.lease_waits},
        {"leases_taken", stats.leases_taken},
        {"fleet_limited_waits", stats.fleet_limited_waits},
        {"store_errors", stats.store_errors},
        {"unreadable_entries", store_stats.unreadable_entries},
    };
    std::ofstream(opts.out_file) << boost::json::serialize(out) << '\n';
    return all_served ? 0 : 1;
}
