// stampede-demo --processes N --redis URL: the parent of a fleet. It starts the emulator
// on loopback, starts N copies of this program as workers that share the Redis token
// store, and adds up what the workers report. By default the run is the fleet's cold
// start. With --duration the load goes on and the token is revoked halfway through. The
// token requests are counted at the emulator, so they are the fleet's.

#include "demo_options.hpp"
#include "emulator.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace stampede::demo {
namespace {

// A worker process and the read end of the pipe on its standard output.
struct worker_process {
    pid_t pid = -1;
    int output = -1;
    std::string buffer;
};

// Reads the next line the worker wrote. Returns false at end of file.
bool read_line(worker_process& worker, std::string& line)
{
    for (;;) {
        if (const auto end = worker.buffer.find('\n'); end != std::string::npos) {
            line = worker.buffer.substr(0, end);
            worker.buffer.erase(0, end + 1);
            return true;
        }
        char chunk[4096];
        const ssize_t count = ::read(worker.output, chunk, sizeof chunk);
        if (count < 0 && errno == EINTR) {
            continue;
        }
        if (count <= 0) {
            return false;
        }
        worker.buffer.append(chunk, static_cast<std::size_t>(count));
    }
}

// Starts this program as a worker with the parent's load options and the emulator's
// URLs. The Redis URL goes in the environment, so its password is not on a command line.
worker_process start_worker(const demo_options& opts, const emulator::server& server,
                            const std::string& ca_file)
{
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    std::vector<std::string> args{
        self,
        "--worker",
        "--worker-token-url", server.token_url(),
        "--worker-api-url", server.base_url(),
        "--worker-ca-file", ca_file,
        "--callers", std::to_string(opts.callers),
        "--duration", std::to_string(load_duration(opts)),
        "--threads", std::to_string(opts.threads),
        "--api-requests", std::to_string(opts.api_requests),
    };
    if (!opts.redis_ca_file.empty()) {
        args.insert(args.end(), {"--redis-ca-file", opts.redis_ca_file});
    }
    std::vector<std::string> env{std::string(redis_url_variable) + "=" + opts.redis_url};
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

    // Both ends are close-on-exec, so no other worker inherits them; dup2 gives the
    // worker its standard output without the flag.
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        throw std::runtime_error(std::string("pipe2 failed: ") + std::strerror(errno));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    worker_process worker;
    const int rc = ::posix_spawn(&worker.pid, self.c_str(), &actions, nullptr, argv.data(),
                                 envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) {
        ::close(fds[0]);
        throw std::runtime_error("failed to start a worker process: " +
                                 std::string(std::strerror(rc)));
    }
    worker.output = fds[0];
    return worker;
}

std::int64_t sum(const std::vector<boost::json::object>& reports, const char* field)
{
    std::int64_t total = 0;
    for (const auto& report : reports) {
        if (const auto* value = report.if_contains(field)) {
            total += value->to_number<std::int64_t>();
        }
    }
    return total;
}

// Returns the slowest worker's value of `field` in its `cold_start` latencies.
std::int64_t slowest_cold_start(const std::vector<boost::json::object>& reports,
                                const char* field)
{
    std::int64_t slowest = 0;
    for (const auto& report : reports) {
        if (const auto* latency = report.if_contains("cold_start")) {
            if (const auto* value = latency->as_object().if_contains(field)) {
                slowest = std::max(slowest, value->to_number<std::int64_t>());
            }
        }
    }
    return slowest;
}

} // namespace

