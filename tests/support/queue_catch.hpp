// Catch2 helpers for tests that drive the queue peer (tests/support/peers/queue_peer.cpp).
#pragma once

#include "queue_testing.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <string>
#include <vector>

namespace shmpipe::test {

// Starts the queue peer with `args` (its roles are listed at the top of queue_peer.cpp).
inline Peer spawn_queue_peer(const std::vector<std::string>& args) { return Peer(peer_path("queue_peer"), args); }

// The report a peer wrote to `path`; fails the test when there is none.
inline PeerReport report_of(const std::string& path) {
    auto r = read_report(path);
    if (!r) FAIL("no report written to " << path);
    return *r;
}

// SIGKILLs a peer and reaps it (deadline 10 s), checking that the kill is what ended it.
inline void kill_and_reap(Peer& p, const std::string& what) {
    p.signal(SIGKILL);
    CHECK(p.wait_or_throw(std::chrono::seconds(10), what + " to die after SIGKILL") == -SIGKILL);
}

// Waits (deadline 30 s) until a SharedLog holds n entries; fails naming `what`.
inline void wait_log(const SharedLog& log, std::uint64_t n, const std::string& what) {
    if (!wait_until([&] { return log.size() >= n; }, std::chrono::seconds(30))) {
        FAIL("timed out after 30 s waiting for " << what << " (log has " << log.size() << " of " << n << ")");
    }
}

}  // namespace shmpipe::test
