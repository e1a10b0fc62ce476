// Typed fixed-slot SPSC queues (Queue::create<T>; T1-T3 in queue_layout.hpp): the mode is
// chosen where it applies, values round-trip through every pop form and across the ring's
// end, batches move in order, other element types are refused naming the queue, the end of
// stream and the statistics behave as on the byte ring, and a tampered tail is refused.
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/detail/copy.hpp>
#include <shmpipe/detail/queue_endpoint.hpp>
#include <shmpipe/detail/queue_layout.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/inspect.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <optional>
#include <poll.h>
#include <span>
#include <string>
#include <thread>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

struct Tick {  // 24 bytes: slots of 24
    std::uint64_t seq;
    double price;
    std::uint32_t qty;
    std::uint32_t side;
};

struct Frame {  // 100 bytes: slots of 128 (whole lines)
    std::uint32_t seq;
    std::array<std::uint8_t, 96> body;
};
static_assert(sizeof(Frame) == 100);

struct OtherTick {  // the same size as Tick, another type
    std::uint64_t a, b, c;
};

QueueOptions spsc_options(std::size_t capacity = 4096) {
    QueueOptions o;
    o.producers = Endpoints::one;
    o.consumers = Endpoints::one;
    o.capacity = capacity;
    return o;
}

Frame make_frame(std::uint64_t seq) {
    Frame f{};
    f.seq = static_cast<std::uint32_t>(seq);
    for (std::size_t i = 0; i < f.body.size(); ++i) f.body[i] = static_cast<std::uint8_t>(seq + i);
    return f;
}

bool frame_ok(const Frame& f, std::uint64_t seq) { return f.seq == seq && f.body[91] == static_cast<std::uint8_t>(seq + 91); }

template <std::size_t N>
struct Block {  // large elements: slots of whole lines, copied by detail::copy_fixed
    std::array<std::uint8_t, N> bytes;
};
static_assert(sizeof(Block<1001>) == 1001);

template <std::size_t N>
Block<N> make_block(std::uint64_t seq) {
    Block<N> b;
    for (std::size_t i = 0; i < N; ++i) b.bytes[i] = static_cast<std::uint8_t>(seq * 7 + i * 13);
    return b;
}
template <std::size_t N>
bool block_ok(const Block<N>& b, std::uint64_t seq) {
    return b.bytes == make_block<N>(seq).bytes;
}

// copy_fixed<N> (or, with `in`, copy_in<N>) from a patterned source into a buffer of guard
// bytes, at an offset that is not a multiple of 16: every byte copied, none written before or after.
template <std::size_t N, bool in = false>
void check_copy(std::size_t offset) {
    std::vector<std::uint8_t> src(N), dst(N + 128, 0xEE);
    for (std::size_t i = 0; i < N; ++i) src[i] = static_cast<std::uint8_t>(i * 31 + N);
    if constexpr (in) {
        detail::copy_in<N>(dst.data() + offset, src.data());
    } else {
        detail::copy_fixed<N>(dst.data() + offset, src.data());
    }
    INFO("N = " << N << (in ? " (copy_in)" : " (copy_fixed)") << ", destination offset " << offset);
    CHECK(std::memcmp(dst.data() + offset, src.data(), N) == 0);
    CHECK(std::all_of(dst.begin(), dst.begin() + static_cast<std::ptrdiff_t>(offset), [](std::uint8_t b) { return b == 0xEE; }));
    CHECK(std::all_of(dst.begin() + static_cast<std::ptrdiff_t>(offset + N), dst.end(), [](std::uint8_t b) { return b == 0xEE; }));
}

// An Error with code `code` whose message contains `text`.
Catch::Matchers::Generic::PredicateMatcher<Error> error_is(errc code, std::string text) {
    return Catch::Predicate<Error>(
        [code, text](const Error& e) { return e.code() == code && std::string(e.what()).find(text) != std::string::npos; },
        "an Error(" + std::string(make_error_code(code).message()) + ") naming \"" + text + "\"");
}

// A writable view of a queue's ring indices, as a writer outside the protocol would have.
struct RawRing {
    detail::Segment seg;
    detail::RingIndices& ring() const { return detail::ring_indices(seg.body()); }
};
RawRing map_ring(const std::string& name) {
    detail::OpenProblem problem;
    RawRing r{detail::Segment::open_any(name, detail::Access::read_write, problem)};
    REQUIRE(r.seg);
    return r;
}

}  // namespace

