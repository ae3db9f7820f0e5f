// The shared part of a token source's fetch in fleet mode: reading the shared store,
// taking the lease, waiting for other processes, asking the fleet limiter, and storing
// the fetched token. Every store failure is turned into "fetch locally", so no caller
// fails because the shared store did.

#ifndef STAMPEDE_SRC_DETAIL_FLEET_COORDINATOR_HPP
#define STAMPEDE_SRC_DETAIL_FLEET_COORDINATOR_HPP

#include <stampede/settings.hpp>
#include <stampede/shared_rate_limiter.hpp>
#include <stampede/token_store.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

namespace stampede::detail {

/// The fleet's decision for one attempt of a fetch.
struct fleet_turn {
    enum class kind {
        /// Another process's token is in `token`; use it without fetching.
        adopt,

        /// Fetch now: with the lease when `holds_lease()`, else locally after a store
        /// failure.
        fetch,

        /// The source is shutting down.
        stopped,
    };

    kind action = kind::fetch;
    std::optional<stored_token> token;
};

/// Counters of a `fleet_coordinator`, copied into `token_source_stats`.
struct fleet_counters {
    std::uint64_t shared_hits = 0;
    std::uint64_t lease_waits = 0;
    std::uint64_t leases_taken = 0;
    std::uint64_t fleet_limited_waits = 0;
    std::uint64_t stale_leases = 0;
    std::uint64_t store_errors = 0;
};

/// Runs the fleet-mode steps of one token source. Every member except `invalidate` and
/// `counters` must be called on the token source's strand, which is also where the
/// completions of the store operations run.
class fleet_coordinator : public std::enable_shared_from_this<fleet_coordinator> {
public:
    /// `settings.fleet.store` must be set.
    fleet_coordinator(const token_source_settings& settings, boost::asio::any_io_executor strand);

    /// Looks for a usable token in the store other than `replaced_token` (the one a
    /// refresh replaces, or one the API rejected); takes the lease when there is none;
    /// and, when another process holds the lease, waits for its token and looks again.
    /// Completes with `adopt` and the token, with `fetch` (holding the lease, or locally
    /// after a store failure), or with `stopped` once `stopping` is set.
    boost::asio::awaitable<fleet_turn> take_turn(secret_string replaced_token,
                                                 const std::atomic<bool>& stopping);

    /// Asks the fleet limiter for a permit when the lease is held and a limiter is set.
    /// Completes with nothing when the fetch may go now (a limiter failure included).
    /// When the limiter denies the permit, waits its `retry_after` holding the lease if
    /// the lease then still covers a request, and asks again; otherwise releases the
    /// lease and completes with the delay after which the fetch must start over.
    boost::asio::awaitable<std::optional<std::chrono::milliseconds>>
    wait_for_fleet_permit(const std::atomic<bool>& stopping);

    bool holds_lease() const noexcept { return lease_.has_value(); }

    /// Stores `token` for the fleet, then releases the lease, in the background: the
    /// release comes after the store, so processes woken by it find the token.
    void store_and_release(stored_token token);

    /// Releases the lease, if held, in the background.
    void release();

    /// Removes the store's entry if it still contains `token_value`, in the background.
    /// May be called from any thread.
    void invalidate(secret_string token_value);

    /// Ends a wait for another process and a fleet limiter wait; called at shutdown.
    void cancel();

    fleet_counters counters() const noexcept;

private:
    bool adoptable(const std::optional<stored_token>& entry, const secret_string& replaced) const;
    void note_failure(const boost::system::error_code& ec, std::string_view operation);
    void note_success();

    const std::shared_ptr<token_store> store_;
    const std::shared_ptr<shared_rate_limiter> limiter_;
    const token_key key_;
    const boost::asio::any_io_executor strand_;
    const fleet_settings fleet_;
    const std::chrono::milliseconds request_timeout_;
    const std::chrono::milliseconds expiry_margin_;
    const logger logger_;

    // Used only on the strand.
    std::optional<token_lease> lease_;
    std::chrono::steady_clock::time_point lease_taken_at_;
    boost::asio::cancellation_signal wait_cancel_;
    boost::asio::steady_timer limit_timer_;
    bool degraded_ = false;
    std::uint64_t failures_while_degraded_ = 0;

    std::atomic<std::uint64_t> shared_hits_{0};
    std::atomic<std::uint64_t> lease_waits_{0};
    std::atomic<std::uint64_t> leases_taken_{0};
    std::atomic<std::uint64_t> fleet_limited_waits_{0};
    std::atomic<std::uint64_t> stale_leases_{0};
    std::atomic<std::uint64_t> store_errors_{0};
};

} // namespace stampede::detail

#endif
