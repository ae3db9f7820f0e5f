#include <stampede/backoff.hpp>
#include <stampede/error.hpp>

#include <boost/system/system_error.hpp>

#include <algorithm>
#include <string>
#include <utility>
#include <cmath>
#include <memory>
#include <random>
#include <stdexcept>

namespace stampede {
namespace {

using std::chrono::milliseconds;

std::string describe(milliseconds value) {
    return std::to_string(value.count()) + " ms";
}

backoff_policy::random_source make_default_random_source() {
    std::random_device device;
    std::seed_seq seed{device(), device(), device(), device(), device(), device()};
    auto engine = std::make_shared<std::mt19937_64>(seed);
    return [engine] { return (*engine)(); };
}

// Returns the high 64 bits of the 128-bit product a * b.
std::uint64_t multiply_high(std::uint64_t a, std::uint64_t b) noexcept {
    const std::uint64_t a_low = a & 0xffffffffu;
    const std::uint64_t a_high = a >> 32;
    const std::uint64_t b_low = b & 0xffffffffu;
    const std::uint64_t b_high = b >> 32;

    const std::uint64_t low_low = a_low * b_low;
    const std::uint64_t high_low = a_high * b_low;
    const std::uint64_t low_high = a_low * b_high;
    const std::uint64_t high_high = a_high * b_high;

    const std::uint64_t middle = (low_low >> 32) + (high_low & 0xffffffffu) + low_high;
    return high_high + (high_low >> 32) + (middle >> 32);
}

void throw_if_invalid(const backoff_settings& settings) {
    std::string problem = validate(settings);
    if (!problem.empty()) {
        throw boost::system::system_error(make_error_code(client_errc::invalid_settings), problem);
    }
}

} // namespace

std::string validate(const backoff_settings& s) {
    const milliseconds zero{0};

    if (s.initial_delay < zero) {
        return "invalid backoff_settings::initial_delay " + describe(s.initial_delay) +
               ": must not be negative";
    }
    if (!std::isfinite(s.multiplier) || s.multiplier < 1.0) {
        return "invalid backoff_settings::multiplier " + std::to_string(s.multiplier) +
               ": must be a finite number of at least 1 (1 keeps every delay ceiling at "
               "initial_delay)";
    }
    if (s.min_delay < zero) {
        return "invalid backoff_settings::min_delay " + describe(s.min_delay) +
               ": must not be negative";
    }
    if (s.min_delay > s.max_delay) {
        return "invalid backoff_settings: min_delay (" + describe(s.min_delay) +
               ") exceeds max_delay (" + describe(s.max_delay) +
               "). Raise max_delay or lower min_delay.";
    }
    if (s.max_retry_after < zero) {
        return "invalid backoff_settings::max_retry_after " + describe(s.max_retry_after) +
               ": must not be negative";
    }
    if (s.max_attempts == 0) {
        return "invalid backoff_settings::max_attempts 0: must be at least 1 (1 disables "
               "retries)";
    }
    if (s.max_elapsed <= zero) {
        return "invalid backoff_settings::max_elapsed " + describe(s.max_elapsed) +
               ": must be positive (set max_attempts to 1 to disable retries)";
    }

    const std::pair<const char*, milliseconds> durations[] = {
        {"initial_delay", s.initial_delay}, {"max_delay", s.max_delay},
        {"min_delay", s.min_delay},         {"max_retry_after", s.max_retry_after},
        {"max_elapsed", s.max_elapsed},
    };
    for (const auto& [field, value] : durations) {
        if (value > max_setting_duration) {
            return std::string("invalid backoff_settings::") + field + " " + describe(value) +
                   ": must be at most ten years";
        }
    }
    return {};
}

backoff_policy::backoff_policy(const backoff_settings& settings)
    : backoff_policy(settings, settings.random ? settings.random : make_default_random_source()) {}

backoff_policy::backoff_policy(const backoff_settings& settings, random_source random)
    : settings_(settings)
    , random_(std::move(random)) {
    throw_if_invalid(settings_);
    if (!random_) {
        throw std::invalid_argument("backoff_policy: the random source is empty");
    }
}

bool backoff_policy::attempts_exhausted(unsigned failed_attempts) const noexcept {
    return std::max(failed_attempts, 1u) >= settings_.max_attempts;
}

milliseconds backoff_policy::ceiling(unsigned failed_attempts) const noexcept {
    // Computed in double, so a large attempt count reaches infinity instead of
    // overflowing, and std::min then picks max_delay.
    // An initial delay of 0 stays 0: 0 times an infinite power would be NaN.
    if (settings_.initial_delay.count() == 0) {
        return settings_.min_delay;
    }
    const double grown = static_cast<double>(settings_.initial_delay.count()) *
                         std::pow(settings_.multiplier, static_cast<double>(failed_attempts - 1));
    const double capped = std::min(grown, static_cast<double>(settings_.max_delay.count()));
    const milliseconds result{static_cast<milliseconds::rep>(capped)};
    return std::max(result, settings_.min_delay);
}

milliseconds backoff_policy::draw(milliseconds low, milliseconds high) {
    if (high <= low) {
        return low;
    }

    // Scales the 64-bit value to [0, span) by taking the high half of value * span,
    // which maps 0 to low and the maximum value to high.
    const auto span = static_cast<std::uint64_t>(high.count() - low.count()) + 1;
    const std::uint64_t offset = multiply_high(random_(), span);
    return low + milliseconds(static_cast<milliseconds::rep>(offset));
}

std::optional<milliseconds> backoff_policy::next_delay(unsigned failed_attempts,
                                                       milliseconds elapsed_since_first_attempt,
                                                       std::optional<milliseconds> retry_after) {
    const unsigned failures = std::max(failed_attempts, 1u);
    if (failures >= settings_.max_attempts) {
        return std::nullopt;
    }

    const milliseconds elapsed = std::max(elapsed_since_first_attempt, milliseconds(0));
    if (elapsed >= settings_.max_elapsed) {
        return std::nullopt;
    }
    const milliseconds remaining = settings_.max_elapsed - elapsed;

    // The shortest delay allowed: min_delay, or the server's request cut to
    // max_retry_after. If that no longer fits before max_elapsed, stop.
    milliseconds required = settings_.min_delay;
    if (retry_after) {
        const milliseconds server =
            std::clamp(*retry_after, milliseconds(0), settings_.max_retry_after);
        required = std::max(required, server);
    }
    if (required > remaining) {
        return std::nullopt;
    }

    const milliseconds jittered = draw(settings_.min_delay, ceiling(failures));
    return std::min(std::max(jittered, required), remaining);
}

} // namespace stampede
