// Pool and ProcessPoolExecutor with Python's semantics: apply_async callbacks, map_async /
// starmap_async, Future::running, the executor's map/shutdown/destructor, current_process()
// in a task, map of a void task, results awaited with any duration. Real worker processes;
// every wait has a deadline.
#include <shmpipe/event.hpp>
#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>

#include "pool_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <unistd.h>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using shmpipe::test::within;

namespace {

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
int sum_pair(std::tuple<int, int> t) { return std::get<0>(t) + std::get<1>(t); }
int fails(int x) { throw std::invalid_argument("bad value " + std::to_string(x)); }
int nap_then_square(int x) {
    std::this_thread::sleep_for(2s);
    return x * x;
}
// Holds its worker until the named event is set (by the test).
int wait_for_event(std::string name) {
    if (!shmpipe::Event::open(name).wait_for(60s)) throw std::runtime_error("event never set");
    return 1;
}
std::pair<std::string, int> who_am_i(int) {
    const auto me = shmpipe::current_process();
    return {me.name + " " + std::to_string(me.pid), me.worker_index ? static_cast<int>(*me.worker_index) : -1};
}
void append_line(std::pair<std::string, int> where) {
    std::ofstream(where.first, std::ios::app) << where.second << "\n";
}
void fail_on_three(int x) {
    if (x == 3) throw std::runtime_error("three");
}

struct TempFile {
    std::string path = "/tmp/" + shmpipe::test::unique_name("pool") + ".txt";
    ~TempFile() { ::unlink(path.c_str()); }
};

// Occupies the worker of a one-worker pool or executor with a task that waits for the
// `release` event; returns that task's future once it runs (or FAILs after 20 s).
template <class PoolLike>
shmpipe::Future<int> occupy_worker(PoolLike& pool, shmpipe::Event& release, const std::string& name) {
    auto busy = pool.submit(wait_for_event, name);
    if (!shmpipe::test::wait_until([&] { return busy.running(); }, 20s)) {
        release.set();
        FAIL("the task holding the worker never showed as running");
    }
    return busy;
}

int lines_in(const std::string& path) {
    std::ifstream in(path);
    int n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
}

}  // namespace

TEST_CASE("apply_async takes an optional callback and an optional error_callback after the arguments",
          "[multiprocess]") {
    shmpipe::Pool sut(2);
    SECTION("callback on success, error_callback not called") {
        std::promise<int> got;
        auto r = sut.apply_async(add, 2, 3, shmpipe::callback([&](int v) { got.set_value(v); }),
                                 shmpipe::error_callback([&](std::exception_ptr) { got.set_value(-1); }));
        auto f = got.get_future();
        REQUIRE(f.wait_for(20s) == std::future_status::ready);
        REQUIRE(f.get() == 5);
        REQUIRE(r.get_for(20s) == 5);
    }
    SECTION("error_callback alone, on failure, with the worker's exception") {
        std::promise<std::string> got;
        auto r = sut.apply_async(fails, 7, shmpipe::error_callback([&](std::exception_ptr e) {
                                     try {
                                         std::rethrow_exception(e);
                                     } catch (const shmpipe::RemoteError& err) {
                                         got.set_value(err.what());
                                     }
                                 }));
        auto f = got.get_future();
        REQUIRE(f.wait_for(20s) == std::future_status::ready);
        REQUIRE_THAT(f.get(), Catch::Contains("bad value 7"));
        REQUIRE(r.wait_for(20s));
        REQUIRE_FALSE(r.successful());
    }
    SECTION("callback alone; a task taking a tuple still gets its tuple") {
        std::promise<int> got;
        sut.apply_async(sum_pair, std::tuple{4, 5}, shmpipe::callback([&](int v) { got.set_value(v); }));
        auto f = got.get_future();
        REQUIRE(f.wait_for(20s) == std::future_status::ready);
        REQUIRE(f.get() == 9);
    }
    within(sut, "close and join", [&] { sut.shutdown(); });
}

