// Queue, producer and consumer handles for the Python Queue (shmpipe/_queue.py).
//
// Message formats written by Python (the first byte is a tag; raw and typed queues have none):
//   kTagPickle  [1][pickle protocol-5 stream]
//   kTagBytes   [2][the bytes]                         a `bytes` object, no pickling
//   kTagFrames  [3][7 x 0][u64 n][u64 len]*n [frame]*n   frame 0 is the pickle stream, frames
//               1..n-1 its out-of-band buffers; every frame starts 16-byte aligned
// Messages come from shared memory: every length is checked against the message size.
#include "bindings.hpp"
#include "blocking.hpp"

#include <shmpipe/codec.hpp>
#include <shmpipe/detail/queue_endpoint.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/queue.hpp>

#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace py = pybind11;

namespace shmpipe::python {
namespace {

constexpr std::uint8_t kTagPickle = 1, kTagBytes = 2, kTagFrames = 3;
constexpr std::size_t kFrameAlign = 16;

constexpr std::size_t align_frame(std::size_t n) noexcept { return (n + kFrameAlign - 1) & ~(kFrameAlign - 1); }

// A contiguous read-only view of any buffer-protocol object (bytes, bytearray, memoryview,
// numpy arrays in C order, PickleBuffer).
struct Buffer {
    Py_buffer view{};
    explicit Buffer(py::handle obj) {
        if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_C_CONTIGUOUS) != 0) throw py::error_already_set();
    }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    Buffer(Buffer&& o) noexcept : view(o.view) { o.view.obj = nullptr; }
    ~Buffer() {
        if (view.obj != nullptr) PyBuffer_Release(&view);
    }
    const std::byte* data() const noexcept { return static_cast<const std::byte*>(view.buf); }
    std::size_t size() const noexcept { return static_cast<std::size_t>(view.len); }
};

// An endpoint is used by one thread at a time: Python threads share a Queue object and the
// GIL is released while they block, so every call holds the endpoint's `busy` mutex.
using Busy = std::unique_lock<std::timed_mutex>;
Busy enter(std::timed_mutex& busy, std::uint64_t deadline_ns, bool block) {
    Busy g(busy, std::try_to_lock);
    if (g.owns_lock() || !block) return g;
    blocking_call(deadline_ns, [&](std::uint64_t slice) {
        const std::uint64_t now = detail::monotonic_ns();
        return g.try_lock_for(std::chrono::nanoseconds(slice > now ? slice - now : 0));
    });
    return g;
}

class PyProducer {
public:
    PyProducer(const std::string& name, std::uint64_t type_tag) : core_(name, type_tag) {}

    // Reserves n bytes: blocks (interruptibly) up to the timeout when `block`; nullptr = full
    // (the guard is then released). The guard `g` is held until commit.
    std::byte* reserve(Busy& g, std::size_t n, bool block, std::optional<double> timeout) {
        const std::uint64_t deadline = deadline_of(timeout);
        g = enter(busy_, deadline, block);
        if (!g.owns_lock()) return nullptr;
        core_.check_size(n);
        if (std::byte* p = core_.try_reserve(n); p != nullptr || !block) return p;  // no GIL release when there is room
        std::byte* p = nullptr;
        blocking_call(deadline, [&](std::uint64_t slice) {
            p = core_.reserve(n, slice);
            return p != nullptr;
        });
        return p;
    }
    // Copies with the GIL released when the copy is large enough to matter.
    void fill(std::byte* dst, const std::byte* src, std::size_t n) {
        if (n == 0) return;
        if (n >= (std::size_t{64} << 10)) {
            py::gil_scoped_release nogil;
            std::memcpy(dst, src, n);
        } else {
            std::memcpy(dst, src, n);
        }
    }

