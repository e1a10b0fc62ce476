// shmpipe::wait over consumers, pipes, processes and events, and Process::sentinel, with
// real child processes doing what makes each object ready. Every wait has a timeout; an
// empty result where an object should be ready names it.
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/event.hpp>
#include <shmpipe/pipe.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>
#include <shmpipe/wait.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <poll.h>
#include <string>
#include <thread>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

bool readable(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) == 1;
}

}  // namespace

TEST_CASE("wait over a consumer, a pipe and a process returns each when another process makes it ready",
          "[multiprocess]") {
    const std::string qname = test::unique_name("waitq");
    const std::string ename = test::unique_name("waitev");
    test::ShmGuard guard{qname, ename};
    QueueOptions o;
    o.producers = Endpoints::one;
    o.consumers = Endpoints::one;
    auto q = Queue::create(qname, o);
    auto go = Event::create(ename);
    Consumer<int> rx(qname);
    auto [a, b] = Pipe::create();
    Process sleeper([ename] { Event::open(ename).wait(); });  // exits once `go` is set
    sleeper.start();
    (void)rx.fd();  // the descriptor starts readable: make it, then drain once, which arms it
    while (rx.try_pop()) {
    }

    const auto idle = wait({rx, b, sleeper}, 100ms);
    CHECK(idle.empty());

    Process writer([qname] {
        Producer<int> tx(qname);
        tx.push(42);
    });
    writer.start();
    // The producer's attach rings too (so the consumer starts watching it): a consumer may
    // be ready more than once before its message is there, as a descriptor may.
    std::optional<int> got;
    for (int round = 0; round < 100 && !got; ++round) {
        const auto first = wait({rx, b, sleeper}, 20s);
        REQUIRE(first == std::vector<std::size_t>{0});
        got = rx.try_pop();
    }
    CHECK(got == 42);
    CHECK(writer.join_for(10s));

    Process sender([&a] { a.send(std::string("hello")); });
    sender.start();
    CHECK(sender.join_for(10s));
    const auto second = wait({b, sleeper}, 20s);
    REQUIRE(second == std::vector<std::size_t>{0});
    CHECK(b.recv<std::string>() == "hello");

    go.set();
    const auto third = wait({b, sleeper}, 20s);
    REQUIRE(third == std::vector<std::size_t>{1});
    CHECK(sleeper.join() == 0);
}

TEST_CASE("wait returns an event set by another process, and a set event at once", "[multiprocess]") {
    const std::string ename = test::unique_name("waitev2");
    test::ShmGuard guard{ename};
    auto ev = Event::create(ename);
    auto [a, b] = Pipe::create();
    CHECK(wait({ev, b}, 50ms).empty());

    Process setter([ename] {
        std::this_thread::sleep_for(50ms);
        Event::open(ename).set();
    });
    setter.start();
    const auto r = wait({b, ev}, 20s);
    CHECK(r == std::vector<std::size_t>{1});
    CHECK(setter.join_for(10s));
    CHECK(wait({ev}, 0ms) == std::vector<std::size_t>{0});
}

TEST_CASE("A process's sentinel becomes readable when it exits, and not before", "[multiprocess]") {
    const bool fallback = GENERATE(false, true);
    INFO((fallback ? "pipe fallback" : "pidfd"));
    if (fallback) ::setenv("SHMPIPE_SENTINEL_FALLBACK", "1", 1);
    const std::string ename = test::unique_name("sentinel");
    test::ShmGuard guard{ename};
    auto go = Event::create(ename);
    Process sut([ename] {
        Event::open(ename).wait();
        std::_Exit(5);
    });
    CHECK_THROWS_AS(sut.sentinel(), Error);  // not started
    sut.start();
    const int fd = sut.sentinel();
    ::unsetenv("SHMPIPE_SENTINEL_FALLBACK");
    CHECK(sut.sentinel() == fd);  // one descriptor per process

    CHECK_FALSE(readable(fd, 100));
    go.set();
    if (!readable(fd, 20'000)) FAIL("the sentinel of pid " << sut.pid() << " stayed quiet after it exited");
    CHECK(sut.is_alive() == false);
    CHECK(sut.exit_code() == 5);
    CHECK(readable(fd, 0));  // still readable after the reap
}
