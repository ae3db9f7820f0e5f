// token_source against the emulator over TLS on loopback: coalescing, refresh on a kept
// connection, retries, permanent errors, odd responses and certificate checks, each
// counted at the server.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE token_source_integration
#include <boost/test/unit_test.hpp>

#include "../support/emulator_fixture.hpp"
#include "../support/run_coroutine.hpp"

#include <stampede/error.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <set>
#include <thread>
#include <string>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using boost::system::error_code;
using stampede::test::run_coroutine;
using stampede::test::running_emulator;
using stampede::test::sleep_for;

namespace {

stampede::emulator::options with_faults(std::string token_faults,
                                        std::chrono::milliseconds lifetime = 3600s)
{
    stampede::emulator::options o;
    o.fault_script = std::move(token_faults);
    o.token_lifetime = lifetime;
    return o;
}

// Gets one token (or the error) through the callback form.
struct outcome {
    error_code ec;
    stampede::access_token token;
    stampede::diagnostics diag;
};

outcome fetch_one(asio::io_context& ctx, stampede::token_source& source)
{
    outcome out;
    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        auto [ec, token] = co_await source.async_token(out.diag, asio::as_tuple(asio::use_awaitable));
        out.ec = ec;
        out.token = token;
    });
    return out;
}

std::chrono::milliseconds remaining(const stampede::access_token& t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.expires_at() -
                                                                 std::chrono::steady_clock::now());
}

} // namespace

BOOST_AUTO_TEST_CASE(cold_start_ten_thousand_callers_one_request)
{
    running_emulator emu(with_faults("slow:100"));
    asio::io_context ctx;
    stampede::token_source source(ctx, emu.settings());
    constexpr int callers = 10000;
    int served = 0;
    std::set<std::string> tokens;
    for (int i = 0; i < callers; ++i) {
        asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
            auto token = co_await source.token();
            tokens.insert(std::string(token.value()));
            ++served;
        }, asio::detached);
    }
    while (served < callers) {
        BOOST_REQUIRE(ctx.run_one() > 0);
    }
    BOOST_TEST(tokens.size() == 1u);
    BOOST_TEST(emu.server().get_stats().token_requests == 1u);
    BOOST_TEST(emu.server().get_stats().tokens_issued == 1u);
}

BOOST_AUTO_TEST_CASE(refresh_reuses_the_connection)
{
    // 2-s tokens refresh ahead at about 0.9 s.
    running_emulator emu(with_faults("", 2000ms));
    asio::io_context ctx;
    stampede::token_source source(ctx, emu.settings());
    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        const std::string first((co_await source.token()).value());
        co_await sleep_for(1500ms);
        const std::string second((co_await source.token()).value());
        BOOST_TEST(first != second);
    });
    const auto stats = emu.server().get_stats();
    BOOST_TEST(stats.token_requests == 2u);
    BOOST_TEST(stats.connections_accepted == 1u);
    BOOST_TEST(source.stats().refreshes_ahead == 1u);
    BOOST_TEST(source.stats().waiters == 1u); // only the cold start waited
}

BOOST_AUTO_TEST_CASE(reconnects_after_server_closed_idle_connection)
{
    running_emulator emu;
    asio::io_context ctx;
    stampede::token_source source(ctx, emu.settings());
    auto first = fetch_one(ctx, source);
    BOOST_REQUIRE(!first.ec);

    // Wait until the server has really closed the kept connection.
    for (int i = 0; i < 200 && emu.server().get_stats().connections_open > 0; ++i) {
        emu.server().close_idle_connections();
        std::this_thread::sleep_for(10ms);
    }
    BOOST_REQUIRE(emu.server().get_stats().connections_open == 0u);

    source.invalidate(first.token);
    auto second = fetch_one(ctx, source);
    BOOST_TEST(!second.ec, second.ec.message());
    BOOST_TEST(emu.server().get_stats().connections_accepted == 2u);
    BOOST_TEST(source.stats().retries == 0u); // the caller never saw the closed socket
}

