// Fuzzes stampede::validate(token_source_settings) with settings read from `key=value`
// lines that name the fields (`client_secret=...`, `transport.read_timeout=10000`,
// `backoff.multiplier=2.5`; durations in milliseconds). Fields that are not given keep
// their defaults.
//
// Checks that validation has no undefined behaviour on extreme durations, and that its
// message and the printed settings never show the secret. Settings that it accepts must
// build a token_source, plan the life of any token without overflow, and remember a
// permanent error.

#include "fuzz_support.hpp"

#include "../support/fake_fetcher.hpp"

#include <stampede/detail/token_schedule.hpp>
#include <stampede/detail/token_wire.hpp>
#include <stampede/detail/url.hpp>
#include <stampede/error.hpp>
#include <stampede/settings.hpp>
#include <stampede/token_source.hpp>

#include <boost/asio/io_context.hpp>

#include <charconv>
#include <chrono>
#include <exception>
#include <functional>
#include <sstream>
#include <string>
#include <type_traits>

namespace {

using namespace stampede;
using std::chrono::milliseconds;

using field_map = std::map<std::string, std::string, std::less<>>;

struct fuzzed_input {
    token_source_settings settings;

    /// The `expires_in` of a token to plan, or empty when the input gives none.
    std::optional<milliseconds> expires_in;
};

using setter = std::function<void(fuzzed_input&, const std::string&)>;

// The setter of each key, which parses the value's text into its field.
const std::map<std::string_view, setter>& setters()
{
    static const std::map<std::string_view, setter> table = [] {
        std::map<std::string_view, setter> t;
        const auto ms = [](const std::string& text) {
            return milliseconds(fuzz::parse_integer(text, 0));
        };
        const auto size = [](const std::string& text) {
            return static_cast<std::size_t>(fuzz::parse_integer(text, 0));
        };
        t["client_id"] = [](fuzzed_input& in, const std::string& v) { in.settings.client_id = v; };
        t["client_secret"] = [](fuzzed_input& in, const std::string& v) {
            in.settings.client_secret = secret_string(v);
        };
        t["token_url"] = [](fuzzed_input& in, const std::string& v) { in.settings.token_url = v; };
        t["auth_method"] = [](fuzzed_input& in, const std::string& v) {
            in.settings.auth_method =
                stampede::parse_client_auth_method(v).value_or(stampede::client_auth_method{
                    static_cast<std::underlying_type_t<stampede::client_auth_method>>(v.size())});
        };
        t["scope"] = [](fuzzed_input& in, const std::string& v) { in.settings.scope = v; };
        t["audience"] = [](fuzzed_input& in, const std::string& v) { in.settings.audience = v; };
        t["resource"] = [](fuzzed_input& in, const std::string& v) { in.settings.resource = v; };
        t["extra_parameter"] = [](fuzzed_input& in, const std::string& v) {
            const auto equals = v.find('=');
            in.settings.extra_parameters.emplace_back(v.substr(0, equals),
                                                      equals == std::string::npos ? std::string()
                                                                                  : v.substr(equals + 1));
        };
        t["transport.allow_insecure_http"] = [](fuzzed_input& in, const std::string& v) {
            in.settings.transport.allow_insecure_http = v == "true";
        };
        t["transport.user_agent"] = [](fuzzed_input& in, const std::string& v) {
            in.settings.transport.user_agent = v;
        };
        const std::pair<std::string_view, milliseconds transport_settings::*> transport[] = {
            {"transport.resolve_timeout", &transport_settings::resolve_timeout},
            {"transport.connect_timeout", &transport_settings::connect_timeout},
            {"transport.handshake_timeout", &transport_settings::handshake_timeout},
            {"transport.write_timeout", &transport_settings::write_timeout},
            {"transport.read_timeout", &transport_settings::read_timeout},
            {"transport.request_timeout", &transport_settings::request_timeout},
            {"transport.idle_timeout", &transport_settings::idle_timeout},
        };
        for (const auto& [key, member] : transport) {
            t[key] = [field = member, ms](fuzzed_input& in, const std::string& v) {
                in.settings.transport.*field = ms(v);
            };
        }
        t["transport.max_header_bytes"] = [size](fuzzed_input& in, const std::string& v) {
            in.settings.transport.max_header_bytes = size(v);
        };
        t["transport.max_body_bytes"] = [size](fuzzed_input& in, const std::string& v) {
            in.settings.transport.max_body_bytes = size(v);
        };
        const std::pair<std::string_view, milliseconds token_source_settings::*> top[] = {
            {"refresh_ahead", &token_source_settings::refresh_ahead},
            {"expiry_margin", &token_source_settings::expiry_margin},
            {"default_lifetime", &token_source_settings::default_lifetime},
            {"max_lifetime", &token_source_settings::max_lifetime},
            {"permanent_error_cooldown", &token_source_settings::permanent_error_cooldown},
        };
        for (const auto& [key, member] : top) {
            t[key] = [field = member, ms](fuzzed_input& in, const std::string& v) {
                in.settings.*field = ms(v);
            };
        }
        t["rate_limit.capacity"] = [size](fuzzed_input& in, const std::string& v) {
            in.settings.rate_limit.capacity = size(v);
        };
        t["rate_limit.refill_interval"] = [ms](fuzzed_input& in, const std::string& v) {
            in.settings.rate_limit.refill_interval = ms(v);
        };
        const std::pair<std::string_view, milliseconds backoff_settings::*> backoff[] = {
            {"backoff.initial_delay", &backoff_settings::initial_delay},
            {"backoff.max_delay", &backoff_settings::max_delay},
            {"backoff.min_delay", &backoff_settings::min_delay},
            {"backoff.max_retry_after", &backoff_settings::max_retry_after},
            {"backoff.max_elapsed", &backoff_settings::max_elapsed},
        };
        for (const auto& [key, member] : backoff) {
            t[key] = [field = member, ms](fuzzed_input& in, const std::string& v) {
                in.settings.backoff.*field = ms(v);
            };
        }
        t["backoff.multiplier"] = [](fuzzed_input& in, const std::string& v) {
            double value = 0;
            std::from_chars(v.data(), v.data() + v.size(), value);
            in.settings.backoff.multiplier = value;
        };
        t["backoff.max_attempts"] = [](fuzzed_input& in, const std::string& v) {
            in.settings.backoff.max_attempts = static_cast<unsigned>(fuzz::parse_integer(v, 0));
        };
        t["retryable_oauth_errors"] = [](fuzzed_input& in, const std::string& v) {
            in.settings.retryable_oauth_errors.clear();
            std::string_view rest = v;
            while (!rest.empty()) {
                const auto comma = rest.find(',');
                in.settings.retryable_oauth_errors.emplace_back(rest.substr(0, comma));
                rest.remove_prefix(comma == std::string_view::npos ? rest.size() : comma + 1);
            }
        };
        t["expires_in"] = [ms](fuzzed_input& in, const std::string& v) { in.expires_in = ms(v); };
        return t;
    }();
    return table;
}

fuzzed_input read_input(const field_map& fields)
{
    fuzzed_input in;
    in.settings.client_id = "fuzz-client";
    in.settings.client_secret = secret_string("fuzz-client-secret-Q7");
    in.settings.token_url = "https://127.0.0.1:8443/oauth/token";
    for (const auto& [key, value] : fields) {
        if (const auto it = setters().find(key); it != setters().end()) {
            it->second(in, value);
        }
    }
    return in;
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

// The text that the settings show: the validation message and the printed settings.
std::string shown_text(const token_source_settings& settings, const boost::system::error_code& ec,
                       const diagnostics& diag)
{
    std::ostringstream out;
    out << ec.message() << '\n' << diag.client_message() << '\n' << settings;
    return out.str();
}

// Checks that the shown text contains the secret no more often than with another secret of
// the same length, so that words of the messages that equal the secret do not count.
void check_secret_hidden(const token_source_settings& settings, const std::string& shown)
{
    const std::string_view secret = settings.client_secret.reveal();
    if (secret.size() < 4) {
        return;
    }
    token_source_settings other = settings;
    other.client_secret = secret_string(std::string(secret.size(), '\x01'));
    diagnostics other_diag;
    const auto other_ec = validate(other, other_diag);
    if (count(shown, secret) > count(shown_text(other, other_ec, other_diag), secret)) {
        fuzz::fail("the secret appears in the message or the printed settings", shown);
    }
}

void check_schedule(const fuzzed_input& in)
{
    using clock = std::chrono::steady_clock;
    const clock::time_point sent_at = clock::now();
    const detail::token_schedule schedule =
        detail::plan_token_schedule(sent_at, in.expires_in, in.settings);
    fuzz::check(schedule.lifetime.count() >= 1, "the planned lifetime is below 1 ms");
    fuzz::check(schedule.lifetime <= in.settings.max_lifetime,
                "the planned lifetime exceeds max_lifetime");
    fuzz::check(schedule.expires_at > sent_at, "the token expires before it was sent");
    fuzz::check(sent_at <= schedule.refresh_at && schedule.refresh_at <= schedule.stale_at &&
                    schedule.stale_at <= schedule.expires_at,
                "the schedule is out of order");
}

// Builds the token request that valid settings produce: it must be a POST whose header
// values contain no line breaks, whatever the parameters hold.
void check_request(const fuzzed_input& in)
{
    detail::endpoint_url url;
    diagnostics diag;
    if (detail::parse_endpoint_url(in.settings.token_url, "token_url", in.settings.transport, url,
                                   diag)) {
        fuzz::fail("validate() accepted a token_url that parse_endpoint_url rejects");
    }
    const auto request = detail::make_token_request(url, in.settings);
    fuzz::check(request.method() == boost::beast::http::verb::post, "the request is not a POST");
    for (const auto& field : request) {
        fuzz::check(field.value().find_first_of("\r\n") == std::string_view::npos,
                    "a request header contains a line break");
    }
}

// Builds a source whose scripted fetcher returns `result`, makes one call, and runs the
// source until the call completes. Nothing waits, because the first request passes the
// rate limiter and the fetcher completes at once.
void run_one_call(const fuzzed_input& in, test::fake_answer result)
{
    boost::asio::io_context io;
    auto endpoint = std::make_shared<test::fake_endpoint>();
    endpoint->fallback = result;
    try {
        token_source source(io.get_executor(), in.settings,
                            std::make_unique<test::fake_fetcher>(endpoint));
        fuzz::check(source.settings().client_id == in.settings.client_id,
                    "the source changed the settings");
        bool done = false;
        source.async_token([&](boost::system::error_code, access_token) { done = true; });
        while (!done && io.run_one() != 0) {
        }
        fuzz::check(done, "the call did not complete");
        source.shutdown();
        io.poll();
    } catch (const std::exception& e) {
        fuzz::fail("validate() accepted settings that the token_source constructor rejects",
                   e.what());
    }
}

// Runs a fetch that gives a token with the input's expires_in, which plans its refresh,
// and one that fails with a permanent error, which is remembered for
// permanent_error_cooldown.
void check_source_runs(const fuzzed_input& in)
{
    test::fake_answer token;
    token.expires_in = in.expires_in.value_or(std::chrono::hours(1));
    run_one_call(in, token);

    test::fake_answer rejected;
    rejected.ec = make_error_code(oauth_errc::invalid_client);
    run_one_call(in, rejected);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const fuzzed_input in = read_input(fuzz::parse_key_values(fuzz::as_text(data, size)));

    diagnostics diag;
    const auto ec = validate(in.settings, diag);
    const std::string shown = shown_text(in.settings, ec, diag);
    check_secret_hidden(in.settings, shown);
    fuzz::check_single_line(diag.client_message(), "the validation message");
    if (ec) {
        fuzz::check(ec == client_errc::invalid_settings || ec == client_errc::insecure_url,
                    "validation failed with an unexpected code", ec.message());
        fuzz::check(!diag.client_message().empty(), "a rejection has no message");
        return 0;
    }

    check_schedule(in);
    check_request(in);
    check_source_runs(in);
    return 0;
}
