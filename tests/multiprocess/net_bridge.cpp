// A queue edge bridged over ZeroMQ on loopback, its two ends in separate processes
// (tests/support/peers/net_peer.cpp): every message arrives with its content intact, each
// sender's end of stream is its own, back-pressure crosses the link, and a killed receiver
// or sender is an error naming its host within the liveness bound, with counts that add up.
#include "queue_catch.hpp"
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "netns_testing.hpp"
#include "test_support.hpp"

#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <fstream>
#include <unistd.h>
#include <string>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

using test::report_of;

// Starts net_peer with `args`, inside network namespace `netns` when one is given.
test::Peer spawn_net_peer(const std::vector<std::string>& args, const std::string& netns = {}) {
    if (netns.empty()) return test::Peer(test::peer_path("net_peer"), args);
    std::vector<std::string> wrapped{"netns", "exec", netns, test::peer_path("net_peer")};
    wrapped.insert(wrapped.end(), args.begin(), args.end());
    return test::Peer("/bin/ip", wrapped);  // ip execs the peer: same pid, so signals reach it
}

// Starts a receiver peer (on a free loopback port unless `bind` says otherwise) and returns
// it with its endpoint.
std::pair<test::Peer, std::string> start_receiver(const std::string& queue, const std::string& host, const test::TempDir& dir,
                                                  std::vector<std::string> extra = {}, const std::string& netns = {},
                                                  const std::string& bind = "tcp://127.0.0.1:*") {
    const std::string ep_file = dir.file(host + ".endpoint");
    std::vector<std::string> args{"receive", queue, host, bind, "--endpoint-file", ep_file,
                                  "--out", dir.file(host + ".report"), "--edge", "edge"};
    args.insert(args.end(), extra.begin(), extra.end());
    test::Peer p = spawn_net_peer(args, netns);
    std::string endpoint;
    const bool listening = test::wait_until([&] {
        std::ifstream f(ep_file);
        return static_cast<bool>(std::getline(f, endpoint)) && !endpoint.empty();
    }, 20s);
    if (!listening) FAIL("receiver on host " << host << " wrote no endpoint to " << ep_file << " within 20 s");
    return {std::move(p), endpoint};
}

QueueOptions options(Endpoints producers, std::size_t capacity, std::uint32_t expected_producers = 0) {
    auto o = test::queue_options(Endpoints::one, capacity, 512);
    o.producers = producers;
    o.expected_producers = expected_producers;
    return o;
}

void push_messages(Producer<Bytes>& tx, std::uint32_t producer, std::uint64_t from, std::uint64_t to, std::size_t max_size) {
    for (std::uint64_t s = from; s < to; ++s) tx.push(test::make_message(producer, s, test::message_size(producer, s, max_size, true)));
}

// What a consumer took from one queue: the log entries in order, and how it stopped.
struct Taken {
    std::vector<std::uint64_t> log;
    bool ended = false;
    std::string error;  // producer_died / broken text, if any
    std::uint64_t bad = 0;
};

// Pops `queue` into `t` until `done(t)`, the end, a broken queue, or the deadline (FAIL).
// A producer_died is recorded and popping goes on (the dead producer then counts as closed).
void take(Consumer<Bytes>& rx, Taken& t, const std::function<bool(const Taken&)>& done, std::chrono::milliseconds timeout,
          const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done(t) && !t.ended) {
        if (std::chrono::steady_clock::now() > deadline)
            FAIL("timed out waiting for " << what << " (" << t.log.size() << " messages taken)");
        try {
            auto m = rx.pop_for(100ms);
            if (!m) {
                t.ended = rx.ended();
                continue;
            }
            std::uint32_t p = 0;
            std::uint64_t s = 0;
            if (!test::parse_message(*m, p, s)) ++t.bad;
            t.log.push_back(test::log_entry(p, s));
        } catch (const Error& e) {
            t.error = e.what();
            if (e.code() == errc::broken) return;
        }
    }
}

}  // namespace

