#include "figures.hpp"

#include "support.hpp"

#include <boost/json/object.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>

namespace stampede::bench {
namespace {

// Summary of the repetitions of a measurement.
enum class statistic {
    median, // times and rates
    max,    // counts that must stay at a value in every repetition
    sum,    // events counted over all repetitions
};

enum class target_kind {
    ratio_at_most,
    ratio_at_least,
    value_at_most,
    value_equals, // in every repetition
};

struct measurement {
    measurement(std::string benchmark_name, std::string counter_name = {},
                statistic summary = statistic::median)
        : benchmark(std::move(benchmark_name))
        , counter(std::move(counter_name))
        , stat(summary)
    {}

    std::string benchmark;
    std::string counter; // empty: CPU time per iteration
    statistic stat;
};

struct figure {
    figure(std::string figure_name, std::string figure_unit, measurement measured,
           std::optional<measurement> compared_with, target_kind target, double target_limit,
           int waiter_count = 0, std::string plot_name = {})
        : name(std::move(figure_name))
        , unit(std::move(figure_unit))
        , value(std::move(measured))
        , baseline(std::move(compared_with))
        , kind(target)
        , limit(target_limit)
        , waiters(waiter_count)
        , plot(std::move(plot_name))
    {}

    std::string name;
    std::string unit;
    measurement value;
    std::optional<measurement> baseline;
    target_kind kind;
    double limit;
    int waiters;      // cold start figures: N, for the plots
    std::string plot; // cold start figures: the plot they belong to
};

double to_ns_factor(benchmark::TimeUnit unit)
{
    switch (unit) {
    case benchmark::kNanosecond:
        return 1;
    case benchmark::kMicrosecond:
        return 1e3;
    case benchmark::kMillisecond:
        return 1e6;
    case benchmark::kSecond:
        return 1e9;
    }
    return 1;
}

// The value of one repetition.
std::optional<double> read(const benchmark::BenchmarkReporter::Run& run, const measurement& m)
{
    if (m.counter.empty()) {
        return run.GetAdjustedCPUTime() * to_ns_factor(run.time_unit);
    }
    auto it = run.counters.find(m.counter);
    if (it == run.counters.end()) {
        return std::nullopt;
    }
    return it->second.value;
}

struct summary {
    double value = 0;
    std::vector<double> repetitions;
};

// Summarises a measurement over its repetitions, or sets `error`.
std::optional<summary> summarise(const run_table& runs, const measurement& m, std::string& error)
{
    auto it = runs.find(m.benchmark);
    if (it == runs.end()) {
        error = "benchmark " + m.benchmark + " was not run";
        return std::nullopt;
    }
    if (!it->second.error.empty()) {
        error = m.benchmark + ": " + it->second.error;
        return std::nullopt;
    }
    summary s;
    for (const auto& run : it->second.repetitions) {
        if (auto v = read(run, m)) {
            s.repetitions.push_back(*v);
        }
    }
    if (s.repetitions.empty()) {
        error = m.benchmark + " reported no " + (m.counter.empty() ? "time" : m.counter);
        return std::nullopt;
    }
    std::vector<double> values = s.repetitions;
    switch (m.stat) {
    case statistic::median:
        s.value = median(values);
        break;
    case statistic::max:
        s.value = *std::max_element(values.begin(), values.end());
        break;
    case statistic::sum:
        for (double v : values) {
            s.value += v;
        }
        break;
    }
    return s;
}

std::string format_limit(double limit)
{
    char text[32];
    std::snprintf(text, sizeof text, "%g", limit);
    return text;
}

std::string describe_target(const figure& f)
{
    switch (f.kind) {
    case target_kind::ratio_at_most:
        return "ratio <= " + format_limit(f.limit);
    case target_kind::ratio_at_least:
        return "ratio >= " + format_limit(f.limit);
    case target_kind::value_at_most:
        return "<= " + format_limit(f.limit) + " " + f.unit;
    case target_kind::value_equals:
        return "== " + format_limit(f.limit) + " in every run";
    }
    return {};
}

bool target_met(const figure& f, const summary& value, const std::optional<double>& ratio)
{
    switch (f.kind) {
    case target_kind::ratio_at_most:
        return ratio && *ratio <= f.limit;
    case target_kind::ratio_at_least:
        return ratio && *ratio >= f.limit;
    case target_kind::value_at_most:
        return value.value <= f.limit;
    case target_kind::value_equals:
        return std::all_of(value.repetitions.begin(), value.repetitions.end(),
                           [&](double v) { return v == f.limit; });
    }
    return false;
}

boost::json::object evaluate(const figure& f, const run_table& runs, const std::string& build)
{
    boost::json::object row;
    row["build"] = build;
    row["name"] = f.name;
    row["unit"] = f.unit;
    row["target"] = describe_target(f);
    if (f.waiters != 0) {
        row["waiters"] = f.waiters;
        row["plot"] = f.plot;
    }

    std::string error;
    const std::optional<summary> value = summarise(runs, f.value, error);
    std::optional<summary> baseline;
    if (value && f.baseline) {
        baseline = summarise(runs, *f.baseline, error);
    }
    if (!error.empty()) {
        row["value"] = nullptr;
        row["baseline"] = nullptr;
        row["ratio"] = nullptr;
        row["met"] = false;
        row["error"] = error;
        return row;
    }

    std::optional<double> ratio;
    if (baseline && baseline->value != 0) {
        ratio = value->value / baseline->value;
    }
    row["value"] = value->value;
    row["baseline"] = baseline ? boost::json::value(baseline->value) : nullptr;
    row["ratio"] = ratio ? boost::json::value(*ratio) : nullptr;
    row["met"] = target_met(f, *value, ratio);
    row["repetitions"] = value->repetitions.size();
    return row;
}

std::vector<figure> all_figures()
{
    using enum statistic;
    using enum target_kind;
    std::vector<figure> figures = {
        {"cached co_await token(), 1 thread",
         "ns",
         {"cached_token"},
         measurement{"bare_co_await"},
         ratio_at_most,
         1.5},
        {"try_token() of the cached token",
         "ns",
         {"try_token"},
         measurement{"mutex_lock_unlock"},
         ratio_at_most,
         1.0},
        {"cached token(), 2 threads vs 1: throughput per CPU-second",
         "calls/s",
         {"token_threads/2", "calls_per_cpu_s"},
         measurement{"token_threads/1", "calls_per_cpu_s"},
         ratio_at_least,
         1.75},
        {"cached token(), 2 threads vs 1: throughput per wall-clock second",
         "calls/s",
         {"token_threads/2", "calls_per_wall_s"},
         measurement{"token_threads/1", "calls_per_wall_s"},
         ratio_at_least,
         1.75},
    };

    for (int n : {1'000, 10'000, 100'000}) {
        const std::string bench = "cold_start/" + std::to_string(n);
        const std::string prefix = "cold start, N=" + std::to_string(n) + ": ";
        figures.push_back({prefix + "token requests",
                           "requests",
                           {bench, "token_requests", max},
                           std::nullopt,
                           value_equals,
                           1});
        figures.push_back({prefix + "response to last caller resumed, per waiter",
                           "ns",
                           {bench, "resume_ns_per_waiter"},
                           measurement{bench, "timer_resume_ns_per_waiter"},
                           value_at_most,
                           300,
                           n,
                           "resume"});
        figures.push_back({prefix + "memory per waiter beyond a timer wait",
                           "bytes",
                           {bench, "extra_bytes_per_waiter"},
                           measurement{bench, "timer_bytes_per_waiter"},
                           value_at_most,
                           256,
                           n,
                           "memory"});
    }

    figures.insert(figures.end(),
                   {
                       {"refresh ahead under load: token() calls slower than 10 ms",
                        "calls",
                        {"load_refresh_ahead", "slow_calls", sum},
                        measurement{"load_no_refresh", "slow_calls", sum},
                        value_equals,
                        0},
                       {"refresh ahead under load: calls slower than 10 ms, thread not preempted",
                        "calls",
                        {"load_refresh_ahead", "slow_calls_not_preempted", sum},
                        measurement{"load_no_refresh", "slow_calls_not_preempted", sum},
                        value_equals,
                        0},
                       {"refresh ahead under load: calls that waited for a fetch",
                        "calls",
                        {"load_refresh_ahead", "waiters", sum},
                        measurement{"load_no_refresh", "waiters", sum},
                        value_equals,
                        0},
                       {"refresh ahead under load: p99.9 of token()",
                        "ns",
                        {"load_refresh_ahead", "p999_ns"},
                        measurement{"load_no_refresh", "p999_ns"},
                        ratio_at_most,
                        2},
                       {"token fetch over TLS, kept-alive connection vs new connection",
                        "ns",
                        {"fetch_kept_alive", "fetch_ns"},
                        measurement{"fetch_new_connection", "fetch_ns"},
                        ratio_at_most,
                        0.5},
                       {"connections accepted for 1 + 100 fetches on one source",
                        "connections",
                        {"fetch_kept_alive", "connections_accepted", max},
                        std::nullopt,
                        value_equals,
                        1},
                       {"rate_limiter::acquire() with permits free",
                        "ns",
                        {"limiter_acquire"},
                        measurement{"bare_co_await"},
                        ratio_at_most,
                        3},
                   });
    return figures;
}

} // namespace

boost::json::array evaluate_figures(const run_table& runs, const std::string& build)
{
    boost::json::array rows;
    for (const figure& f : all_figures()) {
        rows.push_back(evaluate(f, runs, build));
    }
    return rows;
}

} // namespace stampede::bench
