// Doorbells (see detail/doorbell.hpp): abstract datagram sockets inside an epoll set with
// pidfds of the peers. The protocol that decides when to ring is in queue_layout.hpp (D*).
#include <shmpipe/detail/doorbell.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/error.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <random>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>
#include <utility>

namespace shmpipe::detail {
namespace {

constexpr std::uint64_t kFallbackPeriodNs = 100'000'000;  // the futex sleeper's re-check bound
constexpr std::uint64_t kTagSocket = 0, kTagTimer = 1, kTagPeer = 2;  // epoll data: kTagPeer + pid

// "\0shmpipe.bell.<16 hex>": the abstract namespace (leading NUL), no file to clean up.
socklen_t bell_address(std::uint64_t id, sockaddr_un& a) noexcept {
    std::memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    const int n = std::snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "shmpipe.bell.%016llx",
                                static_cast<unsigned long long>(id));
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + static_cast<std::size_t>(n));
}

// One unbound sending socket per process, made on first use. A forked child inherits it,
// which is fine: it is only ever used to send.
int sender_socket() noexcept {
    static std::atomic<int> fd{-1};
    int s = fd.load(std::memory_order_acquire);
    if (s >= 0) return s;
    s = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) return -1;  // descriptors exhausted: the bounded re-checks still see the change
    int expected = -1;
    if (!fd.compare_exchange_strong(expected, s, std::memory_order_acq_rel)) {
        ::close(s);  // another thread won
        return expected;
    }
    return s;
}

std::uint64_t random_id() {
    static thread_local std::mt19937_64 gen{std::random_device{}() ^ (std::uint64_t{current_pid()} << 20)};
    std::uint64_t id = 0;
    while (id == 0) id = gen() & kBellIdMask;
    return id;
}

int pidfd_open(std::uint32_t pid) noexcept {
#ifdef SYS_pidfd_open
    return static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

void close_fd(int& fd) noexcept {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

}  // namespace

void ring_doorbell(std::uint64_t id) noexcept {
    // The id comes from shared memory (untrusted): only the id bits name a bell, and 0 is none.
    id &= kBellIdMask;
    if (id == 0) return;
    const int s = sender_socket();
    if (s < 0) return;
    sockaddr_un a;
    const socklen_t len = bell_address(id, a);
    const char byte = 1;
    // ECONNREFUSED: the doorbell is gone; EAGAIN: its queue is full, so it is readable already.
    (void)::sendto(s, &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&a), len);
}

Doorbell::Doorbell(Doorbell&& other) noexcept
    : epoll_(std::exchange(other.epoll_, -1)),
      socket_(std::exchange(other.socket_, -1)),
      timer_(std::exchange(other.timer_, -1)),
      id_(std::exchange(other.id_, 0)),
      watched_(std::move(other.watched_)) {}

Doorbell& Doorbell::operator=(Doorbell&& other) noexcept {
    if (this != &other) {
        reset();
        epoll_ = std::exchange(other.epoll_, -1);
        socket_ = std::exchange(other.socket_, -1);
        timer_ = std::exchange(other.timer_, -1);
        id_ = std::exchange(other.id_, 0);
        watched_ = std::move(other.watched_);
    }
    return *this;
}

void Doorbell::reset() noexcept {
    for (auto& w : watched_) close_fd(w.pidfd);
    watched_.clear();
    close_fd(timer_);
    close_fd(socket_);
    close_fd(epoll_);
    id_ = 0;
}

