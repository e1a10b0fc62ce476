// Catch2 helpers for tests that drive the queue peer (tests/support/peers/queue_peer.cpp).
#pragma once

#include "queue_testing.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

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

}  // namespace shmpipe::test
