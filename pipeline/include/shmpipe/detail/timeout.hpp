// Timeouts as Python writes them: every pipeline `_for` takes any std::chrono::duration
// (2.1s as duration<double>, 0.5s, 250ms) and waits at least that long. Not API.
#pragma once

#include <chrono>
#include <cmath>
#include <type_traits>

namespace shmpipe::detail {

// `d` in nanoseconds, rounded up to the next nanosecond (a wait never ends early), negative
// and NaN as zero, and saturating where nanoseconds would overflow (about 292 years: forever).
template <class Rep, class Period>
constexpr std::chrono::nanoseconds timeout_ns(std::chrono::duration<Rep, Period> d) noexcept {
    using std::chrono::nanoseconds;
    if constexpr (std::is_floating_point_v<Rep>) {
        const long double ns = std::chrono::duration<long double, std::nano>(d).count();
        if (!(ns > 0)) return nanoseconds::zero();  // negative or NaN
        if (ns >= static_cast<long double>(nanoseconds::max().count())) return nanoseconds::max();
        return nanoseconds(static_cast<nanoseconds::rep>(std::ceil(ns)));
    } else {
        if (d <= d.zero()) return nanoseconds::zero();
        // Integral: exact when the period divides into nanoseconds; else ceil.
        using Big = std::chrono::duration<long double, std::nano>;
        if (Big(d).count() >= static_cast<long double>(nanoseconds::max().count())) return nanoseconds::max();
        return std::chrono::ceil<nanoseconds>(d);
    }
}

// The deadline `timeout` from now, saturating at time_point::max() (never wraps).
inline std::chrono::steady_clock::time_point deadline_in(std::chrono::nanoseconds timeout) noexcept {
    const auto now = std::chrono::steady_clock::now();
    if (timeout >= std::chrono::steady_clock::time_point::max() - now) return std::chrono::steady_clock::time_point::max();
    return now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
}

}  // namespace shmpipe::detail
