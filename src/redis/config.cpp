#include <stampede/backoff.hpp>
#include <stampede/redis/config.hpp>
#include <stampede/redis/error.hpp>

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include <charconv>
#include <limits>
#include <ostream>

namespace stampede::redis {
namespace {

using boost::system::error_code;

error_code fail(diagnostics& diag, std::string message)
{
    diag.set_client_message(std::move(message));
    return errc::invalid_url;
}

// Parses a non-negative decimal without sign or spaces; false when it does not fit `max`.
bool parse_decimal(std::string_view text, long long max, long long& value)
{
    if (text.empty() || text.size() > 18) {
        return false;
    }
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc{} && end == text.data() + text.size() && value >= 0 && value <= max;
}

} // namespace

error_code parse_url(std::string_view url, config& out, diagnostics& diag)
{
    diag.clear();
    auto parsed = boost::urls::parse_uri(url);
    if (!parsed) {
        // The text is not echoed, because it may contain the password.
        return fail(diag, "the Redis URL is not an absolute URL; expected "
                          "redis://[[user]:password@]host[:port][/db]");
    }
    const boost::urls::url_view& view = *parsed;

    config result = out;
    const std::string scheme = view.scheme();
    if (scheme == "redis") {
        result.use_tls = false;
    } else if (scheme == "rediss") {
        result.use_tls = true;
    } else {
        return fail(diag,
                    "the Redis URL has scheme '" + scheme + "'; use redis:// or rediss:// (TLS)");
    }

    if (!view.has_authority() || view.host().empty()) {
        return fail(diag, "the Redis URL has no host; expected redis://host[:port][/db]");
    }
    if (view.has_query()) {
        return fail(diag, "the Redis URL has a query string, which is not supported; remove "
                          "the part after '?'");
    }
    if (view.has_fragment()) {
        return fail(diag, "the Redis URL has a fragment; remove the part after '#'");
    }

    if (view.host_type() == boost::urls::host_type::ipv6) {
        result.host = view.host_address();
    } else if (view.host_type() == boost::urls::host_type::ipvfuture) {
        return fail(diag, "the Redis URL has an IPvFuture host, which is not supported");
    } else {
        result.host = view.host();
    }

    if (view.has_port()) {
        long long port = 0;
        if (!parse_decimal(view.port(), 65535, port) || port == 0) {
            return fail(diag, "the Redis URL has an invalid port '" + std::string(view.port()) +
                                  "'; use a number from 1 to 65535");
        }
        result.port = static_cast<std::uint16_t>(port);
    } else {
        result.port = 6379;
    }

    result.username.clear();
    result.password = secret_string();
    if (view.has_userinfo()) {
        result.username = view.user();
        if (view.has_password()) {
            const std::string password = view.password();
            result.password = secret_string(password);
        }
        if (result.password.empty()) {
            return fail(diag, "the Redis URL names a user but no password; use "
                              "redis://user:password@host or redis://:password@host");
        }
    }

    // The path is empty, "/" or "/<db>".
    std::string_view path = view.encoded_path();
    if (!path.empty() && path != "/") {
        long long db = 0;
        if (!parse_decimal(path.substr(1), std::numeric_limits<int>::max(), db)) {
            return fail(diag, "the Redis URL path '" + std::string(path) +
                                  "' is not a database index; use /0, /1 and so on");
        }
        result.database = static_cast<int>(db);
    } else {
        result.database = 0;
    }

    if (std::string problem = validate(result); !problem.empty()) {
        return fail(diag, "the Redis URL gives an invalid configuration: " + problem);
    }
    out = std::move(result);
    return {};
}

std::string validate(const config& cfg)
{
    if (cfg.host.empty()) {
        return "invalid redis::config::host: empty; set a host name or IP address";
    }
    if (cfg.port == 0) {
        return "invalid redis::config::port 0: use 1 to 65535";
    }
    if (cfg.database < 0) {
        return "invalid redis::config::database " + std::to_string(cfg.database) +
               ": must be 0 or more";
    }
    if (!cfg.username.empty() && cfg.password.empty()) {
        return "invalid redis::config: username '" + cfg.username +
               "' is set but password is empty; set both or neither";
    }
    if (cfg.connect_timeout.count() <= 0) {
        return "invalid redis::config::connect_timeout " +
               std::to_string(cfg.connect_timeout.count()) + " ms: must be positive";
    }
    if (cfg.command_timeout.count() <= 0) {
        return "invalid redis::config::command_timeout " +
               std::to_string(cfg.command_timeout.count()) + " ms: must be positive";
    }
    if (cfg.max_reply_bytes == 0) {
        return "invalid redis::config::max_reply_bytes 0: must be positive (the default is "
               "1048576)";
    }
    if (std::string problem = validate(cfg.reconnect); !problem.empty()) {
        return "invalid redis::config::reconnect: " + problem;
    }
    return {};
}

std::ostream& operator<<(std::ostream& os, const config& cfg)
{
    os << (cfg.use_tls ? "rediss://" : "redis://");
    if (!cfg.password.empty()) {
        os << cfg.username << ":[redacted]@";
    }
    if (cfg.host.find(':') != std::string::npos) {
        os << '[' << cfg.host << ']';
    } else {
        os << cfg.host;
    }
    return os << ':' << cfg.port << '/' << cfg.database;
}

} // namespace stampede::redis
