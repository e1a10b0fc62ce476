// The asyncio event-loop basics the C++ way, with processes: call_later, call_soon_threadsafe,
// asyncio.wait(FIRST_COMPLETED) with a timeout, awaiting a child process, and as_completed
// over pool futures.
//
//   Python                                       here
//   loop.call_later(0.1, cb)                     asio::steady_timer + async_wait
//   loop.call_soon_threadsafe(cb)                asio::post(io, cb) from another thread
//   await asyncio.wait({ev, sleep(2)}, FIRST_COMPLETED)   co_await (async_wait(event) || timer)
//   await proc.wait()                            co_await shmpipe::asio::async_wait(process)
//   for f in as_completed(futures)               future.add_done_callback -> asio::post
//
// Exits 0 only when each step saw what it should.
#include <shmpipe/asio.hpp>
#include <shmpipe/event.hpp>
#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace net = boost::asio;
using namespace boost::asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

int slow_square(int x) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100 * (5 - x)));  // later inputs finish first
    return x * x;
}

net::awaitable<void> sleep_for(std::chrono::milliseconds d) {
    net::steady_timer t(co_await net::this_coro::executor, d);
    co_await t.async_wait(net::use_awaitable);
}

int main() {
    net::io_context io;
    int failures = 0;
    auto expect = [&](bool ok, const char* what) {
        std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
        if (!ok) ++failures;
    };

    // call_later and call_soon_threadsafe.
    net::steady_timer later(io, 100ms);
    bool fired = false;
    later.async_wait([&](boost::system::error_code ec) { fired = !ec; });
    bool posted = false;
    std::thread other([&] { net::post(io, [&] { posted = true; }); });

    // A child process sets an event; the loop waits for it with a timeout.
    const std::string ev_name = "asyncio-basics-" + std::to_string(::getpid());
    auto ready = shmpipe::Event::create(ev_name);
    shmpipe::Process setter([ev_name] {
        std::this_thread::sleep_for(50ms);
        shmpipe::Event::open(ev_name).set();
        std::_Exit(3);
    });
    setter.start();

    // Pool futures as they complete, delivered into the loop.
    shmpipe::Pool pool(4);  // every task runs at once: they complete in reverse order
    auto pending = net::make_work_guard(io);  // the loop waits for the last future's post
    std::vector<int> order;
    std::vector<shmpipe::Future<int>> futures;
    for (int x = 1; x <= 4; ++x) futures.push_back(pool.submit(slow_square, x));
    for (auto& f : futures) {
        f.add_done_callback([&](shmpipe::Future<int>& done) {
            net::post(io, [&, v = done.result()] {
                order.push_back(v);
                if (order.size() == futures.size()) pending.reset();
            });
        });
    }

    net::co_spawn(
        io,
        [&]() -> net::awaitable<void> {
            auto first = co_await (shmpipe::asio::async_wait(ready, net::use_awaitable) || sleep_for(5s));
            expect(first.index() == 0, "the event set by the child came before the 5 s timeout");
            const int code = co_await shmpipe::asio::async_wait(setter, net::use_awaitable);
            expect(code == 3, "the child's exit code arrived through async_wait");
        },
        [](std::exception_ptr e) {
            if (e) std::rethrow_exception(e);
        });
    io.run();  // until the timer, the post, the coroutine and the four futures are done
    other.join();
    expect(fired, "call_later fired");
    expect(posted, "call_soon_threadsafe ran on the loop");
    std::printf("as completed:");
    for (int v : order) std::printf(" %d", v);
    std::printf("\n");
    expect(order.size() == 4 && order.front() == 16, "the quickest task (4*4) completed first");
    pool.close();
    pool.join();
    return failures == 0 ? 0 : 1;
}
