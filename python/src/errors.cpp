// shmpipe::Error -> the Python exception of the same errc (classes live in shmpipe/_errors.py,
// which hands its factory to set_error_factory at import). The message is the C++ what().
#include "bindings.hpp"

#include <shmpipe/error.hpp>

#include <array>
#include <new>
#include <string_view>
#include <utility>

namespace py = pybind11;

namespace shmpipe::python {
namespace {

// errc -> the name the Python side keys its classes on (error.hpp's enum, in order).
constexpr std::array<std::pair<errc, std::string_view>, 25> kErrcNames{{
    {errc::invalid_name, "invalid_name"},
    {errc::not_found, "not_found"},
    {errc::already_exists, "already_exists"},
    {errc::permission_denied, "permission_denied"},
    {errc::corrupt, "corrupt"},
    {errc::version_mismatch, "version_mismatch"},
    {errc::wrong_kind, "wrong_kind"},
    {errc::type_mismatch, "type_mismatch"},
    {errc::too_many_endpoints, "too_many_endpoints"},
    {errc::message_too_large, "message_too_large"},
    {errc::producer_died, "producer_died"},
    {errc::consumer_died, "consumer_died"},
    {errc::closed, "closed"},
    {errc::broken, "broken"},
    {errc::timeout, "timeout"},
    {errc::owner_died, "owner_died"},
    {errc::not_owner, "not_owner"},
    {errc::overflow, "overflow"},
    {errc::invalid_argument, "invalid_argument"},
    {errc::worker_died, "worker_died"},
    {errc::cancelled, "cancelled"},
    {errc::remote_error, "remote_error"},
    {errc::spawn_failed, "spawn_failed"},
    {errc::invalid_state, "invalid_state"},
    {errc::spec_error, "spec_error"},
}};

py::object& error_factory() {
    static py::object* f = new py::object();  // leaked on purpose: no destructor after Py_Finalize
    return *f;
}

std::string_view code_name(const std::error_code& ec) {
    if (ec.category() == category()) {
        for (const auto& [e, n] : kErrcNames) {
            if (make_error_code(e) == ec) return n;
        }
    }
    return "errno";
}

}  // namespace

void set_python_error(const Error& e) {
    const py::object& f = error_factory();
    if (!f) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
        return;
    }
    const int err = e.code().category() == std::generic_category() ? e.code().value() : 0;
    py::object exc = f(py::str(std::string(code_name(e.code()))), err, py::str(e.what()));
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
}

void set_python_error_from_current() noexcept {
    try {
        throw;
    } catch (py::error_already_set& e) {
        e.restore();
    } catch (const py::builtin_exception& e) {
        e.set_error();
    } catch (const Error& e) {
        try {
            set_python_error(e);
        } catch (py::error_already_set& f) {  // the factory itself failed
            f.restore();
        } catch (...) {
            PyErr_SetString(PyExc_RuntimeError, e.what());
        }
    } catch (const std::bad_alloc&) {
        PyErr_NoMemory();
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
        PyErr_SetString(PyExc_RuntimeError, "unknown C++ exception");
    }
}

void register_errors(py::module_& m) {
    m.def("set_error_factory", [](py::object f) { error_factory() = std::move(f); },
          "Called once by shmpipe._errors: factory(code_name, errno, message) -> exception");
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Error& e) {
            set_python_error(e);
        }
    });
}

}  // namespace shmpipe::python
