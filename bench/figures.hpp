#ifndef STAMPEDE_BENCH_FIGURES_HPP
#define STAMPEDE_BENCH_FIGURES_HPP

// The figures that scripts/bench reports: each one reads a measurement from the
// benchmark runs, divides it by its baseline from the same run, and checks its target.

#include <benchmark/benchmark.h>
#include <boost/json/array.hpp>

#include <map>
#include <string>
#include <vector>

namespace stampede::bench {

/// The runs of one benchmark instance (such as `cold_start/1000`), one per repetition,
/// or the error that stopped it.
struct benchmark_runs {
    std::vector<benchmark::BenchmarkReporter::Run> repetitions;
    std::string error;
};

/// Benchmark instance name to its runs.
using run_table = std::map<std::string, benchmark_runs>;

/// Returns one JSON object per figure, each with `build`, `name`, `value`, `unit`,
/// `baseline`, `ratio`, `target` and `met`. Cold start figures also carry `waiters` and
/// `plot` (the plot they belong to). A figure whose benchmark failed or was not run
/// has null values, `met` false and an `error`.
boost::json::array evaluate_figures(const run_table& runs, const std::string& build);

} // namespace stampede::bench

#endif
