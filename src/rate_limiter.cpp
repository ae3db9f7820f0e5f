#include <stampede/detail/log.hpp>
#include <stampede/error.hpp>
#include <stampede/rate_limiter.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <atomic>
#include <list>
#include <mutex>

#if defined(__linux__)
#include <time.h>
#endif

// Proof of the window bound
// -----------------------------------------------------------------------------------------
//
// Both classes run the GCRA of detail::gcra with increment T = refill_interval and
// tolerance (c - 1) * T, where c = capacity. Take any k permits handed out at readings
// r_1, ..., r_k, in the order in which they were taken, whose readings all lie in a
// closed window [a, a + W].
//
// 1. Taking a permit sets tat to max(tat, now) + T, so every permit, including those
//    taken at readings outside the window, raises tat by at least T.
// 2. After the first permit, tat >= r_1 + T. Before the k-th, tat >= r_1 + (k - 1) * T.
// 3. The k-th permit was admitted, so r_k >= tat - (c - 1) * T >= r_1 + (k - c) * T.
// 4. Hence (k - c) * T <= r_k - r_1 <= W, that is k <= c + floor(W / T).
//
// The rate_limiter takes r_i from CLOCK_MONOTONIC, or from CLOCK_MONOTONIC_COARSE when
// gcra::lower_bound_decides shows that the coarse reading yields the same decision and
// the same new tat as the precise one. The proof then applies to the precise readings.

namespace stampede {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;

constexpr std::int64_t nanoseconds_per_millisecond = 1'000'000;

// 100 years (36525 days) in milliseconds: the largest capacity * refill_interval
// accepted. The word of rate_limiter keeps 62 bits of nanoseconds (146 years), so the
// theoretical arrival time fits for 46 years after construction.
constexpr std::int64_t max_bucket_span_ms = 36525LL * 24 * 3600 * 1000;

// Maximum lag of CLOCK_MONOTONIC_COARSE behind CLOCK_MONOTONIC assumed, in ticks.
constexpr std::int64_t coarse_lag_ticks = 16;

std::int64_t steady_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
constexpr bool has_coarse_clock = true;

std::int64_t coarse_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t coarse_resolution_ns() noexcept {
    timespec ts{};
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) != 0) {
        return 0;
    }
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
#else
constexpr bool has_coarse_clock = false;

std::int64_t coarse_ns() noexcept {
    return steady_ns();
}

std::int64_t coarse_resolution_ns() noexcept {
    return 0;
}
#endif

// Returns the maximum lag assumed for the coarse clock, or 0 when it must not be used:
// on other systems, or when it does not share the epoch of steady_clock.
std::int64_t coarse_clock_max_lag() noexcept {
    if (!has_coarse_clock) {
        return 0;
    }
    const std::int64_t max_lag = coarse_lag_ticks * coarse_resolution_ns();
    const std::int64_t coarse = coarse_ns();
    const std::int64_t precise = steady_ns();
    if (max_lag <= 0 || coarse > precise || precise - coarse >= max_lag) {
        return 0;
    }
    return max_lag;
}

detail::gcra make_gcra(const rate_limit_settings& settings) noexcept {
    const std::int64_t increment = settings.refill_interval.count() * nanoseconds_per_millisecond;
    const auto extra = static_cast<std::int64_t>(settings.capacity - 1);
    return detail::gcra{increment, extra * increment};
}

const rate_limit_settings& validated(const rate_limit_settings& settings) {
    std::string problem = validate(settings);
    if (!problem.empty()) {
        throw boost::system::system_error(make_error_code(client_errc::invalid_settings), problem);
    }
    return settings;
}

} // namespace

std::string validate(const rate_limit_settings& settings) {
    if (settings.capacity == 0) {
        return "invalid rate_limit_settings::capacity 0: must be at least 1";
    }
    if (settings.refill_interval.count() <= 0) {
        return "invalid rate_limit_settings::refill_interval " +
               std::to_string(settings.refill_interval.count()) + " ms: must be positive";
    }
    if (settings.capacity > static_cast<std::size_t>(max_bucket_span_ms) ||
        settings.refill_interval.count() >
            max_bucket_span_ms / static_cast<std::int64_t>(settings.capacity)) {
        return "invalid rate_limit_settings: capacity (" + std::to_string(settings.capacity) +
               ") times refill_interval (" + std::to_string(settings.refill_interval.count()) +
               " ms) exceeds 100 years; lower one of them";
    }
    return {};
}

// token_bucket
// -----------------------------------------------------------------------------------------

