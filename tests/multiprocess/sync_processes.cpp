// Synchronisation objects across real processes: sync_peer programs (spawned) and forked
// children (which leave with _exit). Every wait has a deadline naming what it awaited.
#include "sync_testing.hpp"
#include "test_catch.hpp"

#include <shmpipe/barrier.hpp>
#include <shmpipe/condition.hpp>
#include <shmpipe/event.hpp>
#include <shmpipe/mutex.hpp>
#include <shmpipe/pipe.hpp>
#include <shmpipe/semaphore.hpp>
#include <shmpipe/shared_array.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
namespace sp = shmpipe;
namespace test = shmpipe::test;

TEST_CASE("two processes incrementing a counter 1,000,000 times under a Mutex end at exactly 2,000,000",
          "[multiprocess][mutex]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("mtx"));
    const std::string cname = guard.add(test::unique_name("ctr"));
    const std::string ename = guard.add(test::unique_name("go"));
    auto sut = sp::Mutex::create(mname);
    auto counter = sp::SharedValue<std::uint64_t>::create(cname, 0);
    auto go = sp::Event::create(ename);
    const std::string n = "1000000";
    auto a = test::spawn_sync_peer({"mutex-inc", mname, cname, n, ename});
    auto b = test::spawn_sync_peer({"mutex-inc", mname, cname, n, ename});
    go.set();  // start both at once so they contend
    CHECK(a.wait_or_throw(100s, "peer A incrementing under mutex " + mname) == 0);
    CHECK(b.wait_or_throw(100s, "peer B incrementing under mutex " + mname) == 0);
    REQUIRE(counter.load() == 2'000'000);
}

TEST_CASE("a Semaphore of 3 never lets a 4th process in", "[multiprocess][semaphore]") {
    // acquire()/release(), and std::lock_guard (Python's `with sem:`).
    const std::string role = GENERATE(as<std::string>{}, "sem-inside", "sem-guard-inside");
    test::ShmGuard guard;
    const std::string sname = guard.add(test::unique_name("sem"));
    const std::string stats_name = guard.add(test::unique_name("stats"));
    auto sut = sp::Semaphore::create(sname, 3);
    auto stats = sp::SharedArray<std::int64_t>::create(stats_name, 2);  // [0] inside now, [1] most seen
    std::vector<test::Peer> peers;
    for (int i = 0; i < 5; ++i) peers.push_back(test::spawn_sync_peer({role, sname, stats_name, "200"}));
    for (auto& p : peers) CHECK(p.wait_or_throw(60s, role + " peer acquiring semaphore " + sname) == 0);
    CHECK(stats.load(0) == 0);
    REQUIRE(stats.load(1) <= 3);
    REQUIRE(stats.load(1) >= 1);
    CHECK(sut.value_approx() == 3);
}

TEST_CASE("an Event wakes every process waiting for it", "[multiprocess][event]") {
    test::ShmGuard guard;
    const std::string ename = guard.add(test::unique_name("ev"));
    const std::string cname = guard.add(test::unique_name("arrived"));
    auto sut = sp::Event::create(ename);
    auto arrived = sp::SharedValue<std::uint32_t>::create(cname, 0);
    std::vector<test::Peer> peers;
    for (int i = 0; i < 4; ++i) peers.push_back(test::spawn_sync_peer({"event-wait", ename, "30000", cname}));
    REQUIRE(test::wait_until([&] { return arrived.load() == 4; }, 20s));
    std::this_thread::sleep_for(50ms);  // let them fall asleep (not required for correctness)
    sut.set();
    for (auto& p : peers) CHECK(p.wait_or_throw(20s, "peer waiting for event " + ename) == 0);
}

TEST_CASE("a Barrier releases its parties together, generation after generation", "[multiprocess][barrier]") {
    test::ShmGuard guard;
    const std::string bname = guard.add(test::unique_name("bar"));
    const std::string aname = guard.add(test::unique_name("arr"));
    auto sut = sp::Barrier::create(bname, 3);
    const auto arrivals = test::run_barrier_parties("barrier", bname, aname, 20, "party");
    CHECK(arrivals == std::vector<std::uint32_t>(20, 3));  // all three in every generation
    CHECK_FALSE(sut.broken());
}

