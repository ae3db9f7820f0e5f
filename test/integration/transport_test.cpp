// Integration tests of http_connection against the in-process emulator (TLS and plain
// HTTP on loopback) and against small scripted servers for cases the emulator cannot
// produce (a kept-alive connection closed under a request, a silent TLS peer).

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE transport
#include <boost/test/unit_test.hpp>

#include <emulator.hpp>
#include <stampede/detail/http_connection.hpp>
#include <stampede/detail/token_wire.hpp>
#include <stampede/detail/url.hpp>
#include <stampede/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace emulator = stampede::emulator;

using asio::ip::tcp;
using boost::system::error_code;
using stampede::client_errc;
using stampede::diagnostics;
using stampede::transport_settings;
using stampede::detail::endpoint_url;
using stampede::detail::http_connection;
using stampede::detail::http_request;
using stampede::detail::http_response;
using namespace std::chrono_literals;

namespace {

constexpr auto as_awaitable = asio::as_tuple(asio::use_awaitable);

// Runs `body` as a coroutine on a fresh io_context and rethrows what it throws.
void run(const std::function<asio::awaitable<void>()>& body) {
    asio::io_context io;
    std::exception_ptr failure;
    bool finished = false;
    asio::co_spawn(io, body(), [&](std::exception_ptr e) {
        failure = e;
        finished = true;
    });
    io.run();
    BOOST_TEST_REQUIRE(finished);
    if (failure) {
        std::rethrow_exception(failure);
    }
}

// A file name in the temporary directory, unique to this process and call, removed on exit.
class temp_file {
public:
    temp_file() {
        static std::atomic<int> counter{0};
        path_ = std::filesystem::temp_directory_path() /
                ("stampede-transport-" + std::to_string(::getpid()) + "-" +
                 std::to_string(counter++) + ".pem");
    }
    ~temp_file() {
        std::error_code ignored;
        std::filesystem::remove(path_, ignored);
    }
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;

    std::string string() const { return path_.string(); }

private:
    std::filesystem::path path_;
};

// An emulator server started in the constructor, with its certificate in a file.
struct emulator_fixture {
    explicit emulator_fixture(emulator::options opts = {}) {
        if (!opts.plain_http) {
            opts.cert_out = cert_file.string();
        }
        server = std::make_unique<emulator::server>(std::move(opts));
        server->start();
    }

    temp_file cert_file;
    std::unique_ptr<emulator::server> server;
};

// Log records, collected for checks.
struct log_capture {
    std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
    std::shared_ptr<std::mutex> mutex = std::make_shared<std::mutex>();

