// Tests of the Stampede API emulator, through a small Beast client that trusts the
// emulator's certificate with verification on, on loopback.

#define BOOST_TEST_MODULE emulator
#include <boost/test/unit_test.hpp>

#include "emulator.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace ssl = asio::ssl;
namespace emulator = stampede::emulator;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

const std::string demo_body =
    R"({"client_id":"demo-client","client_secret":"demo-secret","grant_type":"client_credentials"})";

struct response {
    unsigned status = 0;
    http::fields headers;
    std::string body;

    std::string header(std::string_view name) const
    {
        auto found = headers.find(beast::string_view(name.data(), name.size()));
        return found == headers.end() ? std::string() : std::string(found->value());
    }

    json::object object() const { return json::parse(body).as_object(); }
};

// Returns the host part of a URL such as https://[::1]:4433/, without brackets.
std::string host_of(const std::string& url)
{
    auto start = url.find("//") + 2;
    auto end = url.rfind(':');
    std::string host = url.substr(start, end - start);
    if (host.front() == '[') {
        host = host.substr(1, host.size() - 2);
    }
    return host;
}

// An HTTP/1.1 client with one keep-alive connection, reconnecting when it has none.
class test_client {
public:
    explicit test_client(const emulator::server& server, std::string verify_name = {})
        : host_(host_of(server.base_url()))
        , port_(server.port())
        , verify_name_(verify_name.empty() ? host_ : std::move(verify_name))
        , plain_(server.base_url().starts_with("http://"))
    {
        if (!plain_) {
            tls_.add_certificate_authority(asio::buffer(server.certificate_pem()));
            tls_.set_verify_mode(ssl::verify_peer);
        }
    }

    // Sends a request and returns the error that ended it, if any.
    boost::system::error_code
    try_send(http::verb method, const std::string& target, response& out,
             const std::string& body = {},
             const std::vector<std::pair<std::string, std::string>>& headers = {},
             std::chrono::milliseconds timeout = 5s)
    {
        auto future = asio::co_spawn(io_, exchange(method, target, body, headers, timeout, out),
                                     asio::use_future);
        io_.restart();
        io_.run();
        auto error = future.get();
        if (error) {
            disconnect();
        }
        return error;
    }

    response send(http::verb method, const std::string& target, const std::string& body = {},
                  const std::vector<std::pair<std::string, std::string>>& headers = {})
    {
        response out;
        auto error = try_send(method, target, out, body, headers);
        if (error) {
            throw boost::system::system_error(error, "request to " + target + " failed");
        }
        return out;
    }

    response post_json(const std::string& target, const std::string& body,
                       const std::vector<std::pair<std::string, std::string>>& headers = {})
    {
        auto all = headers;
        all.emplace_back("Content-Type", "application/json");
        return send(http::verb::post, target, body, all);
    }

    response get(const std::string& target, const std::string& token = {})
    {
        std::vector<std::pair<std::string, std::string>> headers;
        if (!token.empty()) {
            headers.emplace_back("Authorization", "Bearer " + token);
        }
        return send(http::verb::get, target, {}, headers);
    }

    response request_token(const std::string& body = demo_body)
    {
        return post_json("/oauth/token", body);
    }

    std::string fetch_token()
    {
        auto reply = request_token();
        BOOST_TEST_REQUIRE(reply.status == 200u);
        return std::string(reply.object().at("access_token").as_string());
    }

    void disconnect()
    {
        tls_stream_.reset();
        plain_stream_.reset();
        buffer_.clear();
    }

    // Returns the TLS handshake error for a fresh connection, or success.
    boost::system::error_code try_handshake()
    {
        disconnect();
        auto future = asio::co_spawn(io_, connect_as_error(), asio::use_future);
        io_.restart();
        io_.run();
        return future.get();
    }

private:
    asio::awaitable<boost::system::error_code> connect_as_error()
    {
        try {
            co_await connect();
        } catch (const boost::system::system_error& error) {
            co_return error.code();
        }
        co_return boost::system::error_code{};
    }

    asio::awaitable<void> connect()
    {
        tcp::endpoint endpoint(asio::ip::make_address(host_), port_);
        if (plain_) {
            plain_stream_.emplace(io_);
            co_await plain_stream_->async_connect(endpoint, asio::use_awaitable);
            co_return;
        }
        tls_stream_.emplace(io_, tls_);
        tls_stream_->set_verify_callback(ssl::host_name_verification(verify_name_));
        boost::system::error_code not_an_address;
        asio::ip::make_address(verify_name_, not_an_address);
        if (not_an_address) {
            SSL_set_tlsext_host_name(tls_stream_->native_handle(), verify_name_.c_str());
        }
        beast::get_lowest_layer(*tls_stream_).expires_after(5s);
        co_await beast::get_lowest_layer(*tls_stream_).async_connect(endpoint, asio::use_awaitable);
        co_await tls_stream_->async_handshake(ssl::stream_base::client, asio::use_awaitable);
    }

    template <class Stream>
    asio::awaitable<boost::system::error_code>
    exchange_on(Stream& stream, http::request<http::string_body>& request,
                std::chrono::milliseconds timeout, response& out)
    {
        auto& layer = beast::get_lowest_layer(stream);
        layer.expires_after(timeout);
        auto [write_error, written] = co_await http::async_write(stream, request, use_tuple);
        if (write_error) {
            co_return write_error;
        }
        http::response_parser<http::string_body> parser;
        parser.body_limit(512 * 1024 * 1024);
        auto [read_error, read] = co_await http::async_read(stream, buffer_, parser, use_tuple);
        if (read_error) {
            co_return read_error;
        }
        out.status = parser.get().result_int();
        out.headers = parser.get().base();
        out.body = parser.get().body();
        if (!parser.get().keep_alive()) {
            disconnect();
        }
        co_return boost::system::error_code{};
    }