TEST_CASE("Queue::create<T> makes fixed slots for one producer and one consumer, else an ordinary queue", "[unit]") {
    const std::string name = test::unique_name("typedmode");
    test::ShmGuard guard{name};
    SECTION("SPSC: typed, slots of sizeof(T) rounded to 8, power-of-two slot count") {
        auto sut = Queue::create<Tick>(name, spsc_options(1000));
        CHECK(sut.typed());
        CHECK(sut.spsc());
        CHECK(sut.max_message() == sizeof(Tick));
        CHECK(sut.capacity() == 32 * 24);  // bit_floor(1000 / 24) slots
        CHECK(sut.stats().typed);
    }
    SECTION("from 64 bytes on, slots are whole cache lines") {
        auto sut = Queue::create<Frame>(name, spsc_options(4096));
        CHECK(sut.typed());
        CHECK(sut.capacity() == 32 * 128);
    }
    SECTION("max_messages sizes by slots, rounded up to a power of two") {
        QueueOptions o = spsc_options();
        o.max_messages = 100;
        auto sut = Queue::create<std::uint64_t>(name, o);
        CHECK(sut.capacity() == 128 * 8);
    }
    SECTION("many endpoints or joinable: an ordinary queue of that T") {
        QueueOptions o = spsc_options();
        const bool joinable = GENERATE(false, true);
        if (joinable) {
            o.joinable = true;
        } else {
            o.consumers = Endpoints::many;
        }
        auto sut = Queue::create<Tick>(name, o);
        CHECK_FALSE(sut.typed());
        CHECK(sut.max_message() == sizeof(Tick));
        {
            Producer<Tick> tx(name);
            Consumer<Tick> rx(name);
            tx.push(Tick{7, 1.5, 3, 1});
            CHECK(rx.pop()->seq == 7);
        }
        CHECK_THROWS_MATCHES(Consumer<OtherTick>(name), Error, error_is(errc::type_mismatch, name));
    }
    SECTION("too small a capacity names the slot size") {
        CHECK_THROWS_MATCHES(Queue::create<Frame>(name, spsc_options(200)), Error,
                             error_is(errc::invalid_argument, "typed slots of 128 bytes"));
    }
}

TEST_CASE("A typed queue's values round-trip through every push and pop form across the ring's end", "[unit]") {
    const std::string name = test::unique_name("typedrt");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create<Frame>(name, spsc_options(8 * 128));  // 8 slots: many laps
        Producer<Frame> tx(name);
        Consumer<Frame> rx(name);
        std::uint64_t in = 0, out = 0;
        for (int round = 0; round < 50; ++round) {
            tx.push(make_frame(in++));
            REQUIRE(tx.try_push(make_frame(in++)));
            REQUIRE(tx.push_for(make_frame(in++), 1s));
            auto a = rx.pop();
            REQUIRE(a);
            CHECK(frame_ok(*a, out++));
            auto b = rx.try_pop();
            REQUIRE(b);
            CHECK(frame_ok(*b, out++));
            Frame f{};
            REQUIRE(rx.pop_into(f));
            CHECK(frame_ok(f, out++));
            tx.push(make_frame(in++));
            REQUIRE(rx.try_pop_into(f));
            CHECK(frame_ok(f, out++));
            tx.push(make_frame(in++));
            REQUIRE(rx.pop_into_for(f, 1s));
            CHECK(frame_ok(f, out++));
            tx.push(make_frame(in++));
            auto c = rx.pop_for(1s);
            REQUIRE(c);
            CHECK(frame_ok(*c, out++));
        }
        // Zero copy on a typed queue: a slot of sizeof(T) bytes.
        {
            auto w = tx.reserve(sizeof(Frame));
            const Frame f = make_frame(in++);
            std::memcpy(w.span().data(), &f, sizeof f);
            w.commit();
        }
        {
            auto r = rx.peek();
            REQUIRE(r);
            REQUIRE(r->span().size() == sizeof(Frame));
            Frame f{};
            std::memcpy(&f, r->span().data(), sizeof f);
            CHECK(frame_ok(f, out++));
            CHECK_THROWS_MATCHES(rx.try_pop(), Error, error_is(errc::invalid_state, "still held"));  // as on the byte ring
        }
        CHECK_FALSE(rx.try_pop());
        CHECK(in == out);
        const auto s = q.stats();
        CHECK(s.messages_in == in);
        CHECK(s.messages_out == out);
        CHECK(s.bytes_in == in * sizeof(Frame));
        CHECK(s.depth == 0);
    }
    test::require_gone(name);
}

