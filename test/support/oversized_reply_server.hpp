// A fake Redis on loopback that replies to one command with an oversized reply, to test
// redis::config::max_reply_bytes on the command and the subscriber connection.

#ifndef STAMPEDE_TEST_OVERSIZED_REPLY_SERVER_HPP
#define STAMPEDE_TEST_OVERSIZED_REPLY_SERVER_HPP

#include <stampede/redis/config.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>

namespace stampede::test {

/// Replies to PING, reports the lease as held on MGET, and answers a command whose name
/// is `trigger` (for example GET or SUBSCRIBE) with `header` followed by `filler_bytes`
/// bytes of filler. Then it waits for the client to close the connection, and counts
/// the connections the client closed that way.
///
/// NOTE: it finds command names by searching each read for them, which suffices for
/// the small commands of these tests on loopback.
class oversized_reply_server {
public:
    oversized_reply_server(boost::asio::io_context& ctx, std::string trigger, std::string header,
                           std::size_t filler_bytes)
        : acceptor_(ctx, {boost::asio::ip::make_address("127.0.0.1"), 0})
        , trigger_("\r\n" + std::move(trigger) + "\r\n")
        , header_(std::move(header))
        , filler_bytes_(filler_bytes)
    {
        boost::asio::co_spawn(ctx, accept_loop(), boost::asio::detached);
    }

    redis::config config() const
    {
        redis::config cfg;
        cfg.port = acceptor_.local_endpoint().port();
        return cfg;
    }

    /// Returns the number of connections the client closed after an oversized reply.
    int rejected_replies() const { return rejected_replies_; }

    /// Returns the number of filler bytes written, over all connections.
    std::size_t filler_written() const { return filler_written_; }

    void close() { acceptor_.close(); }

private:
    using tcp = boost::asio::ip::tcp;

    boost::asio::awaitable<void> accept_loop()
    {
        for (;;) {
            auto [ec, socket] =
                co_await acceptor_.async_accept(boost::asio::as_tuple(boost::asio::use_awaitable));
            if (ec) {
                co_return;
            }
            boost::asio::co_spawn(acceptor_.get_executor(), serve(std::move(socket)),
                                  boost::asio::detached);
        }
    }

    boost::asio::awaitable<bool> send(tcp::socket& socket, const std::string& bytes)
    {
        auto [ec, n] = co_await boost::asio::async_write(
            socket, boost::asio::buffer(bytes), boost::asio::as_tuple(boost::asio::use_awaitable));
        co_return !ec;
    }

    // Sends the header and the filler, then reads until the client closes the connection.
    boost::asio::awaitable<void> send_oversized(tcp::socket& socket)
    {
        bool open = co_await send(socket, header_);
        const std::string chunk(64 * 1024, 'x');
        std::size_t left = filler_bytes_;
        while (open && left > 0) {
            const std::string part = chunk.substr(0, std::min(left, chunk.size()));
            open = co_await send(socket, part);
            if (open) {
                filler_written_ += part.size();
                left -= part.size();
            }
        }

        std::array<char, 4096> buffer{};
        for (;;) {
            auto [ec, n] = co_await socket.async_read_some(
                boost::asio::buffer(buffer), boost::asio::as_tuple(boost::asio::use_awaitable));
            if (ec) {
                ++rejected_replies_;
                co_return;
            }
        }
    }

    boost::asio::awaitable<void> serve(tcp::socket socket)
    {
        std::array<char, 4096> buffer{};
        for (;;) {
            auto [ec, n] = co_await socket.async_read_some(
                boost::asio::buffer(buffer), boost::asio::as_tuple(boost::asio::use_awaitable));
            if (ec) {
                co_return;
            }
            const std::string received(buffer.data(), n);
            if (received.find(trigger_) != std::string::npos) {
                co_await send_oversized(socket);
                co_return;
            }

            std::string answer;
            if (received.find("\r\nPING\r\n") != std::string::npos) {
                answer = "+PONG\r\n";
            } else if (received.find("\r\nMGET\r\n") != std::string::npos) {
                answer = "*2\r\n$-1\r\n$5\r\nother\r\n";
            } else {
                answer = "-ERR unexpected command\r\n";
            }
            if (!co_await send(socket, answer)) {
                co_return;
            }
        }
    }

    tcp::acceptor acceptor_;
    const std::string trigger_;
    const std::string header_;
    const std::size_t filler_bytes_;
    int rejected_replies_ = 0;
    std::size_t filler_written_ = 0;
};

} // namespace stampede::test

#endif
