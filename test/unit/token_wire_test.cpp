// Unit tests of the token wire format (request builder, response parser, redaction) and
// of endpoint URL parsing. No I/O: every response is built in memory.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE token_wire
#include <boost/test/unit_test.hpp>

#include <stampede/detail/form_encoding.hpp>
#include <stampede/detail/token_wire.hpp>
#include <stampede/detail/url.hpp>
#include <stampede/error.hpp>
#include <stampede/retry.hpp>

#include <boost/beast/http/field.hpp>
#include <boost/json/parse.hpp>

#include <openssl/evp.h>

#include <chrono>
#include <string>
#include <vector>

namespace http = boost::beast::http;
namespace json = boost::json;

using stampede::client_errc;
using stampede::diagnostics;
using stampede::oauth_errc;
using stampede::detail::endpoint_url;
using stampede::detail::http_response;
using stampede::detail::redactor;
using stampede::detail::token_response;
using std::chrono::milliseconds;

namespace {

const auto fixed_now = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));

http_response make_response(unsigned status, std::string body,
                            std::string content_type = "application/json") {
    http_response response{static_cast<http::status>(status), 11};
    if (!content_type.empty()) {
        response.set(http::field::content_type, content_type);
    }
    response.body() = std::move(body);
    response.prepare_payload();
    return response;
}

struct parse_result {
    boost::system::error_code ec;
    token_response token;
    diagnostics diag;
};

parse_result parse(const http_response& response, const redactor& secrets = {}) {
    parse_result result;
    result.ec = stampede::detail::parse_token_response(response, secrets, fixed_now, result.token,
                                                       result.diag);
    return result;
}

parse_result parse(unsigned status, std::string body,
                   std::string content_type = "application/json") {
    return parse(make_response(status, std::move(body), std::move(content_type)));
}

std::string token_body(std::string expires_in_json) {
    return R"({"access_token":"tok-123","token_type":"Bearer","scope":"ALL:ALL","expires_in":)" +
           expires_in_json + "}";
}

bool contains(std::string_view text, std::string_view part) {
    return text.find(part) != std::string_view::npos;
}

std::string base64(std::string_view data) {
    std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
    const int length = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                       reinterpret_cast<const unsigned char*>(data.data()),
                                       static_cast<int>(data.size()));
    out.resize(static_cast<std::size_t>(length));
    return out;
}

std::string base64url(std::string_view data) {
    std::string out = base64(data);
    for (char& c : out) {
        if (c == '+') {
            c = '-';
        } else if (c == '/') {
            c = '_';
        }
    }
    while (!out.empty() && out.back() == '=') {
        out.pop_back();
    }
    return out;
}

std::string percent_encode(std::string_view data, bool lower_case, bool space_as_plus) {
    const char* digits = lower_case ? "0123456789abcdef" : "0123456789ABCDEF";
    std::string out;
    for (char c : data) {
        const auto byte = static_cast<unsigned char>(c);
        if (std::isalnum(byte) || c == '-' || c == '.' || c == '_' || c == '~') {
            out += c;
        } else if (c == ' ' && space_as_plus) {
            out += '+';
        } else {
            out += '%';
            out += digits[byte >> 4];
            out += digits[byte & 0xf];
        }
    }
    return out;
}

std::string base64_decode(std::string_view data) {
    std::string out(3 * (data.size() / 4), '\0');
    const int length = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                       reinterpret_cast<const unsigned char*>(data.data()),
                                       static_cast<int>(data.size()));
    BOOST_TEST_REQUIRE(length >= 0);
    out.resize(static_cast<std::size_t>(length));
    while (data.ends_with('=')) {
        data.remove_suffix(1);
        out.pop_back();
    }
    return out;
}

stampede::failure_kind classify(const parse_result& r) {
    const stampede::token_source_settings defaults;
    return stampede::retry_classifier(defaults.retryable_oauth_errors).classify(r.ec, r.diag);
}

stampede::token_source_settings request_settings(stampede::client_auth_method method) {
    stampede::token_source_settings settings;
    settings.client_id = "interop-client";
    settings.client_secret = stampede::secret_string("s3cr3t");
    settings.auth_method = method;
    return settings;
}

const endpoint_url example_token_url{true, "example.com", "443", "/token"};

struct url_result {
    boost::system::error_code ec;
    endpoint_url url;
    diagnostics diag;
};

url_result parse_url(std::string_view text, bool allow_insecure_http = false) {
    stampede::transport_settings transport;
    transport.allow_insecure_http = allow_insecure_http;
    url_result result;
    result.ec =
        stampede::detail::parse_endpoint_url(text, "token_url", transport, result.url, result.diag);
    return result;
}

} // namespace

BOOST_AUTO_TEST_SUITE(token_response_success)

BOOST_AUTO_TEST_CASE(ok_200) {
    const auto r = parse(200, token_body("3600"));
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.token.access_token.reveal() == "tok-123");
    BOOST_TEST(r.token.token_type == "Bearer");
    BOOST_TEST(r.token.scope == "ALL:ALL");
    BOOST_TEST(r.token.expires_in.has_value());
    BOOST_TEST(r.token.expires_in->count() == 3'600'000);
    BOOST_TEST(r.diag.http_status() == 200u);
    BOOST_TEST(r.diag.client_message().empty());
    BOOST_TEST(r.diag.server_message().empty());
    BOOST_TEST(!r.diag.retry_after().has_value());
}

BOOST_AUTO_TEST_CASE(content_type_parameters_and_case) {
    for (const char* type : {"application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
                             "application/json ; charset=\"utf-8\"", "APPLICATION/JSON"}) {
        BOOST_TEST_CONTEXT(type) {
            const auto r = parse(200, token_body("60"), type);
            BOOST_TEST(!r.ec);
            BOOST_TEST(r.token.access_token.reveal() == "tok-123");
        }
    }
}

BOOST_AUTO_TEST_CASE(json_under_wrong_or_missing_content_type) {
    for (const char* type : {"text/plain", "text/html", ""}) {
        BOOST_TEST_CONTEXT(type) {
            const auto r = parse(200, token_body("60"), type);
            BOOST_TEST(!r.ec);
            BOOST_TEST(r.token.access_token.reveal() == "tok-123");
        }
    }
}

