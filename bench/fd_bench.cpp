// fd_bench: what a readiness descriptor (Consumer::fd) costs, against the futex wait.
//
//   fd_bench [--rounds N] [--wakes N] [--messages N]
//
// 1. Wake-up latency of a sleeping consumer: a producer process sends one 64-byte message
//    every 300 µs (well past the consumer's ~20 µs spin, so the consumer is asleep when it
//    arrives) carrying its send time; the consumer records receive time - send time.
//      futex   the consumer blocks in pop()
//      poll    the consumer waits in poll() on rx.fd(), then try_pop until empty
//      epoll   the same with an epoll set holding rx.fd()
// 2. Throughput, SPSC, 64-byte messages, the producer pushing as fast as it can: a consumer
//    blocking in pop() (no descriptor exists) against one waiting on its descriptor with
//    epoll. The difference is what one armed consumer costs the stream.
// Producer on CPU 0, consumer on CPU 1 (when there are two). Every message is checked by
// sequence; a measurement that lost or misordered a message fails the run. Each
// measurement runs --rounds times (default 5), the kinds interleaved; medians reported.
// Plain SPSC throughput with no descriptor before/after is queue_bench's job
// (build/ci/bin/queue_bench --only spsc-block,spsc-spin).
#include "bench_util.hpp"

#include <shmpipe/queue.hpp>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <poll.h>
#include <string>
#include <sys/epoll.h>
#include <unistd.h>
#include <vector>

