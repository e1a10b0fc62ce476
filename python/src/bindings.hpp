// The native half of the `shmpipe` Python package (shmpipe._native). Thin wrappers over the
// C++ API; the Python half (shmpipe/*.py) adds multiprocessing's names, pickling and payloads.
//
// Every call that can block goes through blocking_call() (blocking.hpp): the one place that
// releases the GIL and polls for signals.
#pragma once

#include <shmpipe/error.hpp>

#include <pybind11/pybind11.h>

namespace shmpipe::python {

// e as the shmpipe.Error subclass of its code (shmpipe/_errors.py), message what().
void set_python_error(const Error& e);
// Inside a catch block of a raw CPython function: sets the Python exception of the C++ one
// being handled (pybind11's error_already_set and builtin exceptions, shmpipe::Error, others
// as RuntimeError), as pybind11's own functions do.
void set_python_error_from_current() noexcept;

void register_errors(pybind11::module_& m);
void register_queue(pybind11::module_& m);
void register_queue_core(pybind11::module_& m);
void register_sync(pybind11::module_& m);

}  // namespace shmpipe::python
