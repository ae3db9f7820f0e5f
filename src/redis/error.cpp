#include <stampede/redis/error.hpp>

#include <string>

namespace stampede::redis {
namespace {

std::string message_of(errc e)
{
    switch (e) {
    case errc::invalid_url:
        return "invalid Redis URL (the diagnostics name the part and the fix)";
    case errc::invalid_config:
        return "invalid Redis configuration";
    case errc::connect_timeout:
        return "connecting to Redis timed out (redis::config::connect_timeout)";
    case errc::command_timeout:
        return "the Redis command timed out (redis::config::command_timeout); the "
               "connection was closed";
    case errc::auth_failed:
        return "Redis rejected AUTH: wrong user name or password, or the user is disabled";
    case errc::auth_required:
        return "Redis requires a password; put it in the URL (redis://user:password@host)";
    case errc::select_failed:
        return "Redis rejected SELECT: the database index is out of range";
    case errc::certificate_verification_failed:
        return "the Redis server certificate failed verification (untrusted issuer, expired "
               "or wrong host); check redis::config::ca_file";
    case errc::server_error:
        return "Redis returned an error reply";
    case errc::protocol_error:
        return "the Redis reply is not valid RESP";
    case errc::unexpected_reply:
        return "the Redis reply has an unexpected type";
    case errc::not_connected:
        return "not connected to Redis: the reconnect backoff has not elapsed yet";
    case errc::malformed_entry:
        return "the stored token entry is malformed";
    case errc::unsupported_entry_version:
        return "the stored token entry has an unsupported format version";
    case errc::entry_authentication_failed:
        return "the stored token entry failed authentication: it was written with another "
               "client secret or cache key, or it was modified";
    case errc::reply_too_large:
        return "the Redis reply exceeds redis::config::max_reply_bytes; the connection was "
               "closed (raise the limit if replies this large are expected)";
    }
    return "unknown stampede.redis error " + std::to_string(static_cast<int>(e));
}

class redis_category_impl final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "stampede.redis"; }

    std::string message(int ev) const override { return message_of(static_cast<errc>(ev)); }
};

} // namespace

const boost::system::error_category& redis_category() noexcept
{
    static const redis_category_impl instance;
    return instance;
}

} // namespace stampede::redis