TEST_CASE("The slot copies copy every byte and nothing around it, in and out of the vector range", "[unit]") {
    for (const std::size_t offset : {std::size_t{0}, std::size_t{8}, std::size_t{37}}) {
        check_copy<8>(offset);
        check_copy<256>(offset);
        check_copy<257>(offset);
        check_copy<320>(offset);
        check_copy<1001>(offset);
        check_copy<1024>(offset);
        check_copy<4096>(offset);
        check_copy<16383>(offset);
        check_copy<16384>(offset);
        // copy_in: word by word for multiples of 8 up to a line; above, pairs of words into
        // 16-byte stores (blocks of 64, then 16-byte pieces, then a last word) below 16 KiB;
        // copy_fixed otherwise.
        check_copy<8, true>(offset);
        check_copy<56, true>(offset);
        check_copy<64, true>(offset);
        check_copy<12, true>(offset);
        check_copy<72, true>(offset);
        check_copy<80, true>(offset);
        check_copy<120, true>(offset);
        check_copy<1000, true>(offset);
        check_copy<1024, true>(offset);
        check_copy<16376, true>(offset);
        check_copy<16384, true>(offset);
        check_copy<1001, true>(offset);
    }
}

TEST_CASE("A typed queue of large elements round-trips every byte through every form, and a full ring frees a slot per pop",
          "[unit]") {
    const std::string name = test::unique_name("typedlarge");
    test::ShmGuard guard{name};
    {
        using B = Block<1001>;  // slots of 1024 bytes; the copy's last 41 bytes are a tail
        auto q = Queue::create<B>(name, spsc_options(32 * 1024));  // 32 slots: head batches of 4
        Producer<B> tx(name);
        Consumer<B> rx(name);
        std::uint64_t in = 0, out = 0;
        for (int round = 0; round < 40; ++round) {  // laps of the ring
            tx.push(make_block<1001>(in++));
            REQUIRE(tx.try_push(make_block<1001>(in++)));
            std::vector<B> batch;
            for (int i = 0; i < 5; ++i) batch.push_back(make_block<1001>(in++));
            REQUIRE(tx.try_push_n(batch) == batch.size());
            auto a = rx.pop_for(1s);
            REQUIRE(a);
            CHECK(block_ok(*a, out++));
            auto b = rx.try_pop();
            REQUIRE(b);
            CHECK(block_ok(*b, out++));
            B into{};
            REQUIRE(rx.try_pop_into(into));
            CHECK(block_ok(into, out++));
            std::vector<B> got(4);
            REQUIRE(rx.try_pop_n(got) == 4);
            for (const B& g : got) CHECK(block_ok(g, out++));
        }
        CHECK(in == out);
        // Full. The first pop frees a slot the producer finds at once (S4: the tail the
        // consumer loaded showed the ring nearly full); after that the head follows in
        // batches of kHeadBatchSlots, so a batch of pops frees that many slots.
        while (tx.try_push(make_block<1001>(in))) ++in;
        CHECK(in - out == 32);
        auto first = rx.try_pop();
        REQUIRE(first);
        CHECK(block_ok(*first, out++));
        REQUIRE(tx.try_push(make_block<1001>(in++)));
        for (int batch = 0; batch < 3; ++batch) {
            for (std::uint64_t i = 0; i < detail::kHeadBatchSlots; ++i) {
                auto m = rx.try_pop();
                REQUIRE(m);
                CHECK(block_ok(*m, out++));
            }
            for (std::uint64_t i = 0; i < detail::kHeadBatchSlots; ++i) REQUIRE(tx.try_push(make_block<1001>(in++)));
            CHECK_FALSE(tx.try_push(make_block<1001>(in)));
        }
        B into{};
        while (rx.try_pop_into(into)) CHECK(block_ok(into, out++));
        CHECK(in == out);
        const auto s = q.stats();
        CHECK(s.messages_out == out);
        CHECK(s.bytes_out == out * sizeof(B));
        CHECK(s.depth == 0);
    }
    test::require_gone(name);
}

