// Copy-out pops (pop_into), batch calls (push_n / pop_n) and the SPSC ring's batched head:
// values, order, blocking and timeouts on both kinds (GENERATE), and statistics that stay
// exact while the consumer publishes its head in batches (S4, S5 in queue_layout.hpp).
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/detail/queue_layout.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <poll.h>
#include <string>
#include <thread>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

struct Sample {  // trivially copyable: the object-bytes codec
    std::uint64_t seq;
    std::uint32_t tag;
    std::uint32_t pad;
};

std::vector<std::uint64_t> iota_values(std::size_t n, std::uint64_t from = 0) {
    std::vector<std::uint64_t> v(n);
    std::iota(v.begin(), v.end(), from);
    return v;
}

}  // namespace

TEST_CASE("pop_into copies the next message into the caller's object", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("popinto");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 4096, 64));
        Producer<Sample> tx(name);
        Consumer<Sample> rx(name);
        Sample out{99, 99, 0};
        CHECK_FALSE(rx.try_pop_into(out));
        CHECK(out.seq == 99);  // nothing waiting: untouched
        const auto t0 = std::chrono::steady_clock::now();
        CHECK_FALSE(rx.pop_into_for(out, 30ms));
        CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
        CHECK_FALSE(rx.ended());  // a timeout, not the end
        for (std::uint32_t i = 0; i < 3; ++i) tx.push(Sample{i, i * 10, 0});
        REQUIRE(rx.try_pop_into(out));
        CHECK(out.seq == 0);
        CHECK(out.tag == 0);
        REQUIRE(rx.pop_into(out));
        CHECK(out.seq == 1);
        REQUIRE(rx.pop_into_for(out, 1s));
        CHECK(out.tag == 20);
        tx.close();
        CHECK_FALSE(rx.pop_into(out));  // end of stream
        CHECK(rx.ended());
        CHECK(out.tag == 20);
    }
    test::require_gone(name);
}

TEST_CASE("pop_into reuses a string's and a byte vector's storage", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("popintos");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 8192, 256));
        Producer<std::string> tx(name);
        Consumer<std::string> rx(name);
        std::string out(200, 'x');
        const char* storage = out.data();
        tx.push("first");
        tx.push(std::string(150, 'b'));
        REQUIRE(rx.pop_into(out));
        CHECK(out == "first");
        REQUIRE(rx.pop_into(out));
        CHECK(out == std::string(150, 'b'));
        CHECK(out.data() == storage);  // no new allocation: the capacity was there
    }
    test::require_gone(name);
}

TEST_CASE("push_n and pop_n move batches in order across the ring's end", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("batch");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 4096, 64));
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        std::array<std::uint64_t, 37> got{};
        CHECK(rx.try_pop_n(got) == 0);
        std::uint64_t next_in = 0, next_out = 0;
        for (int round = 0; round < 200; ++round) {  // many laps of a 4 KiB ring
            const auto batch = iota_values(1 + static_cast<std::size_t>(round % 23), next_in);
            REQUIRE(tx.try_push_n(batch) == batch.size());
            next_in += batch.size();
            const std::size_t n = rx.try_pop_n(got);
            REQUIRE(n == batch.size());
            for (std::size_t i = 0; i < n; ++i) REQUIRE(got[i] == next_out++);
        }
        const auto s = q.stats();
        CHECK(s.depth == 0);
        if (kind == Endpoints::one) {
            CHECK(s.messages_in == next_in);
            CHECK(s.messages_out == next_in);
            CHECK(s.bytes_out == next_in * 8);
        }
    }
    test::require_gone(name);
}

TEST_CASE("try_push_n pushes the prefix that fits; push_n waits for room", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("batchfull");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 1024, 64));
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        const auto values = iota_values(1000);
        const std::size_t fit = tx.try_push_n(values);
        CHECK(fit > 0);
        CHECK(fit < values.size());
        CHECK(tx.full());
        CHECK(q.stats().depth == fit);
        CHECK(tx.try_push_n(std::span(values).subspan(fit)) == 0);
        const auto t0 = std::chrono::steady_clock::now();
        CHECK(tx.push_n_for(std::span(values).subspan(fit), 30ms) == 0);
        CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);

        std::vector<std::uint64_t> got;
        std::thread drainer([&] {
            std::array<std::uint64_t, 16> buf{};
            while (got.size() < values.size()) {
                const std::size_t n = rx.pop_n_for(buf, 5s);
                if (n == 0) return;  // the REQUIRE below reports it
                got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
            }
        });
        const bool in_time = test::finishes_within(name, 10s, [&] { tx.push_n(std::span(values).subspan(fit)); });
        drainer.join();
        REQUIRE(in_time);
        REQUIRE(got == values);
        tx.close();
        std::array<std::uint64_t, 4> tail{};
        CHECK(rx.pop_n(tail) == 0);  // end of stream
        CHECK(rx.ended());
    }
    test::require_gone(name);
}

