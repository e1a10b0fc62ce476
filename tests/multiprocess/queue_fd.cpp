// Readiness descriptors (Consumer::fd, Producer::fd) between real processes: this process
// waits only on the descriptor (poll or epoll, never a blocking pop), the peer
// (tests/support/peers/queue_peer.cpp) pushes or pops. A lost wake-up shows as a wait that
// reaches its deadline while the peer has more to give; data is checked by sequence and
// content, the end of stream and a dead producer by what try_pop reports.
#include "queue_catch.hpp"
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <poll.h>
#include <sched.h>
#include <string>
#include <sys/epoll.h>
#include <unistd.h>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

using shmpipe::test::report_of;

constexpr int kWaitMs = 10'000;  // one wait on the descriptor; a lost wake-up runs into it

enum class Loop { poll, epoll };

// Waits until `fd` is readable or kWaitMs pass; false on the deadline.
class Waiter {
public:
    Waiter(Loop loop, int fd) : loop_(loop), fd_(fd) {
        if (loop_ == Loop::epoll) {
            ep_ = ::epoll_create1(EPOLL_CLOEXEC);
            REQUIRE(ep_ >= 0);
            epoll_event ev{};
            ev.events = EPOLLIN;  // level-triggered, as the descriptor's contract is
            REQUIRE(::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) == 0);
        }
    }
    ~Waiter() {
        if (ep_ >= 0) ::close(ep_);
    }
    Waiter(const Waiter&) = delete;
    Waiter& operator=(const Waiter&) = delete;

    bool wait() {
        if (loop_ == Loop::poll) {
            pollfd p{fd_, POLLIN, 0};
            return ::poll(&p, 1, kWaitMs) == 1 && (p.revents & POLLIN) != 0;
        }
        epoll_event ev{};
        return ::epoll_wait(ep_, &ev, 1, kWaitMs) == 1;
    }

private:
    Loop loop_;
    int fd_;
    int ep_ = -1;
};

// Pins this thread (and the peers it spawns afterwards, which inherit it) to one CPU.
class PinToCpu0 {
public:
    PinToCpu0() {
        REQUIRE(::sched_getaffinity(0, sizeof saved_, &saved_) == 0);
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(0, &one);
        REQUIRE(::sched_setaffinity(0, sizeof one, &one) == 0);
    }
    ~PinToCpu0() { ::sched_setaffinity(0, sizeof saved_, &saved_); }
    PinToCpu0(const PinToCpu0&) = delete;
    PinToCpu0& operator=(const PinToCpu0&) = delete;

private:
    cpu_set_t saved_{};
};

struct Received {
    std::uint64_t messages = 0;
    std::uint64_t wakes = 0;  // waits on the descriptor that returned readable
    bool ended = false;
};

// Drains `rx` the event-loop way until the end of stream: wait on fd(), try_pop until empty.
Received drain_by_fd(Consumer<>& rx, Loop loop, std::uint64_t expected) {
    Received r;
    Waiter w(loop, rx.fd());
    std::uint64_t next = 0;
    for (;;) {
        if (!w.wait()) {
            const auto waiting = shmpipe::Queue::open(rx.name()).stats().depth;
            FAIL("no readiness on the descriptor of " << rx.name() << " within " << kWaitMs << " ms after "
                                                        << r.messages << " of " << expected
                                                        << " messages, " << waiting << " waiting in the queue (a lost wake-up)");
        }
        ++r.wakes;
        while (auto m = rx.try_pop()) {
            std::uint32_t producer = 0;
            std::uint64_t seq = 0;
            REQUIRE(test::parse_message(*m, producer, seq));
            REQUIRE(seq == next);
            ++next;
            ++r.messages;
        }
        if (rx.ended()) {
            r.ended = true;
            return r;
        }
    }
}

}  // namespace

TEST_CASE("A consumer woken only through fd() receives 100 000 messages and the end of stream",
          "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    const auto loop = GENERATE(Loop::poll, Loop::epoll);
    const bool one_core = GENERATE(false, true);
    INFO(test::kind_label(kind) << (loop == Loop::poll ? " poll" : " epoll") << (one_core ? " one core" : ""));
    const std::string name = test::unique_name("fdrx");
    test::ShmGuard guard{name};
    constexpr std::uint64_t kCount = 100'000;
    auto q = Queue::create(name, test::queue_options(kind, 16384, 256));
    std::optional<PinToCpu0> pin;
    if (one_core) pin.emplace();
    Consumer<> sut(name);
    auto writer = test::spawn_queue_peer({"produce", name, "1", std::to_string(kCount), "var:200"});

    const Received r = drain_by_fd(sut, loop, kCount);

    CHECK(r.messages == kCount);
    CHECK(r.ended);
    CHECK(writer.wait_or_throw(30s, "the writer to finish pushing to " + name) == 0);
}

