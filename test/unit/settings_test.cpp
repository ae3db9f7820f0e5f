// Unit tests of the settings' request parameters: client authentication method names,
// validation messages, the printer and the token cache key.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE settings
#include <boost/test/unit_test.hpp>

#include <stampede/error.hpp>
#include <stampede/settings.hpp>
#include <stampede/token_cache_key.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

using stampede::client_auth_method;
using stampede::client_errc;
using stampede::diagnostics;
using stampede::token_source_settings;

namespace {

token_source_settings valid_settings()
{
    token_source_settings settings;
    settings.client_id = "interop-client";
    settings.client_secret = stampede::secret_string("s3cr3t-value");
    settings.token_url = "https://127.0.0.1:8443/token";
    return settings;
}

bool contains(std::string_view text, std::string_view part)
{
    return text.find(part) != std::string_view::npos;
}

struct validation {
    boost::system::error_code ec;
    std::string message;
};

validation check(const token_source_settings& settings)
{
    diagnostics diag;
    validation result;
    result.ec = stampede::validate(settings, diag);
    result.message = diag.client_message();
    return result;
}

std::string printed(const token_source_settings& settings)
{
    std::ostringstream out;
    out << settings;
    return out.str();
}

} // namespace

BOOST_AUTO_TEST_SUITE(auth_method_names)

BOOST_AUTO_TEST_CASE(names_round_trip)
{
    for (auto method : {client_auth_method::json_body, client_auth_method::client_secret_post,
                        client_auth_method::client_secret_basic}) {
        const auto parsed = stampede::parse_client_auth_method(stampede::to_string(method));
        BOOST_TEST_REQUIRE(parsed.has_value());
        BOOST_TEST((*parsed == method));
    }
    BOOST_TEST(stampede::to_string(client_auth_method::client_secret_basic) ==
               "client_secret_basic");
}

