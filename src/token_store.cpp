#include "detail/spawn_operation.hpp"
#include "detail/waker.hpp"

#include <stampede/token_store.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>

#include <openssl/rand.h>

#include <algorithm>
#include <list>
#include <map>
#include <ostream>
#include <stdexcept>

namespace stampede {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::steady_clock;
using std::chrono::system_clock;

std::string to_hex(const unsigned char* data, std::size_t size)
{
    constexpr std::string_view digits = "0123456789abcdef";
    std::string hex;
    hex.reserve(2 * size);
    for (std::size_t i = 0; i < size; ++i) {
        hex.push_back(digits[data[i] >> 4]);
        hex.push_back(digits[data[i] & 0x0f]);
    }
    return hex;
}

std::int64_t unix_ms(system_clock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

} // namespace

std::ostream& operator<<(std::ostream& os, const stored_token& token)
{
    return os << "stored_token{access_token: [redacted], token_type: '" << token.token_type
              << "', scope: '" << token.scope << "', issued_at: " << unix_ms(token.issued_at)
              << " ms, expires_at: " << unix_ms(token.expires_at) << " ms (Unix)}";
}

std::string make_lease_owner()
{
    unsigned char bytes[16];
    if (RAND_bytes(bytes, sizeof bytes) != 1) {
        throw std::runtime_error("OpenSSL's random generator failed to make a lease owner");
    }
    return to_hex(bytes, sizeof bytes);
}

// memory_token_store
// -----------------------------------------------------------------------------------------

struct memory_token_store::state : std::enable_shared_from_this<state> {
    struct held_lease {
        std::string owner;
        steady_clock::time_point expires_at;
    };

    explicit state(asio::any_io_executor ex)
        : executor(std::move(ex))
        , strand(asio::make_strand(executor))
    {}

    const asio::any_io_executor executor;
    const asio::strand<asio::any_io_executor> strand;

    // Used only on the strand.
    std::map<std::string, stored_token, std::less<>> entries;
    std::map<std::string, held_lease, std::less<>> leases;
    std::multimap<std::string, detail::waker*, std::less<>> waiters;

    std::optional<stored_token> find(const std::string& cache_key)
    {
        auto it = entries.find(cache_key);
        if (it == entries.end()) {
            return std::nullopt;
        }
        if (it->second.expires_at <= system_clock::now()) {
            entries.erase(it);
            return std::nullopt;
        }
        return it->second;
    }

    // Returns the lease of `cache_key` if it is held and has not expired.
    held_lease* find_lease(const std::string& cache_key)
    {
        auto it = leases.find(cache_key);
        if (it == leases.end()) {
            return nullptr;
        }
        if (it->second.expires_at <= steady_clock::now()) {
            leases.erase(it);
            return nullptr;
        }
        return &it->second;
    }

    void wake(const std::string& cache_key)
    {
        auto [first, last] = waiters.equal_range(cache_key);
        for (auto it = first; it != last; ++it) {
            it->second->notify();
        }
    }

    asio::awaitable<std::tuple<error_code, std::optional<stored_token>>> get(token_key key)
    {
        co_return std::tuple<error_code, std::optional<stored_token>>(error_code(),
                                                                      find(key.cache_key));
    }

    asio::awaitable<std::tuple<error_code>> put(token_key key, stored_token value)
    {
        if (value.expires_at > system_clock::now()) {
            entries[key.cache_key] = std::move(value);
        }
        wake(key.cache_key);
        co_return std::tuple<error_code>();
    }

    asio::awaitable<std::tuple<error_code, std::optional<token_lease>>>
    try_lease(std::string cache_key, std::chrono::milliseconds ttl)
    {
        std::optional<token_lease> new_lease;
        if (find_lease(cache_key) == nullptr) {
            new_lease = token_lease{cache_key, make_lease_owner()};
            leases[cache_key] = held_lease{new_lease->owner, steady_clock::now() + ttl};
        }
        co_return std::tuple<error_code, std::optional<token_lease>>(error_code(),
                                                                     std::move(new_lease));
    }