    bool put(py::handle obj, bool block, std::optional<double> timeout) {
        Buffer b(obj);
        Busy g;
        std::byte* p = reserve(g, b.size(), block, timeout);
        if (p == nullptr) return false;
        fill(p, b.data(), b.size());
        core_.commit(b.size());
        return true;
    }
    bool put_tagged(std::uint8_t tag, py::handle obj, bool block, std::optional<double> timeout) {
        Buffer b(obj);
        Busy g;
        std::byte* p = reserve(g, b.size() + 1, block, timeout);
        if (p == nullptr) return false;
        p[0] = std::byte{tag};
        fill(p + 1, b.data(), b.size());
        core_.commit(b.size() + 1);
        return true;
    }
    bool put_frames(const py::list& frames, bool block, std::optional<double> timeout) {
        std::vector<Buffer> bufs;
        bufs.reserve(frames.size());
        for (py::handle f : frames) bufs.emplace_back(f);
        const std::size_t header = align_frame(16 + 8 * bufs.size());
        std::size_t total = header;
        for (const auto& b : bufs) total = align_frame(total) + b.size();
        Busy g;
        std::byte* p = reserve(g, total, block, timeout);
        if (p == nullptr) return false;
        std::memset(p, 0, header);
        p[0] = std::byte{kTagFrames};
        const std::uint64_t n = bufs.size();
        std::memcpy(p + 8, &n, 8);
        std::size_t off = header;
        for (std::size_t i = 0; i < bufs.size(); ++i) {
            const std::uint64_t len = bufs[i].size();
            std::memcpy(p + 16 + 8 * i, &len, 8);
            off = align_frame(off);
            fill(p + off, bufs[i].data(), bufs[i].size());
            off += bufs[i].size();
        }
        core_.commit(total);
        return true;
    }
    void close() {
        Busy g = enter(busy_, 0, true);
        core_.close();
    }
    std::size_t max_message() const noexcept { return core_.max_message(); }
    const std::string& name() const noexcept { return core_.name(); }

private:
    std::timed_mutex busy_;
    detail::ProducerCore core_;
};

class PyConsumer;

// One message read in place (Queue.peek()). Exposes the buffer protocol until released;
// holds its consumer so the mapping outlives any view that escaped the `with` block.
class PySlot {
public:
    PySlot(std::shared_ptr<PyConsumer> owner, std::span<const std::byte> data) : owner_(std::move(owner)), data_(data) {}
    ~PySlot() { release(); }
    py::buffer_info buffer() const;
    void release() noexcept;
    bool released() const noexcept { return owner_ == nullptr; }
    std::size_t size() const noexcept { return data_.size(); }

private:
    std::shared_ptr<PyConsumer> owner_;
    std::span<const std::byte> data_;
};

class PyConsumer : public std::enable_shared_from_this<PyConsumer> {
public:
    PyConsumer(const std::string& name, std::uint64_t type_tag) : core_(name, type_tag) {}

    // The next message in place (held until release()), or false: none in time / end of
    // stream (ended() tells which).
    bool next(Busy& g, std::span<const std::byte>& m, bool block, std::optional<double> timeout) {
        const std::uint64_t deadline = deadline_of(timeout);
        g = enter(busy_, deadline, block);
        if (!g.owns_lock()) return false;
        if (core_.try_peek(m)) return true;  // no GIL release when a message is waiting
        // Empty now: one immediate look tells the end of stream (or a dead producer) apart.
        if (!block) return core_.peek(m, 1) == detail::PeekResult::ok;
        detail::PeekResult r = detail::PeekResult::timeout;
        blocking_call(deadline, [&](std::uint64_t slice) {
            r = core_.peek(m, slice);
            return r != detail::PeekResult::timeout;
        });
        return r == detail::PeekResult::ok;
    }
    // Releases the message a PySlot held.
    void release() noexcept {
        Busy g(busy_);
        core_.release();
    }