    asio::awaitable<boost::system::error_code>
    exchange(http::verb method, std::string target, std::string body,
             std::vector<std::pair<std::string, std::string>> headers,
             std::chrono::milliseconds timeout, response& out)
    {
        if (!tls_stream_ && !plain_stream_) {
            auto error = co_await connect_as_error();
            if (error) {
                co_return error;
            }
        }
        http::request<http::string_body> request{method, target, 11};
        request.set(http::field::host, host_);
        for (const auto& [name, value] : headers) {
            request.set(name, value);
        }
        request.body() = body;
        request.prepare_payload();
        if (plain_) {
            co_return co_await exchange_on(*plain_stream_, request, timeout, out);
        }
        co_return co_await exchange_on(*tls_stream_, request, timeout, out);
    }

    std::string host_;
    unsigned short port_;
    std::string verify_name_;
    bool plain_;
    asio::io_context io_;
    ssl::context tls_{ssl::context::tls_client};
    std::optional<beast::ssl_stream<beast::tcp_stream>> tls_stream_;
    std::optional<beast::tcp_stream> plain_stream_;
    beast::flat_buffer buffer_;
};

std::unique_ptr<emulator::server> start_server(emulator::options opts = {})
{
    auto server = std::make_unique<emulator::server>(std::move(opts));
    server->start();
    return server;
}

std::string client_body(std::string_view id, std::string_view secret,
                        std::string_view grant = "client_credentials")
{
    return json::serialize(
        json::object{{"client_id", id}, {"client_secret", secret}, {"grant_type", grant}});
}

// Polls a condition for at most 10 s. The bound only keeps a broken build from hanging.
template <class Condition>
bool eventually(Condition condition)
{
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!condition()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(10ms);
    }
    return true;
}

} // namespace

// ---------------------------------------------------------------------------
// Token endpoint

BOOST_AUTO_TEST_CASE(token_works_on_guest_list)
{
    auto server = start_server();
    BOOST_TEST(server->token_url() ==
               "https://127.0.0.1:" + std::to_string(server->port()) + "/oauth/token");
    test_client client(*server);

    auto reply = client.request_token();
    BOOST_TEST(reply.status == 200u);
    BOOST_TEST(reply.header("Content-Type") == "application/json");
    BOOST_TEST(reply.header("Cache-Control") == "no-store");
    auto body = reply.object();
    std::string token(body.at("access_token").as_string());
    BOOST_TEST(token.size() >= 43u);
    BOOST_TEST(body.at("expires_in").as_int64() == 86400);
    BOOST_TEST(body.at("token_type").as_string() == "Bearer");
    BOOST_TEST(body.at("scope").as_string() == "ALL:ALL");

    auto guests = client.get("/v1/guests", token);
    BOOST_TEST(guests.status == 200u);
    BOOST_TEST(guests.object().at("data").as_array().size() == 25u);

    auto lower_case_scheme =
        client.send(http::verb::get, "/v1/guests", {}, {{"Authorization", "bearer " + token}});
    BOOST_TEST(lower_case_scheme.status == 200u);

    auto stats = server->get_stats();
    BOOST_TEST(stats.token_requests == 1u);
    BOOST_TEST(stats.tokens_issued == 1u);
    BOOST_TEST(stats.api_requests == 2u);
    BOOST_TEST(stats.token_request_times_ms.size() == 1u);
}

BOOST_AUTO_TEST_CASE(tokens_are_unique)
{
    auto server = start_server();
    test_client client(*server);
    std::set<std::string> tokens;
    for (int i = 0; i < 5; ++i) {
        tokens.insert(client.fetch_token());
    }
    BOOST_TEST(tokens.size() == 5u);
}

BOOST_AUTO_TEST_CASE(token_rejections)
{
    emulator::options opts;
    opts.clients = {{"alpha", "alpha-secret"}};
    auto server = start_server(opts);
    test_client client(*server);

    auto wrong_secret = client.request_token(client_body("alpha", "wrong"));
    BOOST_TEST(wrong_secret.status == 400u);
    BOOST_TEST(wrong_secret.object().at("error").as_string() == "invalid_client");
    BOOST_TEST(wrong_secret.object().contains("error_description"));

    auto unknown_id = client.request_token(client_body("beta", "alpha-secret"));
    BOOST_TEST(unknown_id.object().at("error").as_string() == "invalid_client");

    auto grant = client.request_token(client_body("alpha", "alpha-secret", "password"));
    BOOST_TEST(grant.status == 400u);
    BOOST_TEST(grant.object().at("error").as_string() == "unsupported_grant_type");

    auto missing = client.request_token(R"({"client_id":"alpha","client_secret":"alpha-secret"})");
    BOOST_TEST(missing.object().at("error").as_string() == "invalid_request");

    auto malformed = client.request_token("{not json");
    BOOST_TEST(malformed.object().at("error").as_string() == "invalid_request");

    auto form =
        client.send(http::verb::post, "/oauth/token",
                    "client_id=alpha&client_secret=alpha-secret&grant_type=client_credentials",
                    {{"Content-Type", "application/x-www-form-urlencoded"}});
    BOOST_TEST(form.status == 400u);
    BOOST_TEST(form.object().at("error").as_string() == "invalid_request");

    auto with_charset =
        client.send(http::verb::post, "/oauth/token", client_body("alpha", "alpha-secret"),
                    {{"Content-Type", "Application/JSON; charset=utf-8"}});
    BOOST_TEST(with_charset.status == 200u);

    auto method = client.get("/oauth/token");
    BOOST_TEST(method.status == 405u);
    BOOST_TEST(method.header("Allow") == "POST");

    auto unknown_path = client.get("/nowhere");
    BOOST_TEST(unknown_path.status == 404u);
    BOOST_TEST(unknown_path.object().at("error").as_string() == "not_found");

    auto stats = server->get_stats();
    BOOST_TEST(stats.rejections["invalid_client"] == 2u);
    BOOST_TEST(stats.rejections["unsupported_grant_type"] == 1u);
    BOOST_TEST(stats.rejections["invalid_request"] == 4u);
    BOOST_TEST(stats.token_requests == 8u);
    BOOST_TEST(stats.tokens_issued == 1u);
}

