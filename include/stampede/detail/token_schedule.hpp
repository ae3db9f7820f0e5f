#ifndef STAMPEDE_DETAIL_TOKEN_SCHEDULE_HPP
#define STAMPEDE_DETAIL_TOKEN_SCHEDULE_HPP

#include <stampede/settings.hpp>

#include <chrono>
#include <optional>

namespace stampede::detail {

/// When a fetched token is refreshed, stops being handed out, and expires.
struct token_schedule {
    using time_point = std::chrono::steady_clock::time_point;

    /// Start a background refresh; callers still get the token.
    time_point refresh_at;

    /// Stop handing the token out; callers wait for a new one.
    time_point stale_at;

    /// The server's expiry: `sent_at` plus the lifetime.
    time_point expires_at;

    /// The lifetime used, after defaults and caps.
    std::chrono::milliseconds lifetime;
};

/// Plans a token's life from the moment its request was sent.
///
/// The lifetime is `expires_in`, or `settings.default_lifetime` when the server sent none,
/// cut to `settings.max_lifetime`. The token goes stale `expiry_margin` before it expires,
/// but the margin is at most a tenth of the lifetime. The refresh starts `refresh_ahead`
/// before it goes stale, but never earlier than halfway through its usable life, so even
/// a margin longer than the lifetime cannot cause a refetch loop.
token_schedule plan_token_schedule(std::chrono::steady_clock::time_point sent_at,
                                   std::optional<std::chrono::milliseconds> expires_in,
                                   const token_source_settings& settings) noexcept;

} // namespace stampede::detail

#endif
