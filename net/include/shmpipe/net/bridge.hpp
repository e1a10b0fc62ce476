// A queue edge carried between hosts: a Sender pops a local shmpipe queue and a Receiver on
// another host pushes what it gets into its own local queue, over ZeroMQ DEALER -> ROUTER.
//
//   host b:  shmpipe::net::Receiver rx({.queue = "work", .host = "b",
//                                       .bind = "tcp://10.0.0.2:7401", .expected_senders = 1});
//            rx.run();                          // returns once every sender ended its stream
//   host a:  shmpipe::net::Sender tx({.queue = "work", .host = "a",
//                                     .receivers = {{"b", "tcp://10.0.0.2:7401"}}});
//            tx.run();                          // returns once b acknowledged all and the end
//
// Guarantees (docs/architecture.md, "Bridge protocol", has the frames and states):
// - Back-pressure end to end: a sender sends only against credit, and a receiver grants no
//   more credit than its local queue has free room (less what it already holds); a full
//   consumer on host b stops the pops on host a, so the producers on host a block.
// - Each batch carries a sequence number; the receiver acknowledges it once every message
//   of it is in its local queue. What a receiver acknowledged is never lost. When a
//   receiver dies, the sender re-sends what it had not acknowledged to another live
//   receiver (at least once: a message the dead host had pushed but not yet acknowledged
//   arrives twice), or, with none left, counts it lost and throws.
// - End of stream per producer: each sender is its own producer endpoint of the receiving
//   queue, closed when its end frame arrives, so the local end-of-stream rule applies
//   unchanged (create the receiving queue with expected_producers = number of senders).
// - Liveness: both ends send a heartbeat when they have sent nothing for
//   `heartbeat`; a peer silent for `dead_after` is dead, an error naming its host.
//   A dead sender is reported by the receiver as Error(errc::producer_died) naming the host,
//   and the receiving queue is marked broken, so its consumers get errc::broken instead of
//   waiting for an end that will not come (the local queue cannot name a remote host).
// - Network input is untrusted: one decoder (frame.hpp); a peer sending a malformed or
//   out-of-protocol frame is dropped with a logged reason, the bridge keeps running.
// - Security: the receiver binds exactly the address given. With CurveKeys every connection
//   is encrypted and authenticated (CurveZMQ); a receiver given allowed client keys refuses
//   any other client.
//
// Threads: a Sender or Receiver is driven by one thread (run() or step()); counters() and
// request_stop() may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shmpipe::net {

// True when this libzmq was built with CurveZMQ (zmq_has("curve")).
bool curve_available() noexcept;

// A CurveZMQ key pair, Z85 text (40 characters each).
struct CurveKeyPair {
    std::string public_key;
    std::string secret_key;
};
// A fresh key pair; throws Error(invalid_argument) when Curve is not available.
CurveKeyPair make_curve_keypair();

struct CurveOptions {
    CurveKeyPair own;                           // this end's keys
    std::string server_public_key;              // sender: the receiver's public key
    std::vector<std::string> allowed_clients;   // receiver: senders' public keys (empty: any client with a key)
};

struct Liveness {
    std::chrono::milliseconds heartbeat{500};    // send a heartbeat after this much silence
    std::chrono::milliseconds dead_after{3000};  // a peer silent this long is dead
};

// Where log lines go (default: stderr, prefixed "shmpipe::net: ").
using Logger = std::function<void(const std::string&)>;

enum class PeerState { connecting, live, ended, dead, dropped };
const char* to_string(PeerState s) noexcept;

