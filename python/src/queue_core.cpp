// _native.QueueCore: the base class of shmpipe.Queue (shmpipe/_queue.py) whose put, get,
// put_nowait, get_nowait, put_many and get_many are C functions, so `q.put(b)` costs one
// C call: no Python frame, no pybind11 dispatch (a raw METH_FASTCALL type).
//
// Codecs in C: "pickle" (the default: `bytes` raw with kTagBytes; a C-contiguous
// numpy.ndarray of a plain dtype as its dtype, shape and bytes with kTagArray; other objects
// with pickle.dumps(protocol=5) and buffers of 4 KiB and more out of band as kTagFrames) and
// "bytes" (dtype=bytes: any buffer, raw); message formats in queue_endpoints.hpp. Typed
// queues (str, struct formats, numpy dtypes) call back into Python:
// self._put_typed(obj, block, timeout) -> bool (False: full) and
// self._get_typed(block, timeout) -> the object, or None when none came.
//
// Endpoints: this process's producer/consumer are attached by Python (self._tx() and
// self._rx(), which name a closed queue and register the finalizer) on first use; the core
// keeps a reference and the C++ pointer, and _drop_endpoints() forgets them (close(), fork).
#include "bindings.hpp"
#include "queue_endpoints.hpp"

#include <pybind11/pybind11.h>

