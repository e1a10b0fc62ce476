// Promise<R> (a Future completed by hand, mixing with pool futures) and Timer
// (threading.Timer). Every wait has a deadline.
#include <shmpipe/promise.hpp>
#include <shmpipe/thread_pool.hpp>
#include <shmpipe/timer.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {
constexpr auto kDeadline = 20s;
}

TEST_CASE("a Promise's future gets the value or the exception set from another thread", "[unit]") {
    shmpipe::Promise<std::string> sut;
    auto f = sut.get_future();
    CHECK_FALSE(f.done());
    std::thread setter([&] { sut.set_value("ready"); });
    CHECK(f.result_for(kDeadline) == "ready");
    setter.join();
    CHECK_THROWS_WITH(sut.set_value("again"), Catch::Contains("already set"));

    shmpipe::Promise<int> failing;
    failing.set_exception(std::make_exception_ptr(std::domain_error("bad input")));
    CHECK_THROWS_AS(failing.get_future().result_for(kDeadline), std::domain_error);

    shmpipe::Promise<void> nothing;
    nothing.set_value();
    CHECK(nothing.get_future().done());
}

TEST_CASE("a Promise destroyed without a value breaks its future", "[unit]") {
    shmpipe::Future<int> f;
    {
        shmpipe::Promise<int> sut;
        f = sut.get_future();
    }
    REQUIRE(f.done());
    try {
        f.result();
        FAIL("a broken promise gave a value");
    } catch (const shmpipe::Error& e) {
        CHECK(e.code() == shmpipe::errc::broken);
    }
}

TEST_CASE("a Promise's future can be cancelled, and setting it then is refused", "[unit]") {
    shmpipe::Promise<int> sut;
    auto f = sut.get_future();
    CHECK(f.cancel());
    CHECK(f.cancelled());
    CHECK_THROWS_WITH(sut.set_value(1), Catch::Contains("cancelled"));
}

TEST_CASE("wait and as_completed take promise and thread pool futures together", "[unit]") {
    shmpipe::ThreadPool pool(2);
    shmpipe::Promise<int> manual;
    std::promise<void> release;
    auto gate = release.get_future().share();
    std::vector<shmpipe::Future<int>> fs{
        pool.submit([] { return 1; }),
        manual.get_future(),
        pool.submit([gate] { return gate.wait_for(kDeadline) == std::future_status::ready ? 3 : -1; }),
    };
    auto first = shmpipe::wait(fs, shmpipe::ReturnWhen::first_completed, 20000ms);
    REQUIRE_FALSE(first.done.empty());
    CHECK(first.not_done.size() >= 2);  // the promise and the gated task cannot be done yet
    manual.set_value(2);
    release.set_value();
    std::vector<int> order;
    for (auto& f : shmpipe::as_completed(fs, 20000ms)) order.push_back(f.result());
    std::sort(order.begin(), order.end());
    CHECK(order == std::vector<int>{1, 2, 3});
}

TEST_CASE("a Timer runs its function once after the delay", "[unit]") {
    std::promise<std::chrono::steady_clock::time_point> ran;
    auto when = ran.get_future();
    const auto started = std::chrono::steady_clock::now();
    shmpipe::Timer sut(std::chrono::duration<double, std::milli>(30.5),
                       [&ran] { ran.set_value(std::chrono::steady_clock::now()); });
    CHECK_FALSE(sut.is_alive());
    sut.start();
    REQUIRE(when.wait_for(kDeadline) == std::future_status::ready);
    CHECK(when.get() - started >= 30ms);  // a lower bound only: the machine may be slow
    REQUIRE(sut.join_for(kDeadline));
    CHECK(sut.fired());
    CHECK_FALSE(sut.cancelled());
    CHECK_FALSE(sut.is_alive());
    CHECK_FALSE(sut.cancel());  // too late: it fired
    CHECK_THROWS_AS(sut.start(), shmpipe::Error);
}

TEST_CASE("a cancelled Timer never runs its function", "[unit]") {
    std::atomic<bool> ran{false};
    shmpipe::Timer sut(10min, [&ran] { ran = true; });
    sut.start();
    CHECK(sut.is_alive());
    CHECK(sut.cancel());
    REQUIRE(sut.join_for(kDeadline));  // cancel wakes it at once, not after 10 minutes
    CHECK_FALSE(ran);
    CHECK(sut.cancelled());
    CHECK_FALSE(sut.fired());
}

TEST_CASE("a Timer takes move-only functions and hands their exception to join", "[unit]") {
    auto token = std::make_unique<int>(7);
    std::atomic<int> seen{0};
    shmpipe::Timer sut(1ms, [t = std::move(token), &seen] {
        seen = *t;
        throw std::runtime_error("timer body failed");
    });
    CHECK_THROWS_AS(sut.join(), shmpipe::Error);  // before start(), like Python's RuntimeError
    sut.start();
    CHECK_THROWS_WITH(sut.join(), "timer body failed");
    CHECK(seen == 7);
    sut.join();  // reported once
}

TEST_CASE("destroying a waiting Timer cancels it", "[unit]") {
    std::atomic<bool> ran{false};
    {
        shmpipe::Timer sut(10min, [&ran] { ran = true; });
        sut.start();
    }
    CHECK_FALSE(ran);
}
