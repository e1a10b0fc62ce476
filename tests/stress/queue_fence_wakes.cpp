// No lost wake-up under symmetric fences (QueueOptions::symmetric_fences, detail/wait.hpp):
// the producer publishes each message the instant a consumer has counted itself a sleeper,
// i.e. inside the window between its mark and its futex_wait that the fence pair must close,
// and waits for it to be taken before the next, thousands of times. A lost wake-up would
// leave the message to the consumer's next look, a 100 ms sleep slice later; every message
// must arrive well before that. SPSC and MPMC (two
// consumers); threads of one process, so ThreadSanitizer checks the fences' ordering too.
// SHMPIPE_STRESS_SCALE (default 1) multiplies the message count.
#include "queue_testing.hpp"
#include "test_support.hpp"

#include <shmpipe/detail/queue_layout.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/detail/wait.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <thread>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

int scale() {
    const char* s = std::getenv("SHMPIPE_STRESS_SCALE");
    const int v = s != nullptr ? std::atoi(s) : 1;
    return v > 0 ? v : 1;
}

}  // namespace

TEST_CASE("A publish racing a consumer's sleep under symmetric fences always wakes it", "[stress][queue]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    const int consumers = kind == Endpoints::one ? 1 : 2;
    const int messages = 600 * scale();
    constexpr auto kLate = 50ms;  // half the sleep slice: a lost wake-up arrives later than this
    INFO(test::kind_label(kind) << ", " << consumers << " consumer(s), " << messages << " messages");
    const std::string name = test::unique_name("fwakes");
    test::ShmGuard guard{name};
    auto o = test::queue_options(kind, 4096, 64);
    o.symmetric_fences = true;
    auto q = Queue::create(name, o);
    // The sleeper mark, read straight from the ring: the inspector is too slow to hit the window.
    const auto seg = detail::Segment::open(name, "queue",
                                           kind == Endpoints::one ? detail::ObjectKind::spsc_queue
                                                                  : detail::ObjectKind::mpmc_queue,
                                           detail::Access::read_only);
    const auto& ring = detail::ring_indices(seg.body());

    std::atomic<long> received{0}, late{0};
    std::atomic<std::int64_t> worst_ns{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < consumers; ++c) {
        threads.emplace_back([&] {
            Consumer<> rx(name);
            for (;;) {
                auto m = rx.pop_for(30s);
                if (!m) return;  // the end of the stream (or nothing for 30 s: received falls short)
                std::int64_t sent = 0;
                std::memcpy(&sent, m->data(), sizeof sent);
                const std::int64_t delay = Clock::now().time_since_epoch().count() - sent;
                if (delay > std::chrono::nanoseconds(kLate).count()) late.fetch_add(1);
                std::int64_t w = worst_ns.load();
                while (delay > w && !worst_ns.compare_exchange_weak(w, delay)) {
                }
                received.fetch_add(1);
            }
        });
    }
    int raced = 0;
    {
        Producer<> tx(name);
        for (int i = 0; i < messages; ++i) {
            const auto give_up = Clock::now() + 10s;
            bool marked = false;
            while (!(marked = ring.consumers_waiting.load(std::memory_order_acquire) != 0) && Clock::now() < give_up) {
                detail::cpu_relax();
            }
            raced += marked ? 1 : 0;  // as seen when we published (a woken MPMC consumer leaves the count)
            const std::int64_t now = Clock::now().time_since_epoch().count();
            std::byte message[8];
            std::memcpy(message, &now, sizeof now);
            tx.push(std::span<const std::byte>(message));
            // Taken before the next publish, which would otherwise rescue a lost wake-up.
            while (received.load() <= i && Clock::now() < give_up) std::this_thread::yield();
        }
    }  // closed: the consumers see the end
    for (auto& t : threads) t.join();
    const double worst_ms = static_cast<double>(worst_ns.load()) / 1e6;
    INFO(raced << " messages published to a counted sleeper; worst delay " << worst_ms << " ms");
    REQUIRE(received.load() == messages);
    CHECK(raced == messages);  // each one went to a consumer that had marked its sleep
    CHECK(late.load() == 0);   // none waited for a sleep slice: no wake-up was lost
}