#include <cstring>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace shmpipe::python {
namespace {

enum Kind : int { kTyped = 0, kPickle = 1, kBytes = 2 };

// Buffers smaller than this are cheaper to pickle in band than to write as frames.
constexpr Py_ssize_t kOutOfBandMin = 4096;

struct Core {
    PyObject_HEAD
    PyObject* tx_obj;  // this process's _native.Producer, or nullptr before the first put
    PyProducer* tx;    // ... its C++ object (alive while tx_obj is)
    PyObject* rx_obj;  // this process's _native.Consumer, or nullptr before the first get
    PyConsumer* rx;
    int kind;
};

// What configure_queue_core() hands over once, at import of shmpipe._queue.
struct Api {
    PyObject* dumps = nullptr;         // pickle.dumps
    PyObject* loads = nullptr;         // pickle.loads
    PyObject* loads_frames = nullptr;  // _queue._loads_frames(bytearray, [(offset, length)...])
    PyObject* full = nullptr;          // queue.Full
    PyObject* empty = nullptr;         // queue.Empty
    PyObject* end_of_stream = nullptr; // shmpipe.EndOfStream
    PyObject* dumps_kwnames = nullptr; // ("protocol", "buffer_callback")
    PyObject* protocol_kwnames = nullptr;  // ("protocol",)
    PyObject* protocol = nullptr;      // 5
};
Api api;

// A new reference to an interned method name, kept for the life of the process (as the type).
PyObject* intern(const char* s) {
    PyObject* o = PyUnicode_InternFromString(s);
    if (o == nullptr) throw py::error_already_set();
    return o;
}

struct Names {
    PyObject *tx, *rx, *put_typed, *get_typed, *raw;
};
Names names;

py::object steal_or_throw(PyObject* o) {
    if (o == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(o);
}

// --- arguments ----------------------------------------------------------------------------

// Positional-or-keyword arguments of a METH_FASTCALL | METH_KEYWORDS call into out[i]
// (nullptr when not given). Raises TypeError as Python does for a bad call.
void parse_args(const char* fn, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                std::initializer_list<const char*> params, std::size_t required, PyObject** out) {
    const std::size_t n = params.size();
    for (std::size_t i = 0; i < n; ++i) out[i] = nullptr;
    if (static_cast<std::size_t>(nargs) > n) {
        throw py::type_error(std::string(fn) + "() takes at most " + std::to_string(n) + " arguments (" +
                             std::to_string(nargs) + " given)");
    }
    for (Py_ssize_t i = 0; i < nargs; ++i) out[i] = args[i];
    const Py_ssize_t nkw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; ++k) {
        PyObject* key = PyTuple_GET_ITEM(kwnames, k);
        std::size_t i = 0;
        for (const char* p : params) {
            if (PyUnicode_CompareWithASCIIString(key, p) == 0) break;
            ++i;
        }
        if (i == n) {
            throw py::type_error(std::string(fn) + "() got an unexpected keyword argument '" +
                                 py::handle(key).cast<std::string>() + "'");
        }
        if (out[i] != nullptr) {
            throw py::type_error(std::string(fn) + "() got multiple values for argument '" + *(params.begin() + i) + "'");
        }
        out[i] = args[nargs + k];
    }
    for (std::size_t i = 0; i < required; ++i) {
        if (out[i] == nullptr) {
            throw py::type_error(std::string(fn) + "() missing required argument '" + *(params.begin() + i) + "'");
        }
    }
}

bool block_of(PyObject* o) {
    if (o == nullptr) return true;
    const int t = PyObject_IsTrue(o);
    if (t < 0) throw py::error_already_set();
    return t != 0;
}

std::optional<double> timeout_of(PyObject* o) {
    if (o == nullptr || o == Py_None) return std::nullopt;
    const double s = PyFloat_AsDouble(o);
    if (s == -1.0 && PyErr_Occurred() != nullptr) throw py::error_already_set();
    return s;
}

// --- endpoints ----------------------------------------------------------------------------

// An endpoint and a reference that keeps it alive through one call: another thread may
// close() the queue (dropping the core's reference) while this one waits without the GIL.
template <class T>
struct Held {
    py::object ref;
    T* ptr = nullptr;
    T& operator*() const noexcept { return *ptr; }
    T* operator->() const noexcept { return ptr; }
};

// The endpoint in (obj, ptr), attached first through the Python method `attach` (self._tx()
// or self._rx(): they name a closed queue and register the finalizer).
template <class T>
Held<T> endpoint(Core* self, PyObject*& obj, T*& ptr, PyObject* attach) {
    if (ptr == nullptr) {
        py::object e = steal_or_throw(PyObject_CallMethodNoArgs(reinterpret_cast<PyObject*>(self), attach));
        T* p = e.cast<T*>();
        Py_XSETREF(obj, e.release().ptr());
        ptr = p;
    }
    return {py::reinterpret_borrow<py::object>(obj), ptr};
}
Held<PyProducer> producer(Core* self) { return endpoint(self, self->tx_obj, self->tx, names.tx); }
Held<PyConsumer> consumer(Core* self) { return endpoint(self, self->rx_obj, self->rx, names.rx); }

// --- put ----------------------------------------------------------------------------------

// pickle's buffer_callback (bound to the list that collects the out-of-band buffers): a
// buffer of kOutOfBandMin bytes or more goes out of band (returns None), a smaller one stays
// in band (True). A buffer without a contiguous view goes out of band too, and put then
// pickles the object in band.
PyObject* keep_out_of_band(PyObject* list, PyObject* buf) {
    Py_buffer v;
    if (PyObject_GetBuffer(buf, &v, PyBUF_FULL_RO) == 0) {
        const Py_ssize_t len = v.len;
        PyBuffer_Release(&v);
        if (len < kOutOfBandMin) Py_RETURN_TRUE;
    } else {
        PyErr_Clear();
    }
    if (PyList_Append(list, buf) != 0) return nullptr;
    Py_RETURN_NONE;
}
PyMethodDef keep_out_of_band_def{"keep_out_of_band", reinterpret_cast<PyCFunction>(keep_out_of_band), METH_O, nullptr};

bool put_pickled(PyProducer& tx, PyObject* obj, bool block, std::optional<double> timeout) {
    const py::list oob;
    const py::object callback = steal_or_throw(PyCFunction_New(&keep_out_of_band_def, oob.ptr()));
    PyObject* argv[] = {obj, api.protocol, callback.ptr()};
    const py::object data = steal_or_throw(PyObject_Vectorcall(api.dumps, argv, 1, api.dumps_kwnames));
    if (oob.empty()) {
        return tx.put_tagged(kTagPickle, PyBytes_AS_STRING(data.ptr()), static_cast<std::size_t>(PyBytes_GET_SIZE(data.ptr())),
                             block, timeout);
    }
    std::vector<Buffer> frames;
    frames.reserve(oob.size() + 1);
    frames.emplace_back(data);
    for (py::handle b : oob) {
        PyObject* raw = PyObject_CallMethodNoArgs(b.ptr(), names.raw);
        if (raw == nullptr) {
            if (!PyErr_ExceptionMatches(PyExc_BufferError)) throw py::error_already_set();
            PyErr_Clear();  // not contiguous: the whole object in band
            PyObject* argv5[] = {obj, api.protocol};
            const py::object in_band =
                steal_or_throw(PyObject_Vectorcall(api.dumps, argv5, 1, api.protocol_kwnames));
            return tx.put_tagged(kTagPickle, in_band, block, timeout);
        }
        frames.emplace_back(py::reinterpret_steal<py::object>(raw));
    }
    return tx.put_frames(frames, block, timeout);
}

// --- numpy arrays (kTagArray) -------------------------------------------------------------
// Pickling a small array costs ~10 us (its reduce goes through Python); an array whose dtype
// its dtype.str rebuilds travels as that string, its shape and its bytes instead.

constexpr std::size_t kMaxDims = 32;       // NPY_MAXDIMS
constexpr std::size_t kMaxDtypeText = 64;  // longer dtype strings are pickled

struct Numpy {
    PyObject* ndarray = nullptr;  // numpy.ndarray, numpy.empty, numpy.dtype (module loaded on first use)
    PyObject* empty = nullptr;
    PyObject* dtype = nullptr;
    PyObject* put_dtype = nullptr;  // the dtype of the last array put, and its dtype.str (bytes;
    PyObject* put_text = nullptr;   // None: not a plain dtype, the array is pickled)
    std::string get_text;           // the dtype.str of the last array got, and its numpy.dtype
    PyObject* get_dtype = nullptr;
};
Numpy np_api;

void load_numpy() {
    if (np_api.ndarray != nullptr) return;
    const py::module_ numpy = py::module_::import("numpy");
    np_api.empty = py::object(numpy.attr("empty")).release().ptr();
    np_api.dtype = py::object(numpy.attr("dtype")).release().ptr();
    np_api.ndarray = py::object(numpy.attr("ndarray")).release().ptr();
}

// The dtype.str of obj when it is a numpy.ndarray (not a subclass) whose dtype that string
// rebuilds exactly (no fields, sub-arrays or objects); else null.
PyObject* array_dtype_text(PyObject* obj) {
    if (std::strcmp(Py_TYPE(obj)->tp_name, "numpy.ndarray") != 0) return nullptr;  // numpy need not be loaded
    load_numpy();
    if (reinterpret_cast<PyObject*>(Py_TYPE(obj)) != np_api.ndarray) return nullptr;
    const py::object dt = py::reinterpret_borrow<py::object>(obj).attr("dtype");
    if (dt.ptr() != np_api.put_dtype) {
        const py::object text = dt.attr("str");
        const py::object same = py::reinterpret_borrow<py::object>(np_api.dtype)(text);
        py::object keep = py::none();
        if (!dt.attr("hasobject").cast<bool>() && same.equal(dt) && py::len(text) <= kMaxDtypeText &&
            dt.attr("itemsize").cast<std::size_t>() > 0) {
            keep = text.attr("encode")("ascii");
        }
        Py_XSETREF(np_api.put_dtype, dt.inc_ref().ptr());
        Py_XSETREF(np_api.put_text, keep.release().ptr());
    }
    return np_api.put_text == Py_None ? nullptr : np_api.put_text;
}

// Writes obj as kTagArray; nullopt when it does not travel that way (then it is pickled).
std::optional<bool> put_array(PyProducer& tx, PyObject* obj, bool block, std::optional<double> timeout) {
    PyObject* text = array_dtype_text(obj);
    if (text == nullptr) return std::nullopt;
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) != 0) {  // strided: pickle copes
        PyErr_Clear();
        return std::nullopt;
    }
    const Buffer b(std::move(view));
    const auto ndim = static_cast<std::size_t>(b.view.ndim);
    const auto dlen = static_cast<std::size_t>(PyBytes_GET_SIZE(text));
    const std::size_t data_off = align_frame(16 + 8 * ndim + dlen);
    return tx.write(data_off + b.size(), block, timeout, [&](std::byte* p) {
        std::memset(p, 0, 16);
        p[0] = std::byte{kTagArray};
        p[1] = static_cast<std::byte>(ndim);
        const auto dlen16 = static_cast<std::uint16_t>(dlen);
        std::memcpy(p + 2, &dlen16, 2);
        for (std::size_t i = 0; i < ndim; ++i) {
            const auto dim = static_cast<std::uint64_t>(b.view.shape[i]);
            std::memcpy(p + 16 + 8 * i, &dim, 8);
        }
        std::memcpy(p + 16 + 8 * ndim, PyBytes_AS_STRING(text), dlen);
        copy_bytes(p + data_off, b.data(), b.size());
    });
}

