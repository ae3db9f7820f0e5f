#ifndef STAMPEDE_REDIS_LEASE_HPP
#define STAMPEDE_REDIS_LEASE_HPP

#include <stampede/redis/connection.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <string>

namespace stampede::redis {

namespace detail {
using lease_handler = boost::asio::any_completion_handler<void(boost::system::error_code, bool)>;

void start_acquire_lease(connection& conn, std::string key, std::string owner,
                         std::chrono::milliseconds ttl, lease_handler handler);
void start_release_lease(connection& conn, std::string key, std::string owner, std::string channel,
                         lease_handler handler);
void start_extend_lease(connection& conn, std::string key, std::string owner,
                        std::chrono::milliseconds ttl, lease_handler handler);
} // namespace detail

// A lease is a Redis key that holds its owner's random value (see `make_lease_owner()`)
// and expires after its time to live, so a holder that dies is replaced once it expires.
// Each operation below completes with `void(boost::system::error_code, bool)` on the
// handler's associated executor (the connection's executor when it has none), with the
// errors of `connection::async_execute`. `conn` must outlive the operation.
// Cancellation: as `connection::async_execute`.

/// Takes the lease `key` for `ttl` if it is free (`SET key owner NX PX ttl`). Completes
/// with true when taken, false when another owner has it.
template <class CompletionToken = boost::asio::deferred_t>
auto async_acquire_lease(connection& conn, std::string key, std::string owner,
                         std::chrono::milliseconds ttl, CompletionToken&& token = {})
{
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, bool)>(
        [&conn](detail::lease_handler handler, std::string k, std::string o,
                std::chrono::milliseconds t) {
            detail::start_acquire_lease(conn, std::move(k), std::move(o), t, std::move(handler));
        },
        token, std::move(key), std::move(owner), ttl);
}

/// Deletes the lease `key` if `owner` still holds it, atomically (a compare-and-delete
/// script), then publishes to `channel` unless it is empty. Completes with true when it
/// was deleted, false when it had expired or another owner took it.
template <class CompletionToken = boost::asio::deferred_t>
auto async_release_lease(connection& conn, std::string key, std::string owner,
                         std::string channel = {}, CompletionToken&& token = {})
{
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, bool)>(
        [&conn](detail::lease_handler handler, std::string k, std::string o, std::string c) {
            detail::start_release_lease(conn, std::move(k), std::move(o), std::move(c),
                                        std::move(handler));
        },
        token, std::move(key), std::move(owner), std::move(channel));
}

/// Sets the time to live of the lease `key` to `ttl` if `owner` still holds it, for a
/// fetch that takes longer than planned. Completes with true when extended.
template <class CompletionToken = boost::asio::deferred_t>
auto async_extend_lease(connection& conn, std::string key, std::string owner,
                        std::chrono::milliseconds ttl, CompletionToken&& token = {})
{
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, bool)>(
        [&conn](detail::lease_handler handler, std::string k, std::string o,
                std::chrono::milliseconds t) {
            detail::start_extend_lease(conn, std::move(k), std::move(o), t, std::move(handler));
        },
        token, std::move(key), std::move(owner), ttl);
}

} // namespace stampede::redis

#endif
