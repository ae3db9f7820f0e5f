#ifndef STAMPEDE_DETAIL_TOKEN_SOURCE_IMPL_HPP
#define STAMPEDE_DETAIL_TOKEN_SOURCE_IMPL_HPP

#include <stampede/detail/token_cache.hpp>
#include <stampede/detail/token_fetcher.hpp>
#include <stampede/detail/token_snapshot.hpp>
#include <stampede/diagnostics.hpp>
#include <stampede/settings.hpp>
#include <stampede/token_source_stats.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/smart_ptr/intrusive_ptr.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>

namespace stampede::detail {

/// A caller waiting for a token. The token source links it into its queue and ends it
/// exactly once, by one of the three functions below.
class token_waiter_base {
public:
    /// Completes the caller by posting its handler, so the handler never runs inside the
    /// completing call.
    virtual void complete(boost::system::error_code ec,
                          std::shared_ptr<const diagnostics> diag,
                          boost::intrusive_ptr<const token_snapshot> token) = 0;

    /// Completes the caller by dispatching its handler. Called only from a function that
    /// the token source posted for a whole batch of waiters, never from a caller's stack.
    virtual void complete_in_batch(boost::system::error_code ec,
                                   const std::shared_ptr<const diagnostics>& diag,
                                   const boost::intrusive_ptr<const token_snapshot>& token) = 0;

    /// Destroys the waiter and its handler without calling the handler, as Asio does with
    /// handlers that are still queued when their execution context is destroyed.
    virtual void destroy() noexcept = 0;

protected:
    ~token_waiter_base() = default;

private:
    friend class token_source_impl;
    friend class waiter_batch;
    token_waiter_base* prev_ = nullptr;
    token_waiter_base* next_ = nullptr;
    bool queued_ = false;
};

/// The shared state behind every copy of one `token_source`.
///
/// Callers may come from any thread. The queue of waiters, the current snapshot and the
/// fetch state are guarded by a mutex that the hot path never takes; the fetch loop,
/// timers and connection run on a strand.
class token_source_impl : public std::enable_shared_from_this<token_source_impl> {
public:
    /// `strand` is a strand of `ex`, the one `fetcher` was created on.
    token_source_impl(boost::asio::any_io_executor ex, boost::asio::any_io_executor strand,
                      token_source_settings settings, std::unique_ptr<token_fetcher> fetcher);
    ~token_source_impl();
    token_source_impl(const token_source_impl&) = delete;
    token_source_impl& operator=(const token_source_impl&) = delete;

    /// Returns the usable snapshot from this thread's cache, or null when there is none
    /// and the caller must wait. Writes only thread-local memory on a hit.
    const token_snapshot* peek() noexcept
    {
        tls_slot& slot = tls_slot_for(id_);
        const std::uint64_t generation = generation_.load(std::memory_order_acquire);
        if (slot.owner.load(std::memory_order_relaxed) == id_ && slot.generation == generation)
            [[likely]] {
            const token_snapshot* snapshot = slot.snapshot.load(std::memory_order_relaxed);
            if (snapshot != nullptr) [[likely]] {
                slot.hits.store(slot.hits.load(std::memory_order_relaxed) + 1,
                                std::memory_order_relaxed);
            }
            return snapshot;
        }
        return peek_slow(slot);
    }

    tls_slot& current_thread_slot() const noexcept { return tls_slot_for(id_); }

    /// Completes `waiter` at once (cached token, shutdown, remembered permanent error) or
    /// queues it and makes sure a fetch is running.
    void start_wait(token_waiter_base& waiter);

    /// Removes `waiter` from the queue and completes it with `operation_aborted`, if it is
    /// still queued.
    void cancel_wait(token_waiter_base& waiter);

    /// Puts `token` into this thread's cache so a view of it stays valid until the caller
    /// next suspends. Returns the cache entry. Counts no cache hit.
    tls_slot& hold_in_current_thread(boost::intrusive_ptr<const token_snapshot> token);

    bool invalidate(std::string_view token_value);
    void shutdown();

    /// Stops the source and destroys the queued waiters without calling their handlers.
    /// Called when the execution context shuts down, as Asio destroys its queued handlers.
    void abandon_waiters() noexcept;
    token_source_stats stats() const;
    const token_source_settings& settings() const noexcept;
    const boost::asio::any_io_executor& get_executor() const noexcept;
    std::uint64_t id() const noexcept { return id_; }

private:
    struct state;

    const token_snapshot* peek_slow(tls_slot& slot) noexcept;

    // Points `slot` at the current snapshot, unless that has expired. Returns the snapshot.
    const token_snapshot* refresh_slot(tls_slot& slot) noexcept;

    // Read by every `peek()`, on a cache line of their own so that reference counting of
    // this object on slow paths does not slow down the hot path on other cores.
    alignas(64) const std::uint64_t id_;
    std::atomic<std::uint64_t> generation_{1};

    alignas(64) std::unique_ptr<state> state_;
};

} // namespace stampede::detail

#endif
