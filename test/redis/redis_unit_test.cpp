// Tests of the Redis URL parser, the encrypted entry format, the cache key and the
// in-memory token store. No server is needed.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE redis_unit
#include <boost/test/unit_test.hpp>

#include "reply_reader.hpp"
#include "run_coroutine.hpp"

#include <stampede/redis/command.hpp>
#include <stampede/redis/config.hpp>
#include <stampede/redis/entry_codec.hpp>
#include <stampede/redis/error.hpp>
#include <stampede/token_store.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <sstream>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace redis = stampede::redis;
using namespace std::chrono_literals;
using boost::system::error_code;
using std::chrono::system_clock;

namespace {

stampede::stored_token sample_token(std::string value = "token-value-0123456789")
{
    stampede::stored_token token;
    token.access_token = stampede::secret_string(value);
    token.token_type = "Bearer";
    token.scope = "guests:read";
    token.issued_at = std::chrono::time_point_cast<std::chrono::milliseconds>(system_clock::now());
    token.expires_at = token.issued_at + 1h;
    return token;
}

std::string to_string(const redis::config& cfg)
{
    std::ostringstream out;
    out << cfg;
    return out.str();
}

} // namespace

// URL parsing
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(url_plain_host_takes_defaults)
{
    redis::config cfg;
    stampede::diagnostics diag;
    BOOST_TEST(!redis::parse_url("redis://localhost", cfg, diag));
    BOOST_TEST(cfg.host == "localhost");
    BOOST_TEST(cfg.port == 6379);
    BOOST_TEST(!cfg.use_tls);
    BOOST_TEST(cfg.username.empty());
    BOOST_TEST(cfg.password.empty());
    BOOST_TEST(cfg.database == 0);
}

BOOST_AUTO_TEST_CASE(url_full_form_with_percent_encoding)
{
    redis::config cfg;
    stampede::diagnostics diag;
    BOOST_TEST(
        !redis::parse_url("rediss://app%2Duser:p%40ss%3Aword@cache.local:6380/3", cfg, diag));
    BOOST_TEST(cfg.use_tls);
    BOOST_TEST(cfg.host == "cache.local");
    BOOST_TEST(cfg.port == 6380);
    BOOST_TEST(cfg.username == "app-user");
    BOOST_TEST(cfg.password.reveal() == "p@ss:word");
    BOOST_TEST(cfg.database == 3);
}

BOOST_AUTO_TEST_CASE(url_password_only_and_ipv6)
{
    redis::config cfg;
    stampede::diagnostics diag;
    BOOST_TEST(!redis::parse_url("redis://:secret-pw@[::1]:7000/", cfg, diag));
    BOOST_TEST(cfg.host == "::1");
    BOOST_TEST(cfg.port == 7000);
    BOOST_TEST(cfg.username.empty());
    BOOST_TEST(cfg.password.reveal() == "secret-pw");
    BOOST_TEST(cfg.database == 0);
    BOOST_TEST(to_string(cfg) == "redis://:[redacted]@[::1]:7000/0");
}

BOOST_AUTO_TEST_CASE(url_invalid_forms_are_rejected_without_password)
{
    const std::vector<std::pair<std::string, std::string>> cases{
        {"http://user:hunter2pw@host", "scheme"},
        {"redis://user:hunter2pw@host:0", "port"},
        {"redis://user:hunter2pw@host:99999", "port"},
        {"redis://user:hunter2pw@host/abc", "database index"},
        {"redis://user:hunter2pw@host/1/2", "database index"},
        {"redis://user:hunter2pw@host/-1", "database index"},
        {"redis://user:hunter2pw@host?db=1", "query"},
        {"redis://user:hunter2pw@host#x", "fragment"},
        {"redis://user@host", "no password"},
        {"redis:///0", "no host"},
        {"not a url hunter2pw", "not an absolute URL"},
        {"", "not an absolute URL"},
    };
    for (const auto& [url, expected] : cases) {
        BOOST_TEST_CONTEXT("url " << url)
        {
            redis::config cfg;
            cfg.host = "unchanged";
            stampede::diagnostics diag;
            const error_code ec = redis::parse_url(url, cfg, diag);
            BOOST_TEST(ec == redis::errc::invalid_url);
            BOOST_TEST(diag.client_message().find(expected) != std::string::npos,
                       diag.client_message());
            BOOST_TEST(diag.client_message().find("hunter2pw") == std::string::npos);
            BOOST_TEST(cfg.host == "unchanged");
        }
    }
}

