// Timeouts as callers write them: any std::chrono::duration, integral or floating point
// (`duration<double>(2.1)`, `0.5s`), becomes whole nanoseconds rounded up, and a relative
// timeout becomes an absolute CLOCK_MONOTONIC deadline. Every ipc `_for` goes through here,
// so a timeout means the same thing for a queue, a lock or a pipe. Not API.
#pragma once

#include <shmpipe/detail/process_id.hpp>

#include <chrono>
#include <cstdint>

namespace shmpipe::detail {

// The timeout in nanoseconds, rounded up to the next nanosecond; zero, negative and NaN
// give 0 (do not wait); anything beyond ~292 years is clamped (a wait without end in practice).
template <class Rep, class Period>
constexpr std::chrono::nanoseconds timeout_ns(std::chrono::duration<Rep, Period> timeout) noexcept {
    using namespace std::chrono;
    if (!(timeout > timeout.zero())) return nanoseconds(0);  // also NaN
    constexpr auto kMax = nanoseconds::max();
    if (duration<long double, std::nano>(timeout) >= duration<long double, std::nano>(kMax)) return kMax;
    return ceil<nanoseconds>(timeout);
}

// Absolute monotonic deadline, never 0 (0 means "no deadline" to the wait loops); saturates.
template <class Rep, class Period>
std::uint64_t deadline_after(std::chrono::duration<Rep, Period> timeout) noexcept {
    const auto ns = static_cast<std::uint64_t>(timeout_ns(timeout).count());
    const std::uint64_t now = monotonic_ns();
    if (ns > UINT64_MAX - now) return UINT64_MAX;
    return now + ns == 0 ? 1 : now + ns;
}

}  // namespace shmpipe::detail
