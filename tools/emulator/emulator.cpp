// The network side of the emulator: certificate generation, the TLS or plain TCP
// listener, HTTP/1.1 keep-alive connections, and the delivery of faulty replies.
// One io_context on one thread runs every connection as a coroutine.

#include "emulator.hpp"
#include "emulator_service.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>

namespace stampede::emulator {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using detail::steady_clock;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Request size limits. Larger requests get 431 (header) or 413 (body).
constexpr std::size_t header_limit = 8 * 1024;
constexpr std::size_t body_limit = 64 * 1024;
constexpr std::size_t read_chunk = 4096;

// After an error response the server stops sending and discards what the client still
// sends, for at most this long, so that the client reads the response before the close.
constexpr auto discard_time = std::chrono::seconds(1);

// Bound on stop() waiting for connections to finish before it stops the io_context.
constexpr auto stop_grace = std::chrono::seconds(5);

std::string_view to_std(beast::string_view text)
{
    return {text.data(), text.size()};
}

// ---------------------------------------------------------------------------
// Self-signed certificate

struct key_and_certificate {
    std::string certificate_pem;
    std::string private_key_pem;
};

struct openssl_free {
    void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
    void operator()(X509* certificate) const { X509_free(certificate); }
    void operator()(BIO* bio) const { BIO_free(bio); }
    void operator()(BIGNUM* number) const { BN_free(number); }
    void operator()(X509_EXTENSION* extension) const { X509_EXTENSION_free(extension); }
};

template <class T>
using openssl_ptr = std::unique_ptr<T, openssl_free>;

[[noreturn]] void throw_openssl_error(std::string_view operation)
{
    char text[256] = "no OpenSSL error queued";
    if (unsigned long code = ERR_get_error(); code != 0) {
        ERR_error_string_n(code, text, sizeof text);
    }
    throw std::runtime_error("generating the emulator certificate failed in " +
                             std::string(operation) + ": " + text);
}

void add_extension(X509* certificate, int nid, const std::string& value)
{
    X509V3_CTX context;
    X509V3_set_ctx_nodb(&context);
    X509V3_set_ctx(&context, certificate, certificate, nullptr, nullptr, 0);
    openssl_ptr<X509_EXTENSION> extension(
        X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str()));
    if (!extension || X509_add_ext(certificate, extension.get(), -1) != 1) {
        throw_openssl_error("X509_add_ext");
    }
}

std::string to_pem(const auto& write)
{
    openssl_ptr<BIO> bio(BIO_new(BIO_s_mem()));
    if (!bio || write(bio.get()) != 1) {
        throw_openssl_error("PEM_write_bio");
    }
    char* data = nullptr;
    long size = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(size));
}

// Generates an EC P-256 key and a self-signed SHA-256 certificate valid for 30 days.
// The certificate is not a CA, so clients trust it only as this server's leaf.
key_and_certificate generate_certificate(const std::string& cert_host)
{
    openssl_ptr<EVP_PKEY> key(EVP_EC_gen("P-256"));
    openssl_ptr<X509> certificate(X509_new());
    if (!key || !certificate) {
        throw_openssl_error("EVP_EC_gen");
    }

    openssl_ptr<BIGNUM> serial(BN_new());
    if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
        !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(certificate.get()))) {
        throw_openssl_error("BN_rand");
    }
    X509_set_version(certificate.get(), X509_VERSION_3);
    X509_gmtime_adj(X509_getm_notBefore(certificate.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(certificate.get()), 30L * 24 * 3600);
    X509_set_pubkey(certificate.get(), key.get());

    std::string common_name = cert_host.empty() ? "localhost" : cert_host;
    X509_NAME* name = X509_get_subject_name(certificate.get());
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("stampede-emulator"), -1, -1,
                               0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                               0);
    X509_set_issuer_name(certificate.get(), name);

    std::string alt_names = "IP:127.0.0.1,IP:::1,DNS:localhost";
    if (!cert_host.empty()) {
        boost::system::error_code not_an_address;
        asio::ip::make_address(cert_host, not_an_address);
        alt_names = (not_an_address ? "DNS:" : "IP:") + cert_host;
    }
    add_extension(certificate.get(), NID_subject_alt_name, alt_names);
    add_extension(certificate.get(), NID_basic_constraints, "critical,CA:FALSE");
    add_extension(certificate.get(), NID_ext_key_usage, "serverAuth");
    add_extension(certificate.get(), NID_subject_key_identifier, "hash");

    if (X509_sign(certificate.get(), key.get(), EVP_sha256()) == 0) {
        throw_openssl_error("X509_sign");
    }
    return key_and_certificate{
        to_pem([&](BIO* bio) { return PEM_write_bio_X509(bio, certificate.get()); }),
        to_pem([&](BIO* bio) {
            return PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
        }),
    };
}

