// A queue's fence mode (QueueOptions::symmetric_fences, detail/wait.hpp) is recorded in its
// header at creation, where every process that attaches reads it (both sides of a wake-up
// must use the same mode); and messages pass between processes through sleeps in either mode.
// That no wake-up is lost under symmetric fences: tests/stress/queue_fence_wakes.cpp.
#include "queue_testing.hpp"
#include "test_support.hpp"

#include <shmpipe/detail/queue_layout.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

// The queue flags as an attaching process reads them: the validated copy of the header.
// The endpoints follow the queue control's copy (validated at attach).
std::uint32_t recorded_flags(const std::string& name) {
    const auto s = detail::Segment::open(name, "queue", detail::ObjectKind::mpmc_queue, detail::Access::read_only);
    return detail::queue_control(s.body()).flags;
}

}  // namespace

TEST_CASE("The fence mode is recorded at creation and read by an attaching process", "[multiprocess][queue]") {
    const bool symmetric = GENERATE(false, true);
    INFO((symmetric ? "symmetric" : "asymmetric") << " fences");
    const std::string name = test::unique_name("fmode");
    test::ShmGuard guard{name};
    auto o = test::queue_options(Endpoints::many);
    o.symmetric_fences = symmetric;
    auto q = Queue::create(name, o);
    const bool want = symmetric;
    Process child([name, want] {
        const bool seen = (recorded_flags(name) & detail::kQueueFlagSymmetricFences) != 0;
        std::_Exit(seen == want ? 0 : 1);
    });
    child.start();
    REQUIRE(child.join_for(30s));  // the child read the header and exited
    CHECK(child.exit_code() == 0);

    // Through sleeps both ways: a tiny ring (the producer sleeps when it is full) and a
    // consumer that drains slowly at first, then waits for a producer that pauses.
    constexpr int kMessages = 200;
    Process consumer([name] {
        Consumer<int> rx(name);
        for (int i = 0; i < kMessages; ++i) {
            if (i < 20) std::this_thread::sleep_for(1ms);  // the producer fills the ring and sleeps
            const auto v = rx.pop_for(30s);
            if (v != i) std::_Exit(2);  // missing or out of order
        }
        std::_Exit(0);
    });
    consumer.start();
    {
        Producer<int> tx(name);
        for (int i = 0; i < kMessages; ++i) {
            if (i >= 100) std::this_thread::sleep_for(100us);  // the consumer sleeps between messages
            REQUIRE(tx.push_for(i, 30s));  // room within 30 s
        }
    }
    REQUIRE(consumer.join_for(60s));  // the consumer took every message or gave up
    CHECK(consumer.exit_code() == 0);
}