token_bucket::token_bucket(const rate_limit_settings& settings)
    : settings_(validated(settings))
    , gcra_(make_gcra(settings_)) {}

bool token_bucket::try_acquire(clock::time_point now) noexcept {
    const std::int64_t now_ns = std::chrono::nanoseconds(now.time_since_epoch()).count();

    // A bucket that was never used is full, whatever the value of now.
    const std::int64_t tat = tat_.value_or(now_ns);
    if (!gcra_.admits(tat, now_ns)) {
        return false;
    }
    tat_ = gcra_.next(tat, now_ns);
    return true;
}

token_bucket::clock::duration
token_bucket::time_until_available(clock::time_point now) const noexcept {
    if (!tat_) {
        return clock::duration::zero();
    }
    const std::int64_t now_ns = std::chrono::nanoseconds(now.time_since_epoch()).count();
    const std::int64_t wait = *tat_ - gcra_.tolerance - now_ns;
    return std::chrono::duration_cast<clock::duration>(
        std::chrono::nanoseconds(std::max<std::int64_t>(wait, 0)));
}

// rate_limiter state
// -----------------------------------------------------------------------------------------

namespace detail {

using handler_type = asio::any_completion_handler<void(error_code)>;

// One caller in the queue.
//
// NOTE: never move-assign an any_completion_handler. In Boost 1.81 its move assignment
// wraps the source in a new any_completion_handler, which recurses until the stack
// overflows. Move construction is correct.
struct waiter {
    explicit waiter(handler_type h, asio::any_completion_executor w)
        : handler(std::move(h))
        , work(std::move(w)) {}

    handler_type handler;

    // Keeps the handler's executor from running out of work while the caller waits.
    asio::any_completion_executor work;

    std::list<std::unique_ptr<waiter>>::iterator position;
    bool queued = false;
};

// The state shared by the rate_limiter, its timer handler, the cancellation handlers
// installed in waiters' slots and operations not yet started (a deferred async_acquire).
// It outlives the rate_limiter when one of those still refers to it.
//
// `word_` contains the theoretical arrival time in nanoseconds since `epoch_`, shifted
// left by one, and `slow_bit`. The bit is set while callers are queued or after
// shutdown. While it is set, only holders of `mutex_` change the word, so the lock-free
// path in `try_take` can never overtake a queued caller.
struct rate_limiter_state : std::enable_shared_from_this<rate_limiter_state> {
    static constexpr std::uint64_t slow_bit = 1;

    rate_limiter_state(asio::any_io_executor executor, const rate_limit_settings& settings,
                       logger log)
        : executor_(std::move(executor))
        , gcra_(make_gcra(settings))
        , log_(std::move(log))
        , epoch_(steady_ns())
        , max_lag_(coarse_clock_max_lag())
        , timer_(std::in_place, executor_) {}

    std::int64_t precise_now() const noexcept { return steady_ns() - epoch_; }

    std::int64_t lower_bound_now() const noexcept {
        return max_lag_ > 0 ? coarse_ns() - epoch_ : precise_now();
    }

    // Takes a permit when one is free and the queue is empty.
    bool try_take() noexcept {
        std::uint64_t word = word_.load(std::memory_order_acquire);
        if ((word & slow_bit) != 0) {
            return false;
        }

        std::int64_t now = lower_bound_now();
        bool exact = max_lag_ == 0;
        for (;;) {
            const auto tat = static_cast<std::int64_t>(word >> 1);

            // Near the edge of the bucket the coarse reading may give another decision than
            // the precise one, so read the precise clock.
            if (!exact && !gcra_.lower_bound_decides(tat, now, max_lag_)) {
                now = precise_now();
                exact = true;
            }
            if (!gcra_.admits(tat, now)) {
                return false;
            }

            const auto next = static_cast<std::uint64_t>(gcra_.next(tat, now)) << 1;
            if (word_.compare_exchange_weak(word, next, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
                acquired_.fetch_add(1, std::memory_order_relaxed);
                return true;
            }
            if ((word & slow_bit) != 0) {
                return false;
            }
        }
    }

    void start(handler_type handler);
    void cancel(waiter* target);
    void on_timer();
    void shutdown();
    void destroy_timer();

    rate_limiter_stats stats() const noexcept {
        return {acquired_.load(std::memory_order_relaxed), waited_.load(std::memory_order_relaxed),
                cancelled_.load(std::memory_order_relaxed)};
    }

    const asio::any_io_executor& executor() const noexcept { return executor_; }

private:
    void arm_timer();
    void complete(handler_type handler, error_code ec);
    void complete(std::unique_ptr<waiter> target, error_code ec);

    const asio::any_io_executor executor_;
    const gcra gcra_;
    const logger log_;
    const std::int64_t epoch_;

    // Maximum lag of the coarse clock, or 0 when only the precise clock is read.
    const std::int64_t max_lag_;

    alignas(64) std::atomic<std::uint64_t> word_{0};
    std::atomic<std::uint64_t> acquired_{0};
    std::atomic<std::uint64_t> waited_{0};
    std::atomic<std::uint64_t> cancelled_{0};

    std::mutex mutex_;
    std::list<std::unique_ptr<waiter>> queue_;
    std::optional<asio::steady_timer> timer_;
    bool timer_armed_ = false;
    bool shut_down_ = false;
};

namespace {

// Removes `target` from the queue when it is still there, without consuming a permit.
struct cancel_handler {
    std::shared_ptr<rate_limiter_state> state;
    waiter* target;

