#include "../detail/spawn_operation.hpp"
#include "scripts.hpp"

#include <stampede/redis/error.hpp>
#include <stampede/redis/lease.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace stampede::redis::detail {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using result = std::tuple<error_code, bool>;

asio::awaitable<result> acquire(connection& conn, std::string key, std::string owner,
                                std::chrono::milliseconds ttl)
{
    command cmd{"SET", key, owner, "NX", "PX"};
    cmd.arg(static_cast<std::int64_t>(ttl.count()));
    auto op = conn.async_execute(std::move(cmd), asio::as_tuple(asio::use_awaitable));
    auto [ec, answer] = co_await std::move(op);
    if (ec) {
        co_return result(ec, false);
    }
    if (answer.is_nil()) {
        co_return result(error_code(), false);
    }
    if (answer.type() == reply::kind::status && answer.text() == "OK") {
        co_return result(error_code(), true);
    }
    co_return result(errc::unexpected_reply, false);
}

// Runs a compare-and-something script whose reply is the integer 0 or 1.
asio::awaitable<result> run_compare(connection& conn, const lua_script& script, std::string key,
                                    std::vector<std::string> args)
{
    auto op = run_script(conn, script, {std::move(key)}, std::move(args));
    auto [ec, answer] = co_await std::move(op);
    if (ec) {
        co_return result(ec, false);
    }
    if (answer.type() != reply::kind::integer) {
        co_return result(errc::unexpected_reply, false);
    }
    co_return result(error_code(), answer.integer() == 1);
}

} // namespace

void start_acquire_lease(connection& conn, std::string key, std::string owner,
                         std::chrono::milliseconds ttl, lease_handler handler)
{
    const auto ex = conn.get_executor();
    stampede::detail::spawn_operation(
        nullptr, ex, acquire(conn, std::move(key), std::move(owner), ttl), std::move(handler), ex);
}

void start_release_lease(connection& conn, std::string key, std::string owner, std::string channel,
                         lease_handler handler)
{
    const auto ex = conn.get_executor();
    std::vector<std::string> args{std::move(owner), std::move(channel)};
    stampede::detail::spawn_operation(
        nullptr, ex,
        run_compare(conn, compare_and_delete_script(), std::move(key), std::move(args)),
        std::move(handler), ex);
}

void start_extend_lease(connection& conn, std::string key, std::string owner,
                        std::chrono::milliseconds ttl, lease_handler handler)
{
    const auto ex = conn.get_executor();
    std::vector<std::string> args{std::move(owner), std::to_string(ttl.count())};
    stampede::detail::spawn_operation(
        nullptr, ex,
        run_compare(conn, compare_and_pexpire_script(), std::move(key), std::move(args)),
        std::move(handler), ex);
}

} // namespace stampede::redis::detail