BOOST_AUTO_TEST_CASE(other_spellings_rejected)
{
    for (std::string_view name : {"", "basic", "post", "Client_Secret_Basic", "json",
                                  "client_secret_jwt", "client_secret_basic "}) {
        BOOST_TEST(!stampede::parse_client_auth_method(name).has_value(), name);
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(request_parameter_validation)

BOOST_AUTO_TEST_CASE(all_parameters_accepted)
{
    auto settings = valid_settings();
    settings.auth_method = client_auth_method::client_secret_basic;
    settings.scope = "api:read api:write openid";
    settings.audience = "https://api.example.com/";
    settings.resource = "urn:example:api";
    settings.extra_parameters = {{"tenant", "acme"}, {"note", "a&b=c d"}, {"empty", ""}};
    const auto result = check(settings);
    BOOST_TEST(!result.ec, result.message);
}

BOOST_AUTO_TEST_CASE(unknown_auth_method)
{
    auto settings = valid_settings();
    settings.auth_method = static_cast<client_auth_method>(7);
    const auto result = check(settings);
    BOOST_TEST(result.ec == client_errc::invalid_settings);
    BOOST_TEST(contains(result.message, "auth_method has the value 7"));
    BOOST_TEST(contains(result.message, "client_secret_basic"));
}

BOOST_AUTO_TEST_CASE(bad_scopes)
{
    const std::vector<std::pair<std::string, std::string>> cases{
        {"api:read  api:write", "single spaces"},
        {" api:read", "single spaces"},
        {"api:read ", "single spaces"},
        {"api:read\napi:write", "0x0A at offset 8"},
        {"api:read\r", "0x0D"},
        {"say\"hi\"", "0x22"},
        {"back\\slash", "0x5C"},
        {"caf\xc3\xa9", "0xC3"},
        {"tab\there", "0x09"},
    };
    for (const auto& [scope, expected] : cases) {
        BOOST_TEST_CONTEXT(scope)
        {
            auto settings = valid_settings();
            settings.scope = scope;
            const auto result = check(settings);
            BOOST_TEST(result.ec == client_errc::invalid_settings);
            BOOST_TEST(result.message.starts_with("scope "), result.message);
            BOOST_TEST(contains(result.message, expected), result.message);
        }
    }
}

BOOST_AUTO_TEST_CASE(audience_with_line_break)
{
    auto settings = valid_settings();
    settings.audience = "https://api.example.com/\r\nX-Injected: 1";
    const auto result = check(settings);
    BOOST_TEST(result.ec == client_errc::invalid_settings);
    BOOST_TEST(contains(result.message, "audience contains a control character"));
    BOOST_TEST(contains(result.message, "0x0D"));
    BOOST_TEST(contains(result.message, "remove it"));
}

BOOST_AUTO_TEST_CASE(resource_must_be_absolute)
{
    for (std::string_view resource : {"api", "/api", "https://api.example.com/#part",
                                      "https://api.example.com/ x", "urn:example:\napi"}) {
        auto settings = valid_settings();
        settings.resource = std::string(resource);
        const auto result = check(settings);
        BOOST_TEST(result.ec == client_errc::invalid_settings, resource);
        BOOST_TEST(contains(result.message, "resource is not an absolute URI"), resource);
        BOOST_TEST(contains(result.message, "RFC 8707"), resource);
    }
}

BOOST_AUTO_TEST_CASE(bad_extra_parameters)
{
    using parameters = std::vector<std::pair<std::string, std::string>>;
    const std::vector<std::pair<parameters, std::string>> cases{
        {{{"", "x"}}, "extra_parameters[0] has an empty name"},
        {{{"ok", "1"}, {"bad\nname", "x"}}, "extra_parameters[1] has a name with a control "
                                            "character (the byte 0x0A at offset 3)"},
        {{{"tenant", "acme\r\n"}}, "extra_parameters[0] (\"tenant\") has a value with a "
                                   "control character (the byte 0x0D at offset 4)"},
        {{{"tenant", "a\x7f"}}, "0x7F"},
        {{{"grant_type", "password"}}, "always client_credentials"},
        {{{"client_secret", "x"}}, "set client_id and client_secret"},
        {{{"client_id", "x"}}, "auth_method"},
        {{{"scope", "x"}}, "use the settings field of that name"},
        {{{"resource", "urn:x"}}, "\"resource\", a parameter the SDK sets itself"},
        {{{"tenant", "a"}, {"x", "b"}, {"tenant", "c"}},
         "extra_parameters[2] repeats the name \"tenant\" of extra_parameters[0]"},
    };
    for (const auto& [extra, expected] : cases) {
        BOOST_TEST_CONTEXT(expected)
        {
            auto settings = valid_settings();
            settings.extra_parameters = extra;
            const auto result = check(settings);
            BOOST_TEST(result.ec == client_errc::invalid_settings);
            BOOST_TEST(contains(result.message, expected), result.message);
            BOOST_TEST(result.message.find('\n') == std::string::npos);
            BOOST_TEST(result.message.find('\r') == std::string::npos);
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(settings_printer)

BOOST_AUTO_TEST_CASE(secret_redacted_parameters_shown)
{
    auto settings = valid_settings();
    settings.auth_method = client_auth_method::client_secret_post;
    settings.scope = "api:read";
    settings.audience = "https://api.example.com/";
    settings.resource = "urn:example:api";
    settings.extra_parameters = {{"tenant", "acme"}};

    const std::string text = printed(settings);
    BOOST_TEST(!contains(text, "s3cr3t-value"));
    BOOST_TEST(contains(text, "client_secret=[redacted]"));
    BOOST_TEST(contains(text, "auth_method=client_secret_post"));
    BOOST_TEST(contains(text, "scope=api:read"));
    BOOST_TEST(contains(text, "audience=https://api.example.com/"));
    BOOST_TEST(contains(text, "resource=urn:example:api"));
    BOOST_TEST(contains(text, "extra_parameters={tenant=[redacted]}"));
    BOOST_TEST(!contains(text, "acme"));
}

BOOST_AUTO_TEST_CASE(user_info_in_url_not_printed)
{
    auto settings = valid_settings();
    settings.token_url = "https://user:hunter2-pw@example.com/oauth/token";
    const std::string text = printed(settings);
    BOOST_TEST(!contains(text, "hunter2-pw"));
    BOOST_TEST(contains(text, "token_url=https://[redacted]@example.com/oauth/token"));
}

BOOST_AUTO_TEST_CASE(unset_parameters_left_out)
{
    const std::string text = printed(valid_settings());
    BOOST_TEST(contains(text, "auth_method=json_body"));
    BOOST_TEST(!contains(text, "scope="));
    BOOST_TEST(!contains(text, "extra_parameters"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(token_cache_key)

BOOST_AUTO_TEST_CASE(hex_digest_and_stable)
{
    auto settings = valid_settings();
    settings.auth_method = client_auth_method::client_secret_basic;
    settings.scope = "api:read";
    const std::string key = stampede::token_cache_key(settings);
    BOOST_TEST(key.size() == 64u);
    BOOST_TEST(key.find_first_not_of("0123456789abcdef") == std::string::npos);
    BOOST_TEST(stampede::token_cache_key(settings) == key);

    // Fixed by the version 1 encoding (recomputed independently with Python's hashlib): a
    // different value means the keys of existing caches changed.
    BOOST_TEST(key == "ffc0d5d43f1377bd41c7d895c3f52fb0387a9ba5ec25230eb71f5bcfec6df784");
}

BOOST_AUTO_TEST_CASE(every_identity_field_counts)
{
    using mutation = std::function<void(token_source_settings&)>;
    const std::vector<std::pair<std::string, mutation>> mutations{
        {"token_url", [](auto& s) { s.token_url = "https://127.0.0.1:8443/other"; }},
        {"client_id", [](auto& s) { s.client_id = "other-client"; }},
        {"auth_method", [](auto& s) { s.auth_method = client_auth_method::client_secret_post; }},
        {"scope", [](auto& s) { s.scope = "api:read api:write"; }},
        {"audience", [](auto& s) { s.audience = "https://api.example.com/"; }},
        {"resource", [](auto& s) { s.resource = "urn:example:api"; }},
        {"extra name", [](auto& s) { s.extra_parameters = {{"tenant2", "acme"}}; }},
        {"extra value", [](auto& s) { s.extra_parameters = {{"tenant", "acme2"}}; }},
        {"extra added", [](auto& s) { s.extra_parameters.emplace_back("region", "eu"); }},
    };
    auto base = valid_settings();
    base.scope = "api:read";
    base.extra_parameters = {{"tenant", "acme"}};
    const std::string base_key = stampede::token_cache_key(base);

    std::vector<std::string> keys{base_key};
    for (const auto& [name, mutate] : mutations) {
        auto changed = base;
        mutate(changed);
        const std::string key = stampede::token_cache_key(changed);
        BOOST_TEST(key != base_key, name);
        keys.push_back(key);
    }
    std::sort(keys.begin(), keys.end());
    BOOST_TEST((std::adjacent_find(keys.begin(), keys.end()) == keys.end()));
}

BOOST_AUTO_TEST_CASE(field_boundaries_unambiguous)
{
    auto first = valid_settings();
    first.scope = "a";
    first.audience = "bc";
    auto second = valid_settings();
    second.scope = "ab";
    second.audience = "c";
    BOOST_TEST(stampede::token_cache_key(first) != stampede::token_cache_key(second));

    auto third = valid_settings();
    third.extra_parameters = {{"a", "b=c"}};
    auto fourth = valid_settings();
    fourth.extra_parameters = {{"a=b", "c"}};
    BOOST_TEST(stampede::token_cache_key(third) != stampede::token_cache_key(fourth));
}

BOOST_AUTO_TEST_CASE(order_of_scopes_and_extras_ignored)
{
    auto first = valid_settings();
    first.scope = "api:write api:read";
    first.extra_parameters = {{"tenant", "acme"}, {"region", "eu"}};
    auto second = valid_settings();
    second.scope = "api:read api:write api:read";
    second.extra_parameters = {{"region", "eu"}, {"tenant", "acme"}};
    BOOST_TEST(stampede::token_cache_key(first) == stampede::token_cache_key(second));
}

BOOST_AUTO_TEST_CASE(secret_and_timing_ignored)
{
    auto first = valid_settings();
    auto second = valid_settings();
    second.client_secret = stampede::secret_string("rotated-secret");
    second.refresh_ahead = std::chrono::minutes(7);
    second.transport.ca_file = "/etc/ssl/other.pem";
    BOOST_TEST(stampede::token_cache_key(first) == stampede::token_cache_key(second));
}

BOOST_AUTO_TEST_SUITE_END()
