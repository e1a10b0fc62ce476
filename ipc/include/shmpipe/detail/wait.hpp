// Blocking primitives shared by every shmpipe object: futex waits on words in a shared
// segment, an asymmetric fence that keeps the sleeper check off the hot path (or, per queue,
// a symmetric one), and the spin-then-sleep policy.
//
// The lost-wake-up problem and how we avoid it (a Dekker pair):
//   sleeper:  waiting = 1;  heavy_fence();  if (condition) cancel;  else futex_wait
//   waker:    publish (release);  light_fence();  if (waiting) wake
// light_fence() is only a compiler barrier when membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)
// works: the sleeper's heavy_fence() then makes every running registered thread execute a
// full barrier, so either the waker's publish is visible to the sleeper's re-check, or the
// waker's load of `waiting` sees 1. Only the side that goes to sleep pays (a few µs).
// Without membarrier, light_fence() is a real seq_cst fence. Every sleep is also bounded
// (callers re-check at least every few hundred ms), so even a kernel that refuses
// membarrier at run time costs latency, never a hang.
//
// Symmetric fences (waker_fence / sleeper_fence with symmetric = true): both halves are a
// full seq_cst fence between the side's store and its load. The fences are totally ordered
// (C++ [atomics.order]): if the waker's fence comes first, the sleeper's re-check after its
// own fence sees the publish (which precedes the waker's fence); otherwise the waker's load of
// `waiting` after its fence sees the sleeper's mark. Either way the wake-up is not lost, and
// no membarrier is needed: a sleep costs no IPI, a publish costs one locked instruction. It
// pays where sleeps are about as frequent as publishes (a pool's task and result queues).
// A symmetric sleeper is only safe against a symmetric waker (a light_fence() waker has no
// fence for it to pair with), so the mode belongs to an object, not to an endpoint: a queue
// records it in its header at creation (QueueOptions::symmetric_fences) and every endpoint
// reads it once at attach from its validated copy of the geometry. A waker may always fence
// more than its mode says (full_fence() is sound against either sleeper).
// The big picture (all layouts, the wake-up protocol, crash semantics): docs/architecture.md.
#pragma once

#include <atomic>
#include <cstdint>

namespace shmpipe::detail {

inline constexpr std::uint64_t kSpinBeforeSleepNs = 20'000;  // waking a sleeper costs ~7 µs here

// Registers this process for the asymmetric fence (idempotent, cheap after the first call,
// re-done after fork). Call before publishing to a segment that has sleepers.
void register_process_for_fences() noexcept;

// Waker side: a compiler barrier when the asymmetric fence is available, else a full fence.
inline void light_fence() noexcept;

// Sleeper side: membarrier(GLOBAL_EXPEDITED), or a full fence when it is unavailable.
void heavy_fence() noexcept;

// The halves of the Dekker pair for an object's fence mode (see the top of this file).
inline void waker_fence(bool symmetric) noexcept;
void sleeper_fence(bool symmetric) noexcept;

// Sleeps while word == expected, until deadline_ns on CLOCK_MONOTONIC (0 = no deadline).
// Returns 0 when woken or the value differed, ETIMEDOUT, or EINTR. Process-shared futex.
int futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::uint64_t deadline_ns) noexcept;
// Wakes up to `count` sleepers on word; returns how many were woken.
int futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

// The spin budget of a group of threads that wait for each other (a pool: its workers and
// the thread that drains its results), in memory the group shares. `awake` counts the
// group's threads that are running or spinning; a thread leaves the count while it sleeps
// in a futex. Spinning only pays while every awake thread has a CPU of its own: beyond that
// a spinner takes the CPU from a thread doing the work it waits for, and a sleeping hop
// (a futex wake-up) is the faster way. So SpinWait gives up
// at once while the budget of the calling thread (SpinSeat) counts more awake threads than
// this process may use CPUs (after one sched_yield, which hands the CPU to a thread of the
// group that shares it). The count is a hint: it decides only how long a waiter spins,
// never whether it wakes, so a count left one off by a process killed between its two
// steps (SpinSeat) costs latency, never a lost wake-up.
struct SpinBudget {
    std::atomic<std::int32_t> awake{0};
};
static_assert(std::atomic<std::int32_t>::is_always_lock_free);

