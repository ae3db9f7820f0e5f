#define BOOST_TEST_MODULE backoff
#include <boost/test/unit_test.hpp>

#include <stampede/backoff.hpp>
#include <stampede/error.hpp>
#include <stampede/retry.hpp>

#include <boost/system/system_error.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>

using namespace std::chrono_literals;
using stampede::backoff_policy;
using stampede::backoff_settings;
using std::chrono::milliseconds;

namespace {

constexpr std::uint64_t lowest = 0;
constexpr std::uint64_t highest = std::numeric_limits<std::uint64_t>::max();

// Returns the delay in milliseconds, or `none` for std::nullopt, so that failures print.
constexpr long long none = -1;

long long millis(std::optional<milliseconds> delay) {
    return delay ? static_cast<long long>(delay->count()) : none;
}

backoff_policy::random_source fixed(std::uint64_t value) {
    return [value] { return value; };
}

// The defaults with room for many attempts, so that only the delay arithmetic matters.
backoff_settings unlimited() {
    backoff_settings s;
    s.max_attempts = std::numeric_limits<unsigned>::max();
    s.max_elapsed = std::chrono::hours(24 * 365);
    return s;
}

long long delay_at(backoff_policy& policy, unsigned failed_attempts,
                   std::optional<milliseconds> retry_after = std::nullopt) {
    return millis(policy.next_delay(failed_attempts, 0ms, retry_after));
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

} // namespace

// Validation
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(defaults_are_valid) {
    BOOST_TEST(stampede::validate(backoff_settings{}).empty());
}

BOOST_AUTO_TEST_CASE(validate_names_field) {
    struct invalid_case {
        std::string field;
        void (*change)(backoff_settings&);
    };
    const invalid_case cases[] = {
        {"initial_delay", [](backoff_settings& s) { s.initial_delay = -1ms; }},
        {"multiplier", [](backoff_settings& s) { s.multiplier = 0.5; }},
        {"multiplier", [](backoff_settings& s) { s.multiplier = std::nan(""); }},
        {"multiplier",
         [](backoff_settings& s) { s.multiplier = std::numeric_limits<double>::infinity(); }},
        {"min_delay", [](backoff_settings& s) { s.min_delay = -1ms; }},
        {"max_delay", [](backoff_settings& s) { s.min_delay = 5s, s.max_delay = 1s; }},
        {"max_retry_after", [](backoff_settings& s) { s.max_retry_after = -1ms; }},
        {"max_attempts", [](backoff_settings& s) { s.max_attempts = 0; }},
        {"max_elapsed", [](backoff_settings& s) { s.max_elapsed = 0ms; }},
        {"max_elapsed", [](backoff_settings& s) { s.max_elapsed = -5ms; }},
    };
    for (const auto& c : cases) {
        backoff_settings s;
        c.change(s);
        const std::string message = stampede::validate(s);
        BOOST_TEST_CONTEXT(c.field << ": " << message) {
            BOOST_TEST(contains(message, "backoff_settings"));
            BOOST_TEST(contains(message, c.field));
        }
    }
}

BOOST_AUTO_TEST_CASE(edge_values_are_valid) {
    backoff_settings s;
    s.multiplier = 1.0;
    s.initial_delay = 0ms;
    s.min_delay = 0ms;
    s.max_delay = 0ms;
    s.max_retry_after = 0ms;
    s.max_attempts = 1;
    s.max_elapsed = 1ms;
    BOOST_TEST(stampede::validate(s).empty());
}

BOOST_AUTO_TEST_CASE(constructor_rejects_invalid_settings) {
    backoff_settings s;
    s.multiplier = 0.5;
    try {
        backoff_policy policy(s, fixed(0));
        BOOST_FAIL("no exception");
    } catch (const boost::system::system_error& e) {
        BOOST_TEST((e.code() == stampede::client_errc::invalid_settings));
        BOOST_TEST(contains(e.what(), "multiplier"));
    }
}

BOOST_AUTO_TEST_CASE(constructor_rejects_empty_random_source) {
    BOOST_CHECK_THROW(backoff_policy(backoff_settings{}, backoff_policy::random_source{}),
                      std::invalid_argument);
}

// Growth and jitter
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(ceiling_grows_then_caps) {
    // Defaults: initial 500 ms, multiplier 2, max 30 s. The highest random value gives
    // the ceiling itself.
    backoff_policy policy(unlimited(), fixed(highest));
    BOOST_TEST(delay_at(policy, 1) == 500);
    BOOST_TEST(delay_at(policy, 2) == 1000);
    BOOST_TEST(delay_at(policy, 3) == 2000);
    BOOST_TEST(delay_at(policy, 4) == 4000);
    BOOST_TEST(delay_at(policy, 5) == 8000);
    BOOST_TEST(delay_at(policy, 6) == 16000);
    BOOST_TEST(delay_at(policy, 7) == 30000);
    BOOST_TEST(delay_at(policy, 8) == 30000);
    BOOST_TEST(delay_at(policy, 1000) == 30000);
    BOOST_TEST(delay_at(policy, std::numeric_limits<unsigned>::max() - 1) == 30000);
}

BOOST_AUTO_TEST_CASE(lowest_draw_is_min_delay) {
    backoff_policy policy(unlimited(), fixed(lowest));
    for (unsigned attempt = 1; attempt < 20; ++attempt) {
        BOOST_TEST_CONTEXT("attempt " << attempt) {
            BOOST_TEST(delay_at(policy, attempt) == 100);
        }
    }
}

BOOST_AUTO_TEST_CASE(middle_draw) {
    // Half of the 64-bit range lands half-way through [100, 2000].
    backoff_policy policy(unlimited(), fixed(std::uint64_t(1) << 63));
    BOOST_TEST(delay_at(policy, 3) == 100 + 1901 / 2);
}

BOOST_AUTO_TEST_CASE(zero_attempts_count_as_one) {
    backoff_policy policy(unlimited(), fixed(highest));
    BOOST_TEST(delay_at(policy, 0) == 500);
}

BOOST_AUTO_TEST_CASE(multiplier_one_keeps_ceiling) {
    backoff_settings s = unlimited();
    s.multiplier = 1.0;
    backoff_policy policy(s, fixed(highest));
    BOOST_TEST(delay_at(policy, 1) == 500);
    BOOST_TEST(delay_at(policy, 10) == 500);
}

BOOST_AUTO_TEST_CASE(jitter_stays_in_bounds) {
    std::mt19937_64 engine(12345);
    backoff_policy policy(unlimited(), [&engine] { return engine(); });

    for (unsigned attempt = 1; attempt <= 10; ++attempt) {
        const long long ceiling = std::min(500LL << (attempt - 1), 30000LL);
        long long smallest = ceiling;
        long long largest = 0;
        for (int i = 0; i < 5000; ++i) {
            const long long delay = delay_at(policy, attempt);
            smallest = std::min(smallest, delay);
            largest = std::max(largest, delay);
        }
        BOOST_TEST_CONTEXT("attempt " << attempt << ", ceiling " << ceiling) {
            BOOST_TEST(smallest >= 100);
            BOOST_TEST(largest <= ceiling);

            // Full jitter spreads over the whole range: both ends are nearly reached.
            BOOST_TEST(smallest < 100 + (ceiling - 100) / 20);
            BOOST_TEST(largest > ceiling - (ceiling - 100) / 20);
        }
    }
}

BOOST_AUTO_TEST_CASE(default_random_source_in_bounds) {
    backoff_policy policy(unlimited());
    bool varied = false;
    const long long first = delay_at(policy, 5);
    for (int i = 0; i < 200; ++i) {
        const long long delay = delay_at(policy, 5);
        BOOST_TEST(delay >= 100);
        BOOST_TEST(delay <= 8000);
        varied = varied || delay != first;
    }
    BOOST_TEST(varied);
}

BOOST_AUTO_TEST_CASE(min_delay_floor) {
    // An initial delay below min_delay still waits min_delay.
    backoff_settings s = unlimited();
    s.initial_delay = 10ms;
    s.min_delay = 250ms;
    backoff_policy low(s, fixed(lowest));
    backoff_policy high(s, fixed(highest));
    BOOST_TEST(delay_at(low, 1) == 250);
    BOOST_TEST(delay_at(high, 1) == 250);
    BOOST_TEST(delay_at(high, 5) == 250);
    BOOST_TEST(delay_at(high, 6) == 320);
}

// Retry-After
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(retry_after_longer_than_jitter_wins) {
    backoff_policy policy(unlimited(), fixed(highest));
    BOOST_TEST(delay_at(policy, 1, 5000ms) == 5000);
}

BOOST_AUTO_TEST_CASE(jitter_longer_than_retry_after_wins) {
    backoff_policy policy(unlimited(), fixed(highest));
    BOOST_TEST(delay_at(policy, 3, 200ms) == 2000);
}

BOOST_AUTO_TEST_CASE(retry_after_capped) {
    // Defaults cap Retry-After at 300 s.
    backoff_policy policy(unlimited(), fixed(lowest));
    BOOST_TEST(delay_at(policy, 1, 600s) == 300000);

    backoff_settings s = unlimited();
    s.max_retry_after = 2s;
    backoff_policy strict(s, fixed(lowest));
    BOOST_TEST(delay_at(strict, 1, 10s) == 2000);
}

BOOST_AUTO_TEST_CASE(retry_after_never_below_min_delay) {
    backoff_policy policy(unlimited(), fixed(lowest));
    BOOST_TEST(delay_at(policy, 1, 0ms) == 100);
    BOOST_TEST(delay_at(policy, 1, 20ms) == 100);
    BOOST_TEST(delay_at(policy, 1, -5000ms) == 100);

    // A cap below min_delay does not lower the floor.
    backoff_settings s = unlimited();
    s.max_retry_after = 10ms;
    backoff_policy capped(s, fixed(lowest));
    BOOST_TEST(delay_at(capped, 1, 60s) == 100);
}

BOOST_AUTO_TEST_CASE(retry_after_seconds_form) {
    const auto now = std::chrono::system_clock::now();
    backoff_policy policy(unlimited(), fixed(lowest));
    BOOST_TEST(delay_at(policy, 1, stampede::parse_retry_after("7", now)) == 7000);
}

BOOST_AUTO_TEST_CASE(retry_after_date_form) {
    const auto now = std::chrono::sys_days(std::chrono::year(2015) / 10 / 21) + 16h + 29min;
    const auto retry_after = stampede::parse_retry_after("Wed, 21 Oct 2015 16:29:42 GMT", now);
    backoff_policy policy(unlimited(), fixed(lowest));
    BOOST_TEST(delay_at(policy, 1, retry_after) == 42000);
}

BOOST_AUTO_TEST_CASE(garbage_retry_after_ignored) {
    const auto now = std::chrono::system_clock::now();
    backoff_policy policy(unlimited(), fixed(highest));
    const auto retry_after = stampede::parse_retry_after("in a while", now);
    BOOST_TEST(!retry_after.has_value());
    BOOST_TEST(delay_at(policy, 2, retry_after) == 1000);
}

// Exhaustion
// -----------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(attempts_exhausted) {
    backoff_settings s = unlimited();
    s.max_attempts = 3;
    backoff_policy policy(s, fixed(lowest));
    BOOST_TEST(delay_at(policy, 1) == 100);
    BOOST_TEST(delay_at(policy, 2) == 100);
    BOOST_TEST(delay_at(policy, 3) == none);
    BOOST_TEST(delay_at(policy, 4) == none);
    BOOST_TEST(!policy.attempts_exhausted(2));
    BOOST_TEST(policy.attempts_exhausted(3));

