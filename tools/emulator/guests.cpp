// Guest records behind /v1/guests: deterministic seed data, search, cursor
// pagination and validated creation.

#include "emulator_service.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>

namespace stampede::emulator::detail {

namespace {

namespace json = boost::json;

constexpr std::size_t max_page_size = 25;
constexpr std::size_t max_text_length = 255;

constexpr std::array<std::string_view, 16> first_names{
    "Olivia", "Noah",  "Charlotte", "Oliver", "Amelia", "Jack",  "Isla",  "William",
    "Mia",    "Henry", "Ava",       "Leo",    "Grace",  "Lucas", "Chloe", "Thomas"};

constexpr std::array<std::string_view, 13> last_names{
    "Smith",  "Jones",      "Williams", "Brown",  "Wilson",  "Taylor", "Nguyen",
    "Martin", "Nikolaidis", "Singh",    "Walker", "O'Brien", "Chen"};

struct city {
    double lat;
    double lng;
    std::string_view postcode;
};

constexpr std::array<city, 3> cities{{
    {-33.8688, 151.2093, "2000"},
    {-37.8136, 144.9631, "3000"},
    {-27.4698, 153.0251, "4000"},
}};

// Profile fields that only the single-guest form contains.
constexpr std::array<std::string_view, 8> detail_profile_fields{
    "verified", "lat", "lng", "birth_day", "birth_month", "postcode", "country", "gender"};

std::uint64_t mix(std::uint64_t x)
{
    // splitmix64 finaliser: spreads consecutive seeds over all bits.
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Formats a deterministic id in the layout of a version 4 UUID.
std::string uuid_from(std::uint64_t seed)
{
    std::uint64_t high = mix(seed);
    std::uint64_t low = mix(high ^ seed);
    high = (high & ~0xf000ULL) | 0x4000ULL;
    low = (low & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
    char text[40];
    std::snprintf(text, sizeof text, "%08llx-%04llx-%04llx-%04llx-%012llx",
                  static_cast<unsigned long long>(high >> 32),
                  static_cast<unsigned long long>((high >> 16) & 0xffff),
                  static_cast<unsigned long long>(high & 0xffff),
                  static_cast<unsigned long long>(low >> 48),
                  static_cast<unsigned long long>(low & 0xffffffffffffULL));
    return text;
}

std::string lower(std::string_view text)
{
    std::string result(text);
    std::transform(result.begin(), result.end(), result.begin(), [](char c) {
        return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    });
    return result;
}

json::value optional_time(bool present, system_clock::time_point time)
{
    if (!present) {
        return nullptr;
    }
    return json::string(format_iso8601(time));
}

json::object seeded_guest(std::size_t i, std::string_view organization_id)
{
    using namespace std::chrono;
    auto created = sys_days{year{2023} / January / 1} + hours(37 * i) + minutes((13 * i) % 60);
    std::string first(first_names[i % first_names.size()]);
    std::string last(last_names[(i * 7) % last_names.size()]);
    std::string email = lower(first) + "." + lower(last);
    std::erase(email, '\'');
    email += "." + std::to_string(i + 1) + "@example.com";

    char phone[24];
    std::snprintf(phone, sizeof phone, "+61 4%02zu %03zu %03zu", i % 100, (i * 37) % 1000,
                  (i * 91) % 1000);

    const city* place = (i % 4 == 3) ? nullptr : &cities[i % cities.size()];
    std::array<json::value, 4> genders{"female", "male", nullptr, "non-binary"};

    json::object profile{
        {"id", 900001 + i},
        {"email", email},
        {"first", first},
        {"last", last},
        {"phone", phone},
        {"verified", i % 2},
        {"lat", place ? json::value(place->lat) : json::value(nullptr)},
        {"lng", place ? json::value(place->lng) : json::value(nullptr)},
        {"birth_day", i % 5 == 0 ? json::value(nullptr) : json::value(1 + i % 28)},
        {"birth_month", i % 5 == 0 ? json::value(nullptr) : json::value(1 + i % 12)},
        {"postcode", place ? json::value(json::string(place->postcode)) : json::value(nullptr)},
        {"country", place ? json::value("AU") : json::value(nullptr)},
        {"gender", genders[i % genders.size()]},
    };

    json::array tags;
    for (std::size_t k = 0; k < i % 3; ++k) {
        tags.push_back(json::object{{"id", 70000 + 3 * i + k},
                                    {"organization_registration_id", 30001 + i},
                                    {"tag_id", 11 + (i + k) % 6}});
    }
    json::array choices;
    if (i % 2 == 0) {
        choices.push_back(json::object{
            {"id", 40001 + i}, {"personalisation_choice_id", 21 + i % 4}, {"value", true}});
    }
    json::array answers;
    if (i % 3 == 0) {
        answers.push_back(json::object{{"id", 60001 + i},
                                       {"custom_question_id", 5 + i % 3},
                                       {"answer", i % 2 == 0 ? "Weekly" : "Monthly"}});
    }

    return json::object{
        {"id", uuid_from(i + 1)},
        {"organization_id", organization_id},
        {"profile_id", 500001 + i},
        {"last_interacted_at", optional_time(i % 7 != 6, created + days(i % 30))},
        {"created_at", format_iso8601(created)},
        {"data_opt_in_at", optional_time(i % 2 == 0, created)},
        {"sms_opt_in_at", optional_time(i % 3 == 0, created + minutes(5))},
        {"email_opt_in_at", optional_time(i % 4 != 3, created + minutes(1))},
        {"user_profile", std::move(profile)},
        {"organization_profile_tags", std::move(tags)},
        {"organization_registration_personalisation_choice", std::move(choices)},
        {"custom_question_answers", std::move(answers)},
    };
}

http_reply validation_reply(const json::object& errors, std::string_view first_message)
{
    return make_json_reply(422, json::object{{"error", "validation_failed"},
                                             {"error_description", first_message},
                                             {"errors", errors}});
}

http_reply single_field_error(std::string_view field, std::string_view message)
{
    json::object errors{{field, json::array{json::string(message)}}};
    return validation_reply(errors, message);
}

struct page_request {
    std::string search;
    std::size_t limit = max_page_size;
    std::size_t offset = 0;
};

std::string encode_cursor(const page_request& page)
{
    json::object state{{"o", page.offset}, {"l", page.limit}, {"s", page.search}};
    return base64url_encode(json::serialize(state));
}

std::optional<page_request> decode_cursor(std::string_view cursor)
{
    auto text = base64url_decode(cursor);
    if (!text) {
        return std::nullopt;
    }
    boost::system::error_code error;
    auto state = json::parse(*text, error);
    if (error || !state.is_object()) {
        return std::nullopt;
    }
    const auto& object = state.as_object();
    const auto* offset = object.if_contains("o");
    const auto* limit = object.if_contains("l");
    const auto* search = object.if_contains("s");
    auto is_count = [](const json::value* value) {
        return value != nullptr &&
               ((value->is_int64() && value->as_int64() >= 0) || value->is_uint64());
    };
    if (!is_count(offset) || !is_count(limit) || search == nullptr || !search->is_string()) {
        return std::nullopt;
    }
    page_request page;
    page.offset = offset->to_number<std::size_t>();
    page.limit = limit->to_number<std::size_t>();
    page.search = std::string(search->as_string());
    if (page.limit == 0 || page.limit > max_page_size) {
        return std::nullopt;
    }
    return page;
}

// Checks the fields of a guest creation request and collects messages per field.
class guest_validator {
public:
    explicit guest_validator(const json::object& source)
        : source_(source)
    {}

    json::value text(std::string_view field, bool required)
    {
        const auto* value = source_.if_contains(field);
        if (value == nullptr || value->is_null()) {
            if (required) {
                fail(field, "The " + std::string(field) + " field is required.");
            }
            return nullptr;
        }
        if (!value->is_string()) {
            fail(field, "The " + std::string(field) + " field must be a string.");
            return nullptr;
        }
        if (value->as_string().size() > max_text_length) {
            fail(field, "The " + std::string(field) + " field must not exceed 255 characters.");
            return nullptr;
        }
        return *value;
    }

    json::value integer(std::string_view field, std::int64_t low, std::int64_t high)
    {
        const auto* value = source_.if_contains(field);
        if (value == nullptr || value->is_null()) {
            return nullptr;
        }
        if (!value->is_int64() && !value->is_uint64()) {
            fail(field, "The " + std::string(field) + " field must be an integer.");
            return nullptr;
        }
        auto number = value->is_int64() ? value->as_int64() : std::int64_t(-1);
        if (number < low || number > high) {
            fail(field, "The " + std::string(field) + " field must be from " + std::to_string(low) +
                            " to " + std::to_string(high) + ".");
            return nullptr;
        }
        return number;
    }

    json::value number(std::string_view field, double low, double high)
    {
        const auto* value = source_.if_contains(field);
        if (value == nullptr || value->is_null()) {
            return nullptr;
        }
        if (!value->is_number()) {
            fail(field, "The " + std::string(field) + " field must be a number.");
            return nullptr;
        }
        double number = value->to_number<double>();
        if (number < low || number > high) {
            fail(field, "The " + std::string(field) + " field is out of range.");
            return nullptr;
        }
        return number;
    }

    bool flag(const json::object& object, std::string_view field)
    {
        const auto* value = object.if_contains(field);
        if (value == nullptr || value->is_null()) {
            return false;
        }
        if (!value->is_bool()) {
            fail(field, "The " + std::string(field) + " field must be true or false.");
            return false;
        }
        return value->get_bool();
    }

    void fail(std::string_view field, std::string message)
    {
        if (first_message_.empty()) {
            first_message_ = message;
        }
        auto& list = errors_[field];
        if (!list.is_array()) {
            list = json::array();
        }
        list.as_array().emplace_back(message);
    }

    bool ok() const { return errors_.empty(); }
    const json::object& errors() const { return errors_; }
    const std::string& first_message() const { return first_message_; }

private:
    const json::object& source_;
    json::object errors_;
    std::string first_message_;
};

bool is_email(std::string_view email)
{
    auto at = email.find('@');
    if (at == 0 || at == std::string_view::npos || email.find('@', at + 1) != email.npos) {
        return false;
    }
    auto domain = email.substr(at + 1);
    auto dot = domain.find('.');
    return dot != 0 && dot != domain.npos && !domain.ends_with('.') &&
           std::none_of(email.begin(), email.end(),
                        [](char c) { return c == ' ' || c == '\t' || c < ' '; });
}

} // namespace

guest_store::guest_store(std::size_t seeded_count)
{
    std::string organization_id = uuid_from(0);
    records_.reserve(seeded_count);
    for (std::size_t i = 0; i < seeded_count; ++i) {
        add(seeded_guest(i, organization_id));
    }
    next_number_ = static_cast<std::int64_t>(seeded_count);
}

void guest_store::add(json::object guest)
{
    const auto& profile = guest.at("user_profile").as_object();
    std::string email(profile.at("email").as_string());
    std::string search_text;
    for (const auto* field : {"first", "last"}) {
        const auto& value = profile.at(field);
        if (value.is_string()) {
            search_text += lower(value.as_string());
        }
        search_text += ' ';
    }
    search_text += lower(email);

    index_by_id_.emplace(std::string(guest.at("id").as_string()), records_.size());
    emails_.insert(lower(email));
    records_.push_back(record{std::move(guest), std::move(search_text)});
}

json::object guest_store::list_form(const record& guest) const
{
    json::object summary = guest.full;
    summary.erase("organization_registration_personalisation_choice");
    summary.erase("custom_question_answers");
    auto& profile = summary.at("user_profile").as_object();
    for (auto field : detail_profile_fields) {
        profile.erase(field);
    }
    return summary;
}

http_reply guest_store::list(const query_params& query) const
{
    page_request page;
    std::optional<std::string_view> cursor;
    for (const auto& [key, value] : query) {
        if (key == "search") {
            page.search = value;
        } else if (key == "cursor") {
            cursor = value;
        } else if (key == "limit") {
            std::size_t limit = 0;
            auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), limit);
            if (error != std::errc{} || end != value.data() + value.size() || limit == 0 ||
                limit > max_page_size) {
                return single_field_error("limit", "The limit field must be from 1 to 25.");
            }
            page.limit = limit;
        }
    }
    // A cursor carries the search and page size it was made for, and they take precedence.
    if (cursor && !cursor->empty()) {
        auto decoded = decode_cursor(*cursor);
        if (!decoded) {
            return single_field_error("cursor", "The cursor is invalid.");
        }
        page = *decoded;
    }

