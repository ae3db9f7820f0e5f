#ifndef STAMPEDE_TOKEN_SOURCE_HPP
#define STAMPEDE_TOKEN_SOURCE_HPP

#include <stampede/access_token.hpp>
#include <stampede/detail/token_source_impl.hpp>
#include <stampede/diagnostics.hpp>
#include <stampede/error.hpp>
#include <stampede/settings.hpp>
#include <stampede/token_source_stats.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <memory>
#include <optional>
#include <tuple>
#include <string_view>
#include <type_traits>
#include <utility>

namespace stampede {

namespace detail {
struct token_source_owner;
} // namespace detail

/// The source of access tokens for one client: fetches a token from the token endpoint
/// once, hands it to every caller from a cache, and refreshes it in the background
/// before it expires.
///
/// Copies are handles that share one cache and one in-flight fetch. When the last copy
/// is destroyed, the source shuts down (see `shutdown()`).
///
/// Thread safety: every member function may be called from any thread, on copies or on
/// the same object, while the executor runs on several threads.
///
/// Once a token is cached, its refresh timer is pending work on the executor, so
/// `io_context::run()` returns only after `shutdown()` or the destruction of the last copy.
///
/// Fleet mode (`settings.fleet.store` set): each fetch first looks for another process's
/// token in the shared store and otherwise takes the store's lease, so that the processes
/// sharing the store fetch each token once. A store failure makes that fetch local, so
/// it does not fail the callers. docs/fleet-mode.md describes the guarantees and limits.
class token_source {
public:
    using executor_type = boost::asio::any_io_executor;

    /// Validates `settings` and creates a source whose fetches run on a strand of `ex`.
    /// No request is sent before the first call for a token.
    /// Throws `error_with_diagnostics` with `client_errc::invalid_settings` (or
    /// `insecure_url`) naming the field and the fix when the settings are invalid.
    token_source(const executor_type& ex, token_source_settings settings);

    template <class ExecutionContext,
              class = std::enable_if_t<
                  std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>>>
    token_source(ExecutionContext& context, token_source_settings settings)
        : token_source(executor_type(context.get_executor()), std::move(settings))
    {
    }

    /// Returns the executor that runs the fetches and the completions of handlers that have
    /// no associated executor of their own.
    const executor_type& get_executor() const noexcept { return impl_->get_executor(); }

    /// Returns the current token, waiting for a fetch only when no usable token is cached.
    ///
    /// With a cached token this completes without suspending, at about the cost of a
    /// bare `co_await`. The view follows `access_token_view`'s lifetime rule: use it
    /// before the next `co_await`, or keep `to_owned()`. Where the result is not used
    /// right after the `co_await` that produced it, as with `awaitable_operators`
    /// (`co_await (auth.token() || timer.async_wait(...))`), use
    /// `async_token(boost::asio::use_awaitable)`, which returns an owning `access_token`.
    /// Throws `error_with_diagnostics` on failure; `operation_aborted` after `shutdown()`.
    /// Cancellation: as `async_token()`.
    ///
    /// NOTE: the cached token is dropped by a timer at its expiry margin, so the hot path
    /// reads no clock. An executor blocked for longer than `expiry_margin` can delay that
    /// timer; the slow paths check the expiry themselves.
    boost::asio::awaitable<access_token_view> token()
    {
        if (const detail::token_snapshot* snapshot = impl_->peek()) [[likely]] {
            co_return access_token_view(*snapshot, impl_->current_thread_slot());
        }
        // Waits in this frame, for a completion that carries the shared diagnostics and
        // snapshot as they are, so a waiting caller costs one frame and one waiter object.
        auto [ec, diag, snapshot] = co_await wait_for_snapshot();
        if (ec) {
            throw error_with_diagnostics(ec, diag ? *diag : diagnostics{});
        }
        co_return hold(std::move(snapshot));
    }

    /// Returns the cached token if a usable one is held, without waiting and without
    /// starting a fetch. The view follows `access_token_view`'s lifetime rule.
    std::optional<access_token_view> try_token() noexcept
    {
        if (const detail::token_snapshot* snapshot = impl_->peek()) {
            return access_token_view(*snapshot, impl_->current_thread_slot());
        }
        return std::nullopt;
    }

