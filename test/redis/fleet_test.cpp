// Fleet mode across real processes: stampede_fleet_worker processes share a real
// redis-server (password for the default user, an ACL user, and a TLS variant) and the
// in-process emulator, which counts the token requests of the whole fleet.
// No test asserts an upper bound on wall-clock time; waits for a condition only give up
// after a generous limit.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE redis_fleet
#include <boost/test/unit_test.hpp>

#include "emulator_fixture.hpp"
#include "redis_server.hpp"
#include "run_coroutine.hpp"

#include <stampede/error.hpp>
#include <stampede/redis/redis_token_store.hpp>
#include <stampede/token_cache_key.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace asio = boost::asio;
namespace redis = stampede::redis;
using namespace std::chrono_literals;
using stampede::test::redis_server;
using stampede::test::running_emulator;

namespace {

// Waits until `condition` holds, checking every 10 ms, for at most `limit`. Returns
// whether it held. The limit only keeps a broken run from hanging.
bool wait_for(const std::function<bool()>& condition, std::chrono::seconds limit = 60s)
{
    const auto give_up = std::chrono::steady_clock::now() + limit;
    while (!condition()) {
        if (std::chrono::steady_clock::now() > give_up) {
            return false;
        }
        std::this_thread::sleep_for(10ms);
    }
    return true;
}

std::string read_file(const std::filesystem::path& path)
{
    std::ifstream in(path);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

// The Redis URL of the server's ACL user, password included.
std::string redis_url(const redis_server& server)
{
    const auto& opts = server.server_options();
    return std::string(opts.tls ? "rediss://" : "redis://") + opts.acl_user + ":" +
           opts.acl_password + "@127.0.0.1:" + std::to_string(server.port());
}

// One stampede_fleet_worker process, its output in files under `dir`.
class worker {
public:
    worker(const redis_server& server, running_emulator& emu, std::filesystem::path dir,
           int index, std::vector<std::string> extra_args)
        : out_(dir / ("worker-" + std::to_string(index) + ".json"))
        , ready_(dir / ("worker-" + std::to_string(index) + ".ready"))
        , log_(dir / ("worker-" + std::to_string(index) + ".log"))
    {
        std::vector<std::string> args{STAMPEDE_FLEET_WORKER,
                                      "--token-url", emu.server().token_url(),
                                      "--ca-file",   emu.ca_file(),
                                      "--out",       out_.string(),
                                      "--ready-file", ready_.string()};
        args.insert(args.end(), extra_args.begin(), extra_args.end());

        // The URL, with its password, goes in the environment, not on the command line.
        std::vector<std::string> env{"STAMPEDE_REDIS_URL=" + redis_url(server)};
        if (server.server_options().tls) {
            env.push_back("STAMPEDE_REDIS_CA_FILE=" + server.ca_file());
        }
        for (char** e = environ; *e != nullptr; ++e) {
            env.emplace_back(*e);
        }

        std::vector<char*> argv;
        for (auto& a : args) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        std::vector<char*> envp;
        for (auto& e : env) {
            envp.push_back(e.data());
        }
        envp.push_back(nullptr);

        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                         0600);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        const int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), envp.data());
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) {
            throw std::runtime_error("posix_spawn of the fleet worker failed: " +
                                     std::string(std::strerror(rc)));
        }
    }

    ~worker()
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }

    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    bool ready() const { return std::filesystem::exists(ready_); }

    void signal(int sig) const { ::kill(pid_, sig); }

    // Waits for the process to exit and returns its status as `waitpid` reports it.
    int wait()
    {
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return status;
    }

    // Stops the worker with SIGTERM, or waits for it to stop by itself when `terminate`
    // is false, and returns its counters. Fails the test when it did not exit with 0.
    boost::json::object stop(bool terminate = true)
    {
        if (terminate) {
            signal(SIGTERM);
        }
        const int status = wait();
        BOOST_TEST_INFO("worker log:\n" << read_file(log_));
        BOOST_TEST(WIFEXITED(status));
        BOOST_TEST(WEXITSTATUS(status) == 0);
        const std::string text = read_file(out_);
        if (text.empty()) {
            BOOST_FAIL("the worker wrote no counters; its log:\n" << read_file(log_));
        }
        BOOST_TEST_MESSAGE("worker counters: " << text);
        return boost::json::parse(text).as_object();
    }

private:
    std::filesystem::path out_;
    std::filesystem::path ready_;
    std::filesystem::path log_;
    pid_t pid_ = -1;
};

// A fleet of workers sharing one Redis and one emulator.
struct fleet {
    redis_server& server;
    running_emulator& emu;
    std::vector<std::unique_ptr<worker>> workers;
    int started = 0;