template <std::size_t N>
void round_trip_ordinary_queue() {
    const std::string name = test::unique_name("largecodec");
    test::ShmGuard guard{name};
    {
        QueueOptions o;  // MPMC: record cells, Codec<T>::encode / decode
        o.capacity = 16 * 4096;
        o.max_message = 4096;
        auto q = Queue::create(name, o);
        Producer<Block<N>> tx(name);
        Consumer<Block<N>> rx(name);
        for (std::uint64_t i = 0; i < 40; ++i) {
            tx.push(make_block<N>(i));
            auto m = rx.pop_for(1s);
            REQUIRE(m);
            CHECK(block_ok(*m, i));
        }
    }
    test::require_gone(name);
}

TEST_CASE("Large trivially copyable values round-trip through an ordinary queue's codec", "[unit]") {
    round_trip_ordinary_queue<1001>();
    round_trip_ordinary_queue<4096>();
}

TEST_CASE("A typed queue fills at its slot count and try_push reports full", "[unit]") {
    const std::string name = test::unique_name("typedfull");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create<std::uint64_t>(name, spsc_options(16 * 8));
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        std::uint64_t pushed = 0;
        while (tx.try_push(pushed)) ++pushed;
        CHECK(pushed == 16);
        CHECK(tx.full());
        CHECK(q.stats().depth == 16);
        CHECK(q.stats().bytes_used == 16 * 8);
        CHECK_FALSE(tx.push_for(std::uint64_t{99}, 20ms));
        CHECK(rx.pop() == 0u);
        CHECK(tx.try_push(std::uint64_t{16}));  // the freed slot is found (S4: published or exact)
        for (std::uint64_t i = 1; i <= 16; ++i) CHECK(rx.pop() == i);
        CHECK(rx.qsize() == 0);
    }
    test::require_gone(name);
}

TEST_CASE("Typed batch calls move runs of slots in order across the ring's end", "[unit]") {
    const std::string name = test::unique_name("typedbatch");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create<std::uint64_t>(name, spsc_options(64 * 8));
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        std::array<std::uint64_t, 37> got{};
        CHECK(rx.try_pop_n(got) == 0);
        std::uint64_t next_in = 0, next_out = 0;
        for (int round = 0; round < 300; ++round) {
            std::vector<std::uint64_t> batch(1 + static_cast<std::size_t>(round % 41));
            std::iota(batch.begin(), batch.end(), next_in);
            REQUIRE(tx.try_push_n(batch) == batch.size());
            next_in += batch.size();
            std::size_t n = 0;
            while (n < batch.size()) {
                const std::size_t k = rx.try_pop_n(std::span(got).first(std::min(got.size(), batch.size() - n)));
                REQUIRE(k != 0);
                for (std::size_t i = 0; i < k; ++i) REQUIRE(got[i] == next_out++);
                n += k;
            }
        }
        // A batch larger than the ring: try_push_n takes the prefix that fits, push_n waits.
        std::vector<std::uint64_t> big(100);
        std::iota(big.begin(), big.end(), next_in);
        CHECK(tx.try_push_n(big) == 64);
        std::vector<std::uint64_t> all(200);
        CHECK(rx.pop_n(all) == 64);
        for (std::size_t i = 0; i < 64; ++i) REQUIRE(all[i] == next_in + i);
        CHECK(rx.pop_n_for(std::span(all).first(5), 20ms) == 0);
        CHECK_FALSE(rx.ended());
        std::thread producer([&] { tx.push_n(std::span<const std::uint64_t>(big).subspan(64)); tx.close(); });
        std::size_t taken = 0;
        while (std::size_t k = rx.pop_n(std::span(all).subspan(taken))) taken += k;
        producer.join();
        CHECK(taken == 36);
        for (std::size_t i = 0; i < 36; ++i) REQUIRE(all[i] == next_in + 64 + i);
        CHECK(rx.ended());
        const auto s = q.stats();
        CHECK(s.messages_in == next_in + 100);
        CHECK(s.messages_out == next_in + 100);
        CHECK(s.bytes_out == (next_in + 100) * 8);
    }
    test::require_gone(name);
}