    stampede::logger logger() const {
        stampede::logger lg;
        lg.level = stampede::log_level::debug;
        lg.sink = [lines = lines, mutex = mutex](stampede::log_level, std::string_view line) {
            std::lock_guard lock(*mutex);
            lines->emplace_back(line);
        };
        return lg;
    }
};

struct client_setup {
    endpoint_url url;
    transport_settings transport;
    std::shared_ptr<asio::ssl::context> tls;
};

// Parses `url` and builds a TLS context that trusts `ca_file` (when the URL is https).
client_setup make_setup(const std::string& url, transport_settings transport,
                        const std::string& ca_file) {
    client_setup setup;
    diagnostics diag;
    auto ec = stampede::detail::parse_endpoint_url(url, "token_url", transport, setup.url, diag);
    BOOST_TEST_REQUIRE(!ec, diag.client_message());
    if (setup.url.tls) {
        transport.ca_file = ca_file;
        ec = stampede::detail::make_tls_context(transport, setup.tls, diag);
        BOOST_TEST_REQUIRE(!ec, diag.client_message());
    }
    setup.transport = std::move(transport);
    return setup;
}

client_setup make_setup(const emulator_fixture& emu, transport_settings transport = {}) {
    return make_setup(emu.server->token_url(), std::move(transport), emu.cert_file.string());
}

std::unique_ptr<http_connection> make_connection(const asio::any_io_executor& ex,
                                                 const client_setup& setup,
                                                 stampede::logger lg = {}) {
    return std::make_unique<http_connection>(ex, setup.url, setup.transport, setup.tls,
                                             std::move(lg));
}

http_request token_request(const endpoint_url& url) {
    stampede::token_source_settings settings;
    settings.client_id = "demo-client";
    settings.client_secret = stampede::secret_string("demo-secret");
    return stampede::detail::make_token_request(url, settings);
}

struct send_result {
    error_code ec;
    http_response response;
    diagnostics diag;
};

asio::awaitable<send_result> send_token_request(http_connection& connection,
                                                bool replayable = true) {
    send_result result;
    auto request = token_request(connection.origin());
    result.ec = co_await connection.async_send(request, result.response, replayable, result.diag);
    co_return result;
}

// Checks that the response is a token the emulator issued.
void check_token_response(const send_result& result) {
    BOOST_TEST_REQUIRE(!result.ec, result.ec.message() << ": " << result.diag.client_message());
    BOOST_TEST(result.response.result_int() == 200u);
    stampede::detail::token_response token;
    diagnostics diag;
    const auto ec = stampede::detail::parse_token_response(
        result.response, {}, std::chrono::system_clock::now(), token, diag);
    BOOST_TEST(!ec, diag.client_message());
    BOOST_TEST(!token.access_token.empty());
}

// Closes the emulator's side of its idle connections. The emulator marks a connection
// idle only once it waits for the next request, which may be just after the client has
// read the response, so this retries until no connection is open.
asio::awaitable<void> close_server_connections(emulator::server& server) {
    const auto ex = co_await asio::this_coro::executor;
    for (int attempt = 0; attempt < 1000; ++attempt) {
        server.close_idle_connections();
        if (server.get_stats().connections_open == 0) {
            co_return;
        }
        asio::steady_timer pause(ex, 10ms);
        co_await pause.async_wait(as_awaitable);
    }
    BOOST_FAIL("the emulator kept its connections open");
}

bool contains(std::string_view text, std::string_view part) {
    return text.find(part) != std::string_view::npos;
}

//
// Scripted plain HTTP servers on loopback
//

tcp::acceptor listen_on_loopback(const asio::any_io_executor& ex) {
    return tcp::acceptor(ex, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
}

std::string loopback_url(const tcp::acceptor& acceptor, std::string_view scheme) {
    return std::string(scheme) +
           "://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) + "/oauth/token";
}

asio::awaitable<bool> read_request(tcp::socket& socket, beast::flat_buffer& buffer) {
    http::request<http::string_body> request;
    auto [ec, size] = co_await http::async_read(socket, buffer, request, as_awaitable);
    co_return !ec;
}

asio::awaitable<void> write_text(tcp::socket& socket, std::string_view text) {
    co_await asio::async_write(socket, asio::buffer(text), as_awaitable);
}

constexpr std::string_view keep_alive_reply =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

constexpr std::string_view closing_reply = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                           "Content-Length: 2\r\nConnection: close\r\n\r\n{}";

} // namespace

BOOST_AUTO_TEST_SUITE(keep_alive)

BOOST_AUTO_TEST_CASE(two_requests_one_connection) {
    emulator_fixture emu;
    const auto setup = make_setup(emu);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        check_token_response(co_await send_token_request(*connection));
        BOOST_TEST(connection->is_open());
        check_token_response(co_await send_token_request(*connection));

        BOOST_TEST(connection->stats().connects == 1u);
        BOOST_TEST(connection->stats().requests == 2u);
        BOOST_TEST(connection->stats().reconnects == 0u);
    });
    const auto stats = emu.server->get_stats();
    BOOST_TEST(stats.connections_accepted == 1u);
    BOOST_TEST(stats.token_requests == 2u);
}

