// ThreadPool and ThreadPoolExecutor: every method of the Pool / executor faces on threads,
// any callable, the task's own exception types, and shutdown with pending work. Every wait
// has a deadline (get_for / wait_for) naming what it awaited.
#include <shmpipe/thread_pool.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

constexpr auto kDeadline = 20s;

struct Oops : std::runtime_error {
    int code;
    explicit Oops(int c) : std::runtime_error("oops " + std::to_string(c)), code(c) {}
};

// A latch the test opens: tasks blocked on it keep the pool's threads busy.
struct Gate {
    std::promise<void> p;
    std::shared_future<void> f = p.get_future().share();
    void open() { p.set_value(); }
    // A task waits at most kDeadline, so a failing test cannot hang on it.
    bool wait() const { return f.wait_for(kDeadline) == std::future_status::ready; }
};

template <class Pred>
bool eventually(Pred pred) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

}  // namespace

TEST_CASE("apply and apply_async run any callable with its arguments", "[unit]") {
    shmpipe::ThreadPool sut(3);
    const int offset = 100;
    CHECK(sut.apply([offset](int x, int y) { return x * y + offset; }, 6, 7) == 142);
    auto r = sut.apply_async([](const std::string& s) { return s + "!"; }, std::string("hi"));
    CHECK(r.get_for(kDeadline) == "hi!");
    CHECK(r.ready());
    CHECK(r.successful());
    int target = 0;
    sut.apply([](int& t) { t = 5; }, std::ref(target));  // std::ref shares one object
    CHECK(target == 5);
}

TEST_CASE("move-only callables, arguments and results travel through the pool", "[unit]") {
    shmpipe::ThreadPool sut(2);
    auto owned = std::make_unique<int>(41);
    auto f = sut.submit([p = std::move(owned)]() mutable { return std::make_unique<int>(*p + 1); });
    auto result = f.result_for(kDeadline);  // a move-only result: the first get() takes it
    REQUIRE(result != nullptr);
    CHECK(*result == 42);
    auto r = sut.apply_async([](std::unique_ptr<std::string> s) { return s->size(); },
                             std::make_unique<std::string>("four"));
    CHECK(r.get_for(kDeadline) == 4);
}

TEST_CASE("a task's exception reaches get() as its own type", "[unit]") {
    shmpipe::ThreadPool sut(2);
    auto r = sut.apply_async([](int c) -> int { throw Oops(c); }, 7);
    REQUIRE(r.wait_for(kDeadline));
    CHECK_FALSE(r.successful());
    try {
        r.get();
        FAIL("get() did not throw");
    } catch (const Oops& e) {
        CHECK(e.code == 7);
    }
    auto f = sut.submit([] { throw std::out_of_range("index 9"); });
    CHECK_THROWS_AS(f.result_for(kDeadline), std::out_of_range);
    CHECK(f.exception() != nullptr);
    CHECK_THROWS_AS(sut.apply([] { throw Oops(1); }), Oops);
}

TEST_CASE("apply_async calls the result or the error callback given after the arguments", "[unit]") {
    shmpipe::ThreadPool sut(2);
    std::promise<int> got;
    std::promise<std::string> failed;
    std::promise<void> done_void;
    auto ok = sut.apply_async([](int x) { return x * 3; }, 5, shmpipe::callback([&](int v) { got.set_value(v); }),
                              shmpipe::error_callback([&](std::exception_ptr) { got.set_value(-1); }));
    auto bad = sut.apply_async([](int) -> int { throw Oops(2); }, 5,
                               shmpipe::error_callback([&](std::exception_ptr e) {
                                   try {
                                       std::rethrow_exception(e);
                                   } catch (const Oops& o) {
                                       failed.set_value(o.what());
                                   }
                               }));
    auto nothing = sut.apply_async([] {}, shmpipe::callback([&] { done_void.set_value(); }));
    // A tuple argument stays an argument.
    auto tuple_arg = sut.apply_async([](std::tuple<int, int> t) { return std::get<0>(t) + std::get<1>(t); },
                                     std::tuple{2, 3});
    auto g = got.get_future();
    auto fl = failed.get_future();
    auto dv = done_void.get_future();
    REQUIRE(g.wait_for(kDeadline) == std::future_status::ready);
    REQUIRE(fl.wait_for(kDeadline) == std::future_status::ready);
    REQUIRE(dv.wait_for(kDeadline) == std::future_status::ready);
    CHECK(g.get() == 15);
    CHECK(fl.get() == "oops 2");
    CHECK(ok.get_for(kDeadline) == 15);
    CHECK_THROWS_AS(bad.get_for(kDeadline), Oops);
    nothing.get_for(kDeadline);
    CHECK(tuple_arg.get_for(kDeadline) == 5);
}

