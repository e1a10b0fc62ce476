// Python semantics of queues across real processes: a stream that ends only when no
// producer can come any more (seal), anonymous objects used across fork and by two
// programs at once, and JoinableQueue's join over three consumer processes, one of them
// SIGKILLed while it holds work. Every wait has a deadline naming what it awaited.
#include "queue_catch.hpp"
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/queue.hpp>
#include <shmpipe/semaphore.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

using shmpipe::test::report_of;

// Waits for a forked child with a deadline; SIGKILLs and reaps it at the deadline.
int wait_child(pid_t pid, std::chrono::milliseconds timeout, const std::string& what) {
    int status = 0;
    const bool done = test::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout);
    if (!done) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        FAIL("timed out waiting for " << what);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// A joinable MPMC queue whose stream ends when its one producer closes.
QueueOptions joinable_options() {
    QueueOptions o = test::queue_options(Endpoints::many, 64 * 64, 64, 1);
    o.joinable = true;
    return o;
}

// Three JoinableQueue workers (queue_peer work) on `name`, worker i logging to dir/log<i>,
// with extra_args(i) appended.
std::vector<test::Peer> spawn_workers(const std::string& name, const test::TempDir& dir,
                                      const std::function<std::vector<std::string>(int)>& extra_args) {
    std::vector<test::Peer> workers;
    for (int i = 0; i < 3; ++i) {
        test::SharedLog::create(dir.file("log" + std::to_string(i)));
        std::vector<std::string> args{"work", name, "--log", dir.file("log" + std::to_string(i))};
        for (auto& a : extra_args(i)) args.push_back(std::move(a));
        workers.push_back(test::spawn_queue_peer(args));
    }
    return workers;
}

}  // namespace

TEST_CASE("A short-lived producer process cannot end the stream; sealing ends it once all closed",
          "[multiprocess]") {
    const std::string name = test::unique_name("race");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::many, 8192, 64, 0));
        auto consumer = test::spawn_queue_peer({"consume", name, "--expect", "200", "--out", dir.file("report")});
        auto first = test::spawn_queue_peer({"produce", name, "1", "100", "var:64"});
        CHECK(first.wait_or_throw(30s, "the first producer to push 100 messages to " + name) == 0);
        REQUIRE(test::wait_until([&] { return q.stats().depth == 0; }, 30s));
        std::this_thread::sleep_for(200ms);
        CHECK(consumer.running());  // drained, its only producer closed: still not the end
        auto second = test::spawn_queue_peer({"produce", name, "2", "100", "var:64"});
        CHECK(second.wait_or_throw(30s, "the second producer to push 100 messages to " + name) == 0);
        CHECK(consumer.running());
        q.seal();
        CHECK(consumer.wait_or_throw(30s, "the consumer to see the end of " + name + " after seal()") == 0);
        const auto r = report_of(dir.file("report"));
        CHECK(r.number("messages") == 200);
        CHECK(r.number("producer_died") == 0);
        // A producer that comes after the seal is refused, naming the queue.
        auto late = test::spawn_queue_peer({"attach", name, "producer", "--out", dir.file("late")});
        CHECK(late.wait_or_throw(30s, "a late producer to try " + name) == 10 + static_cast<int>(errc::closed));
        std::ifstream late_out(dir.file("late"));
        std::string text;
        std::getline(late_out, text);
        CHECK_THAT(text, Catch::Contains(name) && Catch::Contains("sealed"));
    }
    test::require_gone(name);
}

TEST_CASE("Anonymous queue and semaphore handles inherited across fork keep working", "[multiprocess]") {
    auto q = Queue::create(test::queue_options(Endpoints::many, 4096, 64, 1));
    auto ready = Semaphore::create(0);  // both owners unlink their anonymous names
    Consumer<int> rx(q.name());
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int code = 0;
        try {
            Producer<int> tx(q.name());  // the inherited owner handle tells the name
            for (int i = 0; i < 10; ++i) tx.push(i);
            ready.release();             // the inherited semaphore handle
        } catch (...) {
            code = 1;
        }
        ::_exit(code);  // the child never owns the names: nothing is unlinked
    }
    CHECK(wait_child(pid, 30s, "the forked child to push to " + q.name()) == 0);
    CHECK(ready.try_acquire_for(5s));
    for (int i = 0; i < 10; ++i) CHECK(rx.pop_for(5s) == i);
    std::optional<int> end = 7;
    REQUIRE(test::finishes_within(q.name(), 5s, [&] { end = rx.pop(); }));
    CHECK_FALSE(end);
}

TEST_CASE("Two copies of a program creating anonymous objects at once never collide", "[multiprocess]") {
    constexpr int kEach = 100;
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    std::vector<pid_t> children;
    for (int c = 0; c < 2; ++c) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            ::close(fds[0]);
            int code = 0;
            try {
                std::vector<Queue> queues;  // all alive at once: a collision would be already_exists
                for (int i = 0; i < kEach; ++i) queues.push_back(Queue::create(test::queue_options(Endpoints::one)));
                for (const auto& q : queues) {
                    const std::string line = q.name() + "\n";
                    if (::write(fds[1], line.data(), line.size()) != static_cast<ssize_t>(line.size())) code = 2;
                }
            } catch (...) {
                code = 1;
            }
            ::close(fds[1]);
            ::_exit(code);  // after the vector's destructors: the queues are unlinked
        }
        children.push_back(pid);
    }
    ::close(fds[1]);
    const std::string all = test::read_all(fds[0], 30s, "the names of both children's anonymous queues");
    ::close(fds[0]);
    for (const pid_t pid : children) CHECK(wait_child(pid, 30s, "a child creating anonymous queues") == 0);
    std::set<std::string> names;
    std::size_t lines = 0;
    for (std::size_t at = 0; at < all.size();) {
        const auto nl = all.find('\n', at);
        names.insert(all.substr(at, nl - at));
        ++lines;
        at = nl + 1;
    }
    CHECK(lines == 2 * kEach);
    CHECK(names.size() == 2 * kEach);
    for (const auto& n : names) CHECK(test::shm_objects_with_prefix(n).empty());
}

