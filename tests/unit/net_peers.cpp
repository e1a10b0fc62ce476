// A bridge meets peers it must not trust, on loopback, in one process (threads): random
// bytes on its TCP port, malformed and out-of-protocol frames from a ZeroMQ peer, and with
// CurveZMQ a client whose key it does not know. The receiver drops them with a logged
// reason and goes on serving a good sender; the refused sender fails naming the host.
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/error.hpp>
#include <shmpipe/net/bridge.hpp>
#include <shmpipe/net/frame.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <zmq.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <netinet/in.h>
#include <random>
#include <sys/socket.h>
#include <unistd.h>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

// Lines a bridge logged, readable from the test thread.
struct Log {
    std::mutex m;
    std::vector<std::string> lines;
    net::Logger logger() {
        return [this](const std::string& s) {
            std::lock_guard lock(m);
            lines.push_back(s);
        };
    }
    bool contains(const std::string& needle) {
        std::lock_guard lock(m);
        for (const auto& l : lines)
            if (l.find(needle) != std::string::npos) return true;
        return false;
    }
};

// Each queue here has one producer: the test's pusher into the source, the one accepted
// sender into the destination. Without the count a `many` queue never ends by itself, and
// the sender would wait forever for the end of its source.
QueueOptions small_queue() {
    QueueOptions o;
    o.capacity = 1 << 16;
    o.max_message = 256;
    o.expected_producers = 1;
    return o;
}

// A receiver of edge "edge" on host "b" into `dst`, on a free loopback port, logging to `log`.
net::ReceiverOptions receiver_options(const std::string& dst, Log& log) {
    net::ReceiverOptions o;
    o.queue = dst;
    o.edge = "edge";
    o.host = "b";
    o.bind = "tcp://127.0.0.1:*";
    o.log = log.logger();
    return o;
}

// Pushes n messages into `src`, closes it, runs a Sender to `endpoint`; the sender's result.
net::BridgeCounters send_messages(const std::string& src, const std::string& endpoint, int n,
                                  std::optional<net::CurveOptions> curve = std::nullopt) {
    {
        Producer<Bytes> tx(src);
        for (int i = 0; i < n; ++i) tx.push(Bytes(16, static_cast<std::byte>(i)));
    }
    net::SenderOptions o;
    o.queue = src;
    o.edge = "edge";
    o.host = "a";
    o.receivers = {{"b", endpoint}};
    o.liveness.dead_after = 1500ms;
    o.liveness.heartbeat = 200ms;
    o.curve = std::move(curve);
    o.log = [](const std::string&) {};
    net::Sender sut(o);
    auto running = std::async(std::launch::async, [&] { return sut.run(); });
    if (running.wait_for(30s) != std::future_status::ready) {
        sut.request_stop();
        running.wait();
        FAIL("the sender of \"" << src << "\" to " << endpoint << " did not finish within 30 s");
    }
    return running.get();
}

// Sends `bytes` over a plain TCP connection to a tcp://127.0.0.1:PORT endpoint.
void raw_tcp(const std::string& endpoint, const std::vector<unsigned char>& bytes) {
    const auto port = static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) (void)!::write(fd, bytes.data(), bytes.size());
    ::close(fd);
}

// Stops a receiver running on another thread when the test leaves early (a failed REQUIRE),
// so the future's destructor does not wait for a run that would never end.
struct StopOnExit {
    net::Receiver& r;
    ~StopOnExit() { r.request_stop(); }
};

}  // namespace

