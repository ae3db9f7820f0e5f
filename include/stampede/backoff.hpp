#ifndef STAMPEDE_BACKOFF_HPP
#define STAMPEDE_BACKOFF_HPP

#include <stampede/settings.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace stampede {

/// Checks `settings` and returns an empty string when they are valid, or else a message
/// that names the first invalid field and how to fix it.
std::string validate(const backoff_settings& settings);

/// The delays between the attempts of one fetch: exponential backoff with full jitter,
/// combined with the server's `Retry-After`.
///
/// The policy performs no I/O and reads no clock: the caller passes the number of failed
/// attempts and the time since the first one. Randomness comes from an injected source,
/// so tests can fix it. The object is not thread-safe, because the default random source
/// has state. Use one per retry loop, or guard it.
class backoff_policy {
public:
    /// A source of uniformly distributed 64-bit values.
    using random_source = std::function<std::uint64_t()>;

    /// Builds a policy whose jitter comes from `settings.random`, or when that is empty
    /// from a `std::mt19937_64` seeded from `std::random_device` (never from the clock).
    ///
    /// Throws `boost::system::system_error` with `client_errc::invalid_settings` when
    /// `validate(settings)` reports a problem.
    explicit backoff_policy(const backoff_settings& settings);

    /// Builds a policy that draws its jitter from `random`.
    ///
    /// Throws `boost::system::system_error` with `client_errc::invalid_settings` when
    /// `validate(settings)` reports a problem, and `std::invalid_argument` when `random`
    /// is empty.
    backoff_policy(const backoff_settings& settings, random_source random);

    /// Returns the delay before the next attempt, or `std::nullopt` when the caller must
    /// stop retrying.
    ///
    /// `failed_attempts` counts the attempts made so far, all failed (1 after the first
    /// failure; 0 is treated as 1). `elapsed_since_first_attempt` is the time from the
    /// start of the first attempt until now. `retry_after` is the server's `Retry-After`
    /// delay, if it sent one.
    ///
    /// The delay is drawn uniformly from `[min_delay, ceiling]`, where ceiling is
    /// `min(max_delay, initial_delay * multiplier^(failed_attempts - 1))` (at least
    /// `min_delay`). When `retry_after` is present, the result is the larger of that draw
    /// and `min(retry_after, max_retry_after)`.
    ///
    /// Returns `std::nullopt` when `failed_attempts >= max_attempts` or when the next
    /// attempt would start after `max_elapsed`; the token source then fails its waiters
    /// with the last attempt's error and says in the diagnostics that it gave up. In the
    /// second case a jittered delay is first shortened to the time left, as long as it
    /// stays at least `min_delay` and at least the capped `retry_after`.
    std::optional<std::chrono::milliseconds>
    next_delay(unsigned failed_attempts, std::chrono::milliseconds elapsed_since_first_attempt,
               std::optional<std::chrono::milliseconds> retry_after);

    /// Returns whether `failed_attempts` uses up `max_attempts`, so that `next_delay`
    /// returns `std::nullopt` whatever the elapsed time.
    bool attempts_exhausted(unsigned failed_attempts) const noexcept;

    const backoff_settings& settings() const noexcept { return settings_; }

private:
    std::chrono::milliseconds ceiling(unsigned failed_attempts) const noexcept;
    std::chrono::milliseconds draw(std::chrono::milliseconds low, std::chrono::milliseconds high);

    backoff_settings settings_;
    random_source random_;
};

} // namespace stampede

#endif
