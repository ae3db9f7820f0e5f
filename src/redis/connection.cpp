#include "../detail/spawn_operation.hpp"
#include "link.hpp"

#include <stampede/backoff.hpp>
#include <stampede/detail/log.hpp>
#include <stampede/detail/token_wire.hpp>
#include <stampede/redis/connection.hpp>
#include <stampede/redis/error.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/system/system_error.hpp>

#include <openssl/crypto.h>

#include <atomic>
#include <deque>
#include <sstream>
#include <vector>

namespace stampede::redis {
namespace detail {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// A command waiting in the queue or for its reply. The timer is an event: the queue
// cancels it to wake the waiting coroutine once the result is stored.
struct pending_command {
    explicit pending_command(const asio::any_io_executor& ex)
        : event(ex, steady_clock::time_point::max())
    {}

    ~pending_command() { wipe(); }

    void wipe() noexcept
    {
        if (sensitive) {
            OPENSSL_cleanse(payload.data(), payload.size());
        }
        payload.clear();
    }

    std::string payload; // cleared once written
    std::string name;    // the command's name, such as EVALSHA, for log lines
    bool probe = false;  // a connect probe, completed once a connection is open
    bool sensitive = false;
    asio::steady_timer event;
    bool done = false;
    bool abandoned = false;
    error_code ec;
    reply result;
};

using pending_ptr = std::shared_ptr<pending_command>;

std::string describe(const config& cfg)
{
    std::ostringstream out;
    out << cfg;
    return out.str();
}

} // namespace

class connection_impl : public std::enable_shared_from_this<connection_impl> {
public:
    connection_impl(asio::any_io_executor ex, config cfg, logger log)
        : executor_(std::move(ex))
        , strand_(asio::make_strand(executor_))
        , config_(std::move(cfg))
        , log_(std::move(log))
        , backoff_(config_.reconnect)
    {
        if (config_.use_tls) {
            tls_context_.emplace(make_tls_context(config_));
        }
    }

    const asio::any_io_executor& executor() const noexcept { return executor_; }
    const asio::strand<asio::any_io_executor>& strand() const noexcept { return strand_; }
    const config& get_config() const noexcept { return config_; }

    connection_stats stats() const noexcept
    {
        return {connects_.load(std::memory_order_relaxed),
                failed_connects_.load(std::memory_order_relaxed),
                replies_.load(std::memory_order_relaxed),
                failed_commands_.load(std::memory_order_relaxed)};
    }

    asio::awaitable<std::tuple<error_code, reply>> submit(command cmd);
    asio::awaitable<std::tuple<error_code>> probe();
    void close();

private:
    asio::awaitable<std::tuple<error_code, reply>> enqueue(std::string payload, bool sensitive,
                                                           std::string name = {});
    void note_error_reply(const pending_command& command, const reply& answer);
    asio::awaitable<void> run(std::shared_ptr<connection_impl> self);
    asio::awaitable<error_code> open_link();
    void note_connect_failure(error_code ec, const std::string& detail);
    void drop_link(error_code ec, std::string_view during);
    void finish(const pending_ptr& p, error_code ec, reply r);
    void fail_all(std::deque<pending_ptr>& list, error_code ec);

    template <class MakeMessage>
    void log(log_level level, MakeMessage&& make_message) const
    {
        stampede::detail::log(log_, level, std::forward<MakeMessage>(make_message));
    }

    const asio::any_io_executor executor_;
    const asio::strand<asio::any_io_executor> strand_;
    const config config_;
    const logger log_;
    std::optional<asio::ssl::context> tls_context_;

    // Used only on the strand.
    std::unique_ptr<link> link_;
    link* opening_ = nullptr;
    std::deque<pending_ptr> queue_;
    std::deque<pending_ptr> in_flight_;
    bool running_ = false;
    bool closed_ = false;
    backoff_policy backoff_;
    unsigned failed_attempts_ = 0;
    steady_clock::time_point first_failure_;
    steady_clock::time_point next_attempt_;