TEST_CASE("pop_n_for gives up after its timeout and push_n throws on a closed producer", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("batchto");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 4096, 64));
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        std::array<std::uint64_t, 8> buf{};
        const auto t0 = std::chrono::steady_clock::now();
        CHECK(rx.pop_n_for(buf, 30ms) == 0);
        CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
        CHECK_FALSE(rx.ended());
        const auto values = iota_values(5);
        tx.push_n(values);
        CHECK(rx.pop_n(buf) == 5);  // the one it waited for, then the rest waiting
        tx.close();
        CHECK_THROWS_WITH(tx.push_n(values), Catch::Contains(name) && Catch::Contains("closed"));
    }
    test::require_gone(name);
}

TEST_CASE("pop_n with messages waiting still refuses a closed consumer and one holding a slot", "[unit]") {
    // pop_n takes what is waiting before it would wait; the errors of the blocking pop come
    // first all the same, and nothing is consumed by the call that throws.
    const int variant = GENERATE(0, 1, 2);  // SPSC byte ring, MPMC, typed SPSC
    const char* labels[] = {"SPSC", "MPMC", "typed SPSC"};
    INFO(labels[variant]);
    const std::string name = test::unique_name("batcherr");
    test::ShmGuard guard{name};
    {
        const auto opt = test::queue_options(variant == 1 ? Endpoints::many : Endpoints::one, 4096, 64);
        auto q = variant == 2 ? Queue::create<std::uint64_t>(name, opt) : Queue::create(name, opt);
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        tx.push_n(iota_values(6));
        std::array<std::uint64_t, 4> buf{};
        {
            auto slot = rx.try_peek();
            REQUIRE(slot);
            CHECK_THROWS_WITH(rx.pop_n(buf), Catch::Contains(name) && Catch::Contains("still held"));
            CHECK_THROWS_WITH(rx.pop_n_for(buf, 10ms), Catch::Contains(name) && Catch::Contains("still held"));
        }  // the peeked message (0) is consumed here
        CHECK(rx.pop_n(std::span(buf).first(2)) == 2);
        CHECK(buf[0] == 1);
        CHECK(buf[1] == 2);
        CHECK(q.stats().depth == 3);
        rx.close();
        CHECK_THROWS_WITH(rx.pop_n(buf), Catch::Contains(name) && Catch::Contains("closed"));
        CHECK_THROWS_WITH(rx.pop_n_for(buf, 10ms), Catch::Contains(name) && Catch::Contains("closed"));
        CHECK(q.stats().depth == 3);
    }
    test::require_gone(name);
}

TEST_CASE("SPSC statistics are exact while the consumer's head is published in batches", "[unit]") {
    const std::string name = test::unique_name("headbatch");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one, 1 << 16, 64));
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        for (std::uint64_t i = 0; i < 100; ++i) tx.push(i);
        for (std::uint64_t i = 0; i < 10; ++i) REQUIRE(rx.try_pop() == i);
        // 10 records of 16 bytes: below the 1 KiB batch, so the head the producer reads
        // still trails (S4), and the statistics do not (S5).
        detail::OpenProblem problem;
        const detail::Segment seg = detail::Segment::open_any(name, detail::Access::read_only, problem);
        REQUIRE(seg);
        const auto& ring = detail::ring_indices(seg.body());
        CHECK(ring.head.load() < ring.consumed.load());
        CHECK(ring.consumed.load() == 10 * 16);
        auto s = q.stats();
        CHECK(s.depth == 90);
        CHECK(s.messages_out == 10);
        CHECK(s.bytes_out == 80);
        CHECK(s.bytes_used == 90 * 16);
        CHECK(rx.qsize() == 90);
        CHECK(tx.qsize() == 90);
        // At rest after draining: the head is published and everything adds up.
        for (std::uint64_t i = 10; i < 100; ++i) REQUIRE(rx.try_pop() == i);
        CHECK(ring.head.load() == ring.consumed.load());
        s = q.stats();
        CHECK(s.depth == 0);
        CHECK(s.bytes_used == 0);
        CHECK(s.messages_in == 100);
        CHECK(s.messages_out == 100);
    }
    test::require_gone(name);
}

