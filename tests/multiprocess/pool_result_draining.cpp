// The pool's result path: the thread that waits drains the results queue itself and
// completes the other callers' tasks (leader/follower); the collector drains when no one
// waits. Several waiters, timeouts, callbacks (where they run, and one that waits for
// another result), as_completed, and a result stream that must not end between workers.
#include <shmpipe/pool.hpp>
#include <shmpipe/thread_pool.hpp>

#include "pool_testing.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>
#include <numeric>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using shmpipe::test::within;

namespace {

int square(int x) { return x * x; }
int twice(int x) { return 2 * x; }

int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}

}  // namespace

TEST_CASE("Threads waiting on one pool at once each get their own results", "[multiprocess]") {
    shmpipe::Pool sut(2);
    constexpr int kThreads = 4;
    constexpr int kCalls = 300;
    std::atomic<int> wrong{0};
    within(sut, "4 threads of 300 apply() calls and a map each", [&] {
        std::vector<std::thread> threads;
        for (int t = 0; t < kThreads; ++t) {
            threads.emplace_back([&, t] {
                for (int i = 0; i < kCalls; ++i) {
                    const int x = t * 1000 + i;
                    if (sut.apply(square, x) != x * x) ++wrong;
                }
                std::vector<int> xs(1000);
                std::iota(xs.begin(), xs.end(), t);
                const auto ys = sut.map(twice, xs, 7);
                for (std::size_t i = 0; i < xs.size(); ++i) {
                    if (ys[i] != 2 * xs[i]) ++wrong;
                }
            });
        }
        for (auto& th : threads) th.join();
    });
    REQUIRE(wrong == 0);
}

TEST_CASE("A waiter whose wait times out hands the draining to the other waiters", "[multiprocess]") {
    shmpipe::Pool sut(2);
    auto slow = sut.apply_async(sleep_ms, 800);
    std::atomic<int> right{0};
    within(sut, "a timed-out get_for and quick tasks waited for meanwhile", [&] {
        std::thread quick([&] {  // Catch2 assertions stay on the test's thread
            for (int i = 0; i < 50; ++i) right += sut.apply_async(square, i).get_for(20s) == i * i ? 1 : 0;
        });
        REQUIRE_THROWS_MATCHES(slow.get_for(50ms), shmpipe::Error,
                               Catch::Predicate<shmpipe::Error>(
                                   [](const shmpipe::Error& e) { return e.code() == shmpipe::errc::timeout; },
                                   "errc::timeout"));
        quick.join();
        REQUIRE(slow.get_for(20s) == 800);  // the task went on
    });
    REQUIRE(right == 50);
}

TEST_CASE("Callbacks run once each, with no thread waiting and with threads waiting", "[multiprocess]") {
    shmpipe::Pool sut(2);
    constexpr int kTasks = 200;
    std::mutex m;
    std::multiset<int> seen;
    std::set<std::thread::id> threads;
    std::vector<shmpipe::AsyncResult<int>> waited;
    for (int i = 0; i < kTasks; ++i) {
        auto r = sut.apply_async(square, i, shmpipe::callback([&, i](int v) {
                                     std::lock_guard lock(m);
                                     if (v == i * i) seen.insert(i);
                                     threads.insert(std::this_thread::get_id());
                                 }));
        if (i % 2 == 0) waited.push_back(r);  // the odd ones: nobody ever waits for them
    }
    within(sut, "the even tasks' results", [&] {
        for (auto& r : waited) r.get();
    });
    if (!shmpipe::test::wait_until([&] {
            std::lock_guard lock(m);
            return seen.size() == kTasks;
        }, 20s)) {
        std::lock_guard lock(m);
        FAIL("only " << seen.size() << " of " << kTasks << " callbacks ran within 20 s");
    }
    std::lock_guard lock(m);
    for (int i = 0; i < kTasks; ++i) REQUIRE(seen.count(i) == 1);
    // The registering thread (a task already finished), the waiting thread, the collector.
    REQUIRE(threads.size() <= 3);
}

TEST_CASE("A done-callback may wait for another task of the same pool", "[multiprocess]") {
    shmpipe::Pool sut(2);
    std::atomic<int> inner{0};
    auto f = sut.submit(square, 3);
    f.add_done_callback([&](const shmpipe::Future<int>& done) {
        // On whichever thread drains the results: it drains on for this one.
        inner = sut.submit(twice, done.result()).result_for(20s);
    });
    within(sut, "a callback that waits for a follow-up task", [&] {
        REQUIRE(f.result_for(20s) == 9);
        if (!shmpipe::test::wait_until([&] { return inner.load() != 0; }, 20s)) {
            FAIL("the callback's follow-up task did not finish within 20 s");
        }
    });
    REQUIRE(inner == 18);
}

