// Stress: every synchronisation object hammered by threads in one process (where
// ThreadSanitizer checks the orderings) and by forked processes over shared memory.
// SHMPIPE_STRESS_SCALE multiplies the iteration counts (default 1 keeps each case < 10 s
// under taskset -c 0).
//
// The thread variants share one handle (one mapping) between threads: ThreadSanitizer
// tracks synchronisation by virtual address, so two mappings of the same segment would
// hide the happens-before edges our atomics create. Handles are safe to share between
// threads; the process variants open their own handles.
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
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
namespace sp = shmpipe;
namespace test = shmpipe::test;

namespace {

std::uint64_t scale() {
    const char* s = std::getenv("SHMPIPE_STRESS_SCALE");
    const auto v = s != nullptr ? std::strtoull(s, nullptr, 10) : 1;
    return v == 0 ? 1 : v;
}

void run_threads(int n, const std::function<void(int)>& body) {
    std::vector<std::thread> ts;
    for (int i = 0; i < n; ++i) ts.emplace_back(body, i);
    for (auto& t : ts) t.join();
}

// Forks n children running body(i) (exit code = its return), reaps them all within the deadline.
std::vector<int> run_processes(int n, const std::function<int(int)>& body, std::chrono::seconds deadline) {
    std::vector<pid_t> kids;
    for (int i = 0; i < n; ++i) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            int rc = 7;
            try {
                rc = body(i);
            } catch (...) {
            }
            ::_exit(rc);
        }
        kids.push_back(pid);
    }
    std::vector<int> codes;
    for (const pid_t pid : kids) {
        int status = 0;
        const bool done = test::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, deadline);
        if (!done) {
            for (const pid_t k : kids) ::kill(k, SIGKILL);
            for (const pid_t k : kids) ::waitpid(k, nullptr, 0);
            FAIL("timed out waiting for forked stress children");
        }
        codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    return codes;
}

struct Wide {
    std::array<std::uint64_t, 3> v;
};

}  // namespace

TEST_CASE("threads: a Mutex keeps a plain counter exact", "[stress][threads][mutex]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("sm"));
    auto sut = sp::Mutex::create(name);
    const std::uint64_t n = 200'000 * scale();
    std::uint64_t counter = 0;
    run_threads(4, [&](int) {
        auto& h = sut;  // one mapping shared by the threads (see the note at the top)
        for (std::uint64_t i = 0; i < n; ++i) {
            std::lock_guard g(h);
            ++counter;
        }
    });
    REQUIRE(counter == 4 * n);
}

TEST_CASE("threads: a RecursiveMutex and try_lock_for keep a counter exact", "[stress][threads][mutex]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("srm"));
    auto sut = sp::RecursiveMutex::create(name);
    const std::uint64_t n = 20'000 * scale();
    std::uint64_t counter = 0;
    run_threads(3, [&](int) {
        auto& h = sut;
        for (std::uint64_t i = 0; i < n; ++i) {
            while (!h.try_lock_for(10ms)) {
            }
            h.lock();
            ++counter;
            h.unlock();
            h.unlock();
        }
    });
    REQUIRE(counter == 3 * n);
}

TEST_CASE("threads: a Semaphore of 2 never admits a third", "[stress][threads][semaphore]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("ss"));
    auto sut = sp::Semaphore::create(name, 2);
    const std::uint64_t n = 20'000 * scale();
    std::atomic<int> inside{0};
    std::atomic<int> most{0};
    run_threads(5, [&](int) {
        auto& h = sut;
        for (std::uint64_t i = 0; i < n; ++i) {
            h.acquire();
            const int now = ++inside;
            int seen = most.load();
            while (now > seen && !most.compare_exchange_weak(seen, now)) {
            }
            --inside;
            h.release();
        }
    });
    REQUIRE(most.load() <= 2);
    REQUIRE(sut.value_approx() == 2);
}

