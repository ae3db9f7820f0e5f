// Counts, per thread, the heap bytes allocated and not yet freed, by replacing the C
// allocation functions of the benchmark binary and forwarding them to glibc's own
// (`__libc_malloc` and the like). The malloc level is the one to hook: Asio allocates
// coroutine frames and handlers with `std::aligned_alloc`, not with operator new, and
// the global operator new calls malloc. The shared library build is counted too, because
// the executable's definitions take precedence at dynamic link time.
//
// The bytes counted are those of malloc_usable_size: the request rounded up to malloc's
// granularity, without its 8-byte chunk header.

#include "support.hpp"

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <malloc.h>

extern "C" {
void* __libc_malloc(std::size_t size) noexcept;
void __libc_free(void* p) noexcept;
void* __libc_calloc(std::size_t count, std::size_t size) noexcept;
void* __libc_realloc(void* p, std::size_t size) noexcept;
void* __libc_memalign(std::size_t alignment, std::size_t size) noexcept;
void* __libc_valloc(std::size_t size) noexcept;
void* __libc_pvalloc(std::size_t size) noexcept;
}

namespace {

thread_local constinit std::int64_t live_bytes = 0;
thread_local constinit std::int64_t live_blocks = 0;
thread_local constinit std::int64_t frees = 0;

void* counted(void* p) noexcept
{
    if (p != nullptr) {
        live_bytes += static_cast<std::int64_t>(malloc_usable_size(p));
        ++live_blocks;
    }
    return p;
}

void uncount(void* p) noexcept
{
    if (p != nullptr) {
        live_bytes -= static_cast<std::int64_t>(malloc_usable_size(p));
        --live_blocks;
        ++frees;
    }
}

} // namespace

namespace stampede::bench {

live_allocations live_allocations_on_this_thread() noexcept
{
    return {live_bytes, live_blocks, frees};
}

} // namespace stampede::bench

extern "C" {

void* malloc(std::size_t size) noexcept
{
    return counted(__libc_malloc(size));
}

void free(void* p) noexcept
{
    uncount(p);
    __libc_free(p);
}

void* calloc(std::size_t count, std::size_t size) noexcept
{
    return counted(__libc_calloc(count, size));
}

void* realloc(void* p, std::size_t size) noexcept
{
    if (p == nullptr) {
        return malloc(size);
    }
    const auto old_size = static_cast<std::int64_t>(malloc_usable_size(p));
    void* moved = __libc_realloc(p, size);
    if (moved != nullptr || size == 0) {
        // The old block is gone: freed by a zero-size request, or moved or resized.
        live_bytes -= old_size;
        --live_blocks;
        ++frees;
    }
    return counted(moved);
}

void* memalign(std::size_t alignment, std::size_t size) noexcept
{
    return counted(__libc_memalign(alignment, size));
}

void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept
{
    return counted(__libc_memalign(alignment, size));
}

int posix_memalign(void** out, std::size_t alignment, std::size_t size) noexcept
{
    if (alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0) {
        return EINVAL;
    }
    void* p = counted(__libc_memalign(alignment, size));
    if (p == nullptr) {
        return ENOMEM;
    }
    *out = p;
    return 0;
}

void* valloc(std::size_t size) noexcept
{
    return counted(__libc_valloc(size));
}

void* pvalloc(std::size_t size) noexcept
{
    return counted(__libc_pvalloc(size));
}

} // extern "C"
