// The remote side of a bridged queue, as `inspect-queues` shows it next to the queue.
//
// pipeline-launch --host publishes, per queue bridged to other hosts, a small fixed-size
// record in its own shared-memory object named `<queue object>.bridge` (kind bridge-status):
// direction, and per peer host credits, in flight, messages, bytes, re-sent, lost, seconds
// since last heard and whether it is up. The launcher rewrites it at most every ~100 ms.
//
//   BridgeStatusWriter w(queue_object, true, {"b"});   // creates "<queue_object>.bridge"
//   w.update({{...}});                                 // from the bridge's counters
//   std::optional<BridgeStatus> s = read_bridge_status(queue_object);  // the inspector
//
// The reader treats the record as untrusted: it copies it once out of a read-only mapping,
// checks version, record size, peer count, host names and value ranges, and throws
// Error(corrupt) naming the object when any is wrong. Counters are updated under a sequence
// number (odd while being written); a reader that never sees a stable copy says so.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shmpipe::bridge_status {

inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::size_t kMaxPeers = 8;      // peers beyond this are counted, not shown
inline constexpr std::size_t kHostBytes = 64;    // a host name, NUL-terminated

struct PeerStatus {
    std::string host;
    std::uint64_t credits = 0;
    std::uint64_t in_flight = 0;
    std::uint64_t messages = 0;
    std::uint64_t bytes = 0;
    std::uint64_t resent = 0;
    std::uint64_t lost = 0;
    std::uint64_t last_heard_ms = 0;  // since anything came from the peer on this bridge
    bool up = false;
};

struct BridgeStatus {
    std::string object;          // "<queue object>.bridge"
    bool outgoing = false;       // true: this host sends the queue's messages to the peers
    std::uint64_t updated_ns = 0;  // CLOCK_REALTIME of the last update
    std::uint32_t peers_total = 0; // peers of the bridge (peers holds at most kMaxPeers)
    std::vector<PeerStatus> peers;
};

// "<queue_object>.bridge"
std::string object_name(std::string_view queue_object);

class BridgeStatusWriter {
public:
    // Creates the status object of `queue_object` (kind bridge-status). Throws Error
    // (already_exists, invalid_name, ...).
    BridgeStatusWriter(std::string_view queue_object, bool outgoing, const std::vector<std::string>& peers);
    ~BridgeStatusWriter();  // removes the object
    BridgeStatusWriter(const BridgeStatusWriter&) = delete;
    BridgeStatusWriter& operator=(const BridgeStatusWriter&) = delete;

    // Counters per peer, matched by host name; a peer not among them is shown down.
    void update(const std::vector<PeerStatus>& peers) noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The status of `queue_object`'s bridge; nullopt when it has none (not bridged, or the run is
// over). Throws Error(corrupt) naming the object when the record fails validation, and the
// open errors of Segment::open (permission, version, wrong kind).
std::optional<BridgeStatus> read(std::string_view queue_object);

}  // namespace shmpipe::bridge_status
