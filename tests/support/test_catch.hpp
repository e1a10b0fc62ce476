// Catch2 helpers shared by test files (never by peers: they do not link Catch2).
#pragma once

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <poll.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace shmpipe::test {

// Checks that no /dev/shm object whose name starts with `prefix` is left.
inline void require_gone(const std::string& prefix) {
    INFO("objects left in /dev/shm with prefix " << prefix);
    CHECK(shm_objects_with_prefix(prefix).empty());
}

// Reads `fd` until EOF or the deadline; FAILs naming `what` at the deadline.
inline std::string read_all(int fd, std::chrono::milliseconds timeout, const std::string& what) {
    std::string out;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    while (true) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) FAIL("timed out reading " << what << "; got so far: " << out);
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return out;
        out.append(buf, static_cast<std::size_t>(n));
    }
}

// One line from `fd` (without the newline), with a deadline.
inline std::string read_line(int fd, std::chrono::milliseconds timeout, const std::string& what) {
    std::string out;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) FAIL("timed out reading a line of " << what << "; got so far: " << out);
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
        char c = 0;
        const ssize_t n = ::read(fd, &c, 1);
        if (n <= 0) FAIL("end of " << what << " before a full line; got: " << out);
        if (c == '\n') return out;
        out.push_back(c);
    }
}

// Reaps a forked child within the deadline (SIGKILLs and reaps it first if it overruns, then
// FAILs naming `what`). Returns its exit code, or -N when killed by signal N.
inline int reap_child(pid_t pid, std::chrono::milliseconds timeout, const char* what) {
    int status = 0;
    const bool done = wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout);
    if (!done) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        FAIL("timed out waiting for the forked child: " << what);
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? -WTERMSIG(status) : -1;
}

}  // namespace shmpipe::test
