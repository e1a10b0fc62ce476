// Synchronisation objects that fit C++ and Python habits, across real processes: Semaphore
// with std::scoped_lock and try_lock (std::lock_guard: sync_processes.cpp), Condition::notify(n),
// Barrier::wait with an action and reset(), and Pipe::recv<T> refusing a message sent as
// another type.
#include "sync_testing.hpp"
#include "test_catch.hpp"

#include <shmpipe/barrier.hpp>
#include <shmpipe/condition.hpp>
#include <shmpipe/mutex.hpp>
#include <shmpipe/pipe.hpp>
#include <shmpipe/semaphore.hpp>
#include <shmpipe/shared_array.hpp>

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
namespace sp = shmpipe;
namespace test = shmpipe::test;

TEST_CASE("a Semaphore works with std::scoped_lock and std::unique_lock's try_lock", "[multiprocess][semaphore]") {
    test::ShmGuard guard;
    const std::string sname = guard.add(test::unique_name("sems"));
    const std::string mname = guard.add(test::unique_name("semsm"));
    auto sut = sp::Semaphore::create(sname, 1);
    auto other = sp::Mutex::create(mname);
    {
        std::scoped_lock both(sut, other);  // deadlock-free acquisition of both
        CHECK(sut.value_approx() == 0);
        std::unique_lock<sp::Semaphore> again(sut, std::try_to_lock);
        CHECK_FALSE(again.owns_lock());
    }
    CHECK(sut.value_approx() == 1);
    // A forked child finds the unit free, takes it with try_lock and gives it back.
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        bool took = false;
        {
            std::unique_lock<sp::Semaphore> lk(sut, std::try_to_lock);
            took = lk.owns_lock();
        }  // released here: _exit runs no destructors
        ::_exit(took ? 0 : 1);
    }
    CHECK(test::reap_child(pid, 20s, "child taking the semaphore with try_lock") == 0);
    CHECK(sut.value_approx() == 1);
}

TEST_CASE("Condition::notify(2) lets two of three waiting processes take a token, notify(1) the third",
          "[multiprocess][condition]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("nm"));
    const std::string cname = guard.add(test::unique_name("ncv"));
    const std::string tname = guard.add(test::unique_name("ntok"));
    auto m = sp::Mutex::create(mname);
    auto sut = sp::Condition::create(cname);
    auto counters = sp::SharedArray<std::int64_t>::create(tname, 2);  // [0] tokens, [1] taken
    std::int64_t* d = counters.data();
    std::vector<test::Peer> peers;
    for (int i = 0; i < 3; ++i) peers.push_back(test::spawn_sync_peer({"cond-take", mname, cname, tname}));
    {
        std::unique_lock lk(m);
        sut.notify(0);  // nothing: no token yet, and notify(0) wakes no one
        d[0] = 2;
        sut.notify(2);
    }
    REQUIRE(test::wait_until([&] { return counters.load(1) == 2; }, 20s));
    int running = 0;
    for (auto& p : peers) running += p.running() ? 1 : 0;
    CHECK(running >= 1);  // the third found no token: it waits (a spurious wake-up re-checks)
    CHECK(counters.load(1) == 2);
    {
        std::unique_lock lk(m);
        d[0] = 1;
        sut.notify(1);
    }
    for (auto& p : peers) CHECK(p.wait_or_throw(30s, "process taking a token under condition " + cname) == 0);
    CHECK(counters.load(0) == 0);
    CHECK(counters.load(1) == 3);
}

TEST_CASE("a Barrier's action runs once per generation, in the last process to arrive, before the release",
          "[multiprocess][barrier]") {
    test::ShmGuard guard;
    const std::string bname = guard.add(test::unique_name("bact"));
    const std::string aname = guard.add(test::unique_name("bacts"));
    auto sut = sp::Barrier::create(bname, 3);
    const auto actions = test::run_barrier_parties("barrier-action", bname, aname, 20, "party with an action");
    CHECK(actions == std::vector<std::uint32_t>(20, 1));  // one action per generation
    CHECK_FALSE(sut.broken());
}

TEST_CASE("a Barrier action that throws breaks the barrier; its party gets the action's exception",
          "[multiprocess][barrier]") {
    test::ShmGuard guard;
    const std::string bname = guard.add(test::unique_name("bthrow"));
    auto sut = sp::Barrier::create(bname, 2, [] { throw std::logic_error("action failed"); });
    auto other = test::spawn_sync_peer({"barrier-expect-broken", bname});
    // The peer arrives first (we wait until it has), so this process is last and runs the action.
    REQUIRE(test::wait_until([&] { return sut.n_waiting() == 1; }, 20s));
    CHECK_THROWS_AS(sut.wait_for(20s), std::logic_error);
    CHECK(other.wait_or_throw(20s, "party broken by the action at " + bname) == 5);
    CHECK(sut.broken());
    CHECK_THROWS_WITH(sut.wait(), Catch::Contains("the barrier action threw"));
}

TEST_CASE("Barrier::reset breaks the current waiters and makes the barrier usable again", "[multiprocess][barrier]") {
    test::ShmGuard guard;
    const std::string bname = guard.add(test::unique_name("breset"));
    const std::string aname = guard.add(test::unique_name("breseta"));
    auto sut = sp::Barrier::create(bname, 3);
    std::vector<test::Peer> waiting;
    for (int i = 0; i < 2; ++i) waiting.push_back(test::spawn_sync_peer({"barrier-expect-broken", bname}));
    REQUIRE(test::wait_until([&] { return sut.n_waiting() == 2; }, 20s));
    sut.reset();
    for (auto& p : waiting) CHECK(p.wait_or_throw(20s, "party waiting at " + bname + " during reset()") == 5);
    CHECK_FALSE(sut.broken());
    CHECK(sut.n_waiting() == 0);

    // Broken by abort, then reset: three parties pass it again, round after round.
    sut.abort();
    REQUIRE(sut.broken());
    sut.reset();
    REQUIRE_FALSE(sut.broken());
    const auto arrivals = test::run_barrier_parties("barrier", bname, aname, 5, "party after reset()");
    CHECK(arrivals == std::vector<std::uint32_t>(5, 3));
}

TEST_CASE("Pipe::recv<T> of a message sent as another type is refused with errc::type_mismatch",
          "[multiprocess][pipe]") {
    auto [a, b] = sp::Pipe::create();
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        a.close();
        try {
            b.send(std::string("abcd"));  // 4 bytes: as an int it would decode to 1684234849
            b.send(std::int32_t{7});
            b.send_bytes(std::as_bytes(std::span("xy", 2)));
        } catch (...) {
            ::_exit(7);
        }
        ::_exit(0);
    }
    b.close();
    try {
        (void)a.recv<std::int32_t>();
        FAIL("a string was received as an int");
    } catch (const sp::Error& e) {
        CHECK(e.code() == sp::errc::type_mismatch);
        CHECK_THAT(e.what(), Catch::Contains("sent as another type than int"));
    }
    CHECK(a.recv<std::int32_t>() == 7);  // the refused message was consumed: the stream is in step
    CHECK(a.recv<std::string>() == "xy");  // untyped bytes pair with any type
    CHECK(test::reap_child(pid, 20s, "child sending mistyped messages") == 0);
}