TEST_CASE("a Pipe end handed to an exec'd program upper-cases strings round trip", "[multiprocess][pipe]") {
    auto [a, b] = sp::Pipe::create();
    b.set_inheritable(true);
    auto child = test::spawn_sync_peer({"pipe-upper", std::to_string(b.fd())});
    b.close();  // the child holds the only copy now
    for (const std::string& s : std::vector<std::string>{"hello, world", "", std::string(100000, 'x'), "shmpipe"}) {
        a.send(s);
        REQUIRE(a.poll(20s));
        std::string expect = s;
        for (auto& c : expect) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        REQUIRE(a.recv<std::string>() == expect);
    }
    a.close();  // end of stream: the child's recv throws closed and it exits 0
    REQUIRE(child.wait_or_throw(20s, "pipe-upper peer") == 0);
}

TEST_CASE("a Pipe works across fork and reports the end of a child that exited", "[multiprocess][pipe]") {
    auto [a, b] = sp::Pipe::create();
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        a.close();
        try {
            auto s = b.recv<std::string>();
            for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            b.send(s);
            b.send(std::vector<int>{1, 2, 3});
        } catch (...) {
            ::_exit(7);
        }
        ::_exit(0);
    }
    b.close();
    a.send(std::string("fork me"));
    REQUIRE(a.recv<std::string>() == "FORK ME");
    REQUIRE(a.recv<std::vector<int>>() == std::vector<int>{1, 2, 3});
    REQUIRE(test::reap_child(pid, 20s, "pipe child") == 0);
    REQUIRE_THROWS_WITH(a.recv<std::string>(), Catch::Contains("the other end was closed or its process died"));
}

TEST_CASE("recv on a Pipe whose peer was killed throws errc::closed", "[multiprocess][pipe]") {
    auto [a, b] = sp::Pipe::create();
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        a.close();
        for (;;) ::pause();
    }
    b.close();
    REQUIRE_FALSE(a.poll(50ms));
    ::kill(pid, SIGKILL);
    REQUIRE(test::reap_child(pid, 20s, "killed pipe child") == -SIGKILL);
    REQUIRE(a.poll(5s));
    try {
        (void)a.recv<int>();
        FAIL("recv after the peer died did not throw");
    } catch (const sp::Error& e) {
        CHECK(e.code() == sp::errc::closed);
    }
    REQUIRE_THROWS_AS(a.send(1), sp::Error);
}

TEST_CASE("a Condition hands items from a producer to a consumer process in order", "[multiprocess][condition]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("cm"));
    const std::string cname = guard.add(test::unique_name("cv"));
    const std::string rname = guard.add(test::unique_name("ring"));
    auto m = sp::Mutex::create(mname);
    auto sut = sp::Condition::create(cname);
    const std::int64_t cap = 4;
    const std::int64_t count = 3000;
    auto ring = sp::SharedArray<std::int64_t>::create(rname, static_cast<std::size_t>(cap + 2));  // head, tail, items
    auto consumer = test::spawn_sync_peer({"cond-consumer", mname, cname, rname, std::to_string(count)});
    std::int64_t* d = ring.data();
    for (std::int64_t v = 1; v <= count; ++v) {
        std::unique_lock lk(m);
        REQUIRE(sut.wait_for(lk, 20s, [&] { return d[1] - d[0] < cap; }));
        d[2 + d[1] % cap] = v;
        ++d[1];
        sut.notify_all();
    }
    REQUIRE(consumer.wait_or_throw(30s, "condition consumer") == 0);
    CHECK(d[0] == count);
}

TEST_CASE("a Mutex whose owner is killed is recovered and reported by the next locker", "[multiprocess][mutex][death]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("mdead"));
    const std::string ename = guard.add(test::unique_name("held"));
    auto sut = sp::Mutex::create(mname);
    auto held = sp::Event::create(ename);
    auto holder = test::spawn_sync_peer({"mutex-hold", mname, ename});
    REQUIRE(held.wait_for(20s));
    REQUIRE_FALSE(sut.try_lock());
    REQUIRE_FALSE(sut.try_lock_for(100ms));
    holder.signal(SIGKILL);  // not reaped yet: a zombie is dead too
    REQUIRE(sut.try_lock_for(10s));
    CHECK(sut.owner_died());
    CHECK(sut.recoveries() == 1);
    sut.mark_consistent();
    CHECK_FALSE(sut.owner_died());
    sut.unlock();
    CHECK(holder.wait_or_throw(10s, "killed mutex holder") == -SIGKILL);
    sut.lock();
    CHECK_FALSE(sut.owner_died());
    sut.unlock();
}

