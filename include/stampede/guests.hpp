#ifndef STAMPEDE_GUESTS_HPP
#define STAMPEDE_GUESTS_HPP

#include <stampede/api_client.hpp>

#include <boost/json/array.hpp>
#include <boost/json/conversion.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace stampede {

// The guest records of `/v1/guests`. Fields follow the JSON names. A missing or null field
// leaves an `std::optional` empty and any other member at its default. Unknown fields are
// ignored. A field of the wrong JSON type fails the conversion with
// `client_errc::malformed_response`. Timestamps are kept as the strings the server sends.

/// A tag on a guest's registration with the organisation.
struct guest_profile_tag {
    std::int64_t id = 0;
    std::int64_t organization_registration_id = 0;
    std::int64_t tag_id = 0;

    friend bool operator==(const guest_profile_tag&, const guest_profile_tag&) = default;
};

/// The person behind a guest record.
struct guest_user_profile {
    std::int64_t id = 0;
    std::optional<std::string> email;
    std::optional<std::string> first;
    std::optional<std::string> last;
    std::optional<std::string> phone;

    // The fields below are sent only for a single guest (`guests::async_get` and
    // `guests::async_create`), and are empty in list pages.

    /// Whether the profile is verified, as a number (0 or 1).
    std::optional<std::int64_t> verified;
    std::optional<double> lat;
    std::optional<double> lng;
    std::optional<int> birth_day;
    std::optional<int> birth_month;
    std::optional<std::string> postcode;
    std::optional<std::string> country;
    std::optional<std::string> gender;

    friend bool operator==(const guest_user_profile&, const guest_user_profile&) = default;
};

/// A guest: a person's registration with the organisation.
struct guest {
    std::string id;
    std::string organization_id;
    std::int64_t profile_id = 0;
    std::optional<std::string> last_interacted_at;
    std::optional<std::string> created_at;
    std::optional<std::string> data_opt_in_at;
    std::optional<std::string> sms_opt_in_at;
    std::optional<std::string> email_opt_in_at;
    guest_user_profile user_profile;
    std::vector<guest_profile_tag> organization_profile_tags;

    /// Sent only for a single guest. The shape of the elements is not documented, so they
    /// are kept as JSON.
    std::optional<boost::json::array> organization_registration_personalisation_choice;

    /// Sent only for a single guest, kept as JSON for the same reason.
    std::optional<boost::json::array> custom_question_answers;

    friend bool operator==(const guest&, const guest&) = default;
};

/// Cursors of the pages around a list page, each empty when there is no such page.
struct guest_links {
    std::optional<std::string> first;
    std::optional<std::string> last;
    std::optional<std::string> next;
    std::optional<std::string> prev;

    friend bool operator==(const guest_links&, const guest_links&) = default;
};

/// One page of `GET /v1/guests`.
struct guest_page {
    std::vector<guest> data;
    guest_links links;

    friend bool operator==(const guest_page&, const guest_page&) = default;
};

/// The query of one list page.
struct guest_query {
    /// Text to search for in names and email addresses. Empty lists every guest.
    std::string search;

    /// Page size. Empty leaves it to the server, which sends 25.
    std::optional<unsigned> limit;

    /// Cursor of the page to fetch, taken from `guest_links`. Empty for the first page.
    std::string cursor;
};

/// The fields of a guest to create with `POST /v1/guests`. Empty fields are not sent.
///
/// NOTE: the Stampede documentation does not describe the creation body. This one sends
/// the profile fields in a `user_profile` object, as a guest carries them, and the
/// opt-ins as booleans `data_opt_in`, `sms_opt_in` and `email_opt_in`.
struct new_guest {
    /// Required.
    std::string email;
    std::optional<std::string> first;
    std::optional<std::string> last;
    std::optional<std::string> phone;
    std::optional<double> lat;
    std::optional<double> lng;
    std::optional<int> birth_day;
    std::optional<int> birth_month;
    std::optional<std::string> postcode;
    std::optional<std::string> country;
    std::optional<std::string> gender;
    bool data_opt_in = false;
    bool sms_opt_in = false;
    bool email_opt_in = false;

