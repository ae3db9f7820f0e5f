#ifndef STAMPEDE_ACCESS_TOKEN_HPP
#define STAMPEDE_ACCESS_TOKEN_HPP

#include <stampede/detail/token_snapshot.hpp>

#include <boost/smart_ptr/intrusive_ptr.hpp>

#include <cassert>
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>

namespace stampede {

namespace detail {
struct tls_slot;
}

/// An access token that the holder owns: copying shares one immutable token, and the
/// text stays valid for as long as any copy exists. Printing it redacts the value.
class access_token {
public:
    /// An empty token; `value()` is empty and `bool(*this)` is false.
    access_token() = default;

    explicit access_token(boost::intrusive_ptr<const detail::token_snapshot> snapshot) noexcept
        : snapshot_(std::move(snapshot))
    {
    }

    /// Returns the token text, to put in an `authorization` header. Never log it.
    std::string_view value() const noexcept;

    /// Returns the token type, always `"Bearer"`.
    std::string_view token_type() const noexcept;

    /// Returns the scope the server granted; empty when it sent none.
    std::string_view scope() const noexcept;

    /// Returns when the server considers the token expired, on the monotonic clock.
    std::chrono::steady_clock::time_point expires_at() const noexcept;

    /// Returns when the token expires, on the system clock.
    std::chrono::system_clock::time_point expires_at_system() const noexcept;

    /// Returns `"Bearer <token>"`, the value of an `authorization` header.
    std::string authorization_header() const;

    explicit operator bool() const noexcept { return snapshot_ != nullptr; }

    const detail::token_snapshot* snapshot() const noexcept { return snapshot_.get(); }

    /// Two tokens are equal when their texts are.
    friend bool operator==(const access_token& a, const access_token& b) noexcept;

    /// Writes the type, scope and expiry, never the value.
    friend std::ostream& operator<<(std::ostream& os, const access_token& token);

private:
    boost::intrusive_ptr<const detail::token_snapshot> snapshot_;
};

/// A borrowed reference to the cached token, returned by `token_source::token()` and
/// `token_source::try_token()` because borrowing costs no shared write.
///
/// Lifetime rule: a view is valid until the coroutine that obtained it next suspends
/// (its next `co_await`), or until the same thread next calls `token()` or
/// `try_token()` on any `token_source`, whichever comes first. Use it at once, for
/// example to set a header, or call `to_owned()` to keep the token longer. Debug builds
/// (without `NDEBUG`) assert on every access that the view is still valid: used on the
/// thread that obtained it, and the thread's cache entry not replaced since.
class access_token_view {
public:
    /// Used by `token_source`; `slot` is the calling thread's cache entry that keeps
    /// `snapshot` alive.
    access_token_view(const detail::token_snapshot& snapshot,
                      const detail::tls_slot& slot) noexcept;

    /// Returns the token text. Never log it.
    std::string_view value() const noexcept
    {
        check();
        return snapshot_->access_token.reveal();
    }

    std::string_view token_type() const noexcept
    {
        check();
        return snapshot_->token_type;
    }

    std::string_view scope() const noexcept
    {
        check();
        return snapshot_->scope;
    }

    std::chrono::steady_clock::time_point expires_at() const noexcept
    {
        check();
        return snapshot_->expires_at;
    }

    /// Returns `"Bearer <token>"`, the value of an `authorization` header.
    std::string authorization_header() const;

    /// Returns an owning copy that stays valid after the view's lifetime ends.
    access_token to_owned() const;

    /// Writes the type, scope and expiry, never the value.
    friend std::ostream& operator<<(std::ostream& os, const access_token_view& token);

private:
    // The checks are compiled per translation unit; the members are always there so the
    // layout does not depend on NDEBUG.
#ifdef NDEBUG
    void check() const noexcept {}
#else
    void check() const noexcept;
#endif

    const detail::token_snapshot* snapshot_;
    const detail::tls_slot* slot_;
    std::uint64_t replacements_;
};

} // namespace stampede

#include <stampede/detail/token_cache.hpp>

namespace stampede {

inline access_token_view::access_token_view(const detail::token_snapshot& snapshot,
                                            const detail::tls_slot& slot) noexcept
    : snapshot_(&snapshot)
    , slot_(&slot)
    , replacements_(slot.replacements)
{
}

#ifndef NDEBUG
inline void access_token_view::check() const noexcept
{
    // A view is bound to the thread that obtained it and dies when that thread's cache
    // entry is replaced. Failing here means the view was kept across a co_await: keep
    // `to_owned()` instead.
    assert(detail::is_current_thread_slot(slot_) &&
           "access_token_view used on another thread than the one that obtained it");
    assert(slot_->replacements == replacements_ &&
           slot_->snapshot.load(std::memory_order_relaxed) == snapshot_ &&
           "access_token_view used after its thread's token cache entry was replaced");
}
#endif

} // namespace stampede

#endif
