// Native pipeline stage: pushes the numbers 1..COUNT to a queue, then closes it.
//   writer QUEUE COUNT        (QUEUE: a shared-memory queue name, e.g. "{queue.nums}" in a spec)
// Stops early (and still closes, exit 0) on SIGTERM, so a drain can stop it.
#include <shmpipe/queue.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>

namespace {
volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_term(int) { g_stop = 1; }
}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: writer QUEUE COUNT\n");
        return 2;
    }
    std::signal(SIGTERM, on_term);
    try {
        const unsigned long long count = std::strtoull(argv[2], nullptr, 10);
        shmpipe::Producer<std::uint64_t> tx(argv[1]);
        unsigned long long sent = 0;
        for (std::uint64_t i = 1; i <= count && g_stop == 0; ++i, ++sent) tx.push(i);
        tx.close();
        std::printf("wrote %llu messages\n", sent);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "writer: %s\n", e.what());
        return 1;
    }
}
