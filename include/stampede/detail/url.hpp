#ifndef STAMPEDE_DETAIL_URL_HPP
#define STAMPEDE_DETAIL_URL_HPP

#include <stampede/diagnostics.hpp>
#include <stampede/settings.hpp>

#include <boost/system/error_code.hpp>

#include <string>
#include <string_view>

namespace stampede::detail {

/// An absolute http(s) URL split into what a connection needs.
struct endpoint_url {
    bool tls = true;
    std::string host;   ///< Host name or IP literal, without brackets.
    std::string port;   ///< Explicit port, or "443" / "80".
    std::string target; ///< Path and query, at least "/".

    /// Returns whether the host is 127.0.0.0/8, ::1 or `localhost`.
    bool is_loopback() const noexcept;

    /// Returns "host:port" with IPv6 literals in brackets, for messages and Host headers.
    std::string authority() const;

    friend bool operator==(const endpoint_url&, const endpoint_url&) = default;
};

/// Parses `url` with Boost.URL. Rejects (with `client_errc::invalid_settings` or
/// `client_errc::insecure_url` and a message naming `field`) anything but an absolute
/// `https://` URL, or `http://` to a loopback host unless `allow_insecure_http` is set,
/// with a host, no user info and no fragment.
boost::system::error_code parse_endpoint_url(std::string_view url, std::string_view field,
                                             const transport_settings& transport,
                                             endpoint_url& out, diagnostics& diag);

} // namespace stampede::detail

#endif
