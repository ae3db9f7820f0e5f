#ifndef STAMPEDE_SETTINGS_HPP
#define STAMPEDE_SETTINGS_HPP

#include <stampede/diagnostics.hpp>
#include <stampede/logger.hpp>
#include <stampede/secret_string.hpp>

#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stampede {

class token_store;         // <stampede/token_store.hpp>
class shared_rate_limiter; // <stampede/shared_rate_limiter.hpp>

using std::chrono::milliseconds;
using std::chrono::seconds;

/// The URL of Stampede's token endpoint.
inline constexpr std::string_view default_token_url = "https://global.stampede.ai/oauth/token";

/// The base URL of Stampede's API.
inline constexpr std::string_view default_api_url = "https://global.stampede.ai/";

/// Client authentication method at the token endpoint (RFC 6749, section 2.3). Each
/// request uses exactly the chosen method, and a failure never makes the SDK try another.
enum class client_auth_method {
    /// A JSON body `{"client_id", "client_secret", "grant_type", ...}`, as the Stampede
    /// endpoint expects.
    json_body,

    /// An `application/x-www-form-urlencoded` body that carries `client_id` and
    /// `client_secret` next to the other parameters (RFC 6749, section 2.3.1).
    client_secret_post,

    /// An `Authorization: Basic` header with the client id and secret, each form-encoded
    /// before base64 as RFC 6749, section 2.3.1 requires, and a form-encoded body without
    /// them.
    client_secret_basic,
};

/// Returns the method's name as the settings and `stampede-token --auth-method` spell it,
/// which is also its OAuth metadata name (`client_secret_post`, `client_secret_basic`);
/// `"invalid"` for a value outside the enumeration.
std::string_view to_string(client_auth_method method) noexcept;

/// Returns the method named `name` (`json_body`, `client_secret_post` or
/// `client_secret_basic`, in that spelling), or nothing for any other text.
std::optional<client_auth_method> parse_client_auth_method(std::string_view name) noexcept;

/// Writes `to_string(method)`.
std::ostream& operator<<(std::ostream& os, client_auth_method method);

/// Longest duration any setting accepts: ten years. Clock readings plus a few such
/// durations stay far from overflowing 64-bit nanoseconds.
inline constexpr milliseconds max_setting_duration{std::chrono::hours(24 * 3653)};

/// Transport settings: TLS trust, timeouts and size limits.
struct transport_settings {
    /// PEM file of certificate authorities to trust instead of the system store.
    std::string ca_file;

    /// Directory of hashed PEM certificates (as made by `openssl rehash`) to trust
    /// instead of the system store.
    std::string ca_directory;

    /// Allow plain `http://` URLs to hosts that are not loopback addresses. Plain HTTP to
    /// 127.0.0.0/8, ::1 and `localhost` is always allowed.
    bool allow_insecure_http = false;

    /// Maximum time to resolve the host name.
    milliseconds resolve_timeout{5000};

    /// Maximum time to open the TCP connection.
    milliseconds connect_timeout{5000};

    /// Maximum time for the TLS handshake.
    milliseconds handshake_timeout{5000};

    /// Maximum time to send the request.
    milliseconds write_timeout{5000};

    /// Maximum time to receive the whole response once the request is sent.
    milliseconds read_timeout{10000};

    /// Maximum time for the whole request, from resolving to the last byte of the
    /// response, including a transparent reconnect.
    milliseconds request_timeout{30000};

    /// A kept-alive connection idle for longer than this is closed before the next
    /// request instead of being reused.
    milliseconds idle_timeout{50000};

    /// Maximum size of the response status line and headers, in bytes.
    std::size_t max_header_bytes = 16 * 1024;

    /// Maximum size of the response body, in bytes.
    std::size_t max_body_bytes = 64 * 1024;

    /// Value of the `User-Agent` header.
    std::string user_agent = "stampede-cpp/0.1.0";
};

/// Returns an empty string when `settings` are valid, otherwise a message that names the
/// invalid field and the accepted range. Timeouts must be positive and at most ten years.
std::string validate(const transport_settings& settings);

/// A token bucket: `capacity` requests may go at once, then one more every
/// `refill_interval`. Over any window of length W at most
/// `capacity + floor(W / refill_interval)` requests pass.
struct rate_limit_settings {
    /// Maximum burst, in requests.
    std::size_t capacity = 4;

    /// Time to earn back one request.
    milliseconds refill_interval{4000};
};

/// Exponential backoff with full jitter between retries of one fetch.
struct backoff_settings {
    /// Upper bound of the first delay, before jitter.
    milliseconds initial_delay{500};

    /// Growth of the upper bound per attempt.
    double multiplier = 2.0;

    /// Largest upper bound of a delay.
    milliseconds max_delay{30000};

    /// Smallest delay after a failure, so a retry never follows at once.
    milliseconds min_delay{100};

    /// Largest `Retry-After` delay that is honoured; longer ones are cut to this.
    milliseconds max_retry_after{300000};

    /// Maximum number of attempts of one fetch, the first included.
    unsigned max_attempts = 6;