BOOST_AUTO_TEST_CASE(unknown_fields_ignored) {
    const auto r = parse(200, R"({"access_token":"tok-123","token_type":"Bearer","expires_in":60,
        "refresh_token":"ignored","id_token":{"nested":[1,2,3]},"extra":null,"scope":["a","b"]})");
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.token.access_token.reveal() == "tok-123");
    BOOST_TEST(r.token.scope.empty());
}

BOOST_AUTO_TEST_CASE(form_encoded_200) {
    const auto r = parse(200,
                         "access_token=tok-123&token_type=bearer&expires_in=3600&"
                         "scope=api%3Aread+api%3Awrite&refresh_token=",
                         "application/x-www-form-urlencoded; charset=utf-8");
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.token.access_token.reveal() == "tok-123");
    BOOST_TEST(r.token.token_type == "Bearer");
    BOOST_TEST(r.token.scope == "api:read api:write");
    BOOST_TEST(r.token.expires_in.has_value());
    BOOST_TEST(r.token.expires_in->count() == 3'600'000);
}

BOOST_AUTO_TEST_CASE(form_encoded_without_token) {
    const auto r = parse(200, "token_type=Bearer", "Application/X-WWW-Form-URLEncoded");
    BOOST_TEST(r.ec == make_error_code(client_errc::missing_access_token));
}

BOOST_AUTO_TEST_CASE(absent_scope_is_empty) {
    const auto r =
        parse(200, R"({"access_token":"tok-123","token_type":"Bearer","expires_in":60})");
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.token.scope.empty());
}

BOOST_AUTO_TEST_CASE(token_type_case_insensitive) {
    for (const char* type : {"Bearer", "bearer", "BEARER", "bEaReR"}) {
        BOOST_TEST_CONTEXT(type) {
            const auto r =
                parse(200, R"({"access_token":"tok-123","expires_in":60,"token_type":")" +
                               std::string(type) + "\"}");
            BOOST_TEST(!r.ec);
            BOOST_TEST(r.token.token_type == "Bearer");
        }
    }
}

BOOST_AUTO_TEST_CASE(missing_or_null_token_type_is_bearer) {
    for (const char* body : {R"({"access_token":"tok-123","expires_in":60})",
                             R"({"access_token":"tok-123","expires_in":60,"token_type":null})"}) {
        BOOST_TEST_CONTEXT(body) {
            const auto r = parse(200, body);
            BOOST_TEST(!r.ec);
            BOOST_TEST(r.token.token_type == "Bearer");
        }
    }
}