TEST_CASE("as_completed and wait over one pool's futures, from two threads at once", "[multiprocess]") {
    shmpipe::Pool sut(2);
    std::atomic<int> right{0};
    within(sut, "two threads iterating as_completed / wait", [&] {
        auto run = [&](int base, bool use_wait) {  // no Catch2 assertion: one runs on another thread
            std::vector<shmpipe::Future<int>> fs;
            for (int i = 0; i < 100; ++i) fs.push_back(sut.submit(square, base + i));
            long sum = 0;
            if (use_wait) {
                auto r = shmpipe::wait(fs, shmpipe::ReturnWhen::all_completed, 20s);
                if (!r.not_done.empty()) return;
                for (auto& f : r.done) sum += f.result();
            } else {
                for (auto& f : shmpipe::as_completed(fs, 20s)) sum += f.result();
            }
            long want = 0;
            for (int i = 0; i < 100; ++i) want += static_cast<long>(base + i) * (base + i);
            if (sum == want) ++right;
        };
        std::thread other([&] { run(1000, true); });
        run(0, false);
        other.join();
    });
    REQUIRE(right == 2);
}

TEST_CASE("as_completed mixing thread and process futures still finishes", "[multiprocess]") {
    shmpipe::Pool sut(2);
    shmpipe::ThreadPool threads(2);
    std::vector<shmpipe::Future<int>> fs;
    fs.push_back(sut.submit(sleep_ms, 200));
    fs.push_back(threads.submit([] { return 7; }));
    fs.push_back(sut.submit(square, 5));
    std::multiset<int> got;
    within(sut, "as_completed over process and thread futures", [&] {
        for (auto& f : shmpipe::as_completed(fs, 20s)) got.insert(f.result());
    });
    REQUIRE(got == std::multiset<int>{7, 25, 200});
}

TEST_CASE("The result stream stays open while a recycled worker is replaced", "[multiprocess]") {
    // One worker that exits after every task: between its exit and its replacement no
    // worker has the results queue open, and the stream must not end there.
    shmpipe::PoolOptions opt;
    opt.processes = 1;
    opt.max_tasks_per_child = 1;
    shmpipe::Pool sut(opt);
    within(sut, "30 tasks through a worker recycled after each", [&] {
        for (int i = 0; i < 30; ++i) REQUIRE(sut.apply_async(square, i).get_for(20s) == i * i);
        auto v = sut.map(twice, std::vector<int>{1, 2, 3, 4, 5, 6}, 1);
        REQUIRE(v == std::vector<int>{2, 4, 6, 8, 10, 12});
    });
    REQUIRE(sut.workers_started() >= 36);
    sut.close();
    within(sut, "join() after close()", [&] { sut.join(); });
}

namespace {
int fail_on_13(int x) {
    if (x == 13) throw std::runtime_error("thirteen");
    return x;
}
}  // namespace

TEST_CASE("A map that fails or times out leaves no result to be written into its freed output", "[multiprocess]") {
    // Flat results go straight into the map's output vector; these two ways out free it
    // while other chunks are still running (ASan checks that nothing writes there after).
    shmpipe::ProcessPoolExecutor sut(2);
    std::vector<int> sleeps(8, 150);
    REQUIRE_THROWS_MATCHES(sut.map(sleep_ms, sleeps, 10ms), shmpipe::Error,
                           Catch::Predicate<shmpipe::Error>(
                               [](const shmpipe::Error& e) { return e.code() == shmpipe::errc::timeout; },
                               "errc::timeout"));
    std::vector<int> xs(200);
    std::iota(xs.begin(), xs.end(), 0);
    REQUIRE_THROWS_AS(sut.map(fail_on_13, xs, std::nullopt, 10), shmpipe::RemoteError);
    // The chunks still running finish and their results are taken (by the collector) meanwhile.
    auto probe = sut.submit(sleep_ms, 400);
    REQUIRE(probe.result_for(20s) == 400);
    const auto ys = sut.map(fail_on_13, std::vector<int>{1, 2, 3}, std::nullopt, 1);
    REQUIRE(ys == std::vector<int>{1, 2, 3});
}