    // Raw: the message as bytes; None when none came (see ended()).
    py::object get(bool block, std::optional<double> timeout) {
        std::span<const std::byte> m;
        Busy g;
        if (!next(g, m, block, timeout)) return py::none();
        Release guard{core_};
        return py::bytes(reinterpret_cast<const char*>(m.data()), static_cast<py::ssize_t>(m.size()));
    }
    // Tagged (pickle queues): (tag, payload, frames) or None. Tags 1 and 2: payload is the
    // bytes after the tag, frames None. Tag 3: payload is a bytearray of the whole message
    // and frames a list of (offset, length) inside it, checked to lie within it.
    py::object get_tagged(bool block, std::optional<double> timeout) {
        std::span<const std::byte> m;
        Busy g;
        if (!next(g, m, block, timeout)) return py::none();
        Release guard{core_};
        const auto tag = m.empty() ? 0 : std::to_integer<std::uint8_t>(m[0]);
        if (tag == kTagPickle || tag == kTagBytes) {
            return py::make_tuple(tag, py::bytes(reinterpret_cast<const char*>(m.data() + 1),
                                                 static_cast<py::ssize_t>(m.size() - 1)),
                                  py::none());
        }
        if (tag != kTagFrames) not_ours(m.size(), tag);
        std::uint64_t n = 0;
        if (m.size() < 16) not_ours(m.size(), tag);
        std::memcpy(&n, m.data() + 8, 8);
        if (n == 0 || n > (m.size() - 16) / 8) not_ours(m.size(), tag);
        const std::size_t header = align_frame(16 + 8 * n);
        py::list frames;
        std::size_t off = header;
        for (std::uint64_t i = 0; i < n; ++i) {
            std::uint64_t len = 0;
            std::memcpy(&len, m.data() + 16 + 8 * i, 8);
            off = align_frame(off);
            if (off > m.size() || len > m.size() - off) not_ours(m.size(), tag);
            frames.append(py::make_tuple(off, len));
            off += len;
        }
        PyObject* ba = PyByteArray_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(m.size()));
        if (ba == nullptr) throw py::error_already_set();
        py::object payload = py::reinterpret_steal<py::object>(ba);
        {
            py::gil_scoped_release nogil;
            std::memcpy(PyByteArray_AS_STRING(ba), m.data(), m.size());
        }
        return py::make_tuple(tag, payload, frames);
    }
    // Zero copy: the next message as a PySlot, or None.
    py::object peek(bool block, std::optional<double> timeout) {
        std::span<const std::byte> m;
        {
            Busy g;
            if (!next(g, m, block, timeout)) return py::none();
        }
        return py::cast(std::make_unique<PySlot>(shared_from_this(), m));
    }
    bool ended() const noexcept { return core_.ended(); }
    void close() {
        Busy g = enter(busy_, 0, true);
        core_.close();
    }
    const std::string& name() const noexcept { return core_.name(); }

private:
    struct Release {
        detail::ConsumerCore& c;
        ~Release() { c.release(); }  // a message that fails to decode is still consumed
    };
    [[noreturn]] void not_ours(std::size_t size, unsigned tag) const {
        throw Error(errc::type_mismatch,
                    "get from queue \"" + core_.name() + "\": a message of " + std::to_string(size) +
                        " bytes with tag " + std::to_string(tag) +
                        " is not a Python object message (written by a C++ producer? open the queue with "
                        "dtype=bytes, str or a struct format)");
    }
    std::timed_mutex busy_;
    detail::ConsumerCore core_;
};

py::buffer_info PySlot::buffer() const {
    if (owner_ == nullptr) throw py::buffer_error("the peeked message was released (use the view inside its with block)");
    return py::buffer_info(const_cast<std::byte*>(data_.data()), 1, "B", static_cast<py::ssize_t>(data_.size()), true);
}

void PySlot::release() noexcept {
    if (owner_ != nullptr) std::exchange(owner_, nullptr)->release();
}