TEST_CASE("a dead owner's inconsistency stays reported until mark_consistent", "[multiprocess][mutex][death]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("mdead2"));
    const std::string ename = guard.add(test::unique_name("held2"));
    auto sut = sp::RecursiveMutex::create(mname);
    auto held = sp::Event::create(ename);
    auto holder = test::spawn_sync_peer({"rmutex-hold", mname, ename});
    REQUIRE(held.wait_for(20s));
    holder.signal(SIGKILL);
    CHECK(holder.wait_or_throw(10s, "killed recursive mutex holder") == -SIGKILL);
    REQUIRE(sut.try_lock_for(10s));
    CHECK(sut.depth() == 1);  // the dead owner's depth of 2 is not inherited
    CHECK(sut.owner_died());
    sut.unlock();
    sut.lock();
    CHECK(sut.owner_died());  // nobody marked it consistent
    sut.mark_consistent();
    sut.unlock();
}

TEST_CASE("a killed Semaphore holder's units come back with recover_dead_holders", "[multiprocess][semaphore][death]") {
    test::ShmGuard guard;
    const std::string sname = guard.add(test::unique_name("semdead"));
    const std::string ename = guard.add(test::unique_name("taken"));
    sp::SemaphoreOptions opt;
    opt.recover_dead_holders = true;
    auto sut = sp::Semaphore::create(sname, 2, opt);
    auto taken = sp::Event::create(ename);
    auto holder = test::spawn_sync_peer({"sem-hold", sname, "2", ename});
    REQUIRE(taken.wait_for(20s));
    REQUIRE_FALSE(sut.try_acquire());
    holder.signal(SIGKILL);
    REQUIRE(sut.try_acquire_for(10s));
    CHECK(sut.recovered_units() == 2);
    REQUIRE(sut.try_acquire());  // both units came back, exactly once
    CHECK_FALSE(sut.try_acquire());
    sut.release(2);
    CHECK(sut.value_approx() == 2);
    CHECK(holder.wait_or_throw(10s, "killed semaphore holder") == -SIGKILL);
}

TEST_CASE("without recover_dead_holders a killed holder's units stay taken", "[multiprocess][semaphore][death]") {
    test::ShmGuard guard;
    const std::string sname = guard.add(test::unique_name("semkeep"));
    const std::string ename = guard.add(test::unique_name("taken2"));
    auto sut = sp::Semaphore::create(sname, 1);
    auto taken = sp::Event::create(ename);
    auto holder = test::spawn_sync_peer({"sem-hold", sname, "1", ename});
    REQUIRE(taken.wait_for(20s));
    holder.signal(SIGKILL);
    CHECK(holder.wait_or_throw(10s, "killed semaphore holder") == -SIGKILL);
    CHECK_FALSE(sut.try_acquire_for(200ms));
    CHECK(sut.recovered_units() == 0);
}

TEST_CASE("a Barrier breaks when a party is killed, and every waiter hears why", "[multiprocess][barrier][death]") {
    test::ShmGuard guard;
    const std::string bname = guard.add(test::unique_name("bdead"));
    const std::string ename = guard.add(test::unique_name("idle"));
    auto sut = sp::Barrier::create(bname, 3);
    auto ready = sp::Event::create(ename);
    auto waiter = test::spawn_sync_peer({"barrier-expect-broken", bname});
    auto idle = test::spawn_sync_peer({"barrier-idle", bname, ename});
    REQUIRE(ready.wait_for(20s));
    REQUIRE(test::wait_until([&] { return sut.n_waiting() == 1; }, 20s));
    idle.signal(SIGKILL);
    try {
        sut.arrive_and_wait_for(20s);
        FAIL("arrive_and_wait returned although a party died");
    } catch (const sp::Error& e) {
        CHECK(e.code() == sp::errc::broken);
        CHECK_THAT(e.what(), Catch::Contains("died") && Catch::Contains(bname));
    }
    CHECK(sut.broken());
    CHECK(waiter.wait_or_throw(20s, "party expecting a broken barrier") == 5);
    CHECK(idle.wait_or_throw(10s, "killed idle party") == -SIGKILL);
}