    std::atomic<std::uint64_t> connects_{0};
    std::atomic<std::uint64_t> failed_connects_{0};
    std::atomic<std::uint64_t> replies_{0};
    std::atomic<std::uint64_t> failed_commands_{0};
    std::uint64_t error_replies_ = 0; // on the strand
};

asio::awaitable<std::tuple<error_code, reply>> connection_impl::submit(command cmd)
{
    if (cmd.args().empty()) {
        co_return std::tuple<error_code, reply>(asio::error::invalid_argument, reply());
    }
    std::string payload = cmd.encode();
    std::string name = cmd.args().front();
    co_return co_await enqueue(std::move(payload), cmd.sensitive(), std::move(name));
}

asio::awaitable<std::tuple<error_code>> connection_impl::probe()
{
    auto [ec, ignored] = co_await enqueue(std::string(), false);
    co_return std::tuple<error_code>(ec);
}

asio::awaitable<std::tuple<error_code, reply>>
connection_impl::enqueue(std::string payload, bool sensitive, std::string name)
{
    if (closed_) {
        if (sensitive) {
            OPENSSL_cleanse(payload.data(), payload.size());
        }
        co_return std::tuple<error_code, reply>(asio::error::operation_aborted, reply());
    }

    auto p = std::make_shared<pending_command>(strand_);
    p->probe = payload.empty();
    p->payload = std::move(payload);
    p->name = std::move(name);
    p->sensitive = sensitive;
    queue_.push_back(p);
    if (!running_) {
        running_ = true;
        asio::co_spawn(strand_, run(shared_from_this()), asio::detached);
    }

    // The queue may have completed the command already: co_spawn starts the loop inline
    // when called on the strand, and opening fails without suspending during the backoff.
    if (!p->done) {
        co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
        auto [wait_ec] = co_await p->event.async_wait(asio::as_tuple(asio::use_awaitable));
        (void)wait_ec;
    }
    if (!p->done) {
        // Cancelled: the queue skips the command if it is not sent yet, and discards its
        // reply otherwise.
        p->abandoned = true;
        p->wipe();
        co_return std::tuple<error_code, reply>(asio::error::operation_aborted, reply());
    }
    co_return std::tuple<error_code, reply>(p->ec, std::move(p->result));
}

void connection_impl::finish(const pending_ptr& p, error_code ec, reply r)
{
    if (p->abandoned || p->done) {
        return;
    }
    p->done = true;
    p->ec = ec;
    p->result = std::move(r);
    p->wipe();
    p->event.cancel();
}

// Logs an error reply with the command's name and the server's text (such as NOPERM for an
// ACL user that may not run EVALSHA), which the caller receives only as `server_error`.
// The 1st, 2nd, 4th, 8th... are warnings, the others debug lines, all with the count.
// NOSCRIPT, which makes the script runner load the script, is always a debug line.
void connection_impl::note_error_reply(const pending_command& command, const reply& answer)
{
    const std::string_view text = answer.text();
    const bool routine = text.starts_with("NOSCRIPT");
    std::uint64_t count = error_replies_;
    if (!routine) {
        count = ++error_replies_;
    }
    const bool power_of_two = count != 0 && (count & (count - 1)) == 0;
    const log_level level = !routine && power_of_two ? log_level::warning : log_level::debug;
    log(level, [&] {
        stampede::detail::redactor secrets;
        secrets.add(config_.password.reveal());
        return "Redis at " + describe(config_) + " replied to " +
               (command.name.empty() ? std::string("a command") : command.name) +
               " with an error: " + stampede::detail::sanitize_server_text(text, secrets) + " (" +
               std::to_string(count) + " error replies on this connection so far)";
    });
}

void connection_impl::fail_all(std::deque<pending_ptr>& list, error_code ec)
{
    for (const pending_ptr& p : list) {
        if (!p->abandoned && !p->done && !p->probe) {
            failed_commands_.fetch_add(1, std::memory_order_relaxed);
        }
        finish(p, ec, reply());
    }
    list.clear();
}

// Sends the queued commands and reads their replies until the queue is empty.
asio::awaitable<void> connection_impl::run(std::shared_ptr<connection_impl> self)
{
    (void)self; // keeps the state alive while the loop runs
    while (!queue_.empty() && !closed_) {
        if (!link_) {
            if (error_code ec = co_await open_link()) {
                fail_all(queue_, ec);
                break;
            }
        }

        // Every command queued so far goes in one write. Probes need no reply.
        std::string batch;
        bool sensitive = false;
        for (const pending_ptr& p : queue_) {
            if (p->abandoned) {
                continue;
            }
            if (p->probe) {
                finish(p, {}, reply());
                continue;
            }
            batch += p->payload;
            sensitive = sensitive || p->sensitive;
            p->wipe();
            in_flight_.push_back(p);
        }
        queue_.clear();
        if (in_flight_.empty()) {
            continue;
        }

        auto write = link_->write(batch);
        auto written = co_await with_timeout(std::move(write), config_.command_timeout);
        if (sensitive) {
            OPENSSL_cleanse(batch.data(), batch.size());
        }
        if (!written || *written) {
            const error_code ec = !written ? error_code(errc::command_timeout) : *written;
            drop_link(ec, "sending a command");
            fail_all(in_flight_, closed_ ? error_code(asio::error::operation_aborted) : ec);
            continue;
        }

        while (!in_flight_.empty()) {
            reply answer;
            auto read = link_->read(answer);
            auto outcome = co_await with_timeout(std::move(read), config_.command_timeout);
            if (!outcome || *outcome) {
                const error_code ec = !outcome ? error_code(errc::command_timeout) : *outcome;
                drop_link(ec, "waiting for a reply");
                fail_all(in_flight_, closed_ ? error_code(asio::error::operation_aborted) : ec);
                break;
            }
            if (in_flight_.empty()) {
                break; // close() completed the commands meanwhile
            }
            pending_ptr p = std::move(in_flight_.front());
            in_flight_.pop_front();
            replies_.fetch_add(1, std::memory_order_relaxed);
            error_code reply_ec;
            if (answer.is_error()) {
                reply_ec = errc::server_error;
                note_error_reply(*p, answer);
            }
            finish(p, reply_ec, std::move(answer));
        }
    }
    if (closed_) {
        fail_all(queue_, asio::error::operation_aborted);
    }
    running_ = false;
}

asio::awaitable<error_code> connection_impl::open_link()
{
    const auto now = steady_clock::now();
    if (failed_attempts_ > 0 && now < next_attempt_) {
        co_return errc::not_connected;
    }

    auto candidate = std::make_unique<link>(strand_, tls_context_ ? &*tls_context_ : nullptr,
                                            config_.max_reply_bytes);
    opening_ = candidate.get();
    std::string detail;
    auto open = candidate->open(config_, detail);
    auto outcome = co_await with_timeout(std::move(open), config_.connect_timeout);
    opening_ = nullptr;

    error_code ec = !outcome ? error_code(errc::connect_timeout) : *outcome;
    if (closed_) {
        ec = asio::error::operation_aborted;
    }
    if (ec) {
        candidate->close();
        if (!outcome) {
            detail =
                "no connection within " + std::to_string(config_.connect_timeout.count()) + " ms";
        }
        if (!closed_) {
            note_connect_failure(ec, detail);
        }
        co_return ec;
    }

    link_ = std::move(candidate);
    connects_.fetch_add(1, std::memory_order_relaxed);
    const unsigned failures = failed_attempts_;
    failed_attempts_ = 0;
    log(failures > 0 ? log_level::info : log_level::debug, [&] {
        std::string message = "connected to Redis at " + describe(config_);
        if (failures > 0) {
            message += " after " + std::to_string(failures) + " failed attempts";
        }
        return message;
    });
    co_return error_code{};
}

void connection_impl::note_connect_failure(error_code ec, const std::string& detail)
{
    failed_connects_.fetch_add(1, std::memory_order_relaxed);
    const auto now = steady_clock::now();
    if (failed_attempts_ == 0) {
        first_failure_ = now;
    }
    ++failed_attempts_;
    const auto elapsed = duration_cast<milliseconds>(now - first_failure_);
    const milliseconds delay = backoff_.next_delay(failed_attempts_, elapsed, std::nullopt)
                                   .value_or(config_.reconnect.max_delay);
    next_attempt_ = now + delay;

    // The first failure of a run is a warning; repeats are counted at debug level.
    const log_level level = failed_attempts_ == 1 ? log_level::warning : log_level::debug;
    log(level, [&] {
        return "cannot connect to Redis at " + describe(config_) + " (attempt " +
               std::to_string(failed_attempts_) + "): " + ec.message() +
               (detail.empty() ? "" : " (" + detail + ")") + "; next attempt in " +
               std::to_string(delay.count()) + " ms or later";
    });
}

void connection_impl::drop_link(error_code ec, std::string_view during)
{
    if (link_) {
        link_->close();
        link_.reset();
    }
    if (closed_) {
        return;
    }
    log(log_level::warning, [&] {
        return "Redis connection to " + describe(config_) + " lost while " + std::string(during) +
               ": " + ec.message() + limit_note(ec, config_) + "; the next command reconnects";
    });
}

void connection_impl::close()
{
    asio::dispatch(strand_, [self = shared_from_this()] {
        if (self->closed_) {
            return;
        }
        self->closed_ = true;
        if (self->opening_ != nullptr) {
            self->opening_->close();
        }
        if (self->link_) {
            self->link_->close();
        }
        self->fail_all(self->queue_, asio::error::operation_aborted);
        self->fail_all(self->in_flight_, asio::error::operation_aborted);
    });
}

void start_execute(const std::shared_ptr<connection_impl>& impl, command cmd,
                   execute_handler handler)
{
    stampede::detail::spawn_operation(impl, impl->strand(), impl->submit(std::move(cmd)),
                                      std::move(handler), impl->executor());
}

void start_connect(const std::shared_ptr<connection_impl>& impl, connect_handler handler)
{
    stampede::detail::spawn_operation(impl, impl->strand(), impl->probe(), std::move(handler),
                                      impl->executor());
}

} // namespace detail

namespace {

config validated(config cfg)
{
    if (std::string problem = validate(cfg); !problem.empty()) {
        throw boost::system::system_error(errc::invalid_config, problem);
    }
    return cfg;
}

} // namespace

connection::connection(executor_type ex, config cfg, logger log)
    : impl_(std::make_shared<detail::connection_impl>(std::move(ex), validated(std::move(cfg)),
                                                      std::move(log)))
{}

connection::~connection()
{
    impl_->close();
}

connection::executor_type connection::get_executor() const noexcept
{
    return impl_->executor();
}

void connection::close()
{
    impl_->close();
}

connection_stats connection::stats() const noexcept
{
    return impl_->stats();
}

const config& connection::get_config() const noexcept
{
    return impl_->get_config();
}

} // namespace stampede::redis
