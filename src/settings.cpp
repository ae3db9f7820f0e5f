#include <stampede/settings.hpp>

#include <stampede/backoff.hpp>
#include <stampede/detail/request_parameters.hpp>
#include <stampede/detail/url.hpp>
#include <stampede/error.hpp>
#include <stampede/rate_limiter.hpp>
#include <stampede/token_source_stats.hpp>

#include <algorithm>
#include <ostream>
#include <string>

using boost::system::error_code;

namespace stampede {
namespace {

error_code reject(diagnostics& diag, std::string message)
{
    diag.set_client_message(std::move(message));
    return client_errc::invalid_settings;
}

std::string ms(std::chrono::milliseconds d)
{
    return std::to_string(d.count()) + " ms";
}

bool has_control_character(std::string_view text)
{
    return std::any_of(text.begin(), text.end(), [](char c) {
        const auto byte = static_cast<unsigned char>(c);
        return byte < 0x20 || byte == 0x7f;
    });
}

std::string check_not_too_long(std::string_view field, std::chrono::milliseconds value)
{
    if (value <= max_setting_duration) {
        return {};
    }
    return std::string(field) + " is " + ms(value) + "; it must be at most ten years (" +
           ms(max_setting_duration) + ")";
}

// Returns a message when a duration that must be positive is not, or is so long that
// adding it to a clock reading could overflow.
std::string check_positive(std::string_view field, std::chrono::milliseconds value)
{
    if (value.count() <= 0) {
        return std::string(field) + " is " + ms(value) + "; it must be positive";
    }
    return check_not_too_long(field, value);
}

error_code validate_fleet(const token_source_settings& s, diagnostics& diag)
{
    const fleet_settings& fleet = s.fleet;
    if (!fleet.store) {
        if (fleet.limiter) {
            return reject(diag, "fleet.limiter is set but fleet.store is empty; the fleet "
                                "limiter works only in fleet mode, so set fleet.store too");
        }
        return {};
    }
    const std::pair<std::string_view, std::chrono::milliseconds> durations[] = {
        {"fleet.lease_ttl", fleet.lease_ttl},
        {"fleet.max_wait", fleet.max_wait},
    };
    for (const auto& [field, value] : durations) {
        if (std::string message = check_positive(field, value); !message.empty()) {
            return reject(diag, message);
        }
    }
    const auto needed = s.transport.request_timeout + s.rate_limit.refill_interval;
    if (fleet.lease_ttl <= needed) {
        return reject(diag, "fleet.lease_ttl is " + ms(fleet.lease_ttl) +
                                ", not longer than one request and one rate-limit wait "
                                "(transport.request_timeout + rate_limit.refill_interval = " +
                                ms(needed) + "), so a lease could expire during a fetch "
                                "and let a second process fetch; raise fleet.lease_ttl");
    }
    return {};
}

} // namespace

std::string validate(const transport_settings& t)
{
    const std::pair<std::string_view, std::chrono::milliseconds> timeouts[] = {
        {"transport.resolve_timeout", t.resolve_timeout},
        {"transport.connect_timeout", t.connect_timeout},
        {"transport.handshake_timeout", t.handshake_timeout},
        {"transport.write_timeout", t.write_timeout},
        {"transport.read_timeout", t.read_timeout},
        {"transport.request_timeout", t.request_timeout},
        {"transport.idle_timeout", t.idle_timeout},
    };
    for (const auto& [field, value] : timeouts) {
        if (std::string message = check_positive(field, value); !message.empty()) {
            return message;
        }
    }
    const std::pair<std::string_view, std::size_t> sizes[] = {
        {"transport.max_header_bytes", t.max_header_bytes},
        {"transport.max_body_bytes", t.max_body_bytes},
    };
    for (const auto& [field, value] : sizes) {
        if (value < 1024) {
            return std::string(field) + " is " + std::to_string(value) +
                   "; it must be at least 1024 bytes";
        }
    }
    if (has_control_character(t.user_agent)) {
        return "transport.user_agent contains a control character such as a line break, "
               "which would end the header; use printable characters only";
    }
    return {};
}

error_code validate(const token_source_settings& s, diagnostics& diag)
{
    diag.clear();
    if (s.client_id.empty()) {
        return reject(diag, "client_id is empty; set it to the API key's client id");
    }
    if (has_control_character(s.client_id)) {
        return reject(diag, "client_id contains a control character such as a line break; "
                            "check that it was copied without surrounding white space");
    }
    if (s.client_secret.empty()) {
        return reject(diag, "client_secret is empty; set it to the API key's secret");
    }

    detail::endpoint_url url;
    if (error_code ec = detail::parse_endpoint_url(s.token_url, "token_url", s.transport, url, diag)) {
        return ec;
    }
    if (std::string message = validate(s.transport); !message.empty()) {
        return reject(diag, message);
    }
    if (error_code ec = detail::validate_request_parameters(s, diag)) {
        return ec;
    }

    const std::pair<std::string_view, std::chrono::milliseconds> durations[] = {
        {"refresh_ahead", s.refresh_ahead},
        {"default_lifetime", s.default_lifetime},
        {"max_lifetime", s.max_lifetime},
        {"rate_limit.refill_interval", s.rate_limit.refill_interval},
    };
    for (const auto& [field, value] : durations) {
        if (std::string message = check_positive(field, value); !message.empty()) {
            return reject(diag, message);
        }
    }
    if (s.expiry_margin.count() < 0) {
        return reject(diag, "expiry_margin is " + ms(s.expiry_margin) + "; it must not be negative");
    }
    if (std::string message = check_not_too_long("expiry_margin", s.expiry_margin);
        !message.empty()) {
        return reject(diag, message);
    }
    if (s.permanent_error_cooldown.count() < 0) {
        return reject(diag, "permanent_error_cooldown is " + ms(s.permanent_error_cooldown) +
                                "; it must not be negative (0 turns remembering off)");
    }
    if (std::string message =
            check_not_too_long("permanent_error_cooldown", s.permanent_error_cooldown);
        !message.empty()) {
        return reject(diag, message);
    }
    if (s.rate_limit.capacity == 0) {
        return reject(diag, "rate_limit.capacity is 0, so no request could ever be sent; "
                            "set it to 1 or more");
    }
    if (std::string message = validate(s.rate_limit); !message.empty()) {
        return reject(diag, "rate_limit: " + message);
    }
    if (std::string message = validate(s.backoff); !message.empty()) {
        return reject(diag, "backoff: " + message);
    }

    if (error_code ec = validate_fleet(s, diag)) {
        return ec;
    }

    // A refresh must have time for a failed attempt and a retry before the token goes
    // stale, or refreshing ahead cannot hide a single slow failure from callers.
    const auto needed = 2 * s.transport.request_timeout + s.backoff.initial_delay;
    if (s.refresh_ahead < needed) {
        return reject(diag, "refresh_ahead is " + ms(s.refresh_ahead) +
                                ", shorter than one failed attempt and one retry (2 x "
                                "transport.request_timeout + backoff.initial_delay = " +
                                ms(needed) + "); raise refresh_ahead or lower those");
    }
    return {};
}

namespace {

// Returns `url` with any user information (`user:password@`) replaced, because validation
// rejects such URLs only after they may have been printed.
std::string without_user_info(const std::string& url)
{
    const auto scheme_end = url.find("://");
    if (scheme_end == std::string::npos) {
        return url;
    }
    const auto authority = scheme_end + 3;
    const auto authority_end = url.find_first_of("/?#", authority);
    const auto at = url.rfind('@', authority_end == std::string::npos ? url.size() : authority_end);
    if (at == std::string::npos || at < authority) {
        return url;
    }
    return url.substr(0, authority) + "[redacted]@" + url.substr(at + 1);
}

} // namespace

std::ostream& operator<<(std::ostream& os, const token_source_settings& s)
{
    os << "token_source_settings{client_id=" << s.client_id << ", client_secret=" << s.client_secret
       << ", token_url=" << without_user_info(s.token_url);
    detail::print_request_parameters(os, s);
    os << ", refresh_ahead=" << s.refresh_ahead.count()
       << "ms, expiry_margin=" << s.expiry_margin.count()
       << "ms, rate_limit=" << s.rate_limit.capacity << " per " << s.rate_limit.refill_interval.count()
       << "ms, backoff.max_attempts=" << s.backoff.max_attempts
       << ", permanent_error_cooldown=" << s.permanent_error_cooldown.count() << "ms";
    if (s.fleet.store) {
        os << ", fleet.lease_ttl=" << s.fleet.lease_ttl.count()
           << "ms, fleet.max_wait=" << s.fleet.max_wait.count()
           << "ms, fleet.limiter=" << (s.fleet.limiter ? "set" : "none");
    }
    os << "}";
    return os;
}

std::ostream& operator<<(std::ostream& os, const token_source_stats& s)
{
    os << "token_source_stats{cache_hits=" << s.cache_hits << ", requests=" << s.requests
       << ", tokens_fetched=" << s.tokens_fetched << ", waiters=" << s.waiters
       << ", coalesced_waiters=" << s.coalesced_waiters << ", refreshes_ahead=" << s.refreshes_ahead
       << ", retries=" << s.retries << ", retryable_failures=" << s.retryable_failures
       << ", permanent_failures=" << s.permanent_failures
       << ", cooldown_rejections=" << s.cooldown_rejections
       << ", cancelled_waiters=" << s.cancelled_waiters << ", invalidations=" << s.invalidations
       << ", rate_limited_waits=" << s.rate_limited_waits
       << ", connections_opened=" << s.connections_opened << ", shared_hits=" << s.shared_hits
       << ", lease_waits=" << s.lease_waits << ", leases_taken=" << s.leases_taken
       << ", fleet_limited_waits=" << s.fleet_limited_waits << ", stale_leases=" << s.stale_leases
       << ", store_errors=" << s.store_errors
       << "}";
    return os;
}

} // namespace stampede
