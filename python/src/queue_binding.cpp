// The pybind11 classes of queues: QueueHandle (create/open, stats), Producer, Consumer and
// Slot (Queue.peek()). The endpoint classes and message formats are in queue_endpoints.hpp.
#include "bindings.hpp"
#include "queue_endpoints.hpp"

#include <shmpipe/codec.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/queue.hpp>

#include <pybind11/stl.h>

#include <string>

namespace py = pybind11;

namespace shmpipe::python {

void PyConsumer::not_ours(std::size_t size, unsigned tag) const {
    throw Error(errc::type_mismatch,
                "get from queue \"" + core_.name() + "\": a message of " + std::to_string(size) + " bytes with tag " +
                    std::to_string(tag) +
                    " is not a Python object message (written by a C++ producer? open the queue with "
                    "dtype=bytes, str or a struct format)");
}

std::vector<std::pair<std::size_t, std::size_t>> frames_of(const PyConsumer& consumer, std::span<const std::byte> m) {
    const auto tag = m.empty() ? 0U : std::to_integer<unsigned>(m[0]);
    std::uint64_t n = 0;
    if (m.size() < 16) consumer.not_ours(m.size(), tag);
    std::memcpy(&n, m.data() + 8, 8);
    if (n == 0 || n > (m.size() - 16) / 8) consumer.not_ours(m.size(), tag);
    std::vector<std::pair<std::size_t, std::size_t>> frames;
    frames.reserve(n);
    std::size_t off = align_frame(16 + 8 * n);
    for (std::uint64_t i = 0; i < n; ++i) {
        std::uint64_t len = 0;
        std::memcpy(&len, m.data() + 16 + 8 * i, 8);
        off = align_frame(off);
        if (off > m.size() || len > m.size() - off) consumer.not_ours(m.size(), tag);
        frames.emplace_back(off, len);
        off += len;
    }
    return frames;
}

py::buffer_info PySlot::buffer() const {
    if (owner_ == nullptr) throw py::buffer_error("the peeked message was released (use the view inside its with block)");
    return py::buffer_info(const_cast<std::byte*>(data_.data()), 1, "B", static_cast<py::ssize_t>(data_.size()), true);
}

void PySlot::release() noexcept {
    if (owner_ != nullptr) std::exchange(owner_, nullptr)->release();
}

namespace {

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
        .def("close", &PyProducer::close)
        .def("fd", &PyProducer::fd)
        .def_property_readonly("max_message", &PyProducer::max_message)
        .def_property_readonly("name", &PyProducer::name);

    py::class_<PyConsumer, std::shared_ptr<PyConsumer>>(m, "Consumer")
        .def(py::init<const std::string&, std::uint64_t>(), py::arg("name"), py::arg("type_tag") = 0)
        .def("get", &PyConsumer::get, py::arg("block"), py::arg("timeout"))
        .def("peek", &PyConsumer::peek, py::arg("block"), py::arg("timeout"))
        .def_property_readonly("ended", &PyConsumer::ended)
        .def("close", &PyConsumer::close)
        .def("fd", &PyConsumer::fd)
        .def_property_readonly("name", &PyConsumer::name);

    py::class_<PySlot>(m, "Slot", py::buffer_protocol())
        .def_buffer(&PySlot::buffer)
        .def("release", &PySlot::release)
        .def_property_readonly("released", &PySlot::released)
        .def("__len__", &PySlot::size);

    m.def("type_tag_of_name", [](const std::string& mangled) { return type_tag_of_name(mangled); },
          "The type tag a C++ endpoint of the type with this mangled name (typeid(T).name()) uses");
}

}  // namespace shmpipe::python