    friend bool operator==(const new_guest&, const new_guest&) = default;
};

// Boost.JSON conversions, found by `boost::json::value_to` and `value_from`.
void tag_invoke(boost::json::value_from_tag, boost::json::value& out, const guest_profile_tag& tag);
void tag_invoke(boost::json::value_from_tag, boost::json::value& out,
                const guest_user_profile& profile);
void tag_invoke(boost::json::value_from_tag, boost::json::value& out, const guest& g);
void tag_invoke(boost::json::value_from_tag, boost::json::value& out, const guest_links& links);
void tag_invoke(boost::json::value_from_tag, boost::json::value& out, const guest_page& page);
void tag_invoke(boost::json::value_from_tag, boost::json::value& out, const new_guest& g);

guest_profile_tag tag_invoke(boost::json::value_to_tag<guest_profile_tag>,
                             const boost::json::value& in);
guest_user_profile tag_invoke(boost::json::value_to_tag<guest_user_profile>,
                              const boost::json::value& in);
guest tag_invoke(boost::json::value_to_tag<guest>, const boost::json::value& in);
guest_links tag_invoke(boost::json::value_to_tag<guest_links>, const boost::json::value& in);
guest_page tag_invoke(boost::json::value_to_tag<guest_page>, const boost::json::value& in);

/// Writes the record as JSON, for test output. The output contains personal data.
std::ostream& operator<<(std::ostream& os, const guest& g);
std::ostream& operator<<(std::ostream& os, const guest_page& page);
std::ostream& operator<<(std::ostream& os, const new_guest& g);

namespace detail {

boost::asio::awaitable<op_result<guest_page>> list_guests(std::shared_ptr<api_client_impl> impl,
                                                          guest_query query);
boost::asio::awaitable<op_result<std::vector<guest>>>
list_all_guests(std::shared_ptr<api_client_impl> impl, std::string search);
boost::asio::awaitable<op_result<guest>> get_guest(std::shared_ptr<api_client_impl> impl,
                                                   std::string id);
boost::asio::awaitable<op_result<guest>> create_guest(std::shared_ptr<api_client_impl> impl,
                                                      new_guest fields);

} // namespace detail

/// The guests of the organisation, reached through an `api_client`.
///
/// Every operation follows the rules of `api_client::async_request` for retries, token
/// refresh, rate limiting, cancellation and the executor of the handler. Each has an
/// overload that also stores the failure's details in a `diagnostics` object, which must
/// stay valid until completion. Besides the errors of `async_request`, an operation fails
/// with `client_errc::malformed_response` when the response is not the documented JSON.
class guests {
public:
    /// Sends its requests through `client`, of which it keeps a copy that shares the
    /// client's state.
    explicit guests(api_client client)
        : client_(std::move(client))
    {
    }

    /// Fetches one page: `GET /v1/guests` with `search`, `limit` and `cursor`.
    /// Completion signature: `void(boost::system::error_code, guest_page)`.
    template <class CompletionToken =
                  boost::asio::default_completion_token_t<api_client::executor_type>>
        requires(!detail::is_request_argument_v<CompletionToken>)
    auto async_list(guest_query query, CompletionToken&& token = CompletionToken())
    {
        return start_list(std::move(query), nullptr, std::forward<CompletionToken>(token));
    }

    template <class CompletionToken =
                  boost::asio::default_completion_token_t<api_client::executor_type>>
    auto async_list(guest_query query, diagnostics& diag,
                    CompletionToken&& token = CompletionToken())
    {
        return start_list(std::move(query), &diag, std::forward<CompletionToken>(token));
    }

    /// Fetches every guest matching `search` (every guest when empty), page after page,
    /// following `links.next` until it is null.
    /// Completion signature: `void(boost::system::error_code, std::vector<guest>)`.
    ///
    /// Each page is one request under the client's rate limit, so with the default limit a
    /// large organisation takes minutes. On an error the guests read so far are dropped.
    /// A `next` cursor that repeats an earlier one fails with `malformed_response`, so a
    /// faulty server cannot make the walk loop forever.
    template <class CompletionToken =
                  boost::asio::default_completion_token_t<api_client::executor_type>>
        requires(!detail::is_request_argument_v<CompletionToken>)
    auto async_list_all(std::string search, CompletionToken&& token = CompletionToken())
    {
        return start_list_all(std::move(search), nullptr, std::forward<CompletionToken>(token));
    }

