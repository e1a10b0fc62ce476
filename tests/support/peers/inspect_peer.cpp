// inspect_peer: a live writer or reader for the inspect-queues tests and benchmark. Never
// uses Catch2; reports through its exit code.
//
//   inspect_peer writer <queue> [--create spsc|mpmc] [--size B] [--delay-us N] [--count N]
//       Attaches as a producer (after creating the queue with --create, owning its name) and
//       pushes B-byte messages (default 64), sleeping N us between them, forever or N times;
//       then closes and, if it created the queue, keeps it until killed.
//   inspect_peer reader <queue> [--delay-us N] [--count N]
//       Attaches as a consumer and pops until the end of stream (or N messages), sleeping
//       N us after each message.
//
// Exit codes: 0 end of stream / count reached; 2 shmpipe::Error; 5 producer_died; 64 usage.
#include <shmpipe/error.hpp>
#include <shmpipe/queue.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "inspect_peer: usage error: " << why << "\n";
    std::_Exit(64);
}

struct Args {
    std::string mode, queue, create;
    std::size_t size = 64;
    long delay_us = 0;
    long count = 0;
};

Args parse(int argc, char** argv) {
    Args a;
    if (argc < 3) usage("inspect_peer writer|reader <queue> [options]");
    a.mode = argv[1];
    a.queue = argv[2];
    for (int i = 3; i < argc; ++i) {
        const std::string k = argv[i];
        if (i + 1 >= argc) usage("missing value after " + k);
        const std::string v = argv[++i];
        if (k == "--create") {
            a.create = v;
        } else if (k == "--size") {
            a.size = static_cast<std::size_t>(std::stoul(v));
        } else if (k == "--delay-us") {
            a.delay_us = std::stol(v);
        } else if (k == "--count") {
            a.count = std::stol(v);
        } else {
            usage("unknown option " + k);
        }
    }
    return a;
}

void pause(long us) {
    if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
}

int writer(const Args& a) {
    std::optional<shmpipe::Queue> owned;
    if (!a.create.empty()) {
        shmpipe::QueueOptions opt;
        opt.capacity = 64 << 10;
        opt.max_message = 4096;
        if (a.create == "spsc") {
            opt.producers = shmpipe::Endpoints::one;
            opt.consumers = shmpipe::Endpoints::one;
        } else if (a.create != "mpmc") {
            usage("--create spsc|mpmc");
        }
        owned.emplace(shmpipe::Queue::create(a.queue, opt));
    }
    shmpipe::Producer<> tx(a.queue);
    std::vector<std::byte> msg(a.size, std::byte{0x5a});
    for (long i = 0; a.count == 0 || i < a.count; ++i) {
        tx.push(msg);
        pause(a.delay_us);
    }
    tx.close();
    if (owned) {
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // keep the name until killed
    }
    return 0;
}

int reader(const Args& a) {
    shmpipe::Consumer<> rx(a.queue);
    for (long i = 0; a.count == 0 || i < a.count; ++i) {
        if (!rx.pop()) return 0;
        pause(a.delay_us);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const Args a = parse(argc, argv);
    try {
        if (a.mode == "writer") return writer(a);
        if (a.mode == "reader") return reader(a);
        usage("unknown mode " + a.mode);
    } catch (const shmpipe::Error& e) {
        std::cerr << "inspect_peer: " << e.what() << "\n";
        return e.code() == shmpipe::errc::producer_died ? 5 : 2;
    }
}
