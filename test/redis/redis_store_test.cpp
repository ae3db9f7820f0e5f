// Tests of redis::redis_token_store against a real redis-server on loopback: encrypted
// entries with the token's lifetime as TTL, leases between processes (one store per
// process), waiting by pub/sub and by polling, and Redis going away.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE redis_store
#include <boost/test/unit_test.hpp>

#include "oversized_reply_server.hpp"
#include "redis_server.hpp"
#include "run_coroutine.hpp"

#include <stampede/redis/entry_codec.hpp>
#include <stampede/redis/error.hpp>
#include <stampede/redis/redis_token_store.hpp>
#include <stampede/token_cache_key.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <optional>
#include <string>

namespace asio = boost::asio;
namespace redis = stampede::redis;
using namespace std::chrono_literals;
using boost::system::error_code;
using stampede::stored_token;
using stampede::token_key;
using stampede::test::oversized_reply_server;
using stampede::test::redis_server;
using stampede::test::run_coroutine;
using stampede::test::sleep_for;
using std::chrono::system_clock;

namespace {

constexpr std::string_view token_text = "access-token-value-7f3a9c";

stored_token make_token(std::chrono::milliseconds lifetime, std::string_view value = token_text)
{
    stored_token token;
    token.access_token = stampede::secret_string(value);
    token.token_type = "Bearer";
    token.scope = "guests:read";
    token.issued_at = std::chrono::time_point_cast<std::chrono::milliseconds>(system_clock::now());
    token.expires_at = token.issued_at + lifetime;
    return token;
}

token_key make_key(std::string secret = "client-secret")
{
    stampede::token_source_settings settings;
    settings.token_url = "https://127.0.0.1/oauth/token";
    settings.client_id = "client-a";
    return token_key{stampede::token_cache_key(settings), stampede::secret_string(secret)};
}

redis::store_settings settings_with_poll(std::chrono::milliseconds poll)
{
    redis::store_settings settings;
    settings.poll_interval = poll;
    return settings;
}

// Runs a raw command on the store's own connection. The command is built by the caller
// as a named local: GCC 12 mishandles class temporaries inside a co_await expression.
asio::awaitable<std::tuple<error_code, redis::reply>> raw(redis::redis_token_store& store,
                                                          redis::command cmd)
{
    auto op = store.commands().async_execute(std::move(cmd), asio::as_tuple(asio::use_awaitable));
    co_return co_await std::move(op);
}

// The store operations, each bound to a named local before it is awaited.
asio::awaitable<std::tuple<error_code, std::optional<stored_token>>>
get(stampede::token_store& store, token_key key)
{
    auto op = store.async_get(std::move(key), asio::as_tuple(asio::use_awaitable));
    co_return co_await std::move(op);
}

asio::awaitable<error_code> put(stampede::token_store& store, token_key key, stored_token token)
{
    auto op =
        store.async_put(std::move(key), std::move(token), asio::as_tuple(asio::use_awaitable));
    auto [ec] = co_await std::move(op);
    co_return ec;
}

asio::awaitable<std::optional<stampede::token_lease>>
try_lease(stampede::token_store& store, std::string cache_key, std::chrono::milliseconds ttl)
{
    auto op = store.async_try_lease(std::move(cache_key), ttl, asio::use_awaitable);
    co_return co_await std::move(op);
}

asio::awaitable<bool> release(stampede::token_store& store, stampede::token_lease lease)
{
    auto op = store.async_release(std::move(lease), asio::use_awaitable);
    co_return co_await std::move(op);
}

asio::awaitable<std::tuple<error_code, std::optional<stored_token>>>
wait(stampede::token_store& store, token_key key, std::chrono::milliseconds max_wait)
{
    auto op = store.async_wait(std::move(key), max_wait, asio::as_tuple(asio::use_awaitable));
    co_return co_await std::move(op);
}

} // namespace

