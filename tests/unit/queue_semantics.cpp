// Python semantics of queues, in one process: when the stream ends (seal, expected
// producers, one producer), sizing in messages, qsize/empty/full, movable endpoints,
// anonymous objects, timeouts of any duration, task_done's checks, and the inspector's
// `closed`. The cross-process halves are in tests/multiprocess/queue_semantics.cpp.
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/barrier.hpp>
#include <shmpipe/condition.hpp>
#include <shmpipe/detail/deadline.hpp>
#include <shmpipe/event.hpp>
#include <shmpipe/inspect.hpp>
#include <shmpipe/mutex.hpp>
#include <shmpipe/pipe.hpp>
#include <shmpipe/queue.hpp>
#include <shmpipe/semaphore.hpp>
#include <shmpipe/shared_array.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

auto code_is(errc c) {
    return Catch::Predicate<Error>([c](const Error& e) { return e.code() == c; }, "error code");
}

QueueOptions many_queue() {
    QueueOptions o;
    o.capacity = 4096;
    o.max_message = 64;
    return o;  // many producers, many consumers, no expected count
}

std::string state_of(const std::string& name) {
    const auto info = inspect_object(name);
    REQUIRE(info);
    return to_string(info->state);
}

}  // namespace

TEST_CASE("A many-producer queue with neither an expected count nor a seal never ends by itself", "[unit]") {
    const std::string name = test::unique_name("noend");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, many_queue());
        Consumer<int> sut(name);
        {
            Producer<int> first(name);  // a short-lived first producer: attach, push, close
            first.push(1);
        }
        CHECK(sut.pop_for(50ms) == 1);
        CHECK_FALSE(sut.pop_for(100ms).has_value());  // waits, as Python's get() does
        CHECK_FALSE(sut.ended());
        CHECK_FALSE(q.stats().ended);
        {
            Producer<int> second(name);  // a later producer is not a revival: the stream never ended
            second.push(2);
        }
        CHECK(sut.pop_for(1s) == 2);
        CHECK_FALSE(sut.ended());
    }
    test::require_gone(name);
}

TEST_CASE("A sealed queue ends once every attached producer closed, and refuses new producers", "[unit]") {
    const std::string name = test::unique_name("seal");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, many_queue());
        Consumer<int> sut(name);
        Producer<int> a(name);
        Producer<int> b(name);
        a.push(1);
        a.close();
        q.seal();
        CHECK(q.sealed());
        CHECK(q.stats().sealed);
        CHECK_THROWS_MATCHES(Producer<int>(name), Error, code_is(errc::closed));
        try {
            Producer<int> late(name);
        } catch (const Error& e) {
            CHECK_THAT(e.what(), Catch::Contains(name) && Catch::Contains("sealed"));
        }
        CHECK(sut.pop_for(1s) == 1);
        CHECK_FALSE(sut.pop_for(50ms).has_value());  // b is still attached: not the end
        CHECK_FALSE(sut.ended());
        b.push(2);
        b.close();
        CHECK(sut.pop_for(1s) == 2);
        std::optional<int> got = 7;
        REQUIRE(test::finishes_within(name, 5s, [&] { got = sut.pop(); }));
        CHECK_FALSE(got);
        CHECK(sut.ended());
        CHECK(q.stats().ended);
    }
    test::require_gone(name);
}

TEST_CASE("Sealing from an open() handle wakes a consumer blocked in pop", "[unit]") {
    const std::string name = test::unique_name("sealwake");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, many_queue());
        Consumer<int> sut(name);
        std::thread sealer([&] {
            std::this_thread::sleep_for(50ms);
            Queue::open(name).seal();  // no producer ever attached: nobody can come now
        });
        std::optional<int> got = 7;
        const bool finished = test::finishes_within(name, 5s, [&] { got = sut.pop(); });
        sealer.join();
        REQUIRE(finished);
        CHECK_FALSE(got);
        CHECK(sut.ended());
    }
    test::require_gone(name);
}

TEST_CASE("A queue made for one producer ends when that producer closes", "[unit]") {
    const std::string name = test::unique_name("oneprod");
    test::ShmGuard guard{name};
    {
        QueueOptions o = many_queue();
        o.producers = Endpoints::one;
        auto q = Queue::create(name, o);
        Consumer<int> sut(name);
        {
            Producer<int> tx(name);
            tx.push(5);
        }
        CHECK(sut.pop_for(1s) == 5);
        std::optional<int> got = 7;
        REQUIRE(test::finishes_within(name, 5s, [&] { got = sut.pop(); }));
        CHECK_FALSE(got);
    }
    test::require_gone(name);
}

TEST_CASE("The inspector shows closed for a drained queue whose producers all closed", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("closed");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 4096, 64, 1));
        Consumer<int> rx(name);
        {
            Producer<int> tx(name);
            tx.push(1);
            CHECK(state_of(name) == "open");
        }
        CHECK(state_of(name) == "open");  // ended, but a message still waits
        CHECK(rx.pop_for(1s) == 1);
        CHECK(state_of(name) == "closed");
        CHECK(q.stats().ended);
    }
    test::require_gone(name);
}

