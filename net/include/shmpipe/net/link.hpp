// Link: the launchers of one multi-host run watching each other and agreeing on how it ends.
//
//   shmpipe::net::Link link({.host = "a", .bind = "tcp://10.0.0.1:7400", .run = "demo/42",
//                            .peers = {{"b", "tcp://10.0.0.2:7400"}}});
//   while (...) {
//       link.step(50ms);                              // receive, heartbeat, declare the dead
//       for (const auto& p : link.peers()) p.state, p.dead, p.reason ...
//       link.set_state(RunState::stopping, "worker.2@b: exited with code 3");
//   }
//
// Every launcher binds a ROUTER on its own address and connects a DEALER to every other
// launcher. Each sends a status frame (frame.hpp: its host, the run, its RunState and a reason)
// every `heartbeat` and at once when its state changes; the frame is both the heartbeat and
// the message. A peer heard once and then silent for `dead_after` is dead; a peer never heard
// within `connect_timeout` is unreachable (dead too). A peer that reported a finished state may
// go silent: it is not declared dead after that. Frames of another run or an unknown host are
// ignored with a logged reason; a malformed frame bans its sender's connection; nothing a peer
// sends can make step() throw.
//
// Threads: one thread drives a Link (step, set_state, peers).
#pragma once

#include <shmpipe/net/bridge.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shmpipe::net {

// What a launcher tells the others about its part of the run.
enum class RunState : std::uint8_t {
    running = 1,
    draining,         // asked to drain (Ctrl-C): sources stop, end of stream flows
    stopping,         // a failure or a terminate: every host stops with the ladder; reason says why
    finished_ok,      // its part ended well and its bridges are done
    finished_failed,  // its part ended, not well; reason says why
};
const char* to_string(RunState s) noexcept;
bool is_finished(RunState s) noexcept;

struct LinkPeer {
    std::string host;
    std::string address;     // where its launcher listens
    std::string public_key;  // its Curve public key (Z85), when Curve is on
};

struct LinkOptions {
    std::string host;                 // this launcher's host
    std::string bind;                 // exactly this address
    std::string run;                  // peers of another run are ignored
    std::vector<LinkPeer> peers;      // every other host of the run
    Liveness liveness;
    std::chrono::milliseconds connect_timeout{30000};
    std::optional<CurveKeyPair> curve;  // this host's keys: every connection authenticated and encrypted
    Logger log;
};

struct LinkPeerStatus {
    std::string host;
    std::optional<RunState> state;    // nullopt: never heard from
    std::string reason;               // with its state
    bool drained = false;             // it reported draining at some point (its state may have moved on)
    std::string drain_reason;    bool dead = false;
    std::string dead_reason;          // "no heartbeat for 3.0 s", "unreachable: ..."
    std::uint64_t last_heard_ms = 0;  // ms since its last frame (0 when never heard)
};

class Link {
public:
    // Binds `bind` and connects to every peer. Throws Error(invalid_argument): bind failed
    // (address in use or not local), bad keys.
    explicit Link(LinkOptions options);
    ~Link();
    Link(const Link&) = delete;
    Link& operator=(const Link&) = delete;

    // Sets this launcher's state and sends it to every peer at once. A finished state is final.
    void set_state(RunState state, std::string reason = {});
    RunState state() const noexcept;
    // Receives for up to `max_wait`, sends due heartbeats, declares silent peers dead.
    void step(std::chrono::milliseconds max_wait);
    std::vector<LinkPeerStatus> peers() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace shmpipe::net