BOOST_AUTO_TEST_CASE(store_round_trip)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store store(ctx.get_executor(), server.config());
    const token_key key = make_key();
    const stored_token token = make_token(1h);

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto [miss_ec, miss] = co_await get(store, key);
        BOOST_TEST(!miss_ec);
        BOOST_TEST(!miss.has_value());

        BOOST_TEST(!(co_await put(store, key, token)));
        auto [hit_ec, hit] = co_await get(store, key);
        BOOST_TEST(!hit_ec);
        BOOST_TEST(hit.has_value());
        if (hit) {
            BOOST_TEST(*hit == token);
        }
    });
    BOOST_TEST(store.stats().hits == 1u);
    BOOST_TEST(store.stats().misses == 1u);
    BOOST_TEST(store.stats().puts == 1u);
    store.close();
}

BOOST_AUTO_TEST_CASE(store_ttl_equals_remaining_lifetime)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store store(ctx.get_executor(), server.config());
    const token_key key = make_key();
    const stored_token token = make_token(120s);

    std::int64_t pttl = 0;
    const auto before = system_clock::now();
    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        BOOST_TEST(!(co_await put(store, key, token)));
        redis::command query{"PTTL", store.entry_key(key.cache_key)};
        auto [ec, answer] = co_await raw(store, std::move(query));
        BOOST_TEST(!ec);
        pttl = answer.integer();
    });
    const auto after = system_clock::now();

    // The TTL was set between `before` and `after` to the lifetime left at that moment,
    // and read before `after`.
    using std::chrono::duration_cast;
    using std::chrono::milliseconds;
    const auto longest = duration_cast<milliseconds>(token.expires_at - before).count();
    const auto shortest = duration_cast<milliseconds>(token.expires_at - after).count();
    BOOST_TEST(pttl <= longest);
    BOOST_TEST(pttl >= shortest - 1);
    store.close();
}

BOOST_AUTO_TEST_CASE(store_bytes_do_not_contain_token)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store store(ctx.get_executor(), server.config());
    const token_key key = make_key("the-client-secret");

    std::string stored;
    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        stored_token fresh_token = make_token(1h);
        BOOST_TEST(!(co_await put(store, key, std::move(fresh_token))));
        redis::command read{"GET", store.entry_key(key.cache_key)};
        auto [ec, answer] = co_await raw(store, std::move(read));
        BOOST_TEST(!ec);
        stored = answer.text();
    });
    BOOST_TEST(!stored.empty());
    BOOST_TEST(stored.find(token_text) == std::string::npos);
    BOOST_TEST(stored.find("guests:read") == std::string::npos);
    BOOST_TEST(stored.find("the-client-secret") == std::string::npos);
    BOOST_TEST(stored.find("Bearer") == std::string::npos);
    store.close();
}

BOOST_AUTO_TEST_CASE(store_other_secret_cannot_decrypt)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store writer(ctx.get_executor(), server.config());
    redis::redis_token_store reader(ctx.get_executor(), server.config());

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        token_key old_secret_key = make_key("old-secret");
        stored_token written = make_token(1h);
        BOOST_TEST(!(co_await put(writer, std::move(old_secret_key), std::move(written))));

        // A process with a rotated secret gets a miss, not an error and not the token.
        token_key new_secret_key = make_key("new-secret");
        auto [ec, found] = co_await get(reader, std::move(new_secret_key));
        BOOST_TEST(!ec);
        BOOST_TEST(!found.has_value());

        // The raw entry fails authentication with the new secret.
        redis::command read{"GET", writer.entry_key(make_key().cache_key)};
        auto [raw_ec, answer] = co_await raw(writer, std::move(read));
        stored_token opened;
        BOOST_TEST(redis::open_token_entry(answer.text(), stampede::secret_string("new-secret"),
                                           make_key().cache_key,
                                           opened) == redis::errc::entry_authentication_failed);
    });
    BOOST_TEST(reader.stats().unreadable_entries == 1u);
    BOOST_TEST(reader.stats().hits == 0u);
    writer.close();
    reader.close();
}

