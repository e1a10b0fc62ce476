// asyncio's "producer and workers over a queue", across processes: a child process produces
// jobs into a shmpipe queue; three coroutines on one thread consume them (each its own
// consumer endpoint of the MPMC queue) and are gathered; a timer reports progress meanwhile.
// The producer waits with join() until every job was marked done, then closes its end, which
// ends the workers' stream.
//
//   Python                                      here
//   queue = asyncio.Queue()                     shmpipe::Queue::create(name, opt), opt.joinable
//   await queue.get()                           co_await shmpipe::asio::async_pop(rx, use_awaitable)
//   queue.task_done()                           rx.task_done()
//   await queue.join()                          tx.join_for(60s) (in the producer process)
//   asyncio.gather(w1, w2, w3)                  co_await (worker(1) && worker(2) && worker(3))
//   loop.call_later(0.05, report)               asio::steady_timer
//
// Exits 0 only when every job was done exactly once and the producer's join() returned.
#include <shmpipe/asio.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <unistd.h>

namespace net = boost::asio;
using namespace boost::asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

constexpr std::uint64_t kJobs = 30'000;

net::awaitable<std::uint64_t> worker(std::string queue, int id, std::uint64_t& done) {
    shmpipe::Consumer<std::uint64_t> rx(queue);
    std::uint64_t sum = 0, count = 0;
    while (auto job = co_await shmpipe::asio::async_pop(rx, net::use_awaitable)) {
        sum += *job;  // the "work"
        ++count;
        ++done;
        rx.task_done();
    }
    std::printf("worker %d: %llu jobs\n", id, static_cast<unsigned long long>(count));
    co_return sum;
}

int main() {
    const std::string name = "asyncio-workers-" + std::to_string(::getpid());
    shmpipe::QueueOptions opt;
    opt.expected_producers = 1;
    opt.joinable = true;
    auto q = shmpipe::Queue::create(name, opt);

    shmpipe::Process producer([name] {
        shmpipe::Producer<std::uint64_t> tx(name);
        for (std::uint64_t job = 1; job <= kJobs; ++job) tx.push(job);
        // queue.join(): every job was taken and marked done; closing then ends the stream.
        if (!tx.join_for(60s)) {
            std::printf("producer: join() timed out\n");
            std::fflush(stdout);
            std::_Exit(2);
        }
        std::printf("producer: join() returned, all %llu jobs done\n", static_cast<unsigned long long>(kJobs));
        std::fflush(stdout);
    });
    producer.start();

    net::io_context io;
    std::uint64_t done = 0, total = 0;
    net::steady_timer progress(io);
    bool finished = false;  // cancel() misses a report whose handler is already queued
    std::function<void()> report = [&] {  // call_later, re-armed
        progress.expires_after(50ms);
        progress.async_wait([&](boost::system::error_code ec) {
            if (ec || finished) return;
            std::printf("progress: %llu jobs done\n", static_cast<unsigned long long>(done));
            report();
        });
    };
    report();
    net::co_spawn(
        io,
        [&]() -> net::awaitable<void> {
            auto [a, b, c] = co_await (worker(name, 1, done) && worker(name, 2, done) && worker(name, 3, done));
            total = a + b + c;
            finished = true;
            progress.cancel();
        },
        [](std::exception_ptr e) {
            if (e) std::rethrow_exception(e);
        });
    io.run();

    const int code = producer.join();
    const std::uint64_t expected = kJobs * (kJobs + 1) / 2;
    std::printf("all workers done: %llu jobs, sum %llu (expected %llu), producer exit %d\n",
                static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                static_cast<unsigned long long>(expected), code);
    return done == kJobs && total == expected && code == 0 ? 0 : 1;
}
