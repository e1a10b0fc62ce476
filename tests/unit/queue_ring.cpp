// SPSC and MPMC queues used by both ends in one process: order, wrap-around, empty and
// maximal messages, non-blocking and timed operations, zero-copy slots, end of stream,
// statistics. Every case runs on both kinds (GENERATE).
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <deque>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unistd.h>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

std::span<const std::byte> as_span(const std::vector<std::byte>& v) { return v; }

// An element type that counts live instances, with a codec that can be told to fail.
struct Counted {
    static inline int live = 0;
    static inline int built = 0;
    std::uint32_t value = 0;
    explicit Counted(std::uint32_t v) : value(v) { ++live, ++built; }
    Counted(const Counted& o) : value(o.value) { ++live, ++built; }
    Counted(Counted&& o) noexcept : value(o.value) { ++live, ++built; }
    Counted& operator=(const Counted&) = default;
    ~Counted() { --live; }
};
struct CodecFailure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace

template <>
struct shmpipe::Codec<Counted> {
    static std::size_t size(const Counted&) { return 4; }
    static void encode(const Counted& c, std::span<std::byte> out) {
        if (c.value == 0xbad) throw CodecFailure("cannot encode 0xbad");
        std::memcpy(out.data(), &c.value, 4);
    }
    static Counted decode(std::span<const std::byte> in) {
        if (in.size() != 4) throw Error(errc::type_mismatch, "Counted: need 4 bytes");
        std::uint32_t v = 0;
        std::memcpy(&v, in.data(), 4);
        return Counted(v);
    }
};

TEST_CASE("Messages come out in the order they went in, across many wraps", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("fifo");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 1024, 64));
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> sut(name);
        std::uint64_t next_in = 0, next_out = 0;
        for (int round = 0; round < 50; ++round) {
            while (tx.try_push(next_in)) ++next_in;
            while (auto v = sut.try_pop()) {
                REQUIRE(*v == next_out);
                ++next_out;
            }
            REQUIRE(next_out == next_in);
        }
        CHECK(next_in > 50 * 10);  // the ring was filled and wrapped many times
    }
    test::require_gone(name);
}

TEST_CASE("Variable-size messages wrap around the ring intact", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("wrap");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 1024, 200));
        Producer<> tx(name);
        Consumer<> sut(name);
        std::mt19937 rng(7);
        std::deque<std::vector<std::byte>> in_flight;
        std::uint64_t seq = 0, received = 0;
        while (received < 5000) {
            const int burst = static_cast<int>(rng() % 8);
            for (int i = 0; i < burst; ++i) {
                auto m = test::make_message(1, seq, test::message_size(1, seq, 200, true));
                if (!tx.try_push(as_span(m))) break;
                in_flight.push_back(std::move(m));
                ++seq;
            }
            const int take = static_cast<int>(rng() % 8);
            for (int i = 0; i < take; ++i) {
                auto m = sut.try_pop();
                if (!m) {
                    REQUIRE(in_flight.empty());
                    break;
                }
                REQUIRE(!in_flight.empty());
                REQUIRE(*m == in_flight.front());
                in_flight.pop_front();
                ++received;
            }
        }
    }
    test::require_gone(name);
}

TEST_CASE("Empty messages are delivered as empty, not as the end of stream", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("empty");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind));
        Producer<std::string> tx(name);
        Consumer<std::string> sut(name);
        tx.push("");
        tx.push("x");
        tx.push("");
        tx.close();
        CHECK(sut.pop() == std::string());
        CHECK(sut.pop() == std::string("x"));
        CHECK(sut.pop() == std::string());
        CHECK(sut.pop() == std::nullopt);
        CHECK(sut.ended());
    }
    test::require_gone(name);
}

TEST_CASE("try_push reports a full queue and try_pop an empty one", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("full");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 1024, 64));
        Producer<std::uint32_t> sut(name);
        Consumer<std::uint32_t> rx(name);
        CHECK(rx.try_pop() == std::nullopt);
        CHECK_FALSE(rx.ended());
        std::uint32_t n = 0;
        while (sut.try_push(n)) ++n;
        CHECK(n > 0);
        CHECK_FALSE(sut.try_push(n));
        CHECK(q.stats().depth == n);
        CHECK(rx.try_pop() == 0u);
        CHECK(sut.try_push(n));  // one freed place is usable again
    }
    test::require_gone(name);
}