BOOST_AUTO_TEST_CASE(retry_after_seconds_is_honoured)
{
    running_emulator emu(with_faults("429-seconds:2"));
    asio::io_context ctx;
    stampede::token_source source(ctx, emu.settings());
    auto result = fetch_one(ctx, source);
    BOOST_TEST(!result.ec, result.ec.message());
    const auto stats = emu.server().get_stats();
    BOOST_REQUIRE(stats.token_request_times_ms.size() == 2u);
    BOOST_TEST(stats.token_request_times_ms[1] - stats.token_request_times_ms[0] >= 2000);
}

BOOST_AUTO_TEST_CASE(retry_after_date_is_honoured)
{
    running_emulator emu(with_faults("429-date:2"));
    asio::io_context ctx;
    stampede::token_source source(ctx, emu.settings());
    auto result = fetch_one(ctx, source);
    BOOST_TEST(!result.ec, result.ec.message());
    const auto stats = emu.server().get_stats();
    BOOST_REQUIRE(stats.token_request_times_ms.size() == 2u);
    // An HTTP-date has one-second resolution, so the wait is at least one second.
    BOOST_TEST(stats.token_request_times_ms[1] - stats.token_request_times_ms[0] >= 1000);
}

BOOST_AUTO_TEST_CASE(three_503_then_success_with_growing_gaps)
{
    running_emulator emu(with_faults("5xx-html:503*3"));
    asio::io_context ctx;
    auto s = emu.settings();
    // The jitter always draws its maximum, so each delay is the backoff ceiling:
    // 100 ms, 200 ms, 400 ms.
    s.backoff.initial_delay = 100ms;
    s.backoff.max_delay = 1000ms;
    s.backoff.random = [] { return std::numeric_limits<std::uint64_t>::max(); };
    stampede::token_source source(ctx, s);
    auto result = fetch_one(ctx, source);
    BOOST_TEST(!result.ec, result.ec.message());

    const auto stats = emu.server().get_stats();
    BOOST_TEST(stats.tokens_issued == 1u);
    BOOST_REQUIRE(stats.token_request_times_ms.size() == 4u);
    const auto& t = stats.token_request_times_ms;
    BOOST_TEST(t[1] - t[0] >= 100);
    BOOST_TEST(t[2] - t[1] >= 200);
    BOOST_TEST(t[3] - t[2] >= 400);
    BOOST_TEST(source.stats().retries == 3u);
}

