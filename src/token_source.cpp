#include <stampede/token_source.hpp>

#include "detail/fleet_coordinator.hpp"

#include <stampede/backoff.hpp>
#include <stampede/detail/http_token_fetcher.hpp>
#include <stampede/detail/log.hpp>
#include <stampede/detail/token_schedule.hpp>
#include <stampede/error.hpp>
#include <stampede/rate_limiter.hpp>
#include <stampede/retry.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <exception>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

namespace stampede {
namespace detail {

thread_local constinit tls_slot tls_slots[tls_slot_count] STAMPEDE_TLS_MODEL{};

namespace {

std::atomic<std::uint64_t> next_source_id{1};

std::string format_ms(milliseconds d)
{
    if (d.count() % 1000 == 0) {
        return std::to_string(d.count() / 1000) + " s";
    }
    return std::to_string(d.count()) + " ms";
}

// Every live token source and every thread that has a cache. `stats()` adds up the hits
// counted in thread-local entries, and an entry taken over by another source hands its
// count back to the source it belonged to.
class cache_registry {
public:
    static cache_registry& instance()
    {
        static cache_registry registry;
        return registry;
    }

    void add_source(std::uint64_t id, std::atomic<std::uint64_t>* retired_hits)
    {
        std::lock_guard lock(mutex_);
        sources_[id] = retired_hits;
    }

    void remove_source(std::uint64_t id)
    {
        std::lock_guard lock(mutex_);
        sources_.erase(id);
    }

    void add_thread(tls_slot* slots)
    {
        std::lock_guard lock(mutex_);
        threads_.push_back(slots);
    }

    void remove_thread(tls_slot* slots)
    {
        std::lock_guard lock(mutex_);
        std::erase(threads_, slots);
    }

    // Moves the slot's hit count to the source that owns it, if that source still lives.
    void retire_hits(tls_slot& slot)
    {
        const std::uint64_t hits = slot.hits.exchange(0, std::memory_order_relaxed);
        const std::uint64_t owner = slot.owner.load(std::memory_order_relaxed);
        if (hits == 0 || owner == 0) {
            return;
        }
        std::lock_guard lock(mutex_);
        if (auto it = sources_.find(owner); it != sources_.end()) {
            it->second->fetch_add(hits, std::memory_order_relaxed);
        }
    }

    std::uint64_t live_hits(std::uint64_t id) const
    {
        std::lock_guard lock(mutex_);
        std::uint64_t total = 0;
        for (const tls_slot* slots : threads_) {
            const tls_slot& slot = slots[id % tls_slot_count];
            if (slot.owner.load(std::memory_order_relaxed) == id) {
                total += slot.hits.load(std::memory_order_relaxed);
            }
        }
        return total;
    }

private:
    mutable std::mutex mutex_;
    std::unordered_map<std::uint64_t, std::atomic<std::uint64_t>*> sources_;
    std::vector<tls_slot*> threads_;
};

void release_slot(tls_slot& slot) noexcept
{
    if (const token_snapshot* old = slot.snapshot.exchange(nullptr, std::memory_order_relaxed)) {
        intrusive_ptr_release(old);
    }
    ++slot.replacements;
}

// Registers the calling thread's cache on first use and, when the thread exits, gives
// back its hit counts and its references to snapshots.
class thread_cache_registration {
public:
    thread_cache_registration() { cache_registry::instance().add_thread(tls_slots); }

    ~thread_cache_registration()
    {
        auto& registry = cache_registry::instance();
        registry.remove_thread(tls_slots);
        for (tls_slot& slot : tls_slots) {
            registry.retire_hits(slot);
            release_slot(slot);
            slot.owner.store(0, std::memory_order_relaxed);
        }
    }

    thread_cache_registration(const thread_cache_registration&) = delete;
    thread_cache_registration& operator=(const thread_cache_registration&) = delete;
};

void ensure_thread_registered()
{
    thread_local thread_cache_registration registration;
    (void)registration;
}

std::string count_attempts(unsigned attempts)
{
    return std::to_string(attempts) + (attempts == 1 ? " attempt" : " attempts");
}

// Makes `slot` this thread's entry for the source `id`, handing the hit count of its
// previous source back to that source.
void claim_slot(tls_slot& slot, std::uint64_t id)
{
    ensure_thread_registered();
    if (slot.owner.load(std::memory_order_relaxed) != id) {
        cache_registry::instance().retire_hits(slot);
        slot.owner.store(id, std::memory_order_relaxed);
    }
}

// Appends a sentence to a diagnostics message, ending the previous one first.
void append_sentence(diagnostics& diag, const std::string& sentence)
{
    std::string message = diag.client_message();
    if (!message.empty()) {
        if (message.back() != '.') {
            message += '.';
        }
        message += ' ';
    }
    message += sentence;
    diag.set_client_message(std::move(message));
}

} // namespace

// Waiters completed together. Each handler is dispatched to its own executor, so it runs
// at once when that is the executor running the batch and is posted otherwise.
class waiter_batch {
public:
    waiter_batch(asio::any_io_executor ex, token_waiter_base* list, error_code ec,
                 std::shared_ptr<const diagnostics> diag,
                 boost::intrusive_ptr<const token_snapshot> token) noexcept
        : executor_(std::move(ex))
        , list_(list)
        , ec_(ec)
        , diag_(std::move(diag))
        , token_(std::move(token))
    {
    }