TEST_CASE("map_async and starmap_async return an AsyncResult of the whole vector", "[multiprocess]") {
    shmpipe::Pool sut(3);
    std::vector<int> xs(100);
    for (int i = 0; i < 100; ++i) xs[static_cast<std::size_t>(i)] = i;
    shmpipe::AsyncResult<std::vector<int>> squares = sut.map_async(square, xs, 7);
    std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
    shmpipe::AsyncResult<std::vector<int>> sums = sut.starmap_async(add, pairs);
    std::vector<int> expected;
    for (int x : xs) expected.push_back(x * x);
    REQUIRE(squares.get_for(20s) == expected);
    REQUIRE(squares.successful());
    REQUIRE(sums.get_for(std::chrono::duration<double>(20.5)) == std::vector<int>{3, 7, 11});

    auto empty = sut.map_async(square, std::vector<int>{});
    REQUIRE(empty.get_for(20s).empty());

    auto bad = sut.map_async(fails, std::vector<int>{1, 2, 3});
    REQUIRE(bad.wait_for(20s));
    REQUIRE_FALSE(bad.successful());
    REQUIRE_THROWS_AS(bad.get(), shmpipe::RemoteError);
    within(sut, "close and join", [&] { sut.shutdown(); });
}

TEST_CASE("A future runs only while a worker executes it, and a queued one can be cancelled", "[multiprocess]") {
    shmpipe::test::ShmGuard guard;
    const std::string name = guard.add(shmpipe::test::unique_name("run"));
    auto release = shmpipe::Event::create(name);
    TempFile ran;
    shmpipe::Pool sut(1);
    auto busy = occupy_worker(sut, release, name);
    auto queued = sut.submit(append_line, std::pair<std::string, int>(ran.path, 3));
    REQUIRE_FALSE(busy.done());
    REQUIRE_FALSE(queued.running());
    REQUIRE_FALSE(queued.done());
    REQUIRE(queued.cancel());
    REQUIRE(queued.cancelled());
    REQUIRE(queued.done());
    REQUIRE_FALSE(busy.cancel());  // running: too late
    release.set();
    REQUIRE(busy.result_for(20s) == 1);
    REQUIRE_FALSE(busy.running());
    within(sut, "close and join", [&] { sut.shutdown(); });
    REQUIRE(lines_in(ran.path) == 0);  // the cancelled task never ran (the worker skipped it)
}

TEST_CASE("Results are awaited with any duration, rounded up", "[multiprocess]") {
    shmpipe::Pool sut(1);
    auto slow = sut.apply_async(nap_then_square, 4);
    REQUIRE_FALSE(slow.wait_for(0.05s));
    REQUIRE_THROWS_MATCHES(slow.get_for(std::chrono::duration<double>(0.0001)), shmpipe::Error,
                           Catch::Predicate<shmpipe::Error>(
                               [](const shmpipe::Error& e) {
                                   // 0.1 ms rounds up to 1 ms in the message, never down to 0
                                   return e.code() == shmpipe::errc::timeout &&
                                          std::string(e.what()).find("after 1 ms") != std::string::npos;
                               },
                               "a timeout after 1 ms"));
    auto f = sut.submit(square, 5);
    REQUIRE(f.result_for(std::chrono::duration<double>(20.1)) == 25);
    REQUIRE(f.wait_for(0.5s));
    REQUIRE(slow.get_for(std::chrono::duration<double>(2.1) * 10) == 16);
    within(sut, "close and join", [&] { sut.shutdown(); });
}

TEST_CASE("current_process in a pool task names the worker and its index", "[multiprocess]") {
    shmpipe::Pool sut(2);
    const auto pids = sut.worker_pids();
    for (int i = 0; i < 4; ++i) {
        auto [name, index] = sut.apply_async(who_am_i, i).get_for(20s);
        REQUIRE(name.find("-worker-" + std::to_string(index) + " ") != std::string::npos);
        REQUIRE((index == 0 || index == 1));
        const int pid = std::stoi(name.substr(name.rfind(' ') + 1));
        REQUIRE(std::find(pids.begin(), pids.end(), pid) != pids.end());
    }
    within(sut, "close and join", [&] { sut.shutdown(); });
}

TEST_CASE("Pool::map of a void task runs every call and returns nothing", "[multiprocess]") {
    TempFile out;
    shmpipe::Pool sut(3);
    std::vector<std::pair<std::string, int>> xs;
    for (int i = 0; i < 20; ++i) xs.emplace_back(out.path, i);
    static_assert(std::is_void_v<decltype(sut.map(append_line, xs))>);
    within(sut, "map of a void task", [&] { sut.map(append_line, xs, 3); });
    REQUIRE(lines_in(out.path) == 20);
    REQUIRE_THROWS_AS(within(sut, "map of a failing void task", [&] { sut.map(fail_on_three, std::vector<int>{1, 2, 3, 4}); }),
                      shmpipe::RemoteError);
    auto done = sut.map_async(append_line, xs);
    static_assert(std::is_same_v<decltype(done), shmpipe::AsyncResult<void>>);
    REQUIRE_NOTHROW(done.get_for(20s));
    REQUIRE(lines_in(out.path) == 40);
    within(sut, "close and join", [&] { sut.shutdown(); });
}

