// Runs a fuzz harness over saved inputs without libFuzzer, so that builds with any
// compiler replay the seed corpora and the inputs that once crashed.
//
// Usage: HARNESS_replay PATH...
// Each regular file named, and each regular file directly inside a directory named, is
// passed once to LLVMFuzzerTestOneInput. A path that does not exist is skipped. Exits
// with 1 when no input was found, so that a wrong path cannot pass unnoticed.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> collect_inputs(int argc, char** argv)
{
    std::vector<fs::path> inputs;
    for (int i = 1; i < argc; ++i) {
        const fs::path path(argv[i]);
        if (fs::is_regular_file(path)) {
            inputs.push_back(path);
        } else if (fs::is_directory(path)) {
            for (const auto& entry : fs::directory_iterator(path)) {
                if (entry.is_regular_file()) {
                    inputs.push_back(entry.path());
                }
            }
        }
    }
    std::sort(inputs.begin(), inputs.end());
    return inputs;
}

} // namespace

int main(int argc, char** argv)
{
    const std::vector<fs::path> inputs = collect_inputs(argc, argv);
    if (inputs.empty()) {
        std::cerr << "no input files found in the given paths\n";
        return 1;
    }
    for (const fs::path& path : inputs) {
        std::ifstream file(path, std::ios::binary);
        const std::string bytes((std::istreambuf_iterator<char>(file)),
                                std::istreambuf_iterator<char>());
        std::cout << "running " << path.string() << " (" << bytes.size() << " bytes)\n"
                  << std::flush;
        LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    }
    std::cout << inputs.size() << " inputs passed\n";
    return 0;
}