// Counts the calling thread in `budget` for its lifetime (nothing if the thread already has a
// seat). `counted` is this thread's flag in shared memory (1 while it is in the count), so a
// supervisor can take a dead thread out of it (SpinSeat::write_off).
class SpinSeat {
public:
    SpinSeat(SpinBudget& budget, std::atomic<std::uint32_t>& counted) noexcept;
    ~SpinSeat();
    SpinSeat(const SpinSeat&) = delete;
    SpinSeat& operator=(const SpinSeat&) = delete;
    // Takes a thread that died while seated out of the count.
    static void write_off(SpinBudget& budget, std::atomic<std::uint32_t>& counted) noexcept;

private:
    friend class AsleepInBudget;
    static void enter(SpinBudget& b, std::atomic<std::uint32_t>& c) noexcept;
    bool active_ = false;
};

// Around a futex sleep: the calling thread leaves its budget's count meanwhile (no-op
// without a seat).
class AsleepInBudget {
public:
    AsleepInBudget() noexcept;
    ~AsleepInBudget();
    AsleepInBudget(const AsleepInBudget&) = delete;
    AsleepInBudget& operator=(const AsleepInBudget&) = delete;
};

// The CPUs this process may run on (its affinity mask), cached per pid.
unsigned allowed_cpus() noexcept;

// Whether this thread's spins currently skip yielding (see SpinWait).
bool yields_lose_cpu() noexcept;

// Spin-then-sleep: a short burst of pause, then pause bursts alternating with sched_yield
// (so a peer on the same core gets to run) until kSpinBeforeSleepNs has passed; while the
// calling thread's SpinBudget is over its CPUs, one sched_yield and no more. A yield that
// kept the thread off the CPU for 200 µs or more (another program's busy thread took it)
// makes this thread's spins skip yielding for the next 50 ms: they sleep after the pause
// burst, since a woken sleeper is scheduled at once and a yield behind a busy thread waits a
// whole time slice. Not on one allowed CPU, where the thread we yield to is the peer we wait
// for. spin() returns false when the caller should go to sleep instead.
class SpinWait {
public:
    bool spin() noexcept;
    void reset() noexcept {
        iterations_ = 0;
        started_ns_ = 0;
        yielded_over_budget_ = false;
    }

private:
    static constexpr std::uint32_t kPauseOnly = 32;  // pause-only iterations (~1 µs) before yielding
    std::uint32_t iterations_ = 0;
    std::uint64_t started_ns_ = 0;
    bool yielded_over_budget_ = false;
};

// --- inline definitions -------------------------------------------------------------------

extern std::atomic<bool> g_light_fence_ok;  // set once membarrier registration succeeded
extern std::atomic<std::uint32_t> g_fence_word;

// A full fence. ThreadSanitizer does not support atomic_thread_fence (GCC warns, and the
// tsan preset builds with -Werror), so there a seq_cst read-modify-write stands in: on
// x86 both are one locked instruction.
inline void full_fence() noexcept {
#if defined(__SANITIZE_THREAD__)
    g_fence_word.fetch_add(0, std::memory_order_seq_cst);
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

inline void light_fence() noexcept {
    if (g_light_fence_ok.load(std::memory_order_relaxed)) {
        std::atomic_signal_fence(std::memory_order_seq_cst);  // compiler only: see header comment
    } else {
        full_fence();
    }
}

inline void waker_fence(bool symmetric) noexcept {
    if (symmetric) {
        full_fence();
    } else {
        light_fence();
    }
}

}  // namespace shmpipe::detail