    /// Maximum time from the first attempt of a fetch to the start of its last retry.
    milliseconds max_elapsed{120000};

    /// Source of uniformly distributed 64-bit values for the jitter. Empty: a
    /// `std::mt19937_64` seeded from `std::random_device`. Tests set it to make delays
    /// deterministic.
    std::function<std::uint64_t()> random;
};

/// Fleet mode: the token sources of several processes share one token store, such as
/// `redis::redis_token_store`, so that the fleet fetches each token once. A process takes
/// the store's lease before it fetches, and the others wait for the token it stores.
/// When the store fails, each process falls back to its own cache, single flight and
/// `rate_limit` until the store works again. docs/fleet-mode.md describes the guarantees.
struct fleet_settings {
    /// The shared store. Empty (the default): tokens are cached in this process only.
    std::shared_ptr<token_store> store;

    /// Limits the token requests of the whole fleet, after this process's `rate_limit`.
    /// Empty: no fleet-wide limit. Needs `store`.
    std::shared_ptr<shared_rate_limiter> limiter;

    /// Time to live of the lease taken before a fetch. A holder that dies is replaced
    /// once its lease expires. It must be longer than `transport.request_timeout` plus
    /// `rate_limit.refill_interval`, so that a live holder's lease outlasts its fetch.
    milliseconds lease_ttl{45000};

    /// Longest single wait for another process's fetch. After it the store and the lease
    /// are checked again; a wait also ends when the token is stored or the lease is
    /// released or expires.
    milliseconds max_wait{5000};
};

/// Settings of a `token_source`.
struct token_source_settings {
    /// The client id (the API key's client id). Required.
    std::string client_id;

    /// The client secret. Required.
    secret_string client_secret;

    /// The token endpoint.
    std::string token_url{default_token_url};

    /// How the client id and secret reach the token endpoint. Servers that follow
    /// RFC 6749 take `client_secret_basic` or `client_secret_post`; the Stampede endpoint
    /// takes `json_body`.
    client_auth_method auth_method = client_auth_method::json_body;

    /// The `scope` parameter: scope tokens separated by single spaces, each made of visible
    /// ASCII characters other than `"` and `\` (RFC 6749, section 3.3). Empty: not sent.
    /// A response without `scope` is taken to grant this scope.
    std::string scope{};

    /// The `audience` parameter, which some servers use to pick the API the token is
    /// for. Empty: not sent.
    std::string audience{};

    /// The `resource` parameter (RFC 8707): an absolute URI without a fragment that
    /// names the API the token is for. Empty: not sent.
    std::string resource{};

    /// Further request parameters, sent after the standard ones in the same encoding, as
    /// (name, value) pairs. Names must be unique, non-empty and differ from the parameters
    /// set above (`grant_type`, `client_id`, `client_secret`, `scope`, `audience`,
    /// `resource`); names and values must not contain control characters.
    std::vector<std::pair<std::string, std::string>> extra_parameters{};

    transport_settings transport;

    /// Start refreshing this long before the token expires. For short-lived tokens the
    /// SDK uses at most half the lifetime, so a margin longer than the lifetime never
    /// causes a refetch loop.
    milliseconds refresh_ahead{std::chrono::minutes(5)};

    /// Stop handing out a token this long before it expires, so that it is still valid
    /// when it reaches the server. At most a tenth of the lifetime is used.
    milliseconds expiry_margin{10000};

    /// Lifetime assumed when a token response has no `expires_in`.
    milliseconds default_lifetime{std::chrono::hours(1)};

    /// Maximum token lifetime; a larger `expires_in` is cut to this.
    milliseconds max_lifetime{std::chrono::hours(24 * 7)};

    /// Limits the requests sent to the token endpoint, retries included. The default
    /// allows at most 19 requests in any 60-second window (4 + 60 s / 4 s), one below
    /// the endpoint's documented 20 per minute to absorb clock differences.
    rate_limit_settings rate_limit;

    backoff_settings backoff;

    /// How long a permanent error (such as a wrong secret) is remembered. During this
    /// time new callers fail at once with the same error instead of sending a request.
    milliseconds permanent_error_cooldown{30000};

    /// OAuth `error` values that mean "try again later"; a 400 carrying one is retried.
    std::vector<std::string> retryable_oauth_errors{
        "slow_down", "temporarily_unavailable", "rate_limit_exceeded", "too_many_requests",
        "server_error"};

    /// Sharing of tokens between processes. Off by default.
    fleet_settings fleet;

    /// Receives the SDK's log records. Off by default. The sink may be called until the
    /// executor has run or destroyed the source's last handler, which can be after the
    /// last copy of the `token_source` is gone.
    stampede::logger logger;
};

/// Checks every field. On failure returns `client_errc::invalid_settings` (or
/// `insecure_url`) and puts a message naming the field and the fix in `diag`.
boost::system::error_code validate(const token_source_settings& settings, diagnostics& diag);

/// Writes the settings with the secret redacted.
std::ostream& operator<<(std::ostream& os, const token_source_settings& settings);

} // namespace stampede

#endif