TEST_CASE("map, map_async and starmap keep the input order", "[unit]") {
    shmpipe::ThreadPool sut(4);
    std::vector<int> xs(1000);
    std::iota(xs.begin(), xs.end(), 0);
    const int k = 3;
    SECTION("map with the default and an explicit chunksize") {
        for (std::size_t chunk : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{5000}}) {
            auto out = sut.map_async([k](int x) { return x * k; }, xs, chunk).get_for(kDeadline);
            REQUIRE(out.size() == xs.size());
            for (std::size_t i = 0; i < xs.size(); ++i) REQUIRE(out[i] == xs[i] * k);
        }
        CHECK(sut.map([](int x) { return std::to_string(x); }, std::vector<int>{4, 5}) ==
              std::vector<std::string>{"4", "5"});
    }
    SECTION("map of an empty range and of a void task") {
        CHECK(sut.map([](int x) { return x; }, std::vector<int>{}).empty());
        std::atomic<int> sum{0};
        sut.map_async([&sum](int x) { sum += x; }, xs).get_for(kDeadline);  // returns void
        CHECK(sum == 999 * 1000 / 2);
    }
    SECTION("map of bool and of results without a default constructor") {
        auto evens = sut.map([](int x) { return x % 2 == 0; }, xs, 1);  // neighbours written by different threads
        REQUIRE(evens.size() == xs.size());
        CHECK(std::count(evens.begin(), evens.end(), true) == 500);
        CHECK(evens[0]);
        CHECK_FALSE(evens[1]);
        struct NoDefault {
            explicit NoDefault(int v) : value(v) {}
            int value;
        };
        auto wrapped = sut.map([](int x) { return NoDefault(x); }, xs, 3);
        REQUIRE(wrapped.size() == xs.size());
        CHECK(wrapped[999].value == 999);
    }
    SECTION("starmap unpacks tuples") {
        std::vector<std::pair<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
        CHECK(sut.starmap([](int a, int b) { return a * b; }, pairs) == std::vector<int>{2, 12, 30});
        auto r = sut.starmap_async([](int a, int b) { return a + b; }, pairs, 1);
        CHECK(r.get_for(kDeadline) == std::vector<int>{3, 7, 11});
    }
    SECTION("a failing element fails the map with the earliest input's exception") {
        auto r = sut.map_async(
            [](int x) {
                if (x == 300 || x == 700) throw Oops(x);
                return x;
            },
            xs, 10);
        REQUIRE(r.wait_for(kDeadline));
        try {
            r.get();
            FAIL("map did not throw");
        } catch (const Oops& e) {
            CHECK(e.code == 300);
        }
    }
}

TEST_CASE("imap yields in order and imap_unordered every result once", "[unit]") {
    shmpipe::ThreadPool sut(3);
    std::vector<int> xs(200);
    std::iota(xs.begin(), xs.end(), 1);
    auto ordered = sut.imap([](int x) { return x * 2; }, xs, 3);
    std::vector<int> got;
    while (auto v = ordered.next_for(kDeadline)) got.push_back(*v);
    REQUIRE(got.size() == xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) CHECK(got[i] == xs[i] * 2);

    auto unordered = sut.imap_unordered(
        [](int x) {
            if (x % 10 == 0) std::this_thread::sleep_for(1ms);  // let later chunks overtake
            return x;
        },
        xs);
    std::multiset<int> seen;
    while (auto v = unordered.next_for(kDeadline)) seen.insert(*v);
    CHECK(seen == std::multiset<int>(xs.begin(), xs.end()));
}

