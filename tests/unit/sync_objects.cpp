// Synchronisation objects in one process: behaviour, timeouts and bad input (messages
// checked). Cross-process behaviour: tests/multiprocess/sync_processes.cpp.
#include "test_support.hpp"

#include <shmpipe/barrier.hpp>
#include <shmpipe/condition.hpp>
#include <shmpipe/event.hpp>
#include <shmpipe/mutex.hpp>
#include <shmpipe/pipe.hpp>
#include <shmpipe/semaphore.hpp>
#include <shmpipe/shared_array.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace sp = shmpipe;
namespace test = shmpipe::test;
using Catch::Contains;

namespace {

sp::errc code_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const sp::Error& e) {
        return static_cast<sp::errc>(e.code().value());
    }
    FAIL("no shmpipe::Error was thrown");
    return sp::errc::invalid_argument;
}

struct Big {
    std::array<std::uint64_t, 5> v;
};

}  // namespace

// --- names, kinds, existence -----------------------------------------------------------------

TEST_CASE("creating a sync object with a bad name names the object and the character", "[unit][sync]") {
    REQUIRE_THROWS_WITH(sp::Mutex::create("bad/name"), Contains("mutex name \"bad/name\"") && Contains("'/'"));
    REQUIRE_THROWS_WITH(sp::Semaphore::create("", 1), Contains("semaphore name \"\": is empty"));
    REQUIRE_THROWS_WITH(sp::Barrier::create("a b", 2), Contains("barrier name") && Contains("' '"));
    REQUIRE_THROWS_WITH(sp::Event::open("x*"), Contains("event name \"x*\""));
    CHECK(code_of([] { sp::Condition::create("no:colon"); }) == sp::errc::invalid_name);
}

TEST_CASE("opening a missing sync object says it does not exist", "[unit][sync]") {
    const auto name = test::unique_name("missing");
    REQUIRE_THROWS_WITH(sp::Semaphore::open(name),
                        Contains("open semaphore \"" + name + "\"") && Contains("does not exist"));
    CHECK(code_of([&] { sp::Mutex::open(name); }) == sp::errc::not_found);
    CHECK(code_of([&] { sp::SharedArray<int>::open(name); }) == sp::errc::not_found);
}

TEST_CASE("opening a semaphore as a mutex is refused as the wrong kind", "[unit][sync]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("kind"));
    auto sem = sp::Semaphore::create(name, 1);
    REQUIRE_THROWS_WITH(sp::Mutex::open(name), Contains("open mutex \"" + name + "\"") &&
                                                   Contains("it is a semaphore, not a mutex"));
    CHECK(code_of([&] { sp::Barrier::open(name); }) == sp::errc::wrong_kind);
    CHECK(code_of([&] { sp::SharedValue<int>::open(name); }) == sp::errc::wrong_kind);
}

TEST_CASE("a plain and a recursive mutex do not open as each other", "[unit][mutex]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("rk"));
    auto sut = sp::RecursiveMutex::create(name);
    REQUIRE_THROWS_WITH(sp::Mutex::open(name), Contains("it is a recursive mutex"));
    CHECK(code_of([&] { sp::Mutex::open(name); }) == sp::errc::wrong_kind);
}

TEST_CASE("creating a name that exists fails, and the creator unlinks the name unless persisted", "[unit][sync]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("own"));
    {
        auto sut = sp::Event::create(name);
        REQUIRE(sp::exists(name));
        REQUIRE_THROWS_WITH(sp::Event::create(name), Contains("already exists"));
        auto other = sp::Event::open(name);  // an opener does not own the name
    }
    CHECK_FALSE(sp::exists(name));
    {
        auto sut = sp::Event::create(name);
        sut.persist();
    }
    CHECK(sp::exists(name));
    auto again = sp::Event::open(name);
}

TEST_CASE("an empty (default or moved-from) handle refuses to work", "[unit][sync]") {
    sp::Mutex sut;
    REQUIRE_THROWS_WITH(sut.lock(), Contains("closed or was moved from"));
    CHECK(code_of([&] { sut.unlock(); }) == sp::errc::invalid_state);
    sp::Event e;
    CHECK(code_of([&] { e.set(); }) == sp::errc::invalid_state);
}

// --- mutex --------------------------------------------------------------------------------------