TEST_CASE("join returns once three consumer processes marked every message done", "[multiprocess]") {
    const std::string name = test::unique_name("join");
    test::ShmGuard guard{name};
    test::TempDir dir;
    constexpr int kCount = 500;
    {
        auto q = Queue::create(name, joinable_options());
        Producer<int> tx(name);
        auto workers = spawn_workers(name, dir, [](int) { return std::vector<std::string>{"--delay-us", "100"}; });
        for (int i = 0; i < kCount; ++i) tx.push(i);
        bool joined = false;
        REQUIRE(test::finishes_within(name, 60s, [&] { q.join(); joined = true; }));
        CHECK(joined);
        std::uint64_t done = 0;
        for (int i = 0; i < 3; ++i) done += test::SharedLog::open(dir.file("log" + std::to_string(i))).size();
        CHECK(done == kCount);  // the workers log before task_done: all done means all logged
        tx.close();
        for (auto& w : workers) CHECK(w.wait_or_throw(30s, "a worker to see the end of " + name) == 0);
    }
    test::require_gone(name);
}

TEST_CASE("join across three consumer processes, one SIGKILLed holding work: it throws naming it, then returns",
          "[multiprocess]") {
    const std::string name = test::unique_name("joinkill");
    test::ShmGuard guard{name};
    test::TempDir dir;
    constexpr int kCount = 300;
    constexpr int kHeld = 5;
    {
        auto q = Queue::create(name, joinable_options());
        Producer<int> tx(name);
        // Worker 0 takes kHeld messages without marking them done, then waits to be killed.
        auto workers = spawn_workers(name, dir, [](int i) {
            return i == 0 ? std::vector<std::string>{"--undone", std::to_string(kHeld)}
                          : std::vector<std::string>{"--delay-us", "300"};
        });
        REQUIRE(test::wait_until([&] { return q.stats().consumers == 3; }, 30s));
        for (int i = 0; i < kCount; ++i) tx.push(i);
        auto log0 = test::SharedLog::open(dir.file("log0"));
        REQUIRE(test::wait_until([&] { return log0.size() == 1; }, 30s));  // it holds kHeld, un-done
        CHECK(log0.snapshot()[0] == 1000000 + kHeld);
        const int victim = workers[0].pid();
        workers[0].signal(SIGKILL);
        CHECK(workers[0].wait_or_throw(30s, "the SIGKILLed worker of " + name) == -SIGKILL);

        std::string first_error;
        bool second_returned = false;
        REQUIRE(test::finishes_within(name, 60s, [&] {
            try {
                q.join();
            } catch (const Error& e) {
                if (e.code() != errc::consumer_died) throw;
                first_error = e.what();
            }
            q.join();  // the orphans were written off: nothing is left to wait for
            second_returned = true;
        }));
        INFO(first_error);
        CHECK_THAT(first_error, Catch::Contains(name) && Catch::Contains("pid " + std::to_string(victim)) &&
                                    Catch::Contains(std::to_string(kHeld) + " message(s)"));
        CHECK(second_returned);
        std::uint64_t done = 0;
        for (int i = 1; i < 3; ++i) done += test::SharedLog::open(dir.file("log" + std::to_string(i))).size();
        CHECK(done == kCount - kHeld);
        tx.close();
        for (int i = 1; i < 3; ++i) CHECK(workers[i].wait_or_throw(30s, "a worker to see the end of " + name) == 0);
    }
    test::require_gone(name);
}

TEST_CASE("A queue sized by max_messages takes that many from a producer process; qsize and full agree",
          "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("maxmsgs");
    test::ShmGuard guard{name};
    constexpr int kMessages = 64;
    {
        QueueOptions o = test::queue_options(kind, 64, 256, 1);  // capacity is ignored with max_messages
        o.max_messages = kMessages;
        auto q = Queue::create(name, o);
        Consumer<> rx(name);
        // The producer pushes exactly max_messages of max_message bytes without a consumer
        // popping: it exits only if they all fit.
        auto producer = test::spawn_queue_peer({"produce", name, "3", std::to_string(kMessages), "256"});
        CHECK(producer.wait_or_throw(30s, "the producer to push max_messages messages into " + name) == 0);
        CHECK(rx.qsize() == kMessages);
        CHECK(q.stats().depth == kMessages);
        for (int i = 0; i < kMessages; ++i) {
            auto m = rx.pop_for(5s);
            REQUIRE(m);
            std::uint32_t id = 0;
            std::uint64_t seq = 0;
            REQUIRE(test::parse_message(*m, id, seq));
            CHECK(seq == static_cast<std::uint64_t>(i));
        }
        CHECK(rx.empty());
        CHECK_FALSE(rx.full());
        CHECK_FALSE(rx.pop_for(std::chrono::duration<double>(2.1)));  // the producer closed: the end
        CHECK(rx.ended());
    }
    test::require_gone(name);
}
