// One open Redis connection: the socket (TCP, or TLS through asio::ssl), the RESP reader
// and the steps that open it. The connection and the subscriber each drive one.

#ifndef STAMPEDE_SRC_REDIS_LINK_HPP
#define STAMPEDE_SRC_REDIS_LINK_HPP

#include "reply_reader.hpp"

#include <stampede/redis/command.hpp>
#include <stampede/redis/config.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace stampede::redis::detail {

/// Builds the TLS client context for `cfg`: peer verification against `ca_file`,
/// `ca_directory` or the system store. Throws `boost::system::system_error` with
/// `errc::invalid_config` when the CA file or directory cannot be loaded.
boost::asio::ssl::context make_tls_context(const config& cfg);

/// Returns " (limit N bytes)" naming `cfg.max_reply_bytes` when `ec` is
/// `errc::reply_too_large`, else an empty string, to append to a log line.
std::string limit_note(boost::system::error_code ec, const config& cfg);

/// Runs `op` until it completes or `timeout` passes, whichever comes first. Returns
/// nothing on timeout, after `op` has been cancelled and has finished.
template <class T>
boost::asio::awaitable<std::optional<T>> with_timeout(boost::asio::awaitable<T> op,
                                                      std::chrono::milliseconds timeout)
{
    using namespace boost::asio::experimental::awaitable_operators;
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, timeout);

    // Each awaitable is a named local, because GCC 12 may byte-copy a temporary that
    // appears inside a co_await expression.
    auto wait = timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    auto race = std::move(op) || std::move(wait);
    auto result = co_await std::move(race);
    if (result.index() == 0) {
        co_return std::optional<T>(std::get<0>(std::move(result)));
    }
    co_return std::nullopt;
}

/// A socket speaking RESP2. Not thread-safe: use it from one strand.
class link {
public:
    /// `tls` is null for plain TCP; otherwise it must outlive the link. A reply larger
    /// than `max_reply_bytes` fails the read with `errc::reply_too_large`.
    link(const boost::asio::any_io_executor& ex, boost::asio::ssl::context* tls,
         std::size_t max_reply_bytes);
    ~link();
    link(const link&) = delete;
    link& operator=(const link&) = delete;

    /// Resolves, connects, performs the TLS handshake, then sends AUTH and SELECT (or a
    /// PING when neither is needed, to learn whether the server requires a password).
    /// On failure stores an explanation without secrets in `detail`.
    boost::asio::awaitable<boost::system::error_code> open(const config& cfg, std::string& detail);

    /// Writes `bytes` completely.
    boost::asio::awaitable<boost::system::error_code> write(std::string_view bytes);

    /// Reads one reply. An error reply is returned as a reply, with success. A reply over
    /// the size limit fails with `errc::reply_too_large`, and the link must be closed.
    boost::asio::awaitable<boost::system::error_code> read(reply& out);

    /// Sends `cmd` and reads its reply.
    boost::asio::awaitable<boost::system::error_code> exchange(const command& cmd, reply& out);

    /// Closes the socket; pending operations complete with `operation_aborted`.
    void close() noexcept;

private:
    boost::asio::awaitable<boost::system::error_code> handshake(const config& cfg,
                                                                std::string& detail);
    boost::asio::awaitable<boost::system::error_code> authenticate(const config& cfg,
                                                                   std::string& detail);
    boost::asio::ip::tcp::socket& socket() noexcept;

    boost::asio::ip::tcp::resolver resolver_;
    std::optional<boost::asio::ip::tcp::socket> tcp_;
    std::optional<boost::asio::ssl::stream<boost::asio::ip::tcp::socket>> tls_;
    reply_reader reader_;
    std::array<char, 16 * 1024> buffer_{};
};

} // namespace stampede::redis::detail

#endif