BOOST_AUTO_TEST_CASE(reconnect_after_server_closes_idle) {
    emulator_fixture emu;
    const auto setup = make_setup(emu);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        check_token_response(co_await send_token_request(*connection));

        co_await close_server_connections(*emu.server);
        check_token_response(co_await send_token_request(*connection));

        BOOST_TEST(connection->stats().connects == 2u);
        BOOST_TEST(connection->stats().reconnects == 1u);
    });
    BOOST_TEST(emu.server->get_stats().connections_accepted == 2u);
    BOOST_TEST(emu.server->get_stats().token_requests == 2u);
}

BOOST_AUTO_TEST_CASE(idle_timeout_opens_new_connection) {
    emulator_fixture emu;
    transport_settings transport;
    transport.idle_timeout = 1ms;
    const auto setup = make_setup(emu, transport);
    run([&]() -> asio::awaitable<void> {
        const auto ex = co_await asio::this_coro::executor;
        auto connection = make_connection(ex, setup);
        check_token_response(co_await send_token_request(*connection));

        asio::steady_timer pause(ex, 20ms);
        co_await pause.async_wait(as_awaitable);
        check_token_response(co_await send_token_request(*connection));

        BOOST_TEST(connection->stats().connects == 2u);
        BOOST_TEST(connection->stats().reconnects == 0u);
    });
    BOOST_TEST(emu.server->get_stats().connections_accepted == 2u);
}

BOOST_AUTO_TEST_CASE(replay_when_server_closes_under_request) {
    run([&]() -> asio::awaitable<void> {
        const auto ex = co_await asio::this_coro::executor;
        auto acceptor = listen_on_loopback(ex);
        const auto setup = make_setup(loopback_url(acceptor, "http"), {}, "");

        // The server responds to one request, then reads the next and closes without a
        // response, as a server does when its idle timer fires just as a request arrives.
        asio::co_spawn(
            ex,
            [&]() -> asio::awaitable<void> {
                beast::flat_buffer buffer;
                auto [ec1, first] = co_await acceptor.async_accept(as_awaitable);
                co_await read_request(first, buffer);
                co_await write_text(first, keep_alive_reply);
                co_await read_request(first, buffer);
                first.close();

                beast::flat_buffer second_buffer;
                auto [ec2, second] = co_await acceptor.async_accept(as_awaitable);
                co_await read_request(second, second_buffer);
                co_await write_text(second, keep_alive_reply);
            },
            asio::detached);

        auto connection = make_connection(ex, setup);
        auto first = co_await send_token_request(*connection);
        BOOST_TEST(!first.ec, first.diag.client_message());
        auto second = co_await send_token_request(*connection, true);
        BOOST_TEST(!second.ec, second.diag.client_message());
        BOOST_TEST(second.response.body() == "{}");

        BOOST_TEST(connection->stats().connects == 2u);
        BOOST_TEST(connection->stats().reconnects == 1u);
        BOOST_TEST(connection->stats().requests == 3u);
    });
}

BOOST_AUTO_TEST_CASE(no_replay_when_not_replayable) {
    run([&]() -> asio::awaitable<void> {
        const auto ex = co_await asio::this_coro::executor;
        auto acceptor = listen_on_loopback(ex);
        const auto setup = make_setup(loopback_url(acceptor, "http"), {}, "");

        asio::co_spawn(
            ex,
            [&]() -> asio::awaitable<void> {
                beast::flat_buffer buffer;
                auto [ec, socket] = co_await acceptor.async_accept(as_awaitable);
                co_await read_request(socket, buffer);
                co_await write_text(socket, keep_alive_reply);
                co_await read_request(socket, buffer);
                socket.close();
            },
            asio::detached);

        auto connection = make_connection(ex, setup);
        auto first = co_await send_token_request(*connection);
        BOOST_TEST(!first.ec, first.diag.client_message());
        auto second = co_await send_token_request(*connection, false);
        BOOST_TEST(second.ec == make_error_code(http::error::end_of_stream));
        BOOST_TEST(contains(second.diag.client_message(), "127.0.0.1"));
        BOOST_TEST(!connection->is_open());
        BOOST_TEST(connection->stats().connects == 1u);
        BOOST_TEST(connection->stats().reconnects == 0u);
    });
}