TEST_CASE("submit returns a Future that cancels only before a thread starts it", "[unit]") {
    Gate gate;  // outlives the pool, which waits for the task using it
    std::atomic<bool> started{false};
    shmpipe::ThreadPool sut(1);
    auto busy = sut.submit([&] {
        started = true;
        return gate.wait();
    });
    REQUIRE(eventually([&] { return started.load(); }));
    std::atomic<bool> ran{false};
    auto queued = sut.submit([&] { ran = true; });
    CHECK(busy.running());
    CHECK_FALSE(queued.running());  // queued: neither running nor done
    CHECK_FALSE(queued.done());
    CHECK_FALSE(busy.cancel());  // running
    CHECK(queued.cancel());
    CHECK(queued.cancelled());
    CHECK(queued.done());
    gate.open();
    CHECK(busy.result_for(kDeadline));
    CHECK_FALSE(busy.running());
    sut.close();
    sut.join();
    CHECK_FALSE(ran);
    CHECK_THROWS_AS(queued.result(), shmpipe::Error);
}

TEST_CASE("close lets queued tasks finish; join waits for them", "[unit]") {
    shmpipe::ThreadPool sut(2);
    std::atomic<int> done{0};
    std::vector<shmpipe::AsyncResult<void>> rs;
    for (int i = 0; i < 50; ++i) {
        rs.push_back(sut.apply_async([&done] {
            std::this_thread::sleep_for(100us);
            ++done;
        }));
    }
    sut.close();
    CHECK_THROWS_AS(sut.apply_async([] {}), shmpipe::Error);
    auto joined = std::async(std::launch::async, [&] { sut.join(); });
    REQUIRE(joined.wait_for(kDeadline) == std::future_status::ready);
    joined.get();
    CHECK(done == 50);
    for (auto& r : rs) CHECK(r.successful());
}

TEST_CASE("join before close is refused, as in Python", "[unit]") {
    shmpipe::ThreadPool sut(1);
    CHECK_THROWS_WITH(sut.join(), Catch::Contains("join() before close()"));
}

TEST_CASE("terminate fails queued tasks with errc::cancelled and lets the running one finish", "[unit]") {
    Gate gate;  // outlives the pool, which waits for the task using it
    std::atomic<bool> started{false};
    shmpipe::ThreadPool sut(1);
    auto running = sut.apply_async([&] {
        started = true;
        return gate.wait();
    });
    REQUIRE(eventually([&] { return started.load(); }));
    auto queued = sut.apply_async([] { return 1; });
    auto mapped = sut.map_async([](int x) { return x; }, std::vector<int>{1, 2, 3}, 1);
    sut.terminate();
    REQUIRE(queued.wait_for(kDeadline));
    REQUIRE(mapped.wait_for(kDeadline));
    try {
        queued.get();
        FAIL("a queued task survived terminate()");
    } catch (const shmpipe::Error& e) {
        CHECK(e.code() == shmpipe::errc::cancelled);
    }
    CHECK_THROWS_AS(mapped.get(), shmpipe::Error);
    CHECK_THROWS_AS(sut.submit([] {}), shmpipe::Error);
    gate.open();
    CHECK(running.get_for(kDeadline));
    sut.join();
}