TEST_CASE("a Mutex excludes, times out, and refuses an unlock by a non-owner", "[unit][mutex]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("m"));
    auto sut = sp::Mutex::create(name);
    auto other = sp::Mutex::open(name);
    REQUIRE_THROWS_WITH(sut.unlock(), Contains("unlock mutex \"" + name + "\"") && Contains("does not hold it") &&
                                          Contains("it is not locked"));
    sut.lock();
    CHECK(sut.owned_by_this_thread());
    CHECK_FALSE(sut.owner_died());
    REQUIRE_THROWS_WITH(other.lock(), Contains("already holds it"));  // same thread, would deadlock
    CHECK_FALSE(other.try_lock());
    std::thread t([&] {
        auto h = sp::Mutex::open(name);
        CHECK_FALSE(h.try_lock());
        const auto t0 = std::chrono::steady_clock::now();
        CHECK_FALSE(h.try_lock_for(100ms));
        CHECK(std::chrono::steady_clock::now() - t0 >= 90ms);
        CHECK(code_of([&] { h.unlock(); }) == sp::errc::not_owner);
        CHECK(code_of([&] { h.mark_consistent(); }) == sp::errc::not_owner);
    });
    t.join();
    sut.unlock();
    CHECK(other.try_lock());
    other.unlock();
}

TEST_CASE("a Mutex blocks a second thread until it is unlocked", "[unit][mutex]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("mb"));
    auto sut = sp::Mutex::create(name);
    sut.lock();
    std::atomic<bool> got{false};
    std::thread t([&] {
        auto h = sp::Mutex::open(name);
        std::lock_guard g(h);
        got = true;
    });
    std::this_thread::sleep_for(50ms);
    CHECK_FALSE(got.load());
    sut.unlock();
    t.join();
    CHECK(got.load());
}

TEST_CASE("a RecursiveMutex counts its depth like RLock", "[unit][mutex]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("rm"));
    auto sut = sp::RecursiveMutex::create(name);
    sut.lock();
    sut.lock();
    CHECK(sut.try_lock());
    CHECK(sut.depth() == 3);
    sut.unlock();
    sut.unlock();
    CHECK(sut.owned_by_this_thread());
    std::thread t([&] {
        auto h = sp::RecursiveMutex::open(name);
        CHECK_FALSE(h.try_lock_for(50ms));
        CHECK(h.depth() == 0);
        CHECK(code_of([&] { h.unlock(); }) == sp::errc::not_owner);
    });
    t.join();
    sut.unlock();
    CHECK_FALSE(sut.owned_by_this_thread());
    REQUIRE_THROWS_WITH(sut.unlock(), Contains("does not hold it"));
}

TEST_CASE("a Mutex held by a thread that exited is recovered", "[unit][mutex][death]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("mt"));
    auto sut = sp::Mutex::create(name);
    std::thread t([&] { sp::Mutex::open(name).lock(); });  // exits holding it
    t.join();
    REQUIRE(sut.try_lock_for(5s));
    CHECK(sut.owner_died());
    sut.mark_consistent();
    sut.unlock();
}

// --- semaphore ------------------------------------------------------------------------------

