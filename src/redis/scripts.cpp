#include "scripts.hpp"

#include <stampede/redis/error.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/evp.h>

#include <stdexcept>

namespace stampede::redis::detail {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;

std::string sha1_hex(std::string_view text)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (EVP_Digest(text.data(), text.size(), digest, &size, EVP_sha1(), nullptr) != 1) {
        throw std::runtime_error("SHA-1 is not available in OpenSSL");
    }
    constexpr std::string_view digits = "0123456789abcdef";
    std::string hex;
    for (unsigned int i = 0; i < size; ++i) {
        hex.push_back(digits[digest[i] >> 4]);
        hex.push_back(digits[digest[i] & 0x0f]);
    }
    return hex;
}

lua_script make_script(std::string_view source)
{
    return lua_script{source, sha1_hex(source)};
}

constexpr std::string_view compare_and_delete_source = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= nil and ARGV[2] ~= '' then
    redis.call('PUBLISH', ARGV[2], 'released')
end
return 1
)lua";

constexpr std::string_view compare_and_pexpire_source = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
)lua";

constexpr std::string_view put_and_publish_source = R"lua(
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], 'stored')
return 1
)lua";

// GCRA with the state in one key: the theoretical arrival time (tat) in microseconds of
// the server's clock, so the processes' clocks do not matter. Lua 5.1 numbers are
// doubles, exact for integers below 2^53 (285 years of microseconds).
//
// The script never stores a tat beyond now + tolerance + increment. A larger one means
// that the server's clock went back or that something else wrote the key, and it would
// make every process wait that long for a permit, so the script starts again from now.
// NOTE: a process with a smaller capacity than another one that shares the key takes
// that one's legitimate tat for such a value and resets it, which lets a burst through.
// Every process that shares the key must use the same rate_limit.
constexpr std::string_view gcra_source = R"lua(
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local increment = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now or tat > now + tolerance + increment then
    tat = now
end
local allow_at = tat - tolerance
if now < allow_at then
    return {0, allow_at - now}
end
local new_tat = tat + increment
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
return {1, 0}
)lua";

bool is_noscript(const reply& r)
{
    return r.is_error() && r.text().compare(0, 8, "NOSCRIPT") == 0;
}

command make_eval(std::string_view verb, std::string_view script_ref,
                  const std::vector<std::string>& keys, const std::vector<std::string>& args)
{
    command cmd{verb, script_ref};
    cmd.arg(static_cast<std::int64_t>(keys.size()));
    for (const std::string& key : keys) {
        cmd.arg(key);
    }
    for (const std::string& value : args) {
        cmd.arg(value);
    }
    return cmd;
}

} // namespace

const lua_script& compare_and_delete_script()
{
    static const lua_script script = make_script(compare_and_delete_source);
    return script;
}

const lua_script& compare_and_pexpire_script()
{
    static const lua_script script = make_script(compare_and_pexpire_source);
    return script;
}

const lua_script& put_and_publish_script()
{
    static const lua_script script = make_script(put_and_publish_source);
    return script;
}

const lua_script& gcra_script()
{
    static const lua_script script = make_script(gcra_source);
    return script;
}

asio::awaitable<std::tuple<error_code, reply>> run_script(connection& conn,
                                                          const lua_script& script,
                                                          std::vector<std::string> keys,
                                                          std::vector<std::string> args)
{
    command by_sha = make_eval("EVALSHA", script.sha1, keys, args);
    // Named awaitables: GCC 12 may byte-copy a temporary inside a co_await expression.
    auto first = conn.async_execute(std::move(by_sha), asio::as_tuple(asio::use_awaitable));
    auto [ec, answer] = co_await std::move(first);
    if (ec != errc::server_error || !is_noscript(answer)) {
        co_return std::tuple<error_code, reply>(ec, std::move(answer));
    }

    // The server has not cached the script yet (first use, or after a restart).
    command by_source = make_eval("EVAL", script.source, keys, args);
    auto second = conn.async_execute(std::move(by_source), asio::as_tuple(asio::use_awaitable));
    auto [eval_ec, eval_answer] = co_await std::move(second);
    co_return std::tuple<error_code, reply>(eval_ec, std::move(eval_answer));
}

} // namespace stampede::redis::detail
