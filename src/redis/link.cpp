#include "link.hpp"

#include <stampede/redis/error.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>

#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>


namespace stampede::redis::detail {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

bool starts_with(const std::string& text, std::string_view prefix)
{
    return text.compare(0, prefix.size(), prefix) == 0;
}

bool is_ip_literal(const std::string& host)
{
    error_code ec;
    (void)asio::ip::make_address(host, ec);
    return !ec;
}

} // namespace

asio::ssl::context make_tls_context(const config& cfg)
{
    asio::ssl::context context(asio::ssl::context::tls_client);
    context.set_verify_mode(asio::ssl::verify_peer);
    error_code ec;
    if (!cfg.ca_file.empty()) {
        context.load_verify_file(cfg.ca_file, ec);
        if (ec) {
            throw boost::system::system_error(errc::invalid_config,
                                              "cannot load redis::config::ca_file '" + cfg.ca_file +
                                                  "': " + ec.message());
        }
    } else if (!cfg.ca_directory.empty()) {
        context.add_verify_path(cfg.ca_directory, ec);
        if (ec) {
            throw boost::system::system_error(errc::invalid_config,
                                              "cannot use redis::config::ca_directory '" +
                                                  cfg.ca_directory + "': " + ec.message());
        }
    } else {
        context.set_default_verify_paths(ec);
        if (ec) {
            throw boost::system::system_error(
                errc::invalid_config, "cannot load the system certificate store: " + ec.message());
        }
    }
    return context;
}

std::string limit_note(error_code ec, const config& cfg)
{
    if (ec != errc::reply_too_large) {
        return {};
    }
    return " (limit " + std::to_string(cfg.max_reply_bytes) + " bytes)";
}

link::link(const asio::any_io_executor& ex, asio::ssl::context* tls,
           std::size_t max_reply_bytes)
    : resolver_(ex)
    , reader_(max_reply_bytes)
{
    if (tls != nullptr) {
        tls_.emplace(ex, *tls);
    } else {
        tcp_.emplace(ex);
    }
}

link::~link() = default;

tcp::socket& link::socket() noexcept
{
    return tls_ ? tls_->next_layer() : *tcp_;
}

void link::close() noexcept
{
    resolver_.cancel();
    error_code ignored;
    socket().shutdown(tcp::socket::shutdown_both, ignored);
    socket().close(ignored);
}

asio::awaitable<error_code> link::open(const config& cfg, std::string& detail)
{
    // The port string is a named local, because GCC 12 may byte-copy a temporary that
    // appears inside a co_await expression.
    const std::string port = std::to_string(cfg.port);
    auto [resolve_ec, endpoints] =
        co_await resolver_.async_resolve(cfg.host, port, asio::as_tuple(asio::use_awaitable));
    if (resolve_ec) {
        detail = "cannot resolve '" + cfg.host + "': " + resolve_ec.message();
        co_return resolve_ec;
    }

    auto [connect_ec, endpoint] =
        co_await asio::async_connect(socket(), endpoints, asio::as_tuple(asio::use_awaitable));
    if (connect_ec) {
        detail = "cannot connect to " + cfg.host + ":" + std::to_string(cfg.port) + ": " +
                 connect_ec.message();
        co_return connect_ec;
    }
    // Keepalive lets an idle subscriber connection notice a peer that vanished without
    // closing it, after the kernel's keepalive time (2 hours by default on Linux).
    error_code ignored;
    socket().set_option(tcp::no_delay(true), ignored);
    socket().set_option(asio::socket_base::keep_alive(true), ignored);

    if (tls_) {
        if (error_code ec = co_await handshake(cfg, detail)) {
            co_return ec;
        }
    }
    co_return co_await authenticate(cfg, detail);
}

