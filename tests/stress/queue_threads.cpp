// Ring stress with both ends as threads of one process: the variant ThreadSanitizer can
// check (it sees one process only). SPSC and MPMC, several producers and consumers, every
// operation flavour (push/try_push/push_for/reserve/push_n, pop/try_pop/pop_for/peek/
// pop_n/try_pop_n/pop_n_for/pop_into/try_pop_into), typed fixed-slot queues too, tiny rings
// so both sides block and wake constantly. Checks: content intact, each message exactly
// once, each producer's order kept per consumer, end of stream reached by every consumer.
// SHMPIPE_STRESS_SCALE (default 1) multiplies the message counts.
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

// If the threads are not done in 120 s, breaks the queue so they return; finish() reports
// whether it had to (the threads then hung until the queue was broken).
class BreakQueueWhenLate {
public:
    explicit BreakQueueWhenLate(const std::string& name)
        : thread_([this, name] {
              const auto deadline = std::chrono::steady_clock::now() + 120s;
              while (!done_.load() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
              if (!done_.load()) {
                  fired_ = true;
                  Queue::open(name).mark_broken();
              }
          }) {}
    ~BreakQueueWhenLate() { finish(); }
    BreakQueueWhenLate(const BreakQueueWhenLate&) = delete;
    BreakQueueWhenLate& operator=(const BreakQueueWhenLate&) = delete;
    bool finish() {
        done_ = true;
        if (thread_.joinable()) thread_.join();
        return fired_.load();
    }

private:
    std::atomic<bool> done_{false}, fired_{false};
    std::thread thread_;
};

// What one consumer thread saw; checked on the main thread (Catch2 is not thread-safe).
struct ConsumerResult {
    std::vector<std::uint64_t> log;
    std::string error;
};

// Pushes messages 0..count-1 of `id`, rotating through the push flavours.
void produce(const std::string& name, std::uint32_t id, std::uint64_t count, std::size_t max_size, std::string& error) {
    try {
        Producer<> tx(name);
        std::vector<std::byte> buf;
        std::vector<Bytes> batch;
        for (std::uint64_t seq = 0; seq < count; ++seq) {
            const std::size_t n = test::message_size(id, seq, max_size, true);
            switch (seq % 5) {
                case 0: {
                    buf.resize(n);
                    test::fill_message(buf, id, seq);
                    tx.push(std::span<const std::byte>(buf));
                    break;
                }
                case 1: {
                    buf.resize(n);
                    test::fill_message(buf, id, seq);
                    while (!tx.try_push(std::span<const std::byte>(buf))) std::this_thread::yield();
                    break;
                }
                case 2: {
                    std::optional<WriteSlot> slot;
                    while (!(slot = tx.reserve_for(n, 5ms))) {
                    }
                    test::fill_message(slot->span(), id, seq);
                    slot->commit();
                    break;
                }
                case 3: {
                    auto slot = tx.reserve(n);
                    test::fill_message(slot.span(), id, seq);
                    slot.commit();
                    break;
                }
                default: {  // a batch of up to 3 (one publication on SPSC)
                    batch.clear();
                    for (std::uint64_t k = 0; k < 3 && seq + k < count; ++k) {
                        batch.emplace_back(test::message_size(id, seq + k, max_size, true));
                        test::fill_message(batch.back(), id, seq + k);
                    }
                    tx.push_n(batch);
                    seq += batch.size() - 1;
                    break;
                }
            }
        }
        tx.close();
    } catch (const std::exception& e) {
        error = std::string("producer ") + std::to_string(id) + ": " + e.what();
    }
}

// Pops until the end of stream, rotating through the pop flavours. T: Bytes, or
// test::TypedMessage on a typed queue.
std::span<const std::byte> bytes_of(const Bytes& m) { return m; }
std::span<const std::byte> bytes_of(const test::TypedMessage& m) { return m.bytes; }
template <class T>
void consume(const std::string& name, ConsumerResult& out) {
    try {
        Consumer<T> rx(name);
        auto take = [&](std::span<const std::byte> m) {
            std::uint32_t p = 0;
            std::uint64_t s = 0;
            if (!test::parse_message(m, p, s)) throw std::runtime_error("bad message content");
            out.log.push_back(test::log_entry(p, s));
        };
        std::array<T, 5> batch;
        T into{};
        for (std::uint64_t i = 0;; ++i) {
            switch (i % 8) {
                case 0: {
                    auto m = rx.pop();
                    if (!m) return;
                    take(bytes_of(*m));
                    break;
                }
                case 1: {
                    if (auto m = rx.try_pop()) {
                        take(bytes_of(*m));
                    } else if (rx.ended()) {
                        return;
                    }
                    break;
                }
                case 2: {
                    if (auto m = rx.pop_for(2ms)) {
                        take(bytes_of(*m));
                    } else if (rx.ended()) {
                        return;
                    }
                    break;
                }
                case 3: {
                    auto slot = rx.peek();
                    if (!slot) return;
                    take(slot->span());
                    break;
                }
                case 4: {
                    const std::size_t got = rx.pop_n(batch);
                    if (got == 0) return;
                    for (std::size_t k = 0; k < got; ++k) take(bytes_of(batch[k]));
                    break;
                }
                case 5: {
                    const std::size_t got = rx.try_pop_n(batch);
                    for (std::size_t k = 0; k < got; ++k) take(bytes_of(batch[k]));
                    if (got == 0 && rx.pop_n_for(std::span(batch).first(1), 2ms) == 1) take(bytes_of(batch[0]));
                    if (rx.ended()) return;
                    break;
                }
                case 6: {
                    if (rx.try_pop_into(into)) {
                        take(bytes_of(into));
                    } else if (rx.ended()) {
                        return;
                    }
                    break;
                }
                default: {
                    if (!rx.pop_into(into)) return;
                    take(bytes_of(into));
                    break;
                }
            }
        }
    } catch (const std::exception& e) {
        out.error = e.what();
    }
}

struct Shape {
    const char* label;
    Endpoints kind;
    int producers, consumers;
    std::size_t capacity, max_message;
    std::uint64_t per_producer;
};

}  // namespace

