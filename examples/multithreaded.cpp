// Many coroutines on an io_context run by several threads share one token: one request
// on a cold start, then every call is served from the per-thread cache.
//
// Environment: as the coroutine example.

#include "example_settings.hpp"

#include <stampede/token_source.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <iostream>
#include <thread>
#include <vector>

namespace asio = boost::asio;

int main()
{
    asio::io_context ctx;
    stampede::token_source auth(ctx, examples::settings_from_environment());
    constexpr int workers = 1000;
    constexpr int calls_per_worker = 100;
    std::atomic<int> finished{0};
    std::atomic<int> failed{0};

    for (int i = 0; i < workers; ++i) {
        asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
            try {
                for (int j = 0; j < calls_per_worker; ++j) {
                    auto token = co_await auth.token();
                    (void)token.authorization_header(); // use it before the next co_await
                }
            } catch (const std::exception&) {
                ++failed;
            }
            if (++finished == workers) {
                auth.shutdown();
            }
        }, asio::detached);
    }

    std::vector<std::thread> threads;
    for (unsigned i = 0; i < std::max(2u, std::thread::hardware_concurrency()); ++i) {
        threads.emplace_back([&] { ctx.run(); });
    }
    for (auto& t : threads) {
        t.join();
    }
    const auto stats = auth.stats();
    std::cout << workers * calls_per_worker << " calls, " << failed.load() << " failed workers, "
              << stats.requests << " token request(s), " << stats.cache_hits << " cache hits\n";
    return failed.load() == 0 ? 0 : 1;
}
