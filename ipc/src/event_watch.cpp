// EventWatch: a thread sleeping in Event::wait_for that writes an eventfd (event_watch.hpp).
#include <shmpipe/detail/event_watch.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/event.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>

namespace shmpipe::detail {

struct EventWatch::State {
    Event event;
    int fd = -1;
    std::atomic<bool> stop{false};
    ~State() {
        if (fd >= 0) ::close(fd);
    }
};

EventWatch::EventWatch(const Event& event) : state_(std::make_shared<State>()) {
    state_->event = Event::open(event.name());
    state_->fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (state_->fd < 0) {
        throw Error::from_errno(errno, "watch event \"" + event.name() + "\": cannot create an eventfd");
    }
    // The thread holds the state: the eventfd stays open until it has left.
    std::thread([s = state_] {
        while (!s->stop.load(std::memory_order_acquire)) {
            try {
                if (!s->event.wait_for(std::chrono::milliseconds(100))) continue;
            } catch (...) {
                // An unusable event cannot be awaited: report it ready, the caller's is_set() tells.
            }
            const std::uint64_t one = 1;
            (void)!::write(s->fd, &one, sizeof one);
            return;
        }
    }).detach();
}

EventWatch::~EventWatch() {
    if (state_) state_->stop.store(true, std::memory_order_release);
}

int EventWatch::fd() const noexcept { return state_ ? state_->fd : -1; }

}  // namespace shmpipe::detail
