#ifndef STAMPEDE_REDIS_FLEET_LIMITER_HPP
#define STAMPEDE_REDIS_FLEET_LIMITER_HPP

#include <stampede/redis/connection.hpp>
#include <stampede/redis/redis_token_store.hpp>
#include <stampede/settings.hpp>
#include <stampede/shared_rate_limiter.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace stampede::redis {

/// The decision of the fleet limiter on one request; the core library's type.
using stampede::limit_decision;

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
class fleet_limiter final : public shared_rate_limiter {
public:
    /// Throws `boost::system::system_error` with `client_errc::invalid_settings` when
    /// `validate(settings)` reports a problem. `conn` must outlive the limiter.
    fleet_limiter(connection& conn, std::string key, const rate_limit_settings& settings);

    /// Uses the command connection of `store`, which the limiter keeps alive, so it can
    /// go into `fleet_settings::limiter` next to the store. Throws as the constructor
    /// above.
    fleet_limiter(std::shared_ptr<redis_token_store> store, std::string key,
                  const rate_limit_settings& settings);

    // `async_try_acquire` (from `shared_rate_limiter`) takes a permit if one is free.
    // Completion signature: `void(boost::system::error_code, limit_decision)`, with the
    // errors of `connection::async_execute`. Cancellation and handler executor: as
    // `connection::async_execute`.

    const std::string& key() const noexcept { return key_; }
    const rate_limit_settings& settings() const noexcept { return settings_; }

private:
    void do_try_acquire(try_acquire_handler handler) override;

    std::shared_ptr<redis_token_store> store_;
    connection& conn_;
    std::string key_;
    rate_limit_settings settings_;
};

} // namespace stampede::redis

#endif