ssl::context make_tls_context(const key_and_certificate& identity)
{
    ssl::context context(ssl::context::tls_server);
    context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                        ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    SSL_CTX_set_min_proto_version(context.native_handle(), TLS1_2_VERSION);
    // Idle keep-alive connections then hold no OpenSSL record buffers.
    SSL_CTX_set_mode(context.native_handle(), SSL_MODE_RELEASE_BUFFERS);
    context.use_certificate_chain(asio::buffer(identity.certificate_pem));
    context.use_private_key(asio::buffer(identity.private_key_pem), ssl::context::pem);
    return context;
}

// Writes through a temporary file, so that a process polling for the file never
// reads half a certificate.
void write_file_atomically(const std::string& path, const std::string& contents)
{
    std::string temporary = path + ".tmp";
    {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        if (!out.is_open()) {
            const int open_error = errno;
            throw std::runtime_error("cannot create '" + temporary +
                                     "': " + std::strerror(open_error) +
                                     "; check that its directory exists and is writable");
        }
        out << contents;
        if (!out.flush()) {
            throw std::runtime_error("cannot write the certificate to '" + temporary + "'");
        }
    }
    std::error_code error;
    std::filesystem::rename(temporary, path, error);
    if (error) {
        throw std::runtime_error("cannot rename '" + temporary + "' to '" + path +
                                 "': " + error.message());
    }
}

// ---------------------------------------------------------------------------
// HTTP helpers

std::string reason_phrase(unsigned status)
{
    auto reason = to_std(http::obsolete_reason(static_cast<http::status>(status)));
    return reason == "<unknown-status>" ? "Unknown" : std::string(reason);
}

std::string serialize_head(const detail::http_reply& reply, std::size_t content_length,
                           bool keep_alive)
{
    std::string head =
        "HTTP/1.1 " + std::to_string(reply.status) + " " + reason_phrase(reply.status) + "\r\n";
    for (const auto& [name, value] : reply.headers) {
        head += name + ": " + value + "\r\n";
    }
    head += "Content-Length: " + std::to_string(content_length) + "\r\n";
    head += "Date: " + detail::format_http_date(detail::system_clock::now()) + "\r\n";
    head += "Server: stampede-emulator\r\n";
    if (!keep_alive) {
        head += "Connection: close\r\n";
    }
    head += "\r\n";
    return head;
}

// Writes a response head and body. Each async_write gets one contiguous buffer, because
// with Boost 1.81 beast::ssl_stream completes an asio::async_write of two buffers after
// the first one: its flattening step gets an empty leading buffer and writes 0 bytes.
template <class Stream>
asio::awaitable<boost::system::error_code> write_message(Stream& stream, std::string head,
                                                         std::string_view body)
{
    constexpr std::size_t max_copied_body = 64 * 1024;
    if (body.size() <= max_copied_body) {
        head.append(body);
        body = {};
    }
    auto [head_error, head_size] =
        co_await asio::async_write(stream, asio::buffer(head), use_tuple);
    if (head_error || body.empty()) {
        co_return head_error;
    }
    auto [body_error, body_size] =
        co_await asio::async_write(stream, asio::buffer(body), use_tuple);
    co_return body_error;
}

bool is_parse_error(const boost::system::error_code& error)
{
    return error.category() == http::make_error_code(http::error::bad_method).category() &&
           error != http::error::end_of_stream && error != http::error::partial_message;
}

std::string describe_client(const std::string& client_id)
{
    return client_id.empty() ? "-" : client_id;
}

} // namespace

// ---------------------------------------------------------------------------
// server::impl

struct server::impl {
    // A registered connection. Touched only on the server thread.
    struct connection_slot {
        beast::tcp_stream* stream = nullptr;
        asio::steady_timer* delay_timer = nullptr;
        /// Waiting for the first byte of its next request.
        bool idle = false;
        /// Writing the last response. The client may already have read it, so
        /// close_idle_connections() closes the connection when the write completes.
        bool writing = false;
        bool close_after_write = false;
    };

