// This process's producer and consumer of one queue, as the Python layer uses them: the
// pybind11 classes _native.Producer / _native.Consumer (queue_binding.cpp) and the fast
// paths of _native.QueueCore (queue_core.cpp) share these.
//
// Message formats written by Python (the first byte is a tag; raw and typed queues have none):
//   kTagPickle  [1][pickle protocol-5 stream]
//   kTagBytes   [2][the bytes]                         a `bytes` object, no pickling
//   kTagFrames  [3][7 x 0][u64 n][u64 len]*n [frame]*n   frame 0 is the pickle stream, frames
//               1..n-1 its out-of-band buffers; every frame starts 16-byte aligned
//   kTagArray   [4][u8 ndim][u16 dtype length][12 x 0][u64 dim]*ndim [dtype.str] [data]
//               a C-contiguous numpy.ndarray of a plain dtype, no pickling; data 16-byte aligned
// Messages come from shared memory: every length is checked against the message size.
//
// GIL: a call that finds room (put) or a message (get) at once never releases the GIL; only
// a call that must wait goes through blocking_call(), and copies of 64 KiB and more run with
// the GIL released.
#pragma once

#include "blocking.hpp"

#include <shmpipe/detail/queue_endpoint.hpp>

#include <pybind11/pybind11.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace shmpipe::python {

inline constexpr std::uint8_t kTagPickle = 1, kTagBytes = 2, kTagFrames = 3, kTagArray = 4;
inline constexpr std::size_t kFrameAlign = 16;
inline constexpr std::size_t kCopyWithoutGil = std::size_t{64} << 10;  // copies this large release the GIL

constexpr std::size_t align_frame(std::size_t n) noexcept { return (n + kFrameAlign - 1) & ~(kFrameAlign - 1); }

// memcpy, with the GIL released when the copy is large enough for other threads to notice.
inline void copy_bytes(void* dst, const void* src, std::size_t n) {
    if (n >= kCopyWithoutGil) {
        pybind11::gil_scoped_release nogil;
        std::memcpy(dst, src, n);
    } else if (n != 0) {
        std::memcpy(dst, src, n);
    }
}

// A contiguous read-only view of any buffer-protocol object (bytes, bytearray, memoryview,
// numpy arrays in C order, PickleBuffer).
struct Buffer {
    Py_buffer view{};
    explicit Buffer(pybind11::handle obj, int flags = PyBUF_C_CONTIGUOUS) {
        if (PyObject_GetBuffer(obj.ptr(), &view, flags) != 0) throw pybind11::error_already_set();
    }
    explicit Buffer(Py_buffer&& v) noexcept : view(v) { v.obj = nullptr; }  // takes over a view we got
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
inline Busy enter(std::timed_mutex& busy, std::uint64_t deadline_ns, bool block) {
    Busy g(busy, std::try_to_lock);
    if (g.owns_lock() || !block) return g;
    blocking_call(deadline_ns, [&](std::uint64_t slice) {
        const std::uint64_t now = detail::monotonic_ns();
        return g.try_lock_for(std::chrono::nanoseconds(slice > now ? slice - now : 0));
    });
    return g;
}

// What both endpoints share: the C++ core, the `busy` mutex, close() and the readiness
// descriptor (Producer::fd / Consumer::fd: readable when there may be room / when a message,
// the end of stream, a dead producer or a broken queue awaits; made on the first call, owned
// by the endpoint). Once the descriptor exists, a put or get that must not block and finds
// nothing arms it before its last look, so no wake-up is lost.
template <class Core>
class PyEndpoint {
public:
    void close() {
        const Busy g = enter(busy_, 0, true);
        core_.close();
    }
    int fd() {
        const Busy g = enter(busy_, 0, true);
        return core_.fd();
    }
    const std::string& name() const noexcept { return core_.name(); }

protected:
    PyEndpoint(const std::string& name, std::uint64_t type_tag) : core_(name, type_tag) {}
    ~PyEndpoint() = default;

