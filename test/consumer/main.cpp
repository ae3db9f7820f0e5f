// Builds against the SDK's public headers and validates settings without any network.
#include <stampede/token_source.hpp>

#include <boost/asio/io_context.hpp>

#include <iostream>

int main()
{
    boost::asio::io_context ctx;
    stampede::token_source_settings settings;
    settings.client_id = "consumer";
    settings.client_secret = stampede::secret_string("consumer-secret");
    try {
        stampede::token_source auth(ctx, settings);
        std::cout << "constructed: " << auth.settings().client_id << '\n';
        return 0;
    } catch (const stampede::error_with_diagnostics& e) {
        std::cerr << e.what() << '\n';
        return 1;
    }
}