TEST_CASE("A typed queue refuses endpoints of another element type, naming the queue", "[unit]") {
    const std::string name = test::unique_name("typedbad");
    test::ShmGuard guard{name};
    auto q = Queue::create<Tick>(name, spsc_options());
    SECTION("another type of the same size") {
        CHECK_THROWS_MATCHES(Producer<OtherTick>(name), Error,
                             error_is(errc::type_mismatch, "another element type"));
    }
    SECTION("another size") {
        CHECK_THROWS_MATCHES(Consumer<std::uint64_t>(name), Error,
                             error_is(errc::type_mismatch, "8-byte elements"));
    }
    SECTION("untyped endpoints: Bytes and codec types") {
        CHECK_THROWS_MATCHES(Producer<>(name), Error, error_is(errc::type_mismatch, "untyped"));
        CHECK_THROWS_MATCHES(Consumer<std::string>(name), Error, error_is(errc::type_mismatch, name));
    }
    // A refused endpoint leaves the side free for the right one.
    Producer<Tick> tx(name);
    Consumer<Tick> rx(name);
    tx.push(Tick{1, 2.0, 3, 4});
    CHECK(rx.pop()->qty == 3u);
}

TEST_CASE("try_peek on a typed queue holds the slot in place until the ReadSlot goes", "[unit]") {
    const std::string name = test::unique_name("typedpeek");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create<Frame>(name, spsc_options());
        Producer<Frame> tx(name);
        Consumer<Frame> rx(name);
        CHECK_FALSE(rx.try_peek());
        for (std::uint64_t i = 0; i < 3; ++i) tx.push(make_frame(i));
        for (std::uint64_t i = 0; i < 3; ++i) {
            auto r = rx.try_peek();
            REQUIRE(r);
            REQUIRE(r->span().size() == sizeof(Frame));
            CHECK(reinterpret_cast<std::uintptr_t>(r->span().data()) % 64 == 0);  // in its slot: whole lines
            Frame f{};
            std::memcpy(&f, r->span().data(), sizeof f);
            CHECK(frame_ok(f, i));
            CHECK(q.stats().depth == 3 - i);  // held, not consumed yet
            CHECK_THROWS_MATCHES(rx.try_peek(), Error, error_is(errc::invalid_state, "still held"));
            CHECK_THROWS_MATCHES(rx.try_pop(), Error, error_is(errc::invalid_state, "still held"));
        }
        CHECK(q.stats().depth == 0);
        CHECK(q.stats().messages_out == 3);
        CHECK_FALSE(rx.try_peek());
        tx.close();
        CHECK_FALSE(rx.try_peek());  // drained and ended: nothing, as try_pop
        CHECK_FALSE(rx.pop_for(1s));  // the end of stream, not a timeout: ended() below
        CHECK(rx.ended());
    }
    test::require_gone(name);
}

TEST_CASE("A typed queue ends when its producer closes, after the consumer drained it", "[unit]") {
    const std::string name = test::unique_name("typedend");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create<std::uint64_t>(name, spsc_options());
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        for (std::uint64_t i = 0; i < 10; ++i) tx.push(i);
        tx.close();
        CHECK_THROWS_MATCHES(tx.push(std::uint64_t{1}), Error, error_is(errc::closed, name));
        CHECK_THROWS_MATCHES(tx.try_push(std::uint64_t{1}), Error, error_is(errc::closed, name));
        for (std::uint64_t i = 0; i < 10; ++i) CHECK(rx.pop() == i);
        CHECK_FALSE(rx.pop());
        CHECK(rx.ended());
        CHECK(q.stats().ended);
    }
    test::require_gone(name);
}

TEST_CASE("A typed queue's blocked consumer is woken by a push, and its descriptor turns readable", "[unit]") {
    const std::string name = test::unique_name("typedwake");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create<std::uint64_t>(name, spsc_options());
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        const int fd = rx.fd();
        CHECK_FALSE(rx.try_pop());  // arms the descriptor
        pollfd p{fd, POLLIN, 0};
        CHECK(::poll(&p, 1, 0) == 0);
        tx.push(std::uint64_t{42});
        REQUIRE(::poll(&p, 1, 5000) == 1);  // deadline: the push must ring the armed bell
        CHECK(rx.try_pop() == 42u);
        std::thread late([&] {
            std::this_thread::sleep_for(50ms);  // the consumer is asleep on the futex by then
            tx.push(std::uint64_t{43});
        });
        CHECK(rx.pop_for(5s) == 43u);
        late.join();
        q.mark_broken();
        CHECK_THROWS_MATCHES(tx.push(std::uint64_t{1}), Error, error_is(errc::broken, name));
        CHECK_THROWS_MATCHES(rx.pop(), Error, error_is(errc::broken, name));
    }
    test::require_gone(name);
}

