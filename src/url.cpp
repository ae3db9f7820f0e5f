#include <stampede/detail/url.hpp>
#include <stampede/error.hpp>

#include <boost/url/ipv4_address.hpp>
#include <boost/url/ipv6_address.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>

namespace stampede::detail {

namespace {

namespace urls = boost::urls;

constexpr std::size_t max_shown_url_chars = 200;

bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

std::string to_lower(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return out;
}

// Replaces control characters and cuts long input, so a message quoting user input stays
// on one line.
std::string printable(std::string_view text) {
    std::string out;
    for (char c : text.substr(0, max_shown_url_chars)) {
        const auto byte = static_cast<unsigned char>(c);
        out += (byte < 0x20 || byte == 0x7f) ? '?' : c;
    }
    if (text.size() > max_shown_url_chars) {
        out += "...";
    }
    return out;
}

// Returns `url` as it may appear in a message: any user info (which may hold a password)
// is replaced by "[redacted]". Unparsable input is masked by position: everything
// between "//" and the last '@' before the path.
std::string shown_url(std::string_view url) {
    const auto parsed = urls::parse_uri_reference(url);
    if (parsed && parsed->has_userinfo()) {
        urls::url copy(*parsed);
        copy.remove_userinfo();
        std::string text(copy.buffer());
        const auto authority = text.find("//");
        text.insert(authority + 2, "[redacted]@");
        return printable(text);
    }
    if (parsed) {
        return printable(url);
    }

    const auto authority_start = url.find("//");
    if (authority_start == std::string_view::npos) {
        return printable(url);
    }
    const auto host_start = authority_start + 2;

    // With no path, npos - host_start still reaches the end of the input.
    const auto authority_end = url.find_first_of("/?#", host_start);
    const auto authority = url.substr(host_start, authority_end - host_start);
    const auto at = authority.rfind('@');
    if (at == std::string_view::npos) {
        return printable(url);
    }
    std::string text(url.substr(0, host_start));
    text += "[redacted]";
    text += url.substr(host_start + at);
    return printable(text);
}

boost::system::error_code fail(client_errc code, std::string_view field, std::string_view url,
                               std::string_view problem, diagnostics& diag) {
    std::string message(field);
    message += " \"";
    message += shown_url(url);
    message += "\" ";
    message += problem;
    diag.set_client_message(std::move(message));
    return make_error_code(code);
}

bool is_dns_name(std::string_view name) noexcept {
    return std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
    });
}

// Parses a decimal port in 1..65535, with leading zeros allowed.
bool parse_port(std::string_view text, std::uint16_t& out) noexcept {
    unsigned value = 0;
    const auto* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec != std::errc{} || ptr != end || value == 0 || value > 65535) {
        return false;
    }
    out = static_cast<std::uint16_t>(value);
    return true;
}

} // namespace

bool endpoint_url::is_loopback() const noexcept {
    if (iequals(host, "localhost")) {
        return true;
    }

    const auto v4 = urls::parse_ipv4_address(host);
    if (v4) {
        return v4->is_loopback();
    }

    const auto v6 = urls::parse_ipv6_address(host);
    if (!v6) {
        return false;
    }
    if (v6->is_loopback()) {
        return true;
    }

    // An IPv4-mapped address (::ffff:127.0.0.1) reaches the IPv4 loopback network.
    if (v6->is_v4_mapped()) {
        const auto bytes = v6->to_bytes();
        return bytes[12] == 127;
    }
    return false;
}

std::string endpoint_url::authority() const {
    const bool bracketed = host.find(':') != std::string::npos;
    std::string out;
    out.reserve(host.size() + port.size() + 3);
    if (bracketed) {
        out += '[';
    }
    out += host;
    if (bracketed) {
        out += ']';
    }
    out += ':';
    out += port;
    return out;
}

boost::system::error_code parse_endpoint_url(std::string_view url, std::string_view field,
                                             const transport_settings& transport, endpoint_url& out,
                                             diagnostics& diag) {
    if (url.empty()) {
        std::string message(field);
        message += " is empty; set it to an absolute https:// URL";
        diag.set_client_message(std::move(message));
        return make_error_code(client_errc::invalid_settings);
    }

    const auto parsed = urls::parse_uri(url);
    if (!parsed) {
        if (urls::parse_relative_ref(url)) {
            return fail(client_errc::invalid_settings, field, url,
                        "is a relative URL; use an absolute URL such as "
                        "https://host/path",
                        diag);
        }
        return fail(client_errc::invalid_settings, field, url,
                    "is not a valid URL; percent-encode spaces and other reserved characters, "
                    "and use an absolute URL such as https://host/path",
                    diag);
    }
    const urls::url_view& u = *parsed;

    const auto scheme = u.scheme_id();
    if (scheme != urls::scheme::https && scheme != urls::scheme::http) {
        return fail(client_errc::invalid_settings, field, url,
                    "uses the scheme \"" + printable(u.scheme()) + "\"; use https", diag);
    }
    if (u.has_userinfo()) {
        return fail(client_errc::invalid_settings, field, url,
                    "contains user info; remove it and pass credentials as client_id and "
                    "client_secret",
                    diag);
    }
    if (u.has_fragment()) {
        return fail(client_errc::invalid_settings, field, url,
                    "contains a fragment (the part after '#'); remove it", diag);
    }

    endpoint_url result;
    result.tls = scheme == urls::scheme::https;

    switch (u.host_type()) {
    case urls::host_type::ipv4:
    case urls::host_type::ipv6:
        result.host = to_lower(u.encoded_host_address());
        break;
    case urls::host_type::name:
        if (!is_dns_name(u.encoded_host_address())) {
            return fail(client_errc::invalid_settings, field, url,
                        "has a host name with characters not allowed in DNS names; use the "
                        "ASCII (xn--) form of internationalized names",
                        diag);
        }
        result.host = to_lower(u.encoded_host_address());
        break;
    case urls::host_type::ipvfuture:
        return fail(client_errc::invalid_settings, field, url,
                    "uses an IPvFuture address; use a host name, IPv4 or IPv6 address", diag);
    case urls::host_type::none:
        break;
    }
    if (result.host.empty()) {
        return fail(client_errc::invalid_settings, field, url,
                    "has no host; use an absolute URL such as https://host/path", diag);
    }

    if (u.has_port() && !u.port().empty()) {
        std::uint16_t port = 0;
        if (!parse_port(u.port(), port)) {
            return fail(client_errc::invalid_settings, field, url,
                        "has an invalid port; use a number from 1 to 65535", diag);
        }
        result.port = std::to_string(port);
    } else {
        result.port = result.tls ? "443" : "80";
    }

    result.target = u.encoded_target();
    if (result.target.empty() || result.target.front() != '/') {
        result.target.insert(0, "/");
    }

    if (!result.tls && !result.is_loopback() && !transport.allow_insecure_http) {
        return fail(client_errc::insecure_url, field, url,
                    "uses plain http to a non-loopback host; use https, or set "
                    "transport.allow_insecure_http",
                    diag);
    }

    out = std::move(result);
    return {};
}

} // namespace stampede::detail
