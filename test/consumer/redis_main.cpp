// Builds against stampede::redis, the package's `redis` component, and checks a Redis URL
// without connecting to anything.
#include <stampede/redis/config.hpp>

#include <iostream>

int main()
{
    stampede::redis::config cfg;
    stampede::diagnostics diag;
    if (stampede::redis::parse_url("rediss://fleet:local-password@127.0.0.1:6390/2", cfg, diag)) {
        std::cerr << diag.client_message() << '\n';
        return 1;
    }
    if (const auto problem = stampede::redis::validate(cfg); !problem.empty()) {
        std::cerr << problem << '\n';
        return 1;
    }
    std::cout << "redis config: " << cfg.host << ':' << cfg.port << " database " << cfg.database
              << (cfg.use_tls ? " over TLS" : "") << '\n';
    return cfg.use_tls && cfg.database == 2 ? 0 : 1;
}
