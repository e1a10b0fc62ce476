// shmpipe::wait over consumers, producers, pipes, processes and events (wait.hpp).
#include <shmpipe/detail/event_watch.hpp>
#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/wait.hpp>

#include <algorithm>
#include <cerrno>
#include <poll.h>
#include <string>

namespace shmpipe {

std::vector<std::size_t> wait(std::span<const Waitable> objects, std::optional<std::chrono::nanoseconds> timeout) {
    std::vector<std::size_t> ready;
    // What is ready without a system call: a message read ahead into a pipe's buffer, a set event.
    for (std::size_t i = 0; i < objects.size(); ++i) {
        const Waitable& w = objects[i];
        if (w.pipe_ != nullptr && w.pipe_->closed()) {
            throw Error(errc::invalid_state, "wait: object " + std::to_string(i) + " is a closed pipe end");
        }
        if ((w.pipe_ != nullptr && w.pipe_->poll()) || (w.event_ != nullptr && w.event_->is_set())) ready.push_back(i);
    }
    if (!ready.empty()) timeout = std::chrono::nanoseconds(0);  // only collect the others that are ready too
    std::vector<pollfd> fds;
    std::vector<std::size_t> owner;           // fds[k] belongs to objects[owner[k]]
    std::vector<detail::EventWatch> watches;  // events not set yet, for the call's duration
    for (std::size_t i = 0; i < objects.size(); ++i) {
        const Waitable& w = objects[i];
        int fd = w.fd_;
        if (w.pipe_ != nullptr) {
            fd = w.pipe_->fd();
        } else if (w.event_ != nullptr) {
            if (!ready.empty()) continue;  // polled once above
            fd = watches.emplace_back(*w.event_).fd();
        }
        fds.push_back(pollfd{fd, POLLIN, 0});
        owner.push_back(i);
    }

    const std::uint64_t deadline = timeout ? detail::monotonic_ns() + static_cast<std::uint64_t>(
                                                 timeout->count() > 0 ? timeout->count() : 0)
                                           : 0;
    for (;;) {
        timespec ts{};
        timespec* tsp = nullptr;
        if (timeout) {
            const std::uint64_t now = detail::monotonic_ns();
            const std::uint64_t left = deadline > now ? deadline - now : 0;
            ts.tv_sec = static_cast<time_t>(left / 1'000'000'000u);
            ts.tv_nsec = static_cast<long>(left % 1'000'000'000u);
            tsp = &ts;
        }
        const int r = ::ppoll(fds.data(), fds.size(), tsp, nullptr);
        if (r < 0) {
            if (errno == EINTR) continue;
            throw Error::from_errno(errno, "wait: poll on " + std::to_string(fds.size()) + " descriptors");
        }
        for (std::size_t k = 0; k < fds.size(); ++k) {
            if (fds[k].revents != 0 && std::find(ready.begin(), ready.end(), owner[k]) == ready.end()) {
                ready.push_back(owner[k]);  // POLLIN, POLLHUP, POLLERR, POLLNVAL
            }
        }
        std::sort(ready.begin(), ready.end());
        return ready;  // empty: the timeout passed
    }
}

}  // namespace shmpipe
