#include <stampede/secret_string.hpp>

#include <openssl/crypto.h>

#include <ostream>

namespace stampede {

secret_string::secret_string(std::string_view value)
    : value_(value)
{
}

secret_string::secret_string(const secret_string& other)
    : value_(other.value_)
{
}

secret_string::secret_string(secret_string&& other) noexcept
    : value_(other.value_)
{
    // Copy rather than move: a moved-from std::string may keep its bytes in the
    // small-string buffer, and wiping here covers both layouts.
    other.wipe();
}

secret_string& secret_string::operator=(const secret_string& other)
{
    if (this != &other) {
        wipe();
        value_ = other.value_;
    }
    return *this;
}

secret_string& secret_string::operator=(secret_string&& other) noexcept
{
    if (this != &other) {
        wipe();
        value_ = other.value_;
        other.wipe();
    }
    return *this;
}

secret_string::~secret_string()
{
    wipe();
}

void secret_string::wipe() noexcept
{
    if (!value_.empty()) {
        OPENSSL_cleanse(value_.data(), value_.size());
    }
    value_.clear();
}

bool operator==(const secret_string& a, const secret_string& b) noexcept
{
    if (a.value_.size() != b.value_.size()) {
        return false;
    }
    return CRYPTO_memcmp(a.value_.data(), b.value_.data(), a.value_.size()) == 0;
}

std::ostream& operator<<(std::ostream& os, const secret_string&)
{
    return os << "[redacted]";
}

} // namespace stampede