    waiter_batch(waiter_batch&& other) noexcept
        : executor_(other.executor_)
        , list_(std::exchange(other.list_, nullptr))
        , ec_(other.ec_)
        , diag_(std::move(other.diag_))
        , token_(std::move(other.token_))
    {
    }

    waiter_batch& operator=(waiter_batch&&) = delete;

    // A batch destroyed before it ran (its executor's context was destroyed) destroys its
    // waiters, as Asio destroys queued handlers.
    ~waiter_batch()
    {
        while (list_ != nullptr) {
            token_waiter_base* next = list_->next_;
            list_->destroy();
            list_ = next;
        }
    }

    void operator()()
    {
        while (list_ != nullptr) {
            token_waiter_base* waiter = list_;
            list_ = waiter->next_;
            try {
                waiter->complete_in_batch(ec_, diag_, token_);
            } catch (...) {
                // A handler that ran inline threw. The rest still complete, in a new batch.
                if (list_ != nullptr) {
                    asio::post(executor_, std::move(*this));
                }
                throw;
            }
        }
    }

private:
    asio::any_io_executor executor_;
    token_waiter_base* list_;
    error_code ec_;
    std::shared_ptr<const diagnostics> diag_;
    boost::intrusive_ptr<const token_snapshot> token_;
};

namespace {

// A failure that retrying cannot fix, returned to new callers until `until`.
struct remembered_failure {
    error_code ec;
    std::shared_ptr<const diagnostics> diag;
    steady_clock::time_point until;
};

} // namespace

struct token_source_impl::state {
    state(token_source_impl& owner, asio::any_io_executor ex, asio::any_io_executor fetch_strand,
          token_source_settings s, std::unique_ptr<token_fetcher> f)
        : impl(owner)
        , settings(std::move(s))
        , executor(std::move(ex))
        , strand(std::move(fetch_strand))
        , fetcher(std::move(f))
        , limiter(strand, settings.rate_limit, settings.logger)
        , backoff(settings.backoff)
        , classifier(settings.retryable_oauth_errors)
        , refresh_timer(strand)
        , stale_timer(strand)
        , retry_timer(strand)
    {
        if (settings.fleet.store) {
            fleet = std::make_shared<fleet_coordinator>(settings, strand);
        }
    }

    token_source_impl& impl;
    const token_source_settings settings;
    const asio::any_io_executor executor;
    // A strand of `executor`, shared with the fetcher, so that every handler of the fetch
    // (resolver, timers, sockets) is serialised with the fetch loop.
    const asio::any_io_executor strand;

    // Used only on the strand.
    std::unique_ptr<token_fetcher> fetcher;
    rate_limiter limiter;
    backoff_policy backoff;
    retry_classifier classifier;
    asio::steady_timer refresh_timer;
    asio::steady_timer stale_timer;
    asio::steady_timer retry_timer;

    // Set in fleet mode. Its members other than `invalidate` and `counters` are used
    // only on the strand.
    std::shared_ptr<fleet_coordinator> fleet;

    // Guarded by `mutex`.
    mutable std::mutex mutex;
    boost::intrusive_ptr<const token_snapshot> current;
    token_waiter_base* head = nullptr;
    token_waiter_base* tail = nullptr;
    bool fetch_running = false;
    bool shut_down = false;
    std::optional<remembered_failure> failure;
    // The token last dropped by `invalidate`, which fleet mode must not take back from
    // the shared store.
    secret_string rejected_token;

    std::atomic<bool> stopping{false};

