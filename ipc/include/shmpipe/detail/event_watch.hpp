// A readiness descriptor for an Event, for shmpipe::wait and shmpipe::asio::async_wait.
//
// An Event has no descriptor of its own: set() makes a system call only when a thread
// sleeps in wait(), and giving every Event a doorbell would make every set() scan for
// them. Instead, a watch starts one thread that sleeps in Event::wait_for (a futex, no
// CPU while idle) on its own handle of the event and writes an eventfd when the event is
// set. Destroying the watch only tells the thread to leave: it does within 100 ms, on its
// own, so the destructor never waits. Cost: a thread start per watch (tens of µs).
#pragma once

#include <memory>

namespace shmpipe {
class Event;
}

namespace shmpipe::detail {

class EventWatch {
public:
    // Opens the event again by name (throws Error as Event::open does) and starts the thread.
    explicit EventWatch(const Event& event);
    EventWatch(EventWatch&&) noexcept = default;
    EventWatch& operator=(EventWatch&&) noexcept = default;
    EventWatch(const EventWatch&) = delete;
    EventWatch& operator=(const EventWatch&) = delete;
    ~EventWatch();

    int fd() const noexcept;  // readable once the event was seen set

private:
    struct State;
    std::shared_ptr<State> state_;
};

}  // namespace shmpipe::detail
