// The seed tutorials' Pool / Process / ProcessPoolExecutor examples, translated, with real
// worker processes.
#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>

#include "pool_testing.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <numeric>
#include <poll.h>
#include <optional>
#include <set>
#include <type_traits>
#include <thread>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

long long square(long long x) { return x * x; }

long long sum_of_squares(std::pair<long long, long long> range) {
    long long s = 0;
    for (long long x = range.first; x <= range.second; ++x) s += x * x;
    return s;
}

std::string upper(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

int slow_square(int x, int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return x * x;
}

using shmpipe::test::settle_or_abort;
using shmpipe::test::within;

// Every result of an imap, each awaited with a deadline.
template <class It>
auto collect(It& it, const char* what) {
    std::vector<std::remove_cvref_t<decltype(*it.next_for(20s))>> out;
    while (true) {
        std::optional<std::remove_cvref_t<decltype(*it.next_for(20s))>> r;
        try {
            r = it.next_for(20s);
        } catch (const shmpipe::Error& e) {
            FAIL(what << ": " << e.what());
        }
        if (!r) return out;
        out.push_back(std::move(*r));
    }
}

bool no_pool_queues_left(const shmpipe::Pool& pool) {
    return shmpipe::test::shm_objects_with_prefix(pool.tasks_queue_name()).empty() &&
           shmpipe::test::shm_objects_with_prefix(pool.results_queue_name()).empty();
}

}  // namespace

TEST_CASE("A 3-worker pool sums squares of 1..150000 over 5 chunks", "[multiprocess]") {
    std::string tasks, results;
    {
        shmpipe::Pool sut(3);
        tasks = sut.tasks_queue_name();
        results = sut.results_queue_name();
        REQUIRE(sut.worker_pids().size() == 3);
        std::vector<std::pair<long long, long long>> chunks;
        for (long long lo = 1; lo <= 150000; lo += 30000) chunks.emplace_back(lo, lo + 29999);
        REQUIRE(chunks.size() == 5);

        const auto partial = within(sut, "map(sum_of_squares) over 5 chunks", [&] { return sut.map(sum_of_squares, chunks); });
        const long long n = 150000;
        const long long expected = n * (n + 1) * (2 * n + 1) / 6;
        REQUIRE(std::accumulate(partial.begin(), partial.end(), 0LL) == expected);

        std::vector<long long> xs(150000);
        std::iota(xs.begin(), xs.end(), 1LL);
        const auto squares = within(sut, "map(square) over 150000 numbers", [&] { return sut.map(square, xs, 30000); });
        REQUIRE(squares.size() == xs.size());
        REQUIRE(std::accumulate(squares.begin(), squares.end(), 0LL) == expected);
        REQUIRE(squares[149999] == 150000LL * 150000LL);
        sut.close();
        within(sut, "join() after close()", [&] { sut.join(); });
    }
    REQUIRE(shmpipe::test::shm_objects_with_prefix(tasks).empty());
    REQUIRE(shmpipe::test::shm_objects_with_prefix(results).empty());
}

TEST_CASE("apply_async and get with a timeout", "[multiprocess]") {
    shmpipe::Pool sut(2);
    auto r = sut.apply_async(slow_square, 7, 10);
    REQUIRE(r.get_for(10s) == 49);
    REQUIRE(r.ready());
    REQUIRE(r.successful());
    REQUIRE(sut.apply_async(slow_square, 3, 0).get_for(20s) == 9);

    auto late = sut.apply_async(slow_square, 2, 3000);
    REQUIRE_FALSE(late.ready());
    REQUIRE_THROWS_MATCHES(late.get_for(50ms), shmpipe::Error,
                           Catch::Predicate<shmpipe::Error>(
                               [](const shmpipe::Error& e) { return e.code() == shmpipe::errc::timeout; },
                               "errc::timeout"));
    REQUIRE_FALSE(late.wait_for(10ms));
    REQUIRE_THROWS_AS(late.successful(), shmpipe::Error);
    sut.terminate();
    REQUIRE_THROWS_AS(late.get_for(10s), shmpipe::Error);  // terminated: cancelled, never hangs
}

TEST_CASE("map and imap upper-case strings", "[multiprocess]") {
    shmpipe::Pool sut(2);
    const std::vector<std::string> words{"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"};
    std::vector<std::string> expected;
    for (const auto& w : words) expected.push_back(upper(w));

    REQUIRE(within(sut, "map(upper)", [&] { return sut.map(upper, words); }) == expected);

    auto in_order = sut.imap(upper, words);
    REQUIRE(collect(in_order, "imap(upper)") == expected);

    auto any_order = sut.imap_unordered(upper, words, 2);
    auto unordered = collect(any_order, "imap_unordered(upper)");
    std::sort(unordered.begin(), unordered.end());
    auto sorted = expected;
    std::sort(sorted.begin(), sorted.end());
    REQUIRE(unordered == sorted);

    const std::vector<std::tuple<int, int>> pairs{{1, 0}, {2, 0}, {3, 0}};
    REQUIRE(within(sut, "starmap(slow_square)", [&] { return sut.starmap(slow_square, pairs); }) ==
            std::vector<int>{1, 4, 9});
    sut.close();
    within(sut, "join() after close()", [&] { sut.join(); });
}

