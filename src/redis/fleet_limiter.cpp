#include "../detail/spawn_operation.hpp"
#include "scripts.hpp"

#include <stampede/error.hpp>
#include <stampede/rate_limiter.hpp>
#include <stampede/redis/error.hpp>
#include <stampede/redis/fleet_limiter.hpp>


namespace stampede::redis {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using result = std::tuple<error_code, limit_decision>;

constexpr std::int64_t microseconds_per_millisecond = 1000;

asio::awaitable<result> try_acquire(connection& conn, std::string key, std::int64_t increment_us,
                                    std::int64_t tolerance_us)
{
    std::vector<std::string> args{std::to_string(increment_us), std::to_string(tolerance_us)};
    auto op = detail::run_script(conn, detail::gcra_script(), {std::move(key)}, std::move(args));
    auto [ec, answer] = co_await std::move(op);
    if (ec) {
        co_return result(ec, limit_decision{});
    }
    const auto& items = answer.elements();
    if (items.size() != 2 || items[0].type() != reply::kind::integer ||
        items[1].type() != reply::kind::integer) {
        co_return result(errc::unexpected_reply, limit_decision{});
    }

    limit_decision decision;
    decision.allowed = items[0].integer() == 1;
    if (!decision.allowed) {
        const std::int64_t wait_us = std::max<std::int64_t>(items[1].integer(), 1);
        decision.retry_after = std::chrono::milliseconds(
            (wait_us + microseconds_per_millisecond - 1) / microseconds_per_millisecond);
    }
    co_return result(error_code(), decision);
}

const rate_limit_settings& validated(const rate_limit_settings& settings)
{
    if (std::string problem = validate(settings); !problem.empty()) {
        throw boost::system::system_error(make_error_code(client_errc::invalid_settings), problem);
    }
    return settings;
}

} // namespace

fleet_limiter::fleet_limiter(connection& conn, std::string key, const rate_limit_settings& settings)
    : conn_(conn)
    , key_(std::move(key))
    , settings_(validated(settings))
{}

fleet_limiter::fleet_limiter(std::shared_ptr<redis_token_store> store, std::string key,
                             const rate_limit_settings& settings)
    : store_(std::move(store))
    , conn_(store_->commands())
    , key_(std::move(key))
    , settings_(validated(settings))
{}

void fleet_limiter::do_try_acquire(try_acquire_handler handler)
{
    detail::start_try_acquire(conn_, key_, settings_, std::move(handler));
}

namespace detail {

void start_try_acquire(connection& conn, const std::string& key,
                       const rate_limit_settings& settings, limit_handler handler)
{
    const std::int64_t increment_us =
        settings.refill_interval.count() * microseconds_per_millisecond;
    const std::int64_t tolerance_us =
        static_cast<std::int64_t>(settings.capacity - 1) * increment_us;
    const auto ex = conn.get_executor();
    stampede::detail::spawn_operation(
        nullptr, ex, try_acquire(conn, key, increment_us, tolerance_us), std::move(handler), ex);
}

} // namespace detail
} // namespace stampede::redis