    // Retry-After does not extend the budget.
    BOOST_TEST(delay_at(policy, 3, 1s) == none);
}

BOOST_AUTO_TEST_CASE(single_attempt_never_retries) {
    backoff_settings s = unlimited();
    s.max_attempts = 1;
    backoff_policy policy(s, fixed(lowest));
    BOOST_TEST(delay_at(policy, 1) == none);
    BOOST_TEST(delay_at(policy, 0) == none);
    BOOST_TEST(policy.attempts_exhausted(0));
}

BOOST_AUTO_TEST_CASE(elapsed_exhausted) {
    backoff_settings s = unlimited();
    s.max_elapsed = 10s;
    backoff_policy policy(s, fixed(lowest));

    BOOST_TEST(millis(policy.next_delay(1, 9s, std::nullopt)) == 100);
    BOOST_TEST(millis(policy.next_delay(1, 10s, std::nullopt)) == none);
    BOOST_TEST(millis(policy.next_delay(1, 11s, std::nullopt)) == none);

    // Less than min_delay left: the next attempt would start too late.
    BOOST_TEST(millis(policy.next_delay(1, 9950ms, std::nullopt)) == none);
    BOOST_TEST(millis(policy.next_delay(1, 9900ms, std::nullopt)) == 100);
    BOOST_TEST(!policy.attempts_exhausted(1));
}