TEST_CASE("imap keeps a bounded look-ahead over a large input", "[multiprocess]") {
    shmpipe::Pool sut(2);
    std::vector<long long> xs(20000);
    std::iota(xs.begin(), xs.end(), 0LL);
    auto it = sut.imap(square, xs, 100, 3);
    const auto ys = collect(it, "imap(square) over 20000 numbers");
    REQUIRE(ys.size() == 20000);
    for (long long i = 0; i < 20000; ++i) REQUIRE(ys[static_cast<std::size_t>(i)] == i * i);
    sut.close();
    within(sut, "join() after close()", [&] { sut.join(); });
}

TEST_CASE("A writer and an endless reader: the reader is terminated", "[multiprocess]") {
    shmpipe::test::ShmGuard guard;
    const std::string name = guard.add(shmpipe::test::unique_name("wr"));
    auto q = shmpipe::Queue::create(name);

    shmpipe::Process writer([name] {
        shmpipe::Producer<std::string> tx(name);
        for (int i = 0; i < 100; ++i) tx.push("message " + std::to_string(i));
        tx.close();
    });
    shmpipe::ProcessOptions ropt;
    ropt.out = shmpipe::Redirect::pipe();
    ropt.daemon = true;  // endless: the test terminates it (and so does a failed check)
    shmpipe::Process reader([name] {
        shmpipe::Consumer<std::string> rx(name);
        long count = 0;
        while (true) {  // endless, like the seed's `while True: q.get()`
            if (auto m = rx.pop_for(50ms)) {
                ++count;
                if (count == 100) {
                    std::printf("100\n");
                    std::fflush(stdout);
                }
            } else if (rx.ended()) {
                std::this_thread::sleep_for(10ms);
            }
        }
    }, ropt);
    reader.start();
    writer.start();
    REQUIRE(writer.join_for(20s));
    REQUIRE(writer.exit_code() == 0);

    pollfd p{reader.stdout_fd(), POLLIN, 0};
    if (::poll(&p, 1, 20000) != 1) FAIL("the reader did not report 100 messages within 20 s");
    char buf[8] = {};
    REQUIRE(::read(reader.stdout_fd(), buf, sizeof buf - 1) > 0);
    REQUIRE(std::string(buf) == "100\n");
    REQUIRE(reader.is_alive());
    reader.terminate();
    REQUIRE(reader.join_for(10s));
    REQUIRE(reader.exit_code() == -SIGTERM);
}

TEST_CASE("An executor with done callbacks, as_completed and wait", "[multiprocess]") {
    shmpipe::Pool sut(2);
    std::mutex m;
    std::vector<int> seen;
    std::vector<shmpipe::Future<int>> futures;
    for (int i = 1; i <= 6; ++i) {
        auto f = sut.submit(slow_square, i, 5 * i);
        f.add_done_callback([&](const shmpipe::Future<int>& done) {
            std::lock_guard lock(m);
            seen.push_back(done.result_for(0s));  // finished: a callback runs after completion
        });
        futures.push_back(f);
    }

    std::set<int> completed;
    for (const auto& f : shmpipe::as_completed(futures, 20s)) completed.insert(f.result_for(0s));
    REQUIRE(completed == std::set<int>{1, 4, 9, 16, 25, 36});

    auto both = shmpipe::wait(futures, shmpipe::ReturnWhen::all_completed, 20s);
    REQUIRE(both.done.size() == 6);
    REQUIRE(both.not_done.empty());

    // first_completed returns once one is done; which one is not guaranteed (two workers).
    auto slow = sut.submit(slow_square, 5, 3000);
    auto fast = sut.submit(slow_square, 6, 0);
    auto first = shmpipe::wait(std::vector{slow, fast}, shmpipe::ReturnWhen::first_completed, 20s);
    REQUIRE(first.done.size() >= 1);
    REQUIRE(first.done.size() + first.not_done.size() == 2);
    for (const auto& f : first.done) {
        const int r = f.result_for(0s);
        REQUIRE((r == 25 || r == 36));
    }
    REQUIRE(slow.result_for(20s) == 25);
    REQUIRE(fast.result_for(20s) == 36);

    // Python's apply_async(callback=, error_callback=).
    std::promise<int> got;
    sut.apply_async(slow_square, 9, 0, shmpipe::callback([&](int r) { got.set_value(r); }),
                    shmpipe::error_callback([&](std::exception_ptr) { got.set_value(-1); }));
    auto gf = got.get_future();
    REQUIRE(gf.wait_for(20s) == std::future_status::ready);
    REQUIRE(gf.get() == 81);

    within(sut, "shutdown(wait, cancel_pending)", [&] { sut.shutdown(/*wait=*/true, /*cancel_pending=*/true); });
    std::lock_guard lock(m);
    REQUIRE(seen.size() == 6);
    REQUIRE(no_pool_queues_left(sut));
}
