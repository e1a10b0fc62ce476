// Processes that die (SIGKILL) while attached to a queue: producers mid-stream or holding a
// reservation, consumers holding a message, corrupt ring indices met by a fresh endpoint.
// The survivors must go on, nothing committed is lost (except the documented MPMC
// in-flight message of a dead consumer), nothing half-written is delivered, nothing hangs.
#include "queue_catch.hpp"
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/detail/queue_layout.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

using shmpipe::test::kill_and_reap;
using shmpipe::test::report_of;
using shmpipe::test::wait_log;

}  // namespace

TEST_CASE("A killed producer's messages are drained, then pop throws producer_died naming its pid within a second",
          "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("pdeath");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = Queue::create(name, test::queue_options(kind, 64 * 1024, 128));
        test::SharedLog::create(dir.file("clog"));
        auto consumer = test::spawn_queue_peer({"consume", name, "--log", dir.file("clog"), "--out", dir.file("r")});
        auto producer = test::spawn_queue_peer({"produce", name, "3", "500", "var:128", "--hold"});
        wait_log(test::SharedLog::open(dir.file("clog")), 500, "the consumer to receive 500 messages of " + name);
        std::this_thread::sleep_for(100ms);  // the consumer is asleep in pop now
        const auto killed_at = std::chrono::steady_clock::now();
        kill_and_reap(producer, "the producer");
        CHECK(consumer.wait_or_throw(10s, "the consumer to report the producer's death") == 5);  // producer_died
        const auto r = report_of(dir.file("r"));
        INFO("consumer: " << r.error);
        CHECK(r.number("messages") == 500);
        CHECK(r.number("producer_died") == 1);
        CHECK_THAT(r.error, Catch::Contains(name) && Catch::Contains("pid " + std::to_string(producer.pid())));
        const auto noticed = std::chrono::nanoseconds(r.number("died_ns"));
        const auto delay = noticed - killed_at.time_since_epoch();  // both CLOCK_MONOTONIC
        INFO("death noticed after " << std::chrono::duration_cast<std::chrono::milliseconds>(delay).count() << " ms");
        CHECK(delay < 1s);
        const auto s = q.stats();
        CHECK(s.producers_dead == 1);
        CHECK(s.ended);  // the dead producer counts as done
    }
    test::require_gone(name);
}

TEST_CASE("A producer killed while pushing: everything it committed is delivered, then the stream ends",
          "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("pkill");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = Queue::create(name, test::queue_options(kind, 8192, 256));
        test::SharedLog::create(dir.file("plog"));
        test::SharedLog::create(dir.file("clog"));
        auto consumer = test::spawn_queue_peer({"consume", name, "--tolerate-deaths", "--log", dir.file("clog"), "--out", dir.file("r"),
                               "--delay-us", "20"});
        auto producer = test::spawn_queue_peer({"produce-forever", name, "4", "var:256", "--log", dir.file("plog")});
        wait_log(test::SharedLog::open(dir.file("plog")), 3000, "the producer to commit 3000 messages");
        kill_and_reap(producer, "the producer");
        CHECK(consumer.wait_or_throw(20s, "the consumer to drain " + name + " and see the end") == 0);
        const auto committed = test::SharedLog::open(dir.file("plog")).size();
        const auto log = test::SharedLog::open(dir.file("clog")).snapshot();
        const auto r = report_of(dir.file("r"));
        INFO("consumer: " << r.error << "; producer committed " << committed << ", consumer got " << log.size());
        CHECK(r.number("producer_died") == 1);
        const auto d = test::collect({log});
        CHECK(d.duplicates() == 0);
        CHECK(d.missing(4, committed).empty());  // nothing committed is lost
        CHECK(d.beyond(4, committed) <= 1);      // at most the one committed as it was killed
        std::string why;
        const bool ordered = test::per_producer_order(log, false, &why);
        INFO(why);
        CHECK(ordered);
    }
    test::require_gone(name);
}

