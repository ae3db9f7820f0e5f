#ifndef STAMPEDE_DETAIL_FORM_ENCODING_HPP
#define STAMPEDE_DETAIL_FORM_ENCODING_HPP

#include <boost/json/object.hpp>
#include <boost/system/error_code.hpp>

#include <string>
#include <string_view>

namespace stampede::detail {

/// Returns `text` in `application/x-www-form-urlencoded` form: ASCII letters, digits and
/// `-._~` stay, a space becomes `+`, and every other byte becomes `%XX` with upper-case
/// hex digits. RFC 6749 (appendix B) uses this encoding for request bodies and, before
/// base64, for the client id and secret in a Basic `Authorization` header.
std::string form_urlencode(std::string_view text);

/// Appends `name=value`, both encoded, to a form body, preceded by `&` unless `body` is
/// empty.
void append_form_parameter(std::string& body, std::string_view name, std::string_view value);

/// Returns whether a Content-Type value names `application/x-www-form-urlencoded`, with
/// any parameters and in any case.
bool is_form_urlencoded_content_type(std::string_view value) noexcept;

/// Parses a form-encoded body into a JSON object whose members are the decoded names and
/// values, as strings (`+` and `%20` both decode to a space). A name without `=` gets an
/// empty value, and a repeated name keeps its last value. On a malformed body (a `%` not
/// followed by two hex digits) sets `ec` and returns an empty object.
boost::json::object parse_form_urlencoded(std::string_view body, boost::system::error_code& ec);

} // namespace stampede::detail

#endif