// One remote end of a bridge. For a Sender: a receiver; for a Receiver: a sender.
struct PeerCounters {
    std::string host;             // the peer's host name (a receiver learns it from hello)
    std::string address;          // sender: the receiver's address; receiver: empty
    PeerState state = PeerState::connecting;
    std::uint64_t messages = 0;   // acknowledged (sender) / pushed into the local queue (receiver)
    std::uint64_t bytes = 0;      // payload bytes of those messages
    std::uint64_t resent = 0;     // sender: messages re-sent to this peer after another died
    std::uint64_t lost = 0;       // sender: unacknowledged when this peer died, not re-sent
    std::uint64_t credits = 0;    // messages the sender may still send to / the receiver granted
    std::uint64_t in_flight = 0;  // sent, not acknowledged (receiver: received, not yet pushed)
    std::uint64_t last_heard_ms = 0;  // ms since anything came from the peer
    std::string reason;           // why it is dead or dropped
};

struct BridgeCounters {
    std::string queue;
    std::uint64_t messages = 0, bytes = 0, resent = 0, lost = 0, credits = 0, in_flight = 0;
    std::uint64_t dropped_peers = 0;  // peers dropped for malformed frames
    std::vector<PeerCounters> peers;
};

struct ReceiverAddress {
    std::string host;     // its name, used in errors
    std::string address;  // e.g. "tcp://10.0.0.2:7401"
};

struct SenderOptions {
    std::string queue;                       // local queue popped (as a Consumer<>)
    std::string edge;                        // the edge's name both ends agree on, sent in hello (default: queue)
    std::string host;                        // this host's name, announced in hello
    std::vector<ReceiverAddress> receivers;  // every host reading this queue (at least one)
    Liveness liveness;
    std::size_t max_batch_bytes = std::size_t{64} << 10;  // payload per data frame (a larger message goes alone)
    std::optional<CurveOptions> curve;
    Logger log;
};

// Pops the local queue `queue` and sends to the receivers. Throws Error: the local queue's
// attach errors, invalid_argument (no receiver, a bad address, Curve keys but no Curve).
class Sender {
public:
    explicit Sender(SenderOptions options);
    ~Sender();
    Sender(const Sender&) = delete;
    Sender& operator=(const Sender&) = delete;

    // Runs until the local stream ended and every live receiver acknowledged all of it and
    // the end. Throws Error(consumer_died) naming the host(s) when no receiver is left
    // alive while messages remain (those in flight are counted lost), Error(cancelled)
    // after request_stop() (the messages not acknowledged then are counted lost), and what
    // the local queue throws (producer_died, broken).
    BridgeCounters run();
    // One bounded step of run() for callers with their own loop; true when finished.
    bool step(std::chrono::milliseconds max_wait);
    BridgeCounters counters() const;
    void request_stop() noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

struct ReceiverOptions {
    std::string queue;                 // local queue pushed (one Producer<> per sender)
    std::string edge;                  // accept senders of this edge only (default: queue)
    std::string host;                  // this host's name, used in errors
    std::string bind;                  // exactly this address, e.g. "tcp://127.0.0.1:7401" ("...:*": any port)
    std::uint32_t expected_senders = 1;  // run() returns once this many ended (0: only at request_stop)
    std::size_t max_credit = 4096;     // messages granted ahead per sender, at most
    Liveness liveness;
    std::optional<CurveOptions> curve;
    Logger log;
};

// Binds `bind` and pushes what senders send into the local queue `queue`. Throws Error:
// invalid_argument (bind failed: address in use or not local), not_found (no queue).
class Receiver {
public:
    explicit Receiver(ReceiverOptions options);
    ~Receiver();
    Receiver(const Receiver&) = delete;
    Receiver& operator=(const Receiver&) = delete;

    // The bound address (with the port chosen when `bind` ended in ":*").
    const std::string& endpoint() const noexcept;
    // Runs until expected_senders ended. Throws Error(producer_died) naming the host of a
    // sender that went silent before its end (after marking the local queue broken),
    // Error(cancelled) after request_stop() with senders still running.
    BridgeCounters run();
    bool step(std::chrono::milliseconds max_wait);
    BridgeCounters counters() const;
    void request_stop() noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace shmpipe::net
