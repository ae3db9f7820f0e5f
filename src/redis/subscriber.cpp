#include "subscriber.hpp"

#include <stampede/detail/log.hpp>
#include <stampede/redis/error.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>

#include <sstream>

namespace stampede::redis::detail {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::string describe(const config& cfg)
{
    std::ostringstream out;
    out << cfg;
    return out.str();
}

} // namespace

subscriber::subscriber(asio::strand<asio::any_io_executor> strand, config cfg, logger log)
    : strand_(std::move(strand))
    , config_(std::move(cfg))
    , log_(std::move(log))
    , retry_timer_(strand_)
    , backoff_(config_.reconnect)
{
    if (config_.use_tls) {
        tls_context_.emplace(make_tls_context(config_));
    }
}

void subscriber::watch(const std::string& channel, stampede::detail::waker& w)
{
    watchers_.emplace(channel, &w);
    if (closed_) {
        return;
    }
    if (channels_.insert(channel).second && link_) {
        send_subscribe({channel});
    }
    if (!running_) {
        running_ = true;
        asio::co_spawn(strand_, run(shared_from_this()), asio::detached);
    }
}

void subscriber::unwatch(const std::string& channel, stampede::detail::waker& w)
{
    auto [first, last] = watchers_.equal_range(channel);
    for (auto it = first; it != last; ++it) {
        if (it->second == &w) {
            watchers_.erase(it);
            return;
        }
    }
}

void subscriber::close()
{
    closed_ = true;
    retry_timer_.cancel();
    if (opening_) {
        opening_->close();
    }
    if (link_) {
        link_->close();
    }
}

void subscriber::wake(const std::string& channel)
{
    auto [first, last] = watchers_.equal_range(channel);
    for (auto it = first; it != last; ++it) {
        it->second->notify();
    }
}

void subscriber::send_subscribe(const std::set<std::string>& channels)
{
    command cmd{"SUBSCRIBE"};
    for (const std::string& channel : channels) {
        cmd.arg(channel);
    }
    outbox_ += cmd.encode();
    if (!writing_) {
        writing_ = true;
        asio::co_spawn(strand_, flush(shared_from_this()), asio::detached);
    }
}

asio::awaitable<void> subscriber::flush(std::shared_ptr<subscriber> self)
{
    (void)self;
    while (!outbox_.empty() && link_ && !closed_) {
        std::shared_ptr<link> target = link_;
        std::string bytes = std::move(outbox_);
        outbox_.clear();
        if (error_code ec = co_await target->write(bytes)) {
            break; // the read loop gets the same error and resubscribes after reconnecting
        }
    }
    outbox_.clear();
    writing_ = false;
}

void subscriber::handle(const reply& message)
{
    const auto& items = message.elements();
    if (message.type() != reply::kind::array || items.size() < 2) {
        return;
    }
    const std::string& kind = items[0].text();
    const std::string& channel = items[1].text();
    if (kind == "message") {
        notifications_.fetch_add(1, std::memory_order_relaxed);
        wake(channel);
    } else if (kind == "subscribe") {
        // Waiters that checked Redis before the subscription was active check again, so
        // a message published in between is not missed.
        wake(channel);
    }
}

asio::awaitable<void> subscriber::run(std::shared_ptr<subscriber> self)
{
    (void)self;
    while (!closed_) {
        auto candidate = std::make_shared<link>(strand_, tls_context_ ? &*tls_context_ : nullptr,
                                                config_.max_reply_bytes);
        opening_ = candidate;
        std::string detail;
        auto open = candidate->open(config_, detail);
        auto outcome = co_await with_timeout(std::move(open), config_.connect_timeout);
        opening_.reset();
        if (closed_) {
            break;
        }
        const error_code ec = !outcome ? error_code(errc::connect_timeout) : *outcome;
        if (ec) {
            candidate->close();
            note_failure(ec, detail);
            auto [wait_ec] = co_await retry_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
            (void)wait_ec;
            continue;
        }

        if (failed_attempts_ > 0) {
            stampede::detail::log(log_, log_level::info, [&] {
                return "Redis subscriber connected to " + describe(config_) + " after " +
                       std::to_string(failed_attempts_) + " failed attempts";
            });
        }
        const auto opened_at = steady_clock::now();
        link_ = candidate;
        if (!channels_.empty()) {
            send_subscribe(channels_);
        }

        error_code read_ec;
        for (;;) {
            reply message;
            // NOTE: no timeout here, because a subscriber is idle between messages. A server
            // that stops in the middle of a reply keeps this connection until it closes,
            // and waiters poll every poll_interval meanwhile.
            read_ec = co_await candidate->read(message);
            if (read_ec) {
                break;
            }
            handle(message);
        }
        link_.reset();
        candidate->close();
        if (closed_) {
            break;
        }

        // A connection that ends soon after it opened (a server or proxy that closes the
        // pub/sub connection on SUBSCRIBE) counts as a failed attempt, so that the
        // reconnects back off instead of looping at full speed.
        if (steady_clock::now() - opened_at < config_.reconnect.max_delay) {
            note_failure(read_ec, "the connection closed " +
                                      std::to_string(std::chrono::duration_cast<milliseconds>(
                                                         steady_clock::now() - opened_at)
                                                         .count()) +
                                      " ms after it opened");
            auto [wait_ec] = co_await retry_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
            (void)wait_ec;
            continue;
        }
        failed_attempts_ = 0;
        stampede::detail::log(log_, log_level::warning, [&] {
            return "Redis subscriber connection to " + describe(config_) +
                   " lost: " + read_ec.message() + limit_note(read_ec, config_) +
                   "; waiters poll until it is back";
        });
    }
    running_ = false;
}

void subscriber::note_failure(error_code ec, const std::string& detail)
{
    const auto now = steady_clock::now();
    if (failed_attempts_ == 0) {
        first_failure_ = now;
    }
    ++failed_attempts_;
    const auto elapsed = std::chrono::duration_cast<milliseconds>(now - first_failure_);
    const milliseconds delay = backoff_.next_delay(failed_attempts_, elapsed, std::nullopt)
                                   .value_or(config_.reconnect.max_delay);
    retry_timer_.expires_after(delay);

    const log_level level = failed_attempts_ == 1 ? log_level::warning : log_level::debug;
    stampede::detail::log(log_, level, [&] {
        return "Redis subscriber cannot connect to " + describe(config_) + " (attempt " +
               std::to_string(failed_attempts_) + "): " + ec.message() + limit_note(ec, config_) +
               (detail.empty() ? "" : " (" + detail + ")") + "; next attempt in " +
               std::to_string(delay.count()) + " ms";
    });
}

} // namespace stampede::redis::detail
