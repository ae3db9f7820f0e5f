#ifndef STAMPEDE_REDIS_CONNECTION_HPP
#define STAMPEDE_REDIS_CONNECTION_HPP

#include <stampede/logger.hpp>
#include <stampede/redis/command.hpp>
#include <stampede/redis/config.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/system/error_code.hpp>

#include <cstdint>
#include <memory>

namespace stampede::redis {

namespace detail {
class connection_impl;

using execute_handler = boost::asio::any_completion_handler<void(boost::system::error_code, reply)>;

using connect_handler = boost::asio::any_completion_handler<void(boost::system::error_code)>;

void start_execute(const std::shared_ptr<connection_impl>& impl, command cmd,
                   execute_handler handler);
void start_connect(const std::shared_ptr<connection_impl>& impl, connect_handler handler);
} // namespace detail

/// Counters of a `connection`, each counted since construction.
struct connection_stats {
    /// Connections opened and ready (AUTH and SELECT done).
    std::uint64_t connects = 0;

    /// Attempts to open a connection that failed.
    std::uint64_t failed_connects = 0;

    /// Commands that got a reply, error replies included.
    std::uint64_t replies = 0;

    /// Commands that failed without a reply (connection lost, timeout, backoff).
    std::uint64_t failed_commands = 0;
};

/// A Redis connection on the caller's executor, shared by any number of coroutines.
///
/// Commands from concurrent callers are queued and sent in order on one socket. The
/// commands queued while the previous batch ran go out in one write, and replies are
/// matched to commands in FIFO order. The connection opens on the first command, or on
/// `async_connect()`.
///
/// Failures and reconnection: a command whose connection breaks (reset, end of file,
/// `command_timeout`, or a reply over `config::max_reply_bytes`) fails with that error, and the next command opens a new connection.
/// When opening fails, every queued command fails with the cause, and for the reconnect
/// backoff (`config::reconnect`) that follows, commands fail at once with
/// `errc::not_connected` instead of waiting. Commands are never resent automatically,
/// because a command that was sent may have run.
///
/// Thread safety: every member may be called from any thread. The work runs on a strand
/// of the executor. Destroying the connection closes it as `close()` does.
class connection {
public:
    using executor_type = boost::asio::any_io_executor;

    /// Validates `cfg` and creates a closed connection; no I/O happens here. Each connect,
    /// failure and reconnect is logged to `log`, never with the password.
    ///
    /// Throws `boost::system::system_error` with `errc::invalid_config` when
    /// `validate(cfg)` reports a problem or the TLS trust store cannot be loaded.
    connection(executor_type ex, config cfg, logger log = {});

    ~connection();
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    executor_type get_executor() const noexcept;

    /// Sends `cmd` and waits for its reply.
    ///
    /// Completion signature: `void(boost::system::error_code, reply)`. Completes with
    /// success and the reply, or with `errc::server_error` and the error reply when the
    /// server rejected the command. Other failures complete with an empty reply and one of
    /// these errors: socket, resolver and TLS errors, `errc::connect_timeout`,
    /// `command_timeout`, `auth_failed`, `auth_required`, `select_failed`,
    /// `certificate_verification_failed`, `protocol_error`, `reply_too_large`,
    /// `not_connected`, and `operation_aborted` after `close()`. `reply_too_large` closes
    /// the connection and fails every command sent with it.
    ///
    /// Cancellation: terminal, partial and total cancellation complete this operation
    /// with `operation_aborted`. A command not yet sent is dropped; one already sent
    /// still runs on the server, and its reply is discarded.
    ///
    /// The handler runs on its associated executor (this connection's executor when it
    /// has none), never inside this call.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_execute(command cmd, CompletionToken&& token = CompletionToken{})
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, reply)>(
            initiate_execute{impl_}, token, std::move(cmd));
    }

    /// Opens the connection now if it is not open, for example to report a wrong
    /// password at start-up. Completion signature: `void(boost::system::error_code)`,
    /// with the errors of `async_execute`. Cancellation and handler executor: as
    /// `async_execute`.
    template <class CompletionToken = boost::asio::deferred_t>
    auto async_connect(CompletionToken&& token = CompletionToken{})
    {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
            initiate_connect{impl_}, token);
    }

    /// Closes the socket and completes every queued command with `operation_aborted`.
    /// Later commands fail the same way.
    void close();

    connection_stats stats() const noexcept;

    /// Returns the configuration, as validated.
    const config& get_config() const noexcept;

private:
    struct initiate_execute {
        std::shared_ptr<detail::connection_impl> impl;

        void operator()(detail::execute_handler handler, command cmd) const
        {
            detail::start_execute(impl, std::move(cmd), std::move(handler));
        }
    };

    struct initiate_connect {
        std::shared_ptr<detail::connection_impl> impl;

        void operator()(detail::connect_handler handler) const
        {
            detail::start_connect(impl, std::move(handler));
        }
    };

    std::shared_ptr<detail::connection_impl> impl_;
};

} // namespace stampede::redis

#endif
