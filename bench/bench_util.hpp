// Small helpers shared by the cross-process benchmarks in bench/ (not part of the library).
//
//   bench::now_ns()                    CLOCK_MONOTONIC in ns (comparable across processes)
//   bench::pin_to_cpu(cpu)             sched_setaffinity of the calling thread; false on failure
//   bench::cpu_relax()                 the spin-loop hint (pause / yield)
//   bench::median(v), percentile(v,p)  of a copy of v (v may be unsorted); 0 for an empty v
//   bench::SharedBlock<T>              a T in an anonymous MAP_SHARED mapping, inherited by fork()
//   bench::fork_child(cpu, fn)         fork; the child dies with the parent, pins itself to
//                                      `cpu` (-1: no pinning), runs fn() and _exit()s with its result
//   bench::wait_children(pids, ns)     reaps them by a deadline; SIGKILLs and reaps the rest;
//                                      optionally sums their CPU time and involuntary context
//                                      switches (how often another process took their core)
//
// Everything here either works or reports: nothing throws from a child, nothing leaves a
// process behind.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>
#include <new>
#include <sched.h>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace bench {

inline std::uint64_t now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

// Pins the calling thread (and the threads it creates later) to one CPU.
inline bool pin_to_cpu(int cpu) noexcept {
    if (cpu < 0) return true;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

// Nearest-rank percentile, p in [0, 100].
inline double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const double rank = std::ceil(p / 100.0 * static_cast<double>(v.size()));
    const auto i = rank < 1.0 ? std::size_t{0} : static_cast<std::size_t>(rank) - 1;
    return v[std::min(i, v.size() - 1)];
}

inline double median(std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

// A T (default-constructed) in anonymous shared memory: parent and forked children see
// the same object. Use atomics inside T for anything written concurrently.
template <class T>
class SharedBlock {
public:
    SharedBlock() {
        void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::runtime_error("mmap of a shared block failed");
        ptr_ = new (p) T();
    }
    ~SharedBlock() {
        ptr_->~T();
        ::munmap(ptr_, sizeof(T));
    }
    SharedBlock(const SharedBlock&) = delete;
    SharedBlock& operator=(const SharedBlock&) = delete;
    T* operator->() const noexcept { return ptr_; }
    T& operator*() const noexcept { return *ptr_; }

private:
    T* ptr_ = nullptr;
};

// Forks a child that dies with its parent, pins itself to `cpu` and exits with fn()'s
// result (an int). An exception in fn() is printed and becomes exit code 3. Returns the
// pid; throws std::runtime_error when fork fails.
template <class Fn>
pid_t fork_child(int cpu, Fn&& fn) {
    std::fflush(nullptr);  // no buffered output duplicated into the child
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid > 0) return pid;
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(4);  // the parent died before prctl took effect
    int code = 3;
    if (!pin_to_cpu(cpu)) {
        std::fprintf(stderr, "child %d: cannot pin to CPU %d\n", static_cast<int>(::getpid()), cpu);
        ::_exit(5);
    }
    try {
        code = fn();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "child %d: %s\n", static_cast<int>(::getpid()), e.what());
    } catch (...) {
        std::fprintf(stderr, "child %d: unknown exception\n", static_cast<int>(::getpid()));
    }
    std::fflush(nullptr);
    ::_exit(code);
}

// What the reaped children used: CPU seconds (user + system) and involuntary context
// switches. On a pinned, busy child the latter counts the times another process took its
// core: the noise of a shared machine, made visible.
struct ChildUsage {
    double cpu_seconds = 0;
    long involuntary_switches = 0;
    void add(const rusage& ru) noexcept {
        cpu_seconds += static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                       static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
        involuntary_switches += ru.ru_nivcsw;
    }
};

// Waits for every pid until deadline_ns (a now_ns() value). Children still running then
// are SIGKILLed and reaped. Returns true when all exited by themselves with status 0;
// `why` then stays empty, else it says which child failed and how. `usage` (optional)
// accumulates what the children used.
inline bool wait_children(const std::vector<pid_t>& pids, std::uint64_t deadline_ns, std::string& why,
                          ChildUsage* usage = nullptr) {
    std::vector<bool> done(pids.size(), false);
    std::size_t left = pids.size();
    bool ok = true;
    while (left > 0) {
        for (std::size_t i = 0; i < pids.size(); ++i) {
            if (done[i]) continue;
            int status = 0;
            rusage ru{};
            const pid_t r = ::wait4(pids[i], &status, WNOHANG, &ru);
            if (r == 0) continue;
            if (r > 0 && usage != nullptr) usage->add(ru);
            done[i] = true;
            --left;
            if (r < 0) {
                ok = false;
                why += "waitpid failed; ";
            } else if (WIFSIGNALED(status)) {
                ok = false;
                why += "child " + std::to_string(pids[i]) + " killed by signal " + std::to_string(WTERMSIG(status)) + "; ";
            } else if (WEXITSTATUS(status) != 0) {
                ok = false;
                why += "child " + std::to_string(pids[i]) + " exited with " + std::to_string(WEXITSTATUS(status)) + "; ";
            }
        }
        if (left == 0) break;
        if (now_ns() > deadline_ns) {
            for (std::size_t i = 0; i < pids.size(); ++i) {
                if (done[i]) continue;
                ::kill(pids[i], SIGKILL);
                ::waitpid(pids[i], nullptr, 0);
                why += "child " + std::to_string(pids[i]) + " timed out (killed); ";
            }
            return false;
        }
        timespec nap{0, 1'000'000};  // 1 ms: the parent must not steal the children's cores
        ::nanosleep(&nap, nullptr);
    }
    return ok;
}

}  // namespace bench
