#ifndef STAMPEDE_LOGGER_HPP
#define STAMPEDE_LOGGER_HPP

#include <functional>
#include <string_view>

namespace stampede {

enum class log_level { trace, debug, info, warning, error, off };

/// Returns `"trace"`, `"debug"`, `"info"`, `"warning"`, `"error"` or `"off"`.
std::string_view to_string(log_level level) noexcept;

/// A level filter plus a sink. Off by default: a record below `level` is never formatted.
///
/// The SDK never passes a client secret or an access token to the sink. The sink may be
/// called from any thread that runs the SDK's handlers, so it must be thread-safe.
struct logger {
    /// Lowest level passed to `sink`.
    log_level level = log_level::off;

    /// Receives each record that passes the filter.
    std::function<void(log_level, std::string_view)> sink;

    bool enabled(log_level l) const noexcept
    {
        return l >= level && level != log_level::off && static_cast<bool>(sink);
    }

    /// Returns a logger that writes `LEVEL stampede: message` lines to standard error.
    static logger to_stderr(log_level level);
};

} // namespace stampede

#endif
