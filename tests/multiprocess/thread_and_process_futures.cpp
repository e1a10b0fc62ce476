// Futures of a process Pool, a ThreadPool and a Promise in one shmpipe::wait / as_completed
// call: they are the same Future<R> type. The process tasks run in real worker processes.
#include <shmpipe/pool.hpp>
#include <shmpipe/promise.hpp>
#include <shmpipe/thread_pool.hpp>

#include "pool_testing.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <future>
#include <stdexcept>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;

namespace {

long long times_ten(long long x) { return x * 10; }
long long fail_in_worker(long long) { throw std::invalid_argument("bad in worker"); }
int worker_pid() { return static_cast<int>(::getpid()); }

}  // namespace

TEST_CASE("wait and as_completed take process pool, thread pool and promise futures in one call",
          "[multiprocess]") {
    shmpipe::Pool processes(2);
    shmpipe::ThreadPool threads(2);
    shmpipe::Promise<long long> manual;
    std::promise<void> release;
    auto gate = release.get_future().share();

    std::vector<shmpipe::Future<long long>> fs{
        processes.submit(times_ten, 1),
        threads.submit([](long long x) { return x * 10; }, 2LL),
        manual.get_future(),
        threads.submit([gate] { return gate.wait_for(20s) == std::future_status::ready ? 40LL : -1LL; }),
        processes.submit(times_ten, 5),
    };
    auto all = shmpipe::test::within(processes, "wait(first_completed) over both pools", [&] {
        return shmpipe::wait(fs, shmpipe::ReturnWhen::first_completed, 20000ms);
    });
    REQUIRE_FALSE(all.done.empty());
    CHECK(all.not_done.size() >= 2);  // the promise and the gated thread task cannot be done
    manual.set_value(30);
    release.set_value();
    auto order = shmpipe::test::within(processes, "as_completed over both pools", [&] {
        std::vector<long long> got;
        for (auto& f : shmpipe::as_completed(fs, 20000ms)) got.push_back(f.result());
        return got;
    });
    std::sort(order.begin(), order.end());
    CHECK(order == std::vector<long long>{10, 20, 30, 40, 50});
    processes.close();
    shmpipe::test::within(processes, "joining the process pool", [&] { processes.join(); });
}

TEST_CASE("a process task fails as RemoteError, a thread task as its own type, in one wait", "[multiprocess]") {
    shmpipe::Pool processes(1);
    shmpipe::ThreadPool threads(1);
    std::vector<shmpipe::Future<long long>> fs{
        processes.submit(fail_in_worker, 1),
        threads.submit([]() -> long long { throw std::invalid_argument("bad in thread"); }),
    };
    auto r = shmpipe::test::within(processes, "wait(all_completed) over both pools", [&] {
        return shmpipe::wait(fs, shmpipe::ReturnWhen::all_completed, 20000ms);
    });
    REQUIRE(r.done.size() == 2);
    CHECK_THROWS_AS(fs[0].result(), shmpipe::RemoteError);
    CHECK_THROWS_AS(fs[1].result(), std::invalid_argument);
    // The process task really ran in another process.
    CHECK(processes.apply(worker_pid) != static_cast<int>(::getpid()));
}