BOOST_AUTO_TEST_CASE(config_output_redacts_password)
{
    redis::config cfg;
    stampede::diagnostics diag;
    BOOST_TEST(!redis::parse_url("rediss://alice:hunter2pw@127.0.0.1:6390/2", cfg, diag));
    const std::string text = to_string(cfg);
    BOOST_TEST(text == "rediss://alice:[redacted]@127.0.0.1:6390/2");
}

BOOST_AUTO_TEST_CASE(config_validation_names_field)
{
    redis::config cfg;
    cfg.command_timeout = 0ms;
    BOOST_TEST(redis::validate(cfg).find("command_timeout") != std::string::npos);

    cfg = redis::config{};
    cfg.username = "alice";
    BOOST_TEST(redis::validate(cfg).find("password is empty") != std::string::npos);

    cfg = redis::config{};
    cfg.max_reply_bytes = 0;
    BOOST_TEST(redis::validate(cfg).find("max_reply_bytes") != std::string::npos);

    BOOST_TEST(redis::validate(redis::config{}).empty());
}

// Commands and replies
// -----------------------------------------------------------------------------------------

// Reply reader
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(reply_reader_parses_pipelined_replies)
{
    // Together the replies exceed the limit, but each one fits.
    redis::detail::reply_reader reader(32);
    std::string bytes;
    for (int i = 0; i < 10; ++i) {
        bytes += "*2\r\n$3\r\nfoo\r\n:7\r\n"; // 21 bytes
    }
    BOOST_TEST(!reader.feed(bytes));

    int parsed = 0;
    for (;;) {
        redis::reply out;
        bool complete = false;
        const error_code ec = reader.next(out, complete);
        BOOST_TEST_REQUIRE(!ec);
        if (!complete) {
            break;
        }
        ++parsed;
        BOOST_TEST(out.elements().size() == 2u);
        BOOST_TEST(out.elements()[0].text() == "foo");
        BOOST_TEST(out.elements()[1].integer() == 7);
    }
    BOOST_TEST(parsed == 10);
    BOOST_TEST(reader.buffered_bytes() == 0u);
}

BOOST_AUTO_TEST_CASE(reply_reader_limit_is_inclusive)
{
    const std::string reply = "$5\r\nhello\r\n"; // 11 bytes
    redis::detail::reply_reader at_limit(11);
    BOOST_TEST(!at_limit.feed(reply));
    redis::reply out;
    bool complete = false;
    BOOST_TEST(!at_limit.next(out, complete));
    BOOST_TEST(complete);
    BOOST_TEST(out.text() == "hello");

    redis::detail::reply_reader below(10);
    BOOST_TEST(!below.feed(reply));
    BOOST_TEST(below.next(out, complete) == redis::errc::reply_too_large);
    BOOST_TEST(!complete);
}

BOOST_AUTO_TEST_CASE(reply_reader_bounds_oversized_bulk)
{
    constexpr std::size_t limit = 4096;
    constexpr std::size_t chunk = 1024;
    redis::detail::reply_reader reader(limit);
    BOOST_TEST(!reader.feed("$2147483000\r\n"));

    // Feeds chunks as a socket would deliver them, each followed by next().
    const std::string filler(chunk, 'x');
    error_code ec;
    int chunks = 0;
    while (!ec && chunks < 1000) {
        BOOST_TEST_REQUIRE(!reader.feed(filler));
        ++chunks;
        BOOST_TEST(reader.buffered_bytes() <= limit + chunk);
        redis::reply out;
        bool complete = false;
        ec = reader.next(out, complete);
        BOOST_TEST(!complete);
    }
    BOOST_TEST(ec == redis::errc::reply_too_large);
    BOOST_TEST(chunks == 4); // 13 + 4 * 1024 bytes is the first count above 4096

    // The reader stays failed and buffers nothing more.
    BOOST_TEST(reader.feed(filler) == redis::errc::reply_too_large);
    BOOST_TEST(reader.buffered_bytes() <= limit + chunk);
}

BOOST_AUTO_TEST_CASE(reply_reader_rejects_huge_array_header)
{
    redis::detail::reply_reader reader(1024 * 1024);
    BOOST_TEST(!reader.feed("*2147483647\r\n"));
    redis::reply out;
    bool complete = false;
    BOOST_TEST(reader.next(out, complete) == redis::errc::reply_too_large);
}