    std::timed_mutex busy_;
    Core core_;
};

class PyProducer : public PyEndpoint<detail::ProducerCore> {
public:
    PyProducer(const std::string& name, std::uint64_t type_tag) : PyEndpoint(name, type_tag) {}

    // Writes one n-byte message: fill(p) writes it at p (it may throw: nothing is published).
    // Blocks (interruptibly) up to the timeout when `block`; false = full.
    template <class Fill>
    bool write(std::size_t n, bool block, std::optional<double> timeout, Fill&& fill) {
        Busy g;
        std::byte* p = reserve(g, n, block, timeout);
        if (p == nullptr) return false;
        try {
            fill(p);
        } catch (...) {
            core_.abandon();
            throw;
        }
        core_.commit(n);
        return true;
    }
    bool put(pybind11::handle obj, bool block, std::optional<double> timeout) {
        const Buffer b(obj);
        return write(b.size(), block, timeout, [&](std::byte* p) { copy_bytes(p, b.data(), b.size()); });
    }
    // [tag][data]
    bool put_tagged(std::uint8_t tag, const void* data, std::size_t n, bool block, std::optional<double> timeout) {
        return write(n + 1, block, timeout, [&](std::byte* p) {
            p[0] = std::byte{tag};
            copy_bytes(p + 1, data, n);
        });
    }
    bool put_tagged(std::uint8_t tag, pybind11::handle obj, bool block, std::optional<double> timeout) {
        const Buffer b(obj);
        return put_tagged(tag, b.data(), b.size(), block, timeout);
    }
    // kTagFrames: frames[0] the pickle stream, then its out-of-band buffers.
    bool put_frames(const std::vector<Buffer>& frames, bool block, std::optional<double> timeout) {
        const std::size_t header = align_frame(16 + 8 * frames.size());
        std::size_t total = header;
        for (const auto& b : frames) total = align_frame(total) + b.size();
        return write(total, block, timeout, [&](std::byte* p) {
            std::memset(p, 0, header);
            p[0] = std::byte{kTagFrames};
            const std::uint64_t n = frames.size();
            std::memcpy(p + 8, &n, 8);
            std::size_t off = header;
            for (std::size_t i = 0; i < frames.size(); ++i) {
                const std::uint64_t len = frames[i].size();
                std::memcpy(p + 16 + 8 * i, &len, 8);
                off = align_frame(off);
                copy_bytes(p + off, frames[i].data(), frames[i].size());
                off += frames[i].size();
            }
        });
    }
    std::size_t max_message() const noexcept { return core_.max_message(); }

private:
    // Reserves n bytes: nullptr = full (the guard is then released). `g` is held until commit.
    std::byte* reserve(Busy& g, std::size_t n, bool block, std::optional<double> timeout) {
        const std::uint64_t deadline = deadline_of(timeout);
        g = enter(busy_, deadline, block);
        if (!g.owns_lock()) return nullptr;
        core_.check_size(n);
        std::byte* p = core_.try_reserve(n);  // no GIL release when there is room
        if (p == nullptr && !block && core_.has_fd()) p = core_.poll_reserve(n);
        if (p != nullptr || !block) return p;
        blocking_call(deadline, [&](std::uint64_t slice) {
            p = core_.reserve(n, slice);
            return p != nullptr;
        });
        return p;
    }
};

class PyConsumer;

// One message read in place (Queue.peek()). Exposes the buffer protocol until released;
// holds its consumer so the mapping outlives any view that escaped the `with` block.
class PySlot {
public:
    PySlot(std::shared_ptr<PyConsumer> owner, std::span<const std::byte> data) : owner_(std::move(owner)), data_(data) {}
    ~PySlot() { release(); }
    pybind11::buffer_info buffer() const;
    void release() noexcept;
    bool released() const noexcept { return owner_ == nullptr; }
    std::size_t size() const noexcept { return data_.size(); }

private:
    std::shared_ptr<PyConsumer> owner_;
    std::span<const std::byte> data_;
};

class PyConsumer : public PyEndpoint<detail::ConsumerCore>, public std::enable_shared_from_this<PyConsumer> {
public:
    PyConsumer(const std::string& name, std::uint64_t type_tag) : PyEndpoint(name, type_tag) {}

