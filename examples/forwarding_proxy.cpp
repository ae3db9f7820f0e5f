// An existing Beast HTTP server that forwards each request to the Stampede API with the
// bearer header added by the SDK. Clients of this server never see the credentials.
//
//   STAMPEDE_CLIENT_ID=... STAMPEDE_CLIENT_SECRET=... ./forwarding_proxy [PORT]
//   curl http://127.0.0.1:PORT/v1/guests?limit=5
//
// Environment: as the coroutine example, plus STAMPEDE_API_URL for the API base URL.
// The server listens on 127.0.0.1 only; PORT defaults to 8080.

#include "example_settings.hpp"

#include <stampede/api_client.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/parse.hpp>

#include <charconv>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Forwards one request and builds the response for our own client.
asio::awaitable<http::response<http::string_body>>
forward(stampede::api_client& api, const http::request<http::string_body>& request)
{
    http::response<http::string_body> response;
    response.version(request.version());
    response.keep_alive(request.keep_alive());
    response.set(http::field::content_type, "application/json");

    std::optional<boost::json::value> body;
    if (!request.body().empty()) {
        boost::system::error_code parse_ec;
        body = boost::json::parse(request.body(), parse_ec);
        if (parse_ec) {
            response.result(http::status::bad_request);
            response.body() = R"({"error":"the request body is not valid JSON"})";
            response.prepare_payload();
            co_return response;
        }
    }

    stampede::diagnostics diag;
    auto [ec, api_response] = co_await api.async_request(
        request.method(), request.target(), std::move(body), stampede::request_options{}, diag,
        use_tuple);
    if (ec && api_response.status == 0) {
        // No response from the API at all: report a gateway error without details.
        response.result(http::status::bad_gateway);
        response.body() = R"({"error":"the API could not be reached"})";
        std::cerr << "forwarding failed: " << ec.message() << ": " << diag.client_message() << '\n';
    } else {
        response.result(api_response.status);
        response.body() = std::move(api_response.body);
    }
    response.prepare_payload();
    co_return response;
}

asio::awaitable<void> serve(tcp::socket socket, stampede::api_client& api)
{
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (;;) {
        http::request<http::string_body> request;
        stream.expires_after(std::chrono::seconds(30));
        auto [read_ec, read_bytes] = co_await http::async_read(stream, buffer, request, use_tuple);
        if (read_ec) {
            co_return; // closed by the client, timed out, or malformed
        }
        auto response = co_await forward(api, request);
        auto [write_ec, written] = co_await http::async_write(stream, response, use_tuple);
        if (write_ec || !response.keep_alive()) {
            co_return;
        }
    }
}

asio::awaitable<void> listen(tcp::acceptor& acceptor, stampede::api_client& api)
{
    for (;;) {
        auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
        if (ec) {
            co_return;
        }
        asio::co_spawn(acceptor.get_executor(), serve(std::move(socket), api), asio::detached);
    }
}

} // namespace

// Parses the optional PORT argument. Port 0 lets the system pick a free port.
std::optional<unsigned short> parse_port(std::string_view text)
{
    unsigned value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc{} || end != text.data() + text.size() || value > 65535) {
        return std::nullopt;
    }
    return static_cast<unsigned short>(value);
}

int main(int argc, char** argv)
{
    unsigned short port = 8080;
    if (argc > 1) {
        const std::string_view argument = argv[1];
        if (argument == "--help" || argument == "-h") {
            std::cout << "usage: forwarding_proxy [PORT]\n"
                         "Listens on 127.0.0.1:PORT (default 8080, 0 for any free port) and "
                         "forwards each request to the Stampede API with a bearer token.\n"
                         "Credentials come from STAMPEDE_CLIENT_ID and STAMPEDE_CLIENT_SECRET.\n";
            return 0;
        }
        const auto parsed = parse_port(argument);
        if (!parsed) {
            std::cerr << "forwarding_proxy: invalid port '" << argument
                      << "'; expected a number from 0 to 65535\n";
            return 2;
        }
        port = *parsed;
    }
    asio::io_context ctx;

    stampede::token_source auth(ctx, examples::settings_from_environment());
    stampede::api_client_settings api_settings;
    api_settings.base_url = examples::env_or("STAMPEDE_API_URL", std::string(stampede::default_api_url));
    api_settings.transport.ca_file = examples::env_or("STAMPEDE_CA_FILE", "");
    stampede::api_client api(auth, api_settings);

    tcp::acceptor acceptor(ctx, {asio::ip::make_address("127.0.0.1"), port});
    std::cout << "forwarding http://127.0.0.1:" << acceptor.local_endpoint().port() << "/ to "
              << api_settings.base_url << '\n';

    asio::signal_set signals(ctx, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code, int) {
        acceptor.close();
        auth.shutdown();
        ctx.stop();
    });
    asio::co_spawn(ctx, listen(acceptor, api), asio::detached);
    ctx.run();
}