TEST_CASE("a Barrier party killed while waiting breaks the barrier for the others", "[multiprocess][barrier][death]") {
    test::ShmGuard guard;
    const std::string bname = guard.add(test::unique_name("bdead2"));
    auto sut = sp::Barrier::create(bname, 3);
    auto doomed = test::spawn_sync_peer({"barrier-expect-broken", bname});
    REQUIRE(test::wait_until([&] { return sut.n_waiting() == 1; }, 20s));
    doomed.signal(SIGKILL);
    CHECK(doomed.wait_or_throw(10s, "killed waiting party") == -SIGKILL);
    REQUIRE_THROWS_MATCHES(sut.arrive_and_wait_for(20s), sp::Error,
                           Catch::Predicate<sp::Error>([](const sp::Error& e) { return e.code() == sp::errc::broken; },
                                                       "errc::broken"));
}

TEST_CASE("forked children share a Mutex, SharedArray and Semaphore created before the fork", "[multiprocess][fork]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("fm"));
    const std::string aname = guard.add(test::unique_name("fa"));
    const std::string sname = guard.add(test::unique_name("fs"));
    auto m = sp::Mutex::create(mname);
    auto arr = sp::SharedArray<std::uint64_t>::create(aname, 4);
    auto sem = sp::Semaphore::create(sname, 0);
    std::vector<pid_t> kids;
    for (int k = 0; k < 3; ++k) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int rc = 0;
            try {
                for (int i = 0; i < 10000; ++i) {
                    std::lock_guard g(m);
                    arr.data()[0] = arr.data()[0] + 1;
                    arr.fetch_add(1, 2);
                }
                sem.release();
            } catch (...) {
                rc = 7;
            }
            ::_exit(rc);
        }
        kids.push_back(pid);
    }
    for (int k = 0; k < 3; ++k) REQUIRE(sem.try_acquire_for(30s));
    for (const pid_t pid : kids) CHECK(test::reap_child(pid, 20s, "forked incrementer") == 0);
    CHECK(arr.load(0) == 30000);
    CHECK(arr.load(1) == 60000);
}

TEST_CASE("a thread already asleep on a Mutex gets it when the owner is killed", "[multiprocess][mutex][death]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("msleep"));
    const std::string ename = guard.add(test::unique_name("held3"));
    auto sut = sp::Mutex::create(mname);
    auto held = sp::Event::create(ename);
    auto holder = test::spawn_sync_peer({"mutex-hold", mname, ename});
    REQUIRE(held.wait_for(20s));
    std::atomic<int> result{0};  // 1 = got it and saw owner_died
    std::thread waiter([&] {
        try {
            sut.lock();  // sleeps on the futex: the holder is alive
            result = sut.owner_died() ? 1 : 2;
            sut.mark_consistent();
            sut.unlock();
        } catch (...) {
            result = 3;
        }
    });
    std::this_thread::sleep_for(200ms);  // let it fall asleep (not required for correctness)
    CHECK(result.load() == 0);
    holder.signal(SIGKILL);
    const bool done = test::wait_until([&] { return result.load() != 0; }, 20s);
    if (!done) sut.persist();  // keep the evidence; the waiter is stuck
    REQUIRE(done);  // else: the sleeping waiter never noticed the dead owner of mutex mname
    waiter.join();
    CHECK(result.load() == 1);
    CHECK(holder.wait_or_throw(10s, "killed mutex holder") == -SIGKILL);
}

TEST_CASE("killing one of two contending lockers mid-run never wedges the Mutex", "[multiprocess][mutex][death]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("mkill"));
    const std::string cname = guard.add(test::unique_name("ckill"));
    const std::string ename = guard.add(test::unique_name("gokill"));
    auto sut = sp::Mutex::create(mname);
    auto counter = sp::SharedValue<std::uint64_t>::create(cname, 0);
    auto go = sp::Event::create(ename);
    auto victim = test::spawn_sync_peer({"mutex-inc", mname, cname, "1000000000", ename});
    auto survivor = test::spawn_sync_peer({"mutex-inc", mname, cname, "300000", ename});
    go.set();
    REQUIRE(test::wait_until([&] { return counter.load() > 100'000; }, 30s));
    victim.signal(SIGKILL);  // at an arbitrary instruction, quite likely holding the lock
    CHECK(victim.wait_or_throw(10s, "killed contending locker") == -SIGKILL);
    CHECK(survivor.wait_or_throw(60s, "surviving locker on mutex " + mname) == 0);
    REQUIRE(sut.try_lock_for(10s));
    if (sut.owner_died()) sut.mark_consistent();
    sut.unlock();
}
