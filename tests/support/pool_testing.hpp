// Catch2 helpers for Pool tests: waits on a pool with a deadline that fails the test
// naming what was awaited (and terminates the pool so nothing is left behind).
#pragma once

#include <shmpipe/pool.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <utility>

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

}  // namespace shmpipe::test
