// A one-shot wake-up signal for a coroutine that waits on a strand: `notify()` ends the
// current or the next `wait_until()` early. Both must be called on the same strand.

#ifndef STAMPEDE_SRC_DETAIL_WAKER_HPP
#define STAMPEDE_SRC_DETAIL_WAKER_HPP

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>

namespace stampede::detail {

class waker {
public:
    explicit waker(const boost::asio::any_io_executor& ex)
        : timer_(ex)
    {}

    /// Wakes the waiting coroutine, or makes its next wait return at once.
    void notify()
    {
        notified_ = true;
        timer_.cancel();
    }

    /// Waits until `deadline` or a notification, whichever comes first. Returns whether
    /// it was woken by a notification, which it consumes.
    boost::asio::awaitable<bool> wait_until(std::chrono::steady_clock::time_point deadline)
    {
        if (!notified_) {
            timer_.expires_at(deadline);
            auto [ec] =
                co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
            (void)ec;
        }
        const bool woken = notified_;
        notified_ = false;
        co_return woken;
    }

private:
    boost::asio::steady_timer timer_;
    bool notified_ = false;
};

} // namespace stampede::detail

#endif