// A new array from a kTagArray message (checked: shared memory is untrusted).
py::object array_of(const PyConsumer& rx, std::span<const std::byte> m) {
    const auto bad = [&] { rx.not_ours(m.size(), kTagArray); };
    if (m.size() < 16) bad();
    const auto ndim = std::to_integer<std::size_t>(m[1]);
    std::uint16_t dlen = 0;
    std::memcpy(&dlen, m.data() + 2, 2);
    if (ndim > kMaxDims || dlen == 0 || dlen > kMaxDtypeText) bad();
    const std::size_t data_off = align_frame(16 + 8 * ndim + dlen);
    if (data_off > m.size()) bad();
    const std::size_t data_len = m.size() - data_off;
    const std::string text(reinterpret_cast<const char*>(m.data() + 16 + 8 * ndim), dlen);
    load_numpy();
    if (np_api.get_dtype == nullptr || text != np_api.get_text) {
        py::object dt = py::reinterpret_borrow<py::object>(np_api.dtype)(py::bytes(text).attr("decode")("ascii"));
        Py_XSETREF(np_api.get_dtype, dt.release().ptr());
        np_api.get_text = text;
    }
    // The shape must describe exactly the bytes that follow (no overflow on the way).
    std::size_t bytes = py::handle(np_api.get_dtype).attr("itemsize").cast<std::size_t>();
    py::tuple shape(ndim);
    for (std::size_t i = 0; i < ndim; ++i) {
        std::uint64_t dim = 0;
        std::memcpy(&dim, m.data() + 16 + 8 * i, 8);
        if (dim != 0 && bytes > data_len / dim) bad();
        bytes *= static_cast<std::size_t>(dim);
        shape[i] = py::int_(dim);
    }
    if (bytes != data_len) bad();
    py::object out = steal_or_throw(PyObject_CallFunctionObjArgs(np_api.empty, shape.ptr(), np_api.get_dtype, nullptr));
    const Buffer dst(out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE);
    if (dst.size() != data_len) bad();
    copy_bytes(dst.view.buf, m.data() + data_off, data_len);
    return out;
}

