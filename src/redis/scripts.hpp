// The Lua scripts that make leases, the fleet limiter and the token store atomic, and the
// EVALSHA-then-EVAL call that runs them.

#ifndef STAMPEDE_SRC_REDIS_SCRIPTS_HPP
#define STAMPEDE_SRC_REDIS_SCRIPTS_HPP

#include <stampede/redis/connection.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace stampede::redis::detail {

struct lua_script {
    std::string_view source;
    std::string sha1; // hex, as EVALSHA takes it
};

/// KEYS[1] lease or entry key, ARGV[1] expected value, ARGV[2] optional channel. Deletes
/// the key if it contains the expected value and then publishes to the channel, if given.
/// Returns 1 when the key was deleted, else 0.
const lua_script& compare_and_delete_script();

/// KEYS[1] lease key, ARGV[1] owner, ARGV[2] new time to live in ms. Sets the time to live
/// if the key contains the owner. Returns 1 when it did, else 0.
const lua_script& compare_and_pexpire_script();

/// KEYS[1] entry key, ARGV[1] entry, ARGV[2] time to live in ms, ARGV[3] channel. Stores
/// the entry and publishes to the channel. Returns 1.
const lua_script& put_and_publish_script();

/// KEYS[1] limiter key, ARGV[1] increment in microseconds, ARGV[2] tolerance in
/// microseconds. GCRA on the server's clock; returns {1, 0} when a request is allowed,
/// else {0, microseconds until the next one is}.
const lua_script& gcra_script();

/// Runs `script` with EVALSHA, and with EVAL when the server does not have it cached.
boost::asio::awaitable<std::tuple<boost::system::error_code, reply>>
run_script(connection& conn, const lua_script& script, std::vector<std::string> keys,
           std::vector<std::string> args);

} // namespace stampede::redis::detail

#endif
