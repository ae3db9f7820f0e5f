#ifndef STAMPEDE_DETAIL_HTTP_TOKEN_FETCHER_HPP
#define STAMPEDE_DETAIL_HTTP_TOKEN_FETCHER_HPP

#include <stampede/detail/token_fetcher.hpp>
#include <stampede/settings.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <memory>

namespace stampede::detail {

/// Creates the fetcher that speaks to `settings.token_url` over HTTPS with one
/// kept-alive connection. Throws `error_with_diagnostics` when the TLS trust settings
/// cannot be loaded. `settings` must be valid.
std::unique_ptr<token_fetcher> make_http_token_fetcher(const boost::asio::any_io_executor& ex,
                                                       const token_source_settings& settings);

} // namespace stampede::detail

#endif