BOOST_AUTO_TEST_CASE(token_rate_limit_answers_429)
{
    emulator::options opts;
    opts.clients = {{"alpha", "a"}, {"beta", "b"}};
    opts.token_rate = {3, 60s};
    auto server = start_server(opts);
    test_client client(*server);

    for (int i = 0; i < 3; ++i) {
        BOOST_TEST(client.request_token(client_body("alpha", "a")).status == 200u);
    }
    auto limited = client.request_token(client_body("alpha", "a"));
    BOOST_TEST(limited.status == 429u);
    BOOST_TEST(limited.object().at("error").as_string() == "rate_limit_exceeded");
    int retry_after = std::stoi(limited.header("Retry-After"));
    BOOST_TEST(retry_after >= 1);
    BOOST_TEST(retry_after <= 60);

    // The budget is per client id.
    BOOST_TEST(client.request_token(client_body("beta", "b")).status == 200u);

    auto stats = server->get_stats();
    BOOST_TEST(stats.rate_limited == 1u);
    BOOST_TEST(stats.token_requests == 5u);
    BOOST_TEST(stats.tokens_issued == 4u);
}

BOOST_AUTO_TEST_CASE(token_rate_limit_as_400)
{
    emulator::options opts;
    opts.token_rate = {1, 60s};
    opts.rate_limit_status = 400;
    auto server = start_server(opts);
    test_client client(*server);

    BOOST_TEST(client.request_token().status == 200u);
    auto limited = client.request_token();
    BOOST_TEST(limited.status == 400u);
    BOOST_TEST(limited.object().at("error").as_string() == "rate_limit_exceeded");
    BOOST_TEST(limited.header("Retry-After").empty());
}

BOOST_AUTO_TEST_CASE(expires_in_rounds_up_fraction)
{
    emulator::options opts;
    opts.token_lifetime = 1500ms;
    auto server = start_server(opts);
    test_client client(*server);
    BOOST_TEST(client.request_token().object().at("expires_in").as_int64() == 2);
}

BOOST_AUTO_TEST_CASE(expired_token_is_rejected)
{
    emulator::options opts;
    opts.token_lifetime = 300ms;
    auto server = start_server(opts);
    test_client client(*server);
    auto token = client.fetch_token();
    std::this_thread::sleep_for(400ms);

    auto reply = client.get("/v1/guests", token);
    BOOST_TEST(reply.status == 401u);
    BOOST_TEST(reply.object().at("error").as_string() == "invalid_token");
}

// ---------------------------------------------------------------------------
// Connections

BOOST_AUTO_TEST_CASE(keep_alive_uses_one_connection)
{
    auto server = start_server();
    test_client client(*server);
    auto token = client.fetch_token();
    BOOST_TEST(client.get("/v1/guests", token).status == 200u);
    BOOST_TEST(server->get_stats().connections_accepted == 1u);
}

BOOST_AUTO_TEST_CASE(idle_timeout_closes_connection)
{
    emulator::options opts;
    opts.idle_timeout = 200ms;
    auto server = start_server(opts);
    test_client client(*server);
    BOOST_TEST(client.request_token().status == 200u);

    BOOST_TEST(eventually([&] { return server->get_stats().connections_open == 0; }));
    response reply;
    BOOST_TEST(client.try_send(http::verb::get, "/_emulator/stats", reply).failed());
}

BOOST_AUTO_TEST_CASE(close_idle_spares_busy_connection)
{
    auto server = start_server();
    test_client idle(*server);
    test_client busy(*server);
    BOOST_TEST(idle.request_token().status == 200u);
    BOOST_TEST(busy.request_token().status == 200u);

    // The request on `busy` is in progress while the server closes idle connections.
    auto closed = busy.send(http::verb::post, "/_emulator/close-idle");
    BOOST_TEST(closed.object().at("closed").as_int64() == 1);
    BOOST_TEST(busy.get("/_emulator/stats").status == 200u);

    response reply;
    BOOST_TEST(idle.try_send(http::verb::get, "/_emulator/stats", reply).failed());
    BOOST_TEST(server->get_stats().connections_accepted == 2u);
}

BOOST_AUTO_TEST_CASE(close_idle_connections_from_test_thread)
{
    auto server = start_server();
    test_client client(*server);
    BOOST_TEST(client.request_token().status == 200u);
    server->close_idle_connections();
    BOOST_TEST(eventually([&] { return server->get_stats().connections_open == 0; }));
}

BOOST_AUTO_TEST_CASE(request_size_limits)
{
    auto server = start_server();
    test_client client(*server);

    auto large_header = client.send(http::verb::get, "/_emulator/stats", {},
                                    {{"X-Padding", std::string(9000, 'a')}});
    BOOST_TEST(large_header.status == 431u);

    auto large_body = client.post_json("/oauth/token", std::string(70 * 1024, ' '));
    BOOST_TEST(large_body.status == 413u);
}