TEST_CASE("A bridged edge delivers every message of two senders intact and in order, and ends only when both ended",
          "[multiprocess][net]") {
    const std::string src1 = test::unique_name("nsrc1"), src2 = test::unique_name("nsrc2"), dst = test::unique_name("ndst");
    test::ShmGuard guard{src1, src2, dst};
    test::TempDir dir;
    auto q1 = Queue::create(src1, options(Endpoints::one, 1 << 16));
    auto q2 = Queue::create(src2, options(Endpoints::one, 1 << 21));  // holds all n2: pushing never waits for the bridge
    auto qd = Queue::create(dst, options(Endpoints::many, 1 << 16, 2));
    Consumer<Bytes> rx(dst);
    auto [receiver, endpoint] = start_receiver(dst, "b", dir, {"--senders", "2"});
    auto sender1 = spawn_net_peer({"send", src1, "--edge", "edge", "a1", "b=" + endpoint, "--out", dir.file("a1.report")});
    auto sender2 = spawn_net_peer({"send", src2, "--edge", "edge", "a2", "b=" + endpoint, "--out", dir.file("a2.report")});
    constexpr std::uint64_t n1 = 20000, n2 = 5000;
    auto producer1 = test::spawn_queue_peer({"produce", src1, "1", std::to_string(n1), "var:300"});
    Producer<Bytes> tx2(src2);
    push_messages(tx2, 2, 0, n2, 300);

    Taken t;
    take(rx, t, [&](const Taken& x) { return x.log.size() >= n1 + n2; }, 60s, "all messages of both senders");
    REQUIRE(producer1.wait_or_throw(30s, "producer of " + src1) == 0);
    REQUIRE(sender1.wait_or_throw(30s, "sender a1") == 0);
    // Sender a1 ended; a2's stream is still open, so the receiving queue is not at its end.
    CHECK_FALSE(rx.pop_for(300ms).has_value());
    CHECK_FALSE(rx.ended());
    tx2.close();
    take(rx, t, [](const Taken&) { return false; }, 30s, "the end of stream after both senders ended");

    CHECK(t.ended);
    CHECK(t.error.empty());
    CHECK(t.bad == 0);
    const auto d = test::collect({t.log});
    CHECK(d.total == n1 + n2);
    CHECK(d.duplicates() == 0);
    CHECK(d.missing(1, n1).empty());
    CHECK(d.missing(2, n2).empty());
    std::string why;
    CHECK(test::per_producer_order(t.log, false, &why));
    INFO(why);
    REQUIRE(sender2.wait_or_throw(30s, "sender a2") == 0);
    REQUIRE(receiver.wait_or_throw(30s, "receiver b") == 0);
    const auto r1 = report_of(dir.file("a1.report")), r2 = report_of(dir.file("a2.report"));
    CHECK(r1.number("messages") == n1);
    CHECK(r2.number("messages") == n2);
    CHECK(r1.number("lost") == 0);
    CHECK(report_of(dir.file("b.report")).number("messages") == n1 + n2);
}

