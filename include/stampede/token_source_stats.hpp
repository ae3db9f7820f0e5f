#ifndef STAMPEDE_TOKEN_SOURCE_STATS_HPP
#define STAMPEDE_TOKEN_SOURCE_STATS_HPP

#include <cstdint>
#include <iosfwd>

namespace stampede {

/// Counters of one `token_source`, totals since it was created.
struct token_source_stats {
    /// Calls served from the cache without waiting (`token()`, `async_token()`,
    /// `try_token()`). Hits on other threads' caches are added when `stats()` runs.
    std::uint64_t cache_hits = 0;

    /// Requests sent to the token endpoint, retries included.
    std::uint64_t requests = 0;

    /// Requests that returned a token.
    std::uint64_t tokens_fetched = 0;

    /// Callers that waited for a fetch, the one who started it included.
    std::uint64_t waiters = 0;

    /// Callers that joined a fetch already in flight.
    std::uint64_t coalesced_waiters = 0;

    /// Background refreshes started ahead of expiry.
    std::uint64_t refreshes_ahead = 0;

    /// Retries after a retryable failure.
    std::uint64_t retries = 0;

    /// Requests that failed with a retryable error.
    std::uint64_t retryable_failures = 0;

    /// Requests that failed with a permanent error.
    std::uint64_t permanent_failures = 0;

    /// Callers failed at once because a permanent error was remembered.
    std::uint64_t cooldown_rejections = 0;

    /// Waiters that were cancelled.
    std::uint64_t cancelled_waiters = 0;

    /// Successful `invalidate()` calls, the ones that dropped the current token.
    std::uint64_t invalidations = 0;

    /// Requests that had to wait for the rate limiter.
    std::uint64_t rate_limited_waits = 0;

    /// Connections opened to the token endpoint.
    std::uint64_t connections_opened = 0;

    /// Fleet mode: tokens taken from the shared store instead of being fetched.
    std::uint64_t shared_hits = 0;

    /// Fleet mode: waits for the fetch of another process that held the lease.
    std::uint64_t lease_waits = 0;

    /// Fleet mode: leases taken, each the right to fetch one token for the fleet.
    std::uint64_t leases_taken = 0;

    /// Fleet mode: requests that had to wait for the fleet limiter.
    std::uint64_t fleet_limited_waits = 0;

    /// Fleet mode: fetches made without the lease because it stayed held for
    /// `2 * fleet.lease_ttl + fleet.max_wait` without a new token.
    std::uint64_t stale_leases = 0;

    /// Fleet mode: failed store and fleet limiter operations. Each one made the process
    /// use its own cache, single flight and rate limiter for that fetch.
    std::uint64_t store_errors = 0;
};

std::ostream& operator<<(std::ostream& os, const token_source_stats& stats);

} // namespace stampede

#endif