    asio::awaitable<std::tuple<error_code, bool>> release(token_lease lease)
    {
        const held_lease* current_lease = find_lease(lease.cache_key);
        if (current_lease == nullptr || current_lease->owner != lease.owner) {
            co_return std::tuple<error_code, bool>(error_code(), false);
        }
        leases.erase(lease.cache_key);
        wake(lease.cache_key);
        co_return std::tuple<error_code, bool>(error_code(), true);
    }

    asio::awaitable<std::tuple<error_code, std::optional<stored_token>>>
    wait(token_key key, secret_string replaced_token, std::chrono::milliseconds max_wait)
    {
        co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
        const auto deadline = steady_clock::now() + max_wait;
        detail::waker signal(strand);
        auto registration = waiters.emplace(key.cache_key, &signal);
        struct unregister {
            state& s;
            decltype(registration) it;
            ~unregister() { s.waiters.erase(it); }
        } cleanup{*this, registration};

        for (;;) {
            auto token = find(key.cache_key);
            if (token && !(token->access_token == replaced_token)) {
                co_return std::tuple<error_code, std::optional<stored_token>>(error_code(),
                                                                              std::move(token));
            }
            const held_lease* current_lease = find_lease(key.cache_key);
            if (current_lease == nullptr || steady_clock::now() >= deadline) {
                co_return std::tuple<error_code, std::optional<stored_token>>(error_code(),
                                                                              std::nullopt);
            }

            // Wake when the lease expires too, since its holder may have died.
            const auto wake_at = std::min(deadline, current_lease->expires_at);
            (void)co_await signal.wait_until(wake_at);
            const auto state_now = co_await asio::this_coro::cancellation_state;
            if (state_now.cancelled() != asio::cancellation_type::none) {
                co_return std::tuple<error_code, std::optional<stored_token>>(
                    asio::error::operation_aborted, std::nullopt);
            }
        }
    }

    asio::awaitable<std::tuple<error_code, bool>> invalidate(token_key key,
                                                             secret_string token_value)
    {
        auto it = entries.find(key.cache_key);
        if (it == entries.end() || !(it->second.access_token == token_value)) {
            co_return std::tuple<error_code, bool>(error_code(), false);
        }
        entries.erase(it);
        co_return std::tuple<error_code, bool>(error_code(), true);
    }
};

memory_token_store::memory_token_store(executor_type ex)
    : state_(std::make_shared<state>(std::move(ex)))
{}

memory_token_store::~memory_token_store() = default;

memory_token_store::executor_type memory_token_store::get_executor() const noexcept
{
    return state_->executor;
}

void memory_token_store::do_get(token_key key,
                                detail::store_handler<std::optional<stored_token>> handler)
{
    detail::spawn_operation(state_, state_->strand, state_->get(std::move(key)), std::move(handler),
                            state_->executor);
}

void memory_token_store::do_put(token_key key, stored_token value, detail::store_handler<> handler)
{
    detail::spawn_operation(state_, state_->strand, state_->put(std::move(key), std::move(value)),
                            std::move(handler), state_->executor);
}

void memory_token_store::do_try_lease(std::string cache_key, std::chrono::milliseconds ttl,
                                      detail::store_handler<std::optional<token_lease>> handler)
{
    detail::spawn_operation(state_, state_->strand, state_->try_lease(std::move(cache_key), ttl),
                            std::move(handler), state_->executor);
}

void memory_token_store::do_release(token_lease lease, detail::store_handler<bool> handler)
{
    detail::spawn_operation(state_, state_->strand, state_->release(std::move(lease)),
                            std::move(handler), state_->executor);
}

void memory_token_store::do_wait(token_key key, secret_string replaced_token,
                                 std::chrono::milliseconds max_wait,
                                 detail::store_handler<std::optional<stored_token>> handler)
{
    detail::spawn_operation(state_, state_->strand,
                            state_->wait(std::move(key), std::move(replaced_token), max_wait),
                            std::move(handler), state_->executor);
}

void memory_token_store::do_invalidate(token_key key, secret_string token_value,
                                       detail::store_handler<bool> handler)
{
    detail::spawn_operation(state_, state_->strand,
                            state_->invalidate(std::move(key), std::move(token_value)),
                            std::move(handler), state_->executor);
}

} // namespace stampede
