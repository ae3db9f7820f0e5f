// Gets a token with `co_await auth.token()` and prints what it is, never its value.
//
// Environment: STAMPEDE_CLIENT_ID, STAMPEDE_CLIENT_SECRET, and optionally
// STAMPEDE_TOKEN_URL and STAMPEDE_CA_FILE (to use the emulator's certificate).

#include "example_settings.hpp"

#include <stampede/token_source.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <iostream>

namespace asio = boost::asio;

asio::awaitable<void> print_token(stampede::token_source& auth)
{
    try {
        auto token = co_await auth.token();
        std::cout << "got a " << token.token_type() << " token for scope '" << token.scope()
                  << "' (" << token.value().size() << " characters)\n";

        // A second call is served from the cache without a request.
        auto again = co_await auth.token();
        std::cout << "second call: " << auth.stats().requests << " request(s) in total\n";
        (void)again;
    } catch (const stampede::error_with_diagnostics& e) {
        std::cerr << "token request failed: " << e.what() << '\n';
        if (!e.get_diagnostics().server_message().empty()) {
            std::cerr << "server said: " << e.get_diagnostics().server_message() << '\n';
        }
    }
    auth.shutdown(); // lets io_context::run() return
}

int main()
{
    asio::io_context ctx;
    stampede::token_source auth(ctx, examples::settings_from_environment());
    asio::co_spawn(ctx, print_token(auth), asio::detached);
    ctx.run();
}