BOOST_AUTO_TEST_CASE(store_lease_exclusive_between_processes)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store a(ctx.get_executor(), server.config());
    redis::redis_token_store b(ctx.get_executor(), server.config());
    const std::string cache_key = make_key().cache_key;

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto a_lease = co_await try_lease(a, cache_key, 60s);
        auto b_lease = co_await try_lease(b, cache_key, 60s);
        BOOST_TEST(a_lease.has_value());
        BOOST_TEST(!b_lease.has_value());
        if (!a_lease) {
            co_return;
        }

        // A forged lease with the right key but another owner releases nothing.
        stampede::token_lease forged{cache_key, "forged-owner"};
        BOOST_TEST(!(co_await release(b, std::move(forged))));
        BOOST_TEST(co_await release(a, *a_lease));
        auto b_retry = co_await try_lease(b, cache_key, 60s);
        BOOST_TEST(b_retry.has_value());
    });
    BOOST_TEST(a.stats().leases_taken == 1u);
    BOOST_TEST(b.stats().leases_denied == 1u);
    BOOST_TEST(b.stats().leases_taken == 1u);
    a.close();
    b.close();
}

BOOST_AUTO_TEST_CASE(store_dead_lease_holder_is_replaced)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store dead(ctx.get_executor(), server.config());
    redis::redis_token_store waiter(ctx.get_executor(), server.config(), settings_with_poll(50ms));
    const token_key key = make_key();

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        // The holder takes a short lease and dies without storing or releasing.
        auto dead_lease = co_await try_lease(dead, key.cache_key, 300ms);
        BOOST_TEST(dead_lease.has_value());
        dead.close();

        auto early = co_await try_lease(waiter, key.cache_key, 60s);
        BOOST_TEST(!early.has_value());

        // The wait ends without a token once the lease expires.
        const auto started = std::chrono::steady_clock::now();
        auto [ec, token] = co_await wait(waiter, key, 60s);
        const auto waited = std::chrono::steady_clock::now() - started;
        BOOST_TEST(!ec);
        BOOST_TEST(!token.has_value());
        BOOST_TEST(waited >= 200ms);

        auto replacement = co_await try_lease(waiter, key.cache_key, 60s);
        BOOST_TEST(replacement.has_value());
    });
    BOOST_TEST(waiter.stats().wait_checks >= 2u);
    waiter.close();
}

BOOST_AUTO_TEST_CASE(store_wait_is_woken_by_notification)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store holder(ctx.get_executor(), server.config());
    // Polling every minute: a wait that ends sooner was woken by pub/sub.
    redis::redis_token_store waiter(ctx.get_executor(), server.config(),
                                    settings_with_poll(std::chrono::milliseconds(60s)));
    const token_key key = make_key();

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto lease = co_await try_lease(holder, key.cache_key, 60s);
        BOOST_TEST(lease.has_value());

        asio::co_spawn(
            ctx,
            [&]() -> asio::awaitable<void> {
                co_await sleep_for(200ms);
                stored_token fresh_token = make_token(1h);
                co_await put(holder, key, std::move(fresh_token));
            },
            asio::detached);

        auto [ec, token] = co_await wait(waiter, key, std::chrono::milliseconds(120s));
        BOOST_TEST(!ec);
        BOOST_TEST(token.has_value());
        if (token) {
            BOOST_TEST(token->access_token.reveal() == token_text);
        }
    });
    // One check at the start, one when the subscription is confirmed, one on the message.
    BOOST_TEST(waiter.stats().wait_checks <= 3u);
    BOOST_TEST(waiter.stats().notifications >= 1u);
    holder.close();
    waiter.close();
}