Doorbell Doorbell::open(std::string_view verb, std::string_view name) {
    Doorbell b;
    auto fail = [&](const char* what) {
        const int err = errno;
        b.reset();
        throw Error::from_errno(err, describe(verb, "queue", name, what));
    };
    b.epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (b.epoll_ < 0) fail("cannot create the readiness descriptor (epoll_create1)");
    b.socket_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (b.socket_ < 0) fail("cannot create the doorbell socket");
    for (int attempt = 0;; ++attempt) {
        const std::uint64_t id = random_id();
        sockaddr_un a;
        const socklen_t len = bell_address(id, a);
        if (::bind(b.socket_, reinterpret_cast<const sockaddr*>(&a), len) == 0) {
            b.id_ = id;
            break;
        }
        if (errno != EADDRINUSE || attempt == 8) fail("cannot bind the doorbell socket");
    }
    epoll_event ev{};
    ev.events = EPOLLIN;  // level-triggered: readable while a datagram waits
    ev.data.u64 = kTagSocket;
    if (::epoll_ctl(b.epoll_, EPOLL_CTL_ADD, b.socket_, &ev) != 0) fail("cannot watch the doorbell socket");
    return b;
}

bool Doorbell::drain() noexcept {
    if (socket_ < 0) return false;
    std::array<char, 64> buf;
    while (::recv(socket_, buf.data(), buf.size(), MSG_DONTWAIT) > 0) {
    }
    if (timer_ >= 0) {
        std::uint64_t expirations = 0;
        (void)!::read(timer_, &expirations, sizeof expirations);
    }
    // Socket and timer are empty now, so what the set still reports is a pidfd: an exited peer.
    std::array<epoll_event, 16> ev;
    const int n = ::epoll_wait(epoll_, ev.data(), static_cast<int>(ev.size()), 0);
    bool gone = false;
    for (int i = 0; i < n; ++i) gone = gone || ev[static_cast<std::size_t>(i)].data.u64 >= kTagPeer;
    return gone;
}

bool Doorbell::watch(std::span<const ProcessId> peers) noexcept {
    bool gone = false;
    // Drop what is no longer a peer (closed, reaped, or its record was reused).
    std::erase_if(watched_, [&](Watched& w) {
        const bool keep = std::any_of(peers.begin(), peers.end(), [&](const ProcessId& p) {
            return p.pid == w.who.pid && p.start_time == w.who.start_time;
        });
        if (!keep) {
            if (w.pidfd >= 0) ::epoll_ctl(epoll_, EPOLL_CTL_DEL, w.pidfd, nullptr);
            close_fd(w.pidfd);
        }
        return !keep;
    });
    bool need_timer = false;
    for (const ProcessId& p : peers) {
        auto it = std::find_if(watched_.begin(), watched_.end(), [&](const Watched& w) {
            return w.who.pid == p.pid && w.who.start_time == p.start_time;
        });
        if (it == watched_.end()) {
            Watched w{p, pidfd_open(p.pid)};
            if (w.pidfd < 0 && errno == ESRCH) {
                gone = true;  // exited (and reaped) already
                continue;
            }
            // The pidfd names whatever process has the pid now: it is the peer only if the
            // start time still matches (read after the open, so it cannot change under us).
            if (p.start_time != 0 && process_start_time(static_cast<pid_t>(p.pid)) != p.start_time) {
                close_fd(w.pidfd);
                gone = true;
                continue;
            }
            if (w.pidfd >= 0) {
                epoll_event ev{};
                ev.events = EPOLLIN;
                ev.data.u64 = kTagPeer + p.pid;
                if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, w.pidfd, &ev) != 0) close_fd(w.pidfd);
            }
            it = watched_.insert(watched_.end(), w);
        }
        if (it->pidfd < 0) need_timer = true;
    }
    if (need_timer) {
        if (timer_ < 0) {
            timer_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
            if (timer_ >= 0) {
                epoll_event ev{};
                ev.events = EPOLLIN;
                ev.data.u64 = kTagTimer;
                if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, timer_, &ev) != 0) close_fd(timer_);
            }
        }
        if (timer_ >= 0) {
            itimerspec t{};
            t.it_value.tv_nsec = static_cast<long>(kFallbackPeriodNs);  // one shot, re-armed at every arm
            ::timerfd_settime(timer_, 0, &t, nullptr);
        }
    } else if (timer_ >= 0) {
        itimerspec off{};
        ::timerfd_settime(timer_, 0, &off, nullptr);
    }
    return gone;
}

}  // namespace shmpipe::detail