TEST_CASE("A producer killed holding a reservation never delivers it, and the others go on", "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("pslot");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto o = test::queue_options(kind, 4096, 64);
        o.expected_producers = 2;
        auto q = Queue::create(name, o);
        test::SharedLog::create(dir.file("hlog"));
        test::SharedLog::create(dir.file("clog"));
        auto holder = test::spawn_queue_peer({"reserve-hold", name, "48", "--log", dir.file("hlog")});
        wait_log(test::SharedLog::open(dir.file("hlog")), 1, "a producer to reserve a slot in " + name);
        auto consumer = test::spawn_queue_peer({"consume", name, "--tolerate-deaths", "--log", dir.file("clog"), "--out", dir.file("r")});
        // SPSC has one producer place: the second producer comes after the holder's death.
        if (kind == Endpoints::one) kill_and_reap(holder, "the reserving producer");
        auto producer = test::spawn_queue_peer({"produce", name, "5", "300", "var:64"});
        if (kind == Endpoints::many) {
            std::this_thread::sleep_for(200ms);  // the consumer is stuck behind the reserved cell
            kill_and_reap(holder, "the reserving producer");
        }
        CHECK(producer.wait_or_throw(30s, "the second producer of " + name) == 0);
        CHECK(consumer.wait_or_throw(30s, "the consumer to skip the dead reservation and see the end") == 0);
        const auto r = report_of(dir.file("r"));
        INFO("consumer: " << r.error);
        CHECK(r.number("producer_died") >= 1);
        const auto d = test::collect({test::SharedLog::open(dir.file("clog")).snapshot()});
        CHECK(d.total == 300);  // only whole messages: bad content would have failed the consumer (exit 6)
        CHECK(d.missing(5, 300).empty());
        if (kind == Endpoints::many) CHECK(q.stats().abandoned >= 1);
    }
    test::require_gone(name);
}

TEST_CASE("An MPMC consumer killed holding a message: the others and the producer go on, at most it is lost",
          "[multiprocess]") {
    const std::string name = test::unique_name("cdeath");
    test::ShmGuard guard{name};
    test::TempDir dir;
    constexpr std::uint64_t kCount = 3000;
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::many, 16 * 64, 64));  // 16 cells: the producer laps soon
        test::SharedLog::create(dir.file("hlog"));
        auto holder = test::spawn_queue_peer({"peek-hold", name, "--log", dir.file("hlog")});
        std::vector<test::Peer> consumers;
        for (int i = 0; i < 2; ++i) {
            test::SharedLog::create(dir.file("clog" + std::to_string(i)));
            consumers.push_back(test::spawn_queue_peer({"consume", name, "--peek", "--log", dir.file("clog" + std::to_string(i)), "--out",
                                       dir.file("r" + std::to_string(i))}));
        }
        auto producer = test::spawn_queue_peer({"produce", name, "6", std::to_string(kCount), "var:64", "--delay-us", "50"});
        wait_log(test::SharedLog::open(dir.file("hlog")), 1, "the holding consumer to take a message");
        std::this_thread::sleep_for(50ms);
        kill_and_reap(holder, "the holding consumer");
        CHECK(producer.wait_or_throw(60s, "the producer to get past the dead consumer's cell") == 0);
        std::vector<std::vector<std::uint64_t>> logs{test::SharedLog::open(dir.file("hlog")).snapshot()};
        for (int i = 0; i < 2; ++i) {
            CHECK(consumers[i].wait_or_throw(30s, "consumer " + std::to_string(i) + " to see the end") == 0);
            logs.push_back(test::SharedLog::open(dir.file("clog" + std::to_string(i))).snapshot());
        }
        const auto d = test::collect(logs);
        // The holder logged its message before dying with it: all were seen exactly once.
        CHECK(d.duplicates() == 0);
        CHECK(d.missing(6, kCount).empty());
        CHECK(q.stats().lost <= 1);
    }
    test::require_gone(name);
}

