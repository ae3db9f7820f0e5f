#ifndef STAMPEDE_REDIS_FLEET_LIMITER_HPP
#define STAMPEDE_REDIS_FLEET_LIMITER_HPP

#include <stampede/redis/connection.hpp>
#include <stampede/settings.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <iosfwd>
#include <string>

namespace stampede::redis {

/// The decision of the fleet limiter on one request.
struct limit_decision {
    /// Whether the request may be sent now; the permit is taken when true.
    bool allowed = false;

    /// How long after the decision the next permit becomes available, rounded up to the
    /// millisecond; zero when allowed.
    std::chrono::milliseconds retry_after{0};

    friend bool operator==(const limit_decision&, const limit_decision&) = default;
};

std::ostream& operator<<(std::ostream& os, const limit_decision& d);

namespace detail {
using limit_handler =
    boost::asio::any_completion_handler<void(boost::system::error_code, limit_decision)>;

void start_try_acquire(connection& conn, const std::string& key,
                       const rate_limit_settings& settings, limit_handler handler);
} // namespace detail

/// A token bucket kept in Redis and shared by every process that uses the same key, so a
/// fleet together stays within the token endpoint's rate limit.
///
/// One Lua script runs the generic cell rate algorithm (GCRA) atomically on the server's
/// clock: of the permits taken through one key in any window of length W, there are at
/// most `capacity + floor(W / refill_interval)`, whatever the number of processes and
/// their clocks. The key expires once the bucket is full again.
class fleet_limiter {
public:
    /// Throws `boost::system::system_error` with `client_errc::invalid_settings` when
    /// `validate(settings)` reports a problem. `conn` must outlive the limiter.
    fleet_limiter(connection& conn, std::string key, const rate_limit_settings& settings);

    /// Takes a permit if one is free. Completion signature:
    /// `void(boost::system::error_code, limit_decision)`, with the errors of
    /// `connection::async_execute`. Cancellation and handler executor: as
    /// `connection::async_execute`.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_try_acquire(CompletionToken&& token = CompletionToken{})
    {
        return boost::asio::async_initiate<CompletionToken,
                                           void(boost::system::error_code, limit_decision)>(
            [this](detail::limit_handler handler) {
                detail::start_try_acquire(conn_, key_, settings_, std::move(handler));
            },
            token);
    }

    const std::string& key() const noexcept { return key_; }
    const rate_limit_settings& settings() const noexcept { return settings_; }

private:
    connection& conn_;
    std::string key_;
    rate_limit_settings settings_;
};

} // namespace stampede::redis

#endif
