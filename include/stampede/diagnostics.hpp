#ifndef STAMPEDE_DIAGNOSTICS_HPP
#define STAMPEDE_DIAGNOSTICS_HPP

#include <boost/system/system_error.hpp>

#include <chrono>
#include <optional>
#include <string>

namespace stampede {

/// Details of a failed operation, kept apart from its `error_code`.
///
/// `client_message()` is written by the SDK and says what failed and what to do.
/// `server_message()` is text the server sent (an OAuth `error_description` or a short
/// preview of an unexpected body): it is untrusted, shown as received after removing
/// control characters and every occurrence of the client secret and issued tokens.
class diagnostics {
public:
    /// Returns the SDK's own explanation of the failure; empty when there is none.
    const std::string& client_message() const noexcept { return client_message_; }

    /// Returns the server's explanation (untrusted text); empty when there is none.
    const std::string& server_message() const noexcept { return server_message_; }

    /// Returns the raw OAuth `error` value from the response; empty when there is none.
    const std::string& server_error_code() const noexcept { return server_error_code_; }

    /// Returns the HTTP status of the response, or 0 when no status line was received.
    /// It is set even when the body then failed (too large, or cut off).
    unsigned http_status() const noexcept { return http_status_; }

    /// Returns the delay the server asked for with `Retry-After`, if it sent one.
    std::optional<std::chrono::milliseconds> retry_after() const noexcept { return retry_after_; }

    void clear()
    {
        *this = diagnostics{};
    }

    void set_client_message(std::string message) { client_message_ = std::move(message); }
    void set_server_message(std::string message) { server_message_ = std::move(message); }
    void set_server_error_code(std::string code) { server_error_code_ = std::move(code); }
    void set_http_status(unsigned status) noexcept { http_status_ = status; }
    void set_retry_after(std::optional<std::chrono::milliseconds> delay) noexcept
    {
        retry_after_ = delay;
    }

    friend bool operator==(const diagnostics&, const diagnostics&) = default;

private:
    std::string client_message_;
    std::string server_message_;
    std::string server_error_code_;
    unsigned http_status_ = 0;
    std::optional<std::chrono::milliseconds> retry_after_;
};

/// The exception thrown by the `use_awaitable` forms (`token_source::token()` and
/// friends): a `boost::system::system_error` that also carries the diagnostics.
/// `what()` contains the error code's message and `client_message()`, never server text.
class error_with_diagnostics : public boost::system::system_error {
public:
    error_with_diagnostics(const boost::system::error_code& ec, diagnostics diag)
        : boost::system::system_error(ec, diag.client_message())
        , what_(make_what(ec, diag.client_message()))
        , diagnostics_(std::move(diag))
    {
    }

    const diagnostics& get_diagnostics() const noexcept { return diagnostics_; }

    /// Returns `client_message(): code message [category:value]`, or the code's part alone
    /// when there is no client message.
    const char* what() const noexcept override { return what_.c_str(); }

private:
    static std::string make_what(const boost::system::error_code& ec, std::string message)
    {
        if (message.empty()) {
            return ec.what();
        }
        // "... without a request." followed by ": invalid_client" reads badly.
        if (message.back() == '.') {
            message.pop_back();
        }
        return message + ": " + ec.what();
    }

    std::string what_;
    diagnostics diagnostics_;
};

/// Throws `error_with_diagnostics` when `ec` is an error.
inline void throw_on_error(const boost::system::error_code& ec, const diagnostics& diag)
{
    if (ec) {
        throw error_with_diagnostics(ec, diag);
    }
}

} // namespace stampede

#endif
