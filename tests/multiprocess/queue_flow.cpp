// Queues between real processes (tests/support/peers/queue_peer.cpp): writer -> reader,
// fan-out, fan-in, end of stream, timeouts, the CPU a blocked endpoint burns, and errors
// seen by an attaching process. Results are checked on data (sequence numbers, content,
// checksums) and exit codes; every wait has a deadline.
#include "queue_catch.hpp"
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

using shmpipe::test::report_of;

}  // namespace

TEST_CASE("A writer process sends to a reader process in order with intact content", "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    const bool zero_copy = GENERATE(false, true);
    INFO(test::kind_label(kind) << (zero_copy ? " reserve/peek" : " push/pop"));
    const std::string name = test::unique_name("w2r");
    test::ShmGuard guard{name};
    test::TempDir dir;
    constexpr std::uint64_t kCount = 20000;
    {
        auto q = Queue::create(name, test::queue_options(kind, 16384, 1000));
        test::SharedLog::create(dir.file("clog"));
        std::vector<std::string> cargs{"consume", name, "--expect", std::to_string(kCount), "--out", dir.file("report"),
                                       "--log", dir.file("clog")};
        std::vector<std::string> pargs{"produce", name, "7", std::to_string(kCount), "var:1000"};
        if (zero_copy) {
            cargs.push_back("--peek");
            pargs.push_back("--reserve");
        }
        auto reader = test::spawn_queue_peer(cargs);
        auto writer = test::spawn_queue_peer(pargs);
        CHECK(writer.wait_or_throw(60s, "the writer to push " + std::to_string(kCount) + " messages to " + name) == 0);
        CHECK(reader.wait_or_throw(60s, "the reader to drain " + name + " and see the end of stream") == 0);
        const auto r = report_of(dir.file("report"));
        INFO("reader: " << r.error);
        CHECK(r.number("messages") == kCount);
        CHECK(r.number("checksum") == test::expected_checksum(7, kCount));
        CHECK(r.number("ended") == 1);
        const auto log = test::SharedLog::open(dir.file("clog")).snapshot();
        REQUIRE(log.size() == kCount);
        for (std::uint64_t i = 0; i < kCount; ++i) REQUIRE(log[i] == test::log_entry(7, i));
        const auto s = q.stats();
        CHECK(s.depth == 0);
        CHECK(s.ended);
    }
    test::require_gone(name);
}

TEST_CASE("Fan-out: every message reaches exactly one of several consumer processes", "[multiprocess]") {
    const std::string name = test::unique_name("fanout");
    test::ShmGuard guard{name};
    test::TempDir dir;
    constexpr std::uint64_t kCount = 30000;
    constexpr int kConsumers = 3;
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::many, 64 * 64, 64));
        std::vector<test::Peer> consumers;
        for (int i = 0; i < kConsumers; ++i) {
            const std::string n = std::to_string(i);
            test::SharedLog::create(dir.file("log" + n));
            consumers.push_back(test::spawn_queue_peer({"consume", name, "--log", dir.file("log" + n), "--out", dir.file("report" + n)}));
        }
        auto producer = test::spawn_queue_peer({"produce", name, "1", std::to_string(kCount), "var:64"});
        CHECK(producer.wait_or_throw(60s, "the producer to push " + std::to_string(kCount) + " messages to " + name) == 0);
        std::vector<std::vector<std::uint64_t>> logs;
        std::uint64_t checksum = 0;
        for (int i = 0; i < kConsumers; ++i) {
            const std::string n = std::to_string(i);
            CHECK(consumers[i].wait_or_throw(60s, "consumer " + n + " to see the end of " + name) == 0);
            logs.push_back(test::SharedLog::open(dir.file("log" + n)).snapshot());
            const auto r = report_of(dir.file("report" + n));
            INFO("consumer " << n << ": " << r.error);
            CHECK(r.number("messages") == logs.back().size());
            checksum += r.number("checksum");
            std::string why;
            const bool ordered = test::per_producer_order(logs.back(), false, &why);  // positions only grow
            INFO(why);
            CHECK(ordered);
        }
        const auto d = test::collect(logs);
        CHECK(d.total == kCount);
        CHECK(d.duplicates() == 0);
        CHECK(d.missing(1, kCount).empty());
        CHECK(checksum == test::expected_checksum(1, kCount));
    }
    test::require_gone(name);
}

