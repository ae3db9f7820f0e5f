// The RESP2 parser of a link: hiredis's reader with a limit on the size of one reply.
// It does no I/O.

#ifndef STAMPEDE_SRC_REDIS_REPLY_READER_HPP
#define STAMPEDE_SRC_REDIS_REPLY_READER_HPP

#include <stampede/redis/command.hpp>

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

struct redisReader;
struct redisReplyObjectFunctions;

namespace stampede::redis::detail {

/// Parses the replies in the bytes fed to it and rejects any reply whose RESP encoding is
/// larger than `max_reply_bytes`. Not thread-safe.
///
/// Memory stays bounded: `next()` rejects an incomplete reply as soon as its bytes exceed
/// the limit, so at most the limit plus one fed chunk is buffered. An array header is
/// checked before hiredis allocates its element array: each element takes at least
/// 3 bytes on the wire ("+\r\n"), so the element counts of one reply may add up to at
/// most a third of the limit.
class reply_reader {
public:
    explicit reply_reader(std::size_t max_reply_bytes);
    ~reply_reader();
    reply_reader(const reply_reader&) = delete;
    reply_reader& operator=(const reply_reader&) = delete;

    /// Appends received bytes. Returns `errc::protocol_error` when hiredis cannot buffer
    /// them, or the error that rejected an earlier reply.
    boost::system::error_code feed(std::string_view bytes);

    /// Moves the next complete reply into `out` and sets `complete`, or clears `complete`
    /// when more bytes are needed. Returns `errc::reply_too_large` when the reply has more
    /// bytes than the limit (complete or not), and `errc::protocol_error` when the bytes
    /// are not valid RESP. After an error the reader returns that error for every call.
    boost::system::error_code next(reply& out, bool& complete);

    /// Returns the number of bytes fed and not yet returned as part of a reply.
    std::uint64_t buffered_bytes() const noexcept { return fed_ - consumed_; }

    /// Returns the limit on one reply, in bytes.
    std::size_t max_reply_bytes() const noexcept;

    /// The limit and the count that the hiredis callbacks check (defined in the source).
    struct budget;

private:
    struct reader_deleter {
        void operator()(redisReader* r) const noexcept;
    };

    boost::system::error_code fail(boost::system::error_code ec) noexcept;

    std::unique_ptr<budget> budget_;
    std::unique_ptr<redisReplyObjectFunctions> functions_;
    std::unique_ptr<redisReader, reader_deleter> reader_;
    std::uint64_t fed_ = 0;
    std::uint64_t consumed_ = 0;
    boost::system::error_code failure_;
};

} // namespace stampede::redis::detail

#endif
