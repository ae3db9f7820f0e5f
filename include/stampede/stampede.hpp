#ifndef STAMPEDE_STAMPEDE_HPP
#define STAMPEDE_STAMPEDE_HPP

// Every public header of the SDK.

#include <stampede/access_token.hpp>
#include <stampede/api_client.hpp>
#include <stampede/backoff.hpp>
#include <stampede/diagnostics.hpp>
#include <stampede/error.hpp>
#include <stampede/guests.hpp>
#include <stampede/logger.hpp>
#include <stampede/rate_limiter.hpp>
#include <stampede/retry.hpp>
#include <stampede/secret_string.hpp>
#include <stampede/settings.hpp>
#include <stampede/token_source.hpp>
#include <stampede/token_source_stats.hpp>

#endif
