#ifndef STAMPEDE_SHARED_RATE_LIMITER_HPP
#define STAMPEDE_SHARED_RATE_LIMITER_HPP

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <iosfwd>

namespace stampede {

/// The decision of a rate limiter shared by several processes on one request.
struct limit_decision {
    /// Whether the request may be sent now; the permit is taken when true.
    bool allowed = false;

    /// How long after the decision the next permit becomes available, rounded up to the
    /// millisecond; zero when allowed.
    std::chrono::milliseconds retry_after{0};

    friend bool operator==(const limit_decision&, const limit_decision&) = default;
};

/// Writes `allowed` or `denied, retry after N ms`.
std::ostream& operator<<(std::ostream& os, const limit_decision& d);

/// A rate limiter whose permits are shared by every process that uses it, so that a fleet
/// of token sources together stays within the token endpoint's limit. A token source in
/// fleet mode asks it once before each token request, after its own `rate_limit`.
/// `redis::fleet_limiter` implements it on Redis.
///
/// `async_try_acquire` takes a completion token (default `deferred`) and completes on the
/// handler's associated executor, never inside the initiating call. Completion:
/// `void(error_code, limit_decision)`. It never waits for a permit: a denied request
/// learns from `retry_after` when to ask again.
class shared_rate_limiter {
public:
    virtual ~shared_rate_limiter() = default;

    template <class CompletionToken = boost::asio::deferred_t>
    auto async_try_acquire(CompletionToken&& token = CompletionToken{})
    {
        return boost::asio::async_initiate<CompletionToken,
                                           void(boost::system::error_code, limit_decision)>(
            [this](auto handler) { do_try_acquire(std::move(handler)); }, token);
    }

protected:
    using try_acquire_handler =
        boost::asio::any_completion_handler<void(boost::system::error_code, limit_decision)>;

    virtual void do_try_acquire(try_acquire_handler handler) = 0;
};

} // namespace stampede

#endif
