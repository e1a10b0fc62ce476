// Native pipeline stage: the source of a fan-out pool. Pushes 1..COUNT (COUNT = 0: until
// stopped) to its output queue, found through $SHMPIPE_OUTPUTS (set by pipeline-launch)
// or the first argument. SIGTERM (a drain) ends the stream cleanly: close, exit 0.
//   source COUNT [QUEUE]
#include <shmpipe/queue.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {
volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_term(int) { g_stop = 1; }
}  // namespace

int main(int argc, char** argv) {
    const char* env = std::getenv("SHMPIPE_OUTPUTS");
    if (argc < 2 || (argc < 3 && (env == nullptr || *env == '\0'))) {
        std::fprintf(stderr, "usage: source COUNT [QUEUE]   (QUEUE defaults to $SHMPIPE_OUTPUTS)\n");
        return 2;
    }
    std::signal(SIGTERM, on_term);
    try {
        const unsigned long long count = std::strtoull(argv[1], nullptr, 10);
        const std::string queue = argc >= 3 ? argv[2] : env;
        shmpipe::Producer<std::uint64_t> tx(queue);
        unsigned long long sent = 0;
        for (std::uint64_t i = 1; (count == 0 || i <= count) && g_stop == 0; ++i) {
            tx.push(i);
            ++sent;
        }
        tx.close();
        if (g_stop != 0) std::fprintf(stderr, "source: stopped after %llu messages\n", sent);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "source: %s\n", e.what());
        return 1;
    }
}
