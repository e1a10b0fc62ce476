// Bridged queue edge against raw ZeroMQ PUSH/PULL on the same loopback TCP link, in one
// run: messages/s and MB/s at 8 B, 1 KiB and 64 KiB, interleaved rounds, medians, ratios.
//
//   net_bench [--reps N] [--scale F]
//
// Bridged: a producer thread pushes N messages into a local queue; a Sender thread pops it
// and sends to a Receiver thread over tcp://127.0.0.1, which pushes into a second queue;
// the main thread pops that until the end of stream. Timed from the first push to the end,
// so the two shared-memory hops, credits, acknowledgements and end of stream are included.
// Raw: a PUSH thread sends N messages to a PULL thread (the main thread) on the same kind
// of link; no acknowledgement, no back-pressure beyond ZeroMQ's high-water marks.
// Both run in one process, so the ratio compares the protocols, not process scheduling.
#include "bench_util.hpp"

#include <shmpipe/net/bridge.hpp>
#include <shmpipe/queue.hpp>

#include <zmq.hpp>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

struct Case {
    std::size_t size;
    std::uint64_t count;
};

std::string queue_name(const char* role) {
    return "net-bench-" + std::to_string(::getpid()) + "-" + role;
}

// Seconds to move `c.count` messages of `c.size` bytes through a bridged edge.
double bridged(const Case& c) {
    shmpipe::QueueOptions o;
    o.capacity = std::size_t{1} << 20;
    o.max_message = std::max<std::size_t>(c.size, 1024);
    o.producers = shmpipe::Endpoints::one;
    o.consumers = shmpipe::Endpoints::one;
    const auto src_name = queue_name("src"), dst_name = queue_name("dst");
    auto src = shmpipe::Queue::create(src_name, o);
    auto dst = shmpipe::Queue::create(dst_name, o);
    shmpipe::net::ReceiverOptions ro;
    ro.queue = dst_name;
    ro.edge = "bench";
    ro.host = "b";
    ro.bind = "tcp://127.0.0.1:*";
    shmpipe::net::Receiver rx(ro);
    shmpipe::net::SenderOptions so;
    so.queue = src_name;
    so.edge = "bench";
    so.host = "a";
    so.receivers = {{"b", rx.endpoint()}};
    shmpipe::Consumer<shmpipe::Bytes> out(dst_name);
    shmpipe::Producer<shmpipe::Bytes> in(src_name);
    std::vector<std::byte> msg(c.size, std::byte{7});

    const auto t0 = bench::now_ns();
    std::exception_ptr failure;
    std::thread producer([&] {
        for (std::uint64_t i = 0; i < c.count; ++i) in.push(std::span<const std::byte>(msg));
        in.close();
    });
    std::thread receiver([&] {
        try {
            rx.run();
        } catch (...) {
            failure = std::current_exception();
        }
    });
    std::thread sender([&] {
        try {
            shmpipe::net::Sender tx(so);
            tx.run();
        } catch (...) {
            failure = std::current_exception();
        }
    });
    std::uint64_t got = 0;
    while (auto slot = out.peek()) ++got;
    const auto t1 = bench::now_ns();
    producer.join();
    sender.join();
    receiver.join();
    if (failure) std::rethrow_exception(failure);
    if (got != c.count) throw std::runtime_error("bridged run delivered " + std::to_string(got) + " of " + std::to_string(c.count));
    return static_cast<double>(t1 - t0) / 1e9;
}

// Seconds to move the same messages PUSH -> PULL over tcp://127.0.0.1.
double raw(const Case& c) {
    zmq::context_t ctx;
    zmq::socket_t pull(ctx, zmq::socket_type::pull);
    pull.bind("tcp://127.0.0.1:*");
    const std::string ep = pull.get(zmq::sockopt::last_endpoint);
    std::vector<std::byte> msg(c.size, std::byte{7});
    const auto t0 = bench::now_ns();
    std::thread pusher([&] {
        zmq::socket_t push(ctx, zmq::socket_type::push);
        push.connect(ep);
        for (std::uint64_t i = 0; i < c.count; ++i) push.send(zmq::const_buffer(msg.data(), msg.size()), zmq::send_flags::none);
    });
    std::uint64_t got = 0;
    zmq::message_t m;
    while (got < c.count && pull.recv(m, zmq::recv_flags::none)) ++got;
    const auto t1 = bench::now_ns();
    pusher.join();
    return static_cast<double>(t1 - t0) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
    int reps = 5;
    double scale = 1.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--reps") reps = std::atoi(argv[i + 1]);
        else if (a == "--scale") scale = std::atof(argv[i + 1]);
        else {
            std::fprintf(stderr, "usage: net_bench [--reps N] [--scale F]\n");
            return 2;
        }
    }
    const std::vector<Case> cases{{8, 400000}, {1024, 100000}, {65536, 4000}};
    std::printf("Bridged queue edge vs raw ZeroMQ PUSH/PULL, tcp://127.0.0.1, one process, median of %d interleaved rounds\n", reps);
    std::printf("%8s %14s %10s %14s %10s %8s\n", "size", "bridged msg/s", "MB/s", "raw msg/s", "MB/s", "ratio");
    try {
        for (const auto& base : cases) {
            Case c = base;
            c.count = std::max<std::uint64_t>(100, static_cast<std::uint64_t>(static_cast<double>(base.count) * scale));
            std::vector<double> b, r;
            for (int k = 0; k < reps; ++k) {  // interleaved: a load change hits both alike
                b.push_back(bridged(c));
                r.push_back(raw(c));
            }
            const double bs = bench::median(b), rs = bench::median(r);
            const double n = static_cast<double>(c.count), mb = n * static_cast<double>(c.size) / 1e6;
            std::printf("%8zu %14.0f %10.1f %14.0f %10.1f %8.2f\n", c.size, n / bs, mb / bs, n / rs, mb / rs, rs / bs);
            std::fflush(stdout);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "net_bench: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
