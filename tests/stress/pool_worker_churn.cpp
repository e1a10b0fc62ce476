// Workers killed at random while tasks flow: every task resolves (its result, or
// worker_died), nothing hangs, the pool keeps its size, nothing is left behind.
#include <shmpipe/pool.hpp>

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <random>
#include <thread>

using namespace std::chrono_literals;

namespace {

int work(int x) {
    std::this_thread::sleep_for(std::chrono::microseconds(200 + (x % 7) * 100));
    return x * 3;
}

// The last resort of a watchdog: the wait it cut short must end now; if it does not
// within 30 s, say what hung and abort (workers die with us: parent-death signal).
template <class Fut>
void settle_or_abort(Fut& f, const std::string& what) {
    if (f.wait_for(30s) == std::future_status::ready) return;
    std::fprintf(stderr, "%s: still not done 30 s after the watchdog fired; aborting\n", what.c_str());
    std::abort();
}

int scale() {
    const char* s = std::getenv("SHMPIPE_STRESS_SCALE");
    return s != nullptr ? std::max(1, std::atoi(s)) : 1;
}

}  // namespace

TEST_CASE("Tasks resolve while workers are SIGKILLed at random", "[stress]") {
    shmpipe::Pool sut(3);
    const int count = 1500 * scale();
    std::vector<shmpipe::Future<int>> futures;
    futures.reserve(static_cast<std::size_t>(count));

    std::atomic<bool> done{false};
    std::atomic<int> kills{0};
    std::mutex killed_m;
    std::set<int> killed;  // only these may be named by a worker_died failure
    struct StopKiller {
        std::atomic<bool>& done;
        std::thread t;
        ~StopKiller() {
            done = true;
            if (t.joinable()) t.join();
        }
    } killer{done, {}};
    killer.t = std::thread([&] {
        std::mt19937 rng(12345);
        while (!done) {
            std::this_thread::sleep_for(15ms);
            auto pids = sut.worker_pids();
            if (pids.empty()) continue;
            const int victim = pids[rng() % pids.size()];
            {
                std::lock_guard lock(killed_m);
                killed.insert(victim);
            }
            ::kill(victim, SIGKILL);
            ++kills;
        }
    });
    for (int i = 0; i < count; ++i) futures.push_back(sut.submit(work, i));

    int ok = 0, died = 0, wrong = 0;
    for (int i = 0; i < count; ++i) {
        std::optional<shmpipe::errc> failure;
        std::string message;
        int value = 0;
        try {
            value = futures[static_cast<std::size_t>(i)].result_for(30s);
        } catch (const shmpipe::Error& e) {
            failure = static_cast<shmpipe::errc>(e.code().value());
            message = e.what();
        }
        if (failure == shmpipe::errc::timeout) FAIL("task " << i << " unresolved after 30 s (hang), " << kills << " kills");
        if (failure) {
            INFO(message);
            REQUIRE(failure == shmpipe::errc::worker_died);
            // An innocent task is never failed: the message names a worker we killed.
            bool names_killed = false;
            {
                std::lock_guard lock(killed_m);
                for (int pid : killed) names_killed = names_killed || message.find("(pid " + std::to_string(pid) + ")") != std::string::npos;
            }
            REQUIRE(names_killed);
            ++died;
        } else {
            wrong += value != i * 3;
            ++ok;
        }
    }
    done = true;
    killer.t.join();
    REQUIRE(wrong == 0);
    INFO(ok << " ok, " << died << " worker_died, " << kills << " kills");
    REQUIRE(ok + died == count);
    REQUIRE(died <= kills.load());
    REQUIRE(ok > 0);
    REQUIRE(sut.apply_async(work, 5).get_for(30s) == 15);
    REQUIRE(shmpipe::test::wait_until([&] { return sut.worker_pids().size() == 3; }, 10s));
    sut.close();
    auto joined = std::async(std::launch::async, [&] { sut.join(); });
    if (joined.wait_for(60s) != std::future_status::ready) {
        sut.terminate();
        settle_or_abort(joined, "join() after terminate()");
        FAIL("join() after close() not done within 60 s (the pool was terminated)");
    }
    joined.get();
    REQUIRE(shmpipe::test::shm_objects_with_prefix(sut.tasks_queue_name()).empty());
}
