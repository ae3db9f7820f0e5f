// The pub/sub connection of a redis_token_store: subscribes to the channels that waiters
// watch, wakes them on each message, and reconnects with backoff when the link drops.

#ifndef STAMPEDE_SRC_REDIS_SUBSCRIBER_HPP
#define STAMPEDE_SRC_REDIS_SUBSCRIBER_HPP

#include "../detail/waker.hpp"
#include "link.hpp"

#include <stampede/backoff.hpp>
#include <stampede/logger.hpp>
#include <stampede/redis/config.hpp>

#include <boost/asio/strand.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>

namespace stampede::redis::detail {

/// Every member except `notifications()` must be called on the strand given to the
/// constructor.
class subscriber : public std::enable_shared_from_this<subscriber> {
public:
    subscriber(boost::asio::strand<boost::asio::any_io_executor> strand, config cfg, logger log);

    /// Wakes `w` on each message on `channel`, and once the subscription is confirmed,
    /// until `unwatch`. Subscribes (and connects) when needed. Channels stay subscribed
    /// until `close()`.
    void watch(const std::string& channel, stampede::detail::waker& w);
    void unwatch(const std::string& channel, stampede::detail::waker& w);

    void close();

    std::uint64_t notifications() const noexcept
    {
        return notifications_.load(std::memory_order_relaxed);
    }

private:
    boost::asio::awaitable<void> run(std::shared_ptr<subscriber> self);
    boost::asio::awaitable<void> flush(std::shared_ptr<subscriber> self);
    void send_subscribe(const std::set<std::string>& channels);
    void handle(const reply& message);
    void wake(const std::string& channel);
    void note_failure(boost::system::error_code ec, const std::string& detail);

    const boost::asio::strand<boost::asio::any_io_executor> strand_;
    const config config_;
    const logger log_;
    std::optional<boost::asio::ssl::context> tls_context_;

    std::multimap<std::string, stampede::detail::waker*> watchers_;
    std::set<std::string> channels_;
    std::shared_ptr<link> link_;
    std::shared_ptr<link> opening_;
    std::string outbox_;
    bool running_ = false;
    bool writing_ = false;
    bool closed_ = false;
    boost::asio::steady_timer retry_timer_;
    backoff_policy backoff_;
    unsigned failed_attempts_ = 0;
    std::chrono::steady_clock::time_point first_failure_;
    std::atomic<std::uint64_t> notifications_{0};
};

} // namespace stampede::redis::detail

#endif
