// Gets a token with a completion handler instead of a coroutine.
//
// Environment: as the coroutine example.

#include "example_settings.hpp"

#include <stampede/token_source.hpp>

#include <boost/asio/io_context.hpp>

#include <iostream>

int main()
{
    boost::asio::io_context ctx;
    stampede::token_source auth(ctx, examples::settings_from_environment());
    stampede::diagnostics diag;

    auth.async_token(diag, [&](boost::system::error_code ec, stampede::access_token token) {
        if (ec) {
            std::cerr << "token request failed: " << ec.message() << ": " << diag.client_message()
                      << '\n';
        } else {
            // operator<< prints the type, scope and expiry, never the value.
            std::cout << "got " << token << '\n';
        }
        auth.shutdown();
    });
    ctx.run();
}
