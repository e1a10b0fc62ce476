// The bridge status record (bridge_status.hpp): layout, writer, validating reader.
#include "bridge_status.hpp"

#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/detail/sigbus_guard.hpp>
#include <shmpipe/error.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>

namespace shmpipe::bridge_status {

namespace {

using detail::ObjectKind;
using U64 = std::atomic<std::uint64_t>;

// Host names and the geometry are written before the segment is published and never change;
// the counters change under `seq` (odd while the writer is in the middle of an update).
struct PeerRecord {
    char host[kHostBytes];
    U64 credits, in_flight, messages, bytes, resent, lost, last_heard_ms, up;
};

struct Record {
    std::uint32_t version;
    std::uint32_t record_size;
    std::uint32_t direction;    // 1 out, 2 in
    std::uint32_t peer_count;   // records used, <= kMaxPeers
    std::uint32_t peers_total;  // peers of the bridge
    std::uint32_t reserved;
    U64 seq;
    U64 updated_ns;
    PeerRecord peers[kMaxPeers];
};
static_assert(U64::is_always_lock_free);

constexpr std::uint32_t kOut = 1, kIn = 2;
constexpr int kStableReads = 100;  // counter copies tried before a record that never holds still is refused

// What the reader takes out of the mapping: plain values, copied once, then validated.
struct PeerCopy {
    char host[kHostBytes];
    std::uint64_t credits, in_flight, messages, bytes, resent, lost, last_heard_ms, up;
};
struct RecordCopy {
    std::uint32_t version, record_size, direction, peer_count, peers_total;
    std::uint64_t updated_ns;
    bool stable;  // the counters come from one update (the same even sequence number before and after)
    PeerCopy peers[kMaxPeers];
};

// Runs under the SIGBUS guard: loads and plain stores only. The geometry is read once; the
// counters of the first min(peer_count, kMaxPeers) peers until a copy is stable.
void copy_record(const Record& r, RecordCopy& out) noexcept {
    out.version = r.version;
    out.record_size = r.record_size;
    out.direction = r.direction;
    out.peer_count = r.peer_count;
    out.peers_total = r.peers_total;
    const std::uint32_t count = std::min<std::uint32_t>(out.peer_count, kMaxPeers);
    for (std::uint32_t i = 0; i < count; ++i) std::memcpy(out.peers[i].host, r.peers[i].host, kHostBytes);
    out.stable = false;
    for (int attempt = 0; attempt < kStableReads && !out.stable; ++attempt) {
        const std::uint64_t before = r.seq.load(std::memory_order_acquire);
        if ((before & 1) != 0) continue;  // an update is under way
        out.updated_ns = r.updated_ns.load(std::memory_order_relaxed);
        for (std::uint32_t i = 0; i < count; ++i) {
            const PeerRecord& p = r.peers[i];
            PeerCopy& o = out.peers[i];
            o.credits = p.credits.load(std::memory_order_relaxed);
            o.in_flight = p.in_flight.load(std::memory_order_relaxed);
            o.messages = p.messages.load(std::memory_order_relaxed);
            o.bytes = p.bytes.load(std::memory_order_relaxed);
            o.resent = p.resent.load(std::memory_order_relaxed);
            o.lost = p.lost.load(std::memory_order_relaxed);
            o.last_heard_ms = p.last_heard_ms.load(std::memory_order_relaxed);
            o.up = p.up.load(std::memory_order_relaxed);
        }
        std::atomic_thread_fence(std::memory_order_acquire);
        out.stable = r.seq.load(std::memory_order_relaxed) == before;
    }
}
// A counter no real run reaches in its life: beyond it the record is refused, not shown.
constexpr std::uint64_t kCounterLimit = std::uint64_t{1} << 62;

}  // namespace

std::string object_name(std::string_view queue_object) { return std::string(queue_object) + ".bridge"; }

struct BridgeStatusWriter::Impl {
    detail::Segment segment;
    Record* record = nullptr;
};

BridgeStatusWriter::BridgeStatusWriter(std::string_view queue_object, bool outgoing, const std::vector<std::string>& peers)
    : impl_(std::make_unique<Impl>()) {
    const std::string name = object_name(queue_object);
    detail::Segment::CreateParams p;
    p.name = name;
    p.what = "bridge status";
    p.kind = ObjectKind::bridge_status;
    p.body_size = sizeof(Record);
    impl_->segment = detail::Segment::create(p, [&](std::byte* body) {
        auto* r = new (body) Record{};
        r->version = kVersion;
        r->record_size = sizeof(Record);
        r->direction = outgoing ? kOut : kIn;
        r->peers_total = static_cast<std::uint32_t>(peers.size());
        r->peer_count = static_cast<std::uint32_t>(std::min(peers.size(), kMaxPeers));
        for (std::uint32_t i = 0; i < r->peer_count; ++i) {
            std::strncpy(r->peers[i].host, peers[i].c_str(), kHostBytes - 1);
        }
        r->updated_ns.store(detail::realtime_ns(), std::memory_order_relaxed);
    });
    impl_->record = reinterpret_cast<Record*>(impl_->segment.body());
}

BridgeStatusWriter::~BridgeStatusWriter() = default;  // the segment unlinks its name

void BridgeStatusWriter::update(const std::vector<PeerStatus>& peers) noexcept {
    Record& r = *impl_->record;
    const std::uint64_t seq = r.seq.load(std::memory_order_relaxed);
    r.seq.store(seq + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    for (std::size_t i = 0; i < r.peer_count; ++i) {
        PeerRecord& out = r.peers[i];
        const PeerStatus* found = nullptr;
        for (const auto& p : peers) {
            if (p.host == out.host) found = &p;
        }
        if (found == nullptr) {  // not connected yet (a receiver learns its peers' names from hello)
            out.up.store(0, std::memory_order_relaxed);
            continue;
        }
        const PeerStatus& in = *found;
        out.credits.store(in.credits, std::memory_order_relaxed);
        out.in_flight.store(in.in_flight, std::memory_order_relaxed);
        out.messages.store(in.messages, std::memory_order_relaxed);
        out.bytes.store(in.bytes, std::memory_order_relaxed);
        out.resent.store(in.resent, std::memory_order_relaxed);
        out.lost.store(in.lost, std::memory_order_relaxed);
        out.last_heard_ms.store(in.last_heard_ms, std::memory_order_relaxed);
        out.up.store(in.up ? 1 : 0, std::memory_order_relaxed);
    }
    r.updated_ns.store(detail::realtime_ns(), std::memory_order_relaxed);
    r.seq.store(seq + 2, std::memory_order_release);
}

std::optional<BridgeStatus> read(std::string_view queue_object) {
    const std::string name = object_name(queue_object);
    detail::OpenProblem problem;
    OpenOptions any_owner;  // read-only and validated, as the inspector reads every object
    any_owner.allow_foreign_owner = true;
    detail::Segment seg = detail::Segment::open_any(name, detail::Access::read_only, problem, any_owner);
    if (!seg) {
        if (problem.code == errc::not_found) return std::nullopt;
        detail::throw_problem("read", "bridge status", name, problem);
    }
    auto refuse = [&](const std::string& why) -> Error {
        return Error(errc::corrupt, detail::describe("read", "bridge status", name,
                                                     "is corrupt: " + why +
                                                         " (written by pipeline-launch --host; remove it with "
                                                         "`inspect-queues clean --corrupt` once its launcher is gone)"));
    };
    if (seg.kind() != ObjectKind::bridge_status) {
        throw refuse(std::string("it is a ") + detail::kind_name(seg.kind()) + ", not a bridge status");
    }
    if (seg.body_size() < sizeof(Record)) {
        throw refuse("its body has " + std::to_string(seg.body_size()) + " bytes, a record needs " +
                     std::to_string(sizeof(Record)));
    }
    // One copy out of the mapping, under the SIGBUS guard (a writer that shrinks the object
    // would otherwise kill the inspector), then checks on the copy only.
    RecordCopy copy;
    if (!detail::sigbus_guarded([&]() noexcept { copy_record(*reinterpret_cast<const Record*>(seg.body()), copy); })) {
        throw refuse("it shrank while being read (SIGBUS)");
    }
    if (copy.version != kVersion) {
        throw refuse("record version " + std::to_string(copy.version) + ", this inspect-queues reads version " +
                     std::to_string(kVersion));
    }
    if (copy.record_size != sizeof(Record)) {
        throw refuse("record size " + std::to_string(copy.record_size) + " is not " + std::to_string(sizeof(Record)));
    }
    if (copy.direction != kOut && copy.direction != kIn) {
        throw refuse("direction " + std::to_string(copy.direction) + " is neither out nor in");
    }
    const std::uint32_t count = copy.peer_count, total = copy.peers_total;
    if (count > kMaxPeers || count > total || count == 0) {
        throw refuse("peer count " + std::to_string(count) + " of " + std::to_string(total) + " is out of range (1.." +
                     std::to_string(kMaxPeers) + ")");
    }
    if (!copy.stable) throw refuse("it never held still over " + std::to_string(kStableReads) + " reads");
    BridgeStatus out;
    out.object = name;
    out.outgoing = copy.direction == kOut;
    out.peers_total = total;
    out.updated_ns = copy.updated_ns;
    for (std::uint32_t i = 0; i < count; ++i) {
        const PeerCopy& p = copy.peers[i];
        const std::size_t len = strnlen(p.host, kHostBytes);
        if (len == 0 || len == kHostBytes) throw refuse("the host name of peer " + std::to_string(i) + " is empty or unterminated");
        for (std::size_t c = 0; c < len; ++c) {
            const unsigned char ch = static_cast<unsigned char>(p.host[c]);
            if (ch < 0x20 || ch >= 0x7f) throw refuse("the host name of peer " + std::to_string(i) + " has a control or non-ASCII byte");
        }
        PeerStatus o{std::string(p.host, len)};
        if (p.up > 1) throw refuse("peer \"" + o.host + "\" has up = " + std::to_string(p.up) + " (0 or 1)");
        o.credits = p.credits;
        o.in_flight = p.in_flight;
        o.messages = p.messages;
        o.bytes = p.bytes;
        o.resent = p.resent;
        o.lost = p.lost;
        o.last_heard_ms = p.last_heard_ms;
        o.up = p.up == 1;
        out.peers.push_back(std::move(o));
    }
    for (const auto& p : out.peers) {
        for (std::uint64_t v : {p.credits, p.in_flight, p.messages, p.bytes, p.resent, p.lost, p.last_heard_ms}) {
            if (v >= kCounterLimit) throw refuse("peer \"" + p.host + "\" has a counter out of range (" + std::to_string(v) + ")");
        }
    }
    return out;
}

}  // namespace shmpipe::bridge_status
