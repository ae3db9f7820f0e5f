#ifndef STAMPEDE_TOKEN_STORE_HPP
#define STAMPEDE_TOKEN_STORE_HPP

#include <stampede/secret_string.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace stampede {

/// A token as kept in a token store, with wall-clock times because an entry outlives the
/// process that wrote it and may be read on another host.
struct stored_token {
    secret_string access_token;
    std::string token_type;
    std::string scope;

    /// When the token request was sent, which starts the token's lifetime.
    std::chrono::system_clock::time_point issued_at;

    /// When the server considers the token expired.
    std::chrono::system_clock::time_point expires_at;

    friend bool operator==(const stored_token&, const stored_token&) = default;
};

/// Writes the type, scope and times; the token itself is written as `[redacted]`.
std::ostream& operator<<(std::ostream& os, const stored_token& token);

/// One configuration's place in a store: its cache key and the client secret that
/// encrypts the entry in shared stores.
struct token_key {
    std::string cache_key;
    secret_string client_secret;
};

/// The right to fetch the token of one cache key, held by one process at a time until it
/// is released or its time to live passes.
struct token_lease {
    std::string cache_key;

    /// A random value that identifies the holder, so that only it can release the lease.
    std::string owner;
};

namespace detail {
template <class... Args>
using store_handler = boost::asio::any_completion_handler<void(boost::system::error_code, Args...)>;
} // namespace detail

/// The storage behind token sources: cached tokens, plus the leases and waits by which the
/// processes that share a store let only one of them fetch. Implementations are the
/// in-process `memory_token_store` (the default) and `redis::redis_token_store`, shared by
/// a fleet.
///
/// Every operation takes a completion token (default `deferred`), completes on the
/// handler's associated executor (the store's executor when it has none), never inside
/// the initiating call. The store must outlive its operations. Operations may be started
/// from any thread.
class token_store {
public:
    using executor_type = boost::asio::any_io_executor;

    virtual ~token_store() = default;

    virtual executor_type get_executor() const noexcept = 0;

