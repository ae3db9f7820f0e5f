// The options of stampede-demo, shared by the single-process run, the fleet parent and
// its workers.

#ifndef STAMPEDE_DEMO_OPTIONS_HPP
#define STAMPEDE_DEMO_OPTIONS_HPP

#include <algorithm>
#include <optional>
#include <string>
#include <thread>

namespace stampede::demo {

struct demo_options {
    int callers = 10000;
    double token_lifetime_s = 6;
    /// How long the load continues after the cold start. Unset means the mode's default.
    std::optional<double> duration_s;
    unsigned threads = std::max(2u, std::thread::hardware_concurrency());
    int api_requests = 4;
    bool json = false;

    // Fleet mode.
    int processes = 1;
    std::string redis_url;
    std::string redis_ca_file;

    // A worker of a fleet, started by the parent with the emulator's URLs and CA file.
    bool worker = false;
    std::string token_url;
    std::string api_url;
    std::string ca_file;
};

/// The single-process run shows the load phase by default. A fleet shows only its cold
/// start, where sharing one token matters most, unless --duration is given.
inline double load_duration(const demo_options& opts)
{
    return opts.duration_s.value_or(opts.redis_url.empty() ? 8.0 : 0.0);
}

/// Returns the API requests sent after the token is revoked halfway through the load:
/// none without a load phase, because the revocation needs one to happen in.
inline int revocation_api_requests(const demo_options& opts)
{
    return load_duration(opts) > 0 ? opts.api_requests : 0;
}

/// The environment variable that passes the Redis URL, which may contain a password, from
/// the fleet parent to its workers instead of their command lines.
inline constexpr const char* redis_url_variable = "STAMPEDE_DEMO_REDIS_URL";

/// Runs the demo in `opts.processes` worker processes that share the Redis store at
/// `opts.redis_url` and one emulator started here, and prints the fleet's totals.
/// Returns the exit status of stampede-demo.
int run_fleet(const demo_options& opts);

} // namespace stampede::demo

#endif
