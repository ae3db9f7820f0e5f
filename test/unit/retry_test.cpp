#define BOOST_TEST_MODULE retry
#include <boost/test/unit_test.hpp>

#include <stampede/error.hpp>
#include <stampede/retry.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/system/errc.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <chrono>
#include <iomanip>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using boost::system::error_code;
using stampede::client_errc;
using stampede::condition;
using stampede::diagnostics;
using stampede::failure_kind;
using stampede::oauth_errc;

namespace stampede {

std::ostream& operator<<(std::ostream& os, failure_kind kind) {
    switch (kind) {
    case failure_kind::retryable:
        return os << "retryable";
    case failure_kind::permanent:
        return os << "permanent";
    case failure_kind::aborted:
        return os << "aborted";
    }
    return os << "failure_kind(" << static_cast<int>(kind) << ")";
}

} // namespace stampede

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace chrono = std::chrono;

const std::vector<client_errc> all_client_errors{
    client_errc::invalid_settings,
    client_errc::insecure_url,
    client_errc::resolve_timeout,
    client_errc::connect_timeout,
    client_errc::handshake_timeout,
    client_errc::write_timeout,
    client_errc::read_timeout,
    client_errc::request_timeout,
    client_errc::header_too_large,
    client_errc::body_too_large,
    client_errc::malformed_response,
    client_errc::missing_access_token,
    client_errc::unsupported_token_type,
    client_errc::invalid_expires_in,
    client_errc::certificate_verification_failed,
};

const std::vector<oauth_errc> all_oauth_errors{
    oauth_errc::invalid_request,
    oauth_errc::invalid_client,
    oauth_errc::invalid_grant,
    oauth_errc::unauthorized_client,
    oauth_errc::unsupported_grant_type,
    oauth_errc::invalid_scope,
    oauth_errc::access_denied,
    oauth_errc::slow_down,
    oauth_errc::temporarily_unavailable,
    oauth_errc::server_error,
    oauth_errc::rate_limit_exceeded,
    oauth_errc::too_many_requests,
    oauth_errc::other,
};

const std::vector<std::string> default_retryable_oauth_errors{
    "slow_down", "temporarily_unavailable", "rate_limit_exceeded", "too_many_requests",
    "server_error"};

// Builds an error code in asio's OpenSSL category from a library and reason code.
error_code openssl_error(int library, int reason) {
    const unsigned long packed = ERR_PACK(library, 0, reason);
    return {static_cast<int>(packed), asio::error::get_ssl_category()};
}

diagnostics with_status(unsigned status, std::string server_error = {}) {
    diagnostics diag;
    diag.set_http_status(status);
    diag.set_server_error_code(std::move(server_error));
    return diag;
}

chrono::system_clock::time_point at(chrono::year_month_day date, chrono::seconds time_of_day) {
    return chrono::sys_days(date) + time_of_day;
}

// Returns the delay in milliseconds, or `none` for std::nullopt, so that failures print.
constexpr long long none = -1;

long long millis(std::optional<chrono::milliseconds> delay) {
    return delay ? static_cast<long long>(delay->count()) : none;
}

long long parse(std::string_view value, chrono::system_clock::time_point now) {
    return millis(stampede::parse_retry_after(value, now));
}

// 1994-11-06 08:49:37 UTC, the date of the examples in RFC 9110.
const auto rfc_example_time = at(chrono::year(1994) / 11 / 6, 8h + 49min + 37s);

} // namespace

// Categories and messages
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(category_names) {
    BOOST_TEST(std::string(stampede::client_category().name()) == "stampede.client");
    BOOST_TEST(std::string(stampede::oauth_category().name()) == "stampede.oauth");
    BOOST_TEST(std::string(stampede::http_category().name()) == "stampede.http");
    BOOST_TEST(std::string(stampede::condition_category().name()) == "stampede.condition");
}

BOOST_AUTO_TEST_CASE(client_messages_not_empty) {
    for (const auto e : all_client_errors) {
        const error_code ec = e;
        BOOST_TEST_CONTEXT("client_errc " << static_cast<int>(e)) {
            BOOST_TEST(std::string(ec.category().name()) == "stampede.client");
            BOOST_TEST(!ec.message().empty());
            BOOST_TEST(ec.message().find("unknown") == std::string::npos);
        }
    }
}