TEST_CASE("A full receiving queue stops the sender's pops: in flight stays within the queue's free room",
          "[multiprocess][net]") {
    const std::string src = test::unique_name("nbsrc"), dst = test::unique_name("nbdst");
    test::ShmGuard guard{src, dst};
    test::TempDir dir;
    constexpr std::size_t kDstCapacity = 4096, kSize = 64;
    constexpr std::uint64_t n = 5000;
    auto qs = Queue::create(src, options(Endpoints::one, 1 << 20));
    auto qd = Queue::create(dst, options(Endpoints::one, kDstCapacity));
    {
        Producer<Bytes> tx(src);
        for (std::uint64_t s = 0; s < n; ++s) tx.push(test::make_message(1, s, kSize));
    }
    auto [receiver, endpoint] = start_receiver(dst, "b", dir);
    auto sender = spawn_net_peer({"send", src, "--edge", "edge", "a", "b=" + endpoint, "--out", dir.file("a.report")});

    // Nobody pops the receiving queue: it fills, then the bridge must stall.
    constexpr std::uint64_t kRecord = 8 + kSize;  // an SPSC record: header + payload
    const bool filled = test::wait_until([&] { return qd.stats().bytes_used + kRecord > kDstCapacity; }, 20s);
    REQUIRE(filled);
    std::this_thread::sleep_for(500ms);  // room for a bridge without back-pressure to run ahead
    const auto popped = qs.stats().messages_out;
    const auto delivered = qd.stats().messages_in;
    INFO("popped from the source " << popped << ", in the receiving queue " << delivered);
    CHECK(popped - delivered <= kDstCapacity / kRecord);
    CHECK(popped <= 2 * (kDstCapacity / kRecord));
    CHECK(qs.stats().depth >= n - 2 * (kDstCapacity / kRecord));

    Consumer<Bytes> rx(dst);
    Taken t;
    take(rx, t, [](const Taken&) { return false; }, 60s, "the end of stream after the consumer resumed");
    CHECK(t.ended);
    CHECK(t.bad == 0);
    const auto d = test::collect({t.log});
    CHECK(d.total == n);
    CHECK(d.missing(1, n).empty());
    REQUIRE(sender.wait_or_throw(30s, "sender a") == 0);
    REQUIRE(receiver.wait_or_throw(30s, "receiver b") == 0);
}

TEST_CASE("A receiver killed mid-run: the sender re-sends what it had not acknowledged to the other receiver",
          "[multiprocess][net]") {
    const std::string src = test::unique_name("nrsrc"), dst1 = test::unique_name("nrd1"), dst2 = test::unique_name("nrd2");
    test::ShmGuard guard{src, dst1, dst2};
    test::TempDir dir;
    constexpr std::uint64_t n = 30000;
    auto qs = Queue::create(src, options(Endpoints::one, 1 << 22));
    auto qd1 = Queue::create(dst1, options(Endpoints::one, 1 << 16));
    auto qd2 = Queue::create(dst2, options(Endpoints::one, 1 << 16));
    {
        Producer<Bytes> tx(src);
        push_messages(tx, 1, 0, n, 100);
    }
    auto [r1, ep1] = start_receiver(dst1, "b1", dir, {"--dead-after", "1000"});
    auto [r2, ep2] = start_receiver(dst2, "b2", dir, {"--dead-after", "1000"});
    auto sender = spawn_net_peer({"send", src, "--edge", "edge", "a", "b1=" + ep1, "b2=" + ep2, "--out", dir.file("a.report"), "--dead-after", "1000"});
    Consumer<Bytes> rx1(dst1), rx2(dst2);

    Taken t1, t2;
    take(rx1, t1, [](const Taken& x) { return x.log.size() >= 2000; }, 60s, "2000 messages through receiver b1");
    r1.signal(SIGKILL);
    REQUIRE(r1.wait_or_throw(10s, "killed receiver b1") == -SIGKILL);
    // b1's local producer died: its queue drains, then reports producer_died and ends.
    take(rx1, t1, [](const Taken&) { return false; }, 30s, "the end of " + dst1 + " after b1 died");
    // Alternate between the queues until the rest arrives through b2.
    take(rx2, t2, [](const Taken&) { return false; }, 90s, "the end of " + dst2);
    REQUIRE(sender.wait_or_throw(30s, "sender a") == 0);
    REQUIRE(r2.wait_or_throw(30s, "receiver b2") == 0);

    const auto rep = report_of(dir.file("a.report"));
    INFO("sender report: resent=" << rep.number("resent") << " lost=" << rep.number("lost") << " error=" << rep.error);
    CHECK(t1.error.find("producer") != std::string::npos);
    CHECK(t2.ended);
    CHECK(t1.bad + t2.bad == 0);
    const auto d = test::collect({t1.log, t2.log});
    CHECK(d.missing(1, n).empty());            // everything arrived, at least once
    CHECK(d.total == n + d.duplicates());      // the counts add up
    CHECK(d.duplicates() <= rep.number("resent"));  // only re-sent messages can repeat
    CHECK(rep.number("lost") == 0);
    std::string why;
    CHECK(test::per_producer_order(t1.log, false, &why));
    INFO(why);
}

