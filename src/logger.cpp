#include <stampede/logger.hpp>

#include <cstdio>
#include <string>

namespace stampede {

std::string_view to_string(log_level level) noexcept
{
    switch (level) {
    case log_level::trace:
        return "trace";
    case log_level::debug:
        return "debug";
    case log_level::info:
        return "info";
    case log_level::warning:
        return "warning";
    case log_level::error:
        return "error";
    case log_level::off:
        return "off";
    }
    return "unknown";
}

logger logger::to_stderr(log_level level)
{
    logger lg;
    lg.level = level;
    lg.sink = [](log_level l, std::string_view message) {
        // One fwrite per line keeps lines from different threads whole.
        std::string line;
        line.reserve(message.size() + 24);
        line.append(to_string(l)).append(" stampede: ").append(message).append("\n");
        std::fwrite(line.data(), 1, line.size(), stderr);
    };
    return lg;
}

} // namespace stampede
