#include <stampede/detail/form_encoding.hpp>
#include <stampede/detail/token_wire.hpp>

#include <boost/beast/http/field.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <string>

namespace stampede::detail {

namespace {

namespace http = boost::beast::http;
namespace json = boost::json;

// Overwrites a copy of the secret with zeros when it goes out of scope.
class wipe_on_exit {
public:
    explicit wipe_on_exit(std::string& text) noexcept
        : text_(text)
    {
    }

    wipe_on_exit(const wipe_on_exit&) = delete;
    wipe_on_exit& operator=(const wipe_on_exit&) = delete;

    ~wipe_on_exit() { OPENSSL_cleanse(text_.data(), text_.size()); }

private:
    std::string& text_;
};

std::string base64(std::string_view data)
{
    std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
    const int length = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                       reinterpret_cast<const unsigned char*>(data.data()),
                                       static_cast<int>(data.size()));
    out.resize(static_cast<std::size_t>(length));
    return out;
}

// Adds the scope, audience, resource and extra parameters that are set, in that order.
template <class AddParameter>
void add_request_parameters(const token_source_settings& settings, AddParameter add)
{
    if (!settings.scope.empty()) {
        add("scope", settings.scope);
    }
    if (!settings.audience.empty()) {
        add("audience", settings.audience);
    }
    if (!settings.resource.empty()) {
        add("resource", settings.resource);
    }
    for (const auto& [name, value] : settings.extra_parameters) {
        add(name, value);
    }
}

void set_json_body(http_request& request, const token_source_settings& settings)
{
    json::object body;
    body["client_id"] = settings.client_id;
    body["client_secret"] = settings.client_secret.reveal();
    body["grant_type"] = "client_credentials";
    add_request_parameters(settings, [&](std::string_view name, std::string_view value) {
        body[name] = value;
    });

    request.set(http::field::content_type, "application/json");
    request.body() = json::serialize(body);

    // The JSON tree's copy of the secret is not needed any more.
    auto& secret_copy = body["client_secret"].get_string();
    OPENSSL_cleanse(secret_copy.data(), secret_copy.size());
}

void set_form_body(http_request& request, const token_source_settings& settings,
                   bool credentials_in_body)
{
    std::string body;
    append_form_parameter(body, "grant_type", "client_credentials");
    if (credentials_in_body) {
        append_form_parameter(body, "client_id", settings.client_id);
        append_form_parameter(body, "client_secret", settings.client_secret.reveal());
    }
    add_request_parameters(settings, [&](std::string_view name, std::string_view value) {
        append_form_parameter(body, name, value);
    });

    request.set(http::field::content_type, "application/x-www-form-urlencoded");
    request.body() = std::move(body);
}

// Sets `Authorization: Basic base64(form(id) ":" form(secret))` (RFC 6749, section 2.3.1).
void set_basic_credentials(http_request& request, const token_source_settings& settings)
{
    std::string encoded_secret = form_urlencode(settings.client_secret.reveal());
    const wipe_on_exit wipe_secret(encoded_secret);

    std::string user_pass = form_urlencode(settings.client_id) + ":" + encoded_secret;
    const wipe_on_exit wipe_user_pass(user_pass);

    std::string value = "Basic " + base64(user_pass);
    const wipe_on_exit wipe_value(value);
    request.set(http::field::authorization, value);
}

} // namespace

http_request make_token_request(const endpoint_url& url, const token_source_settings& settings)
{
    http_request request{http::verb::post, url.target, 11};
    request.set(http::field::accept, "application/json");

    switch (settings.auth_method) {
    case client_auth_method::client_secret_post:
        set_form_body(request, settings, true);
        break;
    case client_auth_method::client_secret_basic:
        set_basic_credentials(request, settings);
        set_form_body(request, settings, false);
        break;
    case client_auth_method::json_body:
    default:
        set_json_body(request, settings);
        break;
    }
    request.prepare_payload();
    return request;
}

} // namespace stampede::detail