// One object; false = full (no room in time).
bool put_one(Core* self, PyObject* obj, bool block, std::optional<double> timeout, PyObject* const* args) {
    switch (self->kind) {
    case kPickle: {
        const Held<PyProducer> tx = producer(self);
        if (PyBytes_CheckExact(obj)) {
            return tx->put_tagged(kTagBytes, PyBytes_AS_STRING(obj), static_cast<std::size_t>(PyBytes_GET_SIZE(obj)), block,
                                 timeout);
        }
        if (const std::optional<bool> done = put_array(*tx, obj, block, timeout)) return *done;
        return put_pickled(*tx, obj, block, timeout);
    }
    case kBytes:
        if (PyBytes_CheckExact(obj)) {
            const auto n = static_cast<std::size_t>(PyBytes_GET_SIZE(obj));
            return producer(self)->write(n, block, timeout,
                                        [&](std::byte* p) { copy_bytes(p, PyBytes_AS_STRING(obj), n); });
        }
        return producer(self)->put(obj, block, timeout);
    default: {
        PyObject* argv[] = {reinterpret_cast<PyObject*>(self), obj, args[0], args[1]};
        const py::object r = steal_or_throw(PyObject_VectorcallMethod(names.put_typed, argv, 4, nullptr));
        const int ok = PyObject_IsTrue(r.ptr());
        if (ok < 0) throw py::error_already_set();
        return ok != 0;
    }
    }
}

// --- get ----------------------------------------------------------------------------------

