// Event: invariant E1 and pair EP1 in sync_layout.hpp.
#include <shmpipe/detail/wait.hpp>
#include <shmpipe/event.hpp>

#include <climits>

namespace shmpipe {

using detail::EventBody;

Event Event::create(std::string_view name, const SyncOptions& options) {
    return Event(detail::SyncHandle::create(name, "event", detail::ObjectKind::event, sizeof(EventBody), 0, options,
                                            [](std::byte*) {}));  // E1: starts clear (zero)
}

Event Event::open(std::string_view name, const OpenOptions& options) {
    return Event(detail::SyncHandle::open(name, "event", detail::ObjectKind::event, sizeof(EventBody), options));
}

EventBody& Event::body() const {
    handle_.require_open("use event");
    return handle_.body<EventBody>();
}

void Event::set() {
    auto& b = body();
    if (b.flag.exchange(1, std::memory_order_seq_cst) != 0) return;  // EP1; already set: no sleeper can wait on 0
    b.sets.fetch_add(1, std::memory_order_relaxed);                   // statistics only
    if (b.waiters.load(std::memory_order_seq_cst) > 0) detail::futex_wake(b.flag, INT_MAX);  // EP1
}

void Event::clear() { body().flag.store(0, std::memory_order_release); }  // E1

bool Event::is_set() const { return body().flag.load(std::memory_order_acquire) != 0; }  // pairs with set()

bool Event::wait_until(std::uint64_t deadline_ns) const {
    auto& b = body();
    if (b.flag.load(std::memory_order_acquire) != 0) return true;
    detail::SpinWait spin;
    while (spin.spin()) {
        if (b.flag.load(std::memory_order_acquire) != 0) return true;
    }
    b.waiters.fetch_add(1, std::memory_order_seq_cst);  // EP1
    bool set = false;
    for (;;) {
        if (b.flag.load(std::memory_order_acquire) != 0) {
            set = true;
            break;
        }
        if (detail::bounded_wait(b.flag, 0, deadline_ns, 500'000'000)) {
            set = b.flag.load(std::memory_order_acquire) != 0;
            break;
        }
    }
    b.waiters.fetch_sub(1, std::memory_order_relaxed);  // statistics and the waker's shortcut only
    return set;
}

void Event::wait() const { wait_until(0); }

}  // namespace shmpipe