BOOST_AUTO_TEST_CASE(jitter_shortened_to_deadline) {
    backoff_settings s = unlimited();
    s.max_elapsed = 10s;
    backoff_policy policy(s, fixed(highest));

    // The draw would be 2000 ms, but only 1000 ms are left.
    BOOST_TEST(millis(policy.next_delay(3, 9s, std::nullopt)) == 1000);
}

BOOST_AUTO_TEST_CASE(retry_after_beyond_deadline_stops) {
    backoff_settings s = unlimited();
    s.max_elapsed = 10s;
    backoff_policy policy(s, fixed(lowest));
    BOOST_TEST(millis(policy.next_delay(1, 9s, 2000ms)) == none);
    BOOST_TEST(millis(policy.next_delay(1, 9s, 1000ms)) == 1000);
}

BOOST_AUTO_TEST_CASE(negative_elapsed_treated_as_zero) {
    backoff_policy policy(unlimited(), fixed(lowest));
    BOOST_TEST(millis(policy.next_delay(1, -5s, std::nullopt)) == 100);
}

BOOST_AUTO_TEST_CASE(default_schedule_fits_budget) {
    // With the defaults and the longest draws, every retry starts within max_elapsed.
    const backoff_settings s;
    backoff_policy policy(s, fixed(highest));
    milliseconds elapsed{0};
    unsigned failures = 1;
    while (const auto delay = policy.next_delay(failures, elapsed, std::nullopt)) {
        elapsed += *delay;
        BOOST_TEST(elapsed <= s.max_elapsed);
        ++failures;
    }
    BOOST_TEST(failures == s.max_attempts);
}