TEST_CASE("An MPMC consumer killed mid-stream loses at most its in-flight message", "[multiprocess]") {
    const std::string name = test::unique_name("ckill");
    test::ShmGuard guard{name};
    test::TempDir dir;
    constexpr std::uint64_t kCount = 20000;
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::many, 64 * 64, 64));
        std::vector<test::Peer> consumers;
        for (int i = 0; i < 3; ++i) {
            test::SharedLog::create(dir.file("clog" + std::to_string(i)));
            consumers.push_back(test::spawn_queue_peer({"consume", name, "--peek", "--log", dir.file("clog" + std::to_string(i)), "--out",
                                       dir.file("r" + std::to_string(i)), "--delay-us", "10"}));
        }
        auto producer = test::spawn_queue_peer({"produce", name, "8", std::to_string(kCount), "var:64"});
        wait_log(test::SharedLog::open(dir.file("clog1")), kCount / 10, "consumer 1 to receive a tenth of the stream");
        kill_and_reap(consumers[1], "consumer 1");
        CHECK(producer.wait_or_throw(60s, "the producer to finish despite the dead consumer") == 0);
        std::vector<std::vector<std::uint64_t>> logs;
        for (int i = 0; i < 3; ++i) {
            if (i != 1) CHECK(consumers[i].wait_or_throw(30s, "consumer " + std::to_string(i) + " to see the end") == 0);
            logs.push_back(test::SharedLog::open(dir.file("clog" + std::to_string(i))).snapshot());
        }
        const auto d = test::collect(logs);
        CHECK(d.duplicates() == 0);
        CHECK(d.missing(8, kCount).size() <= 1);
        CHECK(q.stats().lost <= 1);
    }
    test::require_gone(name);
}

TEST_CASE("An SPSC consumer killed mid-stream: its replacement gets the rest, the in-flight message again",
          "[multiprocess]") {
    const std::string name = test::unique_name("spscre");
    test::ShmGuard guard{name};
    test::TempDir dir;
    constexpr std::uint64_t kCount = 20000;
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one, 8192, 256));
        test::SharedLog::create(dir.file("l1"));
        test::SharedLog::create(dir.file("l2"));
        auto first = test::spawn_queue_peer({"consume", name, "--peek", "--log", dir.file("l1"), "--delay-us", "10"});
        auto producer = test::spawn_queue_peer({"produce", name, "9", std::to_string(kCount), "var:256"});
        wait_log(test::SharedLog::open(dir.file("l1")), kCount / 5, "the first consumer to receive a fifth");
        kill_and_reap(first, "the first consumer");
        auto second = test::spawn_queue_peer({"consume", name, "--peek", "--allow-redelivery", "--log", dir.file("l2"), "--out",
                             dir.file("r2")});
        CHECK(producer.wait_or_throw(60s, "the producer to finish") == 0);
        CHECK(second.wait_or_throw(30s, "the replacement consumer to see the end") == 0);
        const auto l1 = test::SharedLog::open(dir.file("l1")).snapshot();
        const auto l2 = test::SharedLog::open(dir.file("l2")).snapshot();
        const auto d = test::collect({l1, l2});
        CHECK(d.missing(9, kCount).empty());
        CHECK(d.duplicates() <= 1);
        if (d.duplicates() == 1) CHECK(l2.front() == l1.back());  // only the in-flight message, redelivered first
        std::vector<std::uint64_t> joined = l1;
        joined.insert(joined.end(), l2.begin(), l2.end());
        CHECK(test::per_producer_order(joined, true));
    }
    test::require_gone(name);
}