BOOST_AUTO_TEST_CASE(store_wait_is_woken_by_release)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store holder(ctx.get_executor(), server.config());
    redis::redis_token_store waiter(ctx.get_executor(), server.config(),
                                    settings_with_poll(std::chrono::milliseconds(60s)));
    const token_key key = make_key();

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto lease = co_await try_lease(holder, key.cache_key, 60s);
        BOOST_TEST(lease.has_value());
        if (!lease) {
            co_return;
        }

        // The holder's fetch failed: it releases the lease without storing a token.
        asio::co_spawn(
            ctx,
            [&]() -> asio::awaitable<void> {
                co_await sleep_for(200ms);
                co_await release(holder, *lease);
            },
            asio::detached);

        auto [ec, token] = co_await wait(waiter, key, std::chrono::milliseconds(120s));
        BOOST_TEST(!ec);
        BOOST_TEST(!token.has_value());
    });
    BOOST_TEST(waiter.stats().wait_checks <= 3u);
    BOOST_TEST(waiter.stats().notifications >= 1u);
    holder.close();
    waiter.close();
}

BOOST_AUTO_TEST_CASE(store_wait_polls_without_notification)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store holder(ctx.get_executor(), server.config());
    redis::redis_token_store waiter(ctx.get_executor(), server.config(), settings_with_poll(50ms));
    const token_key key = make_key();

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto lease = co_await try_lease(holder, key.cache_key, 60s);
        BOOST_TEST(lease.has_value());

        // A writer that stores the entry without publishing, as when a notification is
        // lost: only polling finds it.
        asio::co_spawn(
            ctx,
            [&]() -> asio::awaitable<void> {
                co_await sleep_for(300ms);
                const std::string entry =
                    redis::seal_token_entry(make_token(1h), key.client_secret, key.cache_key);
                redis::command set{"SET", holder.entry_key(key.cache_key), entry, "PX", "60000"};
                co_await raw(holder, std::move(set));
            },
            asio::detached);

        auto [ec, token] = co_await wait(waiter, key, std::chrono::milliseconds(60s));
        BOOST_TEST(!ec);
        BOOST_TEST(token.has_value());
    });
    BOOST_TEST(waiter.stats().wait_checks >= 3u);
    BOOST_TEST(waiter.stats().notifications == 0u);
    holder.close();
    waiter.close();
}

BOOST_AUTO_TEST_CASE(store_wait_can_be_cancelled)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store holder(ctx.get_executor(), server.config());
    redis::redis_token_store waiter(ctx.get_executor(), server.config(),
                                    settings_with_poll(std::chrono::milliseconds(60s)));
    const token_key key = make_key();
    asio::cancellation_signal signal;

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto lease = co_await try_lease(holder, key.cache_key, 60s);
        BOOST_TEST(lease.has_value());

        asio::co_spawn(
            ctx,
            [&]() -> asio::awaitable<void> {
                co_await sleep_for(200ms);
                signal.emit(asio::cancellation_type::terminal);
            },
            asio::detached);

        auto op = waiter.async_wait(
            key, std::chrono::milliseconds(120s),
            asio::bind_cancellation_slot(signal.slot(), asio::as_tuple(asio::use_awaitable)));
        auto [ec, token] = co_await std::move(op);
        BOOST_TEST(ec == asio::error::operation_aborted);
        BOOST_TEST(!token.has_value());
    });
    holder.close();
    waiter.close();
}

// A fake Redis on loopback that replies to PING, reports the lease as held on MGET, and
// closes any connection that sends SUBSCRIBE, as a proxy without pub/sub support may.
// It counts the SUBSCRIBE connections it closed.
class subscribe_closing_server {
public:
    explicit subscribe_closing_server(asio::io_context& ctx)
        : acceptor_(ctx, {asio::ip::make_address("127.0.0.1"), 0})
    {
        asio::co_spawn(ctx, accept_loop(), asio::detached);
    }

    redis::config config() const
    {
        redis::config cfg;
        cfg.port = acceptor_.local_endpoint().port();
        return cfg;
    }

    int closed_subscribers() const { return closed_subscribers_; }

