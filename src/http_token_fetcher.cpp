#include <stampede/detail/http_token_fetcher.hpp>

#include <stampede/detail/form_encoding.hpp>
#include <stampede/detail/http_connection.hpp>
#include <stampede/detail/token_wire.hpp>
#include <stampede/detail/url.hpp>

#include <openssl/crypto.h>

#include <deque>
#include <string>

namespace asio = boost::asio;
using boost::system::error_code;

namespace stampede::detail {
namespace {

// Issued tokens remembered for redaction, besides the secret. Server text that echoes an
// older token than these is not recognised.
constexpr std::size_t remembered_tokens = 4;

class http_token_fetcher final : public token_fetcher {
public:
    http_token_fetcher(const asio::any_io_executor& ex, const token_source_settings& settings,
                       endpoint_url url, std::shared_ptr<asio::ssl::context> tls)
        : settings_(settings)
        , url_(std::move(url))
        , connection_(ex, url_, settings.transport, std::move(tls), settings.logger)
    {
        rebuild_redactor();
    }

    asio::awaitable<error_code> fetch(fetched_token& out, diagnostics& diag) override
    {
        http_request request = make_token_request(url_, settings_);
        http_response response;
        out.sent_at = std::chrono::steady_clock::now();
        // Not replayable: a resend after a failed reused connection would skip the rate
        // limiter, and the server may have counted the first attempt. The connection
        // still reconnects before sending when it sees the server closed it while idle.
        error_code ec = co_await connection_.async_send(request, response, false, diag);
        wipe(request.body());
        if (ec) {
            co_return ec;
        }

        token_response parsed;
        ec = parse_token_response(response, redactor_, std::chrono::system_clock::now(), parsed,
                                  diag);
        wipe(response.body());
        if (ec) {
            co_return ec;
        }

        remember_token(parsed.access_token);
        out.access_token = std::move(parsed.access_token);
        out.token_type = std::move(parsed.token_type);

        // A response without a scope grants the requested one (RFC 6749, section 5.1).
        out.scope = parsed.scope.empty() ? settings_.scope : std::move(parsed.scope);
        out.expires_in = parsed.expires_in;
        co_return error_code{};
    }

    void close() override { connection_.close(); }

    std::size_t connections_opened() const noexcept override
    {
        return connection_.stats().connects;
    }

private:
    // The request body contains the client secret, and a successful response body the token.
    static void wipe(std::string& text) noexcept { OPENSSL_cleanse(text.data(), text.size()); }

    void remember_token(const secret_string& token)
    {
        tokens_.push_back(token);
        if (tokens_.size() > remembered_tokens) {
            tokens_.pop_front();
        }
        rebuild_redactor();
    }

    void rebuild_redactor()
    {
        redactor_ = redactor{};
        redactor_.add(settings_.client_secret.reveal());

        // A Basic header carries the form-encoded secret, whose base64 differs from the
        // raw secret's when the secret has reserved characters.
        if (settings_.auth_method == client_auth_method::client_secret_basic) {
            std::string encoded = form_urlencode(settings_.client_secret.reveal());
            redactor_.add(encoded);
            OPENSSL_cleanse(encoded.data(), encoded.size());
        }
        for (const secret_string& token : tokens_) {
            redactor_.add(token.reveal());
        }
    }

    const token_source_settings settings_;
    endpoint_url url_;
    http_connection connection_;
    redactor redactor_;
    std::deque<secret_string> tokens_;
};

} // namespace

std::unique_ptr<token_fetcher> make_http_token_fetcher(const asio::any_io_executor& ex,
                                                       const token_source_settings& settings)
{
    diagnostics diag;
    endpoint_url url;
    error_code ec = parse_endpoint_url(settings.token_url, "token_url", settings.transport, url, diag);
    std::shared_ptr<asio::ssl::context> tls;
    if (!ec && url.tls) {
        ec = make_tls_context(settings.transport, tls, diag);
    }
    if (ec) {
        throw error_with_diagnostics(ec, std::move(diag));
    }
    return std::make_unique<http_token_fetcher>(ex, settings, std::move(url), std::move(tls));
}

} // namespace stampede::detail
