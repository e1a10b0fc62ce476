#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/detail/wait.hpp>

#include <cerrno>
#include <climits>
#include <ctime>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace shmpipe::detail {

std::atomic<bool> g_light_fence_ok{false};
std::atomic<std::uint32_t> g_fence_word{0};

namespace {

std::atomic<int> g_registered_pid{0};
std::atomic<bool> g_membarrier_broken{false};

long membarrier(int cmd) noexcept { return ::syscall(__NR_membarrier, cmd, 0u, 0); }

}  // namespace

void register_process_for_fences() noexcept {
    const int pid = static_cast<int>(::getpid());
    if (g_registered_pid.load(std::memory_order_acquire) == pid) return;
    // A forked child must register again before it may skip fences.
    g_light_fence_ok.store(false, std::memory_order_seq_cst);
    const long supported = membarrier(MEMBARRIER_CMD_QUERY);
    const bool ok = supported > 0 && (supported & MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0 &&
                    (supported & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) != 0 &&
                    membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
    if (!ok) g_membarrier_broken.store(true, std::memory_order_relaxed);
    g_light_fence_ok.store(ok, std::memory_order_seq_cst);
    g_registered_pid.store(pid, std::memory_order_release);
}

void heavy_fence() noexcept {
    full_fence();
    if (g_membarrier_broken.load(std::memory_order_relaxed)) return;
    if (membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0) {
        // Wakers in this process fence for real from now on; the bounded sleep covers the rest.
        g_membarrier_broken.store(true, std::memory_order_relaxed);
        g_light_fence_ok.store(false, std::memory_order_seq_cst);
    }
}

int futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::uint64_t deadline_ns) noexcept {
    static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
    timespec ts{};
    timespec* tsp = nullptr;
    if (deadline_ns != 0) {
        ts.tv_sec = static_cast<time_t>(deadline_ns / 1'000'000'000u);
        ts.tv_nsec = static_cast<long>(deadline_ns % 1'000'000'000u);
        tsp = &ts;
    }
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline; no PRIVATE flag: the
    // word lives in memory shared between processes.
    const long rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_BITSET,
                              expected, tsp, nullptr, FUTEX_BITSET_MATCH_ANY);
    if (rc == 0) return 0;
    if (errno == EAGAIN) return 0;
    return errno;
}

int futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept {
    const long rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, count,
                              nullptr, nullptr, 0);
    return rc < 0 ? 0 : static_cast<int>(rc);
}

namespace {

// Whether this process may run on one CPU only (taskset -c 0): then spinning can never see
// the peer make progress, and the first thing to do is to hand it the core. Cached per pid.
bool pinned_to_one_cpu() noexcept {
    static std::atomic<std::uint64_t> cache{0};  // pid << 1 | answer; 0 = not computed
    const std::uint64_t pid = current_pid();
    const std::uint64_t c = cache.load(std::memory_order_relaxed);
    if (c != 0 && (c >> 1) == pid) return (c & 1) != 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    const bool one = ::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) == 1;
    cache.store(pid << 1 | (one ? 1u : 0u), std::memory_order_relaxed);
    return one;
}

}  // namespace

bool SpinWait::spin() noexcept {
    // ~1 µs of pause first: a peer on another core usually answers within it (ping-pong).
    constexpr std::uint32_t kPauseOnly = 32;
    if (iterations_ < kPauseOnly && (iterations_ != 0 || !pinned_to_one_cpu())) {
        ++iterations_;
        cpu_relax();
        return true;
    }
    if (iterations_ < kPauseOnly) iterations_ = kPauseOnly;  // pinned: straight to yielding
    const std::uint64_t now = monotonic_ns();
    if (started_ns_ == 0) started_ns_ = now;
    if (now - started_ns_ >= kSpinBeforeSleepNs) return false;
    ++iterations_;
    ::sched_yield();  // a peer that shares our core runs now; alone on the core it returns at once
    for (int i = 0; i < 4; ++i) cpu_relax();
    return true;
}

}  // namespace shmpipe::detail