// Empty, or EndOfStream when the stream ended (the message the C++ consumer gives).
[[noreturn]] void throw_nothing(const PyConsumer& rx) {
    if (rx.ended()) {
        const std::string msg = "get from queue \"" + rx.name() + "\": end of stream (no producer can come any more)";
        const py::object e = steal_or_throw(PyObject_CallOneArg(api.end_of_stream, py::str(msg).ptr()));
        PyErr_SetObject(api.end_of_stream, e.ptr());
    } else {
        PyErr_SetNone(api.empty);
    }
    throw py::error_already_set();
}

// The next object, or a null object when none came (see throw_nothing). `quick`: only a
// message already waiting (PyConsumer::take).
py::object get_one(Core* self, PyConsumer& rx, bool block, std::optional<double> timeout, bool quick) {
    py::object payload;
    unsigned tag = 0;
    std::vector<std::pair<std::size_t, std::size_t>> frames;
    const bool got = rx.take(
        block, timeout,
        [&](std::span<const std::byte> m) {
            if (self->kind == kBytes) {
                payload = PyConsumer::bytes_of(m);
                return;
            }
            tag = m.empty() ? 0U : std::to_integer<unsigned>(m[0]);
            if (tag == kTagBytes || tag == kTagPickle) {
                payload = PyConsumer::bytes_of(m.subspan(1));
            } else if (tag == kTagArray) {
                payload = array_of(rx, m);
            } else if (tag == kTagFrames) {
                frames = frames_of(rx, m);
                PyObject* ba = PyByteArray_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(m.size()));
                payload = steal_or_throw(ba);
                copy_bytes(PyByteArray_AS_STRING(ba), m.data(), m.size());
            } else {
                rx.not_ours(m.size(), tag);
            }
        },
        quick);
    if (!got || self->kind == kBytes || tag == kTagBytes || tag == kTagArray) return payload;
    if (tag == kTagPickle) return steal_or_throw(PyObject_CallOneArg(api.loads, payload.ptr()));
    py::list spans;
    for (const auto& [off, len] : frames) spans.append(py::make_tuple(off, len));
    return steal_or_throw(PyObject_CallFunctionObjArgs(api.loads_frames, payload.ptr(), spans.ptr(), nullptr));
}

// A typed queue's next object (self._get_typed, Python), or a null object when none came.
py::object get_typed(Core* self, PyObject* block, PyObject* timeout) {
    PyObject* argv[] = {reinterpret_cast<PyObject*>(self), block, timeout};
    py::object v = steal_or_throw(PyObject_VectorcallMethod(names.get_typed, argv, 3, nullptr));
    return v.is_none() ? py::object() : v;
}

py::object get_blocking(Core* self, PyObject* block_arg, PyObject* timeout_arg) {
    const Held<PyConsumer> rx = consumer(self);  // typed queues too: throw_nothing reads its end of stream
    py::object v = self->kind == kTyped ? get_typed(self, block_arg != nullptr ? block_arg : Py_True,
                                                    timeout_arg != nullptr ? timeout_arg : Py_None)
                                        : get_one(self, *rx, block_of(block_arg), timeout_of(timeout_arg), false);
    if (!v) throw_nothing(*rx);
    return v;
}

// --- methods ------------------------------------------------------------------------------

template <class F>
PyObject* guarded(F&& f) noexcept {
    try {
        return f();
    } catch (...) {
        set_python_error_from_current();
        return nullptr;
    }
}

PyObject* core_put(PyObject* o, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return guarded([&]() -> PyObject* {
        auto* self = reinterpret_cast<Core*>(o);
        PyObject* a[3];
        parse_args("put", args, nargs, kwnames, {"obj", "block", "timeout"}, 1, a);
        PyObject* typed_args[] = {a[1] != nullptr ? a[1] : Py_True, a[2] != nullptr ? a[2] : Py_None};
        if (!put_one(self, a[0], block_of(a[1]), timeout_of(a[2]), typed_args)) {
            PyErr_SetNone(api.full);
            return nullptr;
        }
        Py_RETURN_NONE;
    });
}

PyObject* core_put_nowait(PyObject* o, PyObject* obj) {
    return guarded([&]() -> PyObject* {
        auto* self = reinterpret_cast<Core*>(o);
        PyObject* typed_args[] = {Py_False, Py_None};
        if (!put_one(self, obj, false, std::nullopt, typed_args)) {
            PyErr_SetNone(api.full);
            return nullptr;
        }
        Py_RETURN_NONE;
    });
}