TEST_CASE("ProcessPoolExecutor: submit, map with a timeout and a chunksize, shutdown", "[multiprocess]") {
    shmpipe::ProcessPoolExecutor sut(2);
    REQUIRE(sut.size() == 2);
    REQUIRE(sut.submit(square, 6).result_for(20s) == 36);
    std::vector<int> xs{1, 2, 3, 4, 5};
    REQUIRE(sut.map(square, xs, 20s) == std::vector<int>{1, 4, 9, 16, 25});
    REQUIRE(sut.map(square, xs, std::nullopt, 2) == std::vector<int>{1, 4, 9, 16, 25});
    REQUIRE(sut.map(square, xs, std::chrono::duration<double>(20.5), 3) == std::vector<int>{1, 4, 9, 16, 25});
    REQUIRE_THROWS_MATCHES(sut.map(nap_then_square, std::vector<int>{1, 2, 3, 4, 5, 6}, 0.2s), shmpipe::Error,
                           Catch::Predicate<shmpipe::Error>(
                               [](const shmpipe::Error& e) { return e.code() == shmpipe::errc::timeout; },
                               "errc::timeout"));
    sut.shutdown(/*wait=*/true);
    REQUIRE_THROWS_MATCHES(sut.submit(square, 1), shmpipe::Error,
                           Catch::Predicate<shmpipe::Error>(
                               [](const shmpipe::Error& e) { return e.code() == shmpipe::errc::invalid_state; },
                               "errc::invalid_state"));
    sut.shutdown();  // a second call is harmless
}

TEST_CASE("shutdown(cancel_futures) cancels the queued tasks and waits for the running one", "[multiprocess]") {
    shmpipe::test::ShmGuard guard;
    const std::string name = guard.add(shmpipe::test::unique_name("cf"));
    auto release = shmpipe::Event::create(name);
    shmpipe::ProcessPoolExecutor sut(1);
    auto busy = occupy_worker(sut, release, name);
    std::vector<shmpipe::Future<int>> queued;
    for (int i = 0; i < 5; ++i) queued.push_back(sut.submit(square, i));
    sut.shutdown(/*wait=*/false, /*cancel_futures=*/true);
    for (auto& f : queued) REQUIRE(f.cancelled());
    release.set();
    REQUIRE(busy.result_for(20s) == 1);
    auto joined = std::async(std::launch::async, [&] { sut.shutdown(/*wait=*/true); });
    REQUIRE(joined.wait_for(20s) == std::future_status::ready);
}

TEST_CASE("Destroying a ProcessPoolExecutor waits for its tasks, destroying a Pool cancels them", "[multiprocess]") {
    shmpipe::Future<int> from_executor;
    shmpipe::Future<int> from_pool;
    auto scope = std::async(std::launch::async, [&] {
        {
            shmpipe::ProcessPoolExecutor sut(1);
            from_executor = sut.submit(nap_then_square, 3);  // 2 s; the destructor waits
        }
        {
            shmpipe::Pool sut(1);
            from_pool = sut.submit(nap_then_square, 3);  // the destructor terminates
        }
    });
    REQUIRE(scope.wait_for(60s) == std::future_status::ready);
    REQUIRE(from_executor.done());
    REQUIRE(from_executor.result() == 9);
    REQUIRE(from_pool.done());
    REQUIRE(from_pool.cancelled());
}

TEST_CASE("Pool::join_for waits with any duration and reports whether the workers exited", "[multiprocess]") {
    shmpipe::Pool sut(1);
    REQUIRE_THROWS_MATCHES(sut.join_for(1s), shmpipe::Error,
                           Catch::Predicate<shmpipe::Error>(
                               [](const shmpipe::Error& e) { return e.code() == shmpipe::errc::invalid_state; },
                               "errc::invalid_state before close()"));
    auto slow = sut.apply_async(nap_then_square, 2);  // 2 s
    sut.close();
    REQUIRE_FALSE(sut.join_for(0.05s));  // the task still runs
    REQUIRE(sut.join_for(std::chrono::duration<double>(20.5)));
    REQUIRE(slow.get_for(0s) == 4);
    REQUIRE(sut.join_for(0s));  // joined: at once
}