    std::atomic<std::uint64_t> retired_hits{0};
    std::atomic<std::uint64_t> slow_hits{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> tokens_fetched{0};
    std::atomic<std::uint64_t> waiters{0};
    std::atomic<std::uint64_t> coalesced_waiters{0};
    std::atomic<std::uint64_t> refreshes_ahead{0};
    std::atomic<std::uint64_t> retries{0};
    std::atomic<std::uint64_t> retryable_failures{0};
    std::atomic<std::uint64_t> permanent_failures{0};
    std::atomic<std::uint64_t> cooldown_rejections{0};
    std::atomic<std::uint64_t> cancelled_waiters{0};
    std::atomic<std::uint64_t> invalidations{0};

    template <class MakeMessage>
    void log(log_level level, MakeMessage&& make_message) const
    {
        detail::log(settings.logger, level, std::forward<MakeMessage>(make_message));
    }

    // Queue operations. The caller must have locked `mutex`.
    void push_back(token_waiter_base& w) noexcept
    {
        w.prev_ = tail;
        w.next_ = nullptr;
        w.queued_ = true;
        (tail != nullptr ? tail->next_ : head) = &w;
        tail = &w;
    }

    void unlink(token_waiter_base& w) noexcept
    {
        (w.prev_ != nullptr ? w.prev_->next_ : head) = w.next_;
        (w.next_ != nullptr ? w.next_->prev_ : tail) = w.prev_;
        w.prev_ = w.next_ = nullptr;
        w.queued_ = false;
    }

    token_waiter_base* take_all() noexcept
    {
        token_waiter_base* list = head;
        for (token_waiter_base* w = head; w != nullptr; w = w->next_) {
            w->queued_ = false;
        }
        head = tail = nullptr;
        return list;
    }

    // Completes every waiter of a detached list, outside the lock, from one function
    // posted to the source's executor. One post for the whole list keeps a cold start
    // with thousands of waiters from taking the scheduler's lock once per waiter.
    void complete_all(token_waiter_base* list, error_code ec,
                      std::shared_ptr<const diagnostics> diag,
                      boost::intrusive_ptr<const token_snapshot> token) const
    {
        if (list != nullptr) {
            asio::post(executor,
                       waiter_batch(executor, list, ec, std::move(diag), std::move(token)));
        }
    }

    void bump_generation() noexcept
    {
        impl.generation_.fetch_add(1, std::memory_order_release);
    }

    void spawn_fetch(std::shared_ptr<token_source_impl> self)
    {
        asio::co_spawn(strand, fetch_loop(std::move(self)), asio::detached);
    }

    asio::awaitable<void> fetch_loop(std::shared_ptr<token_source_impl> self);
    asio::awaitable<error_code> fetch_once(boost::intrusive_ptr<const token_snapshot>& out,
                                           milliseconds& lifetime, diagnostics& diag);
    void adopt(stored_token stored);
    secret_string token_to_replace() const;
    void release_lease() const
    {
        if (fleet) {
            fleet->release();
        }
    }
    void publish(boost::intrusive_ptr<const token_snapshot> token,
                 const token_schedule& schedule);
    void fail_waiters(error_code ec, diagnostics diag, bool remember);
    void arm_timers(const boost::intrusive_ptr<const token_snapshot>& token,
                    const token_schedule& schedule);
    void on_refresh_due(const std::shared_ptr<token_source_impl>& self,
                        const token_snapshot* token);
    void on_stale(const token_snapshot* token);
    bool has_usable_token() const
    {
        std::lock_guard lock(mutex);
        return current != nullptr;
    }
};

token_source_impl::token_source_impl(asio::any_io_executor ex, asio::any_io_executor strand,
                                     token_source_settings settings,
                                     std::unique_ptr<token_fetcher> fetcher)
    : id_(next_source_id.fetch_add(1, std::memory_order_relaxed))
    , state_(std::make_unique<state>(*this, std::move(ex), std::move(strand), std::move(settings),
                                     std::move(fetcher)))
{
    cache_registry::instance().add_source(id_, &state_->retired_hits);
}

token_source_impl::~token_source_impl()
{
    cache_registry::instance().remove_source(id_);
}

const token_source_settings& token_source_impl::settings() const noexcept
{
    return state_->settings;
}

const asio::any_io_executor& token_source_impl::get_executor() const noexcept
{
    return state_->executor;
}

const token_snapshot* token_source_impl::refresh_slot(tls_slot& slot) noexcept
{
    boost::intrusive_ptr<const token_snapshot> current;
    std::uint64_t generation = 0;
    {
        std::lock_guard lock(state_->mutex);
        current = state_->current;
        generation = generation_.load(std::memory_order_relaxed);
    }

    // The stale timer normally drops a token before it expires. When the executor was too
    // busy to run that timer in time, the token is dropped here, on the slow path, and the
    // next `start_wait` fetches a new one.
    if (current && steady_clock::now() >= current->expires_at) {
        current.reset();
        generation = 0;
    }

    claim_slot(slot, id_);
    if (slot.snapshot.load(std::memory_order_relaxed) != current.get()) {
        release_slot(slot);
        slot.snapshot.store(current.detach(), std::memory_order_relaxed);
    }
    slot.generation = generation;
    return slot.snapshot.load(std::memory_order_relaxed);
}

const token_snapshot* token_source_impl::peek_slow(tls_slot& slot) noexcept
{
    const token_snapshot* snapshot = refresh_slot(slot);
    if (snapshot != nullptr) {
        slot.hits.fetch_add(1, std::memory_order_relaxed);
    }
    return snapshot;
}

tls_slot& token_source_impl::hold_in_current_thread(
    boost::intrusive_ptr<const token_snapshot> token)
{
    tls_slot& slot = current_thread_slot();
    const std::uint64_t generation = generation_.load(std::memory_order_acquire);
    const bool fresh = slot.owner.load(std::memory_order_relaxed) == id_ &&
                       slot.generation == generation;
    if ((fresh ? slot.snapshot.load(std::memory_order_relaxed) : refresh_slot(slot)) ==
        token.get()) {
        return slot;
    }

    // The token is no longer the current one (invalidated or replaced while the caller
    // was being resumed). Keep it alive in the slot under a generation that never
    // matches, so the view stays valid and the next call looks again.
    claim_slot(slot, id_);
    release_slot(slot);
    slot.snapshot.store(token.detach(), std::memory_order_relaxed);
    slot.generation = 0;
    return slot;
}

void token_source_impl::start_wait(token_waiter_base& waiter)
{
    state& s = *state_;
    boost::intrusive_ptr<const token_snapshot> token;
    std::optional<remembered_failure> failure;
    bool shut_down = false;
    bool start_fetch = false;
    {
        std::lock_guard lock(s.mutex);
        if (s.current && steady_clock::now() >= s.current->expires_at) {
            // Expired before the stale timer could run; see `refresh_slot`.
            s.current.reset();
            s.bump_generation();
        }
        if (s.shut_down) {
            shut_down = true;
        } else if (s.current) {
            token = s.current;
        } else if (s.failure && steady_clock::now() < s.failure->until) {
            failure = s.failure;
        } else {
            s.push_back(waiter);
            start_fetch = !s.fetch_running;
            s.fetch_running = true;
        }
    }

    if (shut_down) {
        waiter.complete(asio::error::operation_aborted, nullptr, nullptr);
    } else if (token) {
        s.slow_hits.fetch_add(1, std::memory_order_relaxed);
        waiter.complete({}, nullptr, std::move(token));
    } else if (failure) {
        s.cooldown_rejections.fetch_add(1, std::memory_order_relaxed);
        waiter.complete(failure->ec, failure->diag, nullptr);
    } else {
        s.waiters.fetch_add(1, std::memory_order_relaxed);
        if (start_fetch) {
            s.spawn_fetch(shared_from_this());
        } else {
            s.coalesced_waiters.fetch_add(1, std::memory_order_relaxed);
        }
    }
}

void token_source_impl::cancel_wait(token_waiter_base& waiter)
{
    state& s = *state_;
    {
        std::lock_guard lock(s.mutex);
        if (!waiter.queued_) {
            return;
        }
        s.unlink(waiter);
    }
    s.cancelled_waiters.fetch_add(1, std::memory_order_relaxed);
    waiter.complete(asio::error::operation_aborted, nullptr, nullptr);
}

bool token_source_impl::invalidate(std::string_view token_value)
{
    state& s = *state_;
    {
        std::lock_guard lock(s.mutex);
        if (!s.current || s.current->access_token.reveal() != token_value) {
            return false;
        }
        s.rejected_token = s.current->access_token;
        s.current.reset();
        s.bump_generation();
    }
    // A refresh that is waiting to retry now has callers waiting for it; wake it as a
    // stale token does. Its wait still honours a Retry-After.
    asio::dispatch(s.strand, [self = shared_from_this()] { self->state_->retry_timer.cancel(); });
    s.invalidations.fetch_add(1, std::memory_order_relaxed);
    if (s.fleet) {
        // Fire and forget: the store removes the entry only while it still contains this
        // token, so a newer one stored meanwhile stays.
        s.fleet->invalidate(secret_string(token_value));
    }
    s.log(log_level::info, [] { return std::string("token invalidated; the next call fetches a new one"); });
    return true;
}

void token_source_impl::abandon_waiters() noexcept
{
    state& s = *state_;
    token_waiter_base* list = nullptr;
    {
        std::lock_guard lock(s.mutex);
        s.shut_down = true;
        s.stopping.store(true, std::memory_order_relaxed);
        s.current.reset();
        s.failure.reset();
        s.bump_generation();
        list = s.take_all();
    }
    // A destroyed handler may own the last copy of this source, whose shutdown() then
    // finds the source already shut down.
    while (list != nullptr) {
        token_waiter_base* next = list->next_;
        list->destroy();
        list = next;
    }
}

void token_source_impl::shutdown()
{
    state& s = *state_;
    token_waiter_base* waiters = nullptr;
    {
        std::lock_guard lock(s.mutex);
        if (s.shut_down) {
            return;
        }
        s.shut_down = true;
        s.stopping.store(true, std::memory_order_relaxed);
        s.current.reset();
        s.failure.reset();
        s.bump_generation();
        waiters = s.take_all();
    }
    s.complete_all(waiters, asio::error::operation_aborted, nullptr, nullptr);

    // Timers, the limiter and the connection belong to the strand.
    asio::dispatch(s.strand, [self = shared_from_this()] {
        state& st = *self->state_;
        st.refresh_timer.cancel();
        st.stale_timer.cancel();
        st.retry_timer.cancel();
        st.limiter.shutdown();
        st.fetcher->close();
        if (st.fleet) {
            st.fleet->cancel();
            st.fleet->release();
        }
    });
    s.log(log_level::debug, [] { return std::string("token source shut down"); });
}

token_source_stats token_source_impl::stats() const
{
    const state& s = *state_;
    token_source_stats out;
    out.cache_hits = cache_registry::instance().live_hits(id_) +
                     s.retired_hits.load(std::memory_order_relaxed) +
                     s.slow_hits.load(std::memory_order_relaxed);
    out.requests = s.requests.load(std::memory_order_relaxed);
    out.tokens_fetched = s.tokens_fetched.load(std::memory_order_relaxed);
    out.waiters = s.waiters.load(std::memory_order_relaxed);
    out.coalesced_waiters = s.coalesced_waiters.load(std::memory_order_relaxed);
    out.refreshes_ahead = s.refreshes_ahead.load(std::memory_order_relaxed);
    out.retries = s.retries.load(std::memory_order_relaxed);
    out.retryable_failures = s.retryable_failures.load(std::memory_order_relaxed);
    out.permanent_failures = s.permanent_failures.load(std::memory_order_relaxed);
    out.cooldown_rejections = s.cooldown_rejections.load(std::memory_order_relaxed);
    out.cancelled_waiters = s.cancelled_waiters.load(std::memory_order_relaxed);
    out.invalidations = s.invalidations.load(std::memory_order_relaxed);
    out.rate_limited_waits = s.limiter.stats().waited;
    out.connections_opened = s.fetcher->connections_opened();
    if (s.fleet) {
        const fleet_counters fleet = s.fleet->counters();
        out.shared_hits = fleet.shared_hits;
        out.lease_waits = fleet.lease_waits;
        out.leases_taken = fleet.leases_taken;
        out.fleet_limited_waits = fleet.fleet_limited_waits;
        out.stale_leases = fleet.stale_leases;
        out.store_errors = fleet.store_errors;
    }
    return out;
}

// One fetch, from the first attempt to a token or a final error, with retries. In fleet
// mode each attempt first looks in the shared store and takes the lease, and takes a
// fleet limiter permit after the local one. A store failure makes the attempt local.
asio::awaitable<void> token_source_impl::state::fetch_loop(std::shared_ptr<token_source_impl> self)
{
    (void)self; // keeps the shared state alive until the loop ends
    unsigned attempts = 0;
    auto first_attempt = steady_clock::now();
    bool refreshing = has_usable_token();

    try {
        for (;;) {
            if (fleet) {
                secret_string replaced = token_to_replace();
                fleet_turn turn = co_await fleet->take_turn(std::move(replaced), stopping);
                if (turn.action == fleet_turn::kind::stopped) {
                    release_lease();
                    co_return;
                }
                if (turn.action == fleet_turn::kind::adopt) {
                    adopt(std::move(*turn.token));
                    co_return;
                }
            }

            auto [limit_ec] = co_await limiter.async_acquire(asio::as_tuple(asio::use_awaitable));
            if (limit_ec || stopping.load(std::memory_order_relaxed)) {
                release_lease();
                co_return;
            }

            if (fleet) {
                const auto start_over = co_await fleet->wait_for_fleet_permit(stopping);
                if (stopping.load(std::memory_order_relaxed)) {
                    release_lease();
                    co_return;
                }
                if (start_over) {
                    // The lease was released for the wait; the next attempt starts again
                    // with the store, where another process's token may be by then.
                    retry_timer.expires_after(*start_over);
                    co_await retry_timer.async_wait(asio::as_tuple(asio::use_awaitable));
                    if (stopping.load(std::memory_order_relaxed)) {
                        co_return;
                    }
                    continue;
                }
            }

            ++attempts;
            requests.fetch_add(1, std::memory_order_relaxed);
            log(log_level::debug, [&] {
                return "token request " + std::to_string(attempts) + (refreshing ? " (refresh ahead)" : "") +
                       " for client " + settings.client_id;
            });

            boost::intrusive_ptr<const token_snapshot> token;
            milliseconds lifetime{0};
            diagnostics diag;
            const error_code ec = co_await fetch_once(token, lifetime, diag);
            if (stopping.load(std::memory_order_relaxed)) {
                release_lease();
                co_return;
            }
            if (!ec) {
                // A token fetched without the lease (after a store failure, or past a
                // stale lease) is stored too, so processes that wait on the store find it
                // instead of waiting out the lease.
                if (fleet) {
                    stored_token stored;
                    stored.access_token = token->access_token;
                    stored.token_type = token->token_type;
                    stored.scope = token->scope;
                    stored.expires_at = token->expires_at_system;
                    stored.issued_at = stored.expires_at - lifetime;
                    fleet->store_and_release(std::move(stored));
                }
                co_return;
            }
            // Other processes may try while this one backs off.
            release_lease();

            // An abort that is not a shutdown (the connection was closed under the
            // request) is retried like a network failure.
            const failure_kind kind = classifier.classify(ec, diag);
            if (kind == failure_kind::permanent) {
                permanent_failures.fetch_add(1, std::memory_order_relaxed);
                log(log_level::error, [&] {
                    return "token request failed with a permanent error, not retried for " +
                           format_ms(settings.permanent_error_cooldown) + ": " + ec.message() +
                           (diag.server_message().empty() ? "" : " (server: " + diag.server_message() + ")");
                });
                fail_waiters(ec, std::move(diag), true);
                co_return;
            }

            retryable_failures.fetch_add(1, std::memory_order_relaxed);

            // A refresh that outlived its token becomes an ordinary fetch, with a full
            // retry budget for the callers who now wait for it.
            const bool usable = has_usable_token();
            if (refreshing && !usable) {
                refreshing = false;
                attempts = 1;
                first_attempt = steady_clock::now();
            }

            auto delay = backoff.next_delay(attempts, duration_cast<milliseconds>(steady_clock::now() - first_attempt),
                                            diag.retry_after());
            if (!delay && refreshing) {
                // The old token is still good, so keep trying at the slowest pace.
                delay = std::max(settings.backoff.max_delay,
                                 std::min(diag.retry_after().value_or(milliseconds{0}),
                                          settings.backoff.max_retry_after));
            }
            if (!delay) {
                log(log_level::error, [&] {
                    return "token request failed after " + count_attempts(attempts) +
                           ", giving up: " + ec.message();
                });
                append_sentence(diag, "Gave up after " + count_attempts(attempts) +
                                          "; the next call starts a new fetch.");
                fail_waiters(ec, std::move(diag), false);
                co_return;
            }

            retries.fetch_add(1, std::memory_order_relaxed);
            log(log_level::warning, [&] {
                return "token request " + std::to_string(attempts) + " failed (" + ec.message() +
                       (diag.http_status() != 0 ? ", HTTP " + std::to_string(diag.http_status()) : "") +
                       "), retrying in " + format_ms(*delay);
            });
            // The wait ends early when the token goes stale or is invalidated (both cancel
            // the timer), so callers who now wait do not sit out the slow refresh pace.
            // The server's Retry-After still holds: the wait goes on until it has passed.
            const auto now = steady_clock::now();
            const auto server_delay =
                std::min(diag.retry_after().value_or(milliseconds{0}), settings.backoff.max_retry_after);
            const auto not_before = now + server_delay;
            retry_timer.expires_at(now + *delay);
            co_await retry_timer.async_wait(asio::as_tuple(asio::use_awaitable));
            while (!stopping.load(std::memory_order_relaxed) && steady_clock::now() < not_before) {
                retry_timer.expires_at(not_before);
                co_await retry_timer.async_wait(asio::as_tuple(asio::use_awaitable));
            }
            if (stopping.load(std::memory_order_relaxed)) {
                co_return;
            }
        }
    } catch (const std::exception& e) {
        // Nothing above is expected to throw but allocation failures; fail the waiters
        // rather than leave them hanging.
        release_lease();
        diagnostics diag;
        diag.set_client_message(std::string("internal error in the token fetch: ") + e.what());
        fail_waiters(make_error_code(boost::system::errc::not_enough_memory), std::move(diag), false);
    }
}

asio::awaitable<error_code>
token_source_impl::state::fetch_once(boost::intrusive_ptr<const token_snapshot>& out,
                                     milliseconds& lifetime, diagnostics& diag)
{
    fetched_token fetched;
    const error_code ec = co_await fetcher->fetch(fetched, diag);
    if (ec) {
        co_return ec;
    }

    const token_schedule schedule =
        plan_token_schedule(fetched.sent_at, fetched.expires_in, settings);
    auto* snapshot = new token_snapshot;
    snapshot->access_token = std::move(fetched.access_token);
    snapshot->token_type = std::move(fetched.token_type);
    snapshot->scope = std::move(fetched.scope);
    snapshot->expires_at = schedule.expires_at;
    snapshot->stale_at = schedule.stale_at;
    snapshot->expires_at_system =
        std::chrono::system_clock::now() +
        duration_cast<std::chrono::system_clock::duration>(schedule.expires_at - steady_clock::now());
    out.reset(snapshot);
    lifetime = schedule.lifetime;

    tokens_fetched.fetch_add(1, std::memory_order_relaxed);
    log(log_level::info, [&] {
        const auto now = steady_clock::now();
        return "token fetched for client " + settings.client_id + ": lifetime " +
               format_ms(schedule.lifetime) +
               (fetched.expires_in ? "" : " (no expires_in; default_lifetime used)") +
               ", refresh in " + format_ms(duration_cast<milliseconds>(schedule.refresh_at - now));
    });
    publish(out, schedule);
    co_return error_code{};
}

// Publishes a token that another process fetched. Its lifetime counts from the moment
// that process sent its request, moved to this process's monotonic clock, so the whole
// fleet plans the same refresh time.
void token_source_impl::state::adopt(stored_token stored)
{
    const auto age = system_clock::now() - stored.issued_at;
    const auto sent_at = steady_clock::now() - duration_cast<steady_clock::duration>(age);
    const auto lifetime = duration_cast<milliseconds>(stored.expires_at - stored.issued_at);
    const token_schedule schedule = plan_token_schedule(sent_at, lifetime, settings);

    auto* snapshot = new token_snapshot;
    snapshot->access_token = std::move(stored.access_token);
    snapshot->token_type = std::move(stored.token_type);
    snapshot->scope = std::move(stored.scope);
    snapshot->expires_at = schedule.expires_at;
    snapshot->stale_at = schedule.stale_at;
    snapshot->expires_at_system = stored.expires_at;
    boost::intrusive_ptr<const token_snapshot> token(snapshot);

    log(log_level::info, [&] {
        const auto now = steady_clock::now();
        return "token for client " + settings.client_id +
               " taken from the shared store: expires in " +
               format_ms(duration_cast<milliseconds>(schedule.expires_at - now)) +
               ", refresh in " + format_ms(duration_cast<milliseconds>(schedule.refresh_at - now));
    });
    publish(std::move(token), schedule);
}

secret_string token_source_impl::state::token_to_replace() const
{
    std::lock_guard lock(mutex);
    return current ? current->access_token : rejected_token;
}

void token_source_impl::state::publish(boost::intrusive_ptr<const token_snapshot> token,
                                       const token_schedule& schedule)
{
    token_waiter_base* waiters_list = nullptr;
    {
        std::lock_guard lock(mutex);
        if (shut_down) {
            return;
        }
        current = token;
        failure.reset();
        bump_generation();
        waiters_list = take_all();
        fetch_running = false;
    }
    complete_all(waiters_list, {}, nullptr, token);
    arm_timers(token, schedule);
}

void token_source_impl::state::fail_waiters(error_code ec, diagnostics diag, bool remember)
{
    if (remember && settings.permanent_error_cooldown.count() > 0) {
        append_sentence(diag, "This error is remembered for " +
                                  format_ms(settings.permanent_error_cooldown) +
                                  ": calls in that time fail at once without a request.");
    }
    auto shared_diag = std::make_shared<const diagnostics>(std::move(diag));
    token_waiter_base* waiters_list = nullptr;
    {
        std::lock_guard lock(mutex);
        if (remember && settings.permanent_error_cooldown.count() > 0) {
            failure = remembered_failure{ec, shared_diag,
                                         steady_clock::now() + settings.permanent_error_cooldown};
        }
        waiters_list = take_all();
        fetch_running = false;
    }
    complete_all(waiters_list, ec, shared_diag, nullptr);
}

void token_source_impl::state::arm_timers(const boost::intrusive_ptr<const token_snapshot>& token,
                                          const token_schedule& schedule)
{
    std::weak_ptr<token_source_impl> weak = impl.weak_from_this();
    const token_snapshot* raw = token.get();

    refresh_timer.expires_at(schedule.refresh_at);
    refresh_timer.async_wait(asio::bind_executor(strand, [weak, raw](error_code ec) {
        if (ec) {
            return;
        }
        if (auto self = weak.lock()) {
            self->state_->on_refresh_due(self, raw);
        }
    }));

    stale_timer.expires_at(schedule.stale_at);
    stale_timer.async_wait(asio::bind_executor(strand, [weak, raw](error_code ec) {
        if (ec) {
            return;
        }
        if (auto self = weak.lock()) {
            self->state_->on_stale(raw);
        }
    }));
}

void token_source_impl::state::on_refresh_due(const std::shared_ptr<token_source_impl>& self,
                                              const token_snapshot* token)
{
    {
        std::lock_guard lock(mutex);
        if (shut_down || current.get() != token || fetch_running) {
            return;
        }
        fetch_running = true;
    }
    refreshes_ahead.fetch_add(1, std::memory_order_relaxed);
    log(log_level::info, [] { return std::string("token enters its refresh window; refreshing in the background"); });
    spawn_fetch(self);
}

void token_source_impl::state::on_stale(const token_snapshot* token)
{
    {
        std::lock_guard lock(mutex);
        if (current.get() != token) {
            return;
        }
        current.reset();
        bump_generation();
    }
    retry_timer.cancel();
    log(log_level::warning, [] {
        return std::string("token reached its expiry margin before a refresh succeeded; callers now wait");
    });
}

namespace {

// Destroys the waiters of every token source of an execution context when the context
// shuts down. Waiters are not Asio operations, so without this a waiter whose handler
// owns a copy of its source would keep both alive forever after the context is gone.
class token_source_service : public asio::execution_context::service {
public:
    using key_type = token_source_service;
    static asio::execution_context::id id;

