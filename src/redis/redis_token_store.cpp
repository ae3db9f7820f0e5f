#include "../detail/spawn_operation.hpp"
#include "../detail/waker.hpp"
#include "scripts.hpp"
#include "subscriber.hpp"

#include <stampede/detail/log.hpp>
#include <stampede/redis/entry_codec.hpp>
#include <stampede/redis/error.hpp>
#include <stampede/redis/lease.hpp>
#include <stampede/redis/redis_token_store.hpp>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/this_coro.hpp>

#include <stdexcept>

namespace stampede::redis {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

template <class... Args>
using result = std::tuple<error_code, Args...>;

store_settings validated(store_settings settings)
{
    if (settings.poll_interval.count() <= 0) {
        throw std::invalid_argument("invalid redis::store_settings::poll_interval " +
                                    std::to_string(settings.poll_interval.count()) +
                                    " ms: must be positive");
    }
    return settings;
}

} // namespace

class redis_token_store::impl : public std::enable_shared_from_this<impl> {
public:
    impl(asio::any_io_executor ex, config cfg, store_settings settings, logger log)
        : executor(std::move(ex))
        , strand(asio::make_strand(executor))
        , settings(validated(std::move(settings)))
        , log(log)
        , commands(executor, cfg, log)
        , sub(std::make_shared<detail::subscriber>(strand, std::move(cfg), log))
    {}

    const asio::any_io_executor executor;
    const asio::strand<asio::any_io_executor> strand;
    const store_settings settings;
    const logger log;
    connection commands;
    const std::shared_ptr<detail::subscriber> sub;

    std::atomic<std::uint64_t> hits{0};
    std::atomic<std::uint64_t> misses{0};
    std::atomic<std::uint64_t> unreadable_entries{0};
    std::atomic<std::uint64_t> puts{0};
    std::atomic<std::uint64_t> leases_taken{0};
    std::atomic<std::uint64_t> leases_denied{0};
    std::atomic<std::uint64_t> wait_checks{0};

    std::string name(std::string_view cache_key, std::string_view suffix) const
    {
        std::string out = settings.key_prefix;
        out += '{';
        out.append(cache_key);
        out += "}:";
        out.append(suffix);
        return out;
    }

    // Decodes a GET reply. An entry that cannot be decrypted is a miss, so that a rotated
    // secret or a foreign writer makes this process fetch instead of fail.
    std::optional<stored_token> decode(const token_key& key, const reply& answer)
    {
        if (answer.type() != reply::kind::string) {
            misses.fetch_add(1, std::memory_order_relaxed);
            return std::nullopt;
        }
        stored_token token;
        if (error_code ec =
                open_token_entry(answer.text(), key.client_secret, key.cache_key, token)) {
            const auto count = unreadable_entries.fetch_add(1, std::memory_order_relaxed) + 1;
            misses.fetch_add(1, std::memory_order_relaxed);
            stampede::detail::log(log, count == 1 ? log_level::warning : log_level::debug, [&] {
                return "ignoring the Redis token entry " + name(key.cache_key, "token") + ": " +
                       ec.message() + " (" + std::to_string(count) + " unreadable so far)";
            });
            return std::nullopt;
        }
        hits.fetch_add(1, std::memory_order_relaxed);
        return token;
    }

    asio::awaitable<result<std::optional<stored_token>>> get(token_key key)
    {
        auto op = commands.async_execute(command{"GET", name(key.cache_key, "token")},
                                         asio::as_tuple(asio::use_awaitable));
        auto [ec, answer] = co_await std::move(op);
        if (ec) {
            co_return result<std::optional<stored_token>>(ec, std::nullopt);
        }
        co_return result<std::optional<stored_token>>(error_code(), decode(key, answer));
    }

