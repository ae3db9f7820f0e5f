#ifndef STAMPEDE_DETAIL_TOKEN_FETCHER_HPP
#define STAMPEDE_DETAIL_TOKEN_FETCHER_HPP

#include <stampede/diagnostics.hpp>
#include <stampede/secret_string.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <optional>
#include <string>

namespace stampede::detail {

/// A token as the endpoint returned it, before the token source plans its lifetime.
struct fetched_token {
    secret_string access_token;
    std::string token_type;
    std::string scope;

    /// Nothing when the response had no `expires_in`.
    std::optional<std::chrono::milliseconds> expires_in;

    /// The moment just before the request was sent; the lifetime counts from here.
    std::chrono::steady_clock::time_point sent_at;
};

/// Sends one request to the token endpoint. The token source owns one fetcher and calls
/// it from its strand, one request at a time. Tests substitute their own.
class token_fetcher {
public:
    virtual ~token_fetcher() = default;

    /// Sends one request and fills `out` on success. Fails with the transport's or the
    /// parser's error code, `diag` explaining it.
    virtual boost::asio::awaitable<boost::system::error_code> fetch(fetched_token& out,
                                                                    diagnostics& diag) = 0;

    /// Aborts a `fetch` in progress (it completes with `operation_aborted`) and releases
    /// the connection. Called on the token source's strand.
    virtual void close() = 0;

    /// Returns the number of connections opened so far.
    virtual std::size_t connections_opened() const noexcept = 0;
};

} // namespace stampede::detail

#endif