    // Unregisters a connection when its coroutine ends.
    struct registration {
        impl& owner;
        std::uint64_t id;
        registration(impl& server, std::uint64_t connection_id)
            : owner(server)
            , id(connection_id)
        {
            owner.service_.count_connection_opened();
        }
        ~registration()
        {
            owner.connections_.erase(id);
            owner.service_.count_connection_closed();
        }
        registration(const registration&) = delete;
        registration& operator=(const registration&) = delete;
    };

    explicit impl(options opts)
        : opts_(std::move(opts))
        , address_(detail::validate_options(opts_))
        , service_(opts_)
    {}

    void start();
    void stop();
    void run_on_server_thread(const std::function<void()>& work);
    void log(const std::string& line) const;

    asio::awaitable<void> accept_connections();
    asio::awaitable<void> run_connection(tcp::socket socket);

    template <class Stream>
    asio::awaitable<void> serve(Stream& stream, connection_slot& slot);

    template <class Stream>
    asio::awaitable<bool> deliver(Stream& stream, connection_slot& slot, detail::http_reply& reply,
                                  bool keep_alive);

    template <class Stream>
    asio::awaitable<void> reject_unreadable(Stream& stream, const boost::system::error_code& error);

    template <class Stream>
    asio::awaitable<void> finish(Stream& stream);

    asio::awaitable<void> discard_input(beast::tcp_stream& stream);

    std::size_t close_idle_connections();
    void close_all_connections();

    options opts_;
    detail::listen_address address_;
    detail::service service_;
    std::unordered_map<std::uint64_t, connection_slot> connections_;
    std::uint64_t next_connection_id_ = 0;
    bool stopping_ = false; ///< set on the server thread when stop() begins
    std::optional<ssl::context> tls_;

    // Declared after everything that coroutine frames refer to, so frames never
    // outlive the state they use.
    std::unique_ptr<asio::io_context> io_;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
    std::optional<tcp::acceptor> acceptor_;
    std::thread thread_;
    std::future<void> thread_finished_;

    std::mutex lifecycle_mutex_;
    bool running_ = false;
    std::atomic<bool> started_{false};
    std::atomic<unsigned short> port_{0};
    std::string url_prefix_;      // written before started_ is set
    std::string certificate_pem_; // written before started_ is set
};

void server::impl::log(const std::string& line) const
{
    if (opts_.logger) {
        opts_.logger(line);
    }
}

void server::impl::start()
{
    io_ = std::make_unique<asio::io_context>(1);
    try {
        auto address = asio::ip::make_address(address_.host);
        tcp::endpoint endpoint(address, address_.port);
        acceptor_.emplace(*io_);
        boost::system::error_code error;
        acceptor_->open(endpoint.protocol(), error);
        if (!error) {
            acceptor_->set_option(tcp::acceptor::reuse_address(true), error);
        }
        if (!error) {
            acceptor_->bind(endpoint, error);
        }
        if (!error) {
            acceptor_->listen(asio::socket_base::max_listen_connections, error);
        }
        if (error) {
            std::ostringstream where;
            where << endpoint;
            throw std::runtime_error("cannot listen on " + where.str() + ": " + error.message() +
                                     "; choose another address or port, or port 0 for a "
                                     "free one");
        }
        port_ = acceptor_->local_endpoint().port();

        if (!opts_.plain_http) {
            auto identity = generate_certificate(opts_.cert_host);
            tls_.emplace(make_tls_context(identity));
            certificate_pem_ = identity.certificate_pem;
            if (!opts_.cert_out.empty()) {
                write_file_atomically(opts_.cert_out, certificate_pem_);
            }
        }

        std::string host = address.is_unspecified() ? (address.is_v6() ? "::1" : "127.0.0.1")
                                                    : address.to_string();
        if (address.is_v6()) {
            host = "[" + host + "]";
        }
        url_prefix_ =
            (opts_.plain_http ? "http://" : "https://") + host + ":" + std::to_string(port_.load());
    } catch (...) {
        acceptor_.reset();
        io_.reset();
        throw;
    }

    service_.set_start_time(steady_clock::now());
    work_.emplace(io_->get_executor());
    asio::co_spawn(*io_, accept_connections(), [this](std::exception_ptr failure) {
        if (failure) {
            try {
                std::rethrow_exception(failure);
            } catch (const std::exception& error) {
                log(std::string("accept loop failed: ") + error.what());
            }
        }
    });

    std::promise<void> finished;
    thread_finished_ = finished.get_future();
    thread_ = std::thread([this, finished = std::move(finished)]() mutable {
        for (;;) {
            try {
                io_->run();
                break;
            } catch (const std::exception& error) {
                log(std::string("server thread caught an exception: ") + error.what());
            }
        }
        finished.set_value();
    });
    running_ = true;
    started_ = true;
    log("listening on " + url_prefix_ + "/oauth/token");
}

