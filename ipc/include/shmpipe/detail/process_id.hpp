// Process identity for liveness checks: a pid alone is reused, pid + start time is not.
#pragma once

#include <cstdint>
#include <sys/types.h>

namespace shmpipe::detail {

struct ProcessId {
    std::uint32_t pid = 0;
    std::uint64_t start_time = 0;  // /proc/<pid>/stat field 22, clock ticks since boot
};

// This process (re-read after fork: the cache is keyed on current_pid()).
ProcessId self_process() noexcept;

// getpid() without a system call: cached, and refreshed in the child by a pthread_atfork
// handler (glibc no longer caches getpid). Hot paths use it to tell a forked copy of a
// handle from the original.
std::uint32_t current_pid() noexcept;

// Start time of a live, non-zombie process; 0 when there is no such process (or it is a zombie).
std::uint64_t process_start_time(pid_t pid) noexcept;

// True when `pid` runs and, if start_time != 0, started at start_time. A zombie is dead.
bool process_alive(std::uint32_t pid, std::uint64_t start_time) noexcept;

// Monotonic and realtime clocks in nanoseconds.
std::uint64_t monotonic_ns() noexcept;
std::uint64_t realtime_ns() noexcept;

}  // namespace shmpipe::detail
