#ifndef STAMPEDE_TEST_RUN_COROUTINE_HPP
#define STAMPEDE_TEST_RUN_COROUTINE_HPP

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <stdexcept>

namespace stampede::test {

/// Runs `body` as a coroutine on `ctx` until it finishes and rethrows its exception.
/// Other work on the context (a token source's refresh timer) may stay pending.
template <class Body>
void run_coroutine(boost::asio::io_context& ctx, Body body)
{
    bool done = false;
    std::exception_ptr error;
    boost::asio::co_spawn(ctx, std::move(body), [&](std::exception_ptr e) {
        error = e;
        done = true;
    });
    ctx.restart();
    while (!done) {
        if (ctx.run_one() == 0) {
            throw std::logic_error("io_context ran out of work before the coroutine finished");
        }
    }
    if (error) {
        std::rethrow_exception(error);
    }
}

/// Waits for `d` on the calling coroutine's executor.
inline boost::asio::awaitable<void> sleep_for(std::chrono::steady_clock::duration d)
{
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, d);
    co_await timer.async_wait(boost::asio::use_awaitable);
}

} // namespace stampede::test

#endif
