#include <stampede/detail/request_parameters.hpp>

#include <stampede/error.hpp>

#include <boost/url/parse.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

namespace stampede {

namespace {

constexpr std::array<std::pair<client_auth_method, std::string_view>, 3> method_names{{
    {client_auth_method::json_body, "json_body"},
    {client_auth_method::client_secret_post, "client_secret_post"},
    {client_auth_method::client_secret_basic, "client_secret_basic"},
}};

} // namespace

std::string_view to_string(client_auth_method method) noexcept
{
    for (const auto& [value, name] : method_names) {
        if (value == method) {
            return name;
        }
    }
    return "invalid";
}

std::optional<client_auth_method> parse_client_auth_method(std::string_view name) noexcept
{
    for (const auto& [value, known] : method_names) {
        if (known == name) {
            return value;
        }
    }
    return std::nullopt;
}

std::ostream& operator<<(std::ostream& os, client_auth_method method)
{
    return os << to_string(method);
}

} // namespace stampede

namespace stampede::detail {

namespace {

using boost::system::error_code;

error_code reject(diagnostics& diag, std::string message)
{
    diag.set_client_message(std::move(message));
    return client_errc::invalid_settings;
}

// Returns the offset of the first control character (C0 or DEL), or npos.
std::size_t find_control_character(std::string_view text) noexcept
{
    const auto it = std::find_if(text.begin(), text.end(), [](char c) {
        const auto byte = static_cast<unsigned char>(c);
        return byte < 0x20 || byte == 0x7f;
    });
    return it == text.end() ? std::string_view::npos
                            : static_cast<std::size_t>(it - text.begin());
}

std::string describe_byte_at(std::string_view text, std::size_t offset)
{
    char code[8];
    std::snprintf(code, sizeof code, "0x%02X",
                  static_cast<unsigned>(static_cast<unsigned char>(text[offset])));
    return std::string("the byte ") + code + " at offset " + std::to_string(offset);
}

// A scope token is 1*NQCHAR: %x21 / %x23-5B / %x5D-7E (RFC 6749, section 3.3).
bool is_scope_character(char c) noexcept
{
    const auto byte = static_cast<unsigned char>(c);
    return byte >= 0x21 && byte <= 0x7e && c != '"' && c != '\\';
}

error_code validate_auth_method(client_auth_method method, diagnostics& diag)
{
    if (to_string(method) != "invalid") {
        return {};
    }
    return reject(diag, "auth_method has the value " + std::to_string(static_cast<int>(method)) +
                            ", which is not a client_auth_method; set it to json_body, "
                            "client_secret_post or client_secret_basic");
}

error_code validate_scope(std::string_view scope, diagnostics& diag)
{
    if (scope.empty()) {
        return {};
    }
    for (std::size_t i = 0; i < scope.size(); ++i) {
        if (scope[i] != ' ' && !is_scope_character(scope[i])) {
            return reject(diag, "scope contains " + describe_byte_at(scope, i) +
                                    "; scope tokens are visible ASCII characters other than "
                                    "'\"' and '\\' (RFC 6749, section 3.3)");
        }
    }
    if (scope.front() == ' ' || scope.back() == ' ' || scope.find("  ") != std::string_view::npos) {
        return reject(diag, "scope \"" + std::string(scope) +
                                "\" has a leading, trailing or doubled space; separate the "
                                "scope tokens with single spaces");
    }
    return {};
}

error_code validate_audience(std::string_view audience, diagnostics& diag)
{
    if (const auto at = find_control_character(audience); at != std::string_view::npos) {
        return reject(diag, "audience contains a control character (" +
                                describe_byte_at(audience, at) + "); remove it");
    }
    return {};
}

error_code validate_resource(std::string_view resource, diagnostics& diag)
{
    if (resource.empty() || boost::urls::parse_absolute_uri(resource)) {
        return {};
    }
    return reject(diag, "resource is not an absolute URI without a fragment, as RFC 8707 "
                        "requires; set it to the API's identifier, such as "
                        "urn:example:api or https://api.example.com/, or leave it empty");
}

// Parameters that the SDK sets itself, and the setting to use instead.
std::string_view replacement_for(std::string_view name) noexcept
{
    if (name == "grant_type") {
        return "it is always client_credentials";
    }
    if (name == "client_id" || name == "client_secret") {
        return "set client_id and client_secret, and auth_method to choose how they are sent";
    }
    if (name == "scope" || name == "audience" || name == "resource") {
        return "use the settings field of that name";
    }
    return {};
}

error_code validate_extra_parameters(
    const std::vector<std::pair<std::string, std::string>>& parameters, diagnostics& diag)
{
    for (std::size_t i = 0; i < parameters.size(); ++i) {
        const auto& [name, value] = parameters[i];
        const std::string where = "extra_parameters[" + std::to_string(i) + "]";
        if (name.empty()) {
            return reject(diag, where + " has an empty name; give every parameter a name");
        }
        if (const auto at = find_control_character(name); at != std::string_view::npos) {
            return reject(diag, where + " has a name with a control character (" +
                                    describe_byte_at(name, at) + "); remove it");
        }
        if (const auto at = find_control_character(value); at != std::string_view::npos) {
            return reject(diag, where + " (\"" + name + "\") has a value with a control character (" +
                                    describe_byte_at(value, at) + "); remove it");
        }
        if (const auto instead = replacement_for(name); !instead.empty()) {
            return reject(diag, where + " is named \"" + name +
                                    "\", a parameter the SDK sets itself; " + std::string(instead));
        }
        for (std::size_t j = 0; j < i; ++j) {
            if (parameters[j].first == name) {
                return reject(diag, where + " repeats the name \"" + name + "\" of extra_parameters[" +
                                        std::to_string(j) + "]; give each name once");
            }
        }
    }
    return {};
}

} // namespace

error_code validate_request_parameters(const token_source_settings& settings, diagnostics& diag)
{
    if (auto ec = validate_auth_method(settings.auth_method, diag)) {
        return ec;
    }
    if (auto ec = validate_scope(settings.scope, diag)) {
        return ec;
    }
    if (auto ec = validate_audience(settings.audience, diag)) {
        return ec;
    }
    if (auto ec = validate_resource(settings.resource, diag)) {
        return ec;
    }
    return validate_extra_parameters(settings.extra_parameters, diag);
}

void print_request_parameters(std::ostream& os, const token_source_settings& settings)
{
    os << ", auth_method=" << settings.auth_method;
    if (!settings.scope.empty()) {
        os << ", scope=" << settings.scope;
    }
    if (!settings.audience.empty()) {
        os << ", audience=" << settings.audience;
    }
    if (!settings.resource.empty()) {
        os << ", resource=" << settings.resource;
    }
    if (!settings.extra_parameters.empty()) {
        // Values are not printed: an extra parameter may carry a credential, such as a
        // client assertion.
        os << ", extra_parameters={";
        const char* separator = "";
        for (const auto& [name, value] : settings.extra_parameters) {
            os << separator << name << "=[redacted]";
            separator = ", ";
        }
        os << '}';
    }
}

} // namespace stampede::detail
