// Native pipeline stage: a worker of a fan-out pool. Takes numbers from IN (shared with the
// other replicas: each message goes to exactly one worker) and pushes their squares to OUT.
//   worker IN OUT
#include <shmpipe/queue.hpp>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: worker IN OUT\n");
        return 2;
    }
    try {
        shmpipe::Consumer<std::uint64_t> rx(argv[1]);
        shmpipe::Producer<std::uint64_t> tx(argv[2]);
        while (auto v = rx.pop()) tx.push(*v * *v);
        tx.close();
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "worker: %s\n", e.what());
        return 1;
    }
}