PyObject* core_get(PyObject* o, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return guarded([&]() -> PyObject* {
        PyObject* a[2];
        parse_args("get", args, nargs, kwnames, {"block", "timeout"}, 0, a);
        return get_blocking(reinterpret_cast<Core*>(o), a[0], a[1]).release().ptr();
    });
}

PyObject* core_get_nowait(PyObject* o, PyObject*) {
    return guarded([&]() -> PyObject* { return get_blocking(reinterpret_cast<Core*>(o), Py_False, nullptr).release().ptr(); });
}

PyObject* core_put_many(PyObject* o, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return guarded([&]() -> PyObject* {
        auto* self = reinterpret_cast<Core*>(o);
        PyObject* a[3];
        parse_args("put_many", args, nargs, kwnames, {"objs", "block", "timeout"}, 1, a);
        const bool block = block_of(a[1]);
        const std::optional<double> timeout = timeout_of(a[2]);
        PyObject* typed_args[] = {a[1] != nullptr ? a[1] : Py_True, a[2] != nullptr ? a[2] : Py_None};
        const py::object it = steal_or_throw(PyObject_GetIter(a[0]));
        while (PyObject* item = PyIter_Next(it.ptr())) {
            const auto keep = py::reinterpret_steal<py::object>(item);
            if (!put_one(self, item, block, timeout, typed_args)) {
                PyErr_SetNone(api.full);
                return nullptr;
            }
        }
        if (PyErr_Occurred() != nullptr) return nullptr;
        Py_RETURN_NONE;
    });
}

PyObject* core_get_many(PyObject* o, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return guarded([&]() -> PyObject* {
        auto* self = reinterpret_cast<Core*>(o);
        PyObject* a[3];
        parse_args("get_many", args, nargs, kwnames, {"max_items", "block", "timeout"}, 1, a);
        const Py_ssize_t max_items = PyLong_AsSsize_t(a[0]);
        if (max_items == -1 && PyErr_Occurred() != nullptr) return nullptr;
        py::list out;
        out.append(get_blocking(self, a[1], a[2]));
        while (static_cast<Py_ssize_t>(out.size()) < max_items) {
            py::object v = self->kind == kTyped ? get_typed(self, Py_False, Py_None)
                                                : get_one(self, *consumer(self), false, std::nullopt, true);
            if (!v) break;
            out.append(v);
        }
        return out.release().ptr();
    });
}

PyObject* core_nothing(PyObject* o, PyObject*) {
    return guarded([&]() -> PyObject* {
        throw_nothing(*consumer(reinterpret_cast<Core*>(o)));
    });
}

PyObject* core_set_kind(PyObject* o, PyObject* kind) {
    const long k = PyLong_AsLong(kind);
    if (k == -1 && PyErr_Occurred() != nullptr) return nullptr;
    if (k != kTyped && k != kPickle && k != kBytes) {
        PyErr_Format(PyExc_ValueError, "_set_kind: unknown codec kind %ld", k);
        return nullptr;
    }
    reinterpret_cast<Core*>(o)->kind = static_cast<int>(k);
    Py_RETURN_NONE;
}

PyObject* core_drop_endpoints(PyObject* o, PyObject*) {
    auto* self = reinterpret_cast<Core*>(o);
    self->tx = nullptr;
    self->rx = nullptr;
    Py_CLEAR(self->tx_obj);
    Py_CLEAR(self->rx_obj);
    Py_RETURN_NONE;
}

int core_traverse(PyObject* o, visitproc visit, void* arg) {
    auto* self = reinterpret_cast<Core*>(o);
    Py_VISIT(self->tx_obj);
    Py_VISIT(self->rx_obj);
    return 0;
}

int core_clear(PyObject* o) {
    auto* self = reinterpret_cast<Core*>(o);
    self->tx = nullptr;
    self->rx = nullptr;
    Py_CLEAR(self->tx_obj);
    Py_CLEAR(self->rx_obj);
    return 0;
}

void core_dealloc(PyObject* o) {
    PyObject_GC_UnTrack(o);
    core_clear(o);
    Py_TYPE(o)->tp_free(o);
}