BOOST_AUTO_TEST_CASE(connection_close_response_not_reused) {
    run([&]() -> asio::awaitable<void> {
        const auto ex = co_await asio::this_coro::executor;
        auto acceptor = listen_on_loopback(ex);
        const auto setup = make_setup(loopback_url(acceptor, "http"), {}, "");

        asio::co_spawn(
            ex,
            [&]() -> asio::awaitable<void> {
                for (int i = 0; i < 2; ++i) {
                    beast::flat_buffer buffer;
                    auto [ec, socket] = co_await acceptor.async_accept(as_awaitable);
                    co_await read_request(socket, buffer);
                    co_await write_text(socket, closing_reply);
                }
            },
            asio::detached);

        auto connection = make_connection(ex, setup);
        auto first = co_await send_token_request(*connection);
        BOOST_TEST(!first.ec, first.diag.client_message());
        BOOST_TEST(!connection->is_open());
        auto second = co_await send_token_request(*connection);
        BOOST_TEST(!second.ec, second.diag.client_message());

        BOOST_TEST(connection->stats().connects == 2u);
        BOOST_TEST(connection->stats().reconnects == 0u);
    });
}

BOOST_AUTO_TEST_CASE(interim_response_skipped) {
    run([&]() -> asio::awaitable<void> {
        const auto ex = co_await asio::this_coro::executor;
        auto acceptor = listen_on_loopback(ex);
        const auto setup = make_setup(loopback_url(acceptor, "http"), {}, "");

        asio::co_spawn(
            ex,
            [&]() -> asio::awaitable<void> {
                beast::flat_buffer buffer;
                auto [ec, socket] = co_await acceptor.async_accept(as_awaitable);
                co_await read_request(socket, buffer);
                co_await write_text(socket, "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n");
                co_await write_text(socket, keep_alive_reply);
            },
            asio::detached);

        auto connection = make_connection(ex, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(!result.ec, result.diag.client_message());
        BOOST_TEST(result.response.result_int() == 200u);
        BOOST_TEST(result.response.body() == "{}");
    });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(timeouts)

BOOST_AUTO_TEST_CASE(stall_gives_read_timeout) {
    emulator_fixture emu;
    emu.server->set_fault_script("stall");
    transport_settings transport;
    transport.read_timeout = 200ms;
    const auto setup = make_setup(emu, transport);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        const auto started = std::chrono::steady_clock::now();
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(client_errc::read_timeout));
        BOOST_TEST((result.ec == stampede::condition::timeout));
        const auto elapsed = std::chrono::steady_clock::now() - started;
        BOOST_TEST(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() >= 200);
        BOOST_TEST(contains(result.diag.client_message(), "transport.read_timeout"));
        BOOST_TEST(!connection->is_open());
    });
}

BOOST_AUTO_TEST_CASE(slow_response_gives_read_timeout) {
    emulator_fixture emu;
    emu.server->set_fault_script("slow:2000");
    transport_settings transport;
    transport.read_timeout = 100ms;
    const auto setup = make_setup(emu, transport);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(client_errc::read_timeout));
    });
}

BOOST_AUTO_TEST_CASE(slow_response_within_read_timeout) {
    emulator_fixture emu;
    emu.server->set_fault_script("slow:50");
    const auto setup = make_setup(emu);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        check_token_response(co_await send_token_request(*connection));
    });
}

BOOST_AUTO_TEST_CASE(request_timeout_bounds_whole_request) {
    emulator_fixture emu;
    emu.server->set_fault_script("stall");
    transport_settings transport;
    transport.read_timeout = 10s;
    transport.request_timeout = 300ms;
    const auto setup = make_setup(emu, transport);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        const auto started = std::chrono::steady_clock::now();
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(client_errc::request_timeout));
        const auto elapsed = std::chrono::steady_clock::now() - started;
        BOOST_TEST(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() >= 300);
        BOOST_TEST(contains(result.diag.client_message(), "transport.request_timeout"));
    });
}