TEST_CASE("The only receiver killed mid-run: the sender fails naming its host and what was acknowledged all arrived "
          "while the rest is counted lost",
          "[multiprocess][net]") {
    const std::string src = test::unique_name("nlsrc"), dst = test::unique_name("nldst");
    test::ShmGuard guard{src, dst};
    test::TempDir dir;
    constexpr std::uint64_t n = 30000;
    auto qs = Queue::create(src, options(Endpoints::one, 1 << 22));
    auto qd = Queue::create(dst, options(Endpoints::one, 1 << 16));
    {
        Producer<Bytes> tx(src);
        push_messages(tx, 1, 0, n, 100);
    }
    auto [receiver, endpoint] = start_receiver(dst, "b", dir, {"--dead-after", "1000"});
    auto sender = spawn_net_peer({"send", src, "--edge", "edge", "a", "b=" + endpoint, "--out", dir.file("a.report"), "--dead-after", "1000"});
    Consumer<Bytes> rx(dst);
    Taken t;
    take(rx, t, [](const Taken& x) { return x.log.size() >= 2000; }, 60s, "2000 messages through receiver b");
    receiver.signal(SIGKILL);
    REQUIRE(receiver.wait_or_throw(10s, "killed receiver b") == -SIGKILL);
    CHECK(sender.wait_or_throw(20s, "sender a to notice that b died") == 3);
    take(rx, t, [](const Taken&) { return false; }, 30s, "the end of " + dst + " after b died");

    const auto rep = report_of(dir.file("a.report"));
    INFO("sender report: messages=" << rep.number("messages") << " lost=" << rep.number("lost") << " error=" << rep.error);
    CHECK(rep.error.find("host \"b\"") != std::string::npos);
    CHECK(rep.error.find("lost") != std::string::npos);
    const auto acked = rep.number("messages"), lost = rep.number("lost");
    CHECK(qs.stats().messages_out == acked + lost);  // every popped message is acknowledged or counted lost
    const auto d = test::collect({t.log});
    CHECK(d.missing(1, acked).empty());  // what b acknowledged was delivered
    CHECK(d.total >= acked);
    CHECK(d.total <= acked + lost);
    CHECK(t.bad == 0);
}

TEST_CASE("A sender killed mid-run: the receiver reports producer_died naming its host and breaks the queue",
          "[multiprocess][net]") {
    const std::string src = test::unique_name("nssrc"), dst = test::unique_name("nsdst");
    test::ShmGuard guard{src, dst};
    test::TempDir dir;
    auto qs = Queue::create(src, options(Endpoints::one, 1 << 20));
    auto qd = Queue::create(dst, options(Endpoints::one, 1 << 16));
    Producer<Bytes> tx(src);  // stays open: the sender never reaches an end on its own
    push_messages(tx, 1, 0, 5000, 100);
    auto [receiver, endpoint] = start_receiver(dst, "b", dir, {"--dead-after", "1000"});
    auto sender = spawn_net_peer({"send", src, "--edge", "edge", "a", "b=" + endpoint, "--out", dir.file("a.report"), "--dead-after", "1000"});
    REQUIRE(test::wait_until([&] { return qd.stats().messages_in >= 200; }, 30s));
    sender.signal(SIGKILL);
    REQUIRE(sender.wait_or_throw(10s, "killed sender a") == -SIGKILL);
    // Within the 1 s bound (plus scheduling slack on a loaded machine), never a hang.
    CHECK(receiver.wait_or_throw(10s, "receiver b to notice that a died") == 3);
    const auto rep = report_of(dir.file("b.report"));
    INFO("receiver report error: " << rep.error);
    CHECK(rep.error.find("producer died") != std::string::npos);
    CHECK(rep.error.find("host \"a\"") != std::string::npos);
    CHECK(qd.broken());
    Consumer<Bytes> rx(dst);
    Taken t;
    take(rx, t, [](const Taken&) { return false; }, 10s, "the consumer to see the broken queue");
    CHECK(t.error.find("broken") != std::string::npos);
}


