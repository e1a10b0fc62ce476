// Native pipeline stage: the collector of a fan-out pool. Reads results from its input queue
// ($SHMPIPE_INPUTS, set by pipeline-launch, or the first argument) until end of stream and
// prints how many and their sum. A worker that died is noted and the rest still counted: in a
// pipeline, the launcher reports that death and what it cost, once, whoever noticed it first,
// so a consumer that failed on producer_died would make the run's outcome a race.
//   collector [QUEUE]
#include <shmpipe/error.hpp>
#include <shmpipe/queue.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

int main(int argc, char** argv) {
    const char* env = std::getenv("SHMPIPE_INPUTS");
    if (argc < 2 && (env == nullptr || *env == '\0')) {
        std::fprintf(stderr, "usage: collector [QUEUE]   (QUEUE defaults to $SHMPIPE_INPUTS)\n");
        return 2;
    }
    try {
        shmpipe::Consumer<std::uint64_t> rx(argc >= 2 ? std::string(argv[1]) : std::string(env));
        unsigned long long count = 0, sum = 0;
        while (true) {
            try {
                auto v = rx.pop();
                if (!v) break;
                ++count;
                sum += *v;
            } catch (const shmpipe::Error& e) {
                if (e.code() != shmpipe::make_error_code(shmpipe::errc::producer_died)) throw;
                std::fprintf(stderr, "collector: %s\n", e.what());
            }
        }
        std::printf("collected %llu results, sum %llu\n", count, sum);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "collector: %s\n", e.what());
        return 1;
    }
}
