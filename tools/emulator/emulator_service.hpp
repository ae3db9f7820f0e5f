// Private to the emulator: the request handling behind the network layer.
// Nothing here performs I/O, so the service decides every reply from the request,
// the time it arrived and its own state.

#pragma once

#include "emulator.hpp"

#include <boost/json/value.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace stampede::emulator::detail {

using steady_clock = std::chrono::steady_clock;
using system_clock = std::chrono::system_clock;

/// The parts of an HTTP request that the service reads. Views into the parsed request.
struct http_request {
    std::string_view method;
    std::string_view target;
    std::string_view content_type;
    std::string_view authorization;
    std::string_view body;
};

/// Delivery of a reply on its connection.
enum class reply_action {
    respond,        ///< send the response
    reset,          ///< abort the connection with a TCP RST and send nothing
    close_mid_body, ///< send the headers and half of the body, then close the connection
    stall, ///< send nothing and keep the connection open until the client or stop() closes it
};

/// A response and how to deliver it. The network layer adds Content-Length, Date,
/// Server and Connection.
struct http_reply {
    unsigned status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    reply_action action = reply_action::respond;
    std::chrono::milliseconds delay{0};
    bool omit_body = false; ///< a response to HEAD: Content-Length of the body, but no body
    std::string client_id;  ///< for the log line, empty when unknown
    std::string fault;      ///< script item applied, for the log line
};

/// Query parameters, percent-decoded, in request order.
using query_params = std::vector<std::pair<std::string, std::string>>;

/// Listening address split from options::listen.
struct listen_address {
    std::string host; ///< IP address without brackets
    unsigned short port = 0;
};

/// Checks every option, fills in the default client, and returns the parsed listening
/// address. Throws std::invalid_argument naming the option.
listen_address validate_options(options& opts);

/// Parses a script for token requests. Rejects items that apply only to API requests.
std::vector<fault> parse_token_fault_script(std::string_view script);

/// Parses a script for /v1/ requests. Rejects items that apply only to token requests.
std::vector<fault> parse_api_fault_script(std::string_view script);

http_reply make_json_reply(unsigned status, const boost::json::value& body);

/// Builds a reply with the JSON body {"error": code, "error_description": description}.
http_reply make_error_reply(unsigned status, std::string_view code, std::string_view description);

/// Formats a time as ISO 8601 in UTC with second precision, such as 2024-05-01T09:30:00Z.
std::string format_iso8601(system_clock::time_point time);

/// Formats a time as an HTTP IMF-fixdate, such as Sun, 06 Nov 1994 08:49:37 GMT.
std::string format_http_date(system_clock::time_point time);

std::string base64url_encode(std::string_view bytes);

/// Decodes unpadded base64url. Returns nothing on a character outside the alphabet.
std::optional<std::string> base64url_decode(std::string_view text);

/// Returns whether the media type of a Content-Type value is application/json.
bool is_json_content_type(std::string_view content_type);

/// Exact sliding window: a request is accepted when fewer than rate.requests requests
/// were accepted in the preceding rate.period. Rejected requests are not recorded.
class sliding_window {
public:
    explicit sliding_window(rate budget);

    /// Records a request at `now`. Returns nothing if it is accepted, or else the time
    /// until the oldest accepted request leaves the window.
    std::optional<steady_clock::duration> try_acquire(steady_clock::time_point now);

private:
    rate budget_;
    std::deque<steady_clock::time_point> accepted_;
};

/// Pending script items, consumed one per request.
class fault_queue {
public:
    void assign(std::vector<fault> items);

    /// Removes and returns the item for the next request, or nothing when the script is over.
    std::optional<fault> next();

private:
    std::deque<fault> items_;
    std::size_t used_ = 0; ///< uses of the front item so far
};

/// Seeded and created guest records and the /v1/guests routes.
class guest_store {
public:
    explicit guest_store(std::size_t seeded_count);

