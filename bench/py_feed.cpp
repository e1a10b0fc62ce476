// py_feed: the C++ producer of bench/queue_bench_py.py (spawned by it). Pushes COUNT
// messages of SIZE bytes (Producer<>: raw bytes; the first 8 bytes are the sequence number)
// to an existing queue, then closes it.
//   py_feed QUEUE SIZE COUNT
#include <shmpipe/queue.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: py_feed QUEUE SIZE COUNT\n");
        return 2;
    }
    try {
        const std::size_t size = std::strtoull(argv[2], nullptr, 10);
        const std::uint64_t count = std::strtoull(argv[3], nullptr, 10);
        shmpipe::Producer<> tx(argv[1]);
        for (std::uint64_t i = 0; i < count; ++i) {
            auto slot = tx.reserve(size);
            std::memcpy(slot.span().data(), &i, size < sizeof i ? size : sizeof i);
            slot.commit();
        }
        tx.close();
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "py_feed: %s\n", e.what());
        return 1;
    }
}