TEST_CASE("Fan-in: several producer processes reach one consumer, each producer's order kept", "[multiprocess]") {
    const std::string name = test::unique_name("fanin");
    test::ShmGuard guard{name};
    test::TempDir dir;
    constexpr std::uint64_t kPerProducer = 8000;
    constexpr std::uint32_t kProducers = 3;
    {
        auto o = test::queue_options(Endpoints::many, 32 * 256, 256);
        o.expected_producers = kProducers;
        auto q = Queue::create(name, o);
        test::SharedLog::create(dir.file("log"));
        auto consumer = test::spawn_queue_peer({"consume", name, "--expect", std::to_string(kPerProducer * kProducers), "--log",
                               dir.file("log"), "--out", dir.file("report")});
        std::vector<test::Peer> producers;
        for (std::uint32_t p = 1; p <= kProducers; ++p) {
            producers.push_back(test::spawn_queue_peer({"produce", name, std::to_string(p), std::to_string(kPerProducer), "var:256"}));
        }
        for (auto& p : producers) CHECK(p.wait_or_throw(60s, "a producer to push to " + name) == 0);
        CHECK(consumer.wait_or_throw(60s, "the consumer to see the end of " + name) == 0);
        const auto r = report_of(dir.file("report"));
        INFO("consumer: " << r.error);
        const auto log = test::SharedLog::open(dir.file("log")).snapshot();
        std::string why;
        const bool ordered = test::per_producer_order(log, false, &why);
        INFO(why);
        CHECK(ordered);
        const auto d = test::collect({log});
        CHECK(d.total == kPerProducer * kProducers);
        CHECK(d.duplicates() == 0);
        for (std::uint32_t p = 1; p <= kProducers; ++p) CHECK(d.missing(p, kPerProducer).empty());
    }
    test::require_gone(name);
}

TEST_CASE("End of stream reaches every consumer process only after the expected producers closed", "[multiprocess]") {
    const std::string name = test::unique_name("eosmp");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto o = test::queue_options(Endpoints::many, 4096, 64);
        o.expected_producers = 2;
        auto q = Queue::create(name, o);
        auto c1 = test::spawn_queue_peer({"consume", name, "--out", dir.file("r1")});
        auto c2 = test::spawn_queue_peer({"consume", name, "--out", dir.file("r2")});
        auto p1 = test::spawn_queue_peer({"produce", name, "1", "100", "32"});
        CHECK(p1.wait_or_throw(30s, "the first producer of " + name) == 0);
        // One of two expected producers closed: the consumers must still be waiting.
        CHECK_FALSE(c1.wait_for(300ms).has_value());
        CHECK_FALSE(c2.wait_for(10ms).has_value());
        auto p2 = test::spawn_queue_peer({"produce", name, "2", "100", "32"});
        CHECK(p2.wait_or_throw(30s, "the second producer of " + name) == 0);
        CHECK(c1.wait_or_throw(10s, "consumer 1 to see the end of " + name) == 0);
        CHECK(c2.wait_or_throw(10s, "consumer 2 to see the end of " + name) == 0);
        const auto r1 = report_of(dir.file("r1")), r2 = report_of(dir.file("r2"));
        CHECK(r1.number("messages") + r2.number("messages") == 200);
        CHECK(r1.number("ended") == 1);
        CHECK(r2.number("ended") == 1);
        CHECK(r1.number("checksum") + r2.number("checksum") == test::expected_checksum(1, 100) + test::expected_checksum(2, 100));
    }
    test::require_gone(name);
}

TEST_CASE("pop_for in another process times out without reporting an end", "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    const bool with_producer = GENERATE(false, true);
    INFO(test::kind_label(kind) << (with_producer ? " with a producer attached" : " before any producer attached"));
    const std::string name = test::unique_name("popfor");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = Queue::create(name, test::queue_options(kind, 4096, 64));
        std::optional<Producer<>> tx;
        if (with_producer) tx.emplace(name);
        auto sut = test::spawn_queue_peer({"pop-for", name, "150", "--out", dir.file("r")});
        CHECK(sut.wait_or_throw(10s, "pop_for(150 ms) on " + name + " to give up") == 0);  // 0: timeout, not end
        const auto r = report_of(dir.file("r"));
        CHECK(r.number("elapsed_ms") >= 150);
        CHECK(r.number("got") == 0);
        CHECK(r.number("ended") == 0);
    }
    test::require_gone(name);
}

TEST_CASE("An endpoint blocked in another process uses almost no CPU", "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    const bool blocked_consumer = GENERATE(true, false);
    INFO(test::kind_label(kind) << (blocked_consumer ? ": consumer blocked in pop" : ": producer blocked in push"));
    const std::string name = test::unique_name("idle");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = Queue::create(name, test::queue_options(kind, 4096, 64));
        std::optional<Producer<>> tx;
        std::optional<Consumer<>> rx;
        std::optional<test::Peer> sut;
        if (blocked_consumer) {
            tx.emplace(name);  // attached, silent: the stream has not ended
            sut.emplace(test::spawn_queue_peer({"consume", name, "--out", dir.file("r")}));
        } else {
            rx.emplace(name);  // attached, never pops: the queue fills and stays full
            sut.emplace(test::spawn_queue_peer({"produce", name, "1", "1000000000", "32"}));
        }
        const bool sleeping = test::wait_until([&] { return q.stats().sleepers >= 1; }, 10s);
        INFO("waited up to 10 s for the peer to sleep on " << name);
        REQUIRE(sleeping);
        std::this_thread::sleep_for(200ms);
        const auto t0 = test::cpu_ticks(sut->pid());
        const auto w0 = std::chrono::steady_clock::now();
        std::this_thread::sleep_for(1s);
        const auto t1 = test::cpu_ticks(sut->pid());
        const auto wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
        REQUIRE(t0);
        REQUIRE(t1);
        const double cpu = static_cast<double>(*t1 - *t0) / static_cast<double>(::sysconf(_SC_CLK_TCK));
        INFO("blocked peer used " << cpu << " s of CPU in " << wall << " s");
        CHECK(cpu < 0.05 * wall);
        if (blocked_consumer) {
            tx->close();
            CHECK(sut->wait_or_throw(10s, "the blocked consumer to see the end of " + name) == 0);
            CHECK(report_of(dir.file("r")).number("messages") == 0);
        } else {
            sut->signal(SIGKILL);
            CHECK(sut->wait_or_throw(10s, "the killed producer to be reaped") == -SIGKILL);
        }
    }
    test::require_gone(name);
}

