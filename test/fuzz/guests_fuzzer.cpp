// Fuzzes the conversions of the guest model (include/stampede/guests.hpp) with the input
// as a response body of `GET /v1/guests` or `GET /v1/guests/{id}`.
//
// A body that converts must convert back to JSON and again to an equal record. A body
// that does not must fail with `client_errc::malformed_response` in a
// `boost::system::system_error`, the only exception the guest operations catch. Any other
// exception escapes and counts as a crash.

#include "fuzz_support.hpp"

#include <stampede/error.hpp>
#include <stampede/guests.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>

#include <sstream>

namespace {

namespace fuzz = stampede::fuzz;

namespace json = boost::json;

template <class T>
void check_conversion(const json::value& body)
{
    T record;
    try {
        record = json::value_to<T>(body);
    } catch (const boost::system::system_error& e) {
        fuzz::check(e.code() == stampede::client_errc::malformed_response,
                    "a conversion failed with an unexpected code", e.what());
        return;
    }

    const json::value written = json::value_from(record);
    T again;
    try {
        again = json::value_to<T>(written);
    } catch (const boost::system::system_error& e) {
        fuzz::fail("a converted record does not convert back", e.what());
    }
    fuzz::check(again == record, "a record changed on its way through JSON");

    std::ostringstream printed;
    printed << record;
    fuzz::check(!printed.str().empty(), "a record prints as nothing");
}

// The record of a single-guest body: `{"data": {...}}` or a bare guest object, as
// `guests::async_get` reads it.
const json::value& single_guest(const json::value& body)
{
    if (const auto* object = body.if_object()) {
        if (const auto* data = object->if_contains("data")) {
            return *data;
        }
    }
    return body;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    boost::system::error_code ec;
    const json::value body = json::parse(fuzz::as_text(data, size), ec);
    if (ec) {
        return 0;
    }
    check_conversion<stampede::guest_page>(body);
    check_conversion<stampede::guest>(single_guest(body));
    return 0;
}