BOOST_AUTO_TEST_CASE(many_concurrent_connections)
{
    emulator::options opts;
    opts.api_rate = {100000, 60s};
    auto server = start_server(opts);
    auto token = test_client(*server).fetch_token();

    constexpr int connection_count = 50;
    std::vector<std::unique_ptr<test_client>> clients;
    for (int i = 0; i < connection_count; ++i) {
        clients.push_back(std::make_unique<test_client>(*server));
        BOOST_TEST(clients.back()->get("/v1/guests?limit=1", token).status == 200u);
    }
    for (auto& client : clients) {
        BOOST_TEST(client->get("/v1/guests?limit=1", token).status == 200u);
    }
    auto stats = server->get_stats();
    BOOST_TEST(stats.connections_accepted == connection_count + 1u);
    BOOST_TEST(stats.connections_open >= static_cast<std::uint64_t>(connection_count));
    BOOST_TEST(stats.api_requests == 2u * connection_count);
}

// ---------------------------------------------------------------------------
// TLS and listening

BOOST_AUTO_TEST_CASE(certificate_written_to_cert_out)
{
    auto path = std::filesystem::temp_directory_path() /
                ("emulator-test-" + std::to_string(::getpid()) + ".pem");
    emulator::options opts;
    opts.cert_out = path.string();
    auto server = start_server(opts);

    std::ifstream in(path);
    std::stringstream contents;
    contents << in.rdbuf();
    BOOST_TEST(contents.str() == server->certificate_pem());
    BOOST_TEST(contents.str().starts_with("-----BEGIN CERTIFICATE-----"));
    std::filesystem::remove(path);
}

// Returns the message of the exception that start() throws, or an empty string.
std::string start_failure(emulator::server& server)
{
    try {
        server.start();
    } catch (const std::exception& error) {
        return error.what();
    }
    return {};
}