    /// Gets a token, owned by the caller. Completion signature:
    /// `void(boost::system::error_code, access_token)`.
    ///
    /// Completes with the cached token when a usable one is held; otherwise waits for the
    /// fetch in flight, starting one if none is. All waiters of one fetch get the same
    /// token or the same error. The handler runs on its associated executor (this
    /// source's executor when it has none), never inside this call.
    ///
    /// Errors: OAuth errors from the endpoint (`oauth_errc`), HTTP statuses
    /// (`http_category()`), network and timeout errors, `client_errc` for malformed
    /// responses and exhausted retries, `operation_aborted` on cancellation or shutdown.
    /// A permanent error is remembered for `permanent_error_cooldown`, during which new
    /// calls fail at once with it.
    ///
    /// Cancellation: terminal, partial and total cancellation complete this waiter alone
    /// with `operation_aborted`; the fetch goes on for the other waiters and still fills
    /// the cache.
    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
    auto async_token(CompletionToken&& token = CompletionToken())
    {
        return boost::asio::async_initiate<CompletionToken,
                                           void(boost::system::error_code, access_token)>(
            initiation<false>{impl_shared()}, token, static_cast<diagnostics*>(nullptr));
    }

    /// As `async_token(token)`, and on completion also stores the failure's details (or
    /// clears them on success) in `diag`, which must stay valid until then.
    template <class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
    auto async_token(diagnostics& diag, CompletionToken&& token = CompletionToken())
    {
        return boost::asio::async_initiate<CompletionToken,
                                           void(boost::system::error_code, access_token)>(
            initiation<false>{impl_shared()}, token, &diag);
    }

    /// Drops the cached token if its text is `token_value`, for example after an API
    /// request with it was refused with 401. Returns whether it was dropped. A report
    /// about an older token never drops a newer one, so many reports about the same token
    /// cause one fetch. The next call for a token starts the fetch. In fleet mode the token
    /// is also removed from the shared store, in the background, if the store still
    /// contains it, and it is never taken back from the store.
    bool invalidate(std::string_view token_value) { return impl_->invalidate(token_value); }
    bool invalidate(const access_token& token) { return invalidate(token.value()); }
    bool invalidate(const access_token_view& token) { return invalidate(token.value()); }

    /// Stops the source: every waiter completes with `operation_aborted`, the fetch and
    /// timers stop, the cached token is dropped, and later calls fail with
    /// `operation_aborted`. Called by the destructor of the last copy. In fleet mode a
    /// held lease is released and a wait for another process's token ends.
    void shutdown() { impl_->shutdown(); }

    /// Returns the counters.
    token_source_stats stats() const { return impl_->stats(); }

    /// Returns the settings, as validated.
    const token_source_settings& settings() const noexcept { return impl_->settings(); }

    /// Used by tests to substitute the request layer.
    token_source(const executor_type& ex, token_source_settings settings,
                 std::unique_ptr<detail::token_fetcher> fetcher);

private:
    // The completion `token()` waits for: the shared diagnostics and snapshot, unconverted.
    using snapshot_signature =
        void(boost::system::error_code, std::shared_ptr<const diagnostics>,
             boost::intrusive_ptr<const detail::token_snapshot>);

    // `Snapshot` selects `snapshot_signature` instead of the public one.
    template <class Handler, bool Snapshot>
    class waiter;

    // Creates the waiter for the handler and hands it to the shared state.
    template <bool Snapshot>
    struct initiation {
        std::shared_ptr<detail::token_source_impl> impl;

        template <class Handler>
        void operator()(Handler&& handler, diagnostics* diag_out) const
        {
            auto* w = new waiter<std::decay_t<Handler>, Snapshot>(std::forward<Handler>(handler),
                                                                  impl, diag_out);
            impl->start_wait(*w);
        }
    };

    // Not a coroutine, so that no temporary lives inside `token()`'s `co_await`
    // expression, which GCC 12 may copy bytewise into the frame.
    using snapshot_result =
        std::tuple<boost::system::error_code, std::shared_ptr<const diagnostics>,
                   boost::intrusive_ptr<const detail::token_snapshot>>;

    boost::asio::awaitable<snapshot_result> wait_for_snapshot()
    {
        return boost::asio::async_initiate<
            const boost::asio::as_tuple_t<boost::asio::use_awaitable_t<>>&, snapshot_signature>(
            initiation<true>{impl_shared()}, as_tuple_awaitable,
            static_cast<diagnostics*>(nullptr));
    }

    static constexpr boost::asio::as_tuple_t<boost::asio::use_awaitable_t<>> as_tuple_awaitable{};

    void init(const executor_type& ex, const executor_type& strand,
              token_source_settings settings, std::unique_ptr<detail::token_fetcher> fetcher);
    access_token_view hold(boost::intrusive_ptr<const detail::token_snapshot> token);
    std::shared_ptr<detail::token_source_impl> impl_shared() const;

