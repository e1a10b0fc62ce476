// A named event flag shared between processes (like multiprocessing.Event).
//
//   auto ready = shmpipe::Event::create("ready");   // starts clear; owns the name
//   shmpipe::Event::open("ready").wait();          // in other processes
//   ready.set();                                   // wakes every waiter
//
// set/clear/is_set never make a system call unless someone sleeps in wait().
#pragma once

#include <shmpipe/detail/anonymous_name.hpp>
#include <shmpipe/detail/sync_common.hpp>

#include <chrono>
#include <string>
#include <string_view>

namespace shmpipe {

class Event {
public:
    // Throws Error: invalid_name, already_exists, permission_denied, invalid_argument.
    static Event create(std::string_view name, const SyncOptions& options = {});
    // Anonymous, like Python's Event(): a unique name is picked (name() tells it; still a
    // visible, cleanable segment). Children forked later keep using the handle.
    static Event create(const SyncOptions& options = {}) { return create(detail::anonymous_name("anon-event"), options); }
    // Throws Error: invalid_name, not_found, wrong_kind, corrupt, ...
    static Event open(std::string_view name, const OpenOptions& options = {});

    Event() = default;  // empty handle: operations throw errc::invalid_state

    void set();            // sets the flag and wakes all waiters
    void clear();          // resets the flag; later wait()s block
    bool is_set() const;
    void wait() const;     // blocks until the flag is set (returns at once if it is)
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> timeout) const {  // false on timeout
        return wait_until(detail::deadline_after(detail::timeout_ns(timeout)));
    }

    void persist() noexcept { handle_.persist(); }
    const std::string& name() const noexcept { return handle_.name(); }

private:
    explicit Event(detail::SyncHandle h) : handle_(std::move(h)) {}
    bool wait_until(std::uint64_t deadline_ns) const;
    detail::EventBody& body() const;

    detail::SyncHandle handle_;
};

}  // namespace shmpipe
