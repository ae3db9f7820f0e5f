// Fuzzes detail::parse_token_response with a response built from the input:
//
//     STATUS
//     Name: value            (any number of header lines)
//                            (an empty line)
//     BODY
//
// A success must be a token that can go into an Authorization header, and a failure a
// typed error with a message. No text in the diagnostics may contain a control character,
// the client secret or a token given to the redactor, as is or base64-encoded.

#include "fuzz_support.hpp"

#include <stampede/detail/token_wire.hpp>
#include <stampede/error.hpp>
#include <stampede/retry.hpp>

#include <chrono>

namespace {

using namespace stampede;
using stampede::detail::http_response;

constexpr std::string_view client_secret = "fuzz-client-secret-Q7";
constexpr std::string_view earlier_token = "EarlierTokenZk3Lq9XwV1";

const detail::redactor& known_secrets()
{
    static const detail::redactor secrets = [] {
        detail::redactor r;
        r.add(client_secret);
        r.add(earlier_token);
        return r;
    }();
    return secrets;
}

// Reads the status line and the header lines, leaving the body in `input`.
http_response make_response(std::string_view& input)
{
    http_response response;
    const std::int64_t status = fuzz::parse_integer(fuzz::take_line(input), 200);
    response.result(static_cast<unsigned>((status % 1000 + 1000) % 1000));
    while (!input.empty()) {
        const std::string_view line = fuzz::take_line(input);
        if (line.empty()) {
            break;
        }
        const auto colon = line.find(':');
        if (colon == 0 || colon == std::string_view::npos) {
            continue;
        }
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') {
            value.remove_prefix(1);
        }
        response.insert(line.substr(0, colon), value);
    }
    response.body() = std::string(input);
    return response;
}

void check_shown_text(const diagnostics& diag)
{
    const std::pair<std::string_view, std::string_view> texts[] = {
        {"client_message", diag.client_message()},
        {"server_message", diag.server_message()},
        {"server_error_code", diag.server_error_code()},
    };
    for (const auto& [where, text] : texts) {
        fuzz::check_single_line(text, where);
        fuzz::check_no_secret(text, client_secret, where);
        fuzz::check_no_secret(text, earlier_token, where);
    }
}

void check_success(const http_response& response, const detail::token_response& token)
{
    fuzz::check(response.result_int() >= 200 && response.result_int() < 300,
                "a token was accepted from a status other than 2xx");
    const std::string_view value = token.access_token.reveal();
    fuzz::check(!value.empty(), "an empty access_token was accepted");
    for (const char c : value) {
        const auto byte = static_cast<unsigned char>(c);
        fuzz::check(byte > 0x20 && byte < 0x7f,
                    "an access_token that cannot go into a header was accepted");
    }
    fuzz::check(token.token_type == "Bearer", "token_type is not Bearer", token.token_type);
    if (token.expires_in) {
        constexpr std::chrono::milliseconds ten_years{std::int64_t{10} * 365 * 24 * 3600 * 1000};
        fuzz::check(token.expires_in->count() > 0, "expires_in is not positive");
        fuzz::check(*token.expires_in <= ten_years, "expires_in exceeds ten years");
    }
}

void check_failure(const http_response& response, const boost::system::error_code& ec,
                   const diagnostics& diag)
{
    const unsigned status = response.result_int();
    const auto& category = ec.category();
    fuzz::check(category == client_category() || category == oauth_category() ||
                    category == http_category(),
                "the error is in an unexpected category", ec.message());
    if (category == http_category()) {
        fuzz::check(static_cast<unsigned>(ec.value()) == status,
                    "the HTTP error differs from the status");
        fuzz::check(status < 200 || status >= 300, "a 2xx status became an HTTP error");
    }
    if (category == oauth_category()) {
        fuzz::check(!diag.server_error_code().empty(), "an OAuth error has no raw error code");
    }
    fuzz::check(!diag.client_message().empty(), "a failure has no client message");

    // The retry loop decides by the classifier alone, which must never take a response for
    // a cancellation.
    const retry_classifier classifier({"slow_down", "temporarily_unavailable"});
    fuzz::check(classifier.classify(ec, diag) != failure_kind::aborted,
                "a response was classified as a cancellation");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    std::string_view input = fuzz::as_text(data, size);
    const http_response response = make_response(input);

    const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
    detail::token_response token;
    diagnostics diag;
    const auto ec = detail::parse_token_response(response, known_secrets(), now, token, diag);

    fuzz::check(diag.http_status() == response.result_int(), "http_status differs from the status");
    if (diag.retry_after()) {
        fuzz::check(diag.retry_after()->count() >= 0, "a negative Retry-After delay");
    }
    if (ec) {
        check_failure(response, ec, diag);
    } else {
        check_success(response, token);
    }
    check_shown_text(diag);
    return 0;
}