BOOST_AUTO_TEST_CASE(port_in_use_names_address)
{
    auto first = start_server({});
    const auto port = std::to_string(first->port());
    emulator::options opts;
    opts.listen = "127.0.0.1:" + port;
    emulator::server second(opts);

    const std::string message = start_failure(second);
    BOOST_TEST_INFO("message: " << message);
    BOOST_TEST(message.find("cannot listen on 127.0.0.1:" + port) != std::string::npos);
    BOOST_TEST(message.find("port 0") != std::string::npos);
    BOOST_TEST(message.find("reactive_socket_service") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(unwritable_cert_out_names_file)
{
    emulator::options opts;
    opts.cert_out = "/nonexistent-stampede-directory/emulator.pem";
    emulator::server server(opts);

    const std::string message = start_failure(server);
    BOOST_TEST_INFO("message: " << message);
    BOOST_TEST(message.find("/nonexistent-stampede-directory/emulator.pem.tmp") !=
               std::string::npos);
    BOOST_TEST(message.find("No such file or directory") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(cert_host_mismatch_fails_verification)
{
    emulator::options opts;
    opts.cert_host = "emulator.test";
    auto server = start_server(opts);

    test_client by_address(*server);
    BOOST_TEST(by_address.try_handshake().failed());

    test_client by_name(*server, "emulator.test");
    BOOST_TEST(!by_name.try_handshake().failed());
    BOOST_TEST(server->get_stats().tls_handshake_failures >= 1u);
}

BOOST_AUTO_TEST_CASE(localhost_and_ipv6_are_in_certificate)
{
    emulator::options opts;
    opts.listen = "[::1]:0";
    auto server = start_server(opts);
    BOOST_TEST(server->base_url() == "https://[::1]:" + std::to_string(server->port()) + "/");

    test_client by_address(*server);
    BOOST_TEST(by_address.request_token().status == 200u);
    test_client by_name(*server, "localhost");
    BOOST_TEST(by_name.request_token().status == 200u);
}

BOOST_AUTO_TEST_CASE(plain_http_serves_tokens)
{
    emulator::options opts;
    opts.plain_http = true;
    auto server = start_server(opts);
    BOOST_TEST(server->token_url().starts_with("http://127.0.0.1:"));
    BOOST_TEST(server->certificate_pem().empty());
    test_client client(*server);
    BOOST_TEST(client.request_token().status == 200u);
}

// ---------------------------------------------------------------------------
// Token faults

BOOST_AUTO_TEST_CASE(fault_5xx_html_then_normal)
{
    emulator::options opts;
    opts.fault_script = "5xx-html:503";
    auto server = start_server(opts);
    test_client client(*server);

    auto failed = client.request_token();
    BOOST_TEST(failed.status == 503u);
    BOOST_TEST(failed.header("Content-Type").starts_with("text/html"));
    BOOST_TEST(failed.body.find("<html>") != std::string::npos);
    BOOST_TEST(client.request_token().status == 200u);

    auto stats = server->get_stats();
    BOOST_TEST(stats.faults_applied == 1u);
    BOOST_TEST(stats.token_requests == 2u);
    BOOST_TEST(stats.tokens_issued == 1u);
}

BOOST_AUTO_TEST_CASE(fault_retry_after_forms)
{
    auto server = start_server();
    server->set_fault_script("429-seconds:7,429-date:30,429");
    test_client client(*server);

    auto seconds = client.request_token();
    BOOST_TEST(seconds.status == 429u);
    BOOST_TEST(seconds.header("Retry-After") == "7");

    auto date = client.request_token();
    BOOST_TEST(date.status == 429u);
    auto value = date.header("Retry-After");
    BOOST_TEST(value.size() == 29u);
    BOOST_TEST(value.ends_with(" GMT"));
    BOOST_TEST(value[3] == ',');

    auto bare = client.request_token();
    BOOST_TEST(bare.status == 429u);
    BOOST_TEST(bare.header("Retry-After").empty());
}

BOOST_AUTO_TEST_CASE(fault_repeat_then_normal)
{
    auto server = start_server();
    server->set_fault_script("bare-400*2,ok,slow:50");
    test_client client(*server);

    auto first = client.request_token();
    BOOST_TEST(first.status == 400u);
    BOOST_TEST(!first.object().contains("error"));
    BOOST_TEST(client.request_token().status == 400u);
    BOOST_TEST(client.request_token().status == 200u);

    auto before = std::chrono::steady_clock::now();
    BOOST_TEST(client.request_token().status == 200u);
    BOOST_TEST((std::chrono::steady_clock::now() - before) >= 50ms);
    BOOST_TEST(client.request_token().status == 200u);

    // `ok` is not a fault.
    BOOST_TEST(server->get_stats().faults_applied == 3u);
}

BOOST_AUTO_TEST_CASE(fault_stall_needs_client_timeout)
{
    auto server = start_server();
    server->set_fault_script("stall");
    test_client client(*server);

    response reply;
    auto error = client.try_send(http::verb::post, "/oauth/token", reply, demo_body,
                                 {{"Content-Type", "application/json"}}, 300ms);
    BOOST_TEST(error == boost::system::error_code(beast::error::timeout), error.message());
    BOOST_TEST(server->get_stats().token_requests == 1u);
    BOOST_TEST(client.request_token().status == 200u);
}

BOOST_AUTO_TEST_CASE(fault_stall_ends_at_stop)
{
    auto server = start_server();
    server->set_fault_script("stall");
    std::thread stopper([&] {
        eventually([&] { return server->get_stats().token_requests == 1; });
        server->stop();
    });
    test_client client(*server);
    response reply;
    auto error = client.try_send(http::verb::post, "/oauth/token", reply, demo_body,
                                 {{"Content-Type", "application/json"}}, 20s);
    stopper.join();
    BOOST_TEST(error.failed());
    BOOST_TEST(error != boost::system::error_code(beast::error::timeout), error.message());
}

BOOST_AUTO_TEST_CASE(fault_close_mid_body)
{
    auto server = start_server();
    server->set_fault_script("close-mid-body");
    test_client client(*server);
    response reply;
    auto error = client.try_send(http::verb::post, "/oauth/token", reply, demo_body,
                                 {{"Content-Type", "application/json"}});
    BOOST_TEST(error.failed());
    BOOST_TEST(client.request_token().status == 200u);
}

BOOST_AUTO_TEST_CASE(fault_reset_aborts_connection)
{
    auto server = start_server();
    server->set_fault_script("reset");
    test_client client(*server);
    response reply;
    auto error = client.try_send(http::verb::post, "/oauth/token", reply, demo_body,
                                 {{"Content-Type", "application/json"}});
    BOOST_TEST(error.failed());
    BOOST_TEST(client.request_token().status == 200u);
}

BOOST_AUTO_TEST_CASE(fault_expires_in_raw_text)
{
    auto server = start_server();
    server->set_fault_script(
        R"(expires-in:"3600",expires-in:1e12,expires-in:null,expires-in-missing)");
    test_client client(*server);

    auto quoted = client.request_token();
    BOOST_TEST(quoted.status == 200u);
    BOOST_TEST(quoted.body.find(R"("expires_in":"3600")") != std::string::npos);
    std::string token(quoted.object().at("access_token").as_string());

    BOOST_TEST(client.request_token().body.find(R"("expires_in":1e12)") != std::string::npos);
    BOOST_TEST(client.request_token().object().at("expires_in").is_null());
    BOOST_TEST(!client.request_token().object().contains("expires_in"));

    // The real lifetime is the configured one.
    BOOST_TEST(client.get("/v1/guests", token).status == 200u);
}

BOOST_AUTO_TEST_CASE(fault_body_shapes)
{
    auto server = start_server();
    server->set_fault_script("garbage-json,truncated-json,html-200,error-200,no-access-token,"
                             "token-type:mac,charset,oversize:100000,oauth-error:slow_down,"
                             "oauth-error:invalid_client:401");
    test_client client(*server);
    boost::system::error_code error;

    auto garbage = client.request_token();
    BOOST_TEST(garbage.status == 200u);
    json::parse(garbage.body, error);
    BOOST_TEST(error.failed());

    auto truncated = client.request_token();
    BOOST_TEST(truncated.status == 200u);
    BOOST_TEST(truncated.body.starts_with(R"({"access_token":)"));
    json::parse(truncated.body, error);
    BOOST_TEST(error.failed());

    auto html = client.request_token();
    BOOST_TEST(html.status == 200u);
    BOOST_TEST(html.header("Content-Type").starts_with("text/html"));

    auto error_200 = client.request_token();
    BOOST_TEST(error_200.status == 200u);
    BOOST_TEST(error_200.object().at("error").as_string() == "invalid_client");

    auto no_token = client.request_token();
    BOOST_TEST(no_token.status == 200u);
    BOOST_TEST(!no_token.object().contains("access_token"));

    BOOST_TEST(client.request_token().object().at("token_type").as_string() == "mac");

    auto charset = client.request_token();
    BOOST_TEST(charset.header("Content-Type") == "application/json; charset=utf-8");

    auto oversize = client.request_token();
    BOOST_TEST(oversize.body.size() == 100000u);
    json::parse(oversize.body, error);
    BOOST_TEST(!error.failed());

    auto slow_down = client.request_token();
    BOOST_TEST(slow_down.status == 400u);
    BOOST_TEST(slow_down.object().at("error").as_string() == "slow_down");

    auto unauthorized = client.request_token();
    BOOST_TEST(unauthorized.status == 401u);
    BOOST_TEST(unauthorized.header("WWW-Authenticate").starts_with("Basic"));

    BOOST_TEST(server->get_stats().faults_applied == 10u);
}

BOOST_AUTO_TEST_CASE(fault_echo_secret)
{
    auto server = start_server();
    server->set_fault_script("echo-secret");
    test_client client(*server);

    auto reply = client.request_token();
    BOOST_TEST(reply.status == 400u);
    auto body = reply.object();
    BOOST_TEST(body.at("error").as_string() == "invalid_client");
    std::string description(body.at("error_description").as_string());
    BOOST_TEST(description.find("demo-secret") != std::string::npos);
}

// ---------------------------------------------------------------------------
// API

BOOST_AUTO_TEST_CASE(api_requires_live_token)
{
    auto server = start_server();
    test_client client(*server);

    auto missing = client.get("/v1/guests");
    BOOST_TEST(missing.status == 401u);
    BOOST_TEST(missing.header("WWW-Authenticate") == R"(Bearer error="invalid_token")");
    BOOST_TEST(missing.object().at("error").as_string() == "invalid_token");

    BOOST_TEST(client.get("/v1/guests", "made-up").status == 401u);
    BOOST_TEST(server->get_stats().api_unauthorized == 2u);
}

BOOST_AUTO_TEST_CASE(revoked_token_gives_401)
{
    auto server = start_server();
    test_client client(*server);
    auto first = client.fetch_token();
    auto second = client.fetch_token();
    auto third = client.fetch_token();

    BOOST_TEST(server->revoke(first));
    BOOST_TEST(!server->revoke(first));
    auto reply = client.get("/v1/guests", first);
    BOOST_TEST(reply.status == 401u);
    BOOST_TEST(reply.header("WWW-Authenticate") == R"(Bearer error="invalid_token")");
    BOOST_TEST(client.get("/v1/guests", second).status == 200u);

    auto revoked = client.post_json("/_emulator/revoke",
                                    json::serialize(json::object{{"access_token", second}}));
    BOOST_TEST(revoked.object().at("revoked").as_int64() == 1);
    BOOST_TEST(client.get("/v1/guests", second).status == 401u);

    server->revoke_all();
    BOOST_TEST(client.get("/v1/guests", third).status == 401u);
}

BOOST_AUTO_TEST_CASE(api_rate_limit_answers_429)
{
    emulator::options opts;
    opts.api_rate = {2, 60s};
    auto server = start_server(opts);
    test_client client(*server);
    auto token = client.fetch_token();

    BOOST_TEST(client.get("/v1/guests", token).status == 200u);
    BOOST_TEST(client.get("/v1/guests", token).status == 200u);
    auto limited = client.get("/v1/guests", token);
    BOOST_TEST(limited.status == 429u);
    BOOST_TEST(std::stoi(limited.header("Retry-After")) >= 1);
    BOOST_TEST(server->get_stats().api_rate_limited == 1u);
}

BOOST_AUTO_TEST_CASE(api_faults)
{
    auto server = start_server();
    server->set_api_fault_script("401,5xx-html:502,charset");
    test_client client(*server);
    auto token = client.fetch_token();

    auto unauthorized = client.get("/v1/guests", token);
    BOOST_TEST(unauthorized.status == 401u);
    BOOST_TEST(unauthorized.object().at("error").as_string() == "invalid_token");
    BOOST_TEST(client.get("/v1/guests", token).status == 502u);
    auto charset = client.get("/v1/guests", token);
    BOOST_TEST(charset.status == 200u);
    BOOST_TEST(charset.header("Content-Type") == "application/json; charset=utf-8");
    BOOST_TEST(client.get("/v1/guests", token).status == 200u);

    auto stats = server->get_stats();
    BOOST_TEST(stats.faults_applied == 3u);
    BOOST_TEST(stats.api_requests == 4u);
}

BOOST_AUTO_TEST_CASE(guest_pagination_covers_all)
{
    emulator::options opts;
    opts.api_rate = {1000, 60s};
    auto server = start_server(opts);
    test_client client(*server);
    auto token = client.fetch_token();

    std::set<std::string> ids;
    std::vector<std::size_t> page_sizes;
    std::string target = "/v1/guests";
    for (int page = 0; page < 10; ++page) {
        auto reply = client.get(target, token);
        BOOST_TEST_REQUIRE(reply.status == 200u);
        auto body = reply.object();
        const auto& data = body.at("data").as_array();
        page_sizes.push_back(data.size());
        for (const auto& guest : data) {
            const auto& object = guest.as_object();
            ids.insert(std::string(object.at("id").as_string()));
            BOOST_TEST(object.at("organization_id").is_string());
            BOOST_TEST(object.at("profile_id").is_number());
            BOOST_TEST(object.at("user_profile").as_object().at("email").is_string());
            BOOST_TEST(object.at("organization_profile_tags").is_array());
            BOOST_TEST(!object.contains("custom_question_answers"));
        }
        const auto& links = body.at("links").as_object();
        BOOST_TEST(links.at("first").is_string());
        BOOST_TEST(links.at("last").is_string());
        BOOST_TEST(links.at("prev").is_null() == (page == 0));
        if (links.at("next").is_null()) {
            break;
        }
        target = "/v1/guests?cursor=" + std::string(links.at("next").as_string());
    }
    BOOST_TEST(page_sizes == (std::vector<std::size_t>{25, 25, 10}));
    BOOST_TEST(ids.size() == 60u);
}

BOOST_AUTO_TEST_CASE(guest_search_and_limit)
{
    auto server = start_server();
    test_client client(*server);
    auto token = client.fetch_token();

    auto found = client.get("/v1/guests?search=OLIVIA&limit=2", token).object();
    const auto& data = found.at("data").as_array();
    BOOST_TEST(data.size() == 2u);
    for (const auto& guest : data) {
        std::string email(guest.at("user_profile").at("email").as_string());
        BOOST_TEST(email.find("olivia") != std::string::npos);
    }
    BOOST_TEST(found.at("links").at("next").is_string());

    BOOST_TEST(client.get("/v1/guests?limit=26", token).status == 422u);
    BOOST_TEST(client.get("/v1/guests?limit=0", token).status == 422u);
    BOOST_TEST(client.get("/v1/guests?cursor=%21%21", token).status == 422u);
    auto none = client.get("/v1/guests?search=nobody-has-this-name", token).object();
    BOOST_TEST(none.at("data").as_array().empty());
    BOOST_TEST(none.at("links").at("next").is_null());
}

BOOST_AUTO_TEST_CASE(single_guest_has_detail_fields)
{
    auto server = start_server();
    test_client client(*server);
    auto token = client.fetch_token();
    auto list = client.get("/v1/guests?limit=1", token).object();
    std::string id(list.at("data").at(0).at("id").as_string());

    auto reply = client.get("/v1/guests/" + id, token);
    BOOST_TEST(reply.status == 200u);
    auto guest = reply.object().at("data").as_object();
    BOOST_TEST(guest.at("id").as_string() == id);
    const auto& profile = guest.at("user_profile").as_object();
    for (auto field :
         {"verified", "lat", "lng", "birth_day", "birth_month", "postcode", "country", "gender"}) {
        BOOST_TEST(profile.contains(field), "user_profile." << field);
    }
    BOOST_TEST(guest.at("organization_registration_personalisation_choice").is_array());
    BOOST_TEST(guest.at("custom_question_answers").is_array());

    auto unknown = client.get("/v1/guests/no-such-guest", token);
    BOOST_TEST(unknown.status == 404u);
    BOOST_TEST(unknown.object().at("error").as_string() == "not_found");
}

BOOST_AUTO_TEST_CASE(guest_create_then_get)
{
    auto server = start_server();
    test_client client(*server);
    auto token = client.fetch_token();
    std::vector<std::pair<std::string, std::string>> auth{{"Authorization", "Bearer " + token}};

    auto created = client.post_json(
        "/v1/guests",
        R"({"email":"new.guest@example.com","first":"New","last":"Guest","birth_month":7,"sms_opt_in":true})",
        auth);
    BOOST_TEST_REQUIRE(created.status == 201u);
    auto guest = created.object().at("data").as_object();
    std::string id(guest.at("id").as_string());
    BOOST_TEST(created.header("Location") == "/v1/guests/" + id);
    BOOST_TEST(guest.at("sms_opt_in_at").is_string());
    BOOST_TEST(guest.at("data_opt_in_at").is_null());

    auto fetched = client.get("/v1/guests/" + id, token).object().at("data").as_object();
    BOOST_TEST(fetched.at("user_profile").at("email").as_string() == "new.guest@example.com");
    BOOST_TEST(fetched.at("user_profile").at("birth_month").as_int64() == 7);

    auto search = client.get("/v1/guests?search=new.guest", token).object();
    BOOST_TEST(search.at("data").as_array().size() == 1u);

    auto duplicate = client.post_json("/v1/guests", R"({"email":"NEW.guest@example.com"})", auth);
    BOOST_TEST(duplicate.status == 422u);
    BOOST_TEST(duplicate.object().at("errors").as_object().contains("email"));

    auto missing = client.post_json("/v1/guests", R"({"first":"Nobody"})", auth);
    BOOST_TEST(missing.status == 422u);

    auto wrong_types = client.post_json(
        "/v1/guests", R"({"email":"x@example.com","birth_day":40,"lat":"north"})", auth);
    BOOST_TEST(wrong_types.status == 422u);
    auto errors = wrong_types.object().at("errors").as_object();
    BOOST_TEST(errors.contains("birth_day"));
    BOOST_TEST(errors.contains("lat"));

    auto not_json = client.send(http::verb::post, "/v1/guests", "email=x",
                                {{"Authorization", "Bearer " + token},
                                 {"Content-Type", "application/x-www-form-urlencoded"}});
    BOOST_TEST(not_json.status == 415u);
}

// ---------------------------------------------------------------------------
// Control endpoints and stats

BOOST_AUTO_TEST_CASE(stats_json_has_every_key)
{
    auto server = start_server();
    test_client client(*server);
    client.fetch_token();

    auto reply = client.get("/_emulator/stats");
    BOOST_TEST(reply.status == 200u);
    auto body = reply.object();
    for (auto key : {"token_requests", "tokens_issued", "rejections", "rate_limited",
                     "connections_accepted", "api_requests", "api_unauthorized", "api_rate_limited",
                     "faults_applied", "token_request_times_ms"}) {
        BOOST_TEST(body.contains(key), "key " << key);
    }
    BOOST_TEST(body.at("rejections").is_object());
    BOOST_TEST(body.at("token_request_times_ms").as_array().size() == 1u);
    BOOST_TEST(body.at("token_requests").as_int64() == 1);
    BOOST_TEST(body.at("api_requests").as_int64() == 0);

    auto direct = server->stats_json();
    BOOST_TEST(direct.at("token_requests") == body.at("token_requests"));
}

BOOST_AUTO_TEST_CASE(control_endpoints_change_faults)
{
    auto server = start_server();
    test_client client(*server);

    auto applied = client.post_json("/_emulator/faults", R"({"token":"429","api":"401"})");
    BOOST_TEST(applied.status == 200u);
    BOOST_TEST(client.request_token().status == 429u);
    auto token = client.fetch_token();
    BOOST_TEST(client.get("/v1/guests", token).status == 401u);

    auto invalid = client.post_json("/_emulator/faults", R"({"token":"explode"})");
    BOOST_TEST(invalid.status == 400u);
    std::string description(invalid.object().at("error_description").as_string());
    BOOST_TEST(description.find("explode") != std::string::npos);

    auto lifetime = client.post_json("/_emulator/token-lifetime", R"({"seconds":2.5})");
    BOOST_TEST(lifetime.status == 200u);
    BOOST_TEST(client.request_token().object().at("expires_in").as_int64() == 3);

    auto all = client.post_json("/_emulator/revoke", R"({"all":true})");
    BOOST_TEST(all.object().at("revoked").as_int64() == 2);
}

// ---------------------------------------------------------------------------
// Parsing and options

BOOST_AUTO_TEST_CASE(parse_fault_script_accepts_items)
{
    auto items = emulator::parse_fault_script(
        " 5xx-html:503*2, oauth-error:invalid_client:401,slow:250,expires-in:\"1,5\",ok* ");
    BOOST_TEST_REQUIRE(items.size() == 5u);
    BOOST_TEST((items[0].kind == emulator::fault_kind::html_5xx));
    BOOST_TEST(items[0].status == 503);
    BOOST_TEST(items[0].repeat == 2u);
    BOOST_TEST((items[1].kind == emulator::fault_kind::oauth_error));
    BOOST_TEST(items[1].text == "invalid_client");
    BOOST_TEST(items[1].status == 401);
    BOOST_TEST(items[2].number == 250);
    BOOST_TEST(items[3].text == "\"1,5\"");
    BOOST_TEST(items[4].forever);

    BOOST_TEST(emulator::parse_fault_script("").empty());
    BOOST_TEST(emulator::to_string(items[0]) == "5xx-html:503*2");
    BOOST_TEST(emulator::to_string(items[1]) == "oauth-error:invalid_client:401");

    for (auto script : {"ok",
                        "429",
                        "429-seconds:0",
                        "429-date:60",
                        "oauth-error:slow_down",
                        "bare-400",
                        "reset",
                        "close-mid-body",
                        "stall",
                        "garbage-json",
                        "truncated-json",
                        "html-200",
                        "error-200",
                        "oversize:2",
                        "expires-in:-5",
                        "expires-in:3599.5",
                        "expires-in-missing",
                        "no-access-token",
                        "token-type:mac",
                        "echo-secret",
                        "charset",
                        "401"}) {
        BOOST_CHECK_NO_THROW(emulator::parse_fault_script(script));
    }
}

BOOST_AUTO_TEST_CASE(parse_fault_script_rejects_items)
{
    for (std::string script :
         {"explode", "5xx-html:404", "5xx-html", "slow:-1", "slow:abc", "reset:1", "ok*0", "ok*x",
          "429-seconds", "oversize:1", "expires-in:{", "oauth-error:bad code",
          "token-type:", "ok,,ok", "ok*,reset"}) {
        try {
            emulator::parse_fault_script(script);
            BOOST_ERROR("accepted invalid script '" << script << "'");
        } catch (const std::invalid_argument& error) {
            std::string message = error.what();
            BOOST_TEST(message.find("fault") != std::string::npos, script << ": " << message);
        }
    }
    try {
        emulator::parse_fault_script("ok,slow:10,explode*2");
        BOOST_ERROR("accepted an unknown item");
    } catch (const std::invalid_argument& error) {
        BOOST_TEST(std::string(error.what()).find("'explode*2'") != std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(fault_scripts_check_target)
{
    emulator::server server(emulator::options{});
    BOOST_CHECK_THROW(server.set_fault_script("401"), std::invalid_argument);
    BOOST_CHECK_THROW(server.set_api_fault_script("expires-in:5"), std::invalid_argument);
    BOOST_CHECK_THROW(server.set_api_fault_script("echo-secret"), std::invalid_argument);
    BOOST_CHECK_NO_THROW(server.set_api_fault_script("401,slow:5"));
}

BOOST_AUTO_TEST_CASE(options_are_validated)
{
    auto rejects = [](auto change) {
        emulator::options opts;
        change(opts);
        try {
            emulator::server server(opts);
        } catch (const std::invalid_argument&) {
            return true;
        }
        return false;
    };
    BOOST_TEST(rejects([](auto& o) { o.listen = "localhost:80"; }));
    BOOST_TEST(rejects([](auto& o) { o.listen = "127.0.0.1"; }));
    BOOST_TEST(rejects([](auto& o) { o.listen = "127.0.0.1:70000"; }));
    BOOST_TEST(rejects([](auto& o) { o.clients = {{"a", ""}}; }));
    BOOST_TEST(rejects([](auto& o) { o.clients = {{"a", "x"}, {"a", "y"}}; }));
    BOOST_TEST(rejects([](auto& o) { o.token_lifetime = 0ms; }));
    BOOST_TEST(rejects([](auto& o) { o.token_rate = {0, 60s}; }));
    BOOST_TEST(rejects([](auto& o) { o.api_rate = {5, 0ms}; }));
    BOOST_TEST(rejects([](auto& o) { o.rate_limit_status = 503; }));
    BOOST_TEST(rejects([](auto& o) { o.fault_script = "explode"; }));
    BOOST_TEST(rejects([](auto& o) { o.api_fault_script = "echo-secret"; }));
    BOOST_TEST(rejects([](auto& o) { o.idle_timeout = 0ms; }));
    BOOST_TEST(rejects([](auto& o) { o.cert_host = "bad host"; }));
    BOOST_TEST(rejects([](auto& o) {
        o.plain_http = true;
        o.cert_out = "/tmp/x.pem";
    }));
    BOOST_TEST(!rejects([](auto& o) { o.listen = "[::1]:0"; }));
}

BOOST_AUTO_TEST_CASE(parse_rate_forms)
{
    auto budget = emulator::parse_rate("20/60");
    BOOST_TEST(budget.requests == 20u);
    BOOST_TEST(budget.period.count() == 60000);
    BOOST_TEST(emulator::parse_rate("5/0.5").period.count() == 500);
    BOOST_CHECK_THROW(emulator::parse_rate("0/60"), std::invalid_argument);
    BOOST_CHECK_THROW(emulator::parse_rate("20"), std::invalid_argument);
    BOOST_CHECK_THROW(emulator::parse_rate("20/x"), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(start_twice_is_rejected)
{
    auto server = start_server();
    BOOST_CHECK_THROW(server->start(), std::logic_error);
    server->stop();
    server->stop();
}