TEST_CASE("a Semaphore counts units and times out when none are free", "[unit][semaphore]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("s"));
    auto sut = sp::Semaphore::create(name, 2);
    auto other = sp::Semaphore::open(name);
    CHECK(sut.value_approx() == 2);
    CHECK(sut.try_acquire());
    other.acquire();
    CHECK_FALSE(sut.try_acquire());
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(sut.try_acquire_for(100ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 90ms);
    std::thread t([&] {
        std::this_thread::sleep_for(30ms);
        other.release(2);
    });
    CHECK(sut.try_acquire_for(5s));
    t.join();
    CHECK(sut.value_approx() == 1);
}

TEST_CASE("Semaphore counts that are negative or overflow are refused with the object named", "[unit][semaphore]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("sbad"));
    REQUIRE_THROWS_WITH(sp::Semaphore::create(name, -1),
                        Contains("create semaphore \"" + name + "\"") && Contains("initial count -1 is negative"));
    CHECK(code_of([&] { sp::Semaphore::create(name, -1); }) == sp::errc::invalid_argument);
    CHECK(code_of([&] { sp::Semaphore::create(name, sp::kSemaphoreMax + 1); }) == sp::errc::overflow);
    sp::SemaphoreOptions bounded;
    bounded.max_count = 2;
    CHECK(code_of([&] { sp::Semaphore::create(name, 3, bounded); }) == sp::errc::overflow);
    CHECK_FALSE(sp::exists(name));
    auto sut = sp::Semaphore::create(name, 1, bounded);
    sut.release();
    REQUIRE_THROWS_WITH(sut.release(), Contains("release semaphore \"" + name + "\"") &&
                                           Contains("would pass max_count 2"));
    CHECK(code_of([&] { sut.release(-3); }) == sp::errc::invalid_argument);
    CHECK(sut.value_approx() == 2);
    sut.release(0);
    auto unbounded = sp::Semaphore::create(guard.add(test::unique_name("sbig")), sp::kSemaphoreMax);
    CHECK(code_of([&] { unbounded.release(); }) == sp::errc::overflow);
}

// --- event ----------------------------------------------------------------------------------

TEST_CASE("an Event is set, cleared, waited for and times out", "[unit][event]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("e"));
    auto sut = sp::Event::create(name);
    CHECK_FALSE(sut.is_set());
    CHECK_FALSE(sut.wait_for(50ms));
    std::vector<std::thread> waiters;
    std::atomic<int> woke{0};
    for (int i = 0; i < 3; ++i) {
        waiters.emplace_back([&] {
            auto h = sp::Event::open(name);
            if (h.wait_for(10s)) ++woke;
        });
    }
    std::this_thread::sleep_for(30ms);
    sut.set();
    for (auto& t : waiters) t.join();
    CHECK(woke == 3);
    CHECK(sut.is_set());
    sut.wait();
    sut.clear();
    CHECK_FALSE(sut.is_set());
    CHECK_FALSE(sut.wait_for(10ms));
}

// --- barrier --------------------------------------------------------------------------------

TEST_CASE("a Barrier with bad party counts is refused", "[unit][barrier]") {
    const auto name = test::unique_name("bbad");
    REQUIRE_THROWS_WITH(sp::Barrier::create(name, 0), Contains("create barrier \"" + name + "\"") &&
                                                          Contains("parties must be 1..") && Contains("got 0"));
    CHECK(code_of([&] { sp::Barrier::create(name, 5'000'000); }) == sp::errc::invalid_argument);
}

TEST_CASE("a Barrier of one party never waits; threads pass it in generations", "[unit][barrier]") {
    test::ShmGuard guard;
    auto one = sp::Barrier::create(guard.add(test::unique_name("b1")), 1);
    CHECK(one.arrive_and_wait() == 0);
    CHECK(one.arrive_and_wait() == 0);
    const std::string name = guard.add(test::unique_name("b3"));
    auto sut = sp::Barrier::create(name, 3);
    std::atomic<int> arrived{0};
    std::atomic<bool> bad{false};
    std::vector<std::thread> ts;
    for (int i = 0; i < 3; ++i) {
        ts.emplace_back([&] {
            auto h = sp::Barrier::open(name);
            for (int r = 0; r < 50; ++r) {
                ++arrived;
                h.arrive_and_wait_for(10s);
                if (arrived.load() < 3 * (r + 1)) bad = true;
            }
        });
    }
    for (auto& t : ts) t.join();
    CHECK_FALSE(bad.load());
    CHECK_FALSE(sut.broken());
}

TEST_CASE("a Barrier wait that times out breaks the barrier for everyone", "[unit][barrier]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("bt"));
    auto sut = sp::Barrier::create(name, 2);
    REQUIRE_THROWS_WITH(sut.arrive_and_wait_for(50ms),
                        Contains("wait at barrier \"" + name + "\"") && Contains("timed out after 50 ms") &&
                            Contains("now broken"));
    CHECK(sut.broken());
    auto other = sp::Barrier::open(name);
    REQUIRE_THROWS_WITH(other.arrive_and_wait(), Contains("timed out waiting") && Contains("stays broken"));
    CHECK(code_of([&] { other.arrive_and_wait(); }) == sp::errc::broken);
}

TEST_CASE("abort() breaks a Barrier and wakes its waiters", "[unit][barrier]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("ba"));
    auto sut = sp::Barrier::create(name, 3);
    std::atomic<int> broken{0};
    std::thread t([&] {
        auto h = sp::Barrier::open(name);
        try {
            h.arrive_and_wait_for(10s);
        } catch (const sp::Error& e) {
            if (e.code() == sp::errc::broken) ++broken;
        }
    });
    REQUIRE(test::wait_until([&] { return sut.n_waiting() == 1; }, 5s));
    sut.abort();
    t.join();
    CHECK(broken == 1);
}

// --- condition ------------------------------------------------------------------------------

TEST_CASE("a Condition wait needs the mutex held, and wait_for times out", "[unit][condition]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("cm"));
    const std::string cname = guard.add(test::unique_name("cv"));
    auto m = sp::Mutex::create(mname);
    auto sut = sp::Condition::create(cname);
    REQUIRE_THROWS_WITH(sut.wait(m), Contains("wait on condition \"" + cname + "\"") &&
                                         Contains("does not hold mutex \"" + mname + "\""));
    std::unique_lock lk(m);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(sut.wait_for(lk, 50ms));
    CHECK(std::chrono::steady_clock::now() - t0 >= 45ms);
    CHECK(lk.owns_lock());
    CHECK(m.owned_by_this_thread());
    CHECK_FALSE(sut.wait_for(lk, 20ms, [] { return false; }));
}

TEST_CASE("notify_one and notify_all wake threads waiting on a Condition", "[unit][condition]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("cm2"));
    const std::string cname = guard.add(test::unique_name("cv2"));
    auto m = sp::Mutex::create(mname);
    auto sut = sp::Condition::create(cname);
    int ready = 0;  // protected by m
    std::atomic<int> done{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 3; ++i) {
        ts.emplace_back([&] {
            auto& hm = m;  // shared mapping: ThreadSanitizer tracks sync by address
            auto& hc = sut;
            std::unique_lock lk(hm);
            if (hc.wait_for(lk, 10s, [&] { return ready > 0; })) {
                --ready;
                ++done;
            }
        });
    }
    {
        std::lock_guard g(m);
        ready = 1;
    }
    sut.notify_one();
    REQUIRE(test::wait_until([&] { return done.load() == 1; }, 5s));
    {
        std::lock_guard g(m);
        ready = 2;
    }
    sut.notify_all();
    for (auto& t : ts) t.join();
    CHECK(done == 3);
}

// --- shared arrays --------------------------------------------------------------------------

TEST_CASE("a SharedValue does atomic arithmetic and compare-exchange", "[unit][shared]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("v"));
    auto sut = sp::SharedValue<std::int64_t>::create(name, 40);
    STATIC_REQUIRE(sp::SharedValue<std::int64_t>::is_lock_free);
    auto other = sp::SharedValue<std::int64_t>::open(name);
    CHECK(other.fetch_add(2) == 40);
    CHECK(sut.load() == 42);
    std::int64_t expected = 41;
    CHECK_FALSE(sut.compare_exchange(expected, 7));
    CHECK(expected == 42);
    CHECK(sut.compare_exchange(expected, 7));
    CHECK(other.exchange(9) == 7);
    CHECK(other.fetch_sub(10) == 9);
    CHECK(sut.load() == -1);
    auto d = sp::SharedValue<double>::create(guard.add(test::unique_name("d")), 1.5);
    CHECK(d.fetch_add(1.0) == 1.5);
    CHECK(d.load() == 2.5);
}

TEST_CASE("a SharedArray of a type wider than 8 bytes goes through its lock", "[unit][shared]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("big"));
    STATIC_REQUIRE_FALSE(sp::SharedArray<Big>::is_lock_free);
    auto sut = sp::SharedArray<Big>::create(name, 3);
    CHECK(sut.size() == 3);
    sut.store(2, Big{{1, 2, 3, 4, 5}});
    CHECK(sut.load(2).v[4] == 5);
    Big expected{{1, 2, 3, 4, 5}};
    CHECK(sut.compare_exchange(2, expected, Big{{9, 9, 9, 9, 9}}));
    CHECK(sut.load(2).v[0] == 9);
    std::lock_guard g(sut);
    sut.data()[0].v[0] = 77;
}

TEST_CASE("a SharedArray opened as another type or out of range is refused", "[unit][shared]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("arr"));
    auto sut = sp::SharedArray<std::uint32_t>::create(name, 4);
    REQUIRE_THROWS_WITH(sp::SharedArray<std::uint64_t>::open(name),
                        Contains("open shared array \"" + name + "\"") && Contains("created for elements of 4 bytes"));
    CHECK(code_of([&] { sp::SharedArray<float>::open(name); }) == sp::errc::type_mismatch);
    REQUIRE_THROWS_WITH(sut.load(4), Contains("index 4 is out of range (size 4)"));
    CHECK(code_of([&] { sp::SharedArray<int>::create(guard.add(test::unique_name("z")), 0); }) ==
          sp::errc::invalid_argument);
    CHECK(code_of([&] { sut.unlock(); }) == sp::errc::not_owner);
}

// --- pipe -----------------------------------------------------------------------------------

TEST_CASE("a duplex Pipe carries typed values both ways", "[unit][pipe]") {
    auto [a, b] = sp::Pipe::create();
    a.send(42);
    a.send(std::string("hello"));
    a.send(std::vector<double>{1.5, 2.5});
    b.send(std::make_pair(std::string("k"), std::int64_t{7}));
    CHECK(b.poll());
    CHECK(b.recv<int>() == 42);
    CHECK(b.recv<std::string>() == "hello");
    CHECK(b.recv<std::vector<double>>() == std::vector<double>{1.5, 2.5});
    CHECK_FALSE(b.poll());
    CHECK_FALSE(b.poll(10ms));
    CHECK(a.recv<std::pair<std::string, std::int64_t>>().second == 7);
    std::vector<std::byte> big(300000, std::byte{0x5a});
    std::thread sender([&] { a.send_bytes(big); });  // larger than the socket buffer
    CHECK(b.recv_bytes() == big);
    sender.join();
}

TEST_CASE("recv after the other end closed throws errc::closed, after what was sent", "[unit][pipe]") {
    auto [a, b] = sp::Pipe::create();
    a.send(1);
    a.close();
    CHECK(a.closed());
    CHECK(b.recv<int>() == 1);
    CHECK(b.poll());
    REQUIRE_THROWS_WITH(b.recv<int>(), Contains("the other end was closed or its process died"));
    CHECK(code_of([&] { (void)b.recv<int>(); }) == sp::errc::closed);
    CHECK(code_of([&] { b.send(2); }) == sp::errc::closed);
    CHECK(code_of([&] { a.send(2); }) == sp::errc::invalid_state);
}

TEST_CASE("a one-way Pipe receives on the first end and sends on the second", "[unit][pipe]") {
    sp::PipeOptions opt;
    opt.duplex = false;
    auto [r, w] = sp::Pipe::create(opt);
    w.send(std::string("one way"));
    CHECK(r.recv<std::string>() == "one way");
    REQUIRE_THROWS_WITH(r.send(1), Contains("only receives"));
    REQUIRE_THROWS_WITH((void)w.recv<int>(), Contains("only sends"));
}

TEST_CASE("oversize Pipe messages are refused clearly and the stream stays in step", "[unit][pipe]") {
    sp::PipeOptions small;
    small.max_message = 16;
    auto [a, b] = sp::Pipe::create(small);
    REQUIRE_THROWS_WITH(a.send(std::string(17, 'x')), Contains("a message of 17 bytes is larger than max_message (16 bytes)"));
    CHECK(code_of([&] { a.send(std::string(17, 'x')); }) == sp::errc::message_too_large);
    auto [c, d] = sp::Pipe::create();  // a default sender, a small receiver
    auto receiver = sp::Pipe::from_fd(d.release(), small);
    c.send(std::string(1000, 'y'));
    c.send(std::string("after"));
    REQUIRE_THROWS_WITH(receiver.recv<std::string>(), Contains("received a message of 1000 bytes") &&
                                                          Contains("it was discarded"));
    CHECK(receiver.recv<std::string>() == "after");
    CHECK(code_of([&] { sp::Pipe::create(sp::PipeOptions{true, 0}); }) == sp::errc::invalid_argument);
}

TEST_CASE("a Pipe decodes the wrong type as a clear error and goes on", "[unit][pipe]") {
    auto [a, b] = sp::Pipe::create();
    a.send(std::int32_t{5});
    a.send(std::int32_t{6});
    CHECK(code_of([&] { (void)b.recv<std::int64_t>(); }) == sp::errc::type_mismatch);
    CHECK(b.recv<std::int32_t>() == 6);
}

TEST_CASE("Pipe::from_fd refuses descriptors that are not pipe ends", "[unit][pipe]") {
    REQUIRE_THROWS_WITH(sp::Pipe::from_fd(-1), Contains("not an open descriptor"));
    REQUIRE_THROWS_WITH(sp::Pipe::from_fd(::dup(0) >= 0 ? 0 : 0), Contains("descriptor 0"));
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    CHECK(code_of([&] { sp::Pipe::from_fd(fds[0]); }) == sp::errc::invalid_argument);
    ::close(fds[0]);
    ::close(fds[1]);
}
