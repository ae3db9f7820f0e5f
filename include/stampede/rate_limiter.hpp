#ifndef STAMPEDE_RATE_LIMITER_HPP
#define STAMPEDE_RATE_LIMITER_HPP

#include <stampede/logger.hpp>
#include <stampede/settings.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/system/error_code.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace stampede {

/// Checks `settings` and returns an empty string when they are valid, or else a message
/// that names the first invalid field and how to fix it.
std::string validate(const rate_limit_settings& settings);

namespace detail {

/// The generic cell rate algorithm (GCRA) over nanosecond counts, the arithmetic shared by
/// `token_bucket` and `rate_limiter`.
///
/// The state is one number, the theoretical arrival time `tat`: the time at which the
/// bucket would be full again if nothing more were taken. A permit is available at `now`
/// when `now >= tat - tolerance`, and taking it sets `tat = max(tat, now) + increment`.
struct gcra {
    /// Time to earn back one permit (`refill_interval`).
    std::int64_t increment;

    /// `(capacity - 1) * increment`: how far `tat` may run ahead of `now`.
    std::int64_t tolerance;

    bool admits(std::int64_t tat, std::int64_t now) const noexcept {
        return now >= tat - tolerance;
    }

    std::int64_t next(std::int64_t tat, std::int64_t now) const noexcept {
        return std::max(tat, now) + increment;
    }

    /// Returns whether `lower`, a reading that lags the true time by less than `max_lag`,
    /// is enough to take a permit at `tat`. When it returns true, `admits` and `next` give
    /// the same results for `lower` as for the true time, because the true time is then
    /// below `tat` and at least `lower`.
    bool lower_bound_decides(std::int64_t tat, std::int64_t lower,
                             std::int64_t max_lag) const noexcept {
        return admits(tat, lower) && lower + max_lag <= tat;
    }
};

struct rate_limiter_state;

/// Starts one `rate_limiter::async_acquire`.
void start_acquire(const std::shared_ptr<rate_limiter_state>& state,
                   boost::asio::any_completion_handler<void(boost::system::error_code)> handler);

} // namespace detail

/// A token bucket over explicit time points: `capacity` permits at once, then one more
/// every `refill_interval`. It performs no I/O, reads no clock and is not thread-safe.
///
/// The bucket starts full. Of the successful `try_acquire` calls whose `now` lies in a
/// closed window `[a, a + W]`, there are at most `capacity + floor(W / refill_interval)`,
/// even if `now` sometimes goes backwards. With the default settings (4 permits, one per
/// 4 s) that is at most 19 in any 60-second window.
class token_bucket {
public:
    using clock = std::chrono::steady_clock;

    /// Builds a full bucket.
    ///
    /// Throws `boost::system::system_error` with `client_errc::invalid_settings` when
    /// `validate(settings)` reports a problem.
    explicit token_bucket(const rate_limit_settings& settings);

    /// Takes a permit and returns true when one is available at `now`, and otherwise
    /// returns false and changes nothing.
    bool try_acquire(clock::time_point now) noexcept;

    /// Returns how long after `now` the next permit becomes available; zero when one is
    /// available at `now`.
    clock::duration time_until_available(clock::time_point now) const noexcept;

    const rate_limit_settings& settings() const noexcept { return settings_; }

private:
    rate_limit_settings settings_;
    detail::gcra gcra_;

    // Theoretical arrival time in nanoseconds since the clock's epoch; empty while the
    // bucket has never been used.
    std::optional<std::int64_t> tat_;
};

/// Counters of a `rate_limiter`, each counted since construction.
struct rate_limiter_stats {
    /// Permits handed out, at once or after a wait.
    std::uint64_t acquired = 0;

    /// Requests that found no permit and joined the queue, including those later
    /// cancelled.
    std::uint64_t waited = 0;

    /// Queued requests that completed with `operation_aborted`, because of their
    /// cancellation slot or of `shutdown()`.
    std::uint64_t cancelled = 0;
};