BOOST_AUTO_TEST_CASE(wrong_secret_costs_one_request_for_a_hundred_callers)
{
    running_emulator emu;
    asio::io_context ctx;
    stampede::token_source source(ctx, emu.settings("wrong-secret"));
    int failed = 0;
    stampede::diagnostics diag;
    auto expect_invalid_client = [&](error_code ec, stampede::access_token) {
        BOOST_TEST(ec == stampede::oauth_errc::invalid_client);
        BOOST_TEST(ec == stampede::condition::permanent);
        ++failed;
    };
    for (int i = 0; i < 50; ++i) {
        source.async_token(expect_invalid_client);
    }
    while (failed < 50) {
        BOOST_REQUIRE(ctx.run_one() > 0);
    }
    // 50 more within the cool-down fail at once, without a request. The context stopped
    // when it ran out of work, so restart it.
    ctx.restart();
    source.async_token(diag, expect_invalid_client);
    for (int i = 0; i < 49; ++i) {
        source.async_token(expect_invalid_client);
    }
    while (failed < 100) {
        BOOST_REQUIRE_MESSAGE(ctx.run_one() > 0, "ran dry with " << failed << " failed callers");
    }
    BOOST_TEST(emu.server().get_stats().token_requests == 1u);
    BOOST_TEST(diag.server_error_code() == "invalid_client");
    BOOST_TEST(diag.http_status() == 400u);
    BOOST_TEST(diag.server_message().find("wrong-secret") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(oauth_rate_limit_error_is_retried)
{
    running_emulator emu(with_faults("oauth-error:rate_limit_exceeded,oauth-error:slow_down"));
    asio::io_context ctx;
    stampede::token_source source(ctx, emu.settings());
    auto result = fetch_one(ctx, source);
    BOOST_TEST(!result.ec, result.ec.message());
    BOOST_TEST(emu.server().get_stats().token_requests == 3u);
}

BOOST_AUTO_TEST_CASE(endless_503_stays_within_the_limiter)
{
    running_emulator emu(with_faults("5xx-html:503*"));
    asio::io_context ctx;
    auto s = emu.settings();
    s.rate_limit.capacity = 3;
    s.rate_limit.refill_interval = 1000ms;
    s.backoff.max_attempts = 100;
    s.backoff.max_elapsed = 4000ms;
    stampede::token_source source(ctx, s);

    const auto start = std::chrono::steady_clock::now();
    auto result = fetch_one(ctx, source);
    const auto elapsed = std::chrono::steady_clock::now() - start;

    BOOST_TEST(result.ec == stampede::make_http_error(503));
    BOOST_TEST(result.ec == stampede::condition::retryable);
    BOOST_TEST(!result.diag.client_message().empty());
    const auto requests = emu.server().get_stats().token_requests;
    const auto allowed = 3 + std::chrono::duration_cast<std::chrono::seconds>(elapsed).count();
    BOOST_TEST(requests <= static_cast<std::uint64_t>(allowed));
    BOOST_TEST(requests >= 3u);
}

BOOST_AUTO_TEST_CASE(stalled_server_fails_by_deadline_then_recovers)
{
    running_emulator emu(with_faults("stall"));
    asio::io_context ctx;
    auto s = emu.settings();
    s.transport.read_timeout = 300ms;
    s.backoff.max_attempts = 1;
    stampede::token_source source(ctx, s);

    auto stalled = fetch_one(ctx, source);
    BOOST_TEST(stalled.ec == stampede::client_errc::read_timeout);
    BOOST_TEST(stalled.ec == stampede::condition::timeout);

    // The in-flight slot is free again: the next call starts a new attempt.
    auto next = fetch_one(ctx, source);
    BOOST_TEST(!next.ec, next.ec.message());
    BOOST_TEST(emu.server().get_stats().token_requests == 2u);
}

BOOST_AUTO_TEST_CASE(each_odd_expires_in)
{
    struct expectation {
        std::string fault;
        bool accepted;                      // the first answer is used
        std::chrono::milliseconds lifetime; // when accepted
    };
    const auto default_lifetime = 1h;
    const std::vector<expectation> cases = {
        {"expires-in:\"3600\"", true, 3600s},
        {"expires-in:3599.5", true, 3599500ms},
        {"expires-in:1e12", true, std::chrono::hours(24 * 7)},
        {"expires-in:null", true, default_lifetime},
        {"expires-in-missing", true, default_lifetime},
        {"expires-in:0", false, {}},
        {"expires-in:-5", false, {}},
        {"expires-in:\"soon\"", false, {}},
        {"expires-in:true", false, {}},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT("fault " << c.fault)
        {
            running_emulator emu(with_faults(c.fault));
            asio::io_context ctx;
            stampede::token_source source(ctx, emu.settings());
            auto result = fetch_one(ctx, source);
            BOOST_TEST(!result.ec, result.ec.message());
            const auto requests = emu.server().get_stats().token_requests;
            if (c.accepted) {
                BOOST_TEST(requests == 1u);
                BOOST_TEST(remaining(result.token) <= c.lifetime);
                BOOST_TEST(remaining(result.token) > c.lifetime - 60s);
            } else {
                // Rejected as malformed, never cached, and retried.
                BOOST_TEST(requests == 2u);
                BOOST_TEST(remaining(result.token) > 3500s);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(each_bad_response_has_its_outcome)
{
    struct expectation {
        std::string fault;
        error_code first_error; // what the failed attempt reports
        bool retried;
    };
    const std::vector<expectation> cases = {
        {"5xx-html:502", stampede::make_http_error(502), true},
        {"429", stampede::make_http_error(429), true},
        {"bare-400", stampede::make_http_error(400), true},
        {"garbage-json", stampede::client_errc::malformed_response, true},
        {"truncated-json", stampede::client_errc::malformed_response, true},
        {"html-200", stampede::client_errc::malformed_response, true},
        {"no-access-token", stampede::client_errc::missing_access_token, true},
        {"reset", {}, true},
        {"close-mid-body", {}, true},
        {"charset", {}, false},
        {"error-200", stampede::oauth_errc::invalid_client, false},
        {"token-type:mac", stampede::client_errc::unsupported_token_type, false},
        {"oversize:200000", stampede::client_errc::body_too_large, false},
        {"oauth-error:invalid_client:401", stampede::oauth_errc::invalid_client, false},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT("fault " << c.fault)
        {
            running_emulator emu(with_faults(c.fault));
            asio::io_context ctx;
            auto s = emu.settings();
            stampede::token_source source(ctx, s);
            auto result = fetch_one(ctx, source);
            const auto requests = emu.server().get_stats().token_requests;
            if (c.fault == "charset") {
                BOOST_TEST(!result.ec, result.ec.message());
                BOOST_TEST(requests == 1u);
            } else if (c.retried) {
                BOOST_TEST(!result.ec, result.ec.message());
                BOOST_TEST(requests == 2u);
                BOOST_TEST(source.stats().retryable_failures == 1u);
            } else {
                BOOST_TEST(result.ec == c.first_error, result.ec.message());
                BOOST_TEST(result.ec == stampede::condition::permanent);
                BOOST_TEST(requests == 1u);
                BOOST_TEST(!result.diag.client_message().empty());
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(failed_refresh_keeps_serving_old_token)
{
    // First answer ok with a 3-s token; every refresh attempt gets 503.
    running_emulator emu(with_faults("ok,5xx-html:503*", 3000ms));
    asio::io_context ctx;
    stampede::token_source source(ctx, emu.settings());
    run_coroutine(ctx, [&]() -> asio::awaitable<void> {
        const std::string first((co_await source.token()).value());
        co_await sleep_for(2000ms); // refresh started at about 1.35 s and keeps failing
        BOOST_TEST(emu.server().get_stats().token_requests >= 2u);
        BOOST_TEST((co_await source.token()).value() == first);
    });
    BOOST_TEST(source.stats().waiters == 1u);
    BOOST_TEST(source.stats().retryable_failures >= 1u);
}

BOOST_AUTO_TEST_CASE(untrusted_certificate_fails_closed)
{
    running_emulator emu;
    running_emulator other;
    asio::io_context ctx;
    auto s = emu.settings();
    s.transport.ca_file = other.ca_file(); // trusts a different self-signed certificate
    stampede::token_source source(ctx, s);
    auto result = fetch_one(ctx, source);
    BOOST_TEST(result.ec == stampede::client_errc::certificate_verification_failed);
    BOOST_TEST(result.diag.client_message().find("127.0.0.1") != std::string::npos);
    BOOST_TEST(emu.server().get_stats().token_requests == 0u);
}

BOOST_AUTO_TEST_CASE(hostname_mismatch_fails_closed)
{
    stampede::emulator::options o;
    o.cert_host = "wrong.example";
    running_emulator emu(o);
    asio::io_context ctx;
    stampede::token_source source(ctx, emu.settings());
    auto result = fetch_one(ctx, source);
    BOOST_TEST(result.ec == stampede::client_errc::certificate_verification_failed);
    BOOST_TEST(emu.server().get_stats().token_requests == 0u);
}

BOOST_AUTO_TEST_CASE(plain_http_only_to_loopback)
{
    stampede::emulator::options o;
    o.plain_http = true;
    running_emulator emu(o);
    asio::io_context ctx;
    auto s = emu.settings();
    BOOST_TEST(s.token_url.rfind("http://127.0.0.1:", 0) == 0u);
    stampede::token_source source(ctx, s);
    auto result = fetch_one(ctx, source);
    BOOST_TEST(!result.ec, result.ec.message());

    s.token_url = "http://stampede.example/oauth/token";
    try {
        stampede::token_source refused(ctx, s);
        BOOST_ERROR("a plain http URL to a remote host was accepted");
    } catch (const stampede::error_with_diagnostics& e) {
        BOOST_TEST(e.code() == stampede::client_errc::insecure_url);
        BOOST_TEST(e.get_diagnostics().client_message().find("https") != std::string::npos);
    }
}
