// shmpipe::asio (<shmpipe/asio.hpp>) with real processes: a coroutine consumer fed by a
// producer process, async_push into a consumer process, async_wait on a child and on an
// event another process sets, errors reaching co_await and futures. Every io_context runs
// with a deadline timer that stops it and fails the test, naming what was awaited.
#include "queue_catch.hpp"
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/asio.hpp>
#include <shmpipe/event.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <future>
#include <string>
#include <thread>
#include <unistd.h>

using namespace shmpipe;
using namespace std::chrono_literals;
namespace net = boost::asio;

namespace {

using shmpipe::test::report_of;

// Runs the coroutine `make()` on `io` to its end; fails the test naming `what` if it has not
// ended after `limit`. Exceptions of the coroutine are rethrown here.
template <class MakeCoroutine>
void run_coroutine(net::io_context& io, MakeCoroutine make, std::chrono::seconds limit, const std::string& what) {
    net::steady_timer deadline(io, limit);
    bool expired = false;
    std::exception_ptr error;
    deadline.async_wait([&](boost::system::error_code ec) {
        if (ec) return;  // cancelled: the coroutine ended
        expired = true;
        io.stop();
    });
    net::co_spawn(io, make(), [&](std::exception_ptr e) {
        error = e;
        deadline.cancel();
    });
    io.run();
    if (expired) FAIL("no result within " << limit.count() << " s: " << what);
    if (error) std::rethrow_exception(error);
}

}  // namespace

TEST_CASE("A coroutine consumer receives every message of a producer process and the end of stream",
          "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("asiorx");
    test::ShmGuard guard{name};
    constexpr std::uint64_t kCount = 20'000;
    auto q = Queue::create(name, test::queue_options(kind, 8192, 256));
    Consumer<> sut(name);
    auto writer = test::spawn_queue_peer({"produce", name, "3", std::to_string(kCount), "var:200", "--delay-us",
                                          "0"});
    net::io_context io;
    std::uint64_t received = 0, next = 0, ticks = 0;
    bool ended = false;
    // A second coroutine ticks meanwhile: the consumer never blocks the thread.
    net::steady_timer ticker(io);
    bool stop_ticking = false;  // cancel() misses a tick whose handler is already queued
    std::function<void()> tick = [&] {
        ticker.expires_after(1ms);
        ticker.async_wait([&](boost::system::error_code ec) {
            if (ec || stop_ticking) return;
            ++ticks;
            tick();
        });
    };
    tick();
    run_coroutine(
        io,
        [&]() -> net::awaitable<void> {
            while (auto m = co_await shmpipe::asio::async_pop(sut, net::use_awaitable)) {
                std::uint32_t producer = 0;
                std::uint64_t seq = 0;
                if (!test::parse_message(*m, producer, seq) || seq != next) {
                    throw std::runtime_error("message " + std::to_string(next) + " is wrong");
                }
                ++next;
                ++received;
            }
            ended = sut.ended();
            stop_ticking = true;
            ticker.cancel();
        },
        60s, "the coroutine to drain " + name + " to its end");

    CHECK(received == kCount);
    CHECK(ended);
    CHECK(ticks > 0);
    CHECK(writer.wait_or_throw(30s, "the writer of " + name) == 0);
}

TEST_CASE("A coroutine draining a queue that never runs empty does not nest its completions",
          "[multiprocess]") {
    // Every async_pop here finds a message at once. Completed inside the initiating call,
    // each would resume the coroutine one stack frame deeper, and 200 000 of them overflow
    // the stack; completed through the executor, the depth stays flat.
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("asiofull");
    test::ShmGuard guard{name};
    constexpr std::uint64_t kCount = 100'000;
    auto q = Queue::create(name, test::queue_options(kind, 8u << 20, 16));
    Consumer<std::uint64_t> sut(name);
    {
        Producer<std::uint64_t> tx(name);
        for (std::uint64_t i = 0; i < kCount; ++i) REQUIRE(tx.try_push(i));
        q.seal();
    }
    net::io_context io;
    std::uint64_t next = 0;
    run_coroutine(
        io,
        [&]() -> net::awaitable<void> {
            while (auto m = co_await shmpipe::asio::async_pop(sut, net::use_awaitable)) {
                if (*m != next) throw std::runtime_error("message " + std::to_string(next) + " is wrong");
                ++next;
            }
        },
        60s, "the coroutine to drain " + name + " to its end");
    CHECK(next == kCount);
}