TEST_CASE("pop_for and push_for give up after their timeout", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("timeout");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 1024, 64));
        Producer<std::uint32_t> tx(name);
        Consumer<std::uint32_t> rx(name);
        std::optional<std::uint32_t> got;
        auto elapsed = std::chrono::steady_clock::duration{};
        SECTION("pop_for on an empty queue") {
            REQUIRE(test::finishes_within(name, 5s, [&] {
                const auto t0 = std::chrono::steady_clock::now();
                got = rx.pop_for(60ms);
                elapsed = std::chrono::steady_clock::now() - t0;
            }));
            CHECK_FALSE(got.has_value());
            CHECK_FALSE(rx.ended());  // a timeout, not the end of stream
            CHECK(elapsed >= 60ms);
        }
        SECTION("push_for on a full queue") {
            while (tx.try_push(1)) {
            }
            bool pushed = true;
            REQUIRE(test::finishes_within(name, 5s, [&] {
                const auto t0 = std::chrono::steady_clock::now();
                pushed = tx.push_for(2, 60ms);
                elapsed = std::chrono::steady_clock::now() - t0;
            }));
            CHECK_FALSE(pushed);
            CHECK(elapsed >= 60ms);
            CHECK(rx.try_pop() == 1u);
            CHECK(tx.push_for(3, 60ms));  // room again: succeeds at once
        }
        SECTION("reserve_for and peek_for") {
            while (tx.try_push(1)) {
            }
            std::optional<WriteSlot> slot;
            REQUIRE(test::finishes_within(name, 5s, [&] { slot = tx.reserve_for(4, 30ms); }));
            CHECK_FALSE(slot.has_value());
            while (rx.try_pop()) {
            }
            std::optional<ReadSlot> read;
            REQUIRE(test::finishes_within(name, 5s, [&] { read = rx.peek_for(30ms); }));
            CHECK_FALSE(read.has_value());
            CHECK_FALSE(rx.ended());
        }
        SECTION("a zero or negative timeout polls once") {
            REQUIRE(test::finishes_within(name, 5s, [&] { got = rx.pop_for(0ms); }));
            CHECK_FALSE(got.has_value());
            REQUIRE(test::finishes_within(name, 5s, [&] { got = rx.pop_for(-5ms); }));
            CHECK_FALSE(got.has_value());
            tx.push(9);
            REQUIRE(test::finishes_within(name, 5s, [&] { got = rx.pop_for(0ms); }));
            CHECK(got == 9u);
        }
    }
    test::require_gone(name);
}

TEST_CASE("A reserved slot is published by commit, with the committed length", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("reserve");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 4096, 256));
        Producer<> sut(name);
        Consumer<> rx(name);
        {
            auto slot = sut.reserve(100);
            REQUIRE(slot.span().size() == 100);
            for (std::size_t i = 0; i < 100; ++i) slot.span()[i] = static_cast<std::byte>(i);
            CHECK(rx.try_pop() == std::nullopt);  // not visible before commit
            slot.commit(10);
        }
        auto m = rx.try_pop();
        REQUIRE(m);
        REQUIRE(m->size() == 10);
        for (std::size_t i = 0; i < 10; ++i) CHECK((*m)[i] == static_cast<std::byte>(i));

        auto full = sut.reserve(256);
        std::fill(full.span().begin(), full.span().end(), std::byte{0x5a});
        full.commit();
        full.commit();  // a second commit does nothing
        m = rx.try_pop();
        REQUIRE(m);
        CHECK(*m == std::vector<std::byte>(256, std::byte{0x5a}));
        CHECK(rx.try_pop() == std::nullopt);

        auto zero = sut.try_reserve(0);
        REQUIRE(zero);
        zero->commit();
        m = rx.try_pop();
        REQUIRE(m);
        CHECK(m->empty());
    }
    test::require_gone(name);
}