TEST_CASE("An attaching process gets clear errors for bad names, missing queues and full SPSC ends", "[multiprocess]") {
    const std::string name = test::unique_name("attachmp");
    test::ShmGuard guard{name};
    test::TempDir dir;
    auto attach = [&](const std::string& queue, const std::string& role, std::string& what) {
        auto p = test::spawn_queue_peer({"attach", queue, role, "--out", dir.file("a")});
        const int code = p.wait_or_throw(10s, "attach to " + queue);
        std::ifstream f(dir.file("a"));
        std::getline(f, what);
        return code;
    };
    std::string what;
    CHECK(attach("bad/name", "producer", what) == 10 + static_cast<int>(errc::invalid_name));
    CHECK_THAT(what, Catch::Contains("'/'"));
    CHECK(attach(name, "consumer", what) == 10 + static_cast<int>(errc::not_found));
    CHECK_THAT(what, Catch::Contains(name) && Catch::Contains("is the creator running?"));
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one, 4096, 64));
        test::SharedLog::create(dir.file("hold"));
        auto holder = test::spawn_queue_peer({"hold", name, "consumer", "--log", dir.file("hold")});
        const auto log = test::SharedLog::open(dir.file("hold"));
        REQUIRE(test::wait_until([&] { return log.size() == 1; }, 10s));
        CHECK(attach(name, "consumer", what) == 10 + static_cast<int>(errc::too_many_endpoints));
        CHECK_THAT(what, Catch::Contains(name));
        CHECK(attach(name, "producer", what) == 0);
        // Once the holder is dead, its place can be taken.
        holder.signal(SIGKILL);
        CHECK(holder.wait_or_throw(10s, "the killed holder to be reaped") == -SIGKILL);
        CHECK(attach(name, "consumer", what) == 0);
        INFO(what);
    }
    {
        // A persisted queue overwritten with random bytes: refused as corrupt, no crash.
        { Queue::create(name, test::queue_options(Endpoints::many, 4096, 64)).persist(); }
        {
            std::ofstream f("/dev/shm/" + segment_name(name), std::ios::binary | std::ios::in | std::ios::out);
            std::mt19937_64 rng(5);
            for (int i = 0; i < 4096; ++i) {
                const std::uint64_t v = rng();
                f.write(reinterpret_cast<const char*>(&v), 8);
            }
        }
        CHECK(attach(name, "producer", what) == 10 + static_cast<int>(errc::corrupt));
        CHECK_THAT(what, Catch::Contains(name) && Catch::Contains("corrupt"));
        CHECK(shmpipe::remove(name));
    }
    test::require_gone(name);
}

TEST_CASE("An oversize push in another process throws at once, even on a full queue", "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("oversizemp");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = Queue::create(name, test::queue_options(kind, 4096, 64));
        Consumer<> rx(name);  // attached, never pops
        auto sut = test::spawn_queue_peer({"push-size", name, "65", "--fill", "--out", dir.file("r")});
        CHECK(sut.wait_or_throw(10s, "an oversize push to " + name + " to throw") == 9);  // message_too_large
        const auto r = report_of(dir.file("r"));
        CHECK(r.number("elapsed_ms") < 1000);
        CHECK_THAT(r.error, Catch::Contains(name) && Catch::Contains("65"));
    }
    test::require_gone(name);
}

TEST_CASE("close_endpoints_of ends the stream that a live process left open", "[multiprocess]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("closeofmp");
    test::ShmGuard guard{name};
    test::TempDir dir;
    {
        auto q = Queue::create(name, test::queue_options(kind, 4096, 64));
        Consumer<> rx(name);
        test::SharedLog::create(dir.file("hold"));
        auto holder = test::spawn_queue_peer({"hold", name, "producer", "--log", dir.file("hold")});
        const auto log = test::SharedLog::open(dir.file("hold"));
        REQUIRE(test::wait_until([&] { return log.size() == 1; }, 10s));
        CHECK(q.close_endpoints_of(static_cast<std::uint32_t>(holder.pid())) == 1);
        std::optional<Bytes> got{Bytes{}};
        REQUIRE(test::finishes_within(name, 10s, [&] { got = rx.pop(); }));
        CHECK_FALSE(got.has_value());
        CHECK(rx.ended());
        holder.signal(SIGKILL);
        CHECK(holder.wait_or_throw(10s, "the killed holder to be reaped") == -SIGKILL);
        CHECK(q.stats().producers_dead == 0);  // it was closed before it died
    }
    test::require_gone(name);
}