BOOST_AUTO_TEST_CASE(reply_reader_counts_nested_array_headers)
{
    // Each header alone announces fewer than limit / 3 = 341 elements, but an element
    // takes at least 3 bytes, so 200 + 200 elements cannot fit in 1024 bytes.
    redis::detail::reply_reader reader(1024);
    BOOST_TEST(!reader.feed("*2\r\n*200\r\n"));
    redis::reply out;
    bool complete = false;
    BOOST_TEST(!reader.next(out, complete));
    BOOST_TEST(!complete);
    std::string first_elements;
    for (int i = 0; i < 200; ++i) {
        first_elements += ":1\r\n";
    }
    BOOST_TEST(!reader.feed(first_elements));
    BOOST_TEST(!reader.next(out, complete));
    BOOST_TEST(!complete);
    BOOST_TEST(!reader.feed("*200\r\n"));
    BOOST_TEST(reader.next(out, complete) == redis::errc::reply_too_large);
}

BOOST_AUTO_TEST_CASE(reply_reader_invalid_bytes_are_protocol_error)
{
    redis::detail::reply_reader reader(1024);
    BOOST_TEST(!reader.feed("?what\r\n"));
    redis::reply out;
    bool complete = false;
    BOOST_TEST(reader.next(out, complete) == redis::errc::protocol_error);
}

BOOST_AUTO_TEST_CASE(command_encodes_binary_arguments)
{
    redis::command cmd{"SET", std::string_view("k\0ey", 4)};
    cmd.arg(std::int64_t{42});
    BOOST_TEST(cmd.encode() == std::string("*3\r\n$3\r\nSET\r\n$4\r\nk\0ey\r\n$2\r\n42\r\n", 31));
}

BOOST_AUTO_TEST_CASE(command_output_hides_arguments)
{
    redis::command cmd{"AUTH", "alice", "hunter2pw"};
    std::ostringstream out;
    out << cmd;
    BOOST_TEST(out.str() == "AUTH (2 arguments)");
}

// Entry format
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(entry_round_trip)
{
    const stampede::secret_string secret("client-secret");
    const auto token = sample_token();
    const std::string entry = redis::seal_token_entry(token, secret, "v1:key");

    stampede::stored_token opened;
    BOOST_TEST(!redis::open_token_entry(entry, secret, "v1:key", opened));
    BOOST_TEST(opened == token);
}

BOOST_AUTO_TEST_CASE(entry_does_not_contain_token)
{
    const stampede::secret_string secret("client-secret");
    const auto token = sample_token("plain-token-text-that-must-not-appear");
    const std::string entry = redis::seal_token_entry(token, secret, "v1:key");
    BOOST_TEST(entry.find("plain-token-text") == std::string::npos);
    BOOST_TEST(entry.find("guests:read") == std::string::npos);
    BOOST_TEST(entry.find("client-secret") == std::string::npos);
    BOOST_TEST(static_cast<unsigned char>(entry[0]) == redis::token_entry_version);
}

BOOST_AUTO_TEST_CASE(entry_is_different_each_time)
{
    const stampede::secret_string secret("client-secret");
    const auto token = sample_token();
    BOOST_TEST(redis::seal_token_entry(token, secret, "v1:key") !=
               redis::seal_token_entry(token, secret, "v1:key"));
}

BOOST_AUTO_TEST_CASE(entry_with_other_secret_fails_authentication)
{
    const std::string entry =
        redis::seal_token_entry(sample_token(), stampede::secret_string("old-secret"), "v1:key");
    stampede::stored_token opened;
    opened.token_type = "untouched";
    const error_code ec =
        redis::open_token_entry(entry, stampede::secret_string("new-secret"), "v1:key", opened);
    BOOST_TEST(ec == redis::errc::entry_authentication_failed);
    BOOST_TEST(opened.token_type == "untouched");
}

BOOST_AUTO_TEST_CASE(entry_under_other_cache_key_fails_authentication)
{
    const stampede::secret_string secret("client-secret");
    const std::string entry = redis::seal_token_entry(sample_token(), secret, "v1:key-a");
    stampede::stored_token opened;
    BOOST_TEST(redis::open_token_entry(entry, secret, "v1:key-b", opened) ==
               redis::errc::entry_authentication_failed);
}