    worker& start(std::vector<std::string> args)
    {
        workers.push_back(
            std::make_unique<worker>(server, emu, emu.dir(), started++, std::move(args)));
        return *workers.back();
    }

    void start(int count, const std::vector<std::string>& args)
    {
        for (int i = 0; i < count; ++i) {
            start(args);
        }
    }

    bool all_ready() const
    {
        for (const auto& w : workers) {
            if (!w->ready()) {
                return false;
            }
        }
        return true;
    }

    // Stops every worker (or waits for each to stop by itself) and returns their counters.
    std::vector<boost::json::object> stop_all(bool terminate = true)
    {
        std::vector<boost::json::object> results;
        for (auto& w : workers) {
            results.push_back(w->stop(terminate));
        }
        return results;
    }
};

std::int64_t total(const std::vector<boost::json::object>& results, const char* field)
{
    std::int64_t sum = 0;
    for (const auto& r : results) {
        sum += r.at(field).to_number<std::int64_t>();
    }
    return sum;
}

stampede::emulator::options emulator_options(std::chrono::milliseconds token_lifetime)
{
    stampede::emulator::options opts;
    opts.token_lifetime = token_lifetime;
    return opts;
}

void check_cold_start(bool tls, int processes, int callers)
{
    redis_server server(redis_server::options{.tls = tls});
    running_emulator emu(emulator_options(1h));
    fleet f{server, emu, {}, 0};
    f.start(processes, {"--callers", std::to_string(callers)});

    BOOST_TEST_REQUIRE(wait_for([&] { return f.all_ready(); }));
    const auto results = f.stop_all();
    BOOST_TEST(total(results, "callers_served") == processes * callers);
    BOOST_TEST(total(results, "errors") == 0);
    BOOST_TEST(emu.server().get_stats().token_requests == 1u);
    BOOST_TEST(total(results, "requests") == 1);
    BOOST_TEST(total(results, "leases_taken") >= 1);
    BOOST_TEST(total(results, "shared_hits") == processes - 1);
    BOOST_TEST(total(results, "store_errors") == 0);
}

} // namespace

BOOST_AUTO_TEST_CASE(fleet_cold_start_one_request)
{
    check_cold_start(false, 8, 1000);
}

BOOST_AUTO_TEST_CASE(fleet_cold_start_over_tls)
{
    check_cold_start(true, 8, 100);
}

BOOST_AUTO_TEST_CASE(fleet_refresh_ahead_one_request)
{
    // 6 s tokens are refreshed 2.7 s after they are issued (half their usable life).
    redis_server server;
    running_emulator emu(emulator_options(6s));
    fleet f{server, emu, {}, 0};
    f.start(8, {"--callers", "50"});
    BOOST_TEST_REQUIRE(wait_for([&] { return f.all_ready(); }));
    BOOST_TEST(emu.server().get_stats().token_requests == 1u);

    // Wait for the refresh, then give a duplicate request time to arrive.
    BOOST_TEST_REQUIRE(wait_for([&] { return emu.server().get_stats().token_requests >= 2; }));
    std::this_thread::sleep_for(500ms);
    const auto results = f.stop_all();
    BOOST_TEST(emu.server().get_stats().token_requests == 2u);
    BOOST_TEST(total(results, "errors") == 0);
    BOOST_TEST(total(results, "refreshes_ahead") >= 8);
}

BOOST_AUTO_TEST_CASE(fleet_dead_lease_holder_is_replaced)
{
    // The first token request stalls; its process is killed while it waits, holding a
    // lease that expires 3 s after it was taken.
    redis_server server;
    auto opts = emulator_options(1h);
    opts.fault_script = "stall";
    running_emulator emu(opts);
    fleet f{server, emu, {}, 0};
    const std::vector<std::string> args{"--callers",          "100",  "--lease-ttl-ms",
                                        "3000",               "--request-timeout-ms", "2000",
                                        "--refill-interval-ms", "500"};
    worker& holder = f.start(args);
    BOOST_TEST_REQUIRE(wait_for([&] { return emu.server().get_stats().token_requests >= 1; }));
    holder.signal(SIGKILL);
    holder.wait();
    f.workers.erase(f.workers.begin());

    f.start(7, args);
    BOOST_TEST_REQUIRE(wait_for([&] { return f.all_ready(); }));
    const auto results = f.stop_all();
    BOOST_TEST(total(results, "callers_served") == 700);
    BOOST_TEST(total(results, "errors") == 0);
    BOOST_TEST(emu.server().get_stats().token_requests == 2u);
    BOOST_TEST(total(results, "leases_taken") >= 1);
}