BOOST_AUTO_TEST_CASE(expired_request_timeout_sends_nothing) {
    emulator_fixture emu;
    transport_settings transport;
    transport.request_timeout = 0ms;
    const auto setup = make_setup(emu, transport);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(client_errc::request_timeout));
        BOOST_TEST(connection->stats().connects == 0u);
        BOOST_TEST(connection->stats().requests == 0u);
    });
    BOOST_TEST(emu.server->get_stats().connections_accepted == 0u);
}

BOOST_AUTO_TEST_CASE(silent_peer_gives_handshake_timeout) {
    run([&]() -> asio::awaitable<void> {
        const auto ex = co_await asio::this_coro::executor;
        auto acceptor = listen_on_loopback(ex);
        transport_settings transport;
        transport.handshake_timeout = 200ms;
        client_setup setup;
        diagnostics diag;
        BOOST_TEST_REQUIRE(!stampede::detail::parse_endpoint_url(
            loopback_url(acceptor, "https"), "token_url", transport, setup.url, diag));
        BOOST_TEST_REQUIRE(!stampede::detail::make_tls_context(transport, setup.tls, diag));
        setup.transport = transport;

        // Accept the connection and send nothing.
        tcp::socket silent_peer(ex);
        asio::co_spawn(
            ex,
            [&]() -> asio::awaitable<void> {
                auto [ec, socket] = co_await acceptor.async_accept(as_awaitable);
                silent_peer = std::move(socket);
            },
            asio::detached);

        auto connection = make_connection(ex, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(client_errc::handshake_timeout));
        BOOST_TEST(contains(result.diag.client_message(), "transport.handshake_timeout"));
        BOOST_TEST(connection->stats().connects == 1u);
        silent_peer.close();
    });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(limits)

BOOST_AUTO_TEST_CASE(oversize_body) {
    emulator_fixture emu;
    emu.server->set_fault_script("oversize:200000");
    const auto setup = make_setup(emu);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(client_errc::body_too_large));
        BOOST_TEST(contains(result.diag.client_message(), "transport.max_body_bytes"));
        BOOST_TEST(!connection->is_open());

        // The fault applied once, so the next request gets a normal response.
        check_token_response(co_await send_token_request(*connection));
    });
}

BOOST_AUTO_TEST_CASE(body_within_raised_limit) {
    emulator_fixture emu;
    emu.server->set_fault_script("oversize:200000");
    transport_settings transport;
    transport.max_body_bytes = 400000;
    const auto setup = make_setup(emu, transport);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(!result.ec, result.diag.client_message());
        BOOST_TEST(result.response.body().size() >= 200000u);
    });
}

BOOST_AUTO_TEST_CASE(header_cap) {
    emulator_fixture emu;
    transport_settings transport;
    transport.max_header_bytes = 32;
    const auto setup = make_setup(emu, transport);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(client_errc::header_too_large));
        BOOST_TEST(contains(result.diag.client_message(), "transport.max_header_bytes"));
    });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(network_faults)

BOOST_AUTO_TEST_CASE(reset_gives_network_error) {
    emulator_fixture emu;
    emu.server->set_fault_script("reset");
    const auto setup = make_setup(emu);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec.failed());
        BOOST_TEST((result.ec == asio::error::connection_reset ||
                    result.ec == asio::ssl::error::stream_truncated ||
                    result.ec == http::error::end_of_stream),
                   result.ec.message());
        BOOST_TEST((result.ec.category() != stampede::client_category()));
        BOOST_TEST(!connection->is_open());
        BOOST_TEST(connection->stats().reconnects == 0u);
    });
}

BOOST_AUTO_TEST_CASE(close_mid_body_gives_error) {
    emulator_fixture emu;
    emu.server->set_fault_script("close-mid-body");
    const auto setup = make_setup(emu);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec.failed());
        BOOST_TEST(!connection->is_open());
        BOOST_TEST(contains(result.diag.client_message(), "reading the response"));

        // Part of a response arrived, so the request is not sent again.
        BOOST_TEST(connection->stats().requests == 1u);
    });
}

