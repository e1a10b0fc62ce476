// Unique names for anonymous objects (detail/anonymous_name.hpp).
#include <shmpipe/detail/anonymous_name.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <random>
#include <sys/random.h>
#include <unistd.h>

namespace shmpipe::detail {

namespace {
std::uint64_t random_bits() noexcept {
    std::uint64_t v = 0;
    if (::getrandom(&v, sizeof v, GRND_NONBLOCK) == static_cast<ssize_t>(sizeof v)) return v;
    std::random_device rd;  // entropy pool not ready yet (early boot): the library's fallback
    return (std::uint64_t{rd()} << 32) ^ rd();
}
std::atomic<std::uint64_t> g_counter{0};
}  // namespace

std::string anonymous_name(std::string_view stem) {
    char tail[64];
    std::snprintf(tail, sizeof tail, "-%ld-%llu-%016llx", static_cast<long>(::getpid()),
                  static_cast<unsigned long long>(g_counter.fetch_add(1, std::memory_order_relaxed)),
                  static_cast<unsigned long long>(random_bits()));
    return std::string(stem) + tail;
}

}  // namespace shmpipe::detail