TEST_CASE("A producer polling a full SPSC ring finds the space a paused consumer freed", "[unit]") {
    const std::string name = test::unique_name("polling");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one, 4096, 64));
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        for (std::uint64_t i = 0; i < 5; ++i) tx.push(i);
        REQUIRE(rx.try_pop() == 0u);  // the consumer now knows of 5 records, not of a full ring
        std::uint64_t n = 5;
        while (tx.try_push(n)) ++n;
        CHECK(tx.full());
        REQUIRE(rx.try_pop() == 1u);  // freed, not published: the consumer stays between calls
        CHECK(tx.qsize() == n - 2);   // counted from the exact position (S5)
        // S4: a polling producer reads the exact position on the first of every 64 failures.
        int tries = 0;
        while (!tx.try_push(n) && ++tries < 64) {
        }
        CHECK(tries < 64);
        for (std::uint64_t i = 2; i <= n; ++i) REQUIRE(rx.try_pop() == i);
    }
    test::require_gone(name);
}

TEST_CASE("A consumer that attaches after one left its head unpublished resumes at the exact position", "[unit]") {
    // A consumer killed between head publications leaves head trailing consumed (S4), and
    // the producer may have filled the ring up to consumed + capacity: tail - head then
    // exceeds the capacity, which the attach check must accept (it bounds tail - consumed).
    const std::string name = test::unique_name("trailhead");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one, 4096, 64));
        Producer<std::uint64_t> tx(name);
        std::uint64_t n = 0;
        std::uint64_t trailing_head = 0;
        {
            Consumer<std::uint64_t> rx(name);
            for (; n < 5; ++n) tx.push(n);
            REQUIRE(rx.try_pop() == 0u);
            REQUIRE(rx.try_pop() == 1u);
            detail::OpenProblem problem;
            const detail::Segment seg = detail::Segment::open_any(name, detail::Access::read_only, problem);
            REQUIRE(seg);
            trailing_head = detail::ring_indices(seg.body()).head.load();
            REQUIRE(trailing_head < detail::ring_indices(seg.body()).consumed.load());
            int tries = 0;  // fill up to the exact position (S4: read on the first of 64 failures)
            while (tries < 256) {
                if (tx.try_push(n)) {
                    ++n;
                    tries = 0;
                } else {
                    ++tries;
                }
            }
        }  // closing publishes head; put back what a killed consumer would have left
        detail::OpenProblem problem;
        detail::Segment seg = detail::Segment::open_any(name, detail::Access::read_write, problem);
        REQUIRE(seg);
        auto& ring = detail::ring_indices(seg.body());
        ring.head.store(trailing_head);
        REQUIRE(ring.tail.load() - trailing_head > 4096);  // the case this test is about
        Consumer<std::uint64_t> again(name);  // refused as corrupt before the check used consumed
        for (std::uint64_t i = 2; i < n; ++i) REQUIRE(again.try_pop() == i);
        CHECK_FALSE(again.try_pop().has_value());
    }
    test::require_gone(name);
}

TEST_CASE("try_pop_n and try_pop_into arm a consumer's descriptor when they find nothing", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("batchfd");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 4096, 64));
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        pollfd p{rx.fd(), POLLIN, 0};
        std::array<std::uint64_t, 8> buf{};
        CHECK(rx.try_pop_n(buf) == 0);  // drains the first readiness and arms (D3)
        CHECK(::poll(&p, 1, 0) == 0);
        tx.push_n(iota_values(3));
        REQUIRE(::poll(&p, 1, 5000) == 1);  // the batch rang the armed descriptor
        CHECK(rx.try_pop_n(buf) == 3);
        std::uint64_t one = 0;
        CHECK_FALSE(rx.try_pop_into(one));  // arms again
        CHECK(::poll(&p, 1, 0) == 0);
        tx.push(7);
        REQUIRE(::poll(&p, 1, 5000) == 1);
        REQUIRE(rx.try_pop_into(one));
        CHECK(one == 7u);
    }
    test::require_gone(name);
}
