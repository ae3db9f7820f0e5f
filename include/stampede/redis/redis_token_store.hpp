#ifndef STAMPEDE_REDIS_REDIS_TOKEN_STORE_HPP
#define STAMPEDE_REDIS_REDIS_TOKEN_STORE_HPP

#include <stampede/logger.hpp>
#include <stampede/redis/config.hpp>
#include <stampede/redis/connection.hpp>
#include <stampede/token_store.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace stampede::redis {

/// Settings of a `redis_token_store` beyond the connection.
struct store_settings {
    /// Prefix of every key and channel name the store uses.
    std::string key_prefix = "stampede:";

    /// How often `async_wait` checks Redis when no notification arrives, for example
    /// while the subscriber connection is down.
    std::chrono::milliseconds poll_interval{250};
};

/// Counters of a `redis_token_store`, each counted since construction.
struct store_stats {
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;

    /// Entries that failed to decrypt (another secret, tampering, unknown version),
    /// counted as misses too.
    std::uint64_t unreadable_entries = 0;

    std::uint64_t puts = 0;
    std::uint64_t leases_taken = 0;
    std::uint64_t leases_denied = 0;

    /// Checks of Redis made by `async_wait`, the first one of each wait included.
    std::uint64_t wait_checks = 0;

    /// Pub/sub messages received by the subscriber connection.
    std::uint64_t notifications = 0;
};

/// A token store in Redis, shared by every process that uses the same server, database
/// and key prefix.
///
/// For a cache key `K` it uses the keys `<prefix>{K}:token` (the encrypted entry, see
/// `seal_token_entry`, with the token's remaining lifetime as its time to live) and
/// `<prefix>{K}:lease`, and the channel `<prefix>{K}:ready`. The braces make a Redis
/// Cluster put both keys in one slot. Waiters learn of a new entry or a released lease
/// by pub/sub on a second connection, and check every `poll_interval` in any case.
///
/// Thread safety: operations may be started from any thread; they run on a strand.
/// Errors are those of `connection::async_execute`; the caller decides whether to fall
/// back to local state. Destroying the store closes both connections.
class redis_token_store final : public token_store {
public:
    /// Throws as `connection`'s constructor for an invalid `cfg`, and
    /// `std::invalid_argument` for a non-positive `poll_interval`.
    redis_token_store(executor_type ex, config cfg, store_settings settings = {}, logger log = {});
    ~redis_token_store() override;

    executor_type get_executor() const noexcept override;

    /// Returns the command connection, to share it with a `fleet_limiter`.
    connection& commands() noexcept;

    /// Closes both connections; pending operations complete with `operation_aborted`.
    void close();

    store_stats stats() const noexcept;

    /// Returns the Redis key of the entry of `cache_key`.
    std::string entry_key(std::string_view cache_key) const;

    /// Returns the Redis key of the lease of `cache_key`.
    std::string lease_key(std::string_view cache_key) const;

    /// Returns the pub/sub channel of `cache_key`.
    std::string channel(std::string_view cache_key) const;

    class impl;

private:
    void do_get(token_key key,
                stampede::detail::store_handler<std::optional<stored_token>> handler) override;
    void do_put(token_key key, stored_token value,
                stampede::detail::store_handler<> handler) override;
    void do_try_lease(std::string cache_key, std::chrono::milliseconds ttl,
                      stampede::detail::store_handler<std::optional<token_lease>> handler) override;
    void do_release(token_lease lease, stampede::detail::store_handler<bool> handler) override;
    void do_wait(token_key key, secret_string replaced_token, std::chrono::milliseconds max_wait,
                 stampede::detail::store_handler<std::optional<stored_token>> handler) override;
    void do_invalidate(token_key key, secret_string token_value,
                       stampede::detail::store_handler<bool> handler) override;

    std::shared_ptr<impl> impl_;
};

} // namespace stampede::redis

#endif