    // Runs read(message) on the next message, then consumes it (also when read throws).
    // False when none came: in time (block) / now (not block), or the end of stream
    // (ended() tells). With `quick`, a non-blocking call only looks for a waiting message,
    // without the slower look that tells an end of stream apart (get_many's later items).
    template <class Read>
    bool take(bool block, std::optional<double> timeout, Read&& read, bool quick = false) {
        std::span<const std::byte> m;
        Busy g;
        if (quick) {
            g = Busy(busy_, std::try_to_lock);
            if (!g.owns_lock() || !core_.try_peek(m)) return false;
        } else if (!next(g, m, block, timeout)) {
            return false;
        }
        const Release guard{core_};
        read(m);
        return true;
    }
    // Releases the message a PySlot held.
    void release() noexcept {
        const Busy g(busy_);
        core_.release();
    }

    // Raw: the message as bytes; None when none came (see ended()).
    pybind11::object get(bool block, std::optional<double> timeout) {
        pybind11::object out = pybind11::none();
        take(block, timeout, [&](std::span<const std::byte> m) { out = bytes_of(m); });
        return out;
    }
    // Zero copy: the next message as a PySlot, or None.
    pybind11::object peek(bool block, std::optional<double> timeout) {
        std::span<const std::byte> m;
        {
            Busy g;
            if (!next(g, m, block, timeout)) return pybind11::none();
        }
        return pybind11::cast(std::make_unique<PySlot>(shared_from_this(), m));
    }
    bool ended() const noexcept { return core_.ended(); }

    // A new bytes object holding m (the copy runs without the GIL when large).
    static pybind11::object bytes_of(std::span<const std::byte> m) {
        PyObject* b = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(m.size()));
        if (b == nullptr) throw pybind11::error_already_set();
        auto out = pybind11::reinterpret_steal<pybind11::object>(b);
        copy_bytes(PyBytes_AS_STRING(b), m.data(), m.size());
        return out;
    }
    // Error(type_mismatch): a message of a pickle queue that no Python producer wrote.
    [[noreturn]] void not_ours(std::size_t size, unsigned tag) const;

private:
    // The next message in place (held until released), or false: none in time / end of
    // stream (ended() tells which).
    bool next(Busy& g, std::span<const std::byte>& m, bool block, std::optional<double> timeout) {
        const std::uint64_t deadline = deadline_of(timeout);
        g = enter(busy_, deadline, block);
        if (!g.owns_lock()) return false;
        if (core_.try_peek(m)) return true;  // no GIL release when a message is waiting
        // Empty now: one immediate look tells the end of stream (or a dead producer) apart;
        // with a descriptor, poll_peek also arms it first.
        if (!block) return (core_.has_fd() ? core_.poll_peek(m) : core_.peek(m, 1)) == detail::PeekResult::ok;
        detail::PeekResult r = detail::PeekResult::timeout;
        blocking_call(deadline, [&](std::uint64_t slice) {
            r = core_.peek(m, slice);
            return r != detail::PeekResult::timeout;
        });
        return r == detail::PeekResult::ok;
    }
    struct Release {
        detail::ConsumerCore& c;
        ~Release() { c.release(); }  // a message that fails to decode is still consumed
    };
};

// The frames of a kTagFrames message m: (offset, length) of each, checked to lie inside m.
// Throws Error(type_mismatch) through consumer.not_ours() when they do not.
std::vector<std::pair<std::size_t, std::size_t>> frames_of(const PyConsumer& consumer, std::span<const std::byte> m);

}  // namespace shmpipe::python