TEST_CASE("Across two network namespaces the bridge delivers everything, and a link set down mid-run is an error "
          "naming the host on both sides",
          "[multiprocess][net][netns]") {
    if (const auto why = test::netns_unavailable(); !why.empty()) {
        WARN("SKIPPED: network namespace test needs root and iproute2: " << why);
        return;
    }
    test::NetnsPair ns;
    INFO(ns.error);
    REQUIRE(ns.ok());
    const std::string src = test::unique_name("nnsrc"), dst = test::unique_name("nndst");
    test::ShmGuard guard{src, dst};
    test::TempDir dir;
    auto qs = Queue::create(src, options(Endpoints::one, 1 << 22));
    auto qd = Queue::create(dst, options(Endpoints::one, 1 << 16));
    Consumer<Bytes> rx(dst);  // shared memory is shared across network namespaces

    SECTION("a whole stream arrives") {
        constexpr std::uint64_t n = 20000;
        {
            Producer<Bytes> tx(src);
            push_messages(tx, 1, 0, n, 200);
        }
        auto [receiver, endpoint] = start_receiver(dst, "b", dir, {}, ns.b(), "tcp://198.18.0.2:7401");
        auto sender = spawn_net_peer({"send", src, "--edge", "edge", "a", "b=" + endpoint, "--out", dir.file("a.report")}, ns.a());
        Taken t;
        take(rx, t, [](const Taken&) { return false; }, 60s, "the end of stream across the namespaces");
        CHECK(t.ended);
        CHECK(t.bad == 0);
        const auto d = test::collect({t.log});
        CHECK(d.total == n);
        CHECK(d.missing(1, n).empty());
        REQUIRE(sender.wait_or_throw(30s, "sender a in namespace " + ns.a()) == 0);
        REQUIRE(receiver.wait_or_throw(30s, "receiver b in namespace " + ns.b()) == 0);
    }
    SECTION("the link goes down mid-run") {
        Producer<Bytes> tx(src);  // stays open: only the link can end this run
        push_messages(tx, 1, 0, 20000, 200);
        auto [receiver, endpoint] = start_receiver(dst, "b", dir, {"--dead-after", "1000"}, ns.b(), "tcp://198.18.0.2:7401");
        auto sender = spawn_net_peer({"send", src, "--edge", "edge", "a", "b=" + endpoint, "--out", dir.file("a.report"),
                                      "--dead-after", "1000"}, ns.a());
        Taken t;
        take(rx, t, [](const Taken& x) { return x.log.size() >= 200; }, 60s, "200 messages across the namespaces");
        REQUIRE(ns.link_down());
        CHECK(sender.wait_or_throw(15s, "sender a to notice the link went down") == 3);
        CHECK(receiver.wait_or_throw(15s, "receiver b to notice the link went down") == 3);
        const auto ra = report_of(dir.file("a.report")), rb = report_of(dir.file("b.report"));
        INFO("sender: " << ra.error << "\nreceiver: " << rb.error);
        CHECK(ra.error.find("host \"b\"") != std::string::npos);
        CHECK(rb.error.find("host \"a\"") != std::string::npos);
        CHECK(rb.error.find("producer died") != std::string::npos);
        CHECK(qs.stats().messages_out == ra.number("messages") + ra.number("lost"));  // the counts add up
    }
}
