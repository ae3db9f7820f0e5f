#include "reply_reader.hpp"

#include <stampede/redis/error.hpp>

#include <hiredis/hiredis.h>

#include <new>

namespace stampede::redis::detail {

struct reply_reader::budget {
    std::size_t max_bytes = 0;

    // Elements announced by the array headers of the reply being parsed.
    std::uint64_t elements = 0;

    // Set when an array header would take the reply over the limit.
    bool exceeded = false;

    // hiredis's own createArray, which the check below calls once the header passes.
    void* (*create_array)(const redisReadTask*, int) = nullptr;
};

namespace {

using boost::system::error_code;

// The shortest RESP encoding of an element, "+\r\n".
constexpr std::uint64_t min_element_bytes = 3;

reply convert(const redisReply& r)
{
    switch (r.type) {
    case REDIS_REPLY_STRING:
        return reply::make_string(std::string(r.str, r.len));
    case REDIS_REPLY_STATUS:
        return reply::make_status(std::string(r.str, r.len));
    case REDIS_REPLY_ERROR:
        return reply::make_error(std::string(r.str, r.len));
    case REDIS_REPLY_INTEGER:
        return reply::make_integer(r.integer);
    case REDIS_REPLY_ARRAY: {
        std::vector<reply> elements;
        elements.reserve(r.elements);
        for (std::size_t i = 0; i < r.elements; ++i) {
            elements.push_back(convert(*r.element[i]));
        }
        return reply::make_array(std::move(elements));
    }
    default:
        return reply::make_nil();
    }
}

// Replaces hiredis's createArray, which allocates a pointer per announced element before
// any element arrives (16 GiB for "*2147483647"). Returning null makes hiredis stop with
// an out-of-memory error, which `next()` reports as the budget's error.
void* create_checked_array(const redisReadTask* task, int elements)
{
    auto& limit = *static_cast<reply_reader::budget*>(task->privdata);
    if (elements < 0) {
        return nullptr; // invalid, because hiredis turns "*-1" into a nil reply instead
    }
    limit.elements += static_cast<std::uint64_t>(elements);
    if (limit.elements > limit.max_bytes / min_element_bytes) {
        limit.exceeded = true;
        return nullptr;
    }
    return limit.create_array(task, elements);
}

} // namespace

void reply_reader::reader_deleter::operator()(redisReader* r) const noexcept
{
    redisReaderFree(r);
}

reply_reader::reply_reader(std::size_t max_reply_bytes)
    : budget_(std::make_unique<budget>())
    , functions_(std::make_unique<redisReplyObjectFunctions>())
    , reader_(redisReaderCreate())
{
    if (!reader_) {
        throw std::bad_alloc();
    }
    budget_->max_bytes = max_reply_bytes;
    budget_->create_array = reader_->fn->createArray;

    // hiredis passes the reader's private data to the callbacks of every element.
    *functions_ = *reader_->fn;
    functions_->createArray = &create_checked_array;
    reader_->fn = functions_.get();
    reader_->privdata = budget_.get();
}

reply_reader::~reply_reader() = default;

std::size_t reply_reader::max_reply_bytes() const noexcept
{
    return budget_->max_bytes;
}

error_code reply_reader::fail(error_code ec) noexcept
{
    failure_ = ec;
    return ec;
}

error_code reply_reader::feed(std::string_view bytes)
{
    if (failure_) {
        return failure_;
    }
    if (redisReaderFeed(reader_.get(), bytes.data(), bytes.size()) != REDIS_OK) {
        return fail(errc::protocol_error);
    }
    fed_ += bytes.size();
    return {};
}

error_code reply_reader::next(reply& out, bool& complete)
{
    complete = false;
    if (failure_) {
        return failure_;
    }

    void* raw = nullptr;
    if (redisReaderGetReply(reader_.get(), &raw) != REDIS_OK) {
        return fail(budget_->exceeded ? errc::reply_too_large : errc::protocol_error);
    }
    if (raw == nullptr) {
        // The reply is incomplete, so every byte not yet returned belongs to it.
        if (buffered_bytes() > budget_->max_bytes) {
            return fail(errc::reply_too_large);
        }
        return {};
    }

    struct reply_deleter {
        void operator()(void* p) const noexcept { freeReplyObject(p); }
    };
    std::unique_ptr<void, reply_deleter> owner(raw);

    // hiredis keeps the bytes after this reply unparsed, from `pos` to `len`.
    const std::uint64_t after = reader_->len - reader_->pos;
    const std::uint64_t size = buffered_bytes() - after;
    if (size > budget_->max_bytes) {
        return fail(errc::reply_too_large);
    }
    consumed_ += size;
    budget_->elements = 0;
    out = convert(*static_cast<const redisReply*>(raw));
    complete = true;
    return {};
}

} // namespace stampede::redis::detail