    asio::awaitable<result<>> put(token_key key, stored_token value)
    {
        const std::string channel = name(key.cache_key, "ready");
        const auto ttl =
            std::chrono::duration_cast<milliseconds>(value.expires_at - system_clock::now());
        if (ttl.count() <= 0) {
            // Nothing to store, but waiters should stop waiting for this fetch.
            auto op = commands.async_execute(command{"PUBLISH", channel, "expired"},
                                             asio::as_tuple(asio::use_awaitable));
            auto [ec, ignored] = co_await std::move(op);
            co_return result<>(ec);
        }

        std::string entry = seal_token_entry(value, key.client_secret, key.cache_key);
        auto op = detail::run_script(commands, detail::put_and_publish_script(),
                                     {name(key.cache_key, "token")},
                                     {std::move(entry), std::to_string(ttl.count()), channel});
        auto [ec, answer] = co_await std::move(op);
        if (!ec) {
            puts.fetch_add(1, std::memory_order_relaxed);
        }
        co_return result<>(ec);
    }

    asio::awaitable<result<std::optional<token_lease>>> try_lease(std::string cache_key,
                                                                  milliseconds ttl)
    {
        token_lease lease{cache_key, make_lease_owner()};
        auto op = async_acquire_lease(commands, name(cache_key, "lease"), lease.owner, ttl,
                                      asio::as_tuple(asio::use_awaitable));
        auto [ec, taken] = co_await std::move(op);
        if (ec) {
            co_return result<std::optional<token_lease>>(ec, std::nullopt);
        }
        if (!taken) {
            leases_denied.fetch_add(1, std::memory_order_relaxed);
            co_return result<std::optional<token_lease>>(error_code(), std::nullopt);
        }
        leases_taken.fetch_add(1, std::memory_order_relaxed);
        co_return result<std::optional<token_lease>>(error_code(), std::move(lease));
    }

    asio::awaitable<result<bool>> release(token_lease lease)
    {
        auto op = async_release_lease(commands, name(lease.cache_key, "lease"), lease.owner,
                                      name(lease.cache_key, "ready"),
                                      asio::as_tuple(asio::use_awaitable));
        auto [ec, released] = co_await std::move(op);
        co_return result<bool>(ec, released);
    }

    asio::awaitable<result<std::optional<stored_token>>> wait(token_key key,
                                                              secret_string replaced_token,
                                                              milliseconds max_wait)
    {
        using wait_result = result<std::optional<stored_token>>;
        co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());

        const auto deadline = steady_clock::now() + max_wait;
        const std::string channel = name(key.cache_key, "ready");
        stampede::detail::waker signal(strand);
        sub->watch(channel, signal);
        struct unwatch_on_exit {
            detail::subscriber& s;
            const std::string& channel;
            stampede::detail::waker& w;
            ~unwatch_on_exit() { s.unwatch(channel, w); }
        } cleanup{*sub, channel, signal};

        for (;;) {
            wait_checks.fetch_add(1, std::memory_order_relaxed);
            command check{"MGET", name(key.cache_key, "token"), name(key.cache_key, "lease")};
            auto op = commands.async_execute(std::move(check), asio::as_tuple(asio::use_awaitable));
            auto [ec, answer] = co_await std::move(op);
            if (ec) {
                co_return wait_result(ec, std::nullopt);
            }
            const auto& items = answer.elements();
            if (items.size() != 2) {
                co_return wait_result(errc::unexpected_reply, std::nullopt);
            }
            if (!items[0].is_nil()) {
                auto token = decode(key, items[0]);
                if (token && !(token->access_token == replaced_token)) {
                    co_return wait_result(error_code(), std::move(token));
                }
            }
            if (items[1].is_nil() || steady_clock::now() >= deadline) {
                co_return wait_result(error_code(), std::nullopt);
            }

            const auto wake_at = std::min(deadline, steady_clock::now() + settings.poll_interval);
            (void)co_await signal.wait_until(wake_at);
            const auto cancel_state = co_await asio::this_coro::cancellation_state;
            if (cancel_state.cancelled() != asio::cancellation_type::none) {
                co_return wait_result(asio::error::operation_aborted, std::nullopt);
            }
        }
    }

    asio::awaitable<result<bool>> invalidate(token_key key, secret_string token_value)
    {
        const std::string entry_key = name(key.cache_key, "token");
        auto get_op =
            commands.async_execute(command{"GET", entry_key}, asio::as_tuple(asio::use_awaitable));
        auto [ec, answer] = co_await std::move(get_op);
        if (ec || answer.type() != reply::kind::string) {
            co_return result<bool>(ec, false);
        }
        stored_token current;
        if (open_token_entry(answer.text(), key.client_secret, key.cache_key, current) ||
            !(current.access_token == token_value)) {
            co_return result<bool>(error_code(), false);
        }

        // Deletes only these exact bytes, so a newer entry written meanwhile stays.
        auto del_op = detail::run_script(commands, detail::compare_and_delete_script(), {entry_key},
                                         {answer.text(), std::string()});
        auto [del_ec, deleted] = co_await std::move(del_op);
        co_return result<bool>(del_ec, !del_ec && deleted.integer() == 1);
    }
};

