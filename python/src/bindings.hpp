// The native half of the `shmpipe` Python package (shmpipe._native). Thin wrappers over the
// C++ API; the Python half (shmpipe/*.py) adds multiprocessing's names, pickling and payloads.
//
// Every call that can block goes through blocking_call() (blocking.hpp): the one place that
// releases the GIL and polls for signals.
#pragma once

#include <pybind11/pybind11.h>

namespace shmpipe::python {

void register_errors(pybind11::module_& m);
void register_queue(pybind11::module_& m);
void register_sync(pybind11::module_& m);

}  // namespace shmpipe::python