BOOST_AUTO_TEST_CASE(retry_after_header_any_case) {
    for (const char* name : {"Retry-After", "retry-after", "RETRY-AFTER"}) {
        BOOST_TEST_CONTEXT(name) {
            auto response = make_response(429, "");
            response.set(name, "120");
            const auto r = parse(response);
            BOOST_TEST(r.ec == stampede::make_http_error(429));
            BOOST_TEST(r.diag.retry_after().has_value());
            BOOST_TEST(r.diag.retry_after()->count() == 120'000);
        }
    }
}

BOOST_AUTO_TEST_CASE(retry_after_on_oauth_error) {
    auto response = make_response(400, R"({"error":"slow_down"})");
    response.set(http::field::retry_after, "7");
    const auto r = parse(response);
    BOOST_TEST(r.ec == make_error_code(oauth_errc::slow_down));
    BOOST_TEST(r.diag.retry_after().has_value());
    BOOST_TEST(r.diag.retry_after()->count() == 7'000);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(token_response_fields)

BOOST_AUTO_TEST_CASE(unknown_token_type) {
    const auto r = parse(200, R"({"access_token":"tok-123","token_type":"mac","expires_in":60})");
    BOOST_TEST(r.ec == make_error_code(client_errc::unsupported_token_type));
    BOOST_TEST(contains(r.diag.client_message(), "\"mac\""));
    BOOST_TEST(contains(r.diag.client_message(), "Bearer"));
}

BOOST_AUTO_TEST_CASE(non_string_token_type) {
    const auto r = parse(200, R"({"access_token":"tok-123","token_type":7,"expires_in":60})");
    BOOST_TEST(r.ec == make_error_code(client_errc::unsupported_token_type));
}

BOOST_AUTO_TEST_CASE(missing_empty_or_non_string_access_token) {
    const std::vector<std::string> bodies{
        R"({"token_type":"Bearer","expires_in":60})",
        R"({"access_token":"","token_type":"Bearer","expires_in":60})",
        R"({"access_token":null,"token_type":"Bearer","expires_in":60})",
        R"({"access_token":12345,"token_type":"Bearer","expires_in":60})",
        R"({"access_token":["tok"],"token_type":"Bearer","expires_in":60})",
        R"({"access_token":{"value":"tok"},"token_type":"Bearer","expires_in":60})",
        R"({"access_token":"tok 123","token_type":"Bearer","expires_in":60})",
        R"({"access_token":"tok\r\nX-Injected: 1","token_type":"Bearer","expires_in":60})",
        R"({"access_token":"tok\u00e9","token_type":"Bearer","expires_in":60})",
        "{}",
    };
    for (const auto& body : bodies) {
        BOOST_TEST_CONTEXT(body) {
            const auto r = parse(200, body);
            BOOST_TEST(r.ec == make_error_code(client_errc::missing_access_token));
            BOOST_TEST(contains(r.diag.client_message(), "access_token"));
            BOOST_TEST(r.token.access_token.empty());
        }
    }
}

BOOST_AUTO_TEST_CASE(expires_in_valid_forms) {
    const std::int64_t ten_years_ms = std::int64_t{10} * 365 * 24 * 3600 * 1000;
    const std::vector<std::pair<std::string, std::int64_t>> cases{
        {"3600", 3'600'000},
        {"1", 1'000},
        {"0.5", 500},
        {"1.2345", 1'234},
        {"3600.0", 3'600'000},
        {"86400", 86'400'000},
        {"\"3600\"", 3'600'000},
        {"\"3600.25\"", 3'600'250},
        {"\"0.001\"", 1},
        {"315360000", ten_years_ms},
        {"315360001", ten_years_ms},
        {"9223372036854775807", ten_years_ms},
        {"18446744073709551615", ten_years_ms},
        {"1e300", ten_years_ms},
        {"\"99999999999999999999999\"", ten_years_ms},
    };
    for (const auto& [json_text, expected_ms] : cases) {
        BOOST_TEST_CONTEXT(json_text) {
            const auto r = parse(200, token_body(json_text));
            BOOST_TEST(!r.ec);
            BOOST_TEST(r.token.expires_in.has_value());
            if (r.token.expires_in) {
                BOOST_TEST(r.token.expires_in->count() == expected_ms);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(expires_in_absent_or_null) {
    const auto absent = parse(200, R"({"access_token":"tok-123","token_type":"Bearer"})");
    BOOST_TEST(!absent.ec);
    BOOST_TEST(!absent.token.expires_in.has_value());

    const auto null = parse(200, token_body("null"));
    BOOST_TEST(!null.ec);
    BOOST_TEST(!null.token.expires_in.has_value());
}

BOOST_AUTO_TEST_CASE(expires_in_invalid_forms) {
    const std::vector<std::string> cases{
        "0",          "-1",        "-3600",  "0.0",     "-0.5",
        "0.0001",     "-1e300",    "\"0\"",  "\"-5\"",  "\"+3600\"",
        "\" 3600 \"", "\"abc\"",   "\"\"",   "\"1e3\"", "\"3600s\"",
        "\"36 00\"",  "\"3600.\"", "\".5\"", "\"NaN\"", "true",
        "false",      "{}",        "[]",     "[3600]",  "{\"seconds\":3600}",
    };
    for (const auto& json_text : cases) {
        BOOST_TEST_CONTEXT(json_text) {
            const auto r = parse(200, token_body(json_text));
            BOOST_TEST(r.ec == make_error_code(client_errc::invalid_expires_in));
            BOOST_TEST(contains(r.diag.client_message(), "expires_in"));
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(token_response_errors)

BOOST_AUTO_TEST_CASE(oauth_error_on_400) {
    const auto r = parse(
        400, R"({"error":"invalid_client","error_description":"Client authentication failed"})");
    BOOST_TEST(r.ec == make_error_code(oauth_errc::invalid_client));
    BOOST_TEST(r.diag.http_status() == 400u);
    BOOST_TEST(r.diag.server_error_code() == "invalid_client");
    BOOST_TEST(r.diag.server_message() == "Client authentication failed");
    BOOST_TEST(contains(r.diag.client_message(), "HTTP 400"));
    BOOST_TEST(contains(r.diag.client_message(), "\"invalid_client\""));
    BOOST_TEST(contains(r.diag.client_message(), "client_secret"));
}

BOOST_AUTO_TEST_CASE(oauth_error_on_401) {
    const auto r = parse(401, R"({"error":"invalid_client"})");
    BOOST_TEST(r.ec == make_error_code(oauth_errc::invalid_client));
    BOOST_TEST(r.diag.http_status() == 401u);
    BOOST_TEST(r.diag.server_message().empty());
}

BOOST_AUTO_TEST_CASE(oauth_error_on_200) {
    const auto r = parse(200, R"({"error":"invalid_grant","error_description":"revoked",
                                  "access_token":"tok-123","token_type":"Bearer"})");
    BOOST_TEST(r.ec == make_error_code(oauth_errc::invalid_grant));
    BOOST_TEST(r.diag.server_error_code() == "invalid_grant");
    BOOST_TEST(r.diag.server_message() == "revoked");
    BOOST_TEST(r.token.access_token.empty());
}

BOOST_AUTO_TEST_CASE(oauth_error_unknown_code) {
    const auto r = parse(400, R"({"error":"quota_gone","error_description":"come back later"})");
    BOOST_TEST(r.ec == make_error_code(oauth_errc::other));
    BOOST_TEST(r.diag.server_error_code() == "quota_gone");
}

BOOST_AUTO_TEST_CASE(oauth_error_rate_limit_codes) {
    BOOST_TEST(parse(400, R"({"error":"rate_limit_exceeded"})").ec ==
               make_error_code(oauth_errc::rate_limit_exceeded));
    BOOST_TEST(parse(429, R"({"error":"too_many_requests"})").ec ==
               make_error_code(oauth_errc::too_many_requests));
    BOOST_TEST(parse(400, R"({"error":"slow_down"})").ec == make_error_code(oauth_errc::slow_down));
}

BOOST_AUTO_TEST_CASE(oauth_error_with_error_uri) {
    const auto r = parse(400, R"({"error":"invalid_scope","error_description":"bad scope",
                                  "error_uri":"https://docs.example/errors#scope"})");
    BOOST_TEST(r.ec == make_error_code(oauth_errc::invalid_scope));
    BOOST_TEST(contains(r.diag.server_message(), "bad scope"));
    BOOST_TEST(contains(r.diag.server_message(), "https://docs.example/errors#scope"));
}

BOOST_AUTO_TEST_CASE(non_string_error_field_is_not_oauth_error) {
    const auto r = parse(400, R"({"error":{"code":5}})");
    BOOST_TEST(r.ec == stampede::make_http_error(400));
    BOOST_TEST(contains(r.diag.client_message(), "without an OAuth error"));
}

BOOST_AUTO_TEST_CASE(html_503) {
    const auto r = parse(503,
                         "<html>\n<head><title>503 Service Unavailable</title></head>\n"
                         "<body>\n<h1>Service Unavailable</h1>\n</body>\n</html>\n",
                         "text/html; charset=utf-8");
    BOOST_TEST(r.ec == stampede::make_http_error(503));
    BOOST_TEST(r.diag.http_status() == 503u);
    BOOST_TEST(contains(r.diag.client_message(), "HTTP 503"));
    BOOST_TEST(contains(r.diag.client_message(), "text/html"));
    BOOST_TEST(contains(r.diag.client_message(), "not JSON"));
    BOOST_TEST(contains(r.diag.server_message(), "503 Service Unavailable"));
    BOOST_TEST(!contains(r.diag.server_message(), "\n"));
}

BOOST_AUTO_TEST_CASE(plain_text_500) {
    const auto r = parse(500, "Internal Server Error", "text/plain");
    BOOST_TEST(r.ec == stampede::make_http_error(500));
    BOOST_TEST(contains(r.diag.client_message(), "text/plain"));
    BOOST_TEST(r.diag.server_message() == "Internal Server Error");
}

BOOST_AUTO_TEST_CASE(json_error_without_oauth_code) {
    const auto r = parse(502, R"({"message":"bad gateway"})");
    BOOST_TEST(r.ec == stampede::make_http_error(502));
    BOOST_TEST(contains(r.diag.client_message(), "without an OAuth error"));
    BOOST_TEST(contains(r.diag.server_message(), "bad gateway"));
}

BOOST_AUTO_TEST_CASE(redirect_names_token_url) {
    const auto r = parse(301, "", "");
    BOOST_TEST(r.ec == stampede::make_http_error(301));
    BOOST_TEST(contains(r.diag.client_message(), "no Content-Type"));
    BOOST_TEST(contains(r.diag.client_message(), "token_url"));
}

BOOST_AUTO_TEST_CASE(html_200) {
    const auto r = parse(200, "<html><body>Welcome</body></html>", "text/html");
    BOOST_TEST(r.ec == make_error_code(client_errc::malformed_response));
    BOOST_TEST(contains(r.diag.client_message(), "HTTP 200"));
    BOOST_TEST(contains(r.diag.client_message(), "text/html"));
    BOOST_TEST(r.diag.server_message() == "<html><body>Welcome</body></html>");
}

BOOST_AUTO_TEST_CASE(empty_body_200) {
    const auto r = parse(200, "");
    BOOST_TEST(r.ec == make_error_code(client_errc::malformed_response));
    BOOST_TEST(contains(r.diag.client_message(), "empty body"));
}

BOOST_AUTO_TEST_CASE(empty_body_502) {
    const auto r = parse(502, "", "");
    BOOST_TEST(r.ec == stampede::make_http_error(502));
    BOOST_TEST(contains(r.diag.client_message(), "empty body"));
    BOOST_TEST(contains(r.diag.client_message(), "no Content-Type"));
}

BOOST_AUTO_TEST_CASE(truncated_json_200) {
    const auto r = parse(200, R"({"access_token":"tok-123","token_ty)");
    BOOST_TEST(r.ec == make_error_code(client_errc::malformed_response));
    BOOST_TEST(contains(r.diag.client_message(), "not valid JSON"));
    BOOST_TEST(contains(r.diag.client_message(), "application/json"));
}

BOOST_AUTO_TEST_CASE(status_below_200_is_malformed) {
    // An error code made from status 0 would read as success.
    for (unsigned status : {0u, 1u, 99u, 100u, 199u}) {
        const auto r = parse(status, "{}");
        BOOST_TEST(r.ec == make_error_code(client_errc::malformed_response),
                   "status " << status << " gave " << r.ec.message());
    }
}

BOOST_AUTO_TEST_CASE(json_array_200) {
    const auto r = parse(200, R"(["tok-123"])");
    BOOST_TEST(r.ec == make_error_code(client_errc::malformed_response));
    BOOST_TEST(contains(r.diag.client_message(), "not an object"));
}

BOOST_AUTO_TEST_CASE(body_preview_short_and_sanitized) {
    std::string body = "line one\r\n\tline\x01two\x1b[31m red \x7f";
    body += std::string(5000, 'x');
    const auto r = parse(500, body, "text/plain");
    BOOST_TEST(r.ec == stampede::make_http_error(500));
    const auto& preview = r.diag.server_message();
    BOOST_TEST(preview.size() <= 203u);
    BOOST_TEST(preview.substr(0, 28) == "line one line two [31m red x");
    BOOST_TEST(preview.substr(preview.size() - 3) == "...");
    for (char c : preview) {
        BOOST_TEST((static_cast<unsigned char>(c) >= 0x20 && c != 0x7f));
    }
}

BOOST_AUTO_TEST_CASE(content_type_in_message_sanitized) {
    const auto r = parse(503, "down", "text/html\x01; x=" + std::string(500, 'y'));
    BOOST_TEST(r.ec == stampede::make_http_error(503));
    BOOST_TEST(!contains(r.diag.client_message(), "\x01"));
    BOOST_TEST(r.diag.client_message().size() < 300u);
}

BOOST_AUTO_TEST_CASE(plain_text_404_names_token_url) {
    const auto r = parse(404, "Cannot POST /oauth/token\n", "text/plain; charset=utf-8");
    BOOST_TEST(r.ec == stampede::make_http_error(404));
    BOOST_TEST(contains(r.diag.client_message(), "HTTP 404"));
    BOOST_TEST(contains(r.diag.client_message(), "text/plain"));
    BOOST_TEST(contains(r.diag.client_message(), "with a body that is not JSON;"));
    BOOST_TEST(contains(r.diag.client_message(), "check token_url"));
    BOOST_TEST(r.diag.server_message() == "Cannot POST /oauth/token");
    BOOST_TEST((classify(r) == stampede::failure_kind::permanent));
}

BOOST_AUTO_TEST_CASE(oauth_error_404_names_token_url) {
    const auto r = parse(404, R"({"error":"invalid_request",
                                  "error_description":"unrecognized route"})");
    BOOST_TEST(r.ec == make_error_code(oauth_errc::invalid_request));
    BOOST_TEST(contains(r.diag.client_message(), "check token_url"));
    BOOST_TEST((classify(r) == stampede::failure_kind::permanent));
}

BOOST_AUTO_TEST_CASE(invalid_client_401_with_challenge) {
    auto response = make_response(
        401, R"({"error":"invalid_client","error_description":"client authentication failed"})");
    response.set(http::field::www_authenticate,
                 "Basic realm=\"https://127.0.0.1:8443\", error=\"invalid_client\"");
    const auto r = parse(response);
    BOOST_TEST(r.ec == make_error_code(oauth_errc::invalid_client));
    BOOST_TEST(contains(r.diag.client_message(), "WWW-Authenticate \"Basic realm="));
    BOOST_TEST(contains(r.diag.client_message(), "check client_id and client_secret"));
    BOOST_TEST((classify(r) == stampede::failure_kind::permanent));
}

BOOST_AUTO_TEST_CASE(challenge_without_body_is_permanent) {
    auto response = make_response(401, "", "");
    response.set(http::field::www_authenticate, "Basic realm=\"Service\"");
    const auto r = parse(response);
    BOOST_TEST(r.ec == stampede::make_http_error(401));
    BOOST_TEST(contains(r.diag.client_message(), "WWW-Authenticate \"Basic realm="));
    BOOST_TEST(contains(r.diag.client_message(), "Service"));
    BOOST_TEST((classify(r) == stampede::failure_kind::permanent));
}

BOOST_AUTO_TEST_CASE(challenge_ignored_outside_401) {
    auto response = make_response(400, R"({"error":"invalid_client"})");
    response.set(http::field::www_authenticate, "Basic realm=\"Service\"");
    const auto r = parse(response);
    BOOST_TEST(r.ec == make_error_code(oauth_errc::invalid_client));
    BOOST_TEST(!contains(r.diag.client_message(), "WWW-Authenticate"));
    BOOST_TEST((classify(r) == stampede::failure_kind::permanent));
}

BOOST_AUTO_TEST_CASE(form_encoded_error) {
    const auto r = parse(400, "error=invalid_scope&error_description=scope+admin+is%20unknown",
                         "application/x-www-form-urlencoded");
    BOOST_TEST(r.ec == make_error_code(oauth_errc::invalid_scope));
    BOOST_TEST(r.diag.server_error_code() == "invalid_scope");
    BOOST_TEST(r.diag.server_message() == "scope admin is unknown");
}

BOOST_AUTO_TEST_CASE(form_encoded_malformed) {
    const auto r = parse(200, "access_token=tok%zz&token_type=Bearer",
                         "application/x-www-form-urlencoded");
    BOOST_TEST(r.ec == make_error_code(client_errc::malformed_response));
    BOOST_TEST(contains(r.diag.client_message(), "form-encoded body that is not valid"));
    BOOST_TEST(r.token.access_token.empty());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(token_request)

BOOST_AUTO_TEST_CASE(request_shape) {
    stampede::token_source_settings settings;
    settings.client_id = "ai.stampede.marketplace.example";
    settings.client_secret = stampede::secret_string("s3cr3t");
    endpoint_url url{true, "global.stampede.ai", "443", "/oauth/token"};

    const auto request = stampede::detail::make_token_request(url, settings);
    BOOST_TEST(request.method() == http::verb::post);
    BOOST_TEST(request.target() == "/oauth/token");
    BOOST_TEST(request.version() == 11u);
    BOOST_TEST(request[http::field::content_type] == "application/json");
    BOOST_TEST(request[http::field::accept] == "application/json");
    BOOST_TEST(request[http::field::content_length] == std::to_string(request.body().size()));
    BOOST_TEST(request.body() ==
               R"({"client_id":"ai.stampede.marketplace.example","client_secret":"s3cr3t",)"
               R"("grant_type":"client_credentials"})");
}

BOOST_AUTO_TEST_CASE(nasty_credentials_round_trip) {
    const std::vector<std::pair<std::string, std::string>> cases{
        {"id\"quote\\back", "se\"cr\\et"},
        {"id+plus%25pct:colon", "a+b%2Fc:d=e&f"},
        {"id\nnewline\r\t", "line1\nline2\u2028end"},
        {"caf\u00e9 \u65e5\u672c", "\U0001F511 key \u00fc\u00f1\u00ee"},
        {std::string("nul\0inside", 10), std::string("ctl\x01\x1f\x7f", 6)},
        {"</script><!--", "{\"json\":\"inside\"}"},
    };
    for (const auto& [id, secret] : cases) {
        BOOST_TEST_CONTEXT(id) {
            stampede::token_source_settings settings;
            settings.client_id = id;
            settings.client_secret = stampede::secret_string(secret);
            endpoint_url url{true, "example.com", "443", "/token"};

            const auto request = stampede::detail::make_token_request(url, settings);
            boost::system::error_code ec;
            const auto document = json::parse(request.body(), ec);
            BOOST_TEST(!ec);
            BOOST_TEST(document.is_object());
            const auto& object = document.as_object();
            BOOST_TEST(object.size() == 3u);
            BOOST_TEST(std::string_view(object.at("client_id").as_string()) == id);
            BOOST_TEST(std::string_view(object.at("client_secret").as_string()) == secret);
            BOOST_TEST(std::string_view(object.at("grant_type").as_string()) ==
                       "client_credentials");
        }
    }
}

BOOST_AUTO_TEST_CASE(json_body_with_parameters) {
    auto settings = request_settings(stampede::client_auth_method::json_body);
    settings.scope = "api:read api:write";
    settings.audience = "https://api.example.com/";
    settings.resource = "urn:example:api";
    settings.extra_parameters = {{"tenant", "acme"}, {"note", "a&b=c d"}};

    const auto request = stampede::detail::make_token_request(example_token_url, settings);
    BOOST_TEST(request[http::field::content_type] == "application/json");
    BOOST_TEST(request.count(http::field::authorization) == 0u);
    BOOST_TEST(request.body() ==
               R"({"client_id":"interop-client","client_secret":"s3cr3t",)"
               R"("grant_type":"client_credentials","scope":"api:read api:write",)"
               R"("audience":"https://api.example.com/","resource":"urn:example:api",)"
               R"("tenant":"acme","note":"a&b=c d"})");
}

BOOST_AUTO_TEST_CASE(client_secret_post_shape) {
    auto settings = request_settings(stampede::client_auth_method::client_secret_post);
    settings.scope = "api:read api:write";
    settings.extra_parameters = {{"tenant", "acme"}};

    const auto request = stampede::detail::make_token_request(example_token_url, settings);
    BOOST_TEST(request.method() == http::verb::post);
    BOOST_TEST(request.target() == "/token");
    BOOST_TEST(request[http::field::content_type] == "application/x-www-form-urlencoded");
    BOOST_TEST(request[http::field::accept] == "application/json");
    BOOST_TEST(request[http::field::content_length] == std::to_string(request.body().size()));
    BOOST_TEST(request.count(http::field::authorization) == 0u);
    BOOST_TEST(request.body() ==
               "grant_type=client_credentials&client_id=interop-client&client_secret=s3cr3t&"
               "scope=api%3Aread+api%3Awrite&tenant=acme");
}

BOOST_AUTO_TEST_CASE(client_secret_basic_shape) {
    auto settings = request_settings(stampede::client_auth_method::client_secret_basic);
    settings.audience = "https://api.example.com/";
    settings.resource = "urn:example:api";

    const auto request = stampede::detail::make_token_request(example_token_url, settings);
    BOOST_TEST(request[http::field::content_type] == "application/x-www-form-urlencoded");
    BOOST_TEST(request[http::field::authorization] ==
               "Basic " + base64("interop-client:s3cr3t"));
    BOOST_TEST(request.body() ==
               "grant_type=client_credentials&audience=https%3A%2F%2Fapi.example.com%2F&"
               "resource=urn%3Aexample%3Aapi");
    BOOST_TEST(!contains(request.body(), "client_id"));
    BOOST_TEST(!contains(request.body(), "s3cr3t"));
}

BOOST_AUTO_TEST_CASE(basic_credentials_form_encoded_first) {
    auto settings = request_settings(stampede::client_auth_method::client_secret_basic);
    settings.client_id = "id:with space";
    settings.client_secret = stampede::secret_string("a:b%c+d/e&f=g h~\xc3\xa9");

    const auto request = stampede::detail::make_token_request(example_token_url, settings);
    const std::string_view header = request[http::field::authorization];
    BOOST_TEST_REQUIRE(header.starts_with("Basic "));
    BOOST_TEST(base64_decode(header.substr(6)) ==
               "id%3Awith+space:a%3Ab%25c%2Bd%2Fe%26f%3Dg+h~%C3%A9");
}

BOOST_AUTO_TEST_CASE(post_credentials_decode_exactly) {
    const std::string secret = "a:b%c+d/e&f=g h~\xc3\xa9";
    auto settings = request_settings(stampede::client_auth_method::client_secret_post);
    settings.client_id = "id&x=y";
    settings.client_secret = stampede::secret_string(secret);
    settings.extra_parameters = {{"odd name", "v=1&w=2 +"}};

    const auto request = stampede::detail::make_token_request(example_token_url, settings);
    BOOST_TEST(request.body() ==
               "grant_type=client_credentials&client_id=id%26x%3Dy&"
               "client_secret=a%3Ab%25c%2Bd%2Fe%26f%3Dg+h~%C3%A9&odd+name=v%3D1%26w%3D2+%2B");

    boost::system::error_code ec;
    const auto fields = stampede::detail::parse_form_urlencoded(request.body(), ec);
    BOOST_TEST(!ec);
    BOOST_TEST(fields.size() == 4u);
    BOOST_TEST(std::string_view(fields.at("client_id").as_string()) == "id&x=y");
    BOOST_TEST(std::string_view(fields.at("client_secret").as_string()) == secret);
    BOOST_TEST(std::string_view(fields.at("odd name").as_string()) == "v=1&w=2 +");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(redaction)

BOOST_AUTO_TEST_CASE(secret_and_encoded_forms) {
    const std::string secret = "s3cr3t value/with+symbols~ok";
    redactor secrets;
    secrets.add(secret);

    // Each form with the range of its characters that encode only secret bytes.
    struct form {
        std::string text;
        std::size_t first = 0;
        std::size_t last = 0;
    };
    auto plain = [](std::string text) {
        const auto size = text.size();
        return form{std::move(text), 0, size};
    };
    auto encoded = [&](std::string text, std::size_t prefix_bytes) {
        return form{std::move(text), (8 * prefix_bytes + 5) / 6,
                    8 * (prefix_bytes + secret.size()) / 6};
    };
    const std::vector<form> forms{
        plain(secret),
        encoded(base64(secret), 0),
        encoded(base64url(secret), 0),
        encoded(base64("client-id:" + secret), 10),
        encoded(base64("x" + secret), 1),
        encoded(base64("xy" + secret), 2),
        encoded(base64url("client-id:" + secret), 10),
        plain(percent_encode(secret, false, false)),
        plain(percent_encode(secret, true, false)),
        plain(percent_encode(secret, false, true)),
        plain(R"(s3cr3t value\/with+symbols~ok)"),
        plain(R"(s3cr3t\u0020value/with+symbols~ok)"),
    };
    for (const auto& f : forms) {
        BOOST_TEST_CONTEXT(f.text) {
            const std::string out = secrets.redact("before " + f.text + " after");
            BOOST_TEST(contains(out, "[redacted]"));
            BOOST_TEST(out.substr(0, 7) == "before ");
            BOOST_TEST(out.substr(out.size() - 6) == " after");

            // No run of 6 characters that encodes only secret bytes survives.
            for (std::size_t i = f.first; i + 6 <= f.last; ++i) {
                BOOST_TEST(!contains(out, f.text.substr(i, 6)), "leaked at " << i);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(every_occurrence_replaced) {
    redactor secrets;
    secrets.add("tok-abcdef");
    secrets.add("secret-xyz");
    BOOST_TEST(secrets.redact("tok-abcdef,secret-xyz;tok-abcdeftok-abcdef") ==
               "[redacted],[redacted];[redacted][redacted]");
}

BOOST_AUTO_TEST_CASE(short_and_empty_values_ignored) {
    redactor secrets;
    secrets.add("");
    secrets.add("abc");
    BOOST_TEST(secrets.redact("abc abcd") == "abc abcd");
}

BOOST_AUTO_TEST_CASE(no_secrets_leaves_text) {
    const redactor secrets;
    BOOST_TEST(secrets.redact("plain text %41 \\u0041") == "plain text %41 \\u0041");
}

BOOST_AUTO_TEST_CASE(secret_in_error_description) {
    const std::string secret = "sup3r-s3cret";
    redactor secrets;
    secrets.add(secret);
    const auto response = make_response(
        400, R"({"error":"invalid_client","error_description":"secret sup3r-s3cret is wrong"})");
    const auto r = parse(response, secrets);
    BOOST_TEST(r.ec == make_error_code(oauth_errc::invalid_client));
    BOOST_TEST(r.diag.server_message() == "secret [redacted] is wrong");
    BOOST_TEST(!contains(r.diag.client_message(), secret));
}

BOOST_AUTO_TEST_CASE(secret_in_error_code) {
    const std::string secret = "sup3r-s3cret";
    redactor secrets;
    secrets.add(secret);
    const auto r = parse(make_response(400, R"({"error":"bad sup3r-s3cret"})"), secrets);
    BOOST_TEST(r.ec == make_error_code(oauth_errc::other));
    BOOST_TEST(!contains(r.diag.server_error_code(), secret));
    BOOST_TEST(!contains(r.diag.client_message(), secret));
}

BOOST_AUTO_TEST_CASE(secret_in_echoed_body) {
    const std::string secret = "pa\"ss/w0rd";
    redactor secrets;
    secrets.add(secret);
    stampede::token_source_settings settings;
    settings.client_id = "id";
    settings.client_secret = stampede::secret_string(secret);
    const auto request =
        stampede::detail::make_token_request({true, "example.com", "443", "/"}, settings);

    // A server echoing the raw request body (JSON-escaped secret) in a 500 page.
    const auto r = parse(make_response(500, "echo: " + request.body(), "text/plain"), secrets);
    BOOST_TEST(r.ec == stampede::make_http_error(500));
    BOOST_TEST(!contains(r.diag.server_message(), "w0rd"));
    BOOST_TEST(contains(r.diag.server_message(), "[redacted]"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(sanitize)

BOOST_AUTO_TEST_CASE(control_characters_become_spaces) {
    const redactor none;
    BOOST_TEST(stampede::detail::sanitize_server_text("a\nb\r\n\tc\x01\x7f"
                                                      "d",
                                                      none) == "a b c d");
    BOOST_TEST(stampede::detail::sanitize_server_text("  leading and trailing \n", none) ==
               "leading and trailing");
}

BOOST_AUTO_TEST_CASE(cut_marked_with_ellipsis) {
    const redactor none;
    BOOST_TEST(stampede::detail::sanitize_server_text("abcdef", none, 3) == "abc...");
    BOOST_TEST(stampede::detail::sanitize_server_text("abc", none, 3) == "abc");
    BOOST_TEST(stampede::detail::sanitize_server_text("abc   ", none, 3) == "abc");
    BOOST_TEST(stampede::detail::sanitize_server_text(std::string(1000, 'z'), none).size() == 203u);
}

BOOST_AUTO_TEST_CASE(cut_keeps_utf8_sequences_whole) {
    const redactor none;
    BOOST_TEST(stampede::detail::sanitize_server_text("\u65e5\u672c\u8a9e", none, 2) ==
               "\u65e5\u672c...");
}

BOOST_AUTO_TEST_CASE(invalid_utf8_and_bidi_controls_replaced) {
    const redactor none;
    BOOST_TEST(stampede::detail::sanitize_server_text("a\xff"
                                                      "b",
                                                      none) == "a\uFFFDb");
    BOOST_TEST(stampede::detail::sanitize_server_text("a\u202eb\u2028c\xc2\x85"
                                                      "d",
                                                      none) == "a b c d");
}

BOOST_AUTO_TEST_CASE(secret_with_spaces_found_after_folding) {
    // The server wrote tabs where the secret has spaces; folding white space turns them
    // back into the secret, which must then be redacted.
    redactor secrets;
    secrets.add("sp ace secret");
    const std::string text =
        stampede::detail::sanitize_server_text("the secret was sp\tace\tsecret", secrets);
    BOOST_TEST(!contains(text, "ace secret"));
    BOOST_TEST(contains(text, "[redacted]"));
}

BOOST_AUTO_TEST_CASE(secret_straddling_the_cut_is_redacted) {
    redactor secrets;
    const std::string secret = "abcdefghijklmnop-secret";
    secrets.add(secret);
    const std::string text =
        stampede::detail::sanitize_server_text(std::string(190, 'x') + secret, secrets);
    BOOST_TEST(!contains(text, "abcdefghij"));
}

BOOST_AUTO_TEST_CASE(huge_body_reads_a_bounded_prefix) {
    redactor secrets;
    secrets.add("some-secret-value");
    const std::string body(8 * 1024 * 1024, 'a');
    const std::string text = stampede::detail::sanitize_server_text(body, secrets);
    BOOST_TEST(text.size() == 203u);
    BOOST_TEST(text.substr(200) == "...");
}

BOOST_AUTO_TEST_CASE(unknown_credentials_masked) {
    const redactor none;
    struct masked_case {
        std::string input;
        std::string hidden;
    };
    const std::vector<masked_case> cases = {
        {R"(echo {"access_token":"tok123","token_type":"Bearer"})", "tok123"},
        {"access_token=abc123&expires_in=5", "abc123"},
        {"refresh_token : 'xyz789'", "xyz789"},
        {"sent Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload", "eyJhbGci"},
        {"stolen kX9fQ2mZ7pL4wR8tY1uN6vB3 here", "kX9fQ2mZ7pL4wR8tY1uN6vB3"},
        {"client_secret=hunter2", "hunter2"},
    };
    for (const auto& c : cases) {
        const std::string text = stampede::detail::sanitize_server_text(c.input, none);
        BOOST_TEST(!contains(text, c.hidden), c.input << " gave " << text);
        BOOST_TEST(contains(text, "[redacted]"), c.input << " gave " << text);
    }

    // Ordinary text, numbers, hex ids and UUIDs stay readable.
    const std::string plain = "request 3f2b9c1e-8d4a-4e7b-9c1d-2a3b4c5d6e7f failed after 30 s";
    BOOST_TEST(stampede::detail::sanitize_server_text(plain, none) == plain);
    BOOST_TEST(stampede::detail::sanitize_server_text("Bearer token expired", none) ==
               "Bearer token expired");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(endpoint_url_parsing)

BOOST_AUTO_TEST_CASE(https_ok) {
    const auto r = parse_url("https://global.stampede.ai/oauth/token");
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.url.tls);
    BOOST_TEST(r.url.host == "global.stampede.ai");
    BOOST_TEST(r.url.port == "443");
    BOOST_TEST(r.url.target == "/oauth/token");
    BOOST_TEST(r.url.authority() == "global.stampede.ai:443");
    BOOST_TEST(!r.url.is_loopback());
}

BOOST_AUTO_TEST_CASE(default_ports_and_targets) {
    const auto https = parse_url("https://example.com");
    BOOST_TEST(!https.ec);
    BOOST_TEST(https.url.port == "443");
    BOOST_TEST(https.url.target == "/");

    const auto http = parse_url("http://localhost");
    BOOST_TEST(!http.ec);
    BOOST_TEST(!http.url.tls);
    BOOST_TEST(http.url.port == "80");

    const auto explicit_port = parse_url("https://example.com:8443/a/b?x=1&y=%20");
    BOOST_TEST(!explicit_port.ec);
    BOOST_TEST(explicit_port.url.port == "8443");
    BOOST_TEST(explicit_port.url.target == "/a/b?x=1&y=%20");

    const auto empty_port = parse_url("https://example.com:/x");
    BOOST_TEST(!empty_port.ec);
    BOOST_TEST(empty_port.url.port == "443");

    const auto query_only = parse_url("https://example.com?x=1");
    BOOST_TEST(!query_only.ec);
    BOOST_TEST(query_only.url.target == "/?x=1");
}

BOOST_AUTO_TEST_CASE(scheme_and_host_case_folded) {
    const auto r = parse_url("HTTPS://Global.Stampede.AI/OAuth/Token");
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.url.tls);
    BOOST_TEST(r.url.host == "global.stampede.ai");
    BOOST_TEST(r.url.target == "/OAuth/Token");
}

BOOST_AUTO_TEST_CASE(ipv6_literal) {
    const auto r = parse_url("https://[2001:db8::1]:8443/token");
    BOOST_TEST(!r.ec);
    BOOST_TEST(r.url.host == "2001:db8::1");
    BOOST_TEST(r.url.port == "8443");
    BOOST_TEST(r.url.authority() == "[2001:db8::1]:8443");
    BOOST_TEST(!r.url.is_loopback());
}

BOOST_AUTO_TEST_CASE(http_to_loopback_ok) {
    for (const char* url : {"http://127.0.0.1:8080/token", "http://127.1.2.3/token",
                            "http://[::1]:8080/token", "http://localhost:8080/token",
                            "http://LOCALHOST/token", "http://[::ffff:127.0.0.1]/token"}) {
        BOOST_TEST_CONTEXT(url) {
            const auto r = parse_url(url);
            BOOST_TEST(!r.ec);
            BOOST_TEST(!r.url.tls);
            BOOST_TEST(r.url.is_loopback());
        }
    }
}

BOOST_AUTO_TEST_CASE(http_to_non_loopback_rejected) {
    for (const char* url :
         {"http://example.com/oauth/token", "http://10.0.0.1/token", "http://[2001:db8::1]/token",
          "http://localhost.example.com/", "http://128.0.0.1/"}) {
        BOOST_TEST_CONTEXT(url) {
            const auto r = parse_url(url);
            BOOST_TEST(r.ec == make_error_code(client_errc::insecure_url));
            BOOST_TEST(!r.url.is_loopback());
        }
    }

    const auto r = parse_url("http://example.com/oauth/token");
    BOOST_TEST(r.diag.client_message() ==
               "token_url \"http://example.com/oauth/token\" uses plain http to a non-loopback "
               "host; use https, or set transport.allow_insecure_http");
}

BOOST_AUTO_TEST_CASE(http_with_allow_flag_ok) {
    const auto r = parse_url("http://example.com/oauth/token", true);
    BOOST_TEST(!r.ec);
    BOOST_TEST(!r.url.tls);
    BOOST_TEST(r.url.host == "example.com");
    BOOST_TEST(r.url.port == "80");
}

BOOST_AUTO_TEST_CASE(no_host_rejected) {
    for (const char* url : {"https:///token", "https:/token", "https:token", "https://:443/"}) {
        BOOST_TEST_CONTEXT(url) {
            const auto r = parse_url(url);
            BOOST_TEST(r.ec == make_error_code(client_errc::invalid_settings));
            BOOST_TEST(contains(r.diag.client_message(), "token_url"));
        }
    }
}

BOOST_AUTO_TEST_CASE(fragment_rejected) {
    for (const char* url : {"https://example.com/token#frag", "https://example.com/token#"}) {
        BOOST_TEST_CONTEXT(url) {
            const auto r = parse_url(url);
            BOOST_TEST(r.ec == make_error_code(client_errc::invalid_settings));
            BOOST_TEST(contains(r.diag.client_message(), "fragment"));
        }
    }
}

BOOST_AUTO_TEST_CASE(userinfo_rejected_without_password) {
    for (const char* url :
         {"https://user:hunter2pass@example.com/token", "http://user:hunter2pass@example.com/token",
          "ftp://user:hunter2pass@example.com/token", "https://user:hunter2pass@exa mple.com/token",
          "https://hunter2pass@example.com/token#x"}) {
        BOOST_TEST_CONTEXT(url) {
            const auto r = parse_url(url);
            BOOST_TEST(r.ec == make_error_code(client_errc::invalid_settings));
            BOOST_TEST(!contains(r.diag.client_message(), "hunter2pass"));
            BOOST_TEST(contains(r.diag.client_message(), "[redacted]@"));
        }
    }
    const auto r = parse_url("https://user:hunter2pass@example.com/token");
    BOOST_TEST(contains(r.diag.client_message(), "user info"));
}

BOOST_AUTO_TEST_CASE(non_http_scheme_rejected) {
    for (const char* url : {"ftp://example.com/token", "ws://example.com/", "file:///etc/hosts",
                            "mailto:someone@example.com"}) {
        BOOST_TEST_CONTEXT(url) {
            const auto r = parse_url(url);
            BOOST_TEST(r.ec == make_error_code(client_errc::invalid_settings));
            BOOST_TEST(contains(r.diag.client_message(), "use https"));
        }
    }
}

BOOST_AUTO_TEST_CASE(relative_url_rejected) {
    for (const char* url : {"/oauth/token", "global.stampede.ai/oauth/token", "//example.com/x"}) {
        BOOST_TEST_CONTEXT(url) {
            const auto r = parse_url(url);
            BOOST_TEST(r.ec == make_error_code(client_errc::invalid_settings));
            BOOST_TEST(contains(r.diag.client_message(), "relative URL"));
        }
    }
}

BOOST_AUTO_TEST_CASE(invalid_input_rejected) {
    for (const char* url :
         {"", "https://exa mple.com/", "https://example.com:99999/", "https://example.com:0/",
          "https://ex%41mple.com/", "https://[v1.fe]/", "https://example.com/\n"}) {
        BOOST_TEST_CONTEXT(url) {
            const auto r = parse_url(url);
            BOOST_TEST(r.ec == make_error_code(client_errc::invalid_settings));
            BOOST_TEST(contains(r.diag.client_message(), "token_url"));
            BOOST_TEST(!contains(r.diag.client_message(), "\n"));
        }
    }
}

BOOST_AUTO_TEST_CASE(failure_leaves_output_unchanged) {
    endpoint_url out{true, "keep.example", "1", "/keep"};
    diagnostics diag;
    const auto ec =
        stampede::detail::parse_endpoint_url("http://example.com/", "api_url", {}, out, diag);
    BOOST_TEST(ec == make_error_code(client_errc::insecure_url));
    BOOST_TEST(out.host == "keep.example");
    BOOST_TEST(contains(diag.client_message(), "api_url"));
}

BOOST_AUTO_TEST_SUITE_END()