    void operator()(asio::cancellation_type type) const {
        constexpr auto honoured = asio::cancellation_type::terminal |
                                  asio::cancellation_type::partial | asio::cancellation_type::total;
        if ((type & honoured) != asio::cancellation_type::none) {
            state->cancel(target);
        }
    }
};

// Runs on the handler's executor: clears the slot, releases the work and calls the handler.
void finish(std::unique_ptr<waiter> target, error_code ec) {
    auto slot = asio::get_associated_cancellation_slot(target->handler);
    if (slot.is_connected()) {
        slot.clear();
    }
    handler_type handler = std::move(target->handler);
    target.reset();
    std::move(handler)(ec);
}

} // namespace

void rate_limiter_state::complete(handler_type handler, error_code ec) {
    const auto handler_executor = asio::get_associated_executor(handler, executor_);
    asio::post(executor_,
               asio::bind_executor(handler_executor, [handler = std::move(handler), ec]() mutable {
                   std::move(handler)(ec);
               }));
}

void rate_limiter_state::complete(std::unique_ptr<waiter> target, error_code ec) {
    const auto handler_executor = asio::get_associated_executor(target->handler, executor_);
    asio::post(executor_,
               asio::bind_executor(handler_executor, [target = std::move(target), ec]() mutable {
                   finish(std::move(target), ec);
               }));
}

void rate_limiter_state::start(handler_type handler) {
    // A free permit is taken at once, but the handler still runs later.
    if (try_take()) {
        complete(std::move(handler), {});
        return;
    }

    std::unique_lock lock(mutex_);
    if (shut_down_) {
        lock.unlock();
        complete(std::move(handler), asio::error::operation_aborted);
        return;
    }

    // With the queue empty, a permit may have come free since the lock-free attempt. If
    // not, the slow bit stops the lock-free path from overtaking this caller.
    if (queue_.empty()) {
        if (try_take()) {
            lock.unlock();
            complete(std::move(handler), {});
            return;
        }
        word_.fetch_or(slow_bit, std::memory_order_acq_rel);
    }

    auto work = asio::prefer(asio::get_associated_executor(handler, executor_),
                             asio::execution::outstanding_work.tracked);
    auto target = std::make_unique<waiter>(std::move(handler), std::move(work));

    auto slot = asio::get_associated_cancellation_slot(target->handler);
    if (slot.is_connected()) {
        slot.template emplace<cancel_handler>(cancel_handler{shared_from_this(), target.get()});
    }

    waiter* raw = target.get();
    queue_.push_back(std::move(target));
    raw->position = std::prev(queue_.end());
    raw->queued = true;
    waited_.fetch_add(1, std::memory_order_relaxed);
    arm_timer();

    const std::size_t queued = queue_.size();
    const auto tat = static_cast<std::int64_t>(word_.load(std::memory_order_acquire) >> 1);
    const std::int64_t wait_ns = std::max<std::int64_t>(tat - gcra_.tolerance - precise_now(), 0);
    lock.unlock();

    detail::log(log_, log_level::debug, [&] {
        return "rate limit reached: waiting " +
               std::to_string(wait_ns / nanoseconds_per_millisecond) +
               " ms or more for a permit (" + std::to_string(queued) + " in the queue)";
    });
}

// Requires mutex_.
void rate_limiter_state::arm_timer() {
    if (timer_armed_ || !timer_) {
        return;
    }

    // The time the next permit comes free only moves later, so a timer armed earlier
    // never fires too late, and on_timer re-arms it when it fires too early.
    const auto tat = static_cast<std::int64_t>(word_.load(std::memory_order_acquire) >> 1);
    const std::chrono::nanoseconds due{epoch_ + tat - gcra_.tolerance};
    timer_->expires_at(std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(due)));
    timer_armed_ = true;
    timer_->async_wait([self = shared_from_this()](error_code) { self->on_timer(); });
}

void rate_limiter_state::on_timer() {
    std::list<std::unique_ptr<waiter>> granted;
    {
        std::lock_guard lock(mutex_);
        if (shut_down_) {
            return;
        }
        timer_armed_ = false;
        if (queue_.empty()) {
            return;
        }

        // The slow bit is set, so no other thread changes the word while the lock is held.
        const std::int64_t now = precise_now();
        auto tat = static_cast<std::int64_t>(word_.load(std::memory_order_acquire) >> 1);
        while (!queue_.empty() && gcra_.admits(tat, now)) {
            tat = gcra_.next(tat, now);
            queue_.front()->queued = false;
            granted.splice(granted.end(), queue_, queue_.begin());
            acquired_.fetch_add(1, std::memory_order_relaxed);
        }

        const std::uint64_t flags = queue_.empty() ? 0 : slow_bit;
        word_.store((static_cast<std::uint64_t>(tat) << 1) | flags, std::memory_order_release);
        if (!queue_.empty()) {
            arm_timer();
        }
    }

    for (auto& target : granted) {
        complete(std::move(target), {});
    }
}

void rate_limiter_state::cancel(waiter* target) {
    std::unique_ptr<waiter> removed;
    {
        std::lock_guard lock(mutex_);
        if (!target->queued) {
            return;
        }
        removed = std::move(*target->position);
        queue_.erase(target->position);
        target->queued = false;
        cancelled_.fetch_add(1, std::memory_order_relaxed);

        // With the queue empty, reopen the lock-free path and stop the timer, so that it does
        // not keep the io_context busy until the next permit.
        if (queue_.empty() && !shut_down_) {
            word_.fetch_and(~slow_bit, std::memory_order_acq_rel);
            if (timer_) {
                timer_->cancel();
            }
        }
    }
    complete(std::move(removed), asio::error::operation_aborted);
}

void rate_limiter_state::shutdown() {
    std::list<std::unique_ptr<waiter>> aborted;
    {
        std::lock_guard lock(mutex_);
        if (shut_down_) {
            return;
        }
        shut_down_ = true;
        word_.fetch_or(slow_bit, std::memory_order_acq_rel);
        for (auto& target : queue_) {
            target->queued = false;
        }
        aborted.splice(aborted.end(), queue_);
        cancelled_.fetch_add(aborted.size(), std::memory_order_relaxed);
        if (timer_) {
            timer_->cancel();
        }
    }

    const std::size_t count = aborted.size();
    for (auto& target : aborted) {
        complete(std::move(target), asio::error::operation_aborted);
    }
    detail::log(log_, log_level::debug, [&] {
        return "rate limiter shut down: " + std::to_string(count) + " waiting requests aborted";
    });
}

void rate_limiter_state::destroy_timer() {
    std::lock_guard lock(mutex_);
    timer_.reset();
}

void start_acquire(const std::shared_ptr<rate_limiter_state>& state, handler_type handler) {
    state->start(std::move(handler));
}

} // namespace detail