py::dict stats_dict(const QueueStats& s) {
    py::dict d;
    d["name"] = s.name;
    d["spsc"] = s.spsc;
    d["capacity"] = s.capacity;
    d["max_message"] = s.max_message;
    d["depth"] = s.depth;
    d["bytes_used"] = s.bytes_used;
    d["messages_in"] = s.messages_in;
    d["messages_out"] = s.messages_out;
    d["producers"] = s.producers;
    d["consumers"] = s.consumers;
    d["producers_closed"] = s.producers_closed;
    d["producers_dead"] = s.producers_dead;
    d["sleepers"] = s.sleepers;
    d["ended"] = s.ended;
    d["sealed"] = s.sealed;
    d["broken"] = s.broken;
    return d;
}

}  // namespace

void register_queue(py::module_& m) {
    py::class_<Queue>(m, "QueueHandle")
        .def_static(
            "create",
            [](const std::string& name, std::size_t capacity, std::size_t max_messages, std::size_t max_message,
               bool one_producer, bool one_consumer, std::uint32_t expected_producers, unsigned permissions) {
                QueueOptions o;
                o.capacity = capacity;
                o.max_messages = max_messages;
                o.max_message = max_message;
                o.producers = one_producer ? Endpoints::one : Endpoints::many;
                o.consumers = one_consumer ? Endpoints::one : Endpoints::many;
                o.expected_producers = expected_producers;
                o.permissions = static_cast<mode_t>(permissions);
                return Queue::create(name, o);
            },
            py::arg("name"), py::arg("capacity"), py::arg("max_messages"), py::arg("max_message"), py::arg("one_producer"),
            py::arg("one_consumer"), py::arg("expected_producers"), py::arg("permissions"))
        .def_static("open", [](const std::string& name) { return Queue::open(name); })
        .def_property_readonly("name", &Queue::name)
        .def_property_readonly("spsc", &Queue::spsc)
        .def_property_readonly("capacity", &Queue::capacity)
        .def_property_readonly("max_message", &Queue::max_message)
        .def("persist", &Queue::persist)
        .def("mark_broken", &Queue::mark_broken)
        .def("seal", &Queue::seal)
        .def_property_readonly("sealed", &Queue::sealed)
        .def("stats", [](const Queue& q) { return stats_dict(q.stats()); });

    py::class_<PyProducer>(m, "Producer")
        .def(py::init<const std::string&, std::uint64_t>(), py::arg("name"), py::arg("type_tag") = 0)
        .def("put", &PyProducer::put, py::arg("data"), py::arg("block"), py::arg("timeout"))
        .def("put_tagged", &PyProducer::put_tagged, py::arg("tag"), py::arg("data"), py::arg("block"),
             py::arg("timeout"))
        .def("put_frames", &PyProducer::put_frames, py::arg("frames"), py::arg("block"), py::arg("timeout"))
        .def("close", &PyProducer::close)
        .def_property_readonly("max_message", &PyProducer::max_message)
        .def_property_readonly("name", &PyProducer::name);

    py::class_<PyConsumer, std::shared_ptr<PyConsumer>>(m, "Consumer")
        .def(py::init<const std::string&, std::uint64_t>(), py::arg("name"), py::arg("type_tag") = 0)
        .def("get", &PyConsumer::get, py::arg("block"), py::arg("timeout"))
        .def("get_tagged", &PyConsumer::get_tagged, py::arg("block"), py::arg("timeout"))
        .def("peek", &PyConsumer::peek, py::arg("block"), py::arg("timeout"))
        .def_property_readonly("ended", &PyConsumer::ended)
        .def("close", &PyConsumer::close)
        .def_property_readonly("name", &PyConsumer::name);

    py::class_<PySlot>(m, "Slot", py::buffer_protocol())
        .def_buffer(&PySlot::buffer)
        .def("release", &PySlot::release)
        .def_property_readonly("released", &PySlot::released)
        .def("__len__", &PySlot::size);

    m.def("type_tag_of_name", [](const std::string& mangled) { return type_tag_of_name(mangled); },
          "The type tag a C++ endpoint of the type with this mangled name (typeid(T).name()) uses");
    m.attr("TAG_PICKLE") = kTagPickle;
    m.attr("TAG_BYTES") = kTagBytes;
    m.attr("TAG_FRAMES") = kTagFrames;
}

}  // namespace shmpipe::python
