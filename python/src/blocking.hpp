// The one site where the binding releases the GIL around a blocking call.
//
// A blocking C++ call is run in slices of at most kSliceNs with the GIL released; between
// slices the GIL is taken back and PyErr_CheckSignals() runs the Python signal handlers, so
// Ctrl-C (KeyboardInterrupt) interrupts a blocked get/put/acquire/wait within one slice,
// and other Python threads run while one thread blocks.
#pragma once

#include <shmpipe/detail/process_id.hpp>

#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <optional>

namespace shmpipe::python {

inline constexpr std::uint64_t kSliceNs = 20'000'000;  // 20 ms: Ctrl-C is seen well within 100 ms

// Absolute CLOCK_MONOTONIC deadline of a Python timeout in seconds (None: 0 = no deadline).
inline std::uint64_t deadline_of(std::optional<double> timeout_s) {
    if (!timeout_s) return 0;
    const double s = *timeout_s;
    if (std::isnan(s)) throw pybind11::value_error("timeout must be a number, not NaN");
    const double ns = s <= 0 ? 0.0 : std::min(s * 1e9, 1e18);
    return detail::monotonic_ns() + static_cast<std::uint64_t>(ns) + 1;
}

// Calls attempt(slice_deadline_ns) with the GIL released until it returns true (done) or
// `deadline_ns` passes (returns false; 0 = no deadline). attempt must return by its slice
// deadline. Throws pybind11::error_already_set when a signal handler raised (Ctrl-C).
template <class Attempt>
bool blocking_call(std::uint64_t deadline_ns, Attempt&& attempt) {
    for (;;) {
        std::uint64_t slice = detail::monotonic_ns() + kSliceNs;
        if (deadline_ns != 0 && deadline_ns < slice) slice = deadline_ns;
        bool done = false;
        {
            pybind11::gil_scoped_release nogil;
            done = attempt(slice);
        }
        if (done) return true;
        if (PyErr_CheckSignals() != 0) throw pybind11::error_already_set();
        if (deadline_ns != 0 && detail::monotonic_ns() >= deadline_ns) return false;
    }
}

}  // namespace shmpipe::python