    /// Looks up the token of `key`. Completion: `void(error_code, optional<stored_token>)`,
    /// empty on a miss. An entry that cannot be decrypted with `key.client_secret` is a
    /// miss in shared stores; the error is counted and logged.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_get(token_key key, CompletionToken&& token = CompletionToken{})
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code,
                                                                 std::optional<stored_token>)>(
            [this](auto handler, token_key k) { do_get(std::move(k), std::move(handler)); }, token,
            std::move(key));
    }

    /// Stores `value` for `key` until it expires, replacing any entry, and wakes the
    /// processes that wait in `async_wait` for this key. A token with no lifetime left is
    /// not stored, but the waiters are woken all the same. Completion: `void(error_code)`.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_put(token_key key, stored_token value, CompletionToken&& token = CompletionToken{})
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
            [this](auto handler, token_key k, stored_token v) {
                do_put(std::move(k), std::move(v), std::move(handler));
            },
            token, std::move(key), std::move(value));
    }

    /// Takes the lease of `cache_key` for `ttl` if no one holds it. Completion:
    /// `void(error_code, optional<token_lease>)`, empty when another holder has it.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_try_lease(std::string cache_key, std::chrono::milliseconds ttl,
                         CompletionToken&& token = CompletionToken{})
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code,
                                                                 std::optional<token_lease>)>(
            [this](auto handler, std::string k, std::chrono::milliseconds t) {
                do_try_lease(std::move(k), t, std::move(handler));
            },
            token, std::move(cache_key), ttl);
    }

    /// Releases `lease` if it is still held by its owner. Completion:
    /// `void(error_code, bool)`, false when it had expired or been taken over.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_release(token_lease lease, CompletionToken&& token = CompletionToken{})
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, bool)>(
            [this](auto handler, token_lease l) { do_release(std::move(l), std::move(handler)); },
            token, std::move(lease));
    }

    /// Waits until a token for `key` is stored, the lease of its cache key is free (its
    /// holder released it or died and it expired), or `max_wait` passes. Completion:
    /// `void(error_code, optional<stored_token>)`: the token, or empty when the caller
    /// should try to take the lease again. Cancellation: terminal, partial and total
    /// cancellation complete the wait with `operation_aborted`.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_wait(token_key key, std::chrono::milliseconds max_wait,
                    CompletionToken&& token = CompletionToken{})
    {
        return async_wait_for_replacement(std::move(key), secret_string(), max_wait,
                                          std::forward<CompletionToken>(token));
    }

    /// Waits as `async_wait`, except that an entry containing `replaced_token` counts as
    /// no entry: the wait goes on until another token is stored. A refresh waits this way
    /// for the token that replaces the current one, and a caller whose token the API
    /// rejected waits for one other than the rejected token. An empty `replaced_token`
    /// matches no entry.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_wait_for_replacement(token_key key, secret_string replaced_token,
                                    std::chrono::milliseconds max_wait,
                                    CompletionToken&& token = CompletionToken{})
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code,
                                                                 std::optional<stored_token>)>(
            [this](auto handler, token_key k, secret_string r, std::chrono::milliseconds w) {
                do_wait(std::move(k), std::move(r), w, std::move(handler));
            },
            token, std::move(key), std::move(replaced_token), max_wait);
    }

    /// Removes the entry of `key` if it still contains `token_value`, for example after the
    /// API rejected that token with 401; a newer token stays. Completion:
    /// `void(error_code, bool)`, true when the entry was removed.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_invalidate(token_key key, secret_string token_value,
                          CompletionToken&& token = CompletionToken{})
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, bool)>(
            [this](auto handler, token_key k, secret_string v) {
                do_invalidate(std::move(k), std::move(v), std::move(handler));
            },
            token, std::move(key), std::move(token_value));
    }

protected:
    virtual void do_get(token_key key,
                        detail::store_handler<std::optional<stored_token>> handler) = 0;
    virtual void do_put(token_key key, stored_token value, detail::store_handler<> handler) = 0;
    virtual void do_try_lease(std::string cache_key, std::chrono::milliseconds ttl,
                              detail::store_handler<std::optional<token_lease>> handler) = 0;
    virtual void do_release(token_lease lease, detail::store_handler<bool> handler) = 0;
    virtual void do_wait(token_key key, secret_string replaced_token,
                         std::chrono::milliseconds max_wait,
                         detail::store_handler<std::optional<stored_token>> handler) = 0;
    virtual void do_invalidate(token_key key, secret_string token_value,
                               detail::store_handler<bool> handler) = 0;
};

/// Returns a random lease owner value: 128 bits from OpenSSL's generator, in hex.
/// Throws `std::runtime_error` when the generator fails.
std::string make_lease_owner();

/// A token store in this process's memory, shared by the token sources given it. Leases
/// and waits work between them as between processes. Thread-safe.
class memory_token_store final : public token_store {
public:
    explicit memory_token_store(executor_type ex);
    ~memory_token_store() override;

    executor_type get_executor() const noexcept override;

private:
    struct state;

    void do_get(token_key key, detail::store_handler<std::optional<stored_token>> handler) override;
    void do_put(token_key key, stored_token value, detail::store_handler<> handler) override;
    void do_try_lease(std::string cache_key, std::chrono::milliseconds ttl,
                      detail::store_handler<std::optional<token_lease>> handler) override;
    void do_release(token_lease lease, detail::store_handler<bool> handler) override;
    void do_wait(token_key key, secret_string replaced_token, std::chrono::milliseconds max_wait,
                 detail::store_handler<std::optional<stored_token>> handler) override;
    void do_invalidate(token_key key, secret_string token_value,
                       detail::store_handler<bool> handler) override;

    std::shared_ptr<state> state_;
};

} // namespace stampede

#endif
