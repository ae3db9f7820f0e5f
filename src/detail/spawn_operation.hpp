// Starts a coroutine for an asynchronous operation whose handler was type-erased at the
// public boundary, keeping the handler's executor, cancellation slot and allocator.

#ifndef STAMPEDE_SRC_DETAIL_SPAWN_OPERATION_HPP
#define STAMPEDE_SRC_DETAIL_SPAWN_OPERATION_HPP

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/system/errc.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <exception>
#include <memory>
#include <new>
#include <tuple>
#include <utility>

namespace stampede::detail {

/// Returns the error code that stands for an exception escaping an operation's coroutine.
inline boost::system::error_code error_from_exception(std::exception_ptr e) noexcept
{
    try {
        std::rethrow_exception(e);
    } catch (const boost::system::system_error& error) {
        return error.code();
    } catch (const std::bad_alloc&) {
        return make_error_code(boost::system::errc::not_enough_memory);
    } catch (...) {
        return make_error_code(boost::system::errc::state_not_recoverable);
    }
}

/// The co_spawn completion handler that unpacks the coroutine's tuple into the user's
/// handler. Its associated executor, cancellation slot and allocator are the handler's.
template <class... Args>
class tuple_completion {
public:
    using handler_type =
        boost::asio::any_completion_handler<void(boost::system::error_code, Args...)>;
    using executor_type =
        boost::asio::associated_executor_t<handler_type, boost::asio::any_io_executor>;
    using cancellation_slot_type = boost::asio::cancellation_slot;
    using allocator_type = typename handler_type::allocator_type;

    tuple_completion(handler_type handler, boost::asio::any_io_executor fallback)
        : handler_(std::move(handler))
        , fallback_(std::move(fallback))
    {}

    executor_type get_executor() const noexcept
    {
        return boost::asio::get_associated_executor(handler_, fallback_);
    }

    cancellation_slot_type get_cancellation_slot() const noexcept
    {
        return handler_.get_cancellation_slot();
    }

    allocator_type get_allocator() const noexcept { return handler_.get_allocator(); }

    void operator()(std::exception_ptr e, std::tuple<boost::system::error_code, Args...> result)
    {
        if (e) {
            result = {};
            std::get<0>(result) = error_from_exception(e);
        }
        std::apply(std::move(handler_), std::move(result));
    }

private:
    handler_type handler_;
    boost::asio::any_io_executor fallback_;
};

/// Awaits `op` while holding `owner`, the object whose member coroutine `op` is.
template <class T>
boost::asio::awaitable<T> keep_alive(std::shared_ptr<const void> owner,
                                     boost::asio::awaitable<T> op)
{
    (void)owner;
    co_return co_await std::move(op);
}

/// Runs `op` on `ex`, keeping `owner` alive until it ends, and passes its result to
/// `handler`, never inside this call.
template <class Executor, class... Args>
void spawn_operation(
    std::shared_ptr<const void> owner, const Executor& ex,
    boost::asio::awaitable<std::tuple<boost::system::error_code, Args...>> op,
    boost::asio::any_completion_handler<void(boost::system::error_code, Args...)> handler,
    boost::asio::any_io_executor fallback)
{
    boost::asio::co_spawn(ex, keep_alive(std::move(owner), std::move(op)),
                          tuple_completion<Args...>(std::move(handler), std::move(fallback)));
}

} // namespace stampede::detail

#endif
