#include <shmpipe/detail/process_id.hpp>

#include <atomic>
#include <cerrno>
#include <pthread.h>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <unistd.h>

namespace shmpipe::detail {
namespace {

// Reads /proc/<pid>/stat without allocating. The command name (field 2) may hold spaces
// and parentheses, so fields are counted from the last ')'.
bool read_stat(pid_t pid, char& state, std::uint64_t& start_time) noexcept {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buf[1024];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return false;
    buf[n] = '\0';
    const char* p = std::strrchr(buf, ')');
    if (p == nullptr || p[1] != ' ') return false;
    p += 2;
    state = *p;  // field 3
    // Skip to field 22 (starttime): 19 more separators after field 3.
    for (int field = 3; field < 22; ++field) {
        p = std::strchr(p, ' ');
        if (p == nullptr) return false;
        ++p;
    }
    start_time = std::strtoull(p, nullptr, 10);
    return true;
}

}  // namespace

namespace {

std::atomic<std::uint32_t> g_pid{0};

void refresh_pid() noexcept { g_pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_relaxed); }

// Registered once, before the first cached read, so every later fork() refreshes it.
[[maybe_unused]] const bool g_pid_hook = [] {
    refresh_pid();
    ::pthread_atfork(nullptr, nullptr, refresh_pid);
    return true;
}();

}  // namespace

std::uint32_t current_pid() noexcept {
    const std::uint32_t pid = g_pid.load(std::memory_order_relaxed);
    if (pid != 0) [[likely]] return pid;
    refresh_pid();  // used before static initialisation ran
    return g_pid.load(std::memory_order_relaxed);
}

ProcessId self_process() noexcept {
    static thread_local ProcessId cached{};
    const auto pid = current_pid();
    if (cached.pid != pid) cached = ProcessId{pid, process_start_time(static_cast<pid_t>(pid))};
    return cached;
}

std::uint64_t process_start_time(pid_t pid) noexcept {
    char state = 0;
    std::uint64_t start = 0;
    if (!read_stat(pid, state, start)) return 0;
    if (state == 'Z' || state == 'X') return 0;
    return start;
}

bool process_alive(std::uint32_t pid, std::uint64_t start_time) noexcept {
    if (pid == 0 || pid > static_cast<std::uint32_t>(INT32_MAX)) return false;
    char state = 0;
    std::uint64_t start = 0;
    if (!read_stat(static_cast<pid_t>(pid), state, start)) {
        // No /proc entry readable: fall back to kill(0), which cannot see reuse.
        if (start_time != 0 && ::access("/proc/self/stat", R_OK) == 0) return false;
        return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
    }
    if (state == 'Z' || state == 'X') return false;
    return start_time == 0 || start == start_time;
}

std::uint64_t monotonic_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint64_t realtime_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace shmpipe::detail