/// A thread-safe asynchronous token bucket: callers wait for a permit before each
/// request, so that at most `capacity + floor(W / refill_interval)` permits are handed
/// out in any window of length W.
///
/// Waiting callers are served in FIFO order, and a caller that finds others waiting
/// queues behind them even if a permit is free. One timer wakes the head of the queue.
///
/// The limiter may be used from several threads at once, for example from coroutines on
/// a multi-threaded `io_context`. It can be neither copied nor moved, and it must outlive
/// every `acquire()` coroutine. Destroying it completes the waiting operations, as
/// `shutdown()` does.
///
/// NOTE: on Linux the limiter reads `CLOCK_MONOTONIC_COARSE` where that is enough to
/// decide, and `std::chrono::steady_clock` otherwise. The bound above holds as long as the
/// coarse clock lags `CLOCK_MONOTONIC` by less than 16 of its ticks (64 ms at 250 Hz). The
/// kernel normally advances it every tick, so the lag is normally below one tick.
class rate_limiter {
public:
    using executor_type = boost::asio::any_io_executor;

    /// Builds a limiter whose bucket starts full. `executor` runs the timer and is the
    /// default executor of completion handlers. Each wait is logged at `debug` level.
    ///
    /// Throws `boost::system::system_error` with `client_errc::invalid_settings` when
    /// `validate(settings)` reports a problem.
    rate_limiter(executor_type executor, const rate_limit_settings& settings, logger log = {});

    /// Completes every waiting operation with `operation_aborted`, as `shutdown()`.
    ~rate_limiter();

    rate_limiter(const rate_limiter&) = delete;
    rate_limiter& operator=(const rate_limiter&) = delete;

    executor_type get_executor() const noexcept;

    /// Waits for a permit.
    ///
    /// Completion signature: `void(boost::system::error_code)`. The default completion
    /// token is `boost::asio::deferred`, so `co_await limiter.async_acquire()` works in an
    /// `awaitable` coroutine.
    ///
    /// Completes with success once a permit is taken for the caller, or with
    /// `boost::asio::error::operation_aborted` when the operation is cancelled or the
    /// limiter is shut down. A permit that is free at once is taken during the call,
    /// but the handler still runs later, as if by `post`, never inside this call.
    ///
    /// Cancellation: the terminal, partial and total types are honoured while the caller
    /// waits in the queue. Only that caller leaves the queue and completes with
    /// `operation_aborted`, without consuming a permit. Once a permit is taken the
    /// operation completes with success, whatever is emitted afterwards. As for any Asio
    /// operation, emit the cancellation from the handler's executor (a strand when
    /// several threads run it).
    ///
    /// The handler runs on its associated executor, or on `get_executor()` when it has
    /// none. The limiter may be destroyed before the handler runs.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_acquire(CompletionToken&& token = CompletionToken{}) {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
            initiate_acquire{state_}, token);
    }

    /// Waits for a permit, like `async_acquire(boost::asio::use_awaitable)`, but returns
    /// without suspending the caller when a permit is free and no caller is waiting.
    ///
    /// Throws `boost::system::system_error` with `operation_aborted` when the wait is
    /// cancelled or the limiter is shut down.
    boost::asio::awaitable<void> acquire();

    /// Takes a permit and returns true when one is free and no caller is waiting, and
    /// otherwise returns false at once. Returns false after `shutdown()`.
    bool try_acquire() noexcept;

    /// Completes every waiting operation with `operation_aborted` and makes every later
    /// `async_acquire` complete the same way. Calling it again has no effect.
    void shutdown();

    rate_limiter_stats stats() const noexcept;

private:
    struct initiate_acquire {
        std::shared_ptr<detail::rate_limiter_state> state;

        void operator()(
            boost::asio::any_completion_handler<void(boost::system::error_code)> handler) const {
            detail::start_acquire(state, std::move(handler));
        }
    };

    std::shared_ptr<detail::rate_limiter_state> state_;
};

} // namespace stampede

#endif
