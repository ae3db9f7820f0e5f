#ifndef STAMPEDE_TEST_REDIS_SERVER_HPP
#define STAMPEDE_TEST_REDIS_SERVER_HPP

// Starts a real redis-server on a free loopback port for a test, with a password for the
// default user, an ACL user, and optionally TLS with a certificate made by the openssl
// command at test time. The server keeps no data on disk.

#include <stampede/redis/config.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace stampede::test {

/// A redis-server child process on 127.0.0.1. `stop()` and `start()` may be called again
/// to take it down and bring it back on the same port.
class redis_server {
public:
    struct options {
        bool tls = false;
        std::string default_password = "default-password";
        std::string acl_user = "stampede";
        std::string acl_password = "acl-password";
    };

    redis_server()
        : redis_server(options{})
    {}

    explicit redis_server(options opts)
        : options_(std::move(opts))
    {
        static int counter = 0;
        dir_ = std::filesystem::temp_directory_path() /
               ("stampede-redis-" + std::to_string(::getpid()) + "-" + std::to_string(++counter));
        std::filesystem::create_directories(dir_);
        if (options_.tls) {
            make_certificate("server");
            make_certificate("other");
        }
        // Another process may take the free port before the server binds it, so a failed
        // first start is retried on a new port.
        for (int attempt = 1;; ++attempt) {
            port_ = free_port();
            write_config();
            try {
                start();
                return;
            } catch (const std::runtime_error&) {
                if (attempt == 3) {
                    throw;
                }
            }
        }
    }

    ~redis_server()
    {
        stop();
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }

    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;

    void start()
    {
        if (pid_ > 0) {
            return;
        }
        const std::string conf = (dir_ / "redis.conf").string();
        pid_ = ::fork();
        if (pid_ < 0) {
            throw std::runtime_error("fork failed while starting redis-server");
        }
        if (pid_ == 0) {
            // The server ends with the test process, even when a test crashes.
            ::prctl(PR_SET_PDEATHSIG, SIGTERM);
            ::execlp("redis-server", "redis-server", conf.c_str(), static_cast<char*>(nullptr));
            std::_Exit(127);
        }
        wait_until_listening();
    }

    void stop()
    {
        if (pid_ <= 0) {
            return;
        }
        ::kill(pid_, SIGTERM);
        ::kill(pid_, SIGCONT); // a paused server handles SIGTERM only once continued
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
    }

    /// Stops the server process with SIGSTOP. Connections stay open but get no replies, as
    /// with a server that is too slow. `resume()` continues it.
    void pause() const
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGSTOP);
        }
    }

    void resume() const
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGCONT);
        }
    }

    std::uint16_t port() const noexcept { return port_; }
    const std::filesystem::path& dir() const noexcept { return dir_; }

    /// PEM file of the certificate the server presents (TLS only).
    std::string ca_file() const { return (dir_ / "server.pem").string(); }

    /// PEM file of another self-signed certificate, which does not sign the server's.
    std::string other_ca_file() const { return (dir_ / "other.pem").string(); }

    /// A configuration for the ACL user, with timeouts short enough for tests.
    redis::config config() const
    {
        using namespace std::chrono_literals;
        redis::config cfg;
        cfg.host = "127.0.0.1";
        cfg.port = port_;
        cfg.use_tls = options_.tls;
        cfg.username = options_.acl_user;
        cfg.password = secret_string(options_.acl_password);
        if (options_.tls) {
            cfg.ca_file = ca_file();
        }
        cfg.connect_timeout = 2000ms;
        cfg.command_timeout = 2000ms;
        cfg.reconnect.initial_delay = 20ms;
        cfg.reconnect.min_delay = 10ms;
        cfg.reconnect.max_delay = 100ms;
        return cfg;
    }

    const options& server_options() const noexcept { return options_; }

    /// Returns the server's log, to explain a failed start.
    std::string log_text() const
    {
        std::ifstream in(dir_ / "redis.log");
        std::ostringstream out;
        out << in.rdbuf();
        return out.str();
    }

private:
    static std::uint16_t free_port()
    {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            throw std::runtime_error("cannot create a socket to find a free port");
        }
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.sin_port = 0;
        socklen_t size = sizeof address;
        if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
            ::close(fd);
            throw std::runtime_error("cannot bind a loopback socket to find a free port");
        }
        ::close(fd);
        return ntohs(address.sin_port);
    }

    static bool can_connect(std::uint16_t port)
    {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            return false;
        }
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        address.sin_port = htons(port);
        const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
        ::close(fd);
        return ok;
    }

    void wait_until_listening()
    {
        // Up to 20 s in 20 ms steps: a loaded machine can be slow to start a process.
        for (int attempt = 0; attempt < 1000; ++attempt) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                throw std::runtime_error(
                    "redis-server exited at start (is the redis-server package installed? "
                    "./scripts/test installs it); its log:\n" +
                    log_text());
            }
            if (can_connect(port_)) {
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        stop();
        throw std::runtime_error("redis-server did not listen on port " + std::to_string(port_) +
                                 "; its log:\n" + log_text());
    }

    void make_certificate(const std::string& name)
    {
        const std::string key = (dir_ / (name + ".key")).string();
        const std::string cert = (dir_ / (name + ".pem")).string();
        const std::string cmd =
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
            "-keyout '" +
            key + "' -out '" + cert +
            "' -days 2 -subj /CN=localhost "
            "-addext subjectAltName=IP:127.0.0.1,DNS:localhost >/dev/null 2>&1";
        if (std::system(cmd.c_str()) != 0) {
            throw std::runtime_error("the openssl command failed to make a test certificate");
        }
    }

    void write_config() const
    {
        std::ofstream conf(dir_ / "redis.conf");
        if (options_.tls) {
            conf << "port 0\n"
                 << "tls-port " << port_ << '\n'
                 << "tls-cert-file " << (dir_ / "server.pem").string() << '\n'
                 << "tls-key-file " << (dir_ / "server.key").string() << '\n'
                 << "tls-ca-cert-file " << (dir_ / "server.pem").string() << '\n'
                 << "tls-auth-clients no\n";
        } else {
            conf << "port " << port_ << '\n';
        }
        conf << "bind 127.0.0.1\n"
             << "save \"\"\n"
             << "appendonly no\n"
             << "daemonize no\n"
             << "dir " << dir_.string() << '\n'
             << "logfile " << (dir_ / "redis.log").string() << '\n'
             << "requirepass " << options_.default_password << '\n'
             << "user " << options_.acl_user << " on >" << options_.acl_password
             << " ~* &* +@all\n";
    }

    options options_;
    std::filesystem::path dir_;
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
};

} // namespace stampede::test

#endif
