#include <stampede/shared_rate_limiter.hpp>

#include <ostream>

namespace stampede {

std::ostream& operator<<(std::ostream& os, const limit_decision& d)
{
    if (d.allowed) {
        return os << "allowed";
    }
    return os << "denied, retry after " << d.retry_after.count() << " ms";
}

} // namespace stampede