namespace {

using bench::now_ns;

struct Msg {
    std::uint64_t seq;
    std::uint64_t sent_ns;
    std::uint64_t pad[6];
};
static_assert(sizeof(Msg) == 64);

enum class How { futex, poll, epoll };
const char* label(How h) { return h == How::futex ? "futex" : h == How::poll ? "poll" : "epoll"; }

struct Shared {
    std::atomic<int> consumer_ready{0};
    std::atomic<std::uint64_t> received{0};
    std::atomic<std::uint64_t> first_ns{0}, last_ns{0};
    std::atomic<int> failed{0};
    double latencies_ns[20000];
};

int g_cpus = 1;
int cpu(int i) { return g_cpus >= 2 ? i : -1; }

std::string queue_name(const char* what) {
    static int counter = 0;
    return "bench.fd." + std::to_string(::getpid()) + "." + what + "." + std::to_string(++counter);
}

// The consumer's loop: returns 0 when `count` messages arrived in order and the stream ended.
int consume(const std::string& name, How how, std::uint64_t count, Shared& sh, bool record) {
    shmpipe::Consumer<Msg> rx(name);
    int ep = -1;
    int fd = -1;
    if (how != How::futex) {
        fd = rx.fd();
        if (how == How::epoll) {
            ep = ::epoll_create1(EPOLL_CLOEXEC);
            epoll_event ev{};
            ev.events = EPOLLIN;
            ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
    }
    sh.consumer_ready.store(1);
    std::uint64_t next = 0;
    auto take = [&](const Msg& m) {
        const std::uint64_t now = now_ns();
        if (m.seq != next) sh.failed.store(1);
        if (next == 0) sh.first_ns.store(m.sent_ns);
        if (record && next < std::size(sh.latencies_ns)) sh.latencies_ns[next] = static_cast<double>(now - m.sent_ns);
        ++next;
        sh.last_ns.store(now);
    };
    if (how == How::futex) {
        while (auto m = rx.pop()) take(*m);
    } else {
        for (;;) {
            if (how == How::poll) {
                pollfd p{fd, POLLIN, 0};
                if (::poll(&p, 1, 10'000) != 1) return 2;  // a lost wake-up
            } else {
                epoll_event ev{};
                if (::epoll_wait(ep, &ev, 1, 10'000) != 1) return 2;
            }
            while (auto m = rx.try_pop()) take(*m);
            if (rx.ended()) break;
        }
    }
    if (ep >= 0) ::close(ep);
    sh.received.store(next);
    return next == count && sh.failed.load() == 0 ? 0 : 1;
}

int produce(const std::string& name, std::uint64_t count, std::uint64_t gap_ns, Shared& sh) {
    shmpipe::Producer<Msg> tx(name);
    while (sh.consumer_ready.load() == 0) ::usleep(100);
    ::usleep(2000);  // the consumer is asleep now
    Msg m{};
    std::uint64_t next_at = now_ns();
    for (std::uint64_t i = 0; i < count; ++i) {
        if (gap_ns != 0) {
            next_at += gap_ns;
            while (now_ns() < next_at) bench::cpu_relax();  // keeps the producer awake and on time
        }
        m.seq = i;
        m.sent_ns = now_ns();
        tx.push(m);
    }
    tx.close();
    return 0;
}

struct Result {
    double median_ns = 0, p99_ns = 0, msgs_per_s = 0;
};

Result run(How how, std::uint64_t count, std::uint64_t gap_ns) {
    const std::string name = queue_name(label(how));
    shmpipe::QueueOptions o;
    o.producers = shmpipe::Endpoints::one;
    o.consumers = shmpipe::Endpoints::one;
    o.capacity = 1 << 16;
    o.max_message = sizeof(Msg);
    auto q = shmpipe::Queue::create(name, o);
    bench::SharedBlock<Shared> sh;
    const bool latency = gap_ns != 0;
    std::vector<pid_t> pids;
    pids.push_back(bench::fork_child(cpu(1), [&] { return consume(name, how, count, *sh, latency); }));
    pids.push_back(bench::fork_child(cpu(0), [&] { return produce(name, count, gap_ns, *sh); }));
    std::string why;
    if (!bench::wait_children(pids, now_ns() + 120'000'000'000ull, why)) {
        std::fprintf(stderr, "fd_bench: %s run failed: %s (received %" PRIu64 " of %" PRIu64 ")\n", label(how),
                     why.c_str(), sh->received.load(), count);
        std::exit(1);
    }
    Result r;
    if (latency) {
        std::vector<double> v(sh->latencies_ns, sh->latencies_ns + std::min<std::uint64_t>(count, 20000));
        v.erase(v.begin(), v.begin() + static_cast<long>(v.size() / 20));  // warm-up
        r.median_ns = bench::median(v);
        r.p99_ns = bench::percentile(v, 99);
    } else {
        const double secs = static_cast<double>(sh->last_ns.load() - sh->first_ns.load()) / 1e9;
        r.msgs_per_s = secs > 0 ? static_cast<double>(count) / secs : 0;
    }
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    int rounds = 5;
    std::uint64_t wakes = 2000, messages = 2'000'000;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&] {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "fd_bench: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return std::strtoull(argv[++i], nullptr, 10);
        };
        if (a == "--rounds") {
            rounds = static_cast<int>(value());
        } else if (a == "--wakes") {
            wakes = std::min<std::uint64_t>(value(), 20000);
        } else if (a == "--messages") {
            messages = value();
        } else {
            std::fprintf(stderr, "usage: fd_bench [--rounds N] [--wakes N] [--messages N]\n");
            return 2;
        }
    }
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0) g_cpus = CPU_COUNT(&set);

    const How kinds[] = {How::futex, How::poll, How::epoll};
    std::vector<double> lat_med[3], lat_p99[3], tput[2];
    for (int r = 0; r < rounds; ++r) {
        for (int k = 0; k < 3; ++k) {
            const How how = kinds[(k + r) % 3];  // interleaved, order rotated per round
            const Result res = run(how, wakes, 300'000);
            lat_med[static_cast<int>(how)].push_back(res.median_ns);
            lat_p99[static_cast<int>(how)].push_back(res.p99_ns);
        }
        for (int k = 0; k < 2; ++k) {
            const How how = (k + r) % 2 == 0 ? How::futex : How::epoll;
            tput[how == How::futex ? 0 : 1].push_back(run(how, messages, 0).msgs_per_s);
        }
    }
    std::printf("fd_bench: %d rounds, %d CPUs, producer CPU 0, consumer CPU 1; medians over rounds\n", rounds,
                g_cpus);
    std::printf("\nwake-up latency of a sleeping consumer (send -> receive, %" PRIu64 " messages 300 us apart)\n",
                wakes);
    std::printf("  %-7s %12s %12s\n", "wait", "median us", "p99 us");
    for (int k = 0; k < 3; ++k) {
        std::printf("  %-7s %12.1f %12.1f\n", label(kinds[k]), bench::median(lat_med[k]) / 1e3,
                    bench::median(lat_p99[k]) / 1e3);
    }
    const double base = bench::median(tput[0]);
    const double armed = bench::median(tput[1]);
    std::printf("\nSPSC throughput, 64 B, producer flat out (%" PRIu64 " messages)\n", messages);
    std::printf("  %-28s %14.0f msgs/s\n", "consumer in pop() (no fd)", base);
    std::printf("  %-28s %14.0f msgs/s  (%.2fx)\n", "consumer on fd() with epoll", armed, base > 0 ? armed / base : 0);
    return 0;
}