TEST_CASE("max_messages sizes a queue in messages; impossible geometry names the real cost", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("maxmsg");
    test::ShmGuard guard{name};
    {
        QueueOptions o = test::queue_options(kind, 64, 100);  // capacity is ignored with max_messages
        o.max_messages = 1000;
        auto q = Queue::create(name, o);
        Producer<> tx(name);
        const std::vector<std::byte> m(100, std::byte{3});
        for (int i = 0; i < 1000; ++i) REQUIRE(tx.try_push(m));
        CHECK(tx.qsize() == 1000);
        CHECK_FALSE(tx.empty());
    }
    SECTION("the MPMC error names the 64-byte cell a 16-byte message costs") {
        QueueOptions o = test::queue_options(Endpoints::many, 100, 16);
        CHECK_THROWS_WITH(Queue::create(name, o), Catch::Contains("cell of 64 bytes") && Catch::Contains(name) &&
                                                      Catch::Contains("max_messages"));
    }
    SECTION("the SPSC error names the record a message costs") {
        QueueOptions o = test::queue_options(Endpoints::one, 4096, 3000);
        CHECK_THROWS_WITH(Queue::create(name, o), Catch::Contains("up to 3008 bytes") && Catch::Contains("6016"));
    }
    test::require_gone(name);
}

TEST_CASE("qsize, empty and full follow the queue from both ends", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("qsize");
    test::ShmGuard guard{name};
    {
        QueueOptions o = test::queue_options(kind, 4096, 64);
        o.max_messages = 4;
        auto q = Queue::create(name, o);
        Producer<int> tx(name);
        Consumer<int> rx(name);
        CHECK(rx.empty());
        CHECK(tx.qsize() == 0);
        CHECK_FALSE(tx.full());
        int pushed = 0;
        while (tx.try_push(pushed)) ++pushed;
        CHECK(pushed >= 4);
        CHECK(tx.full());
        CHECK(rx.full());
        CHECK(rx.qsize() == static_cast<std::size_t>(pushed));
        // full() means a max_message push would not fit now: the SPSC ring frees bytes
        // (a 4-byte int costs a 16-byte record, max_message 64 needs 72), MPMC a cell.
        int popped = 0;
        while (tx.full() && popped < pushed) CHECK(rx.try_pop() == popped++);
        CHECK_FALSE(tx.full());
        CHECK(popped <= 5);
        CHECK(tx.qsize() == static_cast<std::size_t>(pushed - popped));
    }
    test::require_gone(name);
}

TEST_CASE("A 100 KiB string pushed into a default queue throws at once, saying what max_message takes it",
          "[unit]") {
    const std::string name = test::unique_name("default");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name);
        Producer<std::string> tx(name);
        const std::string big(100 * 1024, 'x');
        const std::size_t need = Codec<std::string>::size(big);
        const auto t0 = std::chrono::steady_clock::now();
        CHECK_THROWS_WITH(tx.push(big), Catch::Contains("QueueOptions::max_message = " + std::to_string(need)));
        CHECK(std::chrono::steady_clock::now() - t0 < 5s);
        QueueOptions o;
        o.max_message = need;
        const std::string name2 = name + "-big";
        test::ShmGuard guard2{name2};
        auto q2 = Queue::create(name2, o);
        Producer<std::string> tx2(name2);
        Consumer<std::string> rx2(name2);
        tx2.push(big);
        CHECK(rx2.pop_for(1s) == big);
    }
    test::require_gone(name);
}

TEST_CASE("Endpoints move like values; a slot outstanding across a move stays valid", "[unit]") {
    const std::string name = test::unique_name("move");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::many, 4096, 64, 1));
        std::vector<Consumer<int>> inputs;
        inputs.emplace_back(name);
        inputs.emplace_back(name);
        inputs.push_back(Consumer<int>(name));  // grows: moves the first two
        Producer<> tx(name);
        auto slot = tx.reserve(sizeof(int));
        Producer<> moved = std::move(tx);  // the slot keeps pointing at the moved core
        const int v = 42;
        std::memcpy(slot.span().data(), &v, sizeof v);
        slot.commit();
        CHECK(inputs[2].pop_for(1s) == 42);
        CHECK_THROWS_MATCHES(tx.push(std::span<const std::byte>()), Error, code_is(errc::invalid_state));
        tx.close();  // allowed on a moved-from endpoint
        Consumer<int> other(name);
        other = std::move(inputs[0]);  // assigning closes the endpoint `other` held
        CHECK(q.stats().consumers == 3);
        moved.close();
        for (auto& c : inputs) {
            if (&c != &inputs[0]) CHECK_FALSE(c.pop_for(1s).has_value());
        }
        CHECK_FALSE(other.pop_for(1s).has_value());
        CHECK(other.ended());
    }
    test::require_gone(name);
}