BOOST_AUTO_TEST_CASE(connection_refused) {
    run([&]() -> asio::awaitable<void> {
        const auto ex = co_await asio::this_coro::executor;
        std::string url;
        {
            auto acceptor = listen_on_loopback(ex);
            url = loopback_url(acceptor, "http");
        }
        const auto setup = make_setup(url, {}, "");
        auto connection = make_connection(ex, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(asio::error::connection_refused));
        BOOST_TEST(contains(result.diag.client_message(), "connecting to 127.0.0.1:"));
        BOOST_TEST(connection->stats().connects == 0u);
    });
}

BOOST_AUTO_TEST_CASE(server_error_status_passed_through) {
    emulator_fixture emu;
    emu.server->set_fault_script("5xx-html:503");
    const auto setup = make_setup(emu);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(!result.ec, result.diag.client_message());
        BOOST_TEST(result.response.result_int() == 503u);
    });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(certificates)

BOOST_AUTO_TEST_CASE(untrusted_certificate) {
    emulator_fixture emu;
    emulator_fixture other;
    const auto setup = make_setup(emu.server->token_url(), {}, other.cert_file.string());
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(client_errc::certificate_verification_failed));
        BOOST_TEST(contains(result.diag.client_message(), "127.0.0.1"));
        BOOST_TEST(contains(result.diag.client_message(), "transport.ca_file"));
        BOOST_TEST(!connection->is_open());
    });
}

BOOST_AUTO_TEST_CASE(hostname_mismatch) {
    emulator::options opts;
    opts.cert_host = "wrong.example";
    emulator_fixture emu(opts);
    const auto setup = make_setup(emu);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(client_errc::certificate_verification_failed));
        BOOST_TEST(contains(result.diag.client_message(), "mismatch"),
                   result.diag.client_message());
    });
}

BOOST_AUTO_TEST_CASE(dns_name_verified_with_sni) {
    emulator_fixture emu;
    const auto url = "https://localhost:" + std::to_string(emu.server->port()) + "/oauth/token";
    const auto setup = make_setup(url, {}, emu.cert_file.string());
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        check_token_response(co_await send_token_request(*connection));
    });
}

BOOST_AUTO_TEST_CASE(dns_name_mismatch) {
    emulator::options opts;
    opts.cert_host = "wrong.example";
    emulator_fixture emu(opts);
    const auto url = "https://localhost:" + std::to_string(emu.server->port()) + "/oauth/token";
    const auto setup = make_setup(url, {}, emu.cert_file.string());
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(client_errc::certificate_verification_failed));
        BOOST_TEST(contains(result.diag.client_message(), "localhost"));
    });
}

BOOST_AUTO_TEST_CASE(missing_ca_file) {
    transport_settings transport;
    transport.ca_file = "/nonexistent/stampede-ca.pem";
    std::shared_ptr<asio::ssl::context> tls;
    diagnostics diag;
    const auto ec = stampede::detail::make_tls_context(transport, tls, diag);
    BOOST_TEST(ec == make_error_code(client_errc::invalid_settings));
    BOOST_TEST(contains(diag.client_message(), "transport.ca_file"));
    BOOST_TEST(contains(diag.client_message(), "/nonexistent/stampede-ca.pem"));
    BOOST_TEST(!tls);
}

BOOST_AUTO_TEST_CASE(ca_file_without_certificates) {
    temp_file file;
    {
        std::FILE* out = std::fopen(file.string().c_str(), "w");
        BOOST_TEST_REQUIRE(out != nullptr);
        std::fputs("not a certificate\n", out);
        std::fclose(out);
    }
    transport_settings transport;
    transport.ca_file = file.string();
    std::shared_ptr<asio::ssl::context> tls;
    diagnostics diag;
    const auto ec = stampede::detail::make_tls_context(transport, tls, diag);
    BOOST_TEST(ec == make_error_code(client_errc::invalid_settings));
    BOOST_TEST(contains(diag.client_message(), "could not be loaded"));
}