TEST_CASE("Threads hammering one queue deliver every message exactly once and in producer order", "[stress]") {
    const auto shape = GENERATE(Shape{"SPSC, 1 -> 1", Endpoints::one, 1, 1, 4096, 300, 200000},
                                Shape{"MPMC, 1 -> 1", Endpoints::many, 1, 1, 16 * 128, 128, 100000},
                                Shape{"MPMC, 3 -> 3", Endpoints::many, 3, 3, 16 * 128, 128, 50000},
                                Shape{"MPMC, 4 -> 2, two cells", Endpoints::many, 4, 2, 2 * 64, 64, 15000},
                                Shape{"MPMC, 1 -> 4", Endpoints::many, 1, 4, 8 * 64, 64, 80000});
    INFO(shape.label);
    const std::uint64_t per_producer = shape.per_producer * test::stress_scale();
    const std::string name = test::unique_name("threads");
    test::ShmGuard guard{name};
    {
        QueueOptions o;
        o.producers = shape.producers == 1 ? Endpoints::one : Endpoints::many;
        o.consumers = shape.consumers == 1 ? Endpoints::one : Endpoints::many;
        if (shape.kind == Endpoints::many) o.producers = o.consumers = Endpoints::many;
        o.capacity = shape.capacity;
        o.max_message = shape.max_message;
        o.expected_producers = static_cast<std::uint32_t>(shape.producers);  // no early end while threads attach
        auto q = Queue::create(name, o);
        std::vector<ConsumerResult> results(static_cast<std::size_t>(shape.consumers));
        std::vector<std::string> producer_errors(static_cast<std::size_t>(shape.producers));
        std::vector<std::thread> threads;
        for (int c = 0; c < shape.consumers; ++c) threads.emplace_back(consume<Bytes>, name, std::ref(results[c]));
        for (int p = 0; p < shape.producers; ++p) {
            threads.emplace_back(produce, name, static_cast<std::uint32_t>(p + 1), per_producer, shape.max_message,
                                 std::ref(producer_errors[p]));
        }
        BreakQueueWhenLate watchdog(name);
        {
            // A livelock that ignores mark_broken (a spinning try_*) still ends the test, named.
            const test::HangGuard hang(name, 150s, "joining the stress threads");
            for (auto& t : threads) t.join();
        }
        INFO("stats: depth " << q.stats().depth << ", in " << q.stats().messages_in << ", out " << q.stats().messages_out);
        REQUIRE_FALSE(watchdog.finish());  // else the threads hung until the queue was broken after 120 s
        for (const auto& e : producer_errors) CHECK(e.empty());
        std::vector<std::vector<std::uint64_t>> logs;
        for (const auto& r : results) {
            CHECK(r.error.empty());
            INFO(r.error);
            std::string why;
            const bool ordered = test::per_producer_order(r.log, false, &why);
            INFO(why);
            CHECK(ordered);
            logs.push_back(r.log);
        }
        const auto d = test::collect(logs);
        CHECK(d.total == per_producer * static_cast<std::uint64_t>(shape.producers));
        CHECK(d.duplicates() == 0);
        for (int p = 1; p <= shape.producers; ++p) CHECK(d.missing(static_cast<std::uint32_t>(p), per_producer).empty());
        CHECK(q.stats().ended);
    }
    test::require_gone(name);
}

