// Helper program for the synchronisation tests: `sync_peer <role> <args...>`.
// Exit codes: 0 ok, 2 usage, 3 timed out waiting, 4 a check failed, 5 got the expected
// Error(broken), 6 wrong data, 7 unexpected exception.
#include <shmpipe/barrier.hpp>
#include <shmpipe/condition.hpp>
#include <shmpipe/event.hpp>
#include <shmpipe/mutex.hpp>
#include <shmpipe/pipe.hpp>
#include <shmpipe/semaphore.hpp>
#include <shmpipe/shared_array.hpp>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>

using namespace std::chrono_literals;
namespace sp = shmpipe;

namespace {

std::uint64_t num(const char* s) { return std::strtoull(s, nullptr, 10); }

[[noreturn]] void sleep_forever() {
    for (;;) ::pause();
}

int run(int argc, char** argv) {
    if (argc < 2) return 2;
    const std::string role = argv[1];
    auto need = [&](int n) {
        if (argc < n + 2) {
            std::fprintf(stderr, "sync_peer %s: needs %d arguments\n", role.c_str(), n);
            std::exit(2);
        }
    };
    if (role == "mutex-inc") {  // <mutex> <counter> <count> <start-event>
        need(4);
        auto m = sp::Mutex::open(argv[2]);
        auto counter = sp::SharedValue<std::uint64_t>::open(argv[3]);
        const std::uint64_t n = num(argv[4]);
        auto start = sp::Event::open(argv[5]);
        if (!start.wait_for(30s)) return 3;
        std::uint64_t* p = counter.data();
        for (std::uint64_t i = 0; i < n; ++i) {
            m.lock();
            // A plain read-modify-write: only mutual exclusion keeps it exact.
            const std::uint64_t v = *static_cast<volatile std::uint64_t*>(p);
            *static_cast<volatile std::uint64_t*>(p) = v + 1;
            m.unlock();
        }
        return 0;
    }
    if (role == "mutex-hold") {  // <mutex> <ready-event>: lock, say so, wait to be killed
        need(2);
        auto m = sp::Mutex::open(argv[2]);
        m.lock();
        sp::Event::open(argv[3]).set();
        sleep_forever();
    }
    if (role == "rmutex-hold") {  // <rmutex> <ready-event>: lock twice, wait to be killed
        need(2);
        auto m = sp::RecursiveMutex::open(argv[2]);
        m.lock();
        m.lock();
        sp::Event::open(argv[3]).set();
        sleep_forever();
    }
    // <sem> <stats-array> <iterations>: stats[0] inside, stats[1] max seen. sem-guard-inside
    // holds its unit with std::lock_guard instead of acquire/release.
    if (role == "sem-inside" || role == "sem-guard-inside") {
        need(3);
        auto s = sp::Semaphore::open(argv[2]);
        auto stats = sp::SharedArray<std::int64_t>::open(argv[3]);
        const std::uint64_t n = num(argv[4]);
        auto inside_once = [&] {
            const std::int64_t inside = stats.fetch_add(0, 1) + 1;
            std::int64_t seen = stats.load(1);
            while (inside > seen && !stats.compare_exchange(1, seen, inside)) {
            }
            std::this_thread::sleep_for(200us);
            stats.fetch_sub(0, 1);
        };
        for (std::uint64_t i = 0; i < n; ++i) {
            if (role == "sem-guard-inside") {
                std::lock_guard hold(s);
                inside_once();
            } else {
                s.acquire();
                inside_once();
                s.release();
            }
        }
        return 0;
    }
    if (role == "sem-hold") {  // <sem> <units> <ready-event>: take units, say so, wait to be killed
        need(3);
        auto s = sp::Semaphore::open(argv[2]);
        const std::uint64_t units = num(argv[3]);
        for (std::uint64_t i = 0; i < units; ++i) s.acquire();
        sp::Event::open(argv[4]).set();
        sleep_forever();
    }
    if (role == "sem-loop") {  // <sem> <ready-event> <hold-us>: acquire, work, release; until killed
        need(3);
        auto s = sp::Semaphore::open(argv[2]);
        const auto hold = std::chrono::microseconds(num(argv[4]));
        s.acquire();
        s.release();
        sp::Event::open(argv[3]).set();
        for (;;) {
            s.acquire();
            if (hold.count() > 0) {
                const auto until = std::chrono::steady_clock::now() + hold;
                while (std::chrono::steady_clock::now() < until) {  // busy: work, not a sleep
                }
            }
            s.release();
        }
    }
    if (role == "event-wait") {  // <event> <timeout-ms> <arrived-counter>
        need(3);
        auto e = sp::Event::open(argv[2]);
        auto arrived = sp::SharedValue<std::uint32_t>::open(argv[4]);
        arrived.fetch_add(1);
        return e.wait_for(std::chrono::milliseconds(num(argv[3]))) ? 0 : 3;
    }
    if (role == "barrier") {  // <barrier> <rounds> <arrivals-array>: arrivals[r] counts round r
        need(3);
        auto b = sp::Barrier::open(argv[2]);
        const std::uint64_t rounds = num(argv[3]);
        auto arrivals = sp::SharedArray<std::uint32_t>::open(argv[4]);
        for (std::uint64_t r = 0; r < rounds; ++r) {
            arrivals.fetch_add(r, 1);
            b.arrive_and_wait_for(20s);
            // Released together: every party of this round arrived before anyone left.
            if (arrivals.load(r) != b.parties()) return 4;
        }
        return 0;
    }
    if (role == "barrier-expect-broken") {  // <barrier>
        need(1);
        auto b = sp::Barrier::open(argv[2]);
        try {
            b.arrive_and_wait_for(20s);
        } catch (const sp::Error& e) {
            if (e.code() == sp::errc::broken) return 5;
            std::fprintf(stderr, "sync_peer: %s\n", e.what());
            return 7;
        }
        return 0;
    }
    if (role == "barrier-idle") {  // <barrier> <ready-event>: a party that never arrives
        need(2);
        auto b = sp::Barrier::open(argv[2]);
        sp::Event::open(argv[3]).set();
        sleep_forever();
    }
    if (role == "pipe-upper") {  // <fd>: upper-case every string until the other end closes
        need(1);
        auto p = sp::Pipe::from_fd(static_cast<int>(num(argv[2])));
        for (;;) {
            std::string s;
            try {
                s = p.recv<std::string>();
            } catch (const sp::Error& e) {
                return e.code() == sp::errc::closed ? 0 : 7;
            }
            for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            p.send(s);
        }
    }
    if (role == "cond-consumer") {  // <mutex> <cond> <ring> <count>: ring[0]=head, ring[1]=tail
        need(4);
        auto m = sp::Mutex::open(argv[2]);
        auto cv = sp::Condition::open(argv[3]);
        auto ring = sp::SharedArray<std::int64_t>::open(argv[4]);
        const auto count = static_cast<std::int64_t>(num(argv[5]));
        const auto cap = static_cast<std::int64_t>(ring.size()) - 2;
        std::int64_t* d = ring.data();
        for (std::int64_t expect = 1; expect <= count; ++expect) {
            std::unique_lock lk(m);
            if (!cv.wait_for(lk, 20s, [&] { return d[1] > d[0]; })) return 3;
            const std::int64_t v = d[2 + d[0] % cap];
            ++d[0];
            cv.notify_all();
            if (v != expect) return 6;
        }
        return 0;
    }
    if (role == "barrier-action") {  // <barrier> <rounds> <actions-array>: actions[r] counts round r's actions
        need(3);
        const std::uint64_t rounds = num(argv[3]);
        auto actions = sp::SharedArray<std::uint32_t>::open(argv[4]);
        std::uint64_t round = 0;
        auto b = sp::Barrier::open(argv[2], [&] { actions.fetch_add(round, 1); });
        for (; round < rounds; ++round) {
            b.wait_for(20s);
            // The action ran, once, before anyone was released.
            if (actions.load(round) != 1) return 4;
        }
        return 0;
    }
    if (role == "cond-take") {  // <mutex> <cond> <counters>: wait for counters[0] > 0, take one into counters[1]
        need(3);
        auto m = sp::Mutex::open(argv[2]);
        auto cv = sp::Condition::open(argv[3]);
        auto c = sp::SharedArray<std::int64_t>::open(argv[4]);
        std::int64_t* d = c.data();
        std::unique_lock lk(m);
        if (!cv.wait_for(lk, 30s, [&] { return d[0] > 0; })) return 3;
        --d[0];
        ++d[1];
        return 0;
    }
    std::fprintf(stderr, "sync_peer: unknown role %s\n", role.c_str());
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sync_peer: %s\n", e.what());
        return 7;
    }
}