TEST_CASE("A producer blocked on a full queue whose consumers all died gives up with consumer_died",
          "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("cgone");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = Queue::create(name, test::queue_options(kind, 4096, 64));
        test::SharedLog::create(dir.file("hold"));
        auto holder = test::spawn_queue_peer({"hold", name, "consumer", "--log", dir.file("hold")});
        wait_log(test::SharedLog::open(dir.file("hold")), 1, "a consumer to attach to " + name);
        test::SharedLog::create(dir.file("plog"));
        auto producer = test::spawn_queue_peer({"produce", name, "10", "1000000", "32", "--log", dir.file("plog")});
        REQUIRE(test::wait_until([&] { return q.stats().sleepers >= 1; }, 10s));  // full, asleep
        kill_and_reap(holder, "the only consumer");
        CHECK(producer.wait_or_throw(10s, "the blocked producer to notice that no consumer is left") == 3);
    }
    test::require_gone(name);
}

TEST_CASE("A replacement producer attaches to an SPSC queue after the first was killed", "[multiprocess]") {
    const std::string name = test::unique_name("preplace");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto o = test::queue_options(Endpoints::one, 4096, 64);
        o.expected_producers = 2;
        auto q = Queue::create(name, o);
        Consumer<> rx(name);
        test::SharedLog::create(dir.file("plog"));
        auto first = test::spawn_queue_peer({"produce", name, "1", "10", "32", "--hold", "--log", dir.file("plog")});
        wait_log(test::SharedLog::open(dir.file("plog")), 10, "the first producer to push 10 messages");
        kill_and_reap(first, "the first producer");
        auto second = test::spawn_queue_peer({"produce", name, "2", "10", "32"});
        CHECK(second.wait_or_throw(10s, "the replacement producer to attach and push") == 0);
        int messages = 0, deaths = 0;
        REQUIRE(test::finishes_within(name, 10s, [&] {
            for (;;) {
                try {
                    if (!rx.pop()) break;
                    ++messages;
                } catch (const Error& e) {
                    if (e.code() != errc::producer_died) throw;
                    ++deaths;
                }
            }
        }));
        CHECK(messages == 20);
        CHECK(deaths == 1);
    }
    test::require_gone(name);
}

TEST_CASE("A fresh endpoint meeting corrupt SPSC ring indices fails cleanly, never touching memory outside",
          "[multiprocess]") {
    const bool consumer_side = GENERATE(true, false);
    INFO((consumer_side ? "consumer, head misaligned near the ring end" : "producer, tail misaligned near the ring end"));
    const std::string name = test::unique_name("badindex");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one, 4096, 64));
        {
            auto seg = detail::Segment::open(name, "queue", detail::ObjectKind::spsc_queue);
            auto& ctl = detail::queue_control(seg.body());
            auto& ring = detail::ring_indices(seg.body());
            const std::uint64_t cap = ctl.capacity;
            if (consumer_side) {
                ring.head.store(cap - 4);  // a record header would straddle the end of the mapping
                ring.tail.store(cap + 60);
            } else {
                ring.head.store(cap - 4);
                ring.tail.store(cap - 4);
            }
        }
        auto sut = consumer_side ? test::spawn_queue_peer({"consume", name, "--out", dir.file("r")})
                                 : test::spawn_queue_peer({"push-size", name, "32", "--out", dir.file("r")});
        std::optional<int> code;
        if (consumer_side) {
            code = sut.wait_or_throw(10s, "the consumer facing a corrupt head");
        } else {
            code = sut.wait_for(2s);  // a producer may also block (queue looks full): not a crash
            if (!code) {
                sut.signal(SIGKILL);
                sut.wait_for(5s);
            }
        }
        const auto r = test::read_report(dir.file("r"));
        INFO("exit code " << (code ? *code : 0) << " (negative: killed by that signal); report: "
                          << (r ? r->error : std::string("none")));
        if (code) CHECK(*code >= 0);  // an error exit, not SIGSEGV/SIGBUS
        // A record position that is not 8-aligned cannot be valid: refuse it (corrupt), do not
        // read or write a record header that straddles the end of the ring. The endpoint is
        // refused when it attaches (exit 4), or at the latest when it reads (exit 2).
        if (code) CHECK((*code == 4 || *code == 2));
        if (r) CHECK_THAT(r->error, Catch::Contains("corrupt"));
        // The same refusal in this process, with the error checked.
        auto attach = [&] {
            if (consumer_side) {
                Consumer<> rx(name);
            } else {
                Producer<> tx(name);
            }
        };
        CHECK_THROWS_MATCHES(attach(), Error, Catch::Predicate<Error>([](const Error& e) {
                                 return e.code() == errc::corrupt &&
                                        std::string(e.what()).find("ring indices are inconsistent") != std::string::npos;
                             }));
    }
    test::require_gone(name);
}

