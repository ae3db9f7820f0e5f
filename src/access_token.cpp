#include <stampede/access_token.hpp>

#include <ostream>

namespace stampede {
namespace {

void write_token(std::ostream& os, const detail::token_snapshot* snapshot)
{
    if (snapshot == nullptr) {
        os << "access_token{empty}";
        return;
    }
    const auto remaining = std::chrono::duration_cast<std::chrono::seconds>(
        snapshot->expires_at - std::chrono::steady_clock::now());
    os << "access_token{type=" << snapshot->token_type << ", scope=" << snapshot->scope
       << ", expires_in=" << remaining.count() << "s, value=[redacted]}";
}

} // namespace

std::string_view access_token::value() const noexcept
{
    return snapshot_ ? snapshot_->access_token.reveal() : std::string_view{};
}

std::string_view access_token::token_type() const noexcept
{
    return snapshot_ ? std::string_view(snapshot_->token_type) : std::string_view{};
}

std::string_view access_token::scope() const noexcept
{
    return snapshot_ ? std::string_view(snapshot_->scope) : std::string_view{};
}

std::chrono::steady_clock::time_point access_token::expires_at() const noexcept
{
    return snapshot_ ? snapshot_->expires_at : std::chrono::steady_clock::time_point{};
}

std::chrono::system_clock::time_point access_token::expires_at_system() const noexcept
{
    return snapshot_ ? snapshot_->expires_at_system : std::chrono::system_clock::time_point{};
}

std::string access_token::authorization_header() const
{
    return "Bearer " + std::string(value());
}

bool operator==(const access_token& a, const access_token& b) noexcept
{
    if (a.snapshot_ == b.snapshot_) {
        return true;
    }
    if (!a.snapshot_ || !b.snapshot_) {
        return false;
    }
    return a.snapshot_->access_token == b.snapshot_->access_token;
}

std::ostream& operator<<(std::ostream& os, const access_token& token)
{
    write_token(os, token.snapshot_.get());
    return os;
}

std::string access_token_view::authorization_header() const
{
    return "Bearer " + std::string(value());
}

access_token access_token_view::to_owned() const
{
    check();
    return access_token(boost::intrusive_ptr<const detail::token_snapshot>(snapshot_));
}

std::ostream& operator<<(std::ostream& os, const access_token_view& token)
{
    token.check();
    write_token(os, token.snapshot_);
    return os;
}

} // namespace stampede