TEST_CASE("shutdown with pending work: wait runs it, cancel_futures cancels it", "[unit]") {
    SECTION("shutdown(wait=true) finishes every queued task") {
        std::atomic<int> done{0};
        std::vector<shmpipe::Future<void>> fs;
        shmpipe::ThreadPoolExecutor sut(2);
        for (int i = 0; i < 20; ++i) {
            fs.push_back(sut.submit([&done] {
                std::this_thread::sleep_for(1ms);
                ++done;
            }));
        }
        auto shut = std::async(std::launch::async, [&] { sut.shutdown(true); });
        REQUIRE(shut.wait_for(kDeadline) == std::future_status::ready);
        CHECK(done == 20);
        CHECK_THROWS_AS(sut.submit([] {}), shmpipe::Error);
    }
    SECTION("shutdown(cancel_futures=true) cancels what no thread started") {
        Gate gate;  // outlives the executor, whose destructor waits for the task using it
        std::atomic<bool> started{false};
        shmpipe::ThreadPoolExecutor sut(1);
        auto running = sut.submit([&] {
            started = true;
            return gate.wait();
        });
        REQUIRE(eventually([&] { return started.load(); }));
        std::vector<shmpipe::Future<int>> pending;
        for (int i = 0; i < 5; ++i) pending.push_back(sut.submit([i] { return i; }));
        sut.shutdown(false, true);
        for (auto& f : pending) {
            REQUIRE(f.wait_for(kDeadline));
            CHECK(f.cancelled());
        }
        gate.open();
        CHECK(running.result_for(kDeadline));
    }
    SECTION("destroying an executor waits for its queued tasks") {
        std::atomic<int> done{0};
        {
            shmpipe::ThreadPoolExecutor sut(2);
            for (int i = 0; i < 10; ++i) sut.submit([&done] {
                std::this_thread::sleep_for(2ms);
                ++done;
            });
        }
        CHECK(done == 10);
    }
    SECTION("destroying a ThreadPool cancels its queued tasks") {
        shmpipe::AsyncResult<int> queued;
        Gate gate;
        std::future<void> opener;
        {
            shmpipe::ThreadPool sut(1);
            std::atomic<bool> started{false};
            sut.apply_async([&] {
                started = true;
                gate.wait();
            });
            REQUIRE(eventually([&] { return started.load(); }));
            queued = sut.apply_async([] { return 1; });
            // The running task ends only once the destructor has failed the queued one.
            opener = std::async(std::launch::async, [&] {
                queued.wait_for(kDeadline);
                gate.open();
            });
        }
        opener.get();
        REQUIRE(queued.ready());
        CHECK_FALSE(queued.successful());
    }
}

TEST_CASE("ThreadPoolExecutor::map returns in order and honours its timeout", "[unit]") {
    Gate gate;  // outlives the executor, whose destructor waits for the task using it
    shmpipe::ThreadPoolExecutor sut(2);
    CHECK(sut.map([](int x) { return -x; }, std::vector<int>{1, 2, 3}) == std::vector<int>{-1, -2, -3});
    CHECK(sut.map([](int x) { return x; }, std::vector<int>{4, 5, 6}, std::nullopt, 2) == std::vector<int>{4, 5, 6});
    CHECK(sut.map([](int x) { return x; }, std::vector<int>{7}, std::chrono::duration<double>(20.5)) ==
          std::vector<int>{7});
    try {
        sut.map([&gate](int x) { return gate.wait() ? x : 0; }, std::vector<int>{1}, 20ms);
        FAIL("map did not time out");
    } catch (const shmpipe::Error& e) {
        CHECK(e.code() == shmpipe::errc::timeout);
    }
    gate.open();
}

TEST_CASE("an initializer runs in every thread, and a throwing one fails that thread's tasks", "[unit]") {
    SECTION("runs once per thread") {
        std::atomic<int> inits{0};
        shmpipe::ThreadPool sut(shmpipe::ThreadPoolOptions{3, [&inits] { ++inits; }});
        sut.map([](int x) { return x; }, std::vector<int>(30, 1));
        sut.close();
        sut.join();
        CHECK(inits == 3);
    }
    SECTION("a throwing initializer fails the tasks instead of hanging them") {
        shmpipe::ThreadPool sut(shmpipe::ThreadPoolOptions{1, [] { throw Oops(9); }});
        CHECK_THROWS_AS(sut.apply_async([] { return 1; }).get_for(kDeadline), Oops);
    }
}

TEST_CASE("done-callbacks may submit more work to the same pool", "[unit]") {
    shmpipe::ThreadPool sut(2);
    std::promise<int> chained;
    auto first = sut.submit([] { return 20; });
    first.add_done_callback([&](const shmpipe::Future<int>& f) {
        sut.submit([v = f.result()] { return v + 1; }).add_done_callback([&](const shmpipe::Future<int>& g) {
            chained.set_value(g.result());
        });
    });
    auto c = chained.get_future();
    REQUIRE(c.wait_for(kDeadline) == std::future_status::ready);
    CHECK(c.get() == 21);
}
