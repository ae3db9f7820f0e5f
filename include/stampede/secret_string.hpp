#ifndef STAMPEDE_SECRET_STRING_HPP
#define STAMPEDE_SECRET_STRING_HPP

#include <iosfwd>
#include <string>
#include <string_view>

namespace stampede {

/// A string that holds a credential: a client secret or an access token.
///
/// Printing it with `operator<<` writes `[redacted]`, and its memory is overwritten with
/// zeros (`OPENSSL_cleanse`) when it is destroyed, assigned or moved from. The value is
/// reachable only through `reveal()`, so every place that uses it is easy to find.
class secret_string {
public:
    secret_string() = default;
    explicit secret_string(std::string_view value);
    secret_string(const secret_string& other);
    secret_string(secret_string&& other) noexcept;
    secret_string& operator=(const secret_string& other);
    secret_string& operator=(secret_string&& other) noexcept;
    ~secret_string();

    /// Returns the secret value. Do not log or print it.
    std::string_view reveal() const noexcept { return value_; }

    bool empty() const noexcept { return value_.empty(); }
    std::size_t size() const noexcept { return value_.size(); }

    /// Overwrites the value with zeros and makes it empty.
    void wipe() noexcept;

    /// Compares in time that depends only on the lengths, not on the contents.
    friend bool operator==(const secret_string& a, const secret_string& b) noexcept;

    friend std::ostream& operator<<(std::ostream& os, const secret_string&);

private:
    std::string value_;
};

} // namespace stampede

#endif
