#include "support.hpp"

#include <boost/asio/co_spawn.hpp>

#include <algorithm>
#include <cmath>
#include <exception>
#include <time.h>
#include <unistd.h>

namespace stampede::bench {

clock::duration thread_cpu_time() noexcept
{
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

double median(std::vector<double>& values)
{
    if (values.empty()) {
        return 0;
    }
    std::sort(values.begin(), values.end());
    const std::size_t middle = values.size() / 2;
    if (values.size() % 2 == 1) {
        return values[middle];
    }
    return (values[middle - 1] + values[middle]) / 2;
}

std::uint64_t percentile(std::vector<std::uint64_t>& values, double fraction)
{
    if (values.empty()) {
        return 0;
    }
    const auto rank = static_cast<std::size_t>(std::ceil(fraction * double(values.size())));
    const std::size_t index = std::clamp<std::size_t>(rank, 1, values.size()) - 1;
    std::nth_element(values.begin(), values.begin() + std::ptrdiff_t(index), values.end());
    return values[index];
}

asio::awaitable<boost::system::error_code> instant_fetcher::fetch(detail::fetched_token& out,
                                                                  diagnostics& /*diag*/)
{
    out.sent_at = clock::now();
    out.access_token = secret_string("benchmark-token-0123456789abcdefghijklmnopq");
    out.token_type = "Bearer";
    out.scope = "ALL:ALL";
    out.expires_in = std::chrono::hours(1);
    co_return boost::system::error_code{};
}

probing_fetcher::probing_fetcher(std::unique_ptr<detail::token_fetcher> inner,
                                 std::function<void()> on_fetch_start,
                                 std::function<void()> on_response)
    : inner_(std::move(inner))
    , on_fetch_start_(std::move(on_fetch_start))
    , on_response_(std::move(on_response))
{}

asio::awaitable<boost::system::error_code> probing_fetcher::fetch(detail::fetched_token& out,
                                                                  diagnostics& diag)
{
    if (on_fetch_start_) {
        on_fetch_start_();
    }
    const boost::system::error_code ec = co_await inner_->fetch(out, diag);
    if (on_response_) {
        on_response_();
    }
    co_return ec;
}

emulator_fixture::emulator_fixture(emulator::options opts)
{
    static int counter = 0;
    cert_file_ =
        std::filesystem::temp_directory_path() /
        ("stampede-bench-" + std::to_string(::getpid()) + "-" + std::to_string(++counter) + ".pem");
    opts.clients = {{"bench-client", "bench-secret"}};
    opts.token_rate = emulator::rate{1'000'000, std::chrono::seconds(1)};
    opts.cert_out = cert_file_.string();
    server_ = std::make_unique<emulator::server>(std::move(opts));
    server_->start();
}

emulator_fixture::~emulator_fixture()
{
    server_->stop();
    std::error_code ignored;
    std::filesystem::remove(cert_file_, ignored);
}

token_source_settings emulator_fixture::settings() const
{
    token_source_settings s;
    s.client_id = "bench-client";
    s.client_secret = secret_string("bench-secret");
    s.token_url = server_->token_url();
    s.transport.ca_file = cert_file_.string();
    s.rate_limit.capacity = 1'000'000;
    s.rate_limit.refill_interval = std::chrono::milliseconds(1);
    return s;
}

emulator_fixture& shared_emulator()
{
    static emulator_fixture fixture;
    return fixture;
}

void run_until_done(asio::io_context& io, asio::awaitable<void> body)
{
    bool done = false;
    std::exception_ptr failure;
    asio::co_spawn(io, std::move(body), [&](std::exception_ptr e) {
        failure = e;
        done = true;
    });
    while (!done && io.run_one() != 0) {
    }
    if (failure) {
        std::rethrow_exception(failure);
    }
}

} // namespace stampede::bench
