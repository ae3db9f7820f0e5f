#include "detail/fleet_coordinator.hpp"

#include <stampede/detail/log.hpp>
#include <stampede/token_cache_key.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <string>

namespace stampede::detail {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

constexpr auto await_tuple = asio::as_tuple(asio::use_awaitable);

std::string format_ms(milliseconds d)
{
    return std::to_string(d.count()) + " ms";
}

} // namespace

fleet_coordinator::fleet_coordinator(const token_source_settings& settings,
                                     asio::any_io_executor strand)
    : store_(settings.fleet.store)
    , limiter_(settings.fleet.limiter)
    , key_{token_cache_key(settings), settings.client_secret}
    , strand_(std::move(strand))
    , fleet_(settings.fleet)
    , request_timeout_(settings.transport.request_timeout)
    , expiry_margin_(settings.expiry_margin)
    , logger_(settings.logger)
    , limit_timer_(strand_)
{
}

bool fleet_coordinator::adoptable(const std::optional<stored_token>& entry,
                                  const secret_string& replaced) const
{
    if (!entry || entry->access_token == replaced) {
        return false;
    }

    // The token must still be usable here: outside the expiry margin that this source
    // applies to the tokens it fetches itself.
    const auto lifetime = duration_cast<milliseconds>(entry->expires_at - entry->issued_at);
    const auto margin = std::min(expiry_margin_, lifetime / 10);
    return entry->expires_at - margin > system_clock::now();
}

asio::awaitable<fleet_turn> fleet_coordinator::take_turn(secret_string replaced_token,
                                                         const std::atomic<bool>& stopping)
{
    const auto stopped = [&] { return stopping.load(std::memory_order_relaxed); };
    const auto adopt = [&](std::optional<stored_token>& entry) {
        shared_hits_.fetch_add(1, std::memory_order_relaxed);
        return fleet_turn{fleet_turn::kind::adopt, std::move(entry)};
    };

    // A holder that dies leaves its lease for at most lease_ttl, and the process that
    // takes the lease next has lease_ttl for its fetch, longer than a request. Waiting
    // more than twice that means that the lease outlives its holder's fetch (it was set
    // by something else, or by a peer with a longer lease_ttl), which could go on for as
    // long as the lease's time to live.
    std::optional<steady_clock::time_point> waiting_since;
    const auto stale_after = 2 * fleet_.lease_ttl + fleet_.max_wait;

    for (;;) {
        if (stopped()) {
            co_return fleet_turn{fleet_turn::kind::stopped, std::nullopt};
        }
        auto get_op = store_->async_get(key_, await_tuple);
        auto [get_ec, entry] = co_await std::move(get_op);
        if (get_ec) {
            note_failure(get_ec, "reading the token");
            co_return fleet_turn{fleet_turn::kind::fetch, std::nullopt};
        }
        note_success();
        if (adoptable(entry, replaced_token)) {
            co_return adopt(entry);
        }
        if (stopped()) {
            co_return fleet_turn{fleet_turn::kind::stopped, std::nullopt};
        }

        auto lease_op = store_->async_try_lease(key_.cache_key, fleet_.lease_ttl, await_tuple);
        auto [lease_ec, lease] = co_await std::move(lease_op);
        if (lease_ec) {
            note_failure(lease_ec, "taking the lease");
            co_return fleet_turn{fleet_turn::kind::fetch, std::nullopt};
        }
        if (lease) {
            lease_ = std::move(lease);
            lease_taken_at_ = steady_clock::now();
            leases_taken_.fetch_add(1, std::memory_order_relaxed);

            // The previous holder may have stored its token and released the lease
            // between the read above and this lease, so look once more.
            auto recheck_op = store_->async_get(key_, await_tuple);
            auto [recheck_ec, stored] = co_await std::move(recheck_op);
            if (recheck_ec) {
                note_failure(recheck_ec, "reading the token");
            } else if (adoptable(stored, replaced_token)) {
                release();
                co_return adopt(stored);
            }
            co_return fleet_turn{fleet_turn::kind::fetch, std::nullopt};
        }

        // Another process is fetching. An entry this source cannot use stays present
        // while it waits, so the wait ignores that one too. The check of `stopping` just
        // before the wait starts means that `cancel()`, which runs after `stopping` is
        // set, always finds the wait it must end.
        if (stopped()) {
            co_return fleet_turn{fleet_turn::kind::stopped, std::nullopt};
        }
        const auto now = steady_clock::now();
        if (!waiting_since) {
            waiting_since = now;
        } else if (now - *waiting_since >= stale_after) {
            stale_leases_.fetch_add(1, std::memory_order_relaxed);
            log(logger_, log_level::warning, [&] {
                return "waited " + format_ms(duration_cast<milliseconds>(now - *waiting_since)) +
                       " for the token lease of cache key " + key_.cache_key +
                       " without a new token, more than twice lease_ttl (" +
                       format_ms(fleet_.lease_ttl) +
                       "); fetching without it. Such a lease comes from a process with a "
                       "longer lease_ttl or from another writer of the key";
            });
            co_return fleet_turn{fleet_turn::kind::fetch, std::nullopt};
        }
        lease_waits_.fetch_add(1, std::memory_order_relaxed);
        secret_string ignored = entry ? entry->access_token : replaced_token;
        log(logger_, log_level::debug, [] {
            return std::string("another process holds the token lease; waiting for its token");
        });
        auto wait_op = store_->async_wait_for_replacement(
            key_, std::move(ignored), fleet_.max_wait,
            asio::bind_cancellation_slot(wait_cancel_.slot(), await_tuple));
        auto [wait_ec, waited] = co_await std::move(wait_op);
        if (stopped()) {
            co_return fleet_turn{fleet_turn::kind::stopped, std::nullopt};
        }
        if (wait_ec) {
            note_failure(wait_ec, "waiting for another process's token");
            co_return fleet_turn{fleet_turn::kind::fetch, std::nullopt};
        }
        if (adoptable(waited, replaced_token)) {
            co_return adopt(waited);
        }
        // The lease is free (released or expired) or the wait timed out: look again.
    }
}

