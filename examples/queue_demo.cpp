// A writer -> reader pair of processes over one shmpipe SPSC queue.
//
// The parent creates the queue and forks a reader; the writer pushes N sequence-numbered
// messages and closes; the reader checks order and a checksum, then reports. Usage:
//   queue_demo [messages=5000000] [payload_bytes=64]
#include <shmpipe/queue.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace {

struct Message {
    std::uint64_t seq;
    std::array<char, 56> payload;
};

int run_reader(const std::string& name, std::uint64_t expected) {
    shmpipe::Consumer<Message> rx(name);
    std::uint64_t next = 0, checksum = 0;
    while (auto m = rx.pop()) {
        if (m->seq != next) {
            std::fprintf(stderr, "reader: expected message %llu, got %llu\n", static_cast<unsigned long long>(next),
                         static_cast<unsigned long long>(m->seq));
            return 1;
        }
        checksum += m->seq * 2654435761u + static_cast<unsigned char>(m->payload[0]);
        ++next;
    }
    std::printf("reader: received %llu messages in order, checksum %llx\n", static_cast<unsigned long long>(next),
                static_cast<unsigned long long>(checksum));
    return next == expected ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    const std::uint64_t count = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 5'000'000;
    const std::string name = "demo-" + std::to_string(::getpid());
    try {
        shmpipe::QueueOptions opt;
        opt.producers = shmpipe::Endpoints::one;
        opt.consumers = shmpipe::Endpoints::one;
        opt.capacity = 1 << 20;
        opt.max_message = sizeof(Message);
        auto queue = shmpipe::Queue::create(name, opt);  // removed when `queue` goes out of scope

        const pid_t reader = ::fork();
        if (reader < 0) {
            std::perror("fork");
            return 1;
        }
        if (reader == 0) {
            int rc = 1;
            try {
                rc = run_reader(name, count);
            } catch (const std::exception& e) {
                std::fprintf(stderr, "reader: %s\n", e.what());
            }
            std::fflush(stdout);
            ::_exit(rc);
        }

        const auto start = std::chrono::steady_clock::now();
        {
            shmpipe::Producer<Message> tx(name);
            Message m{};
            std::memset(m.payload.data(), 'x', m.payload.size());
            for (std::uint64_t i = 0; i < count; ++i) {
                m.seq = i;
                tx.push(m);
            }
        }  // the producer closes: end of stream for the reader
        int status = 0;
        ::waitpid(reader, &status, 0);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::printf("writer: sent %llu messages of %zu bytes in %.3f s (%.1f M msg/s, %.0f MB/s)\n",
                    static_cast<unsigned long long>(count), sizeof(Message), secs, static_cast<double>(count) / secs / 1e6,
                    static_cast<double>(count * sizeof(Message)) / secs / 1e6);
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        std::printf("%s\n", ok ? "ok" : "FAILED: the reader did not receive everything in order");
        return ok ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "queue_demo: %s\n", e.what());
        return 1;
    }
}