TEST_CASE("Anonymous objects get unique, visible names and are removed with their owner", "[unit]") {
    std::set<std::string> names;
    {
        auto q1 = Queue::create();
        auto q2 = Queue::create(test::queue_options(Endpoints::one));
        auto m = Mutex::create();
        auto rm = RecursiveMutex::create();
        auto s = Semaphore::create(3);
        auto e = Event::create();
        auto c = Condition::create();
        auto b = Barrier::create(2);
        auto a = SharedArray<int>::create(8);
        auto v = SharedValue<bool>::create(true);
        auto v0 = SharedValue<long>::create();
        for (const std::string* n : {&q1.name(), &q2.name(), &m.name(), &rm.name(), &s.name(), &e.name(), &c.name(),
                                     &b.name(), &a.name(), &v.name(), &v0.name()}) {
            INFO(*n);
            CHECK(std::filesystem::exists("/dev/shm/shmpipe." + *n));
            CHECK(n->rfind("anon-", 0) == 0);
            names.insert(*n);
        }
        CHECK(names.size() == 11);
        CHECK(v.load() == true);
        Producer<int> tx(q1.name());
        Consumer<int> rx(q1.name());
        tx.push(9);
        CHECK(rx.pop_for(1s) == 9);
        CHECK(s.try_acquire());
    }
    for (const auto& n : names) CHECK_FALSE(std::filesystem::exists("/dev/shm/shmpipe." + n));
}

TEST_CASE("A timeout of any duration rounds up to the next nanosecond", "[unit]") {
    using detail::timeout_ns;
    CHECK(timeout_ns(std::chrono::duration<double>(2.1)).count() == 2'100'000'000);
    CHECK(timeout_ns(0.5s).count() == 500'000'000);
    CHECK(timeout_ns(std::chrono::duration<double, std::nano>(1.2)).count() == 2);
    CHECK(timeout_ns(std::chrono::duration<float, std::micro>(0.25f)).count() == 250);
    CHECK(timeout_ns(-3s).count() == 0);
    CHECK(timeout_ns(std::chrono::duration<double>(std::nan(""))).count() == 0);
    CHECK(timeout_ns(std::chrono::duration<double>(1e300)) == std::chrono::nanoseconds::max());
    CHECK(timeout_ns(std::chrono::hours::max()) == std::chrono::nanoseconds::max());
    CHECK(detail::deadline_after(std::chrono::hours::max()) >= static_cast<std::uint64_t>(INT64_MAX));
}

TEST_CASE("Every ipc _for takes floating-point durations", "[unit]") {
    const std::string name = test::unique_name("dur");
    test::ShmGuard guard{name};
    const std::chrono::duration<double> d(0.05);
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::many, 4096, 64, 1));
        Producer<int> tx(name);
        Consumer<int> rx(name);
        CHECK(tx.push_for(1, std::chrono::duration<double>(2.1)));
        CHECK(rx.pop_for(0.5s) == 1);
        const auto t0 = std::chrono::steady_clock::now();
        CHECK_FALSE(rx.pop_for(d).has_value());
        CHECK(std::chrono::steady_clock::now() - t0 >= 50ms);
        CHECK_FALSE(rx.peek_for(d).has_value());
        auto s = Semaphore::create(0);
        CHECK_FALSE(s.try_acquire_for(d));
        auto e = Event::create();
        CHECK_FALSE(e.wait_for(d));
        auto m = Mutex::create();
        CHECK(m.try_lock_for(0.5s));
        m.unlock();
        auto c = Condition::create();
        m.lock();
        CHECK_FALSE(c.wait_for(m, d));
        m.unlock();
        auto [a, b] = Pipe::create();
        CHECK_FALSE(b.poll(d));
    }
    test::require_gone(name);
}

TEST_CASE("task_done more often than messages taken is refused, and only on a joinable queue", "[unit]") {
    const std::string name = test::unique_name("taskdone");
    test::ShmGuard guard{name};
    {
        QueueOptions o = test::queue_options(Endpoints::many, 4096, 64, 1);
        o.joinable = true;
        auto q = Queue::create(name, o);
        Producer<int> tx(name);
        Consumer<int> rx(name);
        CHECK_THROWS_MATCHES(rx.task_done(), Error, code_is(errc::invalid_argument));
        tx.push(1);
        tx.push(2);
        CHECK_FALSE(q.join_for(std::chrono::duration<double>(0.02)));
        CHECK(rx.pop_for(1s) == 1);
        rx.task_done();
        CHECK_THROWS_MATCHES(rx.task_done(), Error, code_is(errc::invalid_argument));
        CHECK_FALSE(tx.join_for(20ms));  // message 2 is not done yet
        {
            auto slot = rx.try_peek();
            REQUIRE(slot);
            rx.task_done();  // a peeked message counts as taken
        }
        CHECK(q.join_for(1s));
        CHECK(tx.join_for(1s));
    }
    SECTION("not joinable") {
        auto q = Queue::create(name, test::queue_options(Endpoints::many, 4096, 64, 1));
        Consumer<int> rx(name);
        CHECK_THROWS_MATCHES(rx.task_done(), Error, code_is(errc::invalid_state));
        CHECK_THROWS_MATCHES(q.join(), Error, code_is(errc::invalid_state));
    }
    test::require_gone(name);
}