BOOST_AUTO_TEST_CASE(fleet_serves_callers_when_redis_stops)
{
    // 2 s tokens, so every process needs new tokens while Redis is down.
    redis_server server;
    auto opts = emulator_options(2s);
    opts.token_rate = {1000, std::chrono::seconds(60)};
    running_emulator emu(opts);
    fleet f{server, emu, {}, 0};
    f.start(4, {"--callers", "200", "--refill-interval-ms", "500"});
    BOOST_TEST_REQUIRE(wait_for([&] { return f.all_ready(); }));
    const auto before_stop = emu.server().get_stats().token_requests;

    server.stop();
    // Each process fetches for itself now; wait until the fleet has replaced the token
    // at least twice per process.
    BOOST_TEST_REQUIRE(wait_for([&] {
        return emu.server().get_stats().token_requests >= before_stop + 8;
    }));

    // With Redis back (empty, on the same port), the processes share tokens again.
    server.start();
    const auto before_start = emu.server().get_stats().token_requests;
    BOOST_TEST_REQUIRE(wait_for([&] {
        return emu.server().get_stats().token_requests >= before_start + 4;
    }));
    const auto results = f.stop_all();
    BOOST_TEST(total(results, "callers_served") == 800);
    BOOST_TEST(total(results, "errors") == 0);
    for (const auto& r : results) {
        BOOST_TEST(r.at("store_errors").to_number<std::int64_t>() >= 1);
        BOOST_TEST(r.at("calls").to_number<std::int64_t>() > 200);
    }
    // The cold start gave 3 shared hits; the others came after Redis returned.
    BOOST_TEST(total(results, "shared_hits") > 3);
}

BOOST_AUTO_TEST_CASE(fleet_serves_callers_when_redis_hangs)
{
    // A Redis server that sends no replies: every command times out after 300 ms, and
    // the source fetches for itself.
    redis_server server;
    running_emulator emu;
    asio::io_context ctx;
    auto redis_config = server.config();
    redis_config.command_timeout = 300ms;
    redis_config.connect_timeout = 300ms;
    auto store = std::make_shared<redis::redis_token_store>(ctx.get_executor(), redis_config);
    auto settings = emu.settings();
    settings.fleet.store = store;
    settings.fleet.lease_ttl = 10s;
    stampede::token_source source(ctx, settings);

    server.pause();
    bool served = false;
    stampede::test::run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto token = co_await source.token();
        served = !token.value().empty();
    });
    server.resume();
    BOOST_TEST(served);
    BOOST_TEST(source.stats().store_errors >= 1u);
    BOOST_TEST(source.stats().requests == 1u);
    BOOST_TEST(emu.server().get_stats().token_requests == 1u);

    source.shutdown();
    store->close();
    ctx.restart();
    ctx.run_for(100ms);
}

BOOST_AUTO_TEST_CASE(fleet_limiter_bounds_token_requests)
{
    // 1 s tokens for 15 s. The fleet limiter allows 4 requests at once and one more every
    // 4 s, so at most 4 + floor(W / 4 s) in any window W: 19 in 60 s, below the
    // endpoint's 20. Each process's own limiter (one request every 500 ms here) would
    // allow far more.
    constexpr std::int64_t capacity = 4;
    constexpr std::int64_t interval_ms = 4000;
    redis_server server;
    running_emulator emu(emulator_options(1s));
    fleet f{server, emu, {}, 0};
    f.start(4, {"--callers", "50", "--fleet-capacity", std::to_string(capacity),
                "--fleet-interval-ms", std::to_string(interval_ms), "--refill-interval-ms",
                "500", "--duration-ms", "15000"});
    BOOST_TEST_REQUIRE(wait_for([&] { return f.all_ready(); }));
    const auto results = f.stop_all(false);
    BOOST_TEST(total(results, "errors") == 0);
    BOOST_TEST(total(results, "fleet_limited_waits") >= 1);

    const auto stats = emu.server().get_stats();
    const auto& times = stats.token_request_times_ms;
    BOOST_TEST_MESSAGE("token requests: " << times.size());
    BOOST_TEST(stats.rate_limited == 0u);
    BOOST_TEST(times.size() >= 2u);
    BOOST_TEST(times.size() <= 20u);

    // A request reaches the emulator some time after its permit was taken, so the
    // spacing seen here may be shorter than the limiter's by that delay; up to 1 s of it
    // is allowed for.
    constexpr std::int64_t delivery_allowance_ms = 1000;
    for (std::size_t i = 0; i < times.size(); ++i) {
        for (std::size_t j = i + 1; j < times.size(); ++j) {
            const auto window = times[j] - times[i];
            const auto allowed = capacity + (window + delivery_allowance_ms) / interval_ms;
            BOOST_TEST_INFO("requests " << i << " to " << j << " within " << window << " ms");
            BOOST_TEST(static_cast<std::int64_t>(j - i + 1) <= allowed);
        }
    }
}