    explicit token_source_service(asio::execution_context& context)
        : asio::execution_context::service(context)
    {
    }

    // Sources never deregister, so that none calls into a destroyed service; expired
    // entries are dropped here instead.
    void add(const std::shared_ptr<token_source_impl>& impl)
    {
        std::lock_guard lock(mutex_);
        std::erase_if(sources_, [](const auto& weak) { return weak.expired(); });
        sources_.push_back(impl);
    }

private:
    void shutdown() override
    {
        std::vector<std::shared_ptr<token_source_impl>> alive;
        {
            std::lock_guard lock(mutex_);
            for (const auto& weak : sources_) {
                if (auto impl = weak.lock()) {
                    alive.push_back(std::move(impl));
                }
            }
            sources_.clear();
        }
        for (const auto& impl : alive) {
            impl->abandon_waiters();
        }
    }

    std::mutex mutex_;
    std::vector<std::weak_ptr<token_source_impl>> sources_;
};

asio::execution_context::id token_source_service::id;

} // namespace

} // namespace detail

// Shuts the source down when the last user-facing copy goes away. The fetch loop and
// timers hold the implementation, not this, so they cannot keep the source alive.
struct detail::token_source_owner {
    explicit token_source_owner(std::shared_ptr<token_source_impl> i) noexcept
        : impl(std::move(i))
    {
    }