    template <class CompletionToken =
                  boost::asio::default_completion_token_t<api_client::executor_type>>
    auto async_list_all(std::string search, diagnostics& diag,
                        CompletionToken&& token = CompletionToken())
    {
        return start_list_all(std::move(search), &diag, std::forward<CompletionToken>(token));
    }

    /// Fetches one guest: `GET /v1/guests/{id}`, with `id` percent-encoded.
    /// Completion signature: `void(boost::system::error_code, guest)`. An unknown id fails
    /// with `make_http_error(404)`.
    template <class CompletionToken =
                  boost::asio::default_completion_token_t<api_client::executor_type>>
        requires(!detail::is_request_argument_v<CompletionToken>)
    auto async_get(std::string id, CompletionToken&& token = CompletionToken())
    {
        return start_get(std::move(id), nullptr, std::forward<CompletionToken>(token));
    }

    template <class CompletionToken =
                  boost::asio::default_completion_token_t<api_client::executor_type>>
    auto async_get(std::string id, diagnostics& diag, CompletionToken&& token = CompletionToken())
    {
        return start_get(std::move(id), &diag, std::forward<CompletionToken>(token));
    }

    /// Creates a guest: `POST /v1/guests`. Completes with the guest the server stored.
    /// Completion signature: `void(boost::system::error_code, guest)`. A `POST` is not
    /// retried after a `5xx` or a network failure, because the guest may have been created.
    /// Invalid fields fail with `make_http_error(422)` and the server's reason in the
    /// diagnostics.
    template <class CompletionToken =
                  boost::asio::default_completion_token_t<api_client::executor_type>>
        requires(!detail::is_request_argument_v<CompletionToken>)
    auto async_create(new_guest fields, CompletionToken&& token = CompletionToken())
    {
        return start_create(std::move(fields), nullptr, std::forward<CompletionToken>(token));
    }

    template <class CompletionToken =
                  boost::asio::default_completion_token_t<api_client::executor_type>>
    auto async_create(new_guest fields, diagnostics& diag,
                      CompletionToken&& token = CompletionToken())
    {
        return start_create(std::move(fields), &diag, std::forward<CompletionToken>(token));
    }

    const api_client& client() const noexcept { return client_; }

private:
    template <class CompletionToken>
    auto start_list(guest_query query, diagnostics* diag, CompletionToken&& token)
    {
        return client_.launch<guest_page>(
            [impl = client_.impl(), query = std::move(query)]() mutable {
                return detail::list_guests(std::move(impl), std::move(query));
            },
            diag, std::forward<CompletionToken>(token));
    }

    template <class CompletionToken>
    auto start_list_all(std::string search, diagnostics* diag, CompletionToken&& token)
    {
        return client_.launch<std::vector<guest>>(
            [impl = client_.impl(), search = std::move(search)]() mutable {
                return detail::list_all_guests(std::move(impl), std::move(search));
            },
            diag, std::forward<CompletionToken>(token));
    }

    template <class CompletionToken>
    auto start_get(std::string id, diagnostics* diag, CompletionToken&& token)
    {
        return client_.launch<guest>(
            [impl = client_.impl(), id = std::move(id)]() mutable {
                return detail::get_guest(std::move(impl), std::move(id));
            },
            diag, std::forward<CompletionToken>(token));
    }

    template <class CompletionToken>
    auto start_create(new_guest fields, diagnostics* diag, CompletionToken&& token)
    {
        return client_.launch<guest>(
            [impl = client_.impl(), fields = std::move(fields)]() mutable {
                return detail::create_guest(std::move(impl), std::move(fields));
            },
            diag, std::forward<CompletionToken>(token));
    }

    api_client client_;
};

} // namespace stampede

#endif