    /// GET /v1/guests with search, limit and cursor.
    http_reply list(const query_params& query) const;

    /// GET /v1/guests/{id}.
    http_reply get(std::string_view id) const;

    /// POST /v1/guests. Validates the body and returns 201 with the guest, 415 for a
    /// non-JSON content type, or 422 naming the invalid fields.
    http_reply create(std::string_view content_type, std::string_view body,
                      system_clock::time_point now);

private:
    struct record {
        boost::json::object full; ///< the single-guest form
        std::string search_text;  ///< lower-case "first last email"
    };

    boost::json::object list_form(const record& guest) const;
    void add(boost::json::object guest);

    std::vector<record> records_;
    std::unordered_map<std::string, std::size_t> index_by_id_;
    std::unordered_set<std::string> emails_; ///< lower-case, for the uniqueness check
    std::int64_t next_number_ = 0;           ///< source of ids for created guests
};

/// The emulator's state and request handling. Thread-safe: the server thread calls
/// handle() while the test thread reads counters or changes faults.
class service {
public:
    /// Takes options that validate_options() accepted.
    explicit service(const options& opts);

    /// Sets the time that token_request_times_ms counts from.
    void set_start_time(steady_clock::time_point start);

    /// Routes a request to the token endpoint, the API or the control endpoints.
    /// POST /_emulator/close-idle is left to the network layer.
    http_reply handle(const http_request& request, steady_clock::time_point now);

    void count_connection_opened();
    void count_connection_closed();
    void count_handshake_failure();

    stats snapshot() const;
    boost::json::object snapshot_json() const;

    void set_token_faults(std::vector<fault> items);
    void set_api_faults(std::vector<fault> items);

    bool revoke(std::string_view access_token, steady_clock::time_point now);

    /// Revokes every live token and returns how many there were.
    std::size_t revoke_all(steady_clock::time_point now);

    void set_token_lifetime(std::chrono::milliseconds lifetime);

private:
    struct token_record {
        std::string client_id;
        steady_clock::time_point expiry;
        bool revoked = false;
    };

    http_reply handle_token(const http_request& request, steady_clock::time_point now);
    http_reply issue_token(const http_request& request, steady_clock::time_point now,
                           const std::optional<fault>& modifier);
    http_reply handle_api(const http_request& request, std::string_view path,
                          const query_params& query, steady_clock::time_point now);
    http_reply route_api(const http_request& request, std::string_view path,
                         const query_params& query);
    http_reply handle_control(const http_request& request, std::string_view path,
                              steady_clock::time_point now);
    http_reply fault_reply(const fault& item, const http_request& request, bool token_endpoint,
                           steady_clock::time_point now);
    std::optional<http_reply> authenticate(std::string_view authorization,
                                           steady_clock::time_point now, std::string& client_id);
    std::string store_token(const std::string& client_id, steady_clock::time_point now);
    http_reply reject_token(unsigned status, std::string_view code, std::string_view description);
    stats snapshot_locked() const;
    boost::json::object snapshot_json_locked() const;
    bool revoke_locked(std::string_view access_token, steady_clock::time_point now);
    std::size_t revoke_all_locked(steady_clock::time_point now);

    mutable std::mutex mutex_;
    std::vector<std::pair<std::string, std::string>> clients_;
    std::chrono::milliseconds token_lifetime_;
    rate token_rate_;
    rate api_rate_;
    int rate_limit_status_;
    steady_clock::time_point start_time_;

    std::unordered_map<std::string, token_record> tokens_;
    std::uint64_t issues_since_sweep_ = 0;
    std::unordered_map<std::string, sliding_window> token_windows_;
    std::unordered_map<std::string, sliding_window> api_windows_;
    fault_queue token_faults_;
    fault_queue api_faults_;
    guest_store guests_;

    stats stats_;
    std::deque<std::int64_t> token_request_times_ms_;
};

} // namespace stampede::emulator::detail