    std::shared_ptr<detail::token_source_owner> owner_;
    detail::token_source_impl* impl_;
};

template <class Handler, bool Snapshot>
class token_source::waiter final : public detail::token_waiter_base {
    using default_executor = boost::asio::any_io_executor;
    using handler_executor = boost::asio::associated_executor_t<Handler, default_executor>;
    using work_executor = std::decay_t<decltype(boost::asio::prefer(
        std::declval<handler_executor>(), boost::asio::execution::outstanding_work.tracked))>;

    // Runs where `emit` is called; removes the waiter if it is still queued.
    struct cancel_handler {
        std::weak_ptr<detail::token_source_impl> source;
        waiter* self;

        void operator()(boost::asio::cancellation_type type) const
        {
            constexpr auto handled = boost::asio::cancellation_type::terminal |
                                     boost::asio::cancellation_type::partial |
                                     boost::asio::cancellation_type::total;
            if ((type & handled) == boost::asio::cancellation_type::none) {
                return;
            }
            if (auto impl = source.lock()) {
                impl->cancel_wait(*self);
            }
        }
    };

    // The function that runs the handler. It owns the waiter, so a function destroyed
    // without running (its execution context was destroyed) destroys the waiter too.
    class invoker {
    public:
        invoker(waiter* self, boost::system::error_code ec,
                std::shared_ptr<const diagnostics> diag,
                boost::intrusive_ptr<const detail::token_snapshot> token) noexcept
            : self_(self)
            , ec_(ec)
            , diag_(std::move(diag))
            , token_(std::move(token))
        {
        }

        invoker(invoker&& other) noexcept
            : self_(std::exchange(other.self_, nullptr))
            , ec_(other.ec_)
            , diag_(std::move(other.diag_))
            , token_(std::move(other.token_))
        {
        }

        invoker& operator=(invoker&&) = delete;

        ~invoker()
        {
            if (self_ != nullptr) {
                self_->destroy();
            }
        }

        void operator()()
        {
            std::exchange(self_, nullptr)->invoke(ec_, std::move(diag_), std::move(token_));
        }

    private:
        waiter* self_;
        boost::system::error_code ec_;
        std::shared_ptr<const diagnostics> diag_;
        boost::intrusive_ptr<const detail::token_snapshot> token_;
    };

public:
    waiter(Handler handler, const std::shared_ptr<detail::token_source_impl>& impl,
           diagnostics* diag_out)
        : handler_(std::move(handler))
        , work_(boost::asio::prefer(
              boost::asio::get_associated_executor(handler_, impl->get_executor()),
              boost::asio::execution::outstanding_work.tracked))
        , diag_out_(diag_out)
    {
        auto slot = boost::asio::get_associated_cancellation_slot(handler_);
        if (slot.is_connected()) {
            slot.template emplace<cancel_handler>(cancel_handler{impl, this});
        }
    }

    void complete(boost::system::error_code ec, std::shared_ptr<const diagnostics> diag,
                  boost::intrusive_ptr<const detail::token_snapshot> token) override
    {
        // Posting, not dispatching: the handler never runs inside the completing call,
        // which may be another caller's stack or a lock-free fast path.
        boost::asio::post(work_, invoker(this, ec, std::move(diag), std::move(token)));
    }

    void complete_in_batch(boost::system::error_code ec,
                           const std::shared_ptr<const diagnostics>& diag,
                           const boost::intrusive_ptr<const detail::token_snapshot>& token) override
    {
        boost::asio::dispatch(work_, invoker(this, ec, diag, token));
    }

    void destroy() noexcept override
    {
        clear_cancellation_slot();
        delete this;
    }

private:
    void clear_cancellation_slot() noexcept
    {
        auto slot = boost::asio::get_associated_cancellation_slot(handler_);
        if (slot.is_connected()) {
            slot.clear();
        }
    }

    void invoke(boost::system::error_code ec, std::shared_ptr<const diagnostics> diag,
                boost::intrusive_ptr<const detail::token_snapshot> token)
    {
        clear_cancellation_slot();
        if (diag_out_ != nullptr) {
            *diag_out_ = diag ? *diag : diagnostics{};
        }
        Handler handler = std::move(handler_);
        delete this;
        if constexpr (Snapshot) {
            std::move(handler)(ec, std::move(diag), std::move(token));
        } else {
            std::move(handler)(ec, access_token(std::move(token)));
        }
    }

    Handler handler_;
    work_executor work_;
    diagnostics* diag_out_;
};

} // namespace stampede

#endif
