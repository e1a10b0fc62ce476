// Catch2 helpers for Pool tests: waits on a pool with a deadline that fails the test
// naming what was awaited (and terminates the pool so nothing is left behind).
#pragma once

#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <poll.h>
#include <sstream>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>

namespace shmpipe::test {

using namespace std::chrono_literals;

// The last resort of a watchdog: the wait it cut short must end now; if it does not
// within 30 s, say what hung and abort (workers die with us: parent-death signal).
template <class Fut>
inline void settle_or_abort(Fut& f, const std::string& what) {
    if (f.wait_for(30s) == std::future_status::ready) return;
    std::fprintf(stderr, "%s: still not done 30 s after the watchdog fired; aborting\n", what.c_str());
    std::abort();
}

// Runs f() (which waits on the pool) with a deadline. When it expires, the pool is
// terminated (that fails what is pending, so f returns) and the test fails naming `what`.
template <class F>
inline auto within(shmpipe::Pool& pool, const std::string& what, F&& f, std::chrono::seconds limit = 60s) {
    auto done = std::async(std::launch::async, std::forward<F>(f));
    if (done.wait_for(limit) != std::future_status::ready) {
        pool.terminate();
        settle_or_abort(done, what);
        FAIL(what << ": not done within " << limit.count() << " s (the pool was terminated)");
    }
    return done.get();
}

// Starts `process_peer pool N` (a pool parent) and returns the worker pids it prints;
// FAILs when the line does not come within 20 s.
inline std::vector<int> start_pool_parent(shmpipe::Process& parent) {
    parent.start();
    pollfd p{parent.stdout_fd(), POLLIN, 0};
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (line.find('\n') == std::string::npos) {
        if (std::chrono::steady_clock::now() > deadline) FAIL("process_peer pool did not print its workers' pids");
        if (::poll(&p, 1, 100) != 1) continue;
        char c;
        if (::read(parent.stdout_fd(), &c, 1) != 1) FAIL("process_peer pool exited early: " << line);
        line.push_back(c);
    }
    std::istringstream in(line);
    std::string word;
    in >> word;
    REQUIRE(word == "pids");
    std::vector<int> workers;
    for (int pid = 0; in >> pid;) workers.push_back(pid);
    return workers;
}

}  // namespace shmpipe::test
