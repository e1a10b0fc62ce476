// Blocking primitives shared by every shmpipe object: futex waits on words in a shared
// segment, an asymmetric fence that keeps the sleeper check off the hot path, and the
// spin-then-sleep policy.
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

// Spin-then-sleep: a short burst of pause, then pause bursts alternating with sched_yield
// (so a peer on the same core gets to run) until kSpinBeforeSleepNs has passed. spin()
// returns false when the caller should go to sleep instead.
class SpinWait {
public:
    bool spin() noexcept;
    void reset() noexcept { iterations_ = 0; started_ns_ = 0; }

private:
    std::uint32_t iterations_ = 0;
    std::uint64_t started_ns_ = 0;
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

}  // namespace shmpipe::detail