// The consumer publishes its head in batches and when it finds the ring empty, not when it
// catches up with the tail it loaded (S4, typed_consume); a producer asleep on the full ring
// must still be woken by those publications, not left to its 100 ms re-check. 40 full-ring
// episodes each waiting for the re-check would take 4 s; woken, they take about 40 pauses
// of 2 ms.
TEST_CASE("A typed queue's producer asleep on a full ring is woken by the consumer's pops", "[unit]") {
    for (const std::size_t slots : {std::size_t{16}, std::size_t{1024}}) {
        DYNAMIC_SECTION(slots << " slots") {
            const std::string name = test::unique_name("typedfull");
            test::ShmGuard guard{name};
            {
                QueueOptions o = spsc_options();
                o.max_messages = slots;
                auto q = Queue::create<std::uint64_t>(name, o);
                Producer<std::uint64_t> tx(name);
                Consumer<std::uint64_t> rx(name);
                const std::uint64_t count = 40 * slots;
                std::uint64_t pushed = 0;
                std::thread producer([&] {
                    while (pushed < count && tx.push_for(std::uint64_t{pushed}, 10s)) ++pushed;
                });
                // Every other message by try_pop: its empty look is where the head is published.
                const auto start = std::chrono::steady_clock::now();
                const auto deadline = start + 10s;  // awaited: all `count` messages
                std::uint64_t popped = 0, wrong = 0;
                while (popped < count && std::chrono::steady_clock::now() < deadline) {
                    // Once per ring: the producer fills it, spins out and goes to sleep.
                    if (popped % slots == 0) std::this_thread::sleep_for(2ms);
                    std::optional<std::uint64_t> v = popped % 2 == 0 ? rx.pop_for(10s) : rx.try_pop();
                    if (!v) {
                        std::this_thread::yield();  // the producer may share our CPU
                        continue;
                    }
                    wrong += *v != popped;
                    ++popped;
                }
                const auto elapsed = std::chrono::steady_clock::now() - start;
                producer.join();
                INFO("popped " << popped << " of " << count << ", pushed " << pushed);
                REQUIRE(popped == count);
                CHECK(wrong == 0);
                CHECK(elapsed < 2s);
            }
            test::require_gone(name);
        }
    }
}

TEST_CASE("A typed queue's statistics are exact while the head is published in batches, and the inspector shows the mode",
          "[unit]") {
    const std::string name = test::unique_name("typedstats");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create<std::uint64_t>(name, spsc_options(1024 * 8));
        Producer<std::uint64_t> tx(name);
        Consumer<std::uint64_t> rx(name);
        for (std::uint64_t i = 0; i < 1000; ++i) tx.push(i);
        for (std::uint64_t i = 0; i < 333; ++i) REQUIRE(rx.pop() == i);
        auto s = q.stats();
        CHECK(s.messages_in == 1000);
        CHECK(s.messages_out == 333);  // exact, though head was published fewer times (S4)
        CHECK(map_ring(name).ring().head.load() < 333);       // T2: head trails in batches of 128 slots
        CHECK(map_ring(name).ring().consumed.load() == 333);
        CHECK(s.depth == 667);
        CHECK(s.bytes_used == 667 * 8);
        CHECK(rx.qsize() == 667);
        const auto info = inspect_object(name);
        REQUIRE(info);
        CHECK(info->slot_bytes == 8);
        CHECK(info->depth == 667);
        CHECK(info->messages_out == 333);
        CHECK(info->bytes_in == 8000);
    }
    test::require_gone(name);
}

TEST_CASE("A typed queue whose tail was overwritten is refused, not read past", "[unit]") {
    const std::string name = test::unique_name("typedcorrupt");
    test::ShmGuard guard{name};
    auto q = Queue::create<std::uint64_t>(name, spsc_options(64 * 8));
    Producer<std::uint64_t> tx(name);
    Consumer<std::uint64_t> rx(name);
    tx.push(std::uint64_t{1});
    CHECK(rx.pop() == 1u);
    const RawRing raw = map_ring(name);  // a writer outside the protocol
    raw.ring().tail.store(1 + 65, std::memory_order_release);  // more than a ring ahead of head (T1)
    CHECK_THROWS_MATCHES(rx.try_pop(), Error, error_is(errc::corrupt, name));
    CHECK(q.broken());
}
