// Lists every guest of the organisation, page after page.
//
// Configuration comes from the environment:
//   STAMPEDE_CLIENT_ID, STAMPEDE_CLIENT_SECRET  the API key (required)
//   STAMPEDE_TOKEN_URL  token endpoint (default https://global.stampede.ai/oauth/token)
//   STAMPEDE_API_URL    API base URL (default https://global.stampede.ai/), required
//                       when STAMPEDE_TOKEN_URL is set
//   STAMPEDE_CA_FILE    PEM file of CAs to trust instead of the system store (optional)
//
// To run it against a local emulator, start `stampede-emulator --cert-out ca.pem` and use
// the client id demo-client with the secret demo-secret. Set STAMPEDE_TOKEN_URL to the
// token URL it prints, STAMPEDE_API_URL to that URL without `oauth/token`, and
// STAMPEDE_CA_FILE=ca.pem.

#include <stampede/api_client.hpp>
#include <stampede/guests.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdlib>
#include <iostream>
#include <string>

namespace asio = boost::asio;

namespace {

std::string env_or(const char* name, std::string fallback)
{
    const char* value = std::getenv(name);
    return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

asio::awaitable<int> list_guests(stampede::guests guests)
{
    stampede::diagnostics diag;
    const std::string every_guest; // an empty search matches every guest
    auto list = guests.async_list_all(every_guest, diag, asio::as_tuple(asio::use_awaitable));
    auto [ec, all] = co_await std::move(list);
    if (ec) {
        std::cerr << "listing guests failed: " << ec.message() << "\n  " << diag.client_message()
                  << '\n';
        if (!diag.server_message().empty()) {
            std::cerr << "  server: " << diag.server_message() << '\n';
        }
        co_return 1;
    }

    for (const stampede::guest& g : all) {
        const auto& profile = g.user_profile;
        std::cout << g.id << "  " << profile.first.value_or("") << ' '
                  << profile.last.value_or("") << "  " << profile.email.value_or("-") << '\n';
    }
    std::cout << all.size() << " guests\n";
    co_return 0;
}

} // namespace

int main()
{
    const std::string client_id = env_or("STAMPEDE_CLIENT_ID", "");
    const std::string client_secret = env_or("STAMPEDE_CLIENT_SECRET", "");
    if (client_id.empty() || client_secret.empty()) {
        std::cerr << "set STAMPEDE_CLIENT_ID and STAMPEDE_CLIENT_SECRET to the API key\n";
        return 2;
    }

    // A token URL of another server, such as the emulator, with the default API URL
    // would send that server's token to the real API host.
    const std::string token_url = env_or("STAMPEDE_TOKEN_URL", "");
    const std::string api_url = env_or("STAMPEDE_API_URL", "");
    if (!token_url.empty() && api_url.empty()) {
        std::cerr << "STAMPEDE_TOKEN_URL is set but STAMPEDE_API_URL is missing, so the API "
                     "requests would go to "
                  << stampede::default_api_url
                  << "; set STAMPEDE_API_URL to the API base URL of the same server (for "
                     "the emulator, its token URL without oauth/token)\n";
        return 2;
    }

    stampede::token_source_settings auth_settings;
    auth_settings.client_id = client_id;
    auth_settings.client_secret = stampede::secret_string(client_secret);
    auth_settings.token_url =
        token_url.empty() ? std::string(stampede::default_token_url) : token_url;
    auth_settings.transport.ca_file = env_or("STAMPEDE_CA_FILE", "");

    stampede::api_client_settings api_settings;
    api_settings.base_url = api_url.empty() ? std::string(stampede::default_api_url) : api_url;
    api_settings.transport.ca_file = auth_settings.transport.ca_file;

    try {
        asio::io_context io;
        stampede::token_source auth(io, std::move(auth_settings));
        stampede::api_client client(auth, std::move(api_settings));

        int status = 1;
        asio::co_spawn(io, list_guests(stampede::guests(client)),
                       [&](std::exception_ptr error, int result) {
                           status = error ? 1 : result;
                           // The token source keeps a refresh timer, so stop both objects
                           // to let run() return.
                           client.shutdown();
                           auth.shutdown();
                       });
        io.run();
        return status;
    } catch (const stampede::error_with_diagnostics& e) {
        std::cerr << "invalid settings: " << e.what() << '\n';
        return 2;
    }
}
