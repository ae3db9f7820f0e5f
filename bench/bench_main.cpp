// Runs the benchmarks with Google Benchmark's usual flags and console output, then
// evaluates the figures and writes them as JSON.
//
// Extra flags:
//   --stampede_build=NAME     label of the build in the figures (default "static")
//   --stampede_results=FILE   where to write the figures (default: not written)

#include "figures.hpp"

#include <benchmark/benchmark.h>
#include <boost/json/serialize.hpp>

#include <cstring>
#include <fstream>
#include <iostream>
#include <string_view>
#include <unistd.h>

namespace {

// Prints like the console reporter and keeps each repetition for the figures.
class recording_reporter final : public benchmark::ConsoleReporter {
public:
    recording_reporter()
        : ConsoleReporter(isatty(STDOUT_FILENO) != 0 ? OO_ColorTabular : OO_Tabular)
    {}

    void ReportRuns(const std::vector<Run>& runs) override
    {
        for (const Run& run : runs) {
            if (run.run_type != Run::RT_Iteration) {
                continue;
            }
            std::string key = run.run_name.function_name;
            if (!run.run_name.args.empty()) {
                key += "/" + run.run_name.args;
            }
            auto& entry = table_[key];
            if (run.error_occurred) {
                entry.error = run.error_message;
            } else {
                entry.repetitions.push_back(run);
            }
        }
        ConsoleReporter::ReportRuns(runs);
    }

    const stampede::bench::run_table& table() const noexcept { return table_; }

private:
    stampede::bench::run_table table_;
};

bool take_flag(std::string_view arg, std::string_view name, std::string& out)
{
    if (arg.substr(0, name.size()) != name) {
        return false;
    }
    out = std::string(arg.substr(name.size()));
    return true;
}

} // namespace

int main(int argc, char** argv)
{
    benchmark::Initialize(&argc, argv);

    std::string build = "static";
    std::string results_file;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (!take_flag(arg, "--stampede_build=", build) &&
            !take_flag(arg, "--stampede_results=", results_file)) {
            std::cerr << "stampede_bench: unknown argument '" << arg
                      << "'; see --help for Google Benchmark's flags, plus "
                         "--stampede_build=NAME and --stampede_results=FILE\n";
            return 2;
        }
    }

    recording_reporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();

    if (!results_file.empty()) {
        const boost::json::array rows = stampede::bench::evaluate_figures(reporter.table(), build);
        std::ofstream out(results_file);
        out << boost::json::serialize(rows) << '\n';
        if (!out) {
            std::cerr << "stampede_bench: cannot write " << results_file << '\n';
            return 1;
        }
    }
    return 0;
}
