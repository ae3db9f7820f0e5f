#ifndef STAMPEDE_DETAIL_TOKEN_WIRE_HPP
#define STAMPEDE_DETAIL_TOKEN_WIRE_HPP

#include <stampede/detail/http_connection.hpp>
#include <stampede/detail/url.hpp>
#include <stampede/diagnostics.hpp>
#include <stampede/secret_string.hpp>
#include <stampede/settings.hpp>

#include <boost/system/error_code.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stampede::detail {

/// Strings that must never appear in server text kept in diagnostics or logs.
/// `redact()` replaces each one with `[redacted]`, in these forms: as is, percent-encoded
/// (any hex case, `+` for space), JSON-escaped, and base64 or base64url encoded on its own
/// or inside a longer encoded value such as `client_id:secret`. In the encoded forms the
/// one character on each edge that shares bits with neighbouring bytes may remain.
class redactor {
public:
    /// Adds a secret; empty values are ignored. Values shorter than 4 bytes are ignored
    /// too, because replacing them would garble unrelated text.
    void add(std::string_view secret);

    /// Returns `text` with every known secret replaced.
    std::string redact(std::string_view text) const;

    /// Returns the most bytes one secret can take in `text` in any recognised form.
    std::size_t max_encoded_size() const noexcept;

private:
    std::vector<secret_string> patterns_;
};

/// Returns `text` redacted and made safe to show on one line. Control characters (C0, DEL,
/// C1), line separators and bidirectional formatting characters become spaces, and each run
/// of white space becomes one space. Invalid UTF-8 bytes become U+FFFD. Text longer than
/// `max_chars` code points is cut to that many, followed by `...`. Secrets are redacted
/// both before and after white space is folded. Only a bounded prefix of `text` is read.
std::string sanitize_server_text(std::string_view text, const redactor& secrets,
                                 std::size_t max_chars = 200);

/// A parsed successful token response.
struct token_response {
    secret_string access_token;

    /// Always "Bearer" (matched case-insensitively on the wire).
    std::string token_type;

    /// The `scope` field, empty when absent.
    std::string scope;

    /// The `expires_in` field, or nothing when it is absent or null. Positive; values past
    /// ten years are cut to ten years so later arithmetic cannot overflow.
    std::optional<std::chrono::milliseconds> expires_in;
};

/// Builds the token request: `POST` to `url.target` with `Accept: application/json`. The
/// client authenticates by `settings.auth_method` alone. The parameters are
/// `grant_type=client_credentials`, then `scope`, `audience` and `resource` when set, then
/// `extra_parameters`, encoded as follows:
///
/// - `json_body`: a JSON object with `client_id`, `client_secret` and the parameters as
///   string members, serialized with Boost.JSON.
/// - `client_secret_post`: a form-encoded body with `client_id` and `client_secret` after
///   `grant_type`.
/// - `client_secret_basic`: `Authorization: Basic` over the form-encoded id and secret
///   joined by `:`, and a form-encoded body without them.
///
/// Every fetch (first, refresh, retry) builds its request here.
http_request make_token_request(const endpoint_url& url, const token_source_settings& settings);

/// Interprets a token endpoint response.
///
/// - 2xx with a JSON object holding a non-empty string `access_token` of visible ASCII
///   characters (so it is safe in an `Authorization` header), `token_type` equal to
///   `Bearer` ignoring case (absent or null counts as `Bearer`), and a valid `expires_in`:
///   success. `expires_in` may be an integer, a fraction (kept to the millisecond) or a
///   string of digits with an optional fraction and no sign, exponent or spaces.
///   Unknown fields are ignored, as is a `scope` that is not a string. `Content-Type`
///   parameters such as `charset` are accepted, and JSON is parsed whatever the type,
///   except `application/x-www-form-urlencoded`: such a body is read as form fields, each
///   a string (so `expires_in=3600` is accepted), and is `malformed_response` when it is
///   not valid form encoding.
/// - Any status whose JSON body has a string `error`: the matching `oauth_errc`, with the
///   raw code and `error_description` in `diag` (a 200 carrying `error` included).
/// - 2xx without a usable `access_token`: `client_errc::missing_access_token`.
/// - 2xx with another token type: `unsupported_token_type`.
/// - 2xx with an `expires_in` that is zero, negative, below one millisecond, a boolean, an
///   array, an object or a malformed string: `invalid_expires_in`.
/// - A non-2xx status without an OAuth error: `make_http_error(status)`.
/// - A body that is not JSON (HTML, text, empty, truncated) or not a JSON object on a 2xx:
///   `malformed_response`.
/// The client message names the status and content type, and for a 401 the
/// `WWW-Authenticate` challenge; the server message contains the sanitized
/// `error_description` or a short body preview. `Retry-After` (seconds or
/// HTTP-date) is stored with `diag.set_retry_after`.
boost::system::error_code parse_token_response(const http_response& response,
                                               const redactor& secrets,
                                               std::chrono::system_clock::time_point now,
                                               token_response& out, diagnostics& diag);

} // namespace stampede::detail

#endif