BOOST_AUTO_TEST_CASE(missing_ca_directory) {
    transport_settings transport;
    transport.ca_directory = "/nonexistent/stampede-certs";
    std::shared_ptr<asio::ssl::context> tls;
    diagnostics diag;
    const auto ec = stampede::detail::make_tls_context(transport, tls, diag);
    BOOST_TEST(ec == make_error_code(client_errc::invalid_settings));
    BOOST_TEST(contains(diag.client_message(), "transport.ca_directory"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(plain_http)

BOOST_AUTO_TEST_CASE(plain_http_to_loopback) {
    emulator::options opts;
    opts.plain_http = true;
    emulator_fixture emu(opts);
    const auto setup = make_setup(emu);
    BOOST_TEST(!setup.url.tls);
    run([&]() -> asio::awaitable<void> {
        auto connection = make_connection(co_await asio::this_coro::executor, setup);
        check_token_response(co_await send_token_request(*connection));
        check_token_response(co_await send_token_request(*connection));
        BOOST_TEST(connection->stats().connects == 1u);
    });
    BOOST_TEST(emu.server->get_stats().connections_accepted == 1u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(closing)

BOOST_AUTO_TEST_CASE(close_during_stall_aborts) {
    emulator_fixture emu;
    emu.server->set_fault_script("stall");
    const auto setup = make_setup(emu);
    run([&]() -> asio::awaitable<void> {
        const auto ex = co_await asio::this_coro::executor;
        auto connection = make_connection(ex, setup);

        asio::steady_timer timer(ex, 100ms);
        timer.async_wait([&](error_code) { connection->close(); });
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(asio::error::operation_aborted));
        BOOST_TEST(contains(result.diag.client_message(), "cancelled"));
        BOOST_TEST(!connection->is_open());

        // The connection can be used again after close().
        check_token_response(co_await send_token_request(*connection));
        BOOST_TEST(connection->stats().connects == 2u);
    });
}

BOOST_AUTO_TEST_CASE(close_during_handshake_aborts) {
    run([&]() -> asio::awaitable<void> {
        const auto ex = co_await asio::this_coro::executor;
        auto acceptor = listen_on_loopback(ex);
        const auto setup = make_setup(loopback_url(acceptor, "https"), {}, "");
        tcp::socket silent_peer(ex);
        asio::co_spawn(
            ex,
            [&]() -> asio::awaitable<void> {
                auto [ec, socket] = co_await acceptor.async_accept(as_awaitable);
                silent_peer = std::move(socket);
            },
            asio::detached);

        auto connection = make_connection(ex, setup);
        asio::steady_timer timer(ex, 100ms);
        timer.async_wait([&](error_code) { connection->close(); });
        auto result = co_await send_token_request(*connection);
        BOOST_TEST(result.ec == make_error_code(asio::error::operation_aborted));
        silent_peer.close();
    });
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(logging)

BOOST_AUTO_TEST_CASE(debug_lines_name_host_without_secrets) {
    emulator_fixture emu;
    const auto setup = make_setup(emu);
    log_capture capture;
    run([&]() -> asio::awaitable<void> {
        auto connection =
            make_connection(co_await asio::this_coro::executor, setup, capture.logger());
        check_token_response(co_await send_token_request(*connection));
        co_await close_server_connections(*emu.server);
        check_token_response(co_await send_token_request(*connection));
    });

    const std::string authority = "127.0.0.1:" + std::to_string(emu.server->port());
    BOOST_TEST_REQUIRE(!capture.lines->empty());
    BOOST_TEST(contains(capture.lines->front(), "connecting to " + authority));
    bool saw_reconnect = false;
    for (const auto& line : *capture.lines) {
        BOOST_TEST_CONTEXT(line) {
            BOOST_TEST(!contains(line, "demo-secret"));
            BOOST_TEST(!contains(line, "access_token"));
            BOOST_TEST(contains(line, authority));
            saw_reconnect = saw_reconnect || contains(line, "reconnecting");
        }
    }
    BOOST_TEST(saw_reconnect);
}

BOOST_AUTO_TEST_SUITE_END()