void server::impl::stop()
{
    if (!running_) {
        return;
    }
    run_on_server_thread([this] { close_all_connections(); });
    work_.reset();
    if (thread_finished_.wait_for(stop_grace) == std::future_status::timeout) {
        log("connections did not close within 5 s of stop(); stopping the io_context");
        io_->stop();
    }
    thread_.join();
    acceptor_.reset();
    io_.reset();
    running_ = false;
    log("stopped");
}

void server::impl::run_on_server_thread(const std::function<void()>& work)
{
    if (!running_) {
        return;
    }
    if (io_->get_executor().running_in_this_thread()) {
        work();
        return;
    }
    std::promise<void> done;
    asio::post(*io_, [&] {
        work();
        done.set_value();
    });
    done.get_future().wait();
}

std::size_t server::impl::close_idle_connections()
{
    std::size_t closed = 0;
    for (auto& [id, slot] : connections_) {
        if (slot.stream == nullptr) {
            continue;
        }
        if (slot.idle) {
            slot.stream->close();
            slot.idle = false;
            ++closed;
        } else if (slot.writing && !slot.close_after_write) {
            slot.close_after_write = true;
            ++closed;
        }
    }
    return closed;
}

void server::impl::close_all_connections()
{
    stopping_ = true;
    boost::system::error_code ignored;
    acceptor_->close(ignored);
    for (auto& [id, slot] : connections_) {
        if (slot.stream != nullptr) {
            slot.stream->close();
        }
        if (slot.delay_timer != nullptr) {
            slot.delay_timer->cancel();
        }
    }
}

asio::awaitable<void> server::impl::accept_connections()
{
    while (acceptor_->is_open()) {
        auto [error, socket] = co_await acceptor_->async_accept(use_tuple);
        if (error) {
            if (!acceptor_->is_open()) {
                break;
            }
            // Usually EMFILE: wait for connections to close instead of spinning.
            log("accept failed: " + error.message());
            asio::steady_timer pause(*io_, std::chrono::milliseconds(50));
            co_await pause.async_wait(use_tuple);
            continue;
        }
        boost::system::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        asio::co_spawn(*io_, run_connection(std::move(socket)), [this](std::exception_ptr failure) {
            if (failure) {
                try {
                    std::rethrow_exception(failure);
                } catch (const std::exception& failure_error) {
                    log(std::string("connection failed: ") + failure_error.what());
                }
            }
        });
    }
}

asio::awaitable<void> server::impl::run_connection(tcp::socket socket)
{
    if (stopping_) {
        co_return;
    }
    std::uint64_t id = next_connection_id_++;
    registration registered(*this, id);
    connection_slot& slot = connections_[id];

    if (!tls_) {
        beast::tcp_stream stream(std::move(socket));
        slot.stream = &stream;
        co_await serve(stream, slot);
        co_return;
    }

    beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), *tls_);
    slot.stream = &beast::get_lowest_layer(stream);
    beast::get_lowest_layer(stream).expires_after(opts_.idle_timeout);
    auto [error] = co_await stream.async_handshake(ssl::stream_base::server, use_tuple);
    if (error) {
        service_.count_handshake_failure();
        log("TLS handshake failed: " + error.message());
        co_return;
    }
    co_await serve(stream, slot);
}

