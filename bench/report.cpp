// Merges the figures written by stampede_bench for several builds.
//
// Usage: stampede_bench_report OUT_DIR FIGURES.json...
//
// Prints one Markdown table with a row per figure and build, and writes to OUT_DIR:
//   results.json   every row of every input, in order
//   resume.dat     for gnuplot: N, then per build the time per waiter and its baseline
//   memory.dat     for gnuplot: N, then per build the bytes per waiter and its baseline

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace json = boost::json;

namespace {

json::array read_rows(const std::string& path)
{
    std::ifstream in(path);
    if (!in) {
        throw std::runtime_error("cannot open " + path + " for reading");
    }
    std::stringstream text;
    text << in.rdbuf();
    return json::parse(text.str()).as_array();
}

std::string format_number(const json::value& v)
{
    if (v.is_null()) {
        return "-";
    }
    const double x = v.to_number<double>();
    char text[32];
    if (x != 0 && (x >= 1e6 || x <= -1e6)) {
        std::snprintf(text, sizeof text, "%.3g", x);
    } else if (x == static_cast<double>(static_cast<long long>(x))) {
        std::snprintf(text, sizeof text, "%lld", static_cast<long long>(x));
    } else if (x >= 100 || x <= -100) {
        std::snprintf(text, sizeof text, "%.0f", x);
    } else {
        std::snprintf(text, sizeof text, "%.3g", x);
    }
    return text;
}

std::string format_ratio(const json::value& v)
{
    if (v.is_null()) {
        return "-";
    }
    char text[32];
    std::snprintf(text, sizeof text, "%.2fx", v.to_number<double>());
    return text;
}

// Orders rows by figure (in first-seen order), then by build (in input order).
std::vector<const json::object*> group_by_figure(const json::array& rows)
{
    std::vector<std::string> names;
    std::map<std::string, std::vector<const json::object*>> by_name;
    for (const json::value& row : rows) {
        const json::object& object = row.as_object();
        const std::string name(object.at("name").as_string());
        if (!by_name.contains(name)) {
            names.push_back(name);
        }
        by_name[name].push_back(&object);
    }
    std::vector<const json::object*> ordered;
    for (const std::string& name : names) {
        ordered.insert(ordered.end(), by_name[name].begin(), by_name[name].end());
    }
    return ordered;
}

void print_table(const json::array& rows)
{
    std::cout << "| Figure | Build | Value | Unit | Baseline | Ratio | Target | Met |\n"
              << "|---|---|---|---|---|---|---|---|\n";
    for (const json::object* row : group_by_figure(rows)) {
        std::string met = row->at("met").as_bool() ? "yes" : "**no**";
        if (const json::value* error = row->if_contains("error")) {
            met += " (" + std::string(error->as_string()) + ")";
        }
        std::cout << "| " << row->at("name").as_string().c_str() << " | "
                  << row->at("build").as_string().c_str() << " | "
                  << format_number(row->at("value")) << " | " << row->at("unit").as_string().c_str()
                  << " | " << format_number(row->at("baseline")) << " | "
                  << format_ratio(row->at("ratio")) << " | "
                  << row->at("target").as_string().c_str() << " | " << met << " |\n";
    }
}

// Writes the rows of one plot as columns: N, then value and baseline for each build.
void write_plot_data(const json::array& rows, const std::vector<std::string>& builds,
                     const std::string& plot, const std::filesystem::path& file)
{
    std::map<std::int64_t, std::map<std::string, std::pair<double, double>>> table;
    for (const json::value& row : rows) {
        const json::object& object = row.as_object();
        const json::value* which = object.if_contains("plot");
        if (which == nullptr || which->as_string() != plot || object.at("value").is_null()) {
            continue;
        }
        const std::string build(object.at("build").as_string());
        const double baseline =
            object.at("baseline").is_null() ? 0.0 : object.at("baseline").to_number<double>();
        table[object.at("waiters").to_number<std::int64_t>()][build] = {
            object.at("value").to_number<double>(), baseline};
    }

    std::ofstream out(file);
    out << "# N";
    for (const std::string& build : builds) {
        out << ' ' << build << ' ' << build << "_baseline";
    }
    out << '\n';
    for (const auto& [n, values] : table) {
        out << n;
        for (const std::string& build : builds) {
            auto it = values.find(build);
            if (it == values.end()) {
                out << " NaN NaN";
            } else {
                out << ' ' << it->second.first << ' ' << it->second.second;
            }
        }
        out << '\n';
    }
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 3) {
        std::cerr << "usage: stampede_bench_report OUT_DIR FIGURES.json...\n";
        return 2;
    }
    try {
        const std::filesystem::path out_dir = argv[1];
        std::filesystem::create_directories(out_dir);

        json::array rows;
        std::vector<std::string> builds;
        for (int i = 2; i < argc; ++i) {
            for (json::value& row : read_rows(argv[i])) {
                const std::string build(row.as_object().at("build").as_string());
                if (std::find(builds.begin(), builds.end(), build) == builds.end()) {
                    builds.push_back(build);
                }
                rows.push_back(std::move(row));
            }
        }

        print_table(rows);
        std::ofstream(out_dir / "results.json") << json::serialize(rows) << '\n';
        write_plot_data(rows, builds, "resume", out_dir / "resume.dat");
        write_plot_data(rows, builds, "memory", out_dir / "memory.dat");
    } catch (const std::exception& e) {
        std::cerr << "stampede_bench_report: " << e.what() << '\n';
        return 1;
    }
    return 0;
}