BOOST_AUTO_TEST_CASE(entry_tampering_any_byte_fails)
{
    const stampede::secret_string secret("client-secret");
    const std::string entry = redis::seal_token_entry(sample_token(), secret, "v1:key");
    // Byte 0 is the version, checked before authentication; every later byte is
    // covered by the tag.
    for (std::size_t i = 1; i < entry.size(); ++i) {
        std::string tampered = entry;
        tampered[i] = static_cast<char>(tampered[i] ^ 0x01);
        stampede::stored_token opened;
        BOOST_TEST_CONTEXT("flipped byte " << i)
        {
            BOOST_TEST(redis::open_token_entry(tampered, secret, "v1:key", opened) ==
                       redis::errc::entry_authentication_failed);
        }
    }
}

BOOST_AUTO_TEST_CASE(entry_version_and_length_are_checked)
{
    const stampede::secret_string secret("client-secret");
    std::string entry = redis::seal_token_entry(sample_token(), secret, "v1:key");
    stampede::stored_token opened;

    std::string other_version = entry;
    other_version[0] = 2;
    BOOST_TEST(redis::open_token_entry(other_version, secret, "v1:key", opened) ==
               redis::errc::unsupported_entry_version);
    BOOST_TEST(redis::open_token_entry("", secret, "v1:key", opened) ==
               redis::errc::malformed_entry);
    BOOST_TEST(redis::open_token_entry(entry.substr(0, 40), secret, "v1:key", opened) ==
               redis::errc::malformed_entry);
    BOOST_TEST(redis::open_token_entry(entry.substr(0, entry.size() - 1), secret, "v1:key",
                                       opened) == redis::errc::entry_authentication_failed);
}

// memory_token_store
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(memory_store_round_trip_and_lease)
{
    asio::io_context ctx;
    stampede::memory_token_store store(ctx.get_executor());
    const stampede::token_key key{"v1:memory", stampede::secret_string("s")};

    stampede::test::run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto missing = co_await store.async_get(key, asio::use_awaitable);
        BOOST_TEST(!missing.has_value());

        auto first = co_await store.async_try_lease(key.cache_key, 10s, asio::use_awaitable);
        auto second = co_await store.async_try_lease(key.cache_key, 10s, asio::use_awaitable);
        BOOST_TEST(first.has_value());
        BOOST_TEST(!second.has_value());

        co_await store.async_put(key, sample_token(), asio::use_awaitable);
        auto found = co_await store.async_get(key, asio::use_awaitable);
        BOOST_TEST(found.has_value());
        BOOST_TEST(found->access_token.reveal() == "token-value-0123456789");

        BOOST_TEST(co_await store.async_release(*first, asio::use_awaitable));
        BOOST_TEST(!(co_await store.async_release(*first, asio::use_awaitable)));
    });
}

BOOST_AUTO_TEST_CASE(memory_store_wait_sees_put)
{
    asio::io_context ctx;
    stampede::memory_token_store store(ctx.get_executor());
    const stampede::token_key key{"v1:memory-wait", stampede::secret_string("s")};

    stampede::test::run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto lease = co_await store.async_try_lease(key.cache_key, 60s, asio::use_awaitable);
        BOOST_TEST(lease.has_value());

        // The holder stores the token shortly after the wait starts.
        asio::co_spawn(
            ctx,
            [&]() -> asio::awaitable<void> {
                co_await stampede::test::sleep_for(20ms);
                co_await store.async_put(key, sample_token(), asio::use_awaitable);
            },
            asio::detached);

        auto waited = co_await store.async_wait(key, 60s, asio::use_awaitable);
        BOOST_TEST(waited.has_value());
    });
}

BOOST_AUTO_TEST_CASE(memory_store_wait_ends_when_lease_expires)
{
    asio::io_context ctx;
    stampede::memory_token_store store(ctx.get_executor());
    const stampede::token_key key{"v1:memory-expiry", stampede::secret_string("s")};

    stampede::test::run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto dead_holder = co_await store.async_try_lease(key.cache_key, 50ms, asio::use_awaitable);
        BOOST_TEST(dead_holder.has_value());

        const auto started = std::chrono::steady_clock::now();
        auto waited = co_await store.async_wait(key, 60s, asio::use_awaitable);
        BOOST_TEST(!waited.has_value());
        const auto waited_for = std::chrono::steady_clock::now() - started;
        BOOST_TEST(waited_for >= 40ms);

        auto replacement = co_await store.async_try_lease(key.cache_key, 10s, asio::use_awaitable);
        BOOST_TEST(replacement.has_value());
    });
}
