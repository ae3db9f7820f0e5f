#ifndef STAMPEDE_DETAIL_TOKEN_SNAPSHOT_HPP
#define STAMPEDE_DETAIL_TOKEN_SNAPSHOT_HPP

#include <stampede/secret_string.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace stampede::detail {

/// One issued token, immutable once published. Reference counted by
/// `boost::intrusive_ptr` and by the per-thread caches.
struct token_snapshot {
    secret_string access_token;
    std::string token_type;
    std::string scope;

    /// When the server considers the token expired, on the monotonic clock: the moment
    /// the request was sent plus `expires_in`.
    std::chrono::steady_clock::time_point expires_at;

    /// When the token source stops handing the token out: `expiry_margin` (at most a
    /// tenth of the lifetime) before `expires_at`.
    std::chrono::steady_clock::time_point stale_at;

    /// The same moment on the system clock, for display.
    std::chrono::system_clock::time_point expires_at_system;

    mutable std::atomic<std::uint32_t> references{0};
};

inline void intrusive_ptr_add_ref(const token_snapshot* s) noexcept
{
    s->references.fetch_add(1, std::memory_order_relaxed);
}

inline void intrusive_ptr_release(const token_snapshot* s) noexcept
{
    if (s->references.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        delete s;
    }
}

} // namespace stampede::detail

#endif