TEST_CASE("A producer that dies reaches the coroutine as producer_died after its messages", "[multiprocess]") {
    const std::string name = test::unique_name("asiodead");
    test::ShmGuard guard{name};
    test::TempDir dir;
    auto q = Queue::create(name, test::queue_options(Endpoints::one, 8192, 256));
    Consumer<> sut(name);
    auto writer = test::spawn_queue_peer({"produce", name, "1", "5", "64", "--hold"});
    net::io_context io;
    std::uint64_t received = 0;
    std::error_code code;
    run_coroutine(
        io,
        [&]() -> net::awaitable<void> {
            try {
                while (co_await shmpipe::asio::async_pop(sut, net::use_awaitable)) {
                    if (++received == 5) writer.signal(SIGKILL);
                }
            } catch (const Error& e) {
                code = e.code();
            }
        },
        30s, "producer_died from " + name);

    CHECK(received == 5);
    CHECK(code == errc::producer_died);
    CHECK(writer.wait_or_throw(10s, "the killed writer of " + name) == -SIGKILL);
}

TEST_CASE("async_push with use_future fills a queue that a consumer process drains", "[multiprocess]") {
    const std::string name = test::unique_name("asiotx");
    test::ShmGuard guard{name};
    test::TempDir dir;
    constexpr std::uint64_t kCount = 5'000;
    auto q = Queue::create(name, test::queue_options(Endpoints::many, 1024, 64));
    auto reader = test::spawn_queue_peer({"consume", name, "--expect", std::to_string(kCount), "--out",
                                          dir.file("report"), "--delay-us", "10"});
    {
        Producer<> sut(name);
        net::io_context io;
        auto guard_work = net::make_work_guard(io);
        std::thread loop([&] { io.run(); });
        for (std::uint64_t seq = 0; seq < kCount; ++seq) {
            auto done = shmpipe::asio::async_push(sut, test::make_message(1, seq, 64),
                                                  net::bind_executor(io, net::use_future));
            if (done.wait_for(20s) != std::future_status::ready) {
                guard_work.reset();
                io.stop();
                loop.join();
                FAIL("async_push of message " << seq << " into " << name << " did not complete within 20 s");
            }
            done.get();
        }
        guard_work.reset();
        loop.join();
    }
    CHECK(reader.wait_or_throw(30s, "the reader of " + name + " to drain it") == 0);
    const auto r = report_of(dir.file("report"));
    CHECK(r.number("messages") == kCount);
    CHECK(r.number("checksum") == test::expected_checksum(1, kCount));
}

TEST_CASE("async_wait completes with a child's exit code and when another process sets an event",
          "[multiprocess]") {
    const std::string event_name = test::unique_name("asioev");
    test::ShmGuard guard{event_name};
    auto ready = Event::create(event_name);
    Process setter([event_name] {
        std::this_thread::sleep_for(50ms);
        Event::open(event_name).set();
    });
    Process child([] {
        std::this_thread::sleep_for(100ms);
        std::_Exit(7);
    });
    setter.start();
    child.start();
    net::io_context io;
    int code = -100;
    bool set = false;
    run_coroutine(
        io,
        [&]() -> net::awaitable<void> {
            co_await shmpipe::asio::async_wait(ready, net::use_awaitable);
            set = ready.is_set();
            code = co_await shmpipe::asio::async_wait(child, net::use_awaitable);
        },
        30s, "event " + event_name + " and the exit of pid " + std::to_string(child.pid()));

    CHECK(set);
    CHECK(code == 7);
    CHECK(child.exit_code() == 7);
    CHECK(setter.join_for(10s));
}

TEST_CASE("async_pop works with use_future on the system executor and after a cancelled wait",
          "[multiprocess]") {
    const std::string name = test::unique_name("asiofut");
    test::ShmGuard guard{name};
    auto q = Queue::create(name, test::queue_options(Endpoints::one, 4096, 64));
    Consumer<int> sut(name);

    // A wait that loses a race against a timer is cancelled (|| cancels the loser)...
    net::io_context io;
    bool timer_won = false;
    run_coroutine(
        io,
        [&]() -> net::awaitable<void> {
            using namespace boost::asio::experimental::awaitable_operators;
            net::steady_timer t(co_await net::this_coro::executor, 50ms);
            auto r = co_await (shmpipe::asio::async_pop(sut, net::use_awaitable) || t.async_wait(net::use_awaitable));
            timer_won = r.index() == 1;
        },
        30s, "a timer racing async_pop on the empty queue " + name);
    CHECK(timer_won);

    // ...and the next operation, with no io_context at all, still sees what a process pushes.
    std::future<std::optional<int>> next = shmpipe::asio::async_pop(sut, net::use_future);
    Process writer([name] {
        Producer<int> tx(name);
        tx.push(99);
    });
    writer.start();
    if (next.wait_for(20s) != std::future_status::ready) FAIL("async_pop with use_future on " << name << " never completed");
    CHECK(next.get() == 99);
    CHECK(writer.join_for(10s));
    auto last = shmpipe::asio::async_pop(sut, net::use_future);
    if (last.wait_for(20s) != std::future_status::ready) FAIL("no end of stream from " << name << " through use_future");
    CHECK(last.get() == std::nullopt);
}