TEST_CASE("A producer killed inside close(), right after its record was closed, leaves no stale count",
          "[multiprocess]") {
    // ProducerCore::close() first marks its endpoint record closed (Segment::close_endpoint),
    // then updates the queue's counters. We put a live producer in exactly the state a
    // SIGKILL between the two leaves behind, then kill it.
    const std::string name = test::unique_name("closekill");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one, 4096, 64));
        Consumer<> rx(name);
        test::SharedLog::create(dir.file("hold"));
        auto holder = test::spawn_queue_peer({"hold", name, "producer", "--log", dir.file("hold")});
        wait_log(test::SharedLog::open(dir.file("hold")), 1, "a producer to attach to " + name);
        {
            auto seg = detail::Segment::open(name, "queue", detail::ObjectKind::spsc_queue);
            bool found = false;
            for (std::uint32_t i = 0; i < seg.endpoint_count(); ++i) {
                const auto w = seg.endpoints()[i].word.load();
                if (detail::EndpointRecord::pid_of(w) == static_cast<std::uint32_t>(holder.pid()) &&
                    detail::EndpointRecord::state_of(w) == detail::EndpointState::open) {
                    seg.close_endpoint(i);
                    found = true;
                }
            }
            REQUIRE(found);
        }
        kill_and_reap(holder, "the producer");
        // The producer is gone: its place must be free, and the stream must end.
        std::optional<Bytes> got{Bytes{}};
        REQUIRE(test::finishes_within(name, 10s, [&] { got = rx.pop_for(3s); }));
        CHECK_FALSE(got.has_value());
        CHECK(rx.ended());
        std::string what;
        try {
            Producer<> again(name);
        } catch (const Error& e) {
            what = e.what();
        }
        CHECK(what.empty());
    }
    test::require_gone(name);
}

TEST_CASE("A dead producer stays accounted for when consumers are replaced until the endpoint table is full",
          "[multiprocess]") {
    const std::string name = test::unique_name("reaped");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one, 4096, 64));
        auto attach_and_kill = [&](const std::string& role, int n) {
            const std::string log = dir.file("hold" + std::to_string(n));
            test::SharedLog::create(log);
            auto holder = test::spawn_queue_peer({"hold", name, role, "--log", log});
            wait_log(test::SharedLog::open(log), 1, "a " + role + " to attach to " + name);
            kill_and_reap(holder, "the " + role);
        };
        attach_and_kill("producer", 0);  // dies without closing
        // Consumers come and go (each one killed) until the endpoint table has no free record.
        for (int i = 1; i <= 4; ++i) attach_and_kill("consumer", i);
        Consumer<> rx(name);
        // The dead producer must still be known as dead: a new producer may attach...
        std::string what;
        try {
            Producer<> again(name);
        } catch (const Error& e) {
            what = e.what();
        }
        CHECK(what.empty());
        // ...and the consumer hears of the death (then the end: both producers are done).
        std::error_code code;
        REQUIRE(test::finishes_within(name, 10s, [&] {
            try {
                (void)rx.pop_for(3s);
            } catch (const Error& e) {
                code = e.code();
            }
        }));
        CHECK(code == errc::producer_died);
        CHECK(q.stats().producers_dead == 1);
    }
    test::require_gone(name);
}