template <class Stream>
asio::awaitable<void> server::impl::serve(Stream& stream, connection_slot& slot)
{
    auto& tcp_layer = beast::get_lowest_layer(stream);
    beast::flat_buffer buffer(header_limit + body_limit + read_chunk);

    for (;;) {
        // Wait for the first byte of the next request. Only here is the connection idle.
        if (buffer.size() == 0) {
            slot.idle = true;
            tcp_layer.expires_after(opts_.idle_timeout);
            auto [error, size] =
                co_await stream.async_read_some(buffer.prepare(read_chunk), use_tuple);
            slot.idle = false;
            if (error) {
                co_return;
            }
            buffer.commit(size);
        }

        http::request_parser<http::string_body> parser;
        parser.header_limit(header_limit);
        parser.body_limit(body_limit);
        tcp_layer.expires_after(opts_.idle_timeout);
        auto [header_error, header_size] =
            co_await http::async_read_header(stream, buffer, parser, use_tuple);
        if (header_error) {
            co_await reject_unreadable(stream, header_error);
            co_return;
        }
        if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
            static constexpr std::string_view interim = "HTTP/1.1 100 Continue\r\n\r\n";
            auto [write_error, written] =
                co_await asio::async_write(stream, asio::buffer(interim), use_tuple);
            if (write_error) {
                co_return;
            }
        }
        if (!parser.is_done()) {
            auto [body_error, body_size] =
                co_await http::async_read(stream, buffer, parser, use_tuple);
            if (body_error) {
                co_await reject_unreadable(stream, body_error);
                co_return;
            }
        }

        const auto& request = parser.get();
        bool keep_alive = request.keep_alive();
        std::string_view target = to_std(request.target());
        std::string_view path = target.substr(0, target.find('?'));

        detail::http_reply reply;
        if (path == "/_emulator/close-idle" && request.method() == http::verb::post) {
            reply = detail::make_json_reply(200, {{"closed", close_idle_connections()}});
        } else {
            // HEAD gets the GET response without its body.
            std::string_view method = request.method() == http::verb::head
                                          ? std::string_view("GET")
                                          : to_std(request.method_string());
            detail::http_request view{method, target, to_std(request[http::field::content_type]),
                                      to_std(request[http::field::authorization]), request.body()};
            reply = service_.handle(view, steady_clock::now());
        }
        if (opts_.log_requests) {
            log(std::string(to_std(request.method_string())) + " " + std::string(path) + " " +
                std::to_string(reply.status) + " client=" + describe_client(reply.client_id) +
                (reply.fault.empty() ? "" : " fault=" + reply.fault));
        }

        if (request.method() == http::verb::head) {
            reply.omit_body = true;
        }
        if (!co_await deliver(stream, slot, reply, keep_alive)) {
            co_return;
        }
        if (!keep_alive) {
            co_await finish(stream);
            co_return;
        }
    }
}

// Carries out a reply. Returns whether the connection can serve another request.
template <class Stream>
asio::awaitable<bool> server::impl::deliver(Stream& stream, connection_slot& slot,
                                            detail::http_reply& reply, bool keep_alive)
{
    auto& tcp_layer = beast::get_lowest_layer(stream);
    if (reply.delay > std::chrono::milliseconds::zero()) {
        asio::steady_timer delay(*io_, reply.delay);
        slot.delay_timer = &delay;
        auto [error] = co_await delay.async_wait(use_tuple);
        slot.delay_timer = nullptr;
        if (error || !tcp_layer.socket().is_open()) {
            co_return false;
        }
    }

    boost::system::error_code ignored;
    switch (reply.action) {
    case detail::reply_action::reset:
        // SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        tcp_layer.socket().set_option(asio::socket_base::linger(true, 0), ignored);
        tcp_layer.close();
        co_return false;

    case detail::reply_action::stall: {
        // Read and drop whatever arrives, so the stall ends when the client closes.
        tcp_layer.expires_never();
        std::array<char, read_chunk> sink;
        for (;;) {
            auto [error, size] = co_await stream.async_read_some(asio::buffer(sink), use_tuple);
            if (error) {
                co_return false;
            }
        }
    }

    case detail::reply_action::close_mid_body: {
        std::string_view half(reply.body.data(), reply.body.size() / 2);
        tcp_layer.expires_after(opts_.idle_timeout);
        co_await write_message(stream, serialize_head(reply, reply.body.size(), true), half);
        tcp_layer.socket().shutdown(tcp::socket::shutdown_both, ignored);
        tcp_layer.close();
        co_return false;
    }

    case detail::reply_action::respond:
        break;
    }

    tcp_layer.expires_after(opts_.idle_timeout);
    std::string_view body = reply.omit_body ? std::string_view() : std::string_view(reply.body);
    slot.writing = true;
    auto error =
        co_await write_message(stream, serialize_head(reply, reply.body.size(), keep_alive), body);
    slot.writing = false;
    if (slot.close_after_write) {
        tcp_layer.close();
        co_return false;
    }
    co_return !error;
}