BOOST_AUTO_TEST_CASE(oauth_messages_name_the_code) {
    for (const auto e : all_oauth_errors) {
        const error_code ec = e;
        BOOST_TEST_CONTEXT("oauth_errc " << static_cast<int>(e)) {
            BOOST_TEST(std::string(ec.category().name()) == "stampede.oauth");
            BOOST_TEST(!ec.message().empty());
            if (e != oauth_errc::other) {
                BOOST_TEST(ec.message().find(stampede::to_string(e)) == 0u);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(http_messages) {
    BOOST_TEST(stampede::make_http_error(503).message() == "HTTP 503 Service Unavailable");
    BOOST_TEST(stampede::make_http_error(429).message() == "HTTP 429 Too Many Requests");
    BOOST_TEST(stampede::make_http_error(401).message() == "HTTP 401 Unauthorized");
    BOOST_TEST(stampede::make_http_error(400).message() == "HTTP 400 Bad Request");
    BOOST_TEST(stampede::make_http_error(599).message() == "HTTP 599");
    BOOST_TEST(stampede::make_http_error(503).value() == 503);
}

BOOST_AUTO_TEST_CASE(condition_messages_not_empty) {
    for (const auto c : {condition::retryable, condition::permanent, condition::timeout}) {
        const boost::system::error_condition cond = c;
        BOOST_TEST(std::string(cond.category().name()) == "stampede.condition");
        BOOST_TEST(!cond.message().empty());
    }
}

BOOST_AUTO_TEST_CASE(unknown_enumerator_messages) {
    const error_code client{999, stampede::client_category()};
    const error_code oauth{999, stampede::oauth_category()};
    BOOST_TEST(client.message().find("999") != std::string::npos);
    BOOST_TEST(oauth.message().find("999") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(oauth_strings_round_trip) {
    for (const auto e : all_oauth_errors) {
        BOOST_TEST_CONTEXT("oauth_errc " << static_cast<int>(e)) {
            BOOST_TEST(stampede::oauth_errc_from_string(stampede::to_string(e)) == e);
        }
    }
    BOOST_TEST(stampede::to_string(oauth_errc::invalid_client) == "invalid_client");
    BOOST_TEST(stampede::to_string(oauth_errc::other) == "other");
    BOOST_TEST(stampede::oauth_errc_from_string("made_up_error") == oauth_errc::other);
    BOOST_TEST(stampede::oauth_errc_from_string("") == oauth_errc::other);

    // OAuth error codes are case-sensitive (RFC 6749, section 5.2).
    BOOST_TEST(stampede::oauth_errc_from_string("Invalid_Client") == oauth_errc::other);
}

// Conditions
// -----------------------------------------------------------------------------------------

namespace {

struct condition_case {
    std::string name;
    error_code ec;
    bool retryable;
    bool permanent;
    bool timeout;
};

std::vector<condition_case> condition_cases() {
    using namespace boost::system;
    return {
        // Our own codes.
        {"invalid_settings", client_errc::invalid_settings, false, true, false},
        {"insecure_url", client_errc::insecure_url, false, true, false},
        {"resolve_timeout", client_errc::resolve_timeout, true, false, true},
        {"connect_timeout", client_errc::connect_timeout, true, false, true},
        {"handshake_timeout", client_errc::handshake_timeout, true, false, true},
        {"write_timeout", client_errc::write_timeout, true, false, true},
        {"read_timeout", client_errc::read_timeout, true, false, true},
        {"request_timeout", client_errc::request_timeout, true, false, true},
        {"header_too_large", client_errc::header_too_large, false, true, false},
        {"body_too_large", client_errc::body_too_large, false, true, false},
        {"malformed_response", client_errc::malformed_response, true, false, false},
        {"missing_access_token", client_errc::missing_access_token, true, false, false},
        {"unsupported_token_type", client_errc::unsupported_token_type, false, true, false},
        {"invalid_expires_in", client_errc::invalid_expires_in, true, false, false},
        {"certificate_verification_failed", client_errc::certificate_verification_failed, false,
         true, false},

        // OAuth codes under the default list.
        {"invalid_request", oauth_errc::invalid_request, false, true, false},
        {"invalid_client", oauth_errc::invalid_client, false, true, false},
        {"invalid_grant", oauth_errc::invalid_grant, false, true, false},
        {"unauthorized_client", oauth_errc::unauthorized_client, false, true, false},
        {"unsupported_grant_type", oauth_errc::unsupported_grant_type, false, true, false},
        {"invalid_scope", oauth_errc::invalid_scope, false, true, false},
        {"access_denied", oauth_errc::access_denied, false, true, false},
        {"slow_down", oauth_errc::slow_down, true, false, false},
        {"temporarily_unavailable", oauth_errc::temporarily_unavailable, true, false, false},
        {"server_error", oauth_errc::server_error, true, false, false},
        {"rate_limit_exceeded", oauth_errc::rate_limit_exceeded, true, false, false},
        {"too_many_requests", oauth_errc::too_many_requests, true, false, false},
        {"oauth other", oauth_errc::other, false, true, false},

        // HTTP statuses.
        {"http 400", stampede::make_http_error(400), true, false, false},
        {"http 401", stampede::make_http_error(401), false, true, false},
        {"http 403", stampede::make_http_error(403), false, true, false},
        {"http 404", stampede::make_http_error(404), false, true, false},
        {"http 408", stampede::make_http_error(408), true, false, false},
        {"http 429", stampede::make_http_error(429), true, false, false},
        {"http 500", stampede::make_http_error(500), true, false, false},
        {"http 502", stampede::make_http_error(502), true, false, false},
        {"http 503", stampede::make_http_error(503), true, false, false},
        {"http 504", stampede::make_http_error(504), true, false, false},
        {"http 302", stampede::make_http_error(302), false, true, false},

        // Network errors from asio.
        {"connection_reset", asio::error::connection_reset, true, false, false},
        {"connection_refused", asio::error::connection_refused, true, false, false},
        {"connection_aborted", asio::error::connection_aborted, true, false, false},
        {"broken_pipe", asio::error::broken_pipe, true, false, false},
        {"network_unreachable", asio::error::network_unreachable, true, false, false},
        {"host_unreachable", asio::error::host_unreachable, true, false, false},
        {"timed_out", asio::error::timed_out, true, false, true},
        {"eof", asio::error::eof, true, false, false},
        {"host_not_found", asio::error::host_not_found, true, false, false},
        {"host_not_found_try_again", asio::error::host_not_found_try_again, true, false, false},
        {"no_recovery", asio::error::no_recovery, false, true, false},
        {"service_not_found", asio::error::service_not_found, false, true, false},
        {"access_denied (errno)", asio::error::access_denied, false, true, false},
        {"operation_aborted", asio::error::operation_aborted, false, false, false},
        {"generic connection_reset", make_error_code(errc::connection_reset), true, false, false},
        {"generic operation_canceled", make_error_code(errc::operation_canceled), false, false,
         false},

        // Beast and TLS.
        {"beast timeout", beast::error::timeout, true, false, true},
        {"beast end_of_stream", beast::http::error::end_of_stream, true, false, false},
        {"beast partial_message", beast::http::error::partial_message, true, false, false},
        {"beast bad_version", beast::http::error::bad_version, true, false, false},
        {"beast body_limit", beast::http::error::body_limit, false, true, false},
        {"beast header_limit", beast::http::error::header_limit, false, true, false},
        {"ssl stream_truncated", asio::ssl::error::stream_truncated, true, false, false},
        {"ssl certificate verify failed",
         openssl_error(ERR_LIB_SSL, SSL_R_CERTIFICATE_VERIFY_FAILED), false, true, false},
        {"ssl wrong version number", openssl_error(ERR_LIB_SSL, SSL_R_WRONG_VERSION_NUMBER), false,
         true, false},
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
        {"ssl unexpected eof", openssl_error(ERR_LIB_SSL, SSL_R_UNEXPECTED_EOF_WHILE_READING), true,
         false, false},
#endif

        // Neither.
        {"success", error_code{}, false, false, false},
        {"unknown category", make_error_code(boost::beast::http::error::need_more), false, false,
         false},
    };
}

} // namespace

BOOST_AUTO_TEST_CASE(condition_table) {
    for (const auto& c : condition_cases()) {
        BOOST_TEST_CONTEXT(c.name << " (" << c.ec.category().name() << ":" << c.ec.value() << ")") {
            BOOST_TEST((c.ec == condition::retryable) == c.retryable);
            BOOST_TEST((c.ec == condition::permanent) == c.permanent);
            BOOST_TEST((c.ec == condition::timeout) == c.timeout);
            BOOST_TEST(stampede::is_retryable(c.ec) == c.retryable);
        }
    }
}

BOOST_AUTO_TEST_CASE(condition_inequality) {
    const error_code ec = client_errc::connect_timeout;
    BOOST_TEST(ec != condition::permanent);
    BOOST_TEST(!(ec != condition::retryable));
}

// Classification
// -----------------------------------------------------------------------------------------

namespace {

struct classify_case {
    std::string name;
    error_code ec;
    diagnostics diag;
    failure_kind expected;
};

std::vector<classify_case> classify_cases() {
    using namespace boost::system;
    const diagnostics none;
    return {
        // Rate limiting, overload and server faults.
        {"http 429", stampede::make_http_error(429), with_status(429), failure_kind::retryable},
        {"http 408", stampede::make_http_error(408), with_status(408), failure_kind::retryable},
        {"http 500", stampede::make_http_error(500), with_status(500), failure_kind::retryable},
        {"http 503", stampede::make_http_error(503), with_status(503), failure_kind::retryable},
        {"http 599", stampede::make_http_error(599), with_status(599), failure_kind::retryable},
        {"http 400 without OAuth error", stampede::make_http_error(400), with_status(400),
         failure_kind::retryable},

        // Network faults and timeouts.
        {"connection_reset", asio::error::connection_reset, none, failure_kind::retryable},
        {"connection_refused", asio::error::connection_refused, none, failure_kind::retryable},
        {"eof", asio::error::eof, none, failure_kind::retryable},
        {"timed_out", asio::error::timed_out, none, failure_kind::retryable},
        {"beast timeout", beast::error::timeout, none, failure_kind::retryable},
        {"beast end_of_stream", beast::http::error::end_of_stream, none, failure_kind::retryable},
        {"ssl stream_truncated", asio::ssl::error::stream_truncated, none, failure_kind::retryable},
        {"connect_timeout", client_errc::connect_timeout, none, failure_kind::retryable},
        {"read_timeout", client_errc::read_timeout, none, failure_kind::retryable},
        {"request_timeout", client_errc::request_timeout, none, failure_kind::retryable},

        // Server bugs in a 200 response.
        {"malformed_response", client_errc::malformed_response, with_status(200),
         failure_kind::retryable},
        {"malformed_response in 502", client_errc::malformed_response, with_status(502),
         failure_kind::retryable},
        {"missing_access_token", client_errc::missing_access_token, with_status(200),
         failure_kind::retryable},
        {"invalid_expires_in", client_errc::invalid_expires_in, with_status(200),
         failure_kind::retryable},

        // Temporary OAuth errors in the configured list.
        {"slow_down", oauth_errc::slow_down, with_status(400, "slow_down"),
         failure_kind::retryable},
        {"temporarily_unavailable", oauth_errc::temporarily_unavailable,
         with_status(400, "temporarily_unavailable"), failure_kind::retryable},
        {"server_error", oauth_errc::server_error, with_status(400, "server_error"),
         failure_kind::retryable},
        {"rate_limit_exceeded", oauth_errc::rate_limit_exceeded,
         with_status(400, "rate_limit_exceeded"), failure_kind::retryable},
        {"too_many_requests", oauth_errc::too_many_requests, with_status(400, "too_many_requests"),
         failure_kind::retryable},
        {"slow_down without diagnostics", oauth_errc::slow_down, none, failure_kind::retryable},

        // The status wins over the OAuth string when the server is overloaded or down.
        {"invalid_request in 503", oauth_errc::invalid_request, with_status(503, "invalid_request"),
         failure_kind::retryable},
        {"unknown string in 429", oauth_errc::other, with_status(429, "quota"),
         failure_kind::retryable},

        // Permanent OAuth errors.
        {"invalid_client", oauth_errc::invalid_client, with_status(400, "invalid_client"),
         failure_kind::permanent},
        {"invalid_grant", oauth_errc::invalid_grant, with_status(400, "invalid_grant"),
         failure_kind::permanent},
        {"unauthorized_client", oauth_errc::unauthorized_client,
         with_status(400, "unauthorized_client"), failure_kind::permanent},
        {"unsupported_grant_type", oauth_errc::unsupported_grant_type,
         with_status(400, "unsupported_grant_type"), failure_kind::permanent},
        {"invalid_scope", oauth_errc::invalid_scope, with_status(400, "invalid_scope"),
         failure_kind::permanent},
        {"invalid_request", oauth_errc::invalid_request, with_status(400, "invalid_request"),
         failure_kind::permanent},
        {"access_denied", oauth_errc::access_denied, with_status(403, "access_denied"),
         failure_kind::permanent},
        {"unknown OAuth string", oauth_errc::other, with_status(400, "made_up_error"),
         failure_kind::permanent},
        {"other without diagnostics", oauth_errc::other, none, failure_kind::permanent},

        // Any 401 from the token endpoint.
        {"http 401", stampede::make_http_error(401), with_status(401), failure_kind::permanent},
        {"invalid_client in 401", oauth_errc::invalid_client, with_status(401, "invalid_client"),
         failure_kind::permanent},
        {"retryable string in 401", oauth_errc::temporarily_unavailable,
         with_status(401, "temporarily_unavailable"), failure_kind::permanent},
        {"malformed body in 401", client_errc::malformed_response, with_status(401),
         failure_kind::permanent},

        // Other statuses.
        {"http 403", stampede::make_http_error(403), with_status(403), failure_kind::permanent},
        {"http 404", stampede::make_http_error(404), with_status(404), failure_kind::permanent},
        {"http 405", stampede::make_http_error(405), with_status(405), failure_kind::permanent},
        {"http 413", stampede::make_http_error(413), with_status(413), failure_kind::permanent},
        {"http 301", stampede::make_http_error(301), with_status(301), failure_kind::permanent},

        // Local faults.
        {"invalid_settings", client_errc::invalid_settings, none, failure_kind::permanent},
        {"insecure_url", client_errc::insecure_url, none, failure_kind::permanent},
        {"certificate_verification_failed", client_errc::certificate_verification_failed, none,
         failure_kind::permanent},
        {"unsupported_token_type", client_errc::unsupported_token_type, with_status(200),
         failure_kind::permanent},
        {"header_too_large", client_errc::header_too_large, none, failure_kind::permanent},
        {"body_too_large", client_errc::body_too_large, with_status(200), failure_kind::permanent},
        {"ssl certificate verify failed",
         openssl_error(ERR_LIB_SSL, SSL_R_CERTIFICATE_VERIFY_FAILED), none,
         failure_kind::permanent},
        {"success", error_code{}, none, failure_kind::permanent},

        // Cancellation.
        {"operation_aborted", asio::error::operation_aborted, none, failure_kind::aborted},
        {"operation_aborted with 503", asio::error::operation_aborted, with_status(503),
         failure_kind::aborted},
        {"generic operation_canceled", make_error_code(errc::operation_canceled), none,
         failure_kind::aborted},
    };
}

} // namespace

BOOST_AUTO_TEST_CASE(classification_table) {
    const stampede::retry_classifier classifier(default_retryable_oauth_errors);
    for (const auto& c : classify_cases()) {
        BOOST_TEST_CONTEXT(c.name) {
            BOOST_TEST(classifier.classify(c.ec, c.diag) == c.expected);
        }
    }
}

BOOST_AUTO_TEST_CASE(classifier_uses_configured_list) {
    const stampede::retry_classifier classifier({"quota_exceeded"});

    BOOST_TEST(classifier.classify(oauth_errc::other, with_status(400, "quota_exceeded")) ==
               failure_kind::retryable);

    // slow_down is retryable by default but not in this list.
    BOOST_TEST(classifier.classify(oauth_errc::slow_down, with_status(400, "slow_down")) ==
               failure_kind::permanent);
    BOOST_TEST(classifier.is_retryable_oauth_error("quota_exceeded"));
    BOOST_TEST(!classifier.is_retryable_oauth_error("slow_down"));
}

BOOST_AUTO_TEST_CASE(classifier_with_empty_list) {
    const stampede::retry_classifier classifier({});
    BOOST_TEST(classifier.classify(oauth_errc::server_error, with_status(400, "server_error")) ==
               failure_kind::permanent);

    // Status-based rules still apply.
    BOOST_TEST(classifier.classify(stampede::make_http_error(503), with_status(503)) ==
               failure_kind::retryable);
}

BOOST_AUTO_TEST_CASE(classifier_prefers_raw_string) {
    // The raw string in the diagnostics decides, not the enumerator.
    const stampede::retry_classifier classifier(default_retryable_oauth_errors);
    BOOST_TEST(classifier.classify(oauth_errc::other, with_status(400, "slow_down")) ==
               failure_kind::retryable);
}

// Retry-After
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(retry_after_delta_seconds) {
    const auto now = chrono::system_clock::now();
    BOOST_TEST(parse("120", now) == 120000);
    BOOST_TEST(parse("0", now) == 0);
    BOOST_TEST(parse("007", now) == 7000);
    BOOST_TEST(parse("  5\t", now) == 5000);
}

BOOST_AUTO_TEST_CASE(retry_after_largest_seconds) {
    const auto now = chrono::system_clock::now();
    const std::int64_t largest = std::numeric_limits<std::int64_t>::max() / 1000;
    const auto parsed = parse(std::to_string(largest), now);
    BOOST_TEST(parsed == largest * 1000);
    BOOST_TEST(parse(std::to_string(largest + 1), now) == none);
    BOOST_TEST(parse("99999999999999999999999999", now) == none);
}

BOOST_AUTO_TEST_CASE(retry_after_garbage) {
    const auto now = chrono::system_clock::now();
    for (const std::string value : {"", "   ", "-1", "+5", "1.5", "12a", "1 2", "abc", "soon",
                                    "0x10", "Sun", "Sun,", "1e3", "\xff\xfe"}) {
        BOOST_TEST_CONTEXT("value '" << value << "'") {
            BOOST_TEST(parse(value, now) == none);
        }
    }
}

BOOST_AUTO_TEST_CASE(retry_after_date_forms) {
    const auto now = rfc_example_time - 10s;
    const long long expected = 10000;
    BOOST_TEST(parse("Sun, 06 Nov 1994 08:49:37 GMT", now) == expected);
    BOOST_TEST(parse("Sunday, 06-Nov-94 08:49:37 GMT", now) == expected);
    BOOST_TEST(parse("Sun Nov  6 08:49:37 1994", now) == expected);
}

BOOST_AUTO_TEST_CASE(retry_after_date_case_and_spaces) {
    const auto now = rfc_example_time - 10s;
    const long long expected = 10000;
    BOOST_TEST(parse("sun, 06 NOV 1994 08:49:37 gmt", now) == expected);
    BOOST_TEST(parse(" \tSun, 06 Nov 1994 08:49:37 GMT  ", now) == expected);
}

BOOST_AUTO_TEST_CASE(retry_after_asctime_two_digit_day) {
    const auto date = at(chrono::year(1994) / 11 / 16, 8h + 49min + 37s);
    BOOST_TEST(parse("Wed Nov 16 08:49:37 1994", date - 1s) == 1000);
    BOOST_TEST(parse("Sun Nov 06 08:49:37 1994", rfc_example_time - 1s) == 1000);
}

BOOST_AUTO_TEST_CASE(retry_after_date_in_past) {
    BOOST_TEST(parse("Sun, 06 Nov 1994 08:49:37 GMT", rfc_example_time) == 0);
    BOOST_TEST(parse("Sun, 06 Nov 1994 08:49:37 GMT", rfc_example_time + 1h) == 0);
    BOOST_TEST(parse("Sun, 06 Nov 1994 08:49:37 GMT", chrono::system_clock::now()) == 0);
}

BOOST_AUTO_TEST_CASE(retry_after_date_rounds_up) {
    const auto now = rfc_example_time - 1234567us;
    BOOST_TEST(parse("Sun, 06 Nov 1994 08:49:37 GMT", now) == 1235);
}

BOOST_AUTO_TEST_CASE(retry_after_far_future_date) {
    // Year 9999 is beyond the nanosecond range of system_clock; the result must not wrap.
    const auto now = rfc_example_time;
    const auto parsed = parse("Fri, 31 Dec 9999 23:59:59 GMT", now);
    const auto expected = chrono::sys_days(chrono::year(9999) / 12 / 31) + 86399s -
                          chrono::time_point_cast<chrono::seconds>(now);
    BOOST_TEST(parsed == millis(chrono::duration_cast<chrono::milliseconds>(expected)));
}

BOOST_AUTO_TEST_CASE(retry_after_rfc850_century) {
    // RFC 9110: a two-digit year more than 50 years in the future is in the past century.
    const auto now = at(chrono::year(2024) / 1 / 1, 0s);
    BOOST_TEST(parse("Sunday, 06-Nov-94 08:49:37 GMT", now) == 0);
    BOOST_TEST(parse("Monday, 01-Jan-75 00:00:00 GMT", now) == 0);

    const auto in_2030 = parse("Tuesday, 01-Jan-30 00:00:00 GMT", now);
    const auto expected_2030 = chrono::sys_days(chrono::year(2030) / 1 / 1) - now;
    BOOST_TEST(in_2030 == millis(chrono::duration_cast<chrono::milliseconds>(expected_2030)));

    const auto in_2074 = parse("Monday, 01-Jan-74 00:00:00 GMT", now);
    const auto expected_2074 = chrono::sys_days(chrono::year(2074) / 1 / 1) - now;
    BOOST_TEST(in_2074 == millis(chrono::duration_cast<chrono::milliseconds>(expected_2074)));
}

BOOST_AUTO_TEST_CASE(retry_after_leap_second) {
    const auto end_of_day = at(chrono::year(2016) / 12 / 31, 23h + 59min + 59s);
    BOOST_TEST(parse("Sat, 31 Dec 2016 23:59:60 GMT", end_of_day) == 1000);
}

BOOST_AUTO_TEST_CASE(retry_after_invalid_dates) {
    const auto now = rfc_example_time - 10s;
    for (const std::string value : {
             "Sun, 31 Feb 1994 08:49:37 GMT",    // no such day
             "Sun, 29 Feb 1994 08:49:37 GMT",    // not a leap year
             "Sun, 00 Nov 1994 08:49:37 GMT",    // day zero
             "Sun, 06 Nov 1994 24:00:00 GMT",    // hour out of range
             "Sun, 06 Nov 1994 08:60:00 GMT",    // minute out of range
             "Sun, 06 Nov 1994 08:49:61 GMT",    // second out of range
             "Sun, 06 Foo 1994 08:49:37 GMT",    // unknown month
             "Sun, 06 Nov 1994 08:49:37 UTC",    // zone other than GMT
             "Sun, 06 Nov 1994 08:49:37",        // zone missing
             "Sun, 06 Nov 1994 08:49:37 GMT x",  // trailing text
             "Sun, 6 Nov 1994 08:49:37 GMT",     // one-digit day
             "Sun, 06 Nov 94 08:49:37 GMT",      // two-digit year in IMF-fixdate
             "Sun, 06 Nov 1994 8:49:37 GMT",     // one-digit hour
             "Sun,06 Nov 1994 08:49:37 GMT",     // missing space
             "Xyz, 06 Nov 1994 08:49:37 GMT",    // unknown day name
             "Sunday, 06 Nov 1994 08:49:37 GMT", // long day name with IMF-fixdate
             "Sun, 06-Nov-94 08:49:37 GMT",      // short day name with RFC 850
             "Sunday, 06-Nov-1994 08:49:37 GMT", // four-digit year in RFC 850
             "Sun Nov 6 08:49:37 1994",          // asctime day needs two columns
             "Sun Nov  6 08:49:37 94",           // two-digit year in asctime
             "Sun Nov  6 08:49:37 1994 GMT",     // trailing zone in asctime
         }) {
        BOOST_TEST_CONTEXT("value '" << value << "'") {
            BOOST_TEST(parse(value, now) == none);
        }
    }
}

BOOST_AUTO_TEST_CASE(retry_after_weekday_not_checked) {
    // 6 November 1994 was a Sunday. The day name is syntax-checked only.
    const auto now = rfc_example_time - 10s;
    BOOST_TEST(parse("Mon, 06 Nov 1994 08:49:37 GMT", now) == 10000);
}
