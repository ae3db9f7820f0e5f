#ifndef STAMPEDE_TEST_FAKE_FETCHER_HPP
#define STAMPEDE_TEST_FAKE_FETCHER_HPP

// A token_fetcher that returns scripted results, for token_source tests that need no server.

#include <stampede/detail/token_fetcher.hpp>
#include <stampede/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/this_coro.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace stampede::test {

/// One scripted result: a token with a lifetime, or an error.
struct fake_answer {
    boost::system::error_code ec{};
    std::chrono::milliseconds expires_in{std::chrono::hours(1)};
    std::chrono::milliseconds delay{0};
    std::string server_message{};
};

/// Shared between the test and the fetcher it hands to the token source.
struct fake_endpoint {
    std::mutex mutex;
    std::deque<fake_answer> script; // answered in order; when empty, `fallback`
    fake_answer fallback;
    std::atomic<int> requests{0};
    std::atomic<int> in_flight{0};
    std::atomic<int> max_in_flight{0};
    std::vector<std::chrono::steady_clock::time_point> request_times;

    void push(fake_answer a)
    {
        std::lock_guard lock(mutex);
        script.push_back(std::move(a));
    }

    fake_answer next()
    {
        std::lock_guard lock(mutex);
        request_times.push_back(std::chrono::steady_clock::now());
        if (script.empty()) {
            return fallback;
        }
        fake_answer a = script.front();
        script.pop_front();
        return a;
    }
};

class fake_fetcher final : public detail::token_fetcher {
public:
    explicit fake_fetcher(std::shared_ptr<fake_endpoint> endpoint)
        : endpoint_(std::move(endpoint))
    {
    }

    boost::asio::awaitable<boost::system::error_code> fetch(detail::fetched_token& out,
                                                            diagnostics& diag) override
    {
        out.sent_at = std::chrono::steady_clock::now();
        const int n = ++endpoint_->requests;
        const int now_in_flight = ++endpoint_->in_flight;
        int seen = endpoint_->max_in_flight.load();
        while (now_in_flight > seen && !endpoint_->max_in_flight.compare_exchange_weak(seen, now_in_flight)) {
        }
        fake_answer answer = endpoint_->next();

        timer_ = std::make_unique<boost::asio::steady_timer>(co_await boost::asio::this_coro::executor);
        timer_->expires_after(answer.delay);
        auto [wait_ec] = co_await timer_->async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        --endpoint_->in_flight;
        if (wait_ec) {
            co_return boost::asio::error::operation_aborted;
        }
        if (answer.ec) {
            diag.set_server_message(answer.server_message);
            co_return answer.ec;
        }
        out.access_token = secret_string("fake-token-" + std::to_string(n));
        out.token_type = "Bearer";
        out.scope = "ALL:ALL";
        out.expires_in = answer.expires_in;
        co_return boost::system::error_code{};
    }

    void close() override
    {
        if (timer_) {
            timer_->cancel();
        }
    }

    std::size_t connections_opened() const noexcept override { return 1; }

private:
    std::shared_ptr<fake_endpoint> endpoint_;
    std::unique_ptr<boost::asio::steady_timer> timer_;
};

} // namespace stampede::test

#endif