    void close() { acceptor_.close(); }

private:
    asio::awaitable<void> accept_loop()
    {
        for (;;) {
            auto [ec, socket] =
                co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
            if (ec) {
                co_return;
            }
            asio::co_spawn(acceptor_.get_executor(), serve(std::move(socket)), asio::detached);
        }
    }

    asio::awaitable<void> serve(asio::ip::tcp::socket socket)
    {
        std::string received;
        std::array<char, 4096> buffer{};
        for (;;) {
            auto [ec, n] = co_await socket.async_read_some(asio::buffer(buffer),
                                                           asio::as_tuple(asio::use_awaitable));
            if (ec) {
                co_return;
            }
            received.assign(buffer.data(), n);
            std::string answer;
            if (received.find("SUBSCRIBE") != std::string::npos) {
                ++closed_subscribers_;
                co_return; // the socket closes here
            }
            if (received.find("PING") != std::string::npos) {
                answer = "+PONG\r\n";
            } else if (received.find("MGET") != std::string::npos) {
                answer = "*2\r\n$-1\r\n$5\r\nother\r\n";
            } else {
                answer = "-ERR unexpected command\r\n";
            }
            auto [write_ec, written] = co_await asio::async_write(
                socket, asio::buffer(answer), asio::as_tuple(asio::use_awaitable));
            if (write_ec) {
                co_return;
            }
        }
    }

    asio::ip::tcp::acceptor acceptor_;
    int closed_subscribers_ = 0;
};

BOOST_AUTO_TEST_CASE(store_subscriber_backs_off_after_closed_subscribe)
{
    asio::io_context ctx;
    subscribe_closing_server server(ctx);
    redis::redis_token_store waiter(ctx.get_executor(), server.config(), settings_with_poll(50ms));
    const token_key key = make_key();

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        // The lease stays held, so the wait lasts its whole second while the subscriber
        // connection is closed on every SUBSCRIBE.
        auto [ec, token] = co_await wait(waiter, key, 1000ms);
        BOOST_TEST(!ec);
        BOOST_TEST(!token.has_value());
        waiter.close();
        server.close();
    });

    // With the reconnect backoff (delays of at least min_delay, 50 ms, growing from
    // 100 ms) one second allows only a few attempts. Without it the subscriber reconnects
    // as fast as the loop runs, thousands of times a second.
    BOOST_TEST(server.closed_subscribers() >= 1);
    BOOST_TEST(server.closed_subscribers() <= 20);
}

BOOST_AUTO_TEST_CASE(store_subscriber_rejects_oversized_replies)
{
    // The subscriber's reads have no timeout, so without a size limit it would wait for
    // the rest of a 2 GiB bulk forever, and buffer whatever the server sends.
    struct oversized_case {
        const char* header;
        std::size_t filler_bytes;
    };
    const std::size_t limit = redis::config().max_reply_bytes;
    const oversized_case cases[] = {{"$2147483000\r\n", limit + 64 * 1024},
                                    {"*2147483647\r\n", 0}};

    for (const oversized_case& c : cases) {
        BOOST_TEST_CONTEXT("reply header " << std::string_view(c.header, 11))
        {
            asio::io_context ctx;
            oversized_reply_server server(ctx, "SUBSCRIBE", c.header, c.filler_bytes);
            std::atomic<int> rejections_logged{0};
            stampede::logger log{stampede::log_level::debug,
                                 [&](stampede::log_level, std::string_view line) {
                                     if (line.find("max_reply_bytes") != std::string_view::npos) {
                                         ++rejections_logged;
                                     }
                                 }};
            redis::redis_token_store waiter(ctx.get_executor(), server.config(),
                                            settings_with_poll(50ms), log);
            const token_key key = make_key();

            run_coroutine(ctx, [&]() -> asio::awaitable<void> {
                // The lease stays held, so the wait lasts its whole second while the
                // subscriber receives the oversized reply after each SUBSCRIBE.
                auto [ec, token] = co_await wait(waiter, key, 1000ms);
                BOOST_TEST(!ec);
                BOOST_TEST(!token.has_value());
                waiter.close();
                server.close();
            });
            BOOST_TEST(server.rejected_replies() >= 1);
            BOOST_TEST(rejections_logged.load() >= 1);
        }
    }
}