asio::awaitable<std::optional<milliseconds>>
fleet_coordinator::wait_for_fleet_permit(const std::atomic<bool>& stopping)
{
    while (limiter_ && lease_ && !stopping.load(std::memory_order_relaxed)) {
        auto acquire_op = limiter_->async_try_acquire(await_tuple);
        auto [ec, decision] = co_await std::move(acquire_op);
        if (ec) {
            note_failure(ec, "asking the fleet limiter");
            co_return std::nullopt;
        }
        if (decision.allowed) {
            co_return std::nullopt;
        }

        fleet_limited_waits_.fetch_add(1, std::memory_order_relaxed);
        const auto now = steady_clock::now();
        const auto lease_left = lease_taken_at_ + fleet_.lease_ttl - now;
        const bool keep_lease = lease_left - decision.retry_after >= request_timeout_;
        // A named copy: clang 14 cannot capture a structured binding in a lambda.
        const milliseconds retry_after = decision.retry_after;
        log(logger_, log_level::debug, [&] {
            return "fleet limiter: next token request in " + format_ms(retry_after) +
                   (keep_lease ? ", holding the lease" : ", releasing the lease meanwhile");
        });
        if (!keep_lease) {
            release();
            co_return decision.retry_after;
        }
        limit_timer_.expires_after(decision.retry_after);
        auto wait_op = limit_timer_.async_wait(await_tuple);
        co_await std::move(wait_op);
    }
    co_return std::nullopt;
}

void fleet_coordinator::store_and_release(stored_token token)
{
    std::optional<token_lease> lease = std::exchange(lease_, std::nullopt);
    auto self = shared_from_this();
    auto work = [](std::shared_ptr<fleet_coordinator> self, stored_token token,
                   std::optional<token_lease> lease) -> asio::awaitable<void> {
        auto put_op = self->store_->async_put(self->key_, std::move(token), await_tuple);
        auto [put_ec] = co_await std::move(put_op);
        if (put_ec) {
            self->note_failure(put_ec, "storing the token");
        }
        if (lease) {
            auto release_op = self->store_->async_release(std::move(*lease), await_tuple);
            auto [release_ec, released] = co_await std::move(release_op);
            if (release_ec) {
                self->note_failure(release_ec, "releasing the lease");
            }
        }
    };
    asio::co_spawn(strand_, work(std::move(self), std::move(token), std::move(lease)),
                   asio::detached);
}

void fleet_coordinator::release()
{
    if (!lease_) {
        return;
    }
    auto lease = std::exchange(lease_, std::nullopt);
    store_->async_release(
        std::move(*lease),
        asio::bind_executor(strand_, [self = shared_from_this()](error_code ec, bool) {
            if (ec) {
                self->note_failure(ec, "releasing the lease");
            }
        }));
}

void fleet_coordinator::invalidate(secret_string token_value)
{
    store_->async_invalidate(
        key_, std::move(token_value),
        asio::bind_executor(strand_, [self = shared_from_this()](error_code ec, bool) {
            if (ec) {
                self->note_failure(ec, "removing the rejected token");
            }
        }));
}

void fleet_coordinator::cancel()
{
    wait_cancel_.emit(asio::cancellation_type::terminal);
    limit_timer_.cancel();
}

fleet_counters fleet_coordinator::counters() const noexcept
{
    fleet_counters out;
    out.shared_hits = shared_hits_.load(std::memory_order_relaxed);
    out.lease_waits = lease_waits_.load(std::memory_order_relaxed);
    out.leases_taken = leases_taken_.load(std::memory_order_relaxed);
    out.fleet_limited_waits = fleet_limited_waits_.load(std::memory_order_relaxed);
    out.stale_leases = stale_leases_.load(std::memory_order_relaxed);
    out.store_errors = store_errors_.load(std::memory_order_relaxed);
    return out;
}

void fleet_coordinator::note_failure(const error_code& ec, std::string_view operation)
{
    if (ec == asio::error::operation_aborted) {
        return;
    }
    store_errors_.fetch_add(1, std::memory_order_relaxed);
    ++failures_while_degraded_;
    if (!degraded_) {
        degraded_ = true;
        log(logger_, log_level::warning, [&] {
            return "shared token store failed while " + std::string(operation) + ": " +
                   ec.message() +
                   "; this process uses its own cache, single flight and rate limiter until "
                   "the store works again";
        });
        return;
    }
    log(logger_, log_level::debug, [&] {
        return "shared token store failed again while " + std::string(operation) + ": " +
               ec.message() + " (" + std::to_string(failures_while_degraded_) +
               " failures since it stopped working)";
    });
}

void fleet_coordinator::note_success()
{
    if (!degraded_) {
        return;
    }
    log(logger_, log_level::info, [&] {
        return "shared token store works again after " + std::to_string(failures_while_degraded_) +
               " failed operations; back to sharing tokens with the fleet";
    });
    degraded_ = false;
    failures_while_degraded_ = 0;
}

} // namespace stampede::detail
