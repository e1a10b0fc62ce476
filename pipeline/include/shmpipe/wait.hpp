// shmpipe::wait: blocks until one of several objects is ready, like Python's
// multiprocessing.connection.wait.
//
//   shmpipe::Consumer<Job> rx("jobs");  auto [a, b] = shmpipe::Pipe::create();  p.start();
//   for (std::size_t i : shmpipe::wait({rx, a, p, stop_event}, 5s)) ...   // indices of the ready ones
//
// Ready means: a Consumer has a message, its end of stream, a dead producer or a broken
// queue to report (its fd(); drain it with try_pop); a Producer may have room (its fd()); a
// Pipe end has a message or its peer closed (recv then throws closed); a Process has
// exited (its sentinel(); join() reaps it); an Event is set. A consumer or producer may be
// reported ready spuriously (the first time always: their descriptors start readable), the
// way a descriptor may be: try_pop / try_push then just find nothing.
//
// Events have no descriptor (see detail/event_watch.hpp): an Event that is not set yet is
// watched by a thread sleeping on its futex for the duration of the call, so it costs no
// CPU while waiting, only a thread start per call.
//
// Futures are waited on with the other overload, shmpipe::wait(futures, return_when) in
// future.hpp; the two never compete: this one takes a list of Waitable.
#pragma once

#include <shmpipe/event.hpp>
#include <shmpipe/pipe.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>

#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <optional>
#include <span>
#include <vector>

namespace shmpipe {

// One object to wait for: a reference (the object must outlive the wait). Converts
// implicitly, so wait({rx, pipe, process, event}) reads like Python.
class Waitable {
public:
    // Make (on the first use) and use the endpoint's readiness descriptor; throws as fd() does.
    template <class T>
    Waitable(Consumer<T>& consumer) : fd_(consumer.fd()) {}  // NOLINT: implicit on purpose
    template <class T>
    Waitable(Producer<T>& producer) : fd_(producer.fd()) {}  // NOLINT
    Waitable(Pipe& pipe) : pipe_(&pipe) {}                   // NOLINT
    Waitable(Process& process) : fd_(process.sentinel()) {}  // NOLINT; throws before start()
    Waitable(const Event& event) : event_(&event) {}         // NOLINT
    // Any descriptor, ready when readable (or hung up).
    static Waitable descriptor(int fd) noexcept {
        Waitable w;
        w.fd_ = fd;
        return w;
    }

private:
    Waitable() = default;
    friend std::vector<std::size_t> wait(std::span<const Waitable>, std::optional<std::chrono::nanoseconds>);

    int fd_ = -1;
    Pipe* pipe_ = nullptr;
    const Event* event_ = nullptr;
};

// Blocks until at least one object is ready or the timeout passes (nullopt: no timeout);
// returns the positions of the ready objects in `objects`, in order (empty on timeout).
// Throws Error: invalid_state for a closed Pipe end, the errors of Event::open for an event
// that cannot be watched, or errno-based ones from poll.
std::vector<std::size_t> wait(std::span<const Waitable> objects,
                              std::optional<std::chrono::nanoseconds> timeout = std::nullopt);

inline std::vector<std::size_t> wait(std::initializer_list<Waitable> objects) {
    return wait(std::span<const Waitable>(objects.begin(), objects.size()));
}
template <class Rep, class Period>
std::vector<std::size_t> wait(std::initializer_list<Waitable> objects, std::chrono::duration<Rep, Period> timeout) {
    return wait(std::span<const Waitable>(objects.begin(), objects.size()),
                std::chrono::ceil<std::chrono::nanoseconds>(timeout));
}
template <class Rep, class Period>
std::vector<std::size_t> wait(std::span<const Waitable> objects, std::chrono::duration<Rep, Period> timeout) {
    return wait(objects, std::optional<std::chrono::nanoseconds>(std::chrono::ceil<std::chrono::nanoseconds>(timeout)));
}

}  // namespace shmpipe
