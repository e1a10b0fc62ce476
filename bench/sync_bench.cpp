// Synchronisation benchmark: shmpipe against its peers, in one run, medians and ratios.
//
//   sync_bench [--quick] [--reps N]
//
// 1. Uncontended lock+unlock (one thread): shmpipe::Mutex vs a process-shared pthread
//    mutex (plain and robust) and boost::interprocess::interprocess_mutex, all in shared memory.
// 2. Contended lock+unlock: two processes (pinned to cores 0 and 1 when there are two)
//    each doing N lock/unlock pairs on one mutex.
// 3. Hand-off latency across two processes (semaphore ping-pong, one way = round trip / 2):
//    shmpipe::Semaphore vs POSIX sem_post/sem_wait (unnamed, pshared, in shared memory)
//    and boost::interprocess::named_semaphore.
// 4. Pipe: throughput (64 B and 4 KiB messages, one way) and round trip (64 B ping-pong)
//    vs a raw AF_UNIX socketpair doing one write and one exact-size read per message.
// Each measurement is repeated (default 5) and the median reported.
#include <shmpipe/mutex.hpp>
#include <shmpipe/pipe.hpp>
#include <shmpipe/semaphore.hpp>

#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/named_semaphore.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <string>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace sp = shmpipe;
namespace bip = boost::interprocess;

namespace {

int g_reps = 5;
bool g_quick = false;
int g_cores = 1;

double now_ns() {
    return static_cast<double>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

void pin(int core) {
    if (g_cores < 2) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core % g_cores, &set);
    ::sched_setaffinity(0, sizeof set, &set);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Runs every contender once per round, g_reps rounds (so load changes hit all alike),
// and returns each one's median.
std::vector<double> interleaved(const std::vector<std::function<double()>>& fs) {
    std::vector<std::vector<double>> r(fs.size());
    for (int i = 0; i < g_reps; ++i) {
        for (std::size_t k = 0; k < fs.size(); ++k) r[k].push_back(fs[k]());
    }
    std::vector<double> out;
    for (auto& v : r) out.push_back(median(v));
    return out;
}

// Median over g_reps of f() (each returns ns per operation).
double repeat(const std::function<double()>& f) {
    std::vector<double> r;
    for (int i = 0; i < g_reps; ++i) r.push_back(f());
    return median(r);
}

void* shared_block(std::size_t n) {
    void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        std::perror("mmap");
        std::exit(1);
    }
    return p;
}

// Runs child() in a forked process pinned to core 1 while the parent (core 0) runs parent().
double with_child(const std::function<void()>& child, const std::function<double()>& parent) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        pin(1);
        child();
        ::_exit(0);
    }
    pin(0);
    const double r = parent();
    int status = 0;
    ::waitpid(pid, &status, 0);
    return r;
}

void row(const char* what, double ns, double reference, const char* ref_name) {
    std::printf("  %-44s %10.1f ns   %5.2fx %s\n", what, ns, ns / reference, ref_name);
}

std::string bench_name(const char* stem) { return std::string("bench-") + stem + "-" + std::to_string(::getpid()); }

// --- 1/2: mutexes ----------------------------------------------------------------------------

template <class Lock, class Unlock>
double uncontended(long n, Lock lock, Unlock unlock) {
    const double t0 = now_ns();
    for (long i = 0; i < n; ++i) {
        lock();
        unlock();
    }
    return (now_ns() - t0) / static_cast<double>(n);
}

struct PthreadShared {
    pthread_mutex_t m;
    explicit PthreadShared(bool robust) {
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        if (robust) pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&m, &a);
        pthread_mutexattr_destroy(&a);
    }
};