TEST_CASE("A slot destroyed without commit publishes nothing and the queue goes on", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("abandon");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 1024, 64));
        Producer<> sut(name);
        Consumer<> rx(name);
        const auto a = test::make_message(1, 0, 20), b = test::make_message(1, 1, 30);
        sut.push(as_span(a));
        {
            auto slot = sut.reserve(40);
            std::fill(slot.span().begin(), slot.span().end(), std::byte{0xee});
        }
        {
            auto s1 = sut.reserve(16);
            auto s2 = std::move(s1);  // a moved-from slot does nothing; s2 abandons
            CHECK_THROWS_MATCHES(sut.try_reserve(8), Error, Catch::Predicate<Error>([](const Error& e) {
                                     return e.code() == errc::invalid_state;  // one reservation at a time
                                 }));
        }
        sut.push(as_span(b));
        CHECK(rx.try_pop() == a);
        CHECK(rx.try_pop() == b);
        CHECK(rx.try_pop() == std::nullopt);
        // Abandoning more often than the ring holds never wedges it: an MPMC cell given up
        // stays in the ring until a consumer skips it, so the consumer looks in between.
        const test::HangGuard guard_hang(name, 10s, "try_reserve/try_pop over given-up cells");
        for (int i = 0; i < 200; ++i) {
            auto slot = sut.try_reserve(64);
            if (!slot) {
                REQUIRE_FALSE(rx.try_pop().has_value());  // skips the given-up cells, finds nothing
                slot = sut.try_reserve(64);
            }
            REQUIRE(slot.has_value());
        }
        sut.push(as_span(a));
        CHECK(rx.try_pop() == a);
    }
    test::require_gone(name);
}

TEST_CASE("peek reads a message in place and releases it when the slot is destroyed", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("peek");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 1024, 64));
        Producer<> tx(name);
        Consumer<> sut(name);
        CHECK_FALSE(sut.try_peek().has_value());
        const auto a = test::make_message(2, 0, 40), b = test::make_message(2, 1, 12);
        tx.push(as_span(a));
        tx.push(as_span(b));
        {
            auto slot = sut.peek();
            REQUIRE(slot);
            CHECK(std::equal(slot->span().begin(), slot->span().end(), a.begin(), a.end()));
            CHECK(q.stats().depth >= 1);
        }
        {
            auto slot = sut.try_peek();
            REQUIRE(slot);
            auto moved = std::move(*slot);
            CHECK(std::equal(moved.span().begin(), moved.span().end(), b.begin(), b.end()));
            moved.release();
            moved.release();  // idempotent
        }
        CHECK_FALSE(sut.try_peek().has_value());
        CHECK(q.stats().depth == 0);
        // Fill and drain through peek only: released space is reusable.
        for (std::uint64_t i = 0; i < 500; ++i) {
            const auto m = test::make_message(3, i, 12 + i % 50);
            tx.push(as_span(m));
            auto slot = sut.peek();
            REQUIRE(slot);
            REQUIRE(std::equal(slot->span().begin(), slot->span().end(), m.begin(), m.end()));
        }
        tx.close();
        CHECK_FALSE(sut.peek().has_value());  // end of stream
    }
    test::require_gone(name);
}

TEST_CASE("The stream ends when every attached producer has closed and the queue is drained", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("eos");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind));
        Consumer<int> sut(name);
        std::optional<int> got;
        // No producer yet: not the end, consumers wait.
        REQUIRE(test::finishes_within(name, 5s, [&] { got = sut.pop_for(30ms); }));
        CHECK_FALSE(got);
        CHECK_FALSE(sut.ended());
        CHECK_FALSE(q.stats().ended);
        {
            Producer<int> tx(name);
            tx.push(1);
            tx.push(2);
            tx.close();
            CHECK_THROWS_MATCHES(tx.push(3), Error,
                                 Catch::Predicate<Error>([](const Error& e) { return e.code() == errc::closed; }));
            tx.close();  // idempotent
        }
        CHECK(sut.pop() == 1);  // drained first
        CHECK(sut.pop() == 2);
        REQUIRE(test::finishes_within(name, 5s, [&] { got = sut.pop(); }));
        CHECK_FALSE(got);
        CHECK(sut.ended());
        CHECK(sut.pop() == std::nullopt);  // and it stays ended
        CHECK(q.stats().ended);
    }
    test::require_gone(name);
}

TEST_CASE("A producer's destructor closes it", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("dtor");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind));
        Consumer<int> sut(name);
        { Producer<int>(name).push(4); }
        CHECK(sut.pop() == 4);
        std::optional<int> got{0};
        REQUIRE(test::finishes_within(name, 5s, [&] { got = sut.pop(); }));
        CHECK_FALSE(got);
        CHECK(sut.ended());
    }
    test::require_gone(name);
}

