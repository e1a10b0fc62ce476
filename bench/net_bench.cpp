// Bridged queue edge against raw ZeroMQ PUSH/PULL on the same TCP link (loopback, or a veth
// pair between two network namespaces with --netns), in one
// run: messages/s and MB/s at 8 B, 1 KiB and 64 KiB, interleaved rounds, medians, ratios.
//
//   net_bench [--reps N] [--scale F] [--netns]
//
// --netns (root, iproute2): the sending side runs in one network namespace and the receiving
// side in another, joined by a veth pair (198.18.0.1 -> 198.18.0.2), both made for the run and
// removed after it; each side's thread enters its namespace before it makes its ZeroMQ context,
// so the context's I/O thread (which owns the TCP socket) lives there too. Shared memory is
// shared across network namespaces, so the two local queues stay where they were.
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

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <future>
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

// Where each side runs: loopback, or two network namespaces joined by a veth pair.
struct Link {
    std::string ns_send, ns_recv;       // empty: this process's namespace
    std::string bind = "tcp://127.0.0.1:*";
    const char* label = "tcp://127.0.0.1";
};
Link g_link;

bool ip(const std::vector<std::string>& args) {
    std::string cmd = "/bin/ip";
    for (const auto& a : args) cmd += " " + a;  // names and addresses we made: no quoting needed
    const int rc = std::system((cmd + " 2>&1").c_str());
    return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

void remove_namespaces() {
    if (!g_link.ns_send.empty()) ip({"netns", "del", g_link.ns_send});
    if (!g_link.ns_recv.empty()) ip({"netns", "del", g_link.ns_recv});
}

void make_namespaces() {
    const std::string tag = std::to_string(::getpid() % 100000);
    g_link.ns_send = "shmpipe-bench-" + tag + "-a";
    g_link.ns_recv = "shmpipe-bench-" + tag + "-b";
    const std::string va = "shba" + tag, vb = "shbb" + tag;
    const bool ok = ip({"netns", "add", g_link.ns_send}) && ip({"netns", "add", g_link.ns_recv}) &&
                    ip({"link", "add", va, "netns", g_link.ns_send, "type", "veth", "peer", "name", vb, "netns", g_link.ns_recv}) &&
                    ip({"-n", g_link.ns_send, "addr", "add", "198.18.0.1/24", "dev", va}) &&
                    ip({"-n", g_link.ns_recv, "addr", "add", "198.18.0.2/24", "dev", vb}) &&
                    ip({"-n", g_link.ns_send, "link", "set", va, "up"}) && ip({"-n", g_link.ns_recv, "link", "set", vb, "up"});
    if (!ok) {
        remove_namespaces();
        throw std::runtime_error("could not make the network namespaces (root and iproute2 needed)");
    }
    g_link.bind = "tcp://198.18.0.2:*";
    g_link.label = "veth between two network namespaces";
}

// Moves the calling thread into network namespace `ns` (nothing when empty).
void enter(const std::string& ns) {
    if (ns.empty()) return;
    const int fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) throw std::runtime_error("cannot enter network namespace " + ns);
    ::close(fd);
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
    ro.bind = g_link.bind;
    std::promise<std::string> endpoint;
    auto bound = endpoint.get_future();
    shmpipe::Consumer<shmpipe::Bytes> out(dst_name);
    shmpipe::Producer<shmpipe::Bytes> in(src_name);
    std::vector<std::byte> msg(c.size, std::byte{7});

    const auto t0 = bench::now_ns();
    std::exception_ptr failure;
    std::thread producer([&] {
        for (std::uint64_t i = 0; i < c.count; ++i) in.push(std::span<const std::byte>(msg));
        in.close();
    });
    std::exception_ptr receiver_failure;
    std::thread receiver([&] {
        try {
            enter(g_link.ns_recv);
            shmpipe::net::Receiver rx(ro);
            endpoint.set_value(rx.endpoint());
            rx.run();
        } catch (...) {
            receiver_failure = std::current_exception();
            try {
                endpoint.set_exception(receiver_failure);
            } catch (const std::future_error&) {  // already bound: the failure came later
            }
        }
    });
    std::thread sender([&] {
        try {
            shmpipe::net::SenderOptions so;
            so.queue = src_name;
            so.edge = "bench";
            so.host = "a";
            so.receivers = {{"b", bound.get()}};
            enter(g_link.ns_send);
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
    if (receiver_failure) std::rethrow_exception(receiver_failure);
    if (failure) std::rethrow_exception(failure);
    if (got != c.count) throw std::runtime_error("bridged run delivered " + std::to_string(got) + " of " + std::to_string(c.count));
    return static_cast<double>(t1 - t0) / 1e9;
}

// Seconds to move the same messages PUSH -> PULL over tcp://127.0.0.1.
// Each side has its own context, made in its namespace (with --netns).
double raw(const Case& c) {
    std::vector<std::byte> msg(c.size, std::byte{7});
    std::promise<std::string> endpoint;
    auto bound = endpoint.get_future();
    std::uint64_t t0 = 0, t1 = 0, got = 0;
    std::thread puller([&] {
        enter(g_link.ns_recv);
        zmq::context_t ctx;
        zmq::socket_t pull(ctx, zmq::socket_type::pull);
        pull.bind(g_link.bind);
        endpoint.set_value(pull.get(zmq::sockopt::last_endpoint));
        zmq::message_t m;
        while (got < c.count && pull.recv(m, zmq::recv_flags::none)) ++got;
        t1 = bench::now_ns();
    });
    {
        const std::string ep = bound.get();
        t0 = bench::now_ns();  // as for the bridge: from before the sending side connects
        std::thread pusher([&] {
            enter(g_link.ns_send);
            zmq::context_t ctx;
            zmq::socket_t push(ctx, zmq::socket_type::push);
            push.connect(ep);
            for (std::uint64_t i = 0; i < c.count; ++i) push.send(zmq::const_buffer(msg.data(), msg.size()), zmq::send_flags::none);
        });
        pusher.join();
    }
    puller.join();
    return static_cast<double>(t1 - t0) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
    int reps = 5;
    double scale = 1.0;
    bool netns = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--reps" && i + 1 < argc) {
            reps = std::atoi(argv[++i]);
        } else if (a == "--scale" && i + 1 < argc) {
            scale = std::atof(argv[++i]);
        } else if (a == "--netns") {
            netns = true;
        } else {
            std::fprintf(stderr, "usage: net_bench [--reps N] [--scale F] [--netns]\n");
            return 2;
        }
    }
    try {
        if (netns) make_namespaces();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "net_bench: error: %s\n", e.what());
        return 1;
    }
    const std::vector<Case> cases{{8, 400000}, {1024, 100000}, {65536, 4000}};
    std::printf("Bridged queue edge vs raw ZeroMQ PUSH/PULL, %s, one process, median of %d interleaved rounds\n",
                g_link.label, reps);
    int rc = 0;
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
        rc = 1;
    }
    remove_namespaces();
    return rc;
}
