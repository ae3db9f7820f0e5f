#ifndef STAMPEDE_TEST_EMULATOR_FIXTURE_HPP
#define STAMPEDE_TEST_EMULATOR_FIXTURE_HPP

// Starts the Stampede emulator in-process over TLS on loopback and builds SDK settings
// that trust its certificate.

#include "emulator.hpp"

#include <stampede/settings.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <unistd.h>

namespace stampede::test {

/// A started emulator with its certificate written to a temporary CA file.
class running_emulator {
public:
    explicit running_emulator(emulator::options opts = {})
    {
        static int counter = 0;
        dir_ = std::filesystem::temp_directory_path() /
               ("stampede-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter));
        std::filesystem::create_directories(dir_);
        opts.log_requests = false;
        if (opts.clients.empty()) {
            opts.clients.emplace_back("test-client", "test-secret");
        }
        server_ = std::make_unique<emulator::server>(std::move(opts));
        server_->start();
        ca_file_ = (dir_ / "ca.pem").string();
        std::ofstream(ca_file_) << server_->certificate_pem();
    }

    ~running_emulator()
    {
        server_->stop();
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }

    running_emulator(const running_emulator&) = delete;
    running_emulator& operator=(const running_emulator&) = delete;

    emulator::server& server() { return *server_; }
    const std::string& ca_file() const { return ca_file_; }
    const std::filesystem::path& dir() const { return dir_; }

    /// Settings for `test-client` that trust this emulator, with timeouts short enough
    /// for tests and a generous limiter.
    token_source_settings settings(std::string secret = "test-secret") const
    {
        using namespace std::chrono_literals;
        token_source_settings s;
        s.client_id = "test-client";
        s.client_secret = secret_string(secret);
        s.token_url = server_->token_url();
        s.transport.ca_file = ca_file_;
        s.transport.request_timeout = 2000ms;
        s.transport.read_timeout = 1000ms;
        s.backoff.initial_delay = 50ms;
        s.backoff.min_delay = 20ms;
        s.backoff.max_delay = 200ms;
        s.refresh_ahead = 5000ms;
        s.rate_limit.capacity = 100;
        s.rate_limit.refill_interval = 10ms;
        return s;
    }

private:
    std::filesystem::path dir_;
    std::string ca_file_;
    std::unique_ptr<emulator::server> server_;
};

} // namespace stampede::test

#endif
