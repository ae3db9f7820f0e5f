#include <stampede/redis/command.hpp>

#include <hiredis/hiredis.h>
#include <openssl/crypto.h>

#include <limits>
#include <memory>
#include <new>
#include <ostream>
#include <stdexcept>

namespace stampede::redis {

command::command(std::initializer_list<std::string_view> args)
{
    args_.reserve(args.size());
    for (std::string_view value : args) {
        args_.emplace_back(value);
    }
}

command::~command()
{
    if (sensitive_) {
        for (std::string& value : args_) {
            OPENSSL_cleanse(value.data(), value.size());
        }
    }
}

command& command::arg(std::string_view value)
{
    args_.emplace_back(value);
    return *this;
}

command& command::arg(std::int64_t value)
{
    args_.push_back(std::to_string(value));
    return *this;
}

std::string command::encode() const
{
    if (args_.empty()) {
        throw std::invalid_argument("redis::command::encode: the command is empty");
    }
    if (args_.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
        throw std::length_error("redis::command::encode: too many arguments");
    }

    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    argv.reserve(args_.size());
    lengths.reserve(args_.size());
    for (const std::string& value : args_) {
        argv.push_back(value.data());
        lengths.push_back(value.size());
    }

    char* formatted = nullptr;
    const int size = redisFormatCommandArgv(&formatted, static_cast<int>(argv.size()), argv.data(),
                                            lengths.data());
    if (size < 0 || formatted == nullptr) {
        throw std::bad_alloc();
    }
    struct formatted_deleter {
        int size;
        bool wipe;
        void operator()(char* p) const noexcept
        {
            if (wipe) {
                OPENSSL_cleanse(p, static_cast<std::size_t>(size));
            }
            redisFreeCommand(p);
        }
    };
    std::unique_ptr<char, formatted_deleter> owner(formatted, formatted_deleter{size, sensitive_});
    return std::string(formatted, static_cast<std::size_t>(size));
}

std::ostream& operator<<(std::ostream& os, const command& cmd)
{
    if (cmd.args_.empty()) {
        return os << "(empty command)";
    }
    return os << cmd.args_.front() << " (" << cmd.args_.size() - 1 << " arguments)";
}

reply reply::make_status(std::string text)
{
    reply r;
    r.kind_ = kind::status;
    r.text_ = std::move(text);
    return r;
}

reply reply::make_error(std::string text)
{
    reply r;
    r.kind_ = kind::error;
    r.text_ = std::move(text);
    return r;
}

reply reply::make_integer(std::int64_t value)
{
    reply r;
    r.kind_ = kind::integer;
    r.integer_ = value;
    return r;
}

reply reply::make_string(std::string bytes)
{
    reply r;
    r.kind_ = kind::string;
    r.text_ = std::move(bytes);
    return r;
}

reply reply::make_array(std::vector<reply> elements)
{
    reply r;
    r.kind_ = kind::array;
    r.elements_ = std::move(elements);
    return r;
}

std::ostream& operator<<(std::ostream& os, reply::kind k)
{
    switch (k) {
    case reply::kind::nil:
        return os << "nil";
    case reply::kind::status:
        return os << "status";
    case reply::kind::error:
        return os << "error";
    case reply::kind::integer:
        return os << "integer";
    case reply::kind::string:
        return os << "string";
    case reply::kind::array:
        return os << "array";
    }
    return os << "unknown";
}

std::ostream& operator<<(std::ostream& os, const reply& r)
{
    os << r.kind_;
    switch (r.kind_) {
    case reply::kind::status:
    case reply::kind::error:
        return os << " '" << r.text_ << "'";
    case reply::kind::integer:
        return os << ' ' << r.integer_;
    case reply::kind::string:
        return os << " of " << r.text_.size() << " bytes";
    case reply::kind::array:
        os << " [";
        for (std::size_t i = 0; i < r.elements_.size(); ++i) {
            os << (i == 0 ? "" : ", ") << r.elements_[i];
        }
        return os << ']';
    case reply::kind::nil:
        break;
    }
    return os;
}

} // namespace stampede::redis
