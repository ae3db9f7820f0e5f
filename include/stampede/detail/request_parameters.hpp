#ifndef STAMPEDE_DETAIL_REQUEST_PARAMETERS_HPP
#define STAMPEDE_DETAIL_REQUEST_PARAMETERS_HPP

#include <stampede/diagnostics.hpp>
#include <stampede/settings.hpp>

#include <boost/system/error_code.hpp>

#include <iosfwd>

namespace stampede::detail {

/// Checks `auth_method`, `scope`, `audience`, `resource` and `extra_parameters`. On
/// failure returns `client_errc::invalid_settings` and puts a message naming the field and
/// the fix in `diag`.
boost::system::error_code validate_request_parameters(const token_source_settings& settings,
                                                      diagnostics& diag);

/// Writes `, auth_method=NAME` and each request parameter that is set, for the settings'
/// `operator<<`.
void print_request_parameters(std::ostream& os, const token_source_settings& settings);

} // namespace stampede::detail

#endif
