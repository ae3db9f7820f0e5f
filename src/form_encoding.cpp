#include <stampede/detail/form_encoding.hpp>

#include <boost/url/encode.hpp>
#include <boost/url/encoding_opts.hpp>
#include <boost/url/parse_query.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include <openssl/crypto.h>

#include <algorithm>
#include <cctype>

namespace stampede::detail {

namespace {

boost::urls::encoding_opts form_options() noexcept
{
    boost::urls::encoding_opts options;
    options.space_as_plus = true;
    return options;
}

std::string_view trim(std::string_view text) noexcept
{
    const auto first = text.find_first_not_of(" \t");
    if (first == std::string_view::npos) {
        return {};
    }
    const auto last = text.find_last_not_of(" \t");
    return text.substr(first, last - first + 1);
}

} // namespace

std::string form_urlencode(std::string_view text)
{
    return boost::urls::encode(text, boost::urls::unreserved_chars, form_options());
}

void append_form_parameter(std::string& body, std::string_view name, std::string_view value)
{
    if (!body.empty()) {
        body += '&';
    }
    body += form_urlencode(name);
    body += '=';
    body += form_urlencode(value);
}

bool is_form_urlencoded_content_type(std::string_view value) noexcept
{
    constexpr std::string_view form_type = "application/x-www-form-urlencoded";
    const std::string_view media_type = trim(value.substr(0, value.find(';')));
    return media_type.size() == form_type.size() &&
           std::equal(media_type.begin(), media_type.end(), form_type.begin(),
                      [](char a, char b) {
                          return std::tolower(static_cast<unsigned char>(a)) == b;
                      });
}

boost::json::object parse_form_urlencoded(std::string_view body, boost::system::error_code& ec)
{
    ec.clear();
    boost::json::object fields;
    if (body.empty()) {
        return fields;
    }

    const auto params = boost::urls::parse_query(body);
    if (!params) {
        ec = params.error();
        return fields;
    }
    for (const auto& param : *params) {
        std::string name = param.key.decode(form_options());
        std::string value = param.has_value ? param.value.decode(form_options()) : std::string();
        fields[name] = value;

        // The JSON tree keeps the only copy that the caller wipes (it may be a token).
        OPENSSL_cleanse(value.data(), value.size());
    }
    return fields;
}

} // namespace stampede::detail
