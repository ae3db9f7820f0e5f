// Reads the examples' settings from the environment, so no secret is written in code
// or passed on a command line.

#pragma once

#include <stampede/settings.hpp>

#include <cstdlib>
#include <iostream>
#include <string>

namespace examples {

inline std::string env_or(const char* name, std::string fallback)
{
    const char* value = std::getenv(name);
    return value != nullptr && *value != '\0' ? std::string(value) : std::move(fallback);
}

/// Builds settings from STAMPEDE_CLIENT_ID, STAMPEDE_CLIENT_SECRET, STAMPEDE_TOKEN_URL and
/// STAMPEDE_CA_FILE. Exits with a message when the credentials are missing.
inline stampede::token_source_settings settings_from_environment()
{
    stampede::token_source_settings s;
    s.client_id = env_or("STAMPEDE_CLIENT_ID", "");
    s.client_secret = stampede::secret_string(env_or("STAMPEDE_CLIENT_SECRET", ""));
    s.token_url = env_or("STAMPEDE_TOKEN_URL", std::string(stampede::default_token_url));
    s.transport.ca_file = env_or("STAMPEDE_CA_FILE", "");
    if (s.client_id.empty() || s.client_secret.empty()) {
        std::cerr << "set STAMPEDE_CLIENT_ID and STAMPEDE_CLIENT_SECRET (and STAMPEDE_TOKEN_URL "
                     "and STAMPEDE_CA_FILE to use the emulator)\n";
        std::exit(2);
    }
    return s;
}

} // namespace examples