TEST_CASE("With expected_producers the stream ends only after that many producers closed", "[unit]") {
    const std::string name = test::unique_name("expected");
    test::ShmGuard guard{name};
    {
        auto o = test::queue_options(Endpoints::many);
        o.expected_producers = 2;
        auto q = Queue::create(name, o);
        Consumer<int> c1(name);
        Consumer<int> c2(name);
        { Producer<int>(name).push(1); }
        std::optional<int> got;
        CHECK(c1.pop() == 1);
        REQUIRE(test::finishes_within(name, 5s, [&] { got = c1.pop_for(50ms); }));
        CHECK_FALSE(got);
        CHECK_FALSE(c1.ended());  // one of two producers closed: not the end
        { Producer<int>(name).push(2); }
        CHECK(c2.pop() == 2);
        REQUIRE(test::finishes_within(name, 5s, [&] { got = c1.pop(); }));
        CHECK_FALSE(got);
        CHECK(c1.ended());
        REQUIRE(test::finishes_within(name, 5s, [&] { got = c2.pop(); }));
        CHECK_FALSE(got);
        CHECK(c2.ended());
    }
    test::require_gone(name);
}

TEST_CASE("A consumer blocked in pop wakes for a push and for the end of stream", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("wake");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind));
        Producer<int> tx(name);
        Consumer<int> sut(name);
        std::vector<std::optional<int>> got;
        std::thread waker([&] {
            std::this_thread::sleep_for(100ms);  // long enough for the consumer to sleep on the futex
            tx.push(11);
            std::this_thread::sleep_for(100ms);
            tx.close();
        });
        const bool in_time = test::finishes_within(name, 10s, [&] {
            got.push_back(sut.pop());
            got.push_back(sut.pop());
        });
        waker.join();
        REQUIRE(in_time);
        REQUIRE(got.size() == 2);
        CHECK(got[0] == 11);
        CHECK(got[1] == std::nullopt);
    }
    test::require_gone(name);
}

TEST_CASE("A producer blocked in push wakes when a consumer makes room", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("room");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 1024, 64));
        Producer<std::uint32_t> sut(name);
        Consumer<std::uint32_t> rx(name);
        std::uint32_t n = 0;
        while (sut.try_push(n)) ++n;
        std::thread drainer([&] {
            std::this_thread::sleep_for(100ms);
            (void)rx.try_pop();
        });
        const bool in_time = test::finishes_within(name, 10s, [&] { sut.push(n); });
        drainer.join();
        REQUIRE(in_time);
        for (std::uint32_t i = 1; i <= n; ++i) REQUIRE(rx.try_pop() == i);
    }
    test::require_gone(name);
}

TEST_CASE("mark_broken makes blocked and later operations throw broken", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("broken");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind));
        Producer<int> tx(name);
        Consumer<int> rx(name);
        std::error_code code;
        std::thread breaker([&] {
            std::this_thread::sleep_for(100ms);
            Queue::open(name).mark_broken();
        });
        const bool in_time = test::finishes_within(name, 10s, [&] {
            try {
                (void)rx.pop();
            } catch (const Error& e) {
                code = e.code();
            }
        });
        breaker.join();
        REQUIRE(in_time);
        CHECK(code == errc::broken);
        CHECK(q.broken());
        CHECK(q.stats().broken);
        CHECK_THROWS_MATCHES(tx.push(1), Error,
                             Catch::Predicate<Error>([](const Error& e) { return e.code() == errc::broken; }));
    }
    test::require_gone(name);
}

TEST_CASE("Queue::stats counts messages, bytes and endpoints", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("stats");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 8192, 64));
        Producer<> tx(name);
        Consumer<> rx(name);
        auto s = q.stats();
        CHECK(s.name == name);
        CHECK(s.spsc == (kind == Endpoints::one));
        CHECK(s.capacity >= 8192);
        CHECK(s.max_message == 64);
        CHECK(s.producers == 1);
        CHECK(s.consumers == 1);
        CHECK(s.depth == 0);
        const std::vector<std::byte> m(10, std::byte{1});
        for (int i = 0; i < 100; ++i) tx.push(as_span(m));
        for (int i = 0; i < 30; ++i) REQUIRE(rx.try_pop());
        s = q.stats();
        CHECK(s.depth == 70);
        CHECK(s.bytes_used > 0);
        if (kind == Endpoints::one) {  // SPSC counts are exact
            CHECK(s.messages_in == 100);
            CHECK(s.messages_out == 30);
            CHECK(s.bytes_in == 1000);
            CHECK(s.bytes_out == 300);
        } else {  // MPMC counts trail by at most a batch of 64
            CHECK(s.messages_in + 64 > 100);
            CHECK(s.messages_in <= 100);
            CHECK(s.messages_out <= 30);
        }
        CHECK_FALSE(s.ended);
        CHECK_FALSE(s.broken);
        tx.close();
        s = q.stats();
        CHECK(s.producers == 0);
        CHECK(s.producers_closed == 1);
        CHECK(s.producers_dead == 0);
    }
    test::require_gone(name);
}

