#ifndef STAMPEDE_RETRY_HPP
#define STAMPEDE_RETRY_HPP

#include <stampede/diagnostics.hpp>

#include <boost/system/error_code.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stampede {

/// Parses an HTTP `Retry-After` value as defined by RFC 9110 (section 10.2.3) and returns
/// the delay it requests, relative to `now`.
///
/// Accepts delta-seconds (`120`) and the three HTTP-date forms: IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and
/// asctime (`Sun Nov  6 08:49:37 1994`). Spaces and tabs around the value are ignored, and
/// month and day names match in any case. The day name must be valid but is not checked
/// against the date. A two-digit RFC 850 year that would lie more than 50 years after
/// `now` is read as the most recent past year with those digits, as RFC 9110 requires.
/// A date at or before `now` gives zero, and a future date is rounded up to whole
/// milliseconds.
///
/// Returns `std::nullopt` for an empty value, a signed or fractional number, a number
/// of seconds that does not fit in `std::chrono::milliseconds`, an impossible date or
/// time (`31 Feb`, `25:00:00`), and any other text.
std::optional<std::chrono::milliseconds>
parse_retry_after(std::string_view header_value, std::chrono::system_clock::time_point now);

/// Outcome of classifying a failed attempt.
enum class failure_kind {
    /// A later attempt may succeed. The caller retries after a `backoff_policy` delay.
    retryable,

    /// Retrying cannot help. The caller fails at once with the error.
    permanent,

    /// The operation was cancelled (`asio::error::operation_aborted`). The caller stops
    /// without retrying and without treating the error as permanent (it must not, for
    /// example, remember it for `permanent_error_cooldown`).
    aborted,
};

/// Decides whether a failed request to the token endpoint or the API is worth retrying.
///
/// The rules, in order of precedence:
/// 1. `asio::error::operation_aborted` (and `errc::operation_canceled`) is `aborted`.
/// 2. HTTP 401, whether as the code or as `diagnostics::http_status()`, is `permanent`.
/// 3. An OAuth error (category "stampede.oauth") whose status is 408, 429 or 5xx is
///    `retryable`. Otherwise its raw `error` string (`diagnostics::server_error_code()`,
///    or the enumerator's name when that is empty) decides: `retryable` when it is in
///    the configured list, `permanent` otherwise. Unknown strings are `permanent`.
/// 4. Every other code follows the default rules of `condition::retryable`
///    in <stampede/error.hpp>: HTTP 400 without an OAuth error (a proxy), 408, 429 and
///    5xx, network errors, connection resets, end of stream, timeouts, malformed or
///    truncated bodies, `missing_access_token` and `invalid_expires_in` are `retryable`.
///    Everything else is `permanent`. That includes other statuses, `invalid_settings`,
///    `insecure_url`, `certificate_verification_failed`, `unsupported_token_type`, TLS
///    handshake failures, success and codes of unknown categories. It also includes
///    `header_too_large` and `body_too_large`, because the limits are local settings
///    and an oversized response tends to repeat.
///
/// The object is immutable after construction, so one instance may be shared between
/// threads.
class retry_classifier {
public:
    /// Builds a classifier that treats the OAuth `error` strings in
    /// `retryable_oauth_errors` as temporary, typically
    /// `token_source_settings::retryable_oauth_errors`. Strings match exactly.
    explicit retry_classifier(std::vector<std::string> retryable_oauth_errors);

    /// Classifies the failure `ec` together with its diagnostics.
    failure_kind classify(const boost::system::error_code& ec, const diagnostics& diag) const;

    /// Returns whether `error` is in the configured list of temporary OAuth errors.
    bool is_retryable_oauth_error(std::string_view error) const noexcept;

private:
    std::vector<std::string> retryable_oauth_errors_;
};

} // namespace stampede

#endif