BOOST_AUTO_TEST_CASE(store_invalidate_removes_only_that_token)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store store(ctx.get_executor(), server.config());
    const token_key key = make_key();

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        stored_token fresh_token = make_token(1h);
        BOOST_TEST(!(co_await put(store, key, std::move(fresh_token))));

        auto other = store.async_invalidate(key, stampede::secret_string("some-older-token"),
                                            asio::use_awaitable);
        BOOST_TEST(!(co_await std::move(other)));
        auto [still_ec, still] = co_await get(store, key);
        BOOST_TEST(still.has_value());

        auto same =
            store.async_invalidate(key, stampede::secret_string(token_text), asio::use_awaitable);
        BOOST_TEST(co_await std::move(same));
        auto [gone_ec, gone] = co_await get(store, key);
        BOOST_TEST(!gone.has_value());
    });
    store.close();
}

BOOST_AUTO_TEST_CASE(store_expired_token_is_not_stored)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store store(ctx.get_executor(), server.config());
    const token_key key = make_key();

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        stored_token fresh_token = make_token(-1s);
        BOOST_TEST(!(co_await put(store, key, std::move(fresh_token))));
        auto [ec, found] = co_await get(store, key);
        BOOST_TEST(!ec);
        BOOST_TEST(!found.has_value());
    });
    BOOST_TEST(store.stats().puts == 0u);
    store.close();
}

BOOST_AUTO_TEST_CASE(store_reports_redis_down_and_recovers)
{
    redis_server server;
    asio::io_context ctx;
    redis::redis_token_store store(ctx.get_executor(), server.config());
    const token_key key = make_key();

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        stored_token before_stop = make_token(1h);
        BOOST_TEST(!(co_await put(store, key, std::move(before_stop))));
        server.stop();

        auto [down_ec, down] = co_await get(store, key);
        BOOST_TEST(down_ec.failed());
        BOOST_TEST(!down.has_value());

        // The data is gone with the server (no persistence), but the store works again.
        server.start();
        bool recovered = false;
        for (int attempt = 0; attempt < 400 && !recovered; ++attempt) {
            auto [ec, found] = co_await get(store, key);
            recovered = !ec;
            if (!recovered) {
                co_await sleep_for(10ms);
            }
        }
        BOOST_TEST(recovered);
        stored_token after_restart = make_token(1h);
        BOOST_TEST(!(co_await put(store, key, std::move(after_restart))));
        auto [ec, found] = co_await get(store, key);
        BOOST_TEST(found.has_value());
    });
    store.close();
}

BOOST_AUTO_TEST_CASE(store_works_over_tls)
{
    redis_server server(redis_server::options{.tls = true});
    asio::io_context ctx;
    redis::redis_token_store holder(ctx.get_executor(), server.config());
    redis::redis_token_store waiter(ctx.get_executor(), server.config(),
                                    settings_with_poll(std::chrono::milliseconds(60s)));
    const token_key key = make_key();

    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto lease = co_await try_lease(holder, key.cache_key, 60s);
        BOOST_TEST(lease.has_value());
        asio::co_spawn(
            ctx,
            [&]() -> asio::awaitable<void> {
                co_await sleep_for(200ms);
                stored_token fresh_token = make_token(1h);
                co_await put(holder, key, std::move(fresh_token));
            },
            asio::detached);

        auto [ec, token] = co_await wait(waiter, key, std::chrono::milliseconds(120s));
        BOOST_TEST(!ec);
        BOOST_TEST(token.has_value());
    });
    BOOST_TEST(waiter.stats().notifications >= 1u);
    holder.close();
    waiter.close();
}