redis_token_store::redis_token_store(executor_type ex, config cfg, store_settings settings,
                                     logger log)
    : impl_(std::make_shared<impl>(std::move(ex), std::move(cfg), std::move(settings),
                                   std::move(log)))
{}

redis_token_store::~redis_token_store()
{
    close();
}

void redis_token_store::close()
{
    impl_->commands.close();
    asio::dispatch(impl_->strand, [sub = impl_->sub] { sub->close(); });
}

redis_token_store::executor_type redis_token_store::get_executor() const noexcept
{
    return impl_->executor;
}

connection& redis_token_store::commands() noexcept
{
    return impl_->commands;
}

store_stats redis_token_store::stats() const noexcept
{
    store_stats out;
    out.hits = impl_->hits.load(std::memory_order_relaxed);
    out.misses = impl_->misses.load(std::memory_order_relaxed);
    out.unreadable_entries = impl_->unreadable_entries.load(std::memory_order_relaxed);
    out.puts = impl_->puts.load(std::memory_order_relaxed);
    out.leases_taken = impl_->leases_taken.load(std::memory_order_relaxed);
    out.leases_denied = impl_->leases_denied.load(std::memory_order_relaxed);
    out.wait_checks = impl_->wait_checks.load(std::memory_order_relaxed);
    out.notifications = impl_->sub->notifications();
    return out;
}

std::string redis_token_store::entry_key(std::string_view cache_key) const
{
    return impl_->name(cache_key, "token");
}

std::string redis_token_store::lease_key(std::string_view cache_key) const
{
    return impl_->name(cache_key, "lease");
}

std::string redis_token_store::channel(std::string_view cache_key) const
{
    return impl_->name(cache_key, "ready");
}

void redis_token_store::do_get(token_key key,
                               stampede::detail::store_handler<std::optional<stored_token>> handler)
{
    stampede::detail::spawn_operation(impl_, impl_->strand, impl_->get(std::move(key)),
                                      std::move(handler), impl_->executor);
}

void redis_token_store::do_put(token_key key, stored_token value,
                               stampede::detail::store_handler<> handler)
{
    stampede::detail::spawn_operation(impl_, impl_->strand,
                                      impl_->put(std::move(key), std::move(value)),
                                      std::move(handler), impl_->executor);
}

void redis_token_store::do_try_lease(
    std::string cache_key, std::chrono::milliseconds ttl,
    stampede::detail::store_handler<std::optional<token_lease>> handler)
{
    stampede::detail::spawn_operation(impl_, impl_->strand,
                                      impl_->try_lease(std::move(cache_key), ttl),
                                      std::move(handler), impl_->executor);
}

void redis_token_store::do_release(token_lease lease, stampede::detail::store_handler<bool> handler)
{
    stampede::detail::spawn_operation(impl_, impl_->strand, impl_->release(std::move(lease)),
                                      std::move(handler), impl_->executor);
}

void redis_token_store::do_wait(
    token_key key, secret_string replaced_token, std::chrono::milliseconds max_wait,
    stampede::detail::store_handler<std::optional<stored_token>> handler)
{
    stampede::detail::spawn_operation(
        impl_, impl_->strand, impl_->wait(std::move(key), std::move(replaced_token), max_wait),
        std::move(handler), impl_->executor);
}

void redis_token_store::do_invalidate(token_key key, secret_string token_value,
                                      stampede::detail::store_handler<bool> handler)
{
    stampede::detail::spawn_operation(impl_, impl_->strand,
                                      impl_->invalidate(std::move(key), std::move(token_value)),
                                      std::move(handler), impl_->executor);
}

} // namespace stampede::redis