TEST_CASE("Threads that give up slots and time out never lose or duplicate committed messages", "[stress]") {
    const std::string name = test::unique_name("abandonthreads");
    test::ShmGuard guard{name};
    const std::uint64_t per_producer = 30000 * test::stress_scale();
    {
        QueueOptions o;
        o.capacity = 32 * 64;
        o.max_message = 64;
        o.expected_producers = 2;
        auto q = Queue::create(name, o);
        std::vector<ConsumerResult> results(2);
        std::vector<std::string> errors(2);
        std::vector<std::thread> threads;
        for (auto& r : results) threads.emplace_back(consume<Bytes>, name, std::ref(r));
        for (std::uint32_t p = 1; p <= 2; ++p) {
            threads.emplace_back([&, p] {
                try {
                    Producer<> tx(name);
                    std::mt19937 rng(p);
                    for (std::uint64_t seq = 0; seq < per_producer;) {
                        auto slot = tx.reserve_for(40, 5ms);
                        if (!slot) continue;
                        if (rng() % 5 == 0) continue;  // given up: must never be delivered
                        test::fill_message(slot->span(), p, seq);
                        slot->commit();
                        ++seq;
                    }
                    tx.close();
                } catch (const std::exception& e) {
                    errors[p - 1] = e.what();
                }
            });
        }
        BreakQueueWhenLate watchdog(name);
        {
            // A livelock that ignores mark_broken (a spinning try_*) still ends the test, named.
            const test::HangGuard hang(name, 150s, "joining the stress threads");
            for (auto& t : threads) t.join();
        }
        REQUIRE_FALSE(watchdog.finish());
        for (const auto& e : errors) CHECK(e.empty());
        std::vector<std::vector<std::uint64_t>> logs;
        for (const auto& r : results) {
            CHECK(r.error.empty());
            INFO(r.error);
            logs.push_back(r.log);
        }
        const auto d = test::collect(logs);
        CHECK(d.duplicates() == 0);
        CHECK(d.missing(1, per_producer).empty());
        CHECK(d.missing(2, per_producer).empty());
        CHECK(d.total == 2 * per_producer);
    }
    test::require_gone(name);
}

namespace {

// A typed queue's producer (Producer<TypedMessage>), rotating through the push flavours.
void produce_typed(const std::string& name, std::uint32_t id, std::uint64_t count, std::string& error) {
    try {
        Producer<test::TypedMessage> tx(name);
        std::vector<test::TypedMessage> batch;
        for (std::uint64_t seq = 0; seq < count;) {
            switch (seq % 6) {
                case 0: tx.push(test::make_typed_message(id, seq++)); break;
                case 1:
                    while (!tx.try_push(test::make_typed_message(id, seq))) std::this_thread::yield();
                    ++seq;
                    break;
                case 2:
                    while (!tx.push_for(test::make_typed_message(id, seq), 2ms)) {
                    }
                    ++seq;
                    break;
                case 3: {
                    auto slot = tx.reserve(sizeof(test::TypedMessage));
                    test::fill_message(slot.span(), id, seq++);
                    slot.commit();
                    break;
                }
                default: {  // batches of up to 11 (one publication each; more than the ring holds)
                    batch.clear();
                    for (std::uint64_t k = 0; k < 11 && seq + k < count; ++k) batch.push_back(test::make_typed_message(id, seq + k));
                    std::size_t done = seq % 6 == 4 ? 0 : tx.try_push_n(batch);
                    if (done < batch.size()) tx.push_n(std::span<const test::TypedMessage>(batch).subspan(done));
                    seq += batch.size();
                    break;
                }
            }
        }
        tx.close();
    } catch (const std::exception& e) {
        error = std::string("producer ") + std::to_string(id) + ": " + e.what();
    }
}

}  // namespace

TEST_CASE("Threads hammering a typed queue deliver every message exactly once and in order", "[stress]") {
    const std::size_t slots = GENERATE(std::size_t{2}, std::size_t{8}, std::size_t{1024});
    INFO(slots << " slots");
    const std::uint64_t count = 200000 * test::stress_scale();
    const std::string name = test::unique_name("typedthreads");
    test::ShmGuard guard{name};
    {
        QueueOptions o;
        o.producers = Endpoints::one;
        o.consumers = Endpoints::one;
        o.max_messages = slots;
        auto q = Queue::create<test::TypedMessage>(name, o);
        REQUIRE(q.typed());
        ConsumerResult result;
        std::string producer_error;
        std::thread consumer(consume<test::TypedMessage>, name, std::ref(result));
        std::thread producer(produce_typed, name, 1u, count, std::ref(producer_error));
        BreakQueueWhenLate watchdog(name);
        {
            const test::HangGuard hang(name, 150s, "joining the typed stress threads");
            producer.join();
            consumer.join();
        }
        REQUIRE_FALSE(watchdog.finish());  // else the threads hung until the queue was broken after 120 s
        CHECK(producer_error.empty());
        CHECK(result.error.empty());
        INFO(producer_error << result.error);
        std::string why;
        const bool ordered = test::per_producer_order(result.log, false, &why);
        INFO(why);
        CHECK(ordered);
        const auto d = test::collect({result.log});
        CHECK(d.total == count);
        CHECK(d.duplicates() == 0);
        CHECK(d.missing(1, count).empty());
        const auto s = q.stats();
        CHECK(s.ended);
        CHECK(s.messages_in == count);
        CHECK(s.messages_out == count);
        CHECK(s.bytes_out == count * sizeof(test::TypedMessage));
    }
    test::require_gone(name);
}