asio::awaitable<error_code> link::handshake(const config& cfg, std::string& detail)
{
    // SNI takes host names only, never IP literals (RFC 6066, section 3).
    if (!is_ip_literal(cfg.host) &&
        SSL_set_tlsext_host_name(tls_->native_handle(), cfg.host.c_str()) != 1) {
        detail = "cannot set the TLS server name '" + cfg.host + "'";
        co_return error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category());
    }
    tls_->set_verify_callback(asio::ssl::host_name_verification(cfg.host));

    auto [ec] = co_await tls_->async_handshake(asio::ssl::stream_base::client,
                                               asio::as_tuple(asio::use_awaitable));
    if (!ec) {
        co_return ec;
    }
    const long verify = SSL_get_verify_result(tls_->native_handle());
    if (verify != X509_V_OK) {
        detail = std::string("the server certificate failed verification: ") +
                 X509_verify_cert_error_string(verify);
        co_return errc::certificate_verification_failed;
    }
    detail = "the TLS handshake failed: " + ec.message();
    co_return ec;
}

asio::awaitable<error_code> link::authenticate(const config& cfg, std::string& detail)
{
    reply answer;
    if (!cfg.password.empty()) {
        command auth{"AUTH"};
        if (!cfg.username.empty()) {
            auth.arg(cfg.username);
        }
        auth.arg(cfg.password.reveal());
        auth.mark_sensitive();
        if (error_code ec = co_await exchange(auth, answer)) {
            detail = "AUTH failed: " + ec.message();
            co_return ec;
        }
        if (answer.is_error()) {
            // The server's text names the reason and never echoes the password.
            detail = "AUTH was rejected: " + answer.text();
            co_return errc::auth_failed;
        }
    }

    // SELECT also shows whether the server wants a password; PING does when no SELECT
    // is needed.
    command probe =
        cfg.database != 0 ? command{"SELECT"}.arg(std::int64_t{cfg.database}) : command{"PING"};
    if (error_code ec = co_await exchange(probe, answer)) {
        detail = probe.args().front() + " failed: " + ec.message();
        co_return ec;
    }
    if (answer.is_error()) {
        if (starts_with(answer.text(), "NOAUTH")) {
            detail = "the server requires AUTH: " + answer.text();
            co_return errc::auth_required;
        }
        detail = probe.args().front() + " was rejected: " + answer.text();
        co_return cfg.database != 0 ? errc::select_failed : errc::server_error;
    }
    co_return error_code{};
}

asio::awaitable<error_code> link::write(std::string_view bytes)
{
    auto buffer = asio::buffer(bytes.data(), bytes.size());
    if (tls_) {
        auto [ec, n] =
            co_await asio::async_write(*tls_, buffer, asio::as_tuple(asio::use_awaitable));
        co_return ec;
    }
    auto [ec, n] = co_await asio::async_write(*tcp_, buffer, asio::as_tuple(asio::use_awaitable));
    co_return ec;
}

asio::awaitable<error_code> link::read(reply& out)
{
    for (;;) {
        bool complete = false;
        if (error_code ec = reader_.next(out, complete); ec || complete) {
            co_return ec;
        }

        auto buffer = asio::buffer(buffer_);
        std::size_t n = 0;
        error_code ec;
        if (tls_) {
            std::tie(ec, n) =
                co_await tls_->async_read_some(buffer, asio::as_tuple(asio::use_awaitable));
        } else {
            std::tie(ec, n) =
                co_await tcp_->async_read_some(buffer, asio::as_tuple(asio::use_awaitable));
        }
        if (ec) {
            co_return ec;
        }
        if (error_code feed_ec = reader_.feed(std::string_view(buffer_.data(), n))) {
            co_return feed_ec;
        }
    }
}

asio::awaitable<error_code> link::exchange(const command& cmd, reply& out)
{
    std::string bytes = cmd.encode();
    error_code ec = co_await write(bytes);
    if (cmd.sensitive()) {
        OPENSSL_cleanse(bytes.data(), bytes.size());
    }
    if (ec) {
        co_return ec;
    }
    co_return co_await read(out);
}

} // namespace stampede::redis::detail
