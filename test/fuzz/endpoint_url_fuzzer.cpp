// Fuzzes detail::parse_endpoint_url with the input as the URL, with and without
// `allow_insecure_http`. An accepted URL must give a host, a port in 1..65535 and a
// target that starts with '/', and must read back the same from its parts. A rejection
// must carry a one-line message that does not repeat a password from the URL.

#include "fuzz_support.hpp"

#include <stampede/detail/url.hpp>
#include <stampede/error.hpp>

#include <boost/url/parse.hpp>

#include <charconv>
#include <string>

namespace {

namespace fuzz = stampede::fuzz;

using stampede::diagnostics;
using stampede::transport_settings;
using stampede::detail::endpoint_url;

struct parse_result {
    boost::system::error_code ec;
    endpoint_url url;
    diagnostics diag;
};

parse_result parse(std::string_view text, bool allow_insecure_http)
{
    transport_settings transport;
    transport.allow_insecure_http = allow_insecure_http;
    parse_result result;
    result.ec =
        stampede::detail::parse_endpoint_url(text, "token_url", transport, result.url, result.diag);
    return result;
}

void check_accepted(const parse_result& result, bool allow_insecure_http)
{
    const endpoint_url& url = result.url;
    fuzz::check(!url.host.empty(), "an accepted URL has no host");
    fuzz::check(!url.target.empty() && url.target.front() == '/',
                "the target does not start with '/'", url.target);
    unsigned port = 0;
    const auto [end, ec] =
        std::from_chars(url.port.data(), url.port.data() + url.port.size(), port);
    fuzz::check(ec == std::errc{} && end == url.port.data() + url.port.size() && port >= 1 &&
                    port <= 65535,
                "the port is not a number in 1..65535", url.port);
    fuzz::check(url.tls || allow_insecure_http || url.is_loopback(),
                "plain http to a host that is not loopback was accepted", url.host);

    // The parts make a URL that parses to the same parts.
    const std::string rebuilt =
        std::string(url.tls ? "https://" : "http://") + url.authority() + url.target;
    const parse_result again = parse(rebuilt, allow_insecure_http);
    fuzz::check(!again.ec, "the URL rebuilt from the parts is rejected",
                rebuilt + ": " + again.diag.client_message());
    fuzz::check(again.url == url, "the URL rebuilt from the parts parses differently", rebuilt);
}

std::size_t count(std::string_view text, std::string_view part)
{
    std::size_t n = 0;
    for (auto pos = text.find(part); pos != std::string_view::npos;
         pos = text.find(part, pos + 1)) {
        ++n;
    }
    return n;
}

// Checks that the message does not show the password of the URL's user info. The same
// URL with another password of the same length must give the password as often, so that
// words of the message itself that equal the password do not count.
void check_password_hidden(std::string_view text, const std::string& message)
{
    const auto parsed = boost::urls::parse_uri_reference(text);
    if (!parsed || !parsed->has_password()) {
        return;
    }
    const std::string_view password = parsed->encoded_password();
    if (password.size() < 4) {
        return;
    }
    const auto offset = static_cast<std::size_t>(password.data() - text.data());
    std::string masked(text);
    masked.replace(offset, password.size(), std::string(password.size(), 'Z'));

    const parse_result other = parse(masked, false);
    if (count(message, password) > count(other.diag.client_message(), password)) {
        fuzz::fail("the message repeats the password", message);
    }
}

void check_rejected(std::string_view text, const parse_result& result)
{
    fuzz::check(result.ec == stampede::client_errc::invalid_settings ||
                    result.ec == stampede::client_errc::insecure_url,
                "a rejection with an unexpected code", result.ec.message());
    const std::string& message = result.diag.client_message();
    fuzz::check(!message.empty(), "a rejection has no message");
    fuzz::check_single_line(message, "the client message");
    check_password_hidden(text, message);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string_view text = fuzz::as_text(data, size);
    const parse_result strict = parse(text, false);
    const parse_result lenient = parse(text, true);

    for (const auto& [result, allow] : {std::pair{&strict, false}, std::pair{&lenient, true}}) {
        if (result->ec) {
            check_rejected(text, *result);
        } else {
            check_accepted(*result, allow);
        }
    }

    // Allowing plain http only adds URLs, and changes nothing about the others.
    if (!strict.ec) {
        fuzz::check(!lenient.ec && lenient.url == strict.url,
                    "allow_insecure_http changed an accepted URL");
    }
    if (lenient.ec) {
        fuzz::check(strict.ec == lenient.ec, "allow_insecure_http changed a rejection");
    }
    return 0;
}
