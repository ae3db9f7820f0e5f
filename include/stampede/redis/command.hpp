#ifndef STAMPEDE_REDIS_COMMAND_HPP
#define STAMPEDE_REDIS_COMMAND_HPP

#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

namespace stampede::redis {

/// One Redis command: its name and arguments, which may contain any bytes.
///
/// A command marked sensitive (such as AUTH) has its arguments and its encoded form
/// overwritten with zeros once they are no longer needed.
class command {
public:
    command() = default;
    command(std::initializer_list<std::string_view> args);
    command(const command& other) = default;
    command(command&& other) noexcept = default;
    command& operator=(const command& other) = default;
    command& operator=(command&& other) noexcept = default;
    ~command();

    /// Appends an argument.
    command& arg(std::string_view value);

    /// Appends an integer argument in decimal.
    command& arg(std::int64_t value);

    /// Marks the arguments as secret (passwords), so they are wiped after use.
    command& mark_sensitive() noexcept
    {
        sensitive_ = true;
        return *this;
    }

    bool sensitive() const noexcept { return sensitive_; }
    const std::vector<std::string>& args() const noexcept { return args_; }

    /// Encodes the command as a RESP array of bulk strings (through hiredis).
    std::string encode() const;

    /// Writes the command name and the number of arguments, never their values.
    friend std::ostream& operator<<(std::ostream& os, const command& cmd);

private:
    std::vector<std::string> args_;
    bool sensitive_ = false;
};

/// A RESP2 reply.
class reply {
public:
    enum class kind { nil, status, error, integer, string, array };

    reply() = default;

    static reply make_nil() { return reply(); }
    static reply make_status(std::string text);
    static reply make_error(std::string text);
    static reply make_integer(std::int64_t value);
    static reply make_string(std::string bytes);
    static reply make_array(std::vector<reply> elements);

    kind type() const noexcept { return kind_; }
    bool is_nil() const noexcept { return kind_ == kind::nil; }
    bool is_error() const noexcept { return kind_ == kind::error; }

    /// The bytes of a status, error or string reply; empty for the other kinds.
    const std::string& text() const noexcept { return text_; }

    /// The value of an integer reply; 0 for the other kinds.
    std::int64_t integer() const noexcept { return integer_; }

    /// The elements of an array reply; empty for the other kinds.
    const std::vector<reply>& elements() const noexcept { return elements_; }

    /// Writes the kind and, except for strings (which may hold stored entries), the value.
    friend std::ostream& operator<<(std::ostream& os, const reply& r);

private:
    kind kind_ = kind::nil;
    std::string text_;
    std::int64_t integer_ = 0;
    std::vector<reply> elements_;
};

std::ostream& operator<<(std::ostream& os, reply::kind k);

} // namespace stampede::redis

#endif