TEST_CASE("A consumer woken through fd() gets every message of a producer that pauses between them",
          "[multiprocess]") {
    // The pauses make the consumer find the queue empty and arm the descriptor for almost
    // every message: the arm/ring handshake runs thousands of times.
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("fdslow");
    test::ShmGuard guard{name};
    constexpr std::uint64_t kCount = 5'000;
    auto q = Queue::create(name, test::queue_options(kind, 16384, 256));
    Consumer<> sut(name);
    auto writer =
        test::spawn_queue_peer({"produce", name, "1", std::to_string(kCount), "64", "--delay-us", "20"});

    const Received r = drain_by_fd(sut, Loop::epoll, kCount);

    CHECK(r.messages == kCount);
    CHECK(r.ended);
    CHECK(r.wakes > kCount / 10);  // the consumer really waited on the descriptor
    CHECK(writer.wait_or_throw(30s, "the writer to finish pushing to " + name) == 0);
}

TEST_CASE("A producer killed without closing makes the consumer's fd readable and try_pop reports it",
          "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("fddead");
    test::ShmGuard guard{name};
    test::TempDir dir;
    auto q = Queue::create(name, test::queue_options(kind, 16384, 256));
    Consumer<> sut(name);
    test::SharedLog::create(dir.file("plog"));
    auto writer = test::spawn_queue_peer({"produce", name, "1", "10", "64", "--hold", "--log", dir.file("plog")});
    const auto log = test::SharedLog::open(dir.file("plog"));
    REQUIRE(test::wait_until([&] { return log.size() == 10; }, 20s));
    Waiter w(Loop::poll, sut.fd());
    std::uint64_t got = 0;
    for (int round = 0; round < 100 && got < 10; ++round) {
        REQUIRE(w.wait());
        while (sut.try_pop()) ++got;
    }
    REQUIRE(got == 10);
    pollfd quiet{sut.fd(), POLLIN, 0};
    REQUIRE(::poll(&quiet, 1, 200) == 0);  // drained and armed: nothing to report

    writer.signal(SIGKILL);
    REQUIRE(writer.wait_or_throw(10s, "the killed writer of " + name + " to be reaped") == -SIGKILL);
    if (!w.wait()) FAIL("the descriptor of " << name << " did not become readable after its producer died");
    bool reported = false;
    for (int round = 0; round < 50 && !reported; ++round) {
        try {
            while (sut.try_pop()) FAIL("a message after the producer's death");
        } catch (const Error& e) {
            CHECK(e.code() == errc::producer_died);
            reported = true;
        }
        if (!reported) REQUIRE(w.wait());  // a spurious wake-up may come first
    }
    CHECK(reported);
}

TEST_CASE("A producer woken only through fd() pushes every message into a full queue", "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    const auto loop = GENERATE(Loop::poll, Loop::epoll);
    INFO(test::kind_label(kind) << (loop == Loop::poll ? " poll" : " epoll"));
    const std::string name = test::unique_name("fdtx");
    test::ShmGuard guard{name};
    test::TempDir dir;
    constexpr std::uint64_t kCount = 50'000;
    auto q = Queue::create(name, test::queue_options(kind, 4096, 64));
    auto reader = test::spawn_queue_peer({"consume", name, "--expect", std::to_string(kCount), "--out",
                                          dir.file("report")});
    {
        Producer<> sut(name);
        Waiter w(loop, sut.fd());
        std::uint64_t seq = 0;
        while (seq < kCount) {
            if (!w.wait()) {
                FAIL("no room signalled on the descriptor of " << name << " within " << kWaitMs << " ms after "
                                                                << seq << " messages (a lost wake-up)");
            }
            for (; seq < kCount; ++seq) {
                const auto m = test::make_message(1, seq, 64);
                if (!sut.try_push(std::span<const std::byte>(m))) break;
            }
        }
    }  // closes: the reader sees the end of stream
    CHECK(reader.wait_or_throw(30s, "the reader of " + name + " to drain it and see the end") == 0);
    const auto r = report_of(dir.file("report"));
    CHECK(r.number("messages") == kCount);
    CHECK(r.number("ended") == 1);
}