TEST_CASE("Typed values travel through the queue with their codec", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("typed");
    test::ShmGuard guard{name};
    {
        using Row = std::tuple<int, std::string, std::vector<std::string>, std::optional<double>>;
        auto q = Queue::create(name, test::queue_options(kind, 8192, 512));
        Producer<Row> tx(name);
        Consumer<Row> sut(name);
        const Row a{1, "one", {"x", ""}, 1.5}, b{2, "", {}, std::nullopt};
        tx.push(a);
        tx.push(b);
        CHECK(sut.pop() == a);
        CHECK(sut.pop() == b);
        const Row too_big{3, std::string(600, 'x'), {}, std::nullopt};
        CHECK_THROWS_MATCHES(tx.push(too_big), Error, Catch::Predicate<Error>([](const Error& e) {
                                 return e.code() == errc::message_too_large;
                             }));
    }
    test::require_gone(name);
}

TEST_CASE("A message that does not decode is consumed and reported as type_mismatch", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("baddecode");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind));
        Producer<> raw(name);  // untyped bytes: the type check cannot tell
        Consumer<std::pair<int, std::string>> sut(name);
        const std::vector<std::byte> garbage{std::byte{0xff}, std::byte{0xff}, std::byte{0xff}, std::byte{0x7f},
                                             std::byte{1}};
        raw.push(std::span<const std::byte>(garbage));
        std::vector<std::byte> good(Codec<std::pair<int, std::string>>::size({5, "five"}));
        Codec<std::pair<int, std::string>>::encode({5, "five"}, good);
        raw.push(std::span<const std::byte>(good));
        CHECK_THROWS_MATCHES(sut.pop(), Error,
                             Catch::Predicate<Error>([](const Error& e) { return e.code() == errc::type_mismatch; }));
        CHECK(sut.pop() == std::make_pair(5, std::string("five")));  // the bad one was not re-read
    }
    test::require_gone(name);
}

TEST_CASE("Every value a codec builds is destroyed, and a failing encode publishes nothing", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("counted");
    test::ShmGuard guard{name};
    Counted::live = 0;
    Counted::built = 0;
    {
        auto q = Queue::create(name, test::queue_options(kind, 1024, 64));
        Producer<Counted> tx(name);
        Consumer<Counted> sut(name);
        for (std::uint32_t i = 0; i < 100; ++i) {
            tx.push(Counted(i));
            CHECK_THROWS_AS(tx.push(Counted(0xbad)), CodecFailure);
            CHECK_THROWS_AS(tx.try_push(Counted(0xbad)), CodecFailure);
            const int built_before = Counted::built;
            auto v = sut.try_pop();
            REQUIRE(v);
            CHECK(v->value == i);
            CHECK(Counted::built - built_before <= 2);  // decode plus at most one move into the optional
            CHECK_FALSE(sut.try_pop().has_value());   // the failed encodes left nothing behind
        }
        CHECK(Counted::live == 0);
    }
    CHECK(Counted::live == 0);
    test::require_gone(name);
}

TEST_CASE("An endpoint closed by close_endpoints_of is counted once when its owner closes it too", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("closeof");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind));
        {
            Producer<int> tx(name);
            Consumer<int> rx(name);
            tx.push(1);
            // A supervisor closes what this process left open (e.g. it looked finished)...
            CHECK(q.close_endpoints_of(static_cast<std::uint32_t>(::getpid())) == 2);
            CHECK(rx.try_pop() == 1);
            // ...and then the handles close themselves too (destructors).
        }
        const auto s = q.stats();
        CHECK(s.producers_closed == 1);
        CHECK(s.producers == 0);
        CHECK(s.consumers == 0);
        // The places are free again: a new producer and consumer can attach.
        CHECK_NOTHROW(Producer<int>(name));
        CHECK_NOTHROW(Consumer<int>(name));
    }
    test::require_gone(name);
}
