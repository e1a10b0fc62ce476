// Native pipeline stage: reads numbers from a queue until end of stream, checks they arrive
// in order, prints how many and their sum.
//   reader QUEUE
#include <shmpipe/queue.hpp>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: reader QUEUE\n");
        return 2;
    }
    try {
        shmpipe::Consumer<std::uint64_t> rx(argv[1]);
        unsigned long long count = 0, sum = 0;
        std::uint64_t expected = 1;
        while (auto v = rx.pop()) {
            if (*v != expected) {
                std::fprintf(stderr, "reader: expected %llu, got %llu\n", static_cast<unsigned long long>(expected),
                             static_cast<unsigned long long>(*v));
                return 1;
            }
            ++expected;
            ++count;
            sum += *v;
        }
        std::printf("read %llu messages, sum %llu\n", count, sum);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "reader: %s\n", e.what());
        return 1;
    }
}