    std::string needle = lower(page.search);
    std::vector<std::size_t> matches;
    for (std::size_t i = 0; i < records_.size(); ++i) {
        if (records_[i].search_text.find(needle) != std::string::npos) {
            matches.push_back(i);
        }
    }

    json::array data;
    for (std::size_t i = page.offset; i < matches.size() && i < page.offset + page.limit; ++i) {
        data.push_back(list_form(records_[matches[i]]));
    }

    auto cursor_at = [&](std::size_t offset) {
        page_request target = page;
        target.offset = offset;
        return json::value(json::string(encode_cursor(target)));
    };
    std::size_t last_offset = matches.empty() ? 0 : (matches.size() - 1) / page.limit * page.limit;
    json::object links{
        {"first", cursor_at(0)},
        {"last", cursor_at(last_offset)},
        {"next", page.offset + page.limit < matches.size() ? cursor_at(page.offset + page.limit)
                                                           : json::value(nullptr)},
        {"prev", page.offset == 0
                     ? json::value(nullptr)
                     : cursor_at(page.offset > page.limit ? page.offset - page.limit : 0)},
    };
    return make_json_reply(200,
                           json::object{{"data", std::move(data)}, {"links", std::move(links)}});
}

http_reply guest_store::get(std::string_view id) const
{
    auto found = index_by_id_.find(std::string(id));
    if (found == index_by_id_.end()) {
        return make_error_reply(404, "not_found", "no guest with id '" + std::string(id) + "'");
    }
    return make_json_reply(200, json::object{{"data", records_[found->second].full}});
}

http_reply guest_store::create(std::string_view content_type, std::string_view body,
                               system_clock::time_point now)
{
    if (!is_json_content_type(content_type)) {
        return make_error_reply(415, "unsupported_media_type",
                                "Content-Type must be application/json");
    }
    boost::system::error_code error;
    auto parsed = json::parse(body, error);
    if (error || !parsed.is_object()) {
        return single_field_error("body", "The request body must be a JSON object.");
    }
    const auto& request = parsed.as_object();

    // Profile fields come from a "user_profile" object when there is one, else from the top level.
    const auto* nested = request.if_contains("user_profile");
    if (nested != nullptr && !nested->is_object()) {
        return single_field_error("user_profile", "The user_profile field must be an object.");
    }
    const json::object& source = nested ? nested->as_object() : request;
    guest_validator check(source);

    auto email = check.text("email", true);
    if (email.is_string()) {
        std::string_view address = email.as_string();
        if (!is_email(address)) {
            check.fail("email", "The email field must be a valid email address.");
        } else if (emails_.contains(lower(address))) {
            check.fail("email", "The email has already been taken.");
        }
    }
    json::object profile{
        {"id", 900001 + records_.size()},
        {"email", email},
        {"first", check.text("first", false)},
        {"last", check.text("last", false)},
        {"phone", check.text("phone", false)},
        {"verified", 0},
        {"lat", check.number("lat", -90, 90)},
        {"lng", check.number("lng", -180, 180)},
        {"birth_day", check.integer("birth_day", 1, 31)},
        {"birth_month", check.integer("birth_month", 1, 12)},
        {"postcode", check.text("postcode", false)},
        {"country", check.text("country", false)},
        {"gender", check.text("gender", false)},
    };
    bool data_opt_in = check.flag(request, "data_opt_in");
    bool sms_opt_in = check.flag(request, "sms_opt_in");
    bool email_opt_in = check.flag(request, "email_opt_in");
    if (!check.ok()) {
        return validation_reply(check.errors(), check.first_message());
    }

    // Created ids continue the seeded sequence far above it, so they never collide.
    std::string id = uuid_from(0x100000000ULL + static_cast<std::uint64_t>(next_number_++));
    json::object guest{
        {"id", id},
        {"organization_id", uuid_from(0)},
        {"profile_id", 500001 + records_.size()},
        {"last_interacted_at", format_iso8601(now)},
        {"created_at", format_iso8601(now)},
        {"data_opt_in_at", optional_time(data_opt_in, now)},
        {"sms_opt_in_at", optional_time(sms_opt_in, now)},
        {"email_opt_in_at", optional_time(email_opt_in, now)},
        {"user_profile", std::move(profile)},
        {"organization_profile_tags", json::array()},
        {"organization_registration_personalisation_choice", json::array()},
        {"custom_question_answers", json::array()},
    };
    add(guest);

    auto reply = make_json_reply(201, json::object{{"data", std::move(guest)}});
    reply.headers.emplace_back("Location", "/v1/guests/" + id);
    return reply;
}

} // namespace stampede::emulator::detail