constexpr int kFastKw = METH_FASTCALL | METH_KEYWORDS;

template <class F>
PyCFunction fastcall(F f) {
    return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f));
}

PyMethodDef core_methods[] = {
    {"put", fastcall(core_put), kFastKw,
     "put($self, obj, block=True, timeout=None)\n--\n\nPuts obj; blocks while the queue is full (queue.Full after `timeout` "
     "seconds, or at once with block=False)."},
    {"get", fastcall(core_get), kFastKw,
     "get($self, block=True, timeout=None)\n--\n\nRemoves and returns the next object. queue.Empty when none came in time; "
     "EndOfStream (an EOFError) once the queue is drained and its stream ended (sealed and every producer closed, "
     "expected_producers closed, or its one producer closed); ProducerDied when a producer died without closing "
     "(after its messages)."},
    {"put_nowait", fastcall(core_put_nowait), METH_O, "put_nowait($self, obj, /)\n--\n\nput(obj, False)."},
    {"get_nowait", fastcall(core_get_nowait), METH_NOARGS, "get_nowait($self, /)\n--\n\nget(False)."},
    {"put_many", fastcall(core_put_many), kFastKw,
     "put_many($self, objs, block=True, timeout=None)\n--\n\nPuts every object in order (the timeout applies to each put)."},
    {"get_many", fastcall(core_get_many), kFastKw,
     "get_many($self, max_items, block=True, timeout=None)\n--\n\nUp to max_items objects: waits (like get) for the first, "
     "then takes what is already there. At the end of stream returns what it has, or raises EndOfStream."},
    {"_nothing", fastcall(core_nothing), METH_NOARGS,
     "Raises what a get that found nothing raises: EndOfStream once the stream ended, else queue.Empty."},
    {"_set_kind", fastcall(core_set_kind), METH_O, "The codec: 0 typed (Python), 1 pickle, 2 bytes."},
    {"_drop_endpoints", fastcall(core_drop_endpoints), METH_NOARGS,
     "Forgets this process's endpoints (close, fork): the next put/get attaches through _tx()/_rx()."},
    {nullptr, nullptr, 0, nullptr},
};

PyTypeObject core_type{};  // static type: filled in and readied by register_queue_core

}  // namespace

void register_queue_core(py::module_& m) {
    names = {intern("_tx"), intern("_rx"), intern("_put_typed"), intern("_get_typed"), intern("raw")};
    Py_SET_REFCNT(reinterpret_cast<PyObject*>(&core_type), 1);  // what PyVarObject_HEAD_INIT does
    core_type.tp_name = "shmpipe._native.QueueCore";
    core_type.tp_doc = "The C fast paths of shmpipe.Queue (its base class)";
    core_type.tp_basicsize = sizeof(Core);
    core_type.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC;
    core_type.tp_new = PyType_GenericNew;
    core_type.tp_dealloc = core_dealloc;
    core_type.tp_traverse = core_traverse;
    core_type.tp_clear = core_clear;
    core_type.tp_methods = core_methods;
    if (PyType_Ready(&core_type) != 0) throw py::error_already_set();
    m.add_object("QueueCore", py::handle(reinterpret_cast<PyObject*>(&core_type)));

    m.def(
        "configure_queue_core",
        [](py::object dumps, py::object loads, py::object loads_frames, py::object full, py::object empty,
           py::object end_of_stream) {
            // Kept for the life of the process (the type outlives any module teardown order).
            api.dumps = dumps.release().ptr();
            api.loads = loads.release().ptr();
            api.loads_frames = loads_frames.release().ptr();
            api.full = full.release().ptr();
            api.empty = empty.release().ptr();
            api.end_of_stream = end_of_stream.release().ptr();
            api.dumps_kwnames = py::make_tuple("protocol", "buffer_callback").release().ptr();
            api.protocol_kwnames = py::make_tuple("protocol").release().ptr();
            api.protocol = py::int_(5).release().ptr();
        },
        "Called once by shmpipe._queue: pickle.dumps, pickle.loads, _loads_frames, queue.Full, queue.Empty, "
        "EndOfStream");
}

}  // namespace shmpipe::python
