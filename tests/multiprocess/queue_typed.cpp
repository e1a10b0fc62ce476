// Typed fixed-slot SPSC queues (Queue::create<T>) across real processes: the crash
// guarantees of the SPSC byte ring hold unchanged. A producer killed mid-stream leaves
// every committed message delivered and the stream ends with producer_died; a consumer
// killed mid-stream is replaced and the replacement gets the rest, the message in flight
// at most once again; a producer blocked on a full typed queue whose consumer was killed
// gives up with consumer_died; and a wrong endpoint in another process is refused.
#include "queue_catch.hpp"
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <fstream>
#include <string>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

using shmpipe::test::kill_and_reap;
using shmpipe::test::report_of;
using shmpipe::test::TypedMessage;
using shmpipe::test::wait_log;

Queue create_typed(const std::string& name, std::size_t slots) {
    QueueOptions o;
    o.producers = Endpoints::one;
    o.consumers = Endpoints::one;
    o.max_messages = slots;
    auto q = Queue::create<TypedMessage>(name, o);
    REQUIRE(q.typed());
    return q;
}

}  // namespace

TEST_CASE("A typed queue's producer killed while pushing: everything it committed is delivered, then the stream ends",
          "[multiprocess]") {
    const std::string name = test::unique_name("tpkill");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = create_typed(name, 128);
        test::SharedLog::create(dir.file("plog"));
        test::SharedLog::create(dir.file("clog"));
        auto consumer = test::spawn_queue_peer({"consume", name, "--typed", "--tolerate-deaths", "--log", dir.file("clog"),
                                                "--out", dir.file("r"), "--delay-us", "20"});
        auto producer = test::spawn_queue_peer({"produce-forever", name, "4", "40", "--typed", "--log", dir.file("plog")});
        wait_log(test::SharedLog::open(dir.file("plog")), 3000, "the producer to commit 3000 messages to " + name);
        kill_and_reap(producer, "the producer");
        CHECK(consumer.wait_or_throw(20s, "the consumer to drain " + name + " and see the end") == 0);
        const auto committed = test::SharedLog::open(dir.file("plog")).size();
        const auto log = test::SharedLog::open(dir.file("clog")).snapshot();
        const auto r = report_of(dir.file("r"));
        INFO("consumer: " << r.error << "; producer committed " << committed << ", consumer got " << log.size());
        CHECK(r.number("producer_died") == 1);
        CHECK_THAT(r.error, Catch::Contains(name) && Catch::Contains("pid " + std::to_string(producer.pid())));
        const auto d = test::collect({log});
        CHECK(d.duplicates() == 0);
        CHECK(d.missing(4, committed).empty());  // nothing committed is lost
        CHECK(d.beyond(4, committed) <= 1);      // at most the one committed as it was killed
        std::string why;
        const bool ordered = test::per_producer_order(log, false, &why);
        INFO(why);
        CHECK(ordered);
        const auto s = q.stats();
        CHECK(s.producers_dead == 1);
        CHECK(s.ended);
        CHECK(s.messages_out == log.size());  // exact at rest (T2)
        CHECK(s.messages_in == log.size());
    }
    test::require_gone(name);
}

TEST_CASE("A typed queue's consumer killed mid-stream: its replacement gets the rest, the in-flight message again",
          "[multiprocess]") {
    const std::string name = test::unique_name("tcre");
    test::ShmGuard guard{name};
    test::TempDir dir;
    constexpr std::uint64_t kCount = 20000;
    const bool peek = GENERATE(true, false);  // holding a ReadSlot, or between pops
    INFO((peek ? "peek" : "pop"));
    {
        auto q = create_typed(name, 256);
        test::SharedLog::create(dir.file("l1"));
        test::SharedLog::create(dir.file("l2"));
        std::vector<std::string> first_args{"consume", name, "--typed", "--log", dir.file("l1"), "--delay-us", "10"};
        if (peek) first_args.push_back("--peek");
        auto first = test::spawn_queue_peer(first_args);
        auto producer = test::spawn_queue_peer({"produce", name, "9", std::to_string(kCount), "40", "--typed"});
        wait_log(test::SharedLog::open(dir.file("l1")), kCount / 5, "the first consumer of " + name + " to receive a fifth");
        kill_and_reap(first, "the first consumer");
        auto second = test::spawn_queue_peer({"consume", name, "--typed", "--allow-redelivery", "--log", dir.file("l2"),
                                              "--out", dir.file("r2")});
        CHECK(producer.wait_or_throw(60s, "the producer to finish pushing to " + name) == 0);
        CHECK(second.wait_or_throw(30s, "the replacement consumer to see the end of " + name) == 0);
        const auto l1 = test::SharedLog::open(dir.file("l1")).snapshot();
        const auto l2 = test::SharedLog::open(dir.file("l2")).snapshot();
        const auto d = test::collect({l1, l2});
        CHECK(d.missing(9, kCount).empty());
        CHECK(d.duplicates() <= 1);
        if (d.duplicates() == 1) CHECK(l2.front() == l1.back());  // only the in-flight message, redelivered first
        std::vector<std::uint64_t> joined = l1;
        joined.insert(joined.end(), l2.begin(), l2.end());
        CHECK(test::per_producer_order(joined, true));
        const auto s = q.stats();
        CHECK(s.messages_in == kCount);
        CHECK(s.depth == 0);
    }
    test::require_gone(name);
}

TEST_CASE("A producer blocked on a full typed queue whose consumer was killed gives up with consumer_died",
          "[multiprocess]") {
    const std::string name = test::unique_name("tcgone");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = create_typed(name, 16);
        // An untyped consumer (Consumer<>) in another process is refused, naming the queue (T3).
        auto untyped = test::spawn_queue_peer({"attach", name, "consumer", "--out", dir.file("attach")});
        CHECK(untyped.wait_or_throw(10s, "an untyped consumer of " + name + " to be refused") ==
              10 + static_cast<int>(errc::type_mismatch));
        std::ifstream attach_out(dir.file("attach"));
        std::string text;
        std::getline(attach_out, text);
        CHECK_THAT(text, Catch::Contains(name) && Catch::Contains("typed queue"));
        test::SharedLog::create(dir.file("clog"));
        auto consumer = test::spawn_queue_peer({"consume", name, "--typed", "--peek", "--log", dir.file("clog"),
                                                "--delay-us", "1000000"});
        test::SharedLog::create(dir.file("plog"));
        auto producer = test::spawn_queue_peer({"produce", name, "10", "1000000", "40", "--typed", "--log", dir.file("plog")});
        wait_log(test::SharedLog::open(dir.file("clog")), 1, "the typed consumer of " + name + " to take a message");
        REQUIRE(test::wait_until([&] { return q.stats().sleepers >= 1; }, 10s));  // the producer: full, asleep
        kill_and_reap(consumer, "the only consumer");
        CHECK(producer.wait_or_throw(10s, "the blocked producer to notice that no consumer of " + name + " is left") == 3);
        CHECK(test::SharedLog::open(dir.file("plog")).size() >= 16);
    }
    test::require_gone(name);
}
