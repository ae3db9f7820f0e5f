#ifndef STAMPEDE_DETAIL_TOKEN_CACHE_HPP
#define STAMPEDE_DETAIL_TOKEN_CACHE_HPP

#include <stampede/detail/token_snapshot.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

// The per-thread token cache behind `token_source::token()`.
//
// Why a per-thread cache: the hot path must not write shared memory, because any shared
// reference count or lock stops scaling as soon as two threads call it. Each thread
// keeps its own reference to the current snapshot together with the generation it was
// taken at. A hit costs one acquire load of the source's generation counter (a cache line
// that is only read until a new token is published) plus thread-local reads. The clock is
// never read on the hot path: timers in the token source bump the generation when the
// token enters its refresh window or goes stale, so an unchanged generation means the
// cached snapshot is still good.
//
// The array is constant-initialized and trivially destructible, so access needs no
// thread-local wrapper call. The initial-exec TLS model avoids the `__tls_get_addr` call
// that the default model costs in a shared library.

#if defined(__GNUC__) && !defined(STAMPEDE_NO_INITIAL_EXEC_TLS)
#define STAMPEDE_TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define STAMPEDE_TLS_MODEL
#endif

namespace stampede::detail {

/// One thread's cached reference to one token source's snapshot. Only the owning thread
/// writes it; `owner` and `hits` are atomics so `token_source::stats()` can read them
/// from another thread.
struct tls_slot {
    /// Id of the token source this entry belongs to; 0 when unused.
    std::atomic<std::uint64_t> owner{0};

    /// The source's generation when `snapshot` was taken.
    std::uint64_t generation = 0;

    /// The snapshot this thread holds one reference to, or null when the source had no
    /// usable token at `generation`.
    std::atomic<const token_snapshot*> snapshot{nullptr};

    /// Number of times the entry was repointed, for `access_token_view`'s debug checks.
    std::uint64_t replacements = 0;

    /// Cache hits served from this entry for `owner`.
    std::atomic<std::uint64_t> hits{0};
};

inline constexpr std::size_t tls_slot_count = 4;

extern thread_local constinit tls_slot tls_slots[tls_slot_count] STAMPEDE_TLS_MODEL;

inline tls_slot& tls_slot_for(std::uint64_t source_id) noexcept
{
    return tls_slots[source_id % tls_slot_count];
}

inline bool is_current_thread_slot(const tls_slot* slot) noexcept
{
    return slot >= tls_slots && slot < tls_slots + tls_slot_count;
}

} // namespace stampede::detail

#endif
