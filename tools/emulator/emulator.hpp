// Stampede API emulator: an HTTPS server on loopback that implements the Stampede
// OAuth 2.0 token endpoint and the guest API, with scripted faults for tests.
//
// The emulator is independent of the SDK on purpose, because tests use it as the
// reference the SDK is checked against. docs/emulator.md describes the wire behaviour.

#pragma once

#include <boost/json/object.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stampede::emulator {

/// Request budget: at most `requests` accepted requests in any window of `period`.
struct rate {
    std::size_t requests;
    std::chrono::milliseconds period;
};

/// Parses "N/SECONDS" (for example "20/60" or "5/0.5") into a rate.
/// Throws std::invalid_argument naming the text when it is malformed or not positive.
rate parse_rate(std::string_view text);

/// Server settings. The server constructor validates them.
struct options {
    /// Listening address as ADDR:PORT or [IPV6]:PORT. Port 0 picks a free port.
    std::string listen = "127.0.0.1:0";

    /// Registered clients as (client_id, client_secret). Empty: demo-client:demo-secret.
    std::vector<std::pair<std::string, std::string>> clients;

    /// Lifetime of issued access tokens.
    std::chrono::milliseconds token_lifetime{86400000};

    /// Token endpoint budget per client id.
    rate token_rate{20, std::chrono::seconds(60)};

    /// /v1/ API budget per client id (the client that the bearer token was issued to).
    rate api_rate{100, std::chrono::seconds(900)};

    /// Serve plain HTTP instead of HTTPS.
    bool plain_http = false;

    /// File that receives the PEM certificate at start(). Empty: no file.
    std::string cert_out;

    /// Only name in the certificate (DNS name, or IP address if it parses as one).
    /// Empty: the certificate is valid for 127.0.0.1, ::1 and localhost.
    std::string cert_host;

    /// Fault script applied to successive token requests (see parse_fault_script).
    std::string fault_script;

    /// Fault script applied to successive /v1/ requests.
    std::string api_fault_script;

    /// Status of token endpoint rate-limit rejections: 429 (with Retry-After) or 400.
    int rate_limit_status = 429;

    /// Time after which the server closes a connection that sends nothing. It also
    /// bounds the TLS handshake, the reading of one request and the writing of a response.
    std::chrono::milliseconds idle_timeout{30000};

    /// Number of seeded guest records.
    std::size_t guests = 60;

    /// Receives one line per request and per server event (start, stop, errors),
    /// called on the server thread. Lines never contain secrets or tokens.
    /// Empty: no logging.
    std::function<void(std::string_view line)> logger;

    /// Log one line per request (method, path, status, client id, fault item).
    bool log_requests = true;
};

/// Counters since start(). GET /_emulator/stats returns the same values as JSON.
struct stats {
    std::uint64_t token_requests = 0; ///< requests to /oauth/token, any method or outcome
    std::uint64_t tokens_issued = 0;  ///< access tokens issued
    std::map<std::string, std::uint64_t> rejections; ///< token rejections by error code
    std::uint64_t rate_limited = 0;                  ///< token requests rejected by token_rate
    std::uint64_t connections_accepted = 0;          ///< TCP connections accepted
    std::uint64_t connections_open = 0;              ///< TCP connections open now
    std::uint64_t tls_handshake_failures = 0;        ///< connections closed by a failed handshake
    std::uint64_t api_requests = 0;                  ///< requests under /v1/
    std::uint64_t api_unauthorized = 0;              ///< /v1/ requests rejected with 401
    std::uint64_t api_rate_limited = 0;              ///< /v1/ requests rejected by api_rate
    std::uint64_t faults_applied = 0;                ///< script items other than `ok` applied
    /// Arrival time of each token request in milliseconds since start(), the last 10000.
    std::vector<std::int64_t> token_request_times_ms;
};

