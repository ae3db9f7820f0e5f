#ifndef STAMPEDE_DETAIL_LOG_HPP
#define STAMPEDE_DETAIL_LOG_HPP

#include <stampede/logger.hpp>

#include <string>

namespace stampede::detail {

/// Calls `make_message()` and passes its result to the sink only when `level` is enabled,
/// so filtered records cost one comparison.
template <class MakeMessage>
void log(const logger& lg, log_level level, MakeMessage&& make_message)
{
    if (lg.enabled(level)) {
        const std::string message = make_message();
        lg.sink(level, message);
    }
}

} // namespace stampede::detail

#endif