TEST_CASE("threads: a Barrier keeps its parties in step for many generations", "[stress][threads][barrier]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("sb"));
    auto sut = sp::Barrier::create(name, 4);
    const int rounds = static_cast<int>(5'000 * scale());
    std::atomic<int> arrived{0};
    std::atomic<bool> bad{false};
    std::array<std::atomic<int>, 4> last_index{};
    run_threads(4, [&](int) {
        auto& h = sut;
        for (int r = 0; r < rounds; ++r) {
            ++arrived;
            const auto idx = h.arrive_and_wait_for(30s);
            if (idx >= 4) bad = true;
            if (arrived.load() < 4 * (r + 1)) bad = true;
            last_index[idx] = r;
        }
    });
    REQUIRE_FALSE(bad.load());
    REQUIRE_FALSE(sut.broken());
}

TEST_CASE("threads: a Condition moves items through a bounded buffer without loss", "[stress][threads][condition]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("scm"));
    const std::string cname = guard.add(test::unique_name("scv"));
    auto m = sp::Mutex::create(mname);
    auto cv = sp::Condition::create(cname);
    const std::int64_t per_producer = static_cast<std::int64_t>(10'000 * scale());
    std::vector<std::int64_t> buf;  // protected by m
    std::int64_t produced_done = 0;
    std::atomic<std::int64_t> sum{0};
    run_threads(4, [&](int role) {
        auto& hm = m;
        auto& hc = cv;
        if (role < 2) {  // producers
            for (std::int64_t v = 1; v <= per_producer; ++v) {
                std::unique_lock lk(hm);
                hc.wait(lk, [&] { return buf.size() < 8; });
                buf.push_back(v);
                hc.notify_all();
            }
            std::unique_lock lk(hm);
            ++produced_done;
            hc.notify_all();
        } else {  // consumers
            for (;;) {
                std::unique_lock lk(hm);
                hc.wait(lk, [&] { return !buf.empty() || produced_done == 2; });
                if (buf.empty()) return;
                sum += buf.back();
                buf.pop_back();
                hc.notify_all();
            }
        }
    });
    REQUIRE(sum.load() == 2 * per_producer * (per_producer + 1) / 2);
}

TEST_CASE("threads: Event set/clear rounds wake every waiter", "[stress][threads][event]") {
    test::ShmGuard guard;
    const std::string go_name = guard.add(test::unique_name("sego"));
    const std::string bar_name = guard.add(test::unique_name("sebar"));
    auto go = sp::Event::create(go_name);
    auto bar = sp::Barrier::create(bar_name, 4);
    const int rounds = static_cast<int>(300 * scale());
    std::atomic<int> woke{0};
    run_threads(4, [&](int i) {
        auto& e = go;
        auto& b = bar;
        for (int r = 0; r < rounds; ++r) {
            if (i == 0) e.set();
            if (e.wait_for(10s)) ++woke;
            b.arrive_and_wait_for(30s);
            if (i == 0) e.clear();
            b.arrive_and_wait_for(30s);
        }
    });
    REQUIRE(woke.load() == 4 * rounds);
}

TEST_CASE("threads: SharedArray atomics and its lock keep counts exact", "[stress][threads][shared]") {
    test::ShmGuard guard;
    const std::string aname = guard.add(test::unique_name("sa"));
    const std::string wname = guard.add(test::unique_name("sw"));
    auto arr = sp::SharedArray<std::uint64_t>::create(aname, 2);
    auto wide = sp::SharedValue<Wide>::create(wname);
    const std::uint64_t n = 20'000 * scale();
    run_threads(4, [&](int) {
        auto& a = arr;
        auto& w = wide;
        for (std::uint64_t i = 0; i < n; ++i) {
            a.fetch_add(0, 1);
            std::uint64_t cur = a.load(1);
            while (!a.compare_exchange(1, cur, cur + 2)) {
            }
            Wide old = w.load();
            Wide next = old;
            for (auto& x : next.v) ++x;
            while (!w.compare_exchange(old, next)) {
                next = old;
                for (auto& x : next.v) ++x;
            }
        }
    });
    REQUIRE(arr.load(0) == 4 * n);
    REQUIRE(arr.load(1) == 8 * n);
    const Wide end = wide.load();
    REQUIRE((end.v[0] == 4 * n && end.v[1] == 4 * n && end.v[2] == 4 * n));
}

TEST_CASE("threads: a Pipe streams many messages of mixed sizes in order", "[stress][threads][pipe]") {
    auto [a, b] = sp::Pipe::create();
    const std::uint32_t n = static_cast<std::uint32_t>(20'000 * scale());
    std::thread sender([&, &tx = a] {
        for (std::uint32_t i = 0; i < n; ++i) {
            std::vector<std::uint32_t> msg(i % 97 == 0 ? 20'000 : i % 13, i);
            msg.push_back(i);
            tx.send(msg);
        }
        tx.close();
    });
    std::uint32_t got = 0;
    bool ok = true;
    try {
        for (;;) {
            const auto msg = b.recv<std::vector<std::uint32_t>>();
            if (msg.empty() || msg.back() != got) ok = false;
            ++got;
        }
    } catch (const sp::Error& e) {
        CHECK(e.code() == sp::errc::closed);
    }
    sender.join();
    REQUIRE(ok);
    REQUIRE(got == n);
}

TEST_CASE("processes: Mutex, Semaphore and Barrier stay exact across forked children", "[stress][processes]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("pm"));
    const std::string sname = guard.add(test::unique_name("ps"));
    const std::string bname = guard.add(test::unique_name("pb"));
    const std::string aname = guard.add(test::unique_name("pa"));
    auto m = sp::Mutex::create(mname);
    auto sem = sp::Semaphore::create(sname, 2);
    auto bar = sp::Barrier::create(bname, 4);
    auto stats = sp::SharedArray<std::int64_t>::create(aname, 4);  // counter, inside, most, rounds
    const std::int64_t n = static_cast<std::int64_t>(20'000 * scale());
    const int rounds = static_cast<int>(500 * scale());
    const auto codes = run_processes(
        4,
        [&](int) {
            auto hm = sp::Mutex::open(mname);
            auto hs = sp::Semaphore::open(sname);
            auto hb = sp::Barrier::open(bname);
            auto st = sp::SharedArray<std::int64_t>::open(aname);
            std::int64_t* d = st.data();
            for (std::int64_t i = 0; i < n; ++i) {
                std::lock_guard g(hm);
                d[0] = d[0] + 1;
            }
            for (std::int64_t i = 0; i < n / 10; ++i) {
                hs.acquire();
                const std::int64_t now = st.fetch_add(1, 1) + 1;
                std::int64_t seen = st.load(2);
                while (now > seen && !st.compare_exchange(2, seen, now)) {
                }
                st.fetch_sub(1, 1);
                hs.release();
            }
            for (int r = 0; r < rounds; ++r) {
                st.fetch_add(3, 1);
                hb.arrive_and_wait_for(30s);
                if (st.load(3) < 4 * (r + 1)) return 4;
            }
            return 0;
        },
        60s);
    for (const int c : codes) CHECK(c == 0);
    CHECK(stats.load(0) == 4 * n);
    CHECK(stats.load(2) <= 2);
    CHECK(stats.load(3) == 4 * rounds);
}

TEST_CASE("processes: repeated owner deaths never wedge a Mutex", "[stress][processes][death]") {
    test::ShmGuard guard;
    const std::string mname = guard.add(test::unique_name("pmd"));
    auto sut = sp::Mutex::create(mname);
    const int deaths = static_cast<int>(5 * scale());
    for (int k = 0; k < deaths; ++k) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            auto h = sp::Mutex::open(mname);
            h.lock();
            ::raise(SIGKILL);  // die holding it
            ::_exit(0);
        }
        int status = 0;
        REQUIRE(test::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 20s));
        REQUIRE(sut.try_lock_for(10s));
        CHECK(sut.owner_died());
        sut.mark_consistent();
        sut.unlock();
    }
    CHECK(sut.recoveries() == static_cast<std::uint64_t>(deaths));
}

TEST_CASE("threads: a Barrier action runs exactly once per generation before the release", "[stress][barrier]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("bact"));
    const int parties = 4;
    const std::uint64_t rounds = 2'000 * scale();
    std::uint64_t actions = 0;  // written only by the action, read after the release (B2, BP1)
    auto sut = sp::Barrier::create(name, parties, [&actions] { ++actions; });
    std::atomic<int> wrong{0};
    run_threads(parties, [&](int) {
        for (std::uint64_t r = 0; r < rounds; ++r) {
            sut.wait_for(20s);
            // Every party sees this generation's action (two generations per round) and no later one.
            if (actions != 2 * r + 1) wrong.fetch_add(1);
            sut.wait_for(20s);  // a second barrier per round keeps the read above in its round
        }
    });
    CHECK(wrong == 0);
    CHECK(actions == 2 * rounds);
}

TEST_CASE("threads: Barrier::reset breaks exactly the parties waiting, never a release", "[stress][barrier]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("breset"));
    const int parties = 4;
    const std::uint64_t rounds = 200 * scale();
    auto sut = sp::Barrier::create(name, parties);
    for (std::uint64_t r = 0; r < rounds; ++r) {
        std::atomic<int> broken{0};
        std::atomic<int> passed{0};
        std::atomic<int> other{0};
        std::vector<std::thread> waiting;
        for (int i = 0; i < parties - 1; ++i) {
            waiting.emplace_back([&] {
                try {
                    sut.wait_for(20s);
                    passed.fetch_add(1);
                } catch (const sp::Error& e) {
                    (e.code() == sp::errc::broken ? broken : other).fetch_add(1);
                }
            });
        }
        const bool all_waiting = test::wait_until([&] { return sut.n_waiting() == parties - 1; }, 20s);
        sut.reset();
        for (auto& t : waiting) t.join();
        REQUIRE(all_waiting);
        REQUIRE(broken == parties - 1);
        REQUIRE(passed == 0);
        REQUIRE(other == 0);
        // Usable at once: a full generation passes.
        run_threads(parties, [&](int) {
            try {
                sut.wait_for(20s);
                passed.fetch_add(1);
            } catch (const sp::Error&) {
                other.fetch_add(1);
            }
        });
        REQUIRE(passed == parties);
        REQUIRE(other == 0);
    }
}