int run_fleet(const demo_options& opts)
{
    using std::chrono::steady_clock;

    const auto work_dir = std::filesystem::temp_directory_path() /
                          ("stampede-demo-" + std::to_string(::getpid()));
    std::filesystem::create_directories(work_dir);
    emulator::options emulator_options;
    emulator_options.token_lifetime =
        std::chrono::milliseconds(static_cast<long long>(opts.token_lifetime_s * 1000));
    emulator_options.cert_out = (work_dir / "emulator.pem").string();
    emulator_options.log_requests = false;
    emulator::server server(emulator_options);
    server.start();
    if (!opts.json) {
        std::cout << "emulator: " << server.token_url() << " (TLS, certificate "
                  << emulator_options.cert_out << ")\n"
                  << "workers:  " << opts.processes << " processes sharing one Redis store\n"
                  << "scenario: " << opts.callers << " callers in each process ask for a token "
                  << "at once";
        if (load_duration(opts) > 0) {
            std::cout << ", then each calls token() every 50 ms for " << load_duration(opts)
                      << " s; halfway through, the emulator revokes the token and "
                      << opts.api_requests << " API requests in each process recover from the 401";
        } else {
            std::cout << " (--duration adds a load phase with refreshes and a revocation)";
        }
        std::cout << "\n\n";
    }

    std::vector<worker_process> workers;
    int failed_workers = 0;
    for (int i = 0; i < opts.processes; ++i) {
        try {
            workers.push_back(start_worker(opts, server, emulator_options.cert_out));
        } catch (const std::exception& e) {
            std::cerr << "stampede-demo: " << e.what() << '\n';
            ++failed_workers;
        }
    }

    // Halfway through the load, if there is one, revoke the token. The workers' API
    // requests follow just after.
    const double duration_s = load_duration(opts);
    const auto halfway = steady_clock::now() + std::chrono::milliseconds(static_cast<long long>(
                                                   duration_s * 1000 / 2));
    std::thread revoker([&] {
        if (duration_s > 0) {
            std::this_thread::sleep_until(halfway);
            server.revoke_all();
        }
    });

    // The cold start is over once every worker has served its first calls.
    std::string line;
    for (auto& worker : workers) {
        while (read_line(worker, line) && line != "cold-start") {
        }
    }
    const auto cold_start_requests = server.get_stats().token_requests;

    std::vector<boost::json::object> reports;
    for (auto& worker : workers) {
        bool reported = false;
        while (read_line(worker, line)) {
            try {
                reports.push_back(boost::json::parse(line).as_object());
                reported = true;
                break;
            } catch (const std::exception&) {
                // Not the report line; the worker writes nothing else to standard output.
            }
        }
        ::close(worker.output);
        int status = 0;
        ::waitpid(worker.pid, &status, 0);
        if (!reported || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ++failed_workers;
        }
    }
    revoker.join();
    const auto emulator_stats = server.get_stats();
    server.stop();
    std::filesystem::remove_all(work_dir);

    const std::int64_t callers = static_cast<std::int64_t>(opts.callers) * opts.processes;
    const std::int64_t served = sum(reports, "callers_served");
    const std::int64_t errors = sum(reports, "errors");
    if (opts.json) {
        boost::json::array worker_reports(reports.begin(), reports.end());
        boost::json::object out{
            {"processes", opts.processes},
            {"failed_processes", failed_workers},
            {"callers", callers},
            {"callers_served", served},
            {"token_requests", emulator_stats.token_requests},
            {"cold_start",
             {{"token_requests", cold_start_requests},
              {"slowest_p99_ns", slowest_cold_start(reports, "p99_ns")},
              {"slowest_max_ns", slowest_cold_start(reports, "max_ns")}}},
            {"tokens_issued", emulator_stats.tokens_issued},
            {"rate_limited", emulator_stats.rate_limited},
            {"refreshes_ahead", sum(reports, "refreshes_ahead")},
            {"shared_hits", sum(reports, "shared_hits")},
            {"lease_waits", sum(reports, "lease_waits")},
            {"leases_taken", sum(reports, "leases_taken")},
            {"store_errors", sum(reports, "store_errors")},
            {"connections", emulator_stats.connections_accepted},
            {"token_connections", sum(reports, "token_connections")},
            {"api_requests", emulator_stats.api_requests},
            {"unauthorized_recoveries", sum(reports, "unauthorized_recoveries")},
            {"errors", errors},
            {"workers", std::move(worker_reports)},
        };
        std::cout << boost::json::serialize(out) << '\n';
    } else {
        std::cout << "callers served:          " << served << " of " << callers << " ("
                  << opts.processes << " processes, " << failed_workers << " failed)\n"
                  << "token requests (server): " << emulator_stats.token_requests << " ("
                  << cold_start_requests << " for the cold start; "
                  << emulator_stats.rate_limited << " rate limited)\n"
                  << "shared store:            " << sum(reports, "shared_hits")
                  << " tokens taken from it, " << sum(reports, "leases_taken")
                  << " leases taken, " << sum(reports, "lease_waits") << " lease waits, "
                  << sum(reports, "store_errors") << " store errors\n"
                  << "API requests (server):   " << emulator_stats.api_requests << " ("
                  << sum(reports, "unauthorized_recoveries")
                  << " recovered from 401 with a fresh token)\n"
                  << "errors:                  " << errors << '\n';
        if (sum(reports, "store_errors") > 0) {
            std::cout << "note: the shared store failed, so the processes fell back to their "
                         "own caches for some fetches; the workers' log lines above say why\n";
        }
    }
    return failed_workers == 0 && served == callers && errors == 0 ? 0 : 1;
}

} // namespace stampede::demo
