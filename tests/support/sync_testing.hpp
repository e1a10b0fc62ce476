// Catch2 helpers for the synchronisation tests that run sync_peer programs
// (tests/support/peers/sync_peer.cpp).
#pragma once

#include "test_catch.hpp"

#include <shmpipe/shared_array.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace shmpipe::test {

// A sync_peer process: `args` is its role and the role's arguments.
inline Peer spawn_sync_peer(const std::vector<std::string>& args) { return Peer(peer_path("sync_peer"), args); }

// Three sync_peer parties of `role` ("barrier" or "barrier-action") pass barrier `barrier` (made
// by the caller, for 3) `rounds` times, each counting round r in element r of a SharedArray made
// here as `counts` (a name the caller's ShmGuard holds). Checks that each party exits 0, naming
// `what`; returns the counts of every round.
inline std::vector<std::uint32_t> run_barrier_parties(const std::string& role, const std::string& barrier,
                                                      const std::string& counts, std::uint32_t rounds,
                                                      const std::string& what) {
    using namespace std::chrono_literals;
    auto array = SharedArray<std::uint32_t>::create(counts, rounds);
    std::vector<Peer> parties;
    for (int i = 0; i < 3; ++i) parties.push_back(spawn_sync_peer({role, barrier, std::to_string(rounds), counts}));
    for (auto& p : parties) CHECK(p.wait_or_throw(60s, what + " at barrier " + barrier) == 0);
    std::vector<std::uint32_t> out;
    for (std::uint32_t r = 0; r < rounds; ++r) out.push_back(array.load(r));
    return out;
}

}  // namespace shmpipe::test