// Sends an error response for a request that could not be read, when the client can
// still read a response.
template <class Stream>
asio::awaitable<void> server::impl::reject_unreadable(Stream& stream,
                                                      const boost::system::error_code& error)
{
    std::optional<detail::http_reply> reply;
    if (error == http::error::header_limit || error == http::error::buffer_overflow) {
        reply = detail::make_error_reply(431, "request_header_fields_too_large",
                                         "request headers exceed 8 KiB");
    } else if (error == http::error::body_limit) {
        reply = detail::make_error_reply(413, "payload_too_large", "request body exceeds 64 KiB");
    } else if (is_parse_error(error)) {
        reply = detail::make_error_reply(400, "bad_request",
                                         "malformed HTTP request: " + error.message());
    }
    if (!reply) {
        co_return;
    }
    log("rejected an unreadable request with " + std::to_string(reply->status) + ": " +
        error.message());

    beast::get_lowest_layer(stream).expires_after(opts_.idle_timeout);
    auto write_error = co_await write_message(
        stream, serialize_head(*reply, reply->body.size(), false), reply->body);
    if (!write_error) {
        co_await finish(stream);
    }
}

// Ends a connection after its last response: TLS close_notify when TLS is used, then a
// TCP half-close and a short drain so that the client sees FIN rather than RST.
template <class Stream>
asio::awaitable<void> server::impl::finish(Stream& stream)
{
    auto& tcp_layer = beast::get_lowest_layer(stream);
    if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
        tcp_layer.expires_after(discard_time);
        co_await stream.async_shutdown(use_tuple);
    }
    boost::system::error_code ignored;
    tcp_layer.socket().shutdown(tcp::socket::shutdown_send, ignored);
    co_await discard_input(tcp_layer);
    tcp_layer.close();
}

asio::awaitable<void> server::impl::discard_input(beast::tcp_stream& stream)
{
    stream.expires_after(discard_time);
    std::array<char, read_chunk> sink;
    for (;;) {
        auto [error, size] = co_await stream.async_read_some(asio::buffer(sink), use_tuple);
        if (error) {
            co_return;
        }
    }
}

// ---------------------------------------------------------------------------
// server

server::server(options opts)
    : impl_(std::make_unique<impl>(std::move(opts)))
{}

server::~server()
{
    stop();
}

void server::start()
{
    std::lock_guard lock(impl_->lifecycle_mutex_);
    if (impl_->started_) {
        throw std::logic_error("stampede::emulator::server::start() was called twice");
    }
    impl_->start();
}

void server::stop()
{
    std::lock_guard lock(impl_->lifecycle_mutex_);
    impl_->stop();
}

std::string server::token_url() const
{
    return impl_->started_ ? impl_->url_prefix_ + "/oauth/token" : std::string();
}

std::string server::base_url() const
{
    return impl_->started_ ? impl_->url_prefix_ + "/" : std::string();
}

unsigned short server::port() const
{
    return impl_->port_;
}

std::string server::certificate_pem() const
{
    return impl_->started_ ? impl_->certificate_pem_ : std::string();
}

stats server::get_stats() const
{
    return impl_->service_.snapshot();
}

boost::json::object server::stats_json() const
{
    return impl_->service_.snapshot_json();
}

void server::set_fault_script(std::string_view script)
{
    impl_->service_.set_token_faults(detail::parse_token_fault_script(script));
}

void server::set_api_fault_script(std::string_view script)
{
    impl_->service_.set_api_faults(detail::parse_api_fault_script(script));
}

bool server::revoke(std::string_view access_token)
{
    return impl_->service_.revoke(access_token, steady_clock::now());
}

void server::revoke_all()
{
    impl_->service_.revoke_all(steady_clock::now());
}

void server::close_idle_connections()
{
    std::lock_guard lock(impl_->lifecycle_mutex_);
    impl_->run_on_server_thread([this] { impl_->close_idle_connections(); });
}

void server::set_token_lifetime(std::chrono::milliseconds lifetime)
{
    if (lifetime <= std::chrono::milliseconds::zero()) {
        throw std::invalid_argument("invalid token lifetime: expected a positive duration");
    }
    impl_->service_.set_token_lifetime(lifetime);
}

} // namespace stampede::emulator