// rate_limiter
// -----------------------------------------------------------------------------------------

namespace {

std::shared_ptr<detail::rate_limiter_state>
make_state(asio::any_io_executor executor, const rate_limit_settings& settings, logger log) {
    return std::make_shared<detail::rate_limiter_state>(std::move(executor), validated(settings),
                                                        std::move(log));
}

} // namespace

rate_limiter::rate_limiter(executor_type executor, const rate_limit_settings& settings, logger log)
    : state_(make_state(std::move(executor), settings, std::move(log))) {}

rate_limiter::~rate_limiter() {
    state_->shutdown();

    // The timer must not outlive its io_context, but the state may (a cancellation slot
    // or a deferred operation can keep it), so the timer goes now.
    state_->destroy_timer();
}

rate_limiter::executor_type rate_limiter::get_executor() const noexcept {
    return state_->executor();
}

asio::awaitable<void> rate_limiter::acquire() {
    if (state_->try_take()) {
        co_return;
    }
    co_await async_acquire(asio::use_awaitable);
}

bool rate_limiter::try_acquire() noexcept {
    return state_->try_take();
}

void rate_limiter::shutdown() {
    state_->shutdown();
}

rate_limiter_stats rate_limiter::stats() const noexcept {
    return state_->stats();
}

} // namespace stampede