/// Fault script items. docs/emulator.md describes each one.
enum class fault_kind {
    ok,                  ///< ok
    html_5xx,            ///< 5xx-html:CODE
    status_429,          ///< 429
    retry_after_seconds, ///< 429-seconds:N
    retry_after_date,    ///< 429-date:N
    oauth_error,         ///< oauth-error:CODE[:STATUS]
    bare_400,            ///< bare-400
    reset,               ///< reset
    close_mid_body,      ///< close-mid-body
    stall,               ///< stall
    slow,                ///< slow:MS
    garbage_json,        ///< garbage-json
    truncated_json,      ///< truncated-json
    html_200,            ///< html-200
    error_200,           ///< error-200
    oversize,            ///< oversize:BYTES
    expires_in,          ///< expires-in:RAW (token requests only)
    expires_in_missing,  ///< expires-in-missing (token requests only)
    no_access_token,     ///< no-access-token (token requests only)
    token_type,          ///< token-type:NAME (token requests only)
    echo_secret,         ///< echo-secret (token requests only)
    charset,             ///< charset
    unauthorized,        ///< 401 (API requests only)
};

/// One parsed fault script item.
struct fault {
    fault_kind kind = fault_kind::ok;
    int status = 0;          ///< HTTP status of html_5xx and oauth_error
    std::int64_t number = 0; ///< seconds (retry_after_*), milliseconds (slow) or bytes (oversize)
    std::string text;        ///< error code (oauth_error), raw JSON (expires_in) or token type
    std::size_t repeat = 1;  ///< number of requests the item applies to, unless forever
    bool forever = false;    ///< the item applies to every later request
};

/// Parses a comma-separated fault script such as "5xx-html:503*2,slow:200".
/// An empty script has no items. Throws std::invalid_argument naming the bad item.
std::vector<fault> parse_fault_script(std::string_view script);

/// Formats an item back into script syntax, repetition included.
std::string to_string(const fault& item);

/// The emulator server. All public member functions are thread-safe.
class server {
public:
    /// Validates the options. Throws std::invalid_argument naming the bad option.
    explicit server(options opts);

    /// Stops the server.
    ~server();

    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Binds the listening socket, generates the certificate and starts the server
    /// thread. Returns once the socket listens. Throws std::system_error when binding
    /// fails, std::runtime_error when cert_out cannot be written, and
    /// std::logic_error when called twice.
    void start();

    /// Closes every connection, stops the server thread and waits for it.
    /// Stalled requests end here. Does nothing if the server is not running.
    void stop();

    /// Token endpoint URL, such as https://127.0.0.1:43127/oauth/token.
    std::string token_url() const;

    /// API base URL with a trailing slash, such as https://127.0.0.1:43127/.
    std::string base_url() const;

    /// Bound port, or 0 before start().
    unsigned short port() const;

    /// PEM certificate that clients must trust. Empty before start() or with plain_http.
    std::string certificate_pem() const;

    stats get_stats() const;

    /// Returns the counters in the form of GET /_emulator/stats.
    boost::json::object stats_json() const;

    /// Replaces the pending token request faults. Throws std::invalid_argument on a bad
    /// script or on an item that applies only to API requests.
    void set_fault_script(std::string_view script);

    /// Replaces the pending /v1/ request faults. Throws std::invalid_argument on a bad
    /// script or on an item that applies only to token requests.
    void set_api_fault_script(std::string_view script);

    /// Revokes one access token. Returns true if it was issued, unexpired and not revoked.
    bool revoke(std::string_view access_token);

    /// Revokes every issued access token.
    void revoke_all();

    /// Closes every connection that is waiting for its next request, and closes a
    /// connection that is writing a response once the write completes. Connections that
    /// are reading or handling a request (a stall or slow fault included) stay open.
    void close_idle_connections();

    /// Sets the lifetime of tokens issued from now on. Issued tokens keep their expiry.
    void set_token_lifetime(std::chrono::milliseconds lifetime);

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

} // namespace stampede::emulator