void bench_mutexes() {
    const long n = g_quick ? 2'000'000 : 10'000'000;
    std::printf("\nUncontended lock+unlock, one thread (%ld pairs, median of %d)\n", n, g_reps);
    auto* pt = new (shared_block(4096)) PthreadShared(false);
    auto* ptr = new (shared_block(4096)) PthreadShared(true);
    auto* bm = new (shared_block(4096)) bip::interprocess_mutex();
    const std::string name = bench_name("mutex");
    sp::remove(name);
    auto m = sp::Mutex::create(name);
    pin(0);
    const auto t = interleaved({
        [&] { return uncontended(n, [&] { pthread_mutex_lock(&pt->m); }, [&] { pthread_mutex_unlock(&pt->m); }); },
        [&] { return uncontended(n, [&] { pthread_mutex_lock(&ptr->m); }, [&] { pthread_mutex_unlock(&ptr->m); }); },
        [&] { return uncontended(n, [&] { bm->lock(); }, [&] { bm->unlock(); }); },
        [&] { return uncontended(n, [&] { m.lock(); }, [&] { m.unlock(); }); },
    });
    const double t_pt = t[0], t_ptr = t[1], t_bm = t[2], t_sp = t[3];
    row("pthread_mutex (PROCESS_SHARED)", t_pt, t_pt, "of pthread");
    row("pthread_mutex (PROCESS_SHARED, ROBUST)", t_ptr, t_pt, "of pthread");
    row("boost::interprocess::interprocess_mutex", t_bm, t_pt, "of pthread");
    row("shmpipe::Mutex (robust)", t_sp, t_pt, "of pthread   [target <= 1.5x]");

    const long c = g_quick ? 200'000 : 1'000'000;
    std::printf("\nContended lock+unlock, two processes x %ld pairs (ns per pair, median of %d)\n", c, g_reps);
    auto contended = [&](const std::function<void()>& lock, const std::function<void()>& unlock) {
        return repeat([&] {
            auto* go = static_cast<std::atomic<int>*>(shared_block(4096));
            const double r = with_child(
                [&] {
                    go->fetch_add(1);
                    while (go->load() < 2) {
                    }
                    for (long i = 0; i < c; ++i) {
                        lock();
                        unlock();
                    }
                },
                [&] {
                    go->fetch_add(1);
                    while (go->load() < 2) {
                    }
                    const double t0 = now_ns();
                    for (long i = 0; i < c; ++i) {
                        lock();
                        unlock();
                    }
                    return (now_ns() - t0) / static_cast<double>(c);
                });
            ::munmap(go, 4096);
            return r;
        });
    };
    const double c_pt = contended([&] { pthread_mutex_lock(&pt->m); }, [&] { pthread_mutex_unlock(&pt->m); });
    const double c_bm = contended([&] { bm->lock(); }, [&] { bm->unlock(); });
    const double c_sp = contended([&] { m.lock(); }, [&] { m.unlock(); });
    row("pthread_mutex (PROCESS_SHARED)", c_pt, c_pt, "of pthread");
    row("boost::interprocess::interprocess_mutex", c_bm, c_pt, "of pthread");
    row("shmpipe::Mutex (robust)", c_sp, c_pt, "of pthread");
}

// --- 3: hand-off -----------------------------------------------------------------------------

// Ping-pong: parent posts `a` and waits `b`, the child the reverse. One way = round trip / 2.
double pingpong(long n, const std::function<void()>& post_a, const std::function<void()>& wait_a,
                const std::function<void()>& post_b, const std::function<void()>& wait_b) {
    return with_child(
        [&] {
            for (long i = 0; i < n; ++i) {
                wait_a();
                post_b();
            }
        },
        [&] {
            post_a();  // warm-up round
            wait_b();
            const double t0 = now_ns();
            for (long i = 1; i < n; ++i) {
                post_a();
                wait_b();
            }
            return (now_ns() - t0) / static_cast<double>(n - 1) / 2.0;
        });
}

void bench_handoff() {
    const long n = g_quick ? 5'000 : 20'000;
    std::printf("\nHand-off latency, two processes, semaphore ping-pong (one way, %ld round trips, median of %d)\n", n,
                g_reps);
    auto* ps = static_cast<sem_t*>(shared_block(4096));
    const std::string ba = "shmpipe.bench-bsa-" + std::to_string(::getpid());
    const std::string bb = "shmpipe.bench-bsb-" + std::to_string(::getpid());
    const std::string na = bench_name("sem-a");
    const std::string nb = bench_name("sem-b");
    const auto th = interleaved({[&] {
        sem_init(&ps[0], 1, 0);
        sem_init(&ps[1], 1, 0);
        const double r = pingpong(n, [&] { sem_post(&ps[0]); }, [&] { sem_wait(&ps[0]); }, [&] { sem_post(&ps[1]); },
                                  [&] { sem_wait(&ps[1]); });
        sem_destroy(&ps[0]);
        sem_destroy(&ps[1]);
        return r;
    },
    [&] {
        bip::named_semaphore::remove(ba.c_str());
        bip::named_semaphore::remove(bb.c_str());
        bip::named_semaphore sa(bip::create_only, ba.c_str(), 0);
        bip::named_semaphore sb(bip::create_only, bb.c_str(), 0);
        const double r = pingpong(n, [&] { sa.post(); }, [&] { sa.wait(); }, [&] { sb.post(); }, [&] { sb.wait(); });
        bip::named_semaphore::remove(ba.c_str());
        bip::named_semaphore::remove(bb.c_str());
        return r;
    },
    [&] {
        sp::remove(na);
        sp::remove(nb);
        auto a = sp::Semaphore::create(na, 0);
        auto b = sp::Semaphore::create(nb, 0);
        return pingpong(n, [&] { a.release(); }, [&] { a.acquire(); }, [&] { b.release(); }, [&] { b.acquire(); });
    }});
    const double t_posix = th[0], t_boost = th[1], t_sp = th[2];
    row("POSIX sem_post/sem_wait (pshared)", t_posix, t_posix, "of POSIX");
    row("boost::interprocess::named_semaphore", t_boost, t_posix, "of POSIX");
    row("shmpipe::Semaphore", t_sp, t_posix, "of POSIX   [target <= 1.0x]");
}

// --- 4: pipes --------------------------------------------------------------------------------

