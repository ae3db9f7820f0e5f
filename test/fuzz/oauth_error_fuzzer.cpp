// Fuzzes the OAuth error path of detail::parse_token_response. The input is `key=value`
// lines, from which the harness builds a well-formed JSON error body, so that every input
// reaches the error handling instead of stopping at the JSON syntax:
//
//     status=400                 (an error status; 2xx and other values are mapped into 300..599)
//     error=invalid_client
//     error_description=...
//     error_uri=...
//     access_token=...           (a token inside an error body, which must be dropped)
//     retry_after=120            (the Retry-After header)
//     content_type=application/json
//
// The result must be the OAuth error named by `error` with its raw code kept, the retry
// decision must follow the configured list, and no text may show the client secret or a
// known token.

#include "fuzz_support.hpp"

#include <stampede/detail/token_wire.hpp>
#include <stampede/error.hpp>
#include <stampede/retry.hpp>

#include <boost/beast/http/field.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
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

const retry_classifier& classifier()
{
    static const retry_classifier instance({"slow_down", "temporarily_unavailable",
                                            "rate_limit_exceeded", "too_many_requests",
                                            "server_error"});
    return instance;
}

// Maps any number to an error status in 300..599.
unsigned error_status(std::int64_t value)
{
    return 300 + static_cast<unsigned>((value % 300 + 300) % 300);
}

http_response make_response(const std::map<std::string, std::string, std::less<>>& fields)
{
    const auto field = [&](std::string_view key) -> const std::string* {
        const auto it = fields.find(key);
        return it == fields.end() ? nullptr : &it->second;
    };

    http_response response;
    const std::string* status = field("status");
    response.result(error_status(status ? fuzz::parse_integer(*status, 400) : 400));

    const std::string* content_type = field("content_type");
    response.set(boost::beast::http::field::content_type,
                 content_type ? *content_type : std::string("application/json"));
    if (const std::string* retry_after = field("retry_after")) {
        response.set(boost::beast::http::field::retry_after, *retry_after);
    }

    boost::json::object body;
    const std::string* error = field("error");
    body["error"] = error ? *error : std::string("invalid_client");
    for (const std::string_view key : {"error_description", "error_uri", "access_token"}) {
        if (const std::string* value = field(key)) {
            body[key] = *value;
        }
    }
    response.body() = boost::json::serialize(body);
    return response;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const auto fields = fuzz::parse_key_values(fuzz::as_text(data, size));
    const http_response response = make_response(fields);

    // boost::json::serialize copies invalid UTF-8 as it is, which makes a body that is
    // not JSON. The token_response harness covers such bodies.
    boost::system::error_code json_ec;
    boost::json::parse(response.body(), json_ec);
    if (json_ec) {
        return 0;
    }
    const auto error_it = fields.find("error");
    const std::string error = error_it == fields.end() ? "invalid_client" : error_it->second;

    const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
    detail::token_response token;
    diagnostics diag;
    const auto ec = detail::parse_token_response(response, known_secrets(), now, token, diag);
    const unsigned status = response.result_int();

    // An empty `error` is not an OAuth error, so the status decides.
    if (error.empty()) {
        fuzz::check(ec == make_http_error(status), "an empty error did not give the status",
                    ec.message());
    } else {
        fuzz::check(ec == make_error_code(oauth_errc_from_string(error)),
                    "the error code differs from the error field", ec.message());
        // The code is shown sanitized, so a code of control characters alone may be empty.
        const bool visible =
            std::any_of(error.begin(), error.end(), [](char c) { return c > 0x20 && c < 0x7f; });
        fuzz::check(!visible || !diag.server_error_code().empty(),
                    "the raw error code was dropped");
    }
    fuzz::check(diag.http_status() == status, "http_status differs from the status");
    fuzz::check(token.access_token.empty(), "an error response filled the token");

    // The classifier's documented order: 401 first, then the status for OAuth errors,
    // then the configured list.
    const failure_kind kind = classifier().classify(ec, diag);
    if (status == 401) {
        fuzz::check(kind == failure_kind::permanent, "a 401 was not permanent");
    } else if (!error.empty() && (status == 408 || status == 429 || status >= 500)) {
        fuzz::check(kind == failure_kind::retryable, "an overload status was not retryable");
    } else if (!error.empty()) {
        const bool listed = classifier().is_retryable_oauth_error(diag.server_error_code());
        fuzz::check((kind == failure_kind::retryable) == listed,
                    "the retry decision does not follow the configured list",
                    diag.server_error_code());
    }

    for (const std::string_view text :
         {std::string_view(diag.client_message()), std::string_view(diag.server_message()),
          std::string_view(diag.server_error_code())}) {
        fuzz::check_single_line(text, "the diagnostics");
        fuzz::check_no_secret(text, client_secret, "the diagnostics");
        fuzz::check_no_secret(text, earlier_token, "the diagnostics");
    }
    return 0;
}
