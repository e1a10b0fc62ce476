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

void sleeper_fence(bool symmetric) noexcept {
    if (symmetric) {
        full_fence();  // pairs with the waker's full fence (wait.hpp)
    } else {
        heavy_fence();
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

unsigned allowed_cpus() noexcept {
    static std::atomic<std::uint64_t> cache{0};  // pid << 32 | count; 0 = not computed
    const std::uint64_t pid = current_pid();
    const std::uint64_t c = cache.load(std::memory_order_relaxed);
    if (c != 0 && (c >> 32) == pid) return static_cast<unsigned>(c & 0xffffffffu);
    cpu_set_t set;
    CPU_ZERO(&set);
    const int count = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    const unsigned cpus = count > 0 ? static_cast<unsigned>(count) : 1u;
    cache.store(pid << 32 | cpus, std::memory_order_relaxed);
    return cpus;
}

namespace {

// The calling thread's seat (SpinSeat). A forked child inherits the forking thread's copy:
// the pid tells it apart, and the child has no seat until it takes one.
struct ThreadSeat {
    SpinBudget* budget = nullptr;
    std::atomic<std::uint32_t>* counted = nullptr;
    std::uint32_t pid = 0;
};
thread_local ThreadSeat t_seat;

ThreadSeat* seat() noexcept {
    return t_seat.budget != nullptr && t_seat.pid == current_pid() ? &t_seat : nullptr;
}

void leave_count(SpinBudget& b, std::atomic<std::uint32_t>& counted) noexcept {
    // The flag first: a supervisor that writes this thread off sees at most one of the two.
    if (counted.exchange(0, std::memory_order_acq_rel) == 1) b.awake.fetch_sub(1, std::memory_order_relaxed);
}

bool over_budget() noexcept {
    const ThreadSeat* s = seat();
    return s != nullptr &&
           s->budget->awake.load(std::memory_order_relaxed) > static_cast<std::int32_t>(allowed_cpus());
}

}  // namespace

void SpinSeat::enter(SpinBudget& b, std::atomic<std::uint32_t>& counted) noexcept {
    if (counted.exchange(1, std::memory_order_acq_rel) == 0) b.awake.fetch_add(1, std::memory_order_relaxed);
}

SpinSeat::SpinSeat(SpinBudget& budget, std::atomic<std::uint32_t>& counted) noexcept {
    if (seat() != nullptr) return;  // nested: the outer seat counts this thread
    t_seat = ThreadSeat{&budget, &counted, current_pid()};
    enter(budget, counted);
    active_ = true;
}

SpinSeat::~SpinSeat() {
    if (!active_) return;
    leave_count(*t_seat.budget, *t_seat.counted);
    t_seat = ThreadSeat{};
}

void SpinSeat::write_off(SpinBudget& budget, std::atomic<std::uint32_t>& counted) noexcept {
    leave_count(budget, counted);
}

AsleepInBudget::AsleepInBudget() noexcept {
    if (ThreadSeat* s = seat()) leave_count(*s->budget, *s->counted);
}

AsleepInBudget::~AsleepInBudget() {
    if (ThreadSeat* s = seat()) SpinSeat::enter(*s->budget, *s->counted);
}

namespace {

// A sched_yield that returned this late gave the CPU to a thread that did not give it back
// soon; the spinning thread then sleeps instead of yielding for kContendedForNs. On one
// allowed CPU the thread we yield to is usually the peer we wait for, so there it is no sign.
constexpr std::uint64_t kSlowYieldNs = 200'000;
constexpr std::uint64_t kContendedForNs = 50'000'000;
thread_local std::uint64_t t_contended_until_ns = 0;

}  // namespace

bool yields_lose_cpu() noexcept { return monotonic_ns() < t_contended_until_ns; }

bool SpinWait::spin() noexcept {
    // More of our group awake than CPUs (SpinBudget): spinning would take a CPU from the
    // thread we wait for. One sched_yield hands the CPU to a thread of ours that shares it (on
    // one CPU, that is the whole hand-off); then sleep. Checked at the start and at every yield.
    if ((iterations_ == 0 || iterations_ >= kPauseOnly) && over_budget()) {
        if (yielded_over_budget_) return false;
        yielded_over_budget_ = true;
        ::sched_yield();
        return true;
    }
    // ~1 µs of pause first: a peer on another core usually answers within it (ping-pong).
    if (iterations_ < kPauseOnly && (iterations_ != 0 || allowed_cpus() != 1)) {
        ++iterations_;
        cpu_relax();
        return true;
    }
    if (iterations_ < kPauseOnly) iterations_ = kPauseOnly;  // pinned: straight to yielding
    const std::uint64_t now = monotonic_ns();
    // A yield lately handed the CPU to a thread that kept it (a busy loop of another program):
    // yielding again would wait a whole time slice (~4 ms here) each time, while a sleeper
    // woken by futex_wake is scheduled at once. So sleep straight after the pause burst.
    if (now < t_contended_until_ns) return false;
    if (started_ns_ == 0) started_ns_ = now;
    if (now - started_ns_ >= kSpinBeforeSleepNs) return false;
    ++iterations_;
    ::sched_yield();  // a peer that shares our core runs now; alone on the core it returns at once
    const std::uint64_t after = monotonic_ns();
    if (after - now >= kSlowYieldNs && allowed_cpus() != 1) {
        t_contended_until_ns = after + kContendedForNs;
        return false;
    }
    for (int i = 0; i < 4; ++i) cpu_relax();
    return true;
}

}  // namespace shmpipe::detail
