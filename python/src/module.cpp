#include "bindings.hpp"

PYBIND11_MODULE(_native, m) {
    m.doc() = "Native half of the shmpipe package (see shmpipe/__init__.py)";
    shmpipe::python::register_errors(m);
    shmpipe::python::register_queue(m);
    shmpipe::python::register_queue_core(m);
    shmpipe::python::register_sync(m);
}