BOOST_AUTO_TEST_CASE(fleet_entry_is_encrypted_and_bound_to_secret)
{
    redis_server server;
    running_emulator emu;
    asio::io_context ctx;
    auto store =
        std::make_shared<redis::redis_token_store>(ctx.get_executor(), server.config());

    auto settings = emu.settings();
    settings.fleet.store = store;
    settings.fleet.lease_ttl = 10s;
    stampede::token_source writer(ctx, settings);
    std::string token_text;
    stampede::test::run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto token = co_await writer.token();
        token_text = std::string(token.value());
    });
    BOOST_TEST_REQUIRE(!token_text.empty());
    ctx.restart();
    ctx.run_for(200ms); // lets the entry be stored

    // The raw value in Redis contains neither the token nor the secret.
    std::string raw_entry;
    stampede::test::run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        redis::command read{"GET", store->entry_key(stampede::token_cache_key(settings))};
        auto op = store->commands().async_execute(std::move(read),
                                                  asio::as_tuple(asio::use_awaitable));
        auto [ec, answer] = co_await std::move(op);
        BOOST_TEST(!ec);
        raw_entry = answer.text();
    });
    BOOST_TEST(!raw_entry.empty());
    BOOST_TEST(raw_entry.find(token_text) == std::string::npos);
    BOOST_TEST(raw_entry.find("test-secret") == std::string::npos);

    // A process with another secret (same client id, so the same cache key) cannot read
    // the entry: it fetches with its own secret, which the endpoint rejects.
    auto other_store =
        std::make_shared<redis::redis_token_store>(ctx.get_executor(), server.config());
    auto other_settings = emu.settings("wrong-secret");
    other_settings.fleet.store = other_store;
    other_settings.fleet.lease_ttl = 10s;
    stampede::token_source other(ctx, other_settings);
    bool rejected = false;
    stampede::test::run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        try {
            co_await other.token();
        } catch (const stampede::error_with_diagnostics&) {
            rejected = true;
        }
    });
    BOOST_TEST(rejected);
    BOOST_TEST(other.stats().shared_hits == 0u);
    BOOST_TEST(other_store->stats().unreadable_entries >= 1u);
    BOOST_TEST(emu.server().get_stats().token_requests == 2u);

    writer.shutdown();
    other.shutdown();
    store->close();
    other_store->close();
    ctx.restart();
    ctx.run_for(100ms);
}

#ifdef STAMPEDE_DEMO_BINARY
namespace {

// Runs stampede-demo as a fleet of 8 processes with 200 callers each and returns its JSON
// report, after checking that every caller was served.
boost::json::object run_demo_fleet(const redis_server& server, const std::string& extra_options)
{
    const std::string command = std::string(STAMPEDE_DEMO_BINARY) + " --processes 8 --redis '" +
                                redis_url(server) + "' --json --callers 200 --threads 1 " +
                                extra_options + " 2>/dev/null";
    FILE* pipe = ::popen(command.c_str(), "r");
    BOOST_TEST_REQUIRE(pipe != nullptr);
    std::string output;
    char chunk[4096];
    while (const std::size_t count = std::fread(chunk, 1, sizeof chunk, pipe)) {
        output.append(chunk, count);
    }
    const int status = ::pclose(pipe);
    BOOST_TEST_INFO("stampede-demo output: " << output);
    BOOST_TEST(WIFEXITED(status));
    BOOST_TEST(WEXITSTATUS(status) == 0);

    auto report = boost::json::parse(output).as_object();
    BOOST_TEST(report.at("callers_served").to_number<std::int64_t>() == 1600);
    BOOST_TEST(report.at("errors").to_number<std::int64_t>() == 0);
    BOOST_TEST(report.at("failed_processes").to_number<std::int64_t>() == 0);
    return report;
}

std::int64_t cold_start_requests(const boost::json::object& report)
{
    return report.at("cold_start").as_object().at("token_requests").to_number<std::int64_t>();
}

} // namespace

BOOST_AUTO_TEST_CASE(demo_fleet_cold_start_one_request)
{
    redis_server server;
    const auto report = run_demo_fleet(server, "");
    BOOST_TEST(report.at("token_requests").to_number<std::int64_t>() == 1);
    BOOST_TEST(cold_start_requests(report) == 1);
    BOOST_TEST(report.at("shared_hits").to_number<std::int64_t>() >= 1);
}

BOOST_AUTO_TEST_CASE(demo_fleet_load_replaces_revoked_token)
{
    redis_server server;
    const auto report = run_demo_fleet(server, "--duration 2 --api-requests 1");
    BOOST_TEST(cold_start_requests(report) == 1);
    // The token revoked halfway is replaced: at least one request after the cold start.
    BOOST_TEST(report.at("token_requests").to_number<std::int64_t>() >= 2);
    BOOST_TEST(report.at("api_requests").to_number<std::int64_t>() >= 8);
}
#endif
