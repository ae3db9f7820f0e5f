#include <stampede/detail/token_schedule.hpp>

#include <algorithm>

namespace stampede::detail {

token_schedule plan_token_schedule(std::chrono::steady_clock::time_point sent_at,
                                   std::optional<std::chrono::milliseconds> expires_in,
                                   const token_source_settings& settings) noexcept
{
    using std::chrono::milliseconds;

    milliseconds lifetime = expires_in.value_or(settings.default_lifetime);
    lifetime = std::clamp(lifetime, milliseconds{1}, settings.max_lifetime);

    const milliseconds margin = std::min(settings.expiry_margin, lifetime / 10);
    const milliseconds usable = lifetime - margin;
    const milliseconds ahead = std::min(settings.refresh_ahead, usable / 2);

    token_schedule schedule;
    schedule.lifetime = lifetime;
    schedule.expires_at = sent_at + lifetime;
    schedule.stale_at = sent_at + usable;
    schedule.refresh_at = schedule.stale_at - ahead;
    return schedule;
}

} // namespace stampede::detail