void write_all(int fd, const void* p, std::size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
        const ssize_t w = ::write(fd, c, n);
        if (w <= 0) std::exit(1);
        c += w;
        n -= static_cast<std::size_t>(w);
    }
}
void read_all(int fd, void* p, std::size_t n) {
    char* c = static_cast<char*>(p);
    while (n > 0) {
        const ssize_t r = ::read(fd, c, n);
        if (r <= 0) std::exit(1);
        c += r;
        n -= static_cast<std::size_t>(r);
    }
}

double raw_throughput(long n, std::size_t size) {
    int sv[2];
    ::socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    const double r = with_child(
        [&] {
            ::close(sv[0]);
            std::vector<char> buf(size, 'x');
            for (long i = 0; i < n; ++i) write_all(sv[1], buf.data(), size);
        },
        [&] {
            ::close(sv[1]);
            std::vector<char> buf(size);
            const double t0 = now_ns();
            for (long i = 0; i < n; ++i) read_all(sv[0], buf.data(), size);
            return (now_ns() - t0) / static_cast<double>(n);
        });
    ::close(sv[0]);
    return r;
}

double pipe_throughput(long n, std::size_t size) {
    auto [a, b] = sp::Pipe::create();
    const double r = with_child(
        [&, &tx = b] {
            std::vector<std::byte> buf(size, std::byte{'x'});
            for (long i = 0; i < n; ++i) tx.send_bytes(buf);
        },
        [&, &rx = a, &other = b] {
            other.close();
            const double t0 = now_ns();
            std::size_t total = 0;
            for (long i = 0; i < n; ++i) total += rx.recv_bytes().size();
            if (total != static_cast<std::size_t>(n) * size) std::exit(1);
            return (now_ns() - t0) / static_cast<double>(n);
        });
    return r;
}

double raw_roundtrip(long n, std::size_t size) {
    int sv[2];
    ::socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    const double r = with_child(
        [&] {
            std::vector<char> buf(size);
            for (long i = 0; i < n; ++i) {
                read_all(sv[1], buf.data(), size);
                write_all(sv[1], buf.data(), size);
            }
        },
        [&] {
            std::vector<char> buf(size, 'x');
            const double t0 = now_ns();
            for (long i = 0; i < n; ++i) {
                write_all(sv[0], buf.data(), size);
                read_all(sv[0], buf.data(), size);
            }
            return (now_ns() - t0) / static_cast<double>(n);
        });
    ::close(sv[0]);
    ::close(sv[1]);
    return r;
}

double pipe_roundtrip(long n, std::size_t size) {
    auto [a, b] = sp::Pipe::create();
    return with_child(
        [&, &peer = b] {
            for (long i = 0; i < n; ++i) peer.send_bytes(peer.recv_bytes());
        },
        [&, &me = a] {
            std::vector<std::byte> buf(size, std::byte{'x'});
            const double t0 = now_ns();
            for (long i = 0; i < n; ++i) {
                me.send_bytes(buf);
                buf = me.recv_bytes();
            }
            return (now_ns() - t0) / static_cast<double>(n);
        });
}

void bench_pipes() {
    const long n = g_quick ? 50'000 : 200'000;
    std::printf("\nPipe throughput, one way, two processes (ns per message, %ld messages, median of %d)\n", n, g_reps);
    for (const std::size_t size : {std::size_t{64}, std::size_t{4096}}) {
        const long m = size > 1000 ? n / 4 : n;
        const auto t = interleaved({[&] { return raw_throughput(m, size); }, [&] { return pipe_throughput(m, size); }});
        const double raw = t[0], ours = t[1];
        char what[80];
        std::snprintf(what, sizeof what, "raw socketpair, %zu B messages", size);
        row(what, raw, raw, "of raw");
        std::snprintf(what, sizeof what, "shmpipe::Pipe, %zu B messages (%.0f MB/s)", size,
                      static_cast<double>(size) * 1e3 / ours);
        row(what, ours, raw, "of raw   [target <= 1.3x]");
    }
    const long rt = g_quick ? 5'000 : 20'000;
    std::printf("\nPipe round trip, 64 B ping-pong, two processes (%ld round trips, median of %d)\n", rt, g_reps);
    const auto t = interleaved({[&] { return raw_roundtrip(rt, 64); }, [&] { return pipe_roundtrip(rt, 64); }});
    const double raw = t[0], ours = t[1];
    row("raw socketpair", raw, raw, "of raw");
    row("shmpipe::Pipe", ours, raw, "of raw   [target <= 1.3x]");
}

}  // namespace

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") {
            g_quick = true;
            g_reps = 3;
        } else if (a == "--reps" && i + 1 < argc) {
            g_reps = std::max(1, std::atoi(argv[++i]));
        } else {
            std::fprintf(stderr, "usage: sync_bench [--quick] [--reps N]\n");
            return 2;
        }
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    ::sched_getaffinity(0, sizeof set, &set);
    g_cores = CPU_COUNT(&set);
    std::printf("sync_bench: %d usable core(s); %s\n", g_cores,
                g_cores >= 2 ? "parent pinned to core 0, child to core 1" : "not pinned (one core)");
    try {
        bench_mutexes();
        bench_handoff();
        bench_pipes();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sync_bench: %s\n", e.what());
        return 1;
    }
    sp::remove(bench_name("mutex"));
    return 0;
}