    token_source_owner(const token_source_owner&) = delete;
    token_source_owner& operator=(const token_source_owner&) = delete;

    ~token_source_owner() { impl->shutdown(); }

    std::shared_ptr<token_source_impl> impl;
};

namespace {

void validate_or_throw(const token_source_settings& settings)
{
    diagnostics diag;
    if (error_code ec = validate(settings, diag)) {
        throw error_with_diagnostics(ec, std::move(diag));
    }
}

} // namespace

token_source::token_source(const executor_type& ex, token_source_settings settings)
{
    validate_or_throw(settings);
    executor_type strand = asio::make_strand(ex);
    auto fetcher = detail::make_http_token_fetcher(strand, settings);
    init(ex, strand, std::move(settings), std::move(fetcher));
}

token_source::token_source(const executor_type& ex, token_source_settings settings,
                           std::unique_ptr<detail::token_fetcher> fetcher)
{
    validate_or_throw(settings);
    init(ex, asio::make_strand(ex), std::move(settings), std::move(fetcher));
}

void token_source::init(const executor_type& ex, const executor_type& strand,
                        token_source_settings settings,
                        std::unique_ptr<detail::token_fetcher> fetcher)
{
    auto impl = std::make_shared<detail::token_source_impl>(ex, strand, std::move(settings),
                                                            std::move(fetcher));
    asio::use_service<detail::token_source_service>(asio::query(ex, asio::execution::context))
        .add(impl);
    impl_ = impl.get();
    owner_ = std::make_shared<detail::token_source_owner>(std::move(impl));
}

std::shared_ptr<detail::token_source_impl> token_source::impl_shared() const
{
    return owner_->impl;
}

access_token_view token_source::hold(boost::intrusive_ptr<const detail::token_snapshot> token)
{
    const detail::token_snapshot& snapshot = *token;
    detail::tls_slot& slot = impl_->hold_in_current_thread(std::move(token));
    return access_token_view(snapshot, slot);
}

} // namespace stampede
