#include <stampede/guests.hpp>

#include <stampede/error.hpp>

#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include <charconv>
#include <cmath>
#include <limits>
#include <ostream>
#include <set>

namespace stampede {

namespace json = boost::json;
namespace http = boost::beast::http;
namespace urls = boost::urls;

using boost::system::error_code;

namespace {

constexpr std::string_view guests_path = "/v1/guests";

[[noreturn]] void throw_malformed(std::string_view field, std::string_view expected)
{
    throw boost::system::system_error(make_error_code(client_errc::malformed_response),
                                      "invalid guest JSON: " + std::string(field) + " is not " +
                                          std::string(expected));
}

const json::object& object_of(const json::value& value, std::string_view field)
{
    if (!value.is_object()) {
        throw_malformed(field, "an object");
    }
    return value.get_object();
}

// Returns the member, or nullptr when it is missing or null.
const json::value* member(const json::object& object, std::string_view key)
{
    const json::value* value = object.if_contains(key);
    return value == nullptr || value->is_null() ? nullptr : value;
}

std::optional<std::string> optional_string(const json::object& object, std::string_view key,
                                           std::string_view field)
{
    const json::value* value = member(object, key);
    if (value == nullptr) {
        return std::nullopt;
    }
    if (!value->is_string()) {
        throw_malformed(field, "a string or null");
    }
    return std::string(value->get_string());
}

// Reads a number, also from a numeric string, because some servers send decimals that way.
std::optional<double> optional_number(const json::object& object, std::string_view key,
                                      std::string_view field)
{
    const json::value* value = member(object, key);
    if (value == nullptr) {
        return std::nullopt;
    }
    if (value->is_number()) {
        // Boost.JSON 1.81 reads some numbers, such as 0e400, as NaN or infinity.
        const double number = value->to_number<double>();
        if (std::isfinite(number)) {
            return number;
        }
    } else if (value->is_string()) {
        const json::string& text = value->get_string();
        double number = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
        if (ec == std::errc{} && end == text.data() + text.size() && std::isfinite(number)) {
            return number;
        }
    }
    throw_malformed(field, "a number or null");
}

std::optional<std::int64_t> optional_integer(const json::object& object, std::string_view key,
                                             std::string_view field)
{
    const std::optional<double> number = optional_number(object, key, field);
    if (!number) {
        return std::nullopt;
    }
    if (const json::value* value = object.if_contains(key); value->is_int64()) {
        return value->get_int64();
    }
    // 2^63 is exactly representable, and the first value out of range.
    constexpr double limit = 9223372036854775808.0;
    if (std::trunc(*number) != *number || *number >= limit || *number < -limit) {
        throw_malformed(field, "an integer or null");
    }
    return static_cast<std::int64_t>(*number);
}

std::optional<int> optional_int(const json::object& object, std::string_view key,
                                std::string_view field)
{
    const std::optional<std::int64_t> number = optional_integer(object, key, field);
    if (!number) {
        return std::nullopt;
    }
    if (*number < std::numeric_limits<int>::min() || *number > std::numeric_limits<int>::max()) {
        throw_malformed(field, "an integer in the range of int");
    }
    return static_cast<int>(*number);
}

std::optional<json::array> optional_array(const json::object& object, std::string_view key,
                                          std::string_view field)
{
    const json::value* value = member(object, key);
    if (value == nullptr) {
        return std::nullopt;
    }
    if (!value->is_array()) {
        throw_malformed(field, "an array or null");
    }
    return value->get_array();
}

template <class T>
json::value optional_to_json(const std::optional<T>& value)
{
    return value ? json::value_from(*value) : json::value(nullptr);
}

// Adds `key` to `out` when `value` is set.
template <class T>
void put_if_set(json::object& out, std::string_view key, const std::optional<T>& value)
{
    if (value) {
        out[key] = json::value_from(*value);
    }
}

// Returns the record of a single-guest response: `{"data": {...}}`, or a bare guest object.
const json::value& unwrap_guest(const json::value& body)
{
    const json::object& object = object_of(body, "the response body");
    if (const json::value* data = object.if_contains("data"); data != nullptr) {
        return *data;
    }
    return body;
}

std::string page_target(const guest_query& query)
{
    urls::url url;
    url.set_path(guests_path);
    if (!query.search.empty()) {
        url.params().append({"search", query.search});
    }
    if (query.limit) {
        url.params().append({"limit", std::to_string(*query.limit)});
    }
    if (!query.cursor.empty()) {
        url.params().append({"cursor", query.cursor});
    }
    return std::string(url.encoded_resource());
}

// Returns the target of the page after `next`, the `links.next` of a page. A bare value
// is a cursor, passed with the same search. A URL (absolute, or a path) is followed by
// its query alone, sent to the client's own base URL, so that a link can never send the
// bearer token to another host.
error_code next_page_target(std::string_view next, const std::string& search, std::string& out,
                            diagnostics& diag)
{
    if (!next.starts_with('/') && next.find("://") == std::string_view::npos) {
        out = page_target(guest_query{search, std::nullopt, std::string(next)});
        return {};
    }
    const auto parsed = urls::parse_uri_reference(next);
    if (!parsed || !parsed->has_query()) {
        diag.set_client_message("GET /v1/guests: links.next is a URL without a query, so the "
                                "next page cannot be requested");
        return client_errc::malformed_response;
    }
    out = std::string(guests_path) + "?" + std::string(parsed->encoded_query());
    return {};
}

// Runs `conversion`, which reads the JSON body. A mismatch gives `malformed_response`,
// with the field named in the client message.
template <class Conversion>
error_code convert(std::string_view request, diagnostics& diag, Conversion&& conversion)
{
    try {
        conversion();
        return {};
    } catch (const boost::system::system_error& e) {
        diag.set_client_message(std::string(request) + ": " + e.what());
        return client_errc::malformed_response;
    }
}

} // namespace

// Conversions from JSON.
// -----------------------------------------------------------------------------------------

guest_profile_tag tag_invoke(json::value_to_tag<guest_profile_tag>, const json::value& in)
{
    const json::object& object = object_of(in, "organization_profile_tags[]");
    guest_profile_tag out;
    out.id = optional_integer(object, "id", "organization_profile_tags[].id").value_or(0);
    out.organization_registration_id =
        optional_integer(object, "organization_registration_id",
                         "organization_profile_tags[].organization_registration_id")
            .value_or(0);
    out.tag_id =
        optional_integer(object, "tag_id", "organization_profile_tags[].tag_id").value_or(0);
    return out;
}

guest_user_profile tag_invoke(json::value_to_tag<guest_user_profile>, const json::value& in)
{
    const json::object& object = object_of(in, "user_profile");
    guest_user_profile out;
    out.id = optional_integer(object, "id", "user_profile.id").value_or(0);
    out.email = optional_string(object, "email", "user_profile.email");
    out.first = optional_string(object, "first", "user_profile.first");
    out.last = optional_string(object, "last", "user_profile.last");
    out.phone = optional_string(object, "phone", "user_profile.phone");
    out.verified = optional_integer(object, "verified", "user_profile.verified");
    out.lat = optional_number(object, "lat", "user_profile.lat");
    out.lng = optional_number(object, "lng", "user_profile.lng");
    out.birth_day = optional_int(object, "birth_day", "user_profile.birth_day");
    out.birth_month = optional_int(object, "birth_month", "user_profile.birth_month");
    out.postcode = optional_string(object, "postcode", "user_profile.postcode");
    out.country = optional_string(object, "country", "user_profile.country");
    out.gender = optional_string(object, "gender", "user_profile.gender");
    return out;
}

guest tag_invoke(json::value_to_tag<guest>, const json::value& in)
{
    const json::object& object = object_of(in, "guest");
    guest out;
    out.id = optional_string(object, "id", "id").value_or("");
    out.organization_id =
        optional_string(object, "organization_id", "organization_id").value_or("");
    out.profile_id = optional_integer(object, "profile_id", "profile_id").value_or(0);
    out.last_interacted_at = optional_string(object, "last_interacted_at", "last_interacted_at");
    out.created_at = optional_string(object, "created_at", "created_at");
    out.data_opt_in_at = optional_string(object, "data_opt_in_at", "data_opt_in_at");
    out.sms_opt_in_at = optional_string(object, "sms_opt_in_at", "sms_opt_in_at");
    out.email_opt_in_at = optional_string(object, "email_opt_in_at", "email_opt_in_at");
    if (const json::value* profile = member(object, "user_profile")) {
        out.user_profile = json::value_to<guest_user_profile>(*profile);
    }
    if (auto tags = optional_array(object, "organization_profile_tags",
                                   "organization_profile_tags")) {
        for (const json::value& tag : *tags) {
            out.organization_profile_tags.push_back(json::value_to<guest_profile_tag>(tag));
        }
    }
    out.organization_registration_personalisation_choice =
        optional_array(object, "organization_registration_personalisation_choice",
                       "organization_registration_personalisation_choice");
    out.custom_question_answers =
        optional_array(object, "custom_question_answers", "custom_question_answers");
    return out;
}

guest_links tag_invoke(json::value_to_tag<guest_links>, const json::value& in)
{
    const json::object& object = object_of(in, "links");
    guest_links out;
    out.first = optional_string(object, "first", "links.first");
    out.last = optional_string(object, "last", "links.last");
    out.next = optional_string(object, "next", "links.next");
    out.prev = optional_string(object, "prev", "links.prev");
    return out;
}

guest_page tag_invoke(json::value_to_tag<guest_page>, const json::value& in)
{
    const json::object& object = object_of(in, "the response body");
    const json::value* data = object.if_contains("data");
    if (data == nullptr || !data->is_array()) {
        throw_malformed("data", "an array");
    }
    guest_page out;
    out.data.reserve(data->get_array().size());
    for (const json::value& item : data->get_array()) {
        out.data.push_back(json::value_to<guest>(item));
    }
    if (const json::value* links = member(object, "links")) {
        out.links = json::value_to<guest_links>(*links);
    }
    return out;
}

// Conversions to JSON.
// -----------------------------------------------------------------------------------------

void tag_invoke(json::value_from_tag, json::value& out, const guest_profile_tag& tag)
{
    out = json::object{{"id", tag.id},
                       {"organization_registration_id", tag.organization_registration_id},
                       {"tag_id", tag.tag_id}};
}

void tag_invoke(json::value_from_tag, json::value& out, const guest_user_profile& profile)
{
    out = json::object{
        {"id", profile.id},
        {"email", optional_to_json(profile.email)},
        {"first", optional_to_json(profile.first)},
        {"last", optional_to_json(profile.last)},
        {"phone", optional_to_json(profile.phone)},
        {"verified", optional_to_json(profile.verified)},
        {"lat", optional_to_json(profile.lat)},
        {"lng", optional_to_json(profile.lng)},
        {"birth_day", optional_to_json(profile.birth_day)},
        {"birth_month", optional_to_json(profile.birth_month)},
        {"postcode", optional_to_json(profile.postcode)},
        {"country", optional_to_json(profile.country)},
        {"gender", optional_to_json(profile.gender)},
    };
}

void tag_invoke(json::value_from_tag, json::value& out, const guest& g)
{
    out = json::object{
        {"id", g.id},
        {"organization_id", g.organization_id},
        {"profile_id", g.profile_id},
        {"last_interacted_at", optional_to_json(g.last_interacted_at)},
        {"created_at", optional_to_json(g.created_at)},
        {"data_opt_in_at", optional_to_json(g.data_opt_in_at)},
        {"sms_opt_in_at", optional_to_json(g.sms_opt_in_at)},
        {"email_opt_in_at", optional_to_json(g.email_opt_in_at)},
        {"user_profile", json::value_from(g.user_profile)},
        {"organization_profile_tags", json::value_from(g.organization_profile_tags)},
        {"organization_registration_personalisation_choice",
         optional_to_json(g.organization_registration_personalisation_choice)},
        {"custom_question_answers", optional_to_json(g.custom_question_answers)},
    };
}

void tag_invoke(json::value_from_tag, json::value& out, const guest_links& links)
{
    out = json::object{{"first", optional_to_json(links.first)},
                       {"last", optional_to_json(links.last)},
                       {"next", optional_to_json(links.next)},
                       {"prev", optional_to_json(links.prev)}};
}

void tag_invoke(json::value_from_tag, json::value& out, const guest_page& page)
{
    out = json::object{{"data", json::value_from(page.data)},
                       {"links", json::value_from(page.links)}};
}

void tag_invoke(json::value_from_tag, json::value& out, const new_guest& g)
{
    json::object profile{{"email", g.email}};
    put_if_set(profile, "first", g.first);
    put_if_set(profile, "last", g.last);
    put_if_set(profile, "phone", g.phone);
    put_if_set(profile, "lat", g.lat);
    put_if_set(profile, "lng", g.lng);
    put_if_set(profile, "birth_day", g.birth_day);
    put_if_set(profile, "birth_month", g.birth_month);
    put_if_set(profile, "postcode", g.postcode);
    put_if_set(profile, "country", g.country);
    put_if_set(profile, "gender", g.gender);
    out = json::object{{"user_profile", std::move(profile)},
                       {"data_opt_in", g.data_opt_in},
                       {"sms_opt_in", g.sms_opt_in},
                       {"email_opt_in", g.email_opt_in}};
}

std::ostream& operator<<(std::ostream& os, const guest& g)
{
    return os << json::serialize(json::value_from(g));
}

std::ostream& operator<<(std::ostream& os, const guest_page& page)
{
    return os << json::serialize(json::value_from(page));
}

std::ostream& operator<<(std::ostream& os, const new_guest& g)
{
    return os << json::serialize(json::value_from(g));
}

// Operations.
// -----------------------------------------------------------------------------------------

namespace detail {

namespace {

// Sends `GET target` and converts the JSON body to a page.
// Takes `target` by reference because GCC 12 miscompiles class temporaries passed by value
// in a co_await expression.
boost::asio::awaitable<error_code> fetch_page(api_client_impl& impl, const std::string& target,
                                              guest_page& out, diagnostics& diag)
{
    request_spec spec{http::verb::get, target, std::nullopt, {}};
    spec.options.parse_json = true;
    api_response response;
    if (error_code ec = co_await send_request(impl, spec, response, diag)) {
        co_return ec;
    }
    co_return convert("GET /v1/guests", diag,
                      [&] { out = json::value_to<guest_page>(response.json()); });
}

} // namespace

boost::asio::awaitable<op_result<guest_page>> list_guests(std::shared_ptr<api_client_impl> impl,
                                                          guest_query query)
{
    op_result<guest_page> result;
    co_await begin_operation();
    const std::string target = page_target(query);
    result.ec = co_await fetch_page(*impl, target, result.value, result.diag);
    co_return result;
}

boost::asio::awaitable<op_result<std::vector<guest>>>
list_all_guests(std::shared_ptr<api_client_impl> impl, std::string search)
{
    op_result<std::vector<guest>> result;
    co_await begin_operation();

    std::string target = page_target(guest_query{search, std::nullopt, {}});
    std::set<std::string> seen_links;
    for (;;) {
        guest_page page;
        if (error_code ec = co_await fetch_page(*impl, target, page, result.diag)) {
            result.ec = ec;
            result.value.clear();
            co_return result;
        }
        std::move(page.data.begin(), page.data.end(), std::back_inserter(result.value));

        if (!page.links.next || page.links.next->empty()) {
            co_return result;
        }
        if (!seen_links.insert(*page.links.next).second) {
            result.diag.set_client_message(
                "GET /v1/guests: links.next repeats an earlier page, so the pages never end");
            result.ec = client_errc::malformed_response;
            result.value.clear();
            co_return result;
        }
        if (error_code ec = next_page_target(*page.links.next, search, target, result.diag)) {
            result.ec = ec;
            result.value.clear();
            co_return result;
        }
    }
}

boost::asio::awaitable<op_result<guest>> get_guest(std::shared_ptr<api_client_impl> impl,
                                                   std::string id)
{
    op_result<guest> result;
    co_await begin_operation();
    if (id.empty()) {
        result.diag.set_client_message("GET /v1/guests/{id}: the guest id is empty");
        result.ec = make_error_code(boost::system::errc::invalid_argument);
        co_return result;
    }

    // The id becomes one path segment, with '/', '?', '%' and the like percent-encoded.
    urls::url url;
    url.set_path(guests_path);
    url.segments().push_back(id);
    request_spec spec{http::verb::get, std::string(url.encoded_path()), std::nullopt, {}};
    spec.options.parse_json = true;

    api_response response;
    result.ec = co_await send_request(*impl, spec, response, result.diag);
    if (!result.ec) {
        result.ec = convert("GET /v1/guests/{id}", result.diag, [&] {
            result.value = json::value_to<guest>(unwrap_guest(response.json()));
        });
    }
    co_return result;
}

boost::asio::awaitable<op_result<guest>> create_guest(std::shared_ptr<api_client_impl> impl,
                                                      new_guest fields)
{
    op_result<guest> result;
    co_await begin_operation();

    request_spec spec{http::verb::post, std::string(guests_path), json::value_from(fields), {}};
    spec.options.parse_json = true;
    api_response response;
    result.ec = co_await send_request(*impl, spec, response, result.diag);
    if (!result.ec) {
        result.ec = convert("POST /v1/guests", result.diag, [&] {
            result.value = json::value_to<guest>(unwrap_guest(response.json()));
        });
    }
    co_return result;
}

} // namespace detail

} // namespace stampede