TEST_CASE("A receiver drops peers sending random bytes and malformed frames, and goes on serving a good sender",
          "[unit][net]") {
    const std::string src = test::unique_name("nps"), dst = test::unique_name("npd");
    test::ShmGuard guard{src, dst};
    auto qs = Queue::create(src, small_queue());
    auto qd = Queue::create(dst, small_queue());
    Log log;
    net::Receiver sut(receiver_options(dst, log));
    auto running = std::async(std::launch::async, [&] { return sut.run(); });
    StopOnExit stop{sut};

    std::mt19937 rng(7);
    for (int i = 0; i < 20; ++i) {  // not even ZeroMQ: libzmq's handshake refuses it
        std::vector<unsigned char> junk(1 + rng() % 200);
        for (auto& b : junk) b = static_cast<unsigned char>(rng());
        raw_tcp(sut.endpoint(), junk);
    }
    zmq::context_t ctx;
    std::vector<zmq::socket_t> bad;
    auto bad_peer = [&](const std::vector<std::byte>& frame) {
        bad.emplace_back(ctx, zmq::socket_type::dealer);
        bad.back().set(zmq::sockopt::linger, 0);
        bad.back().connect(sut.endpoint());
        bad.back().send(zmq::const_buffer(frame.data(), frame.size()), zmq::send_flags::none);
    };
    for (int i = 0; i < 10; ++i) {  // ZeroMQ peers sending random frames
        std::vector<std::byte> f(rng() % 100);
        for (auto& b : f) b = static_cast<std::byte>(rng());
        bad_peer(f);
    }
    std::vector<std::byte> f;
    net::encode_hello(f, 1, "evil", "edge");
    f.resize(f.size() - 2);
    bad_peer(f);  // a truncated hello
    net::encode_credit(f, 1, 1000);
    bad_peer(f);  // a receiver's frame, and before any hello
    INFO("awaiting the receiver to drop the 12 bad peers");
    REQUIRE(test::wait_until([&] { return sut.counters().dropped_peers >= 12; }, 20s));

    const auto sent = send_messages(src, sut.endpoint(), 200);
    INFO("awaiting the receiver's end after the good sender ended");
    REQUIRE(running.wait_for(20s) == std::future_status::ready);
    const auto got = running.get();
    CHECK(sent.messages == 200);
    CHECK(got.messages == 200);
    CHECK(got.dropped_peers >= 12);
    CHECK(log.contains("malformed frame"));
    CHECK(log.contains("before its hello"));
    CHECK(qd.stats().messages_in == 200);
}

TEST_CASE("With CurveZMQ a sender whose key the receiver does not allow is refused and fails naming the host",
          "[unit][net]") {
    if (!net::curve_available()) {
        WARN("SKIPPED: this libzmq has no CurveZMQ (zmq_has(\"curve\") is false)");
        return;
    }
    const std::string src = test::unique_name("ncs"), dst = test::unique_name("ncd");
    test::ShmGuard guard{src, dst};
    auto qs = Queue::create(src, small_queue());
    auto qd = Queue::create(dst, small_queue());
    const auto server = net::make_curve_keypair(), good = net::make_curve_keypair(), other = net::make_curve_keypair();
    Log log;
    auto ro = receiver_options(dst, log);
    ro.curve = net::CurveOptions{server, "", {good.public_key}};
    net::Receiver sut(ro);
    auto running = std::async(std::launch::async, [&] { return sut.run(); });
    StopOnExit stop{sut};

    SECTION("an unknown client key") {
        try {
            send_messages(src, sut.endpoint(), 10, net::CurveOptions{other, server.public_key, {}});
            FAIL("a sender with an unknown key delivered its messages");
        } catch (const Error& e) {
            CHECK(e.code() == errc::consumer_died);
            CHECK_THAT(std::string(e.what()), Catch::Contains("host \"b\""));
        }
        CHECK(log.contains("refused a client"));
    }
    SECTION("a wrong server key") {
        try {
            send_messages(src, sut.endpoint(), 10, net::CurveOptions{good, other.public_key, {}});
            FAIL("a sender with the wrong server key delivered its messages");
        } catch (const Error& e) {
            CHECK(e.code() == errc::consumer_died);
            CHECK_THAT(std::string(e.what()), Catch::Contains("host \"b\""));
        }
    }
    SECTION("the right keys go through") {
        const auto sent = send_messages(src, sut.endpoint(), 10, net::CurveOptions{good, server.public_key, {}});
        CHECK(sent.messages == 10);
        INFO("awaiting the receiver's end after the sender ended");
        REQUIRE(running.wait_for(20s) == std::future_status::ready);
        CHECK(running.get().messages == 10);
    }
    CHECK(qd.stats().messages_in == (qd.stats().producers_closed == 1 ? 10u : 0u));
    sut.request_stop();
    if (running.valid()) {
        INFO("awaiting the receiver's end after request_stop()");
        REQUIRE(running.wait_for(10s) == std::future_status::ready);
        try {
            running.get();
        } catch (const Error& e) {
            CHECK(e.code() == errc::cancelled);
        }
    }
}
