// Timeouts as Python writes them: every pipeline `_for` takes any std::chrono::duration
// (2.1s as duration<double>, 0.5s, 250ms) and waits at least that long; the rounding rule
// (timeout_ns) is ipc's, in deadline.hpp. Not API.
#pragma once

#include <shmpipe/detail/deadline.hpp>

#include <chrono>

namespace shmpipe::detail {

// The deadline `timeout` from now, saturating at time_point::max() (never wraps).
inline std::chrono::steady_clock::time_point deadline_in(std::chrono::nanoseconds timeout) noexcept {
    const auto now = std::chrono::steady_clock::now();
    if (timeout >= std::chrono::steady_clock::time_point::max() - now) return std::chrono::steady_clock::time_point::max();
    return now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
}

}  // namespace shmpipe::detail
