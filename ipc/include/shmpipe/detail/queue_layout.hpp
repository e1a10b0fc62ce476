// Shared-memory layout of a queue's body (after the common SegmentHeader and endpoint
// table). Not API: the queue implementation and the inspector read it.
//
// Body:
//   [0, sizeof(QueueControl))        QueueControl: geometry, endpoint counts, end of stream
//   [ring_offset, + sizeof(RingIndices))   RingIndices: head, tail, sleeper flags, futex words
//   SPSC: [data_offset, + capacity)  byte ring of records (RecordHeader + payload, 8-aligned)
//   typed SPSC (kQueueFlagTyped): [data_offset, + cell_count * cell_stride)  fixed slots, no
//         record header: slot i holds the message at position p with p % cell_count == i
//   MPMC: [cells_offset, + cell_count * sizeof(Cell))  per-cell sequence words
//         [data_offset, + cell_count * cell_stride)    per-cell payload
//
// Geometry (capacity, offsets, cell count and stride, flags) is written by the creator before
// publication and copied once by every opener into a process-local QueueGeometry, which is
// validated and then the only copy used: a writer changing QueueControl later cannot steer
// an attached process outside the body.
//
// SPSC invariants and ordering pairs (see queue_endpoint.hpp for the code that relies on them):
//   S1  tail is written only by the producer, head only by the consumer; both are byte
//       positions that only grow (64-bit, never wrap in practice).
//   S2  0 <= tail - head <= capacity; bytes in [head, tail) are published records.
//   S3  a record never straddles the end of the ring: a producer that would straddle first
//       writes a padding record (kRecordPad) to the end, published with the same tail store.
//   S4  head is the consumer's published position, consumed the exact one: head <= consumed
//       <= tail. The consumer stores consumed after every message (on its own statistics
//       line, which the producer never reads) and publishes head in batches: once
//       kHeadBatchBytes of records were consumed since the last store, and always when it
//       finds the ring empty, before it sleeps or arms its descriptor, when a producer is
//       waiting, after a batch call and at close. The producer sees free space late by less
//       than kHeadBatchBytes of records, and only while the consumer is between calls with
//       the ring not empty; one head store per batch keeps the head line from moving between
//       the CPUs once per message.
//   S5  statistics (tail_count/tail_bytes, head_count/head_bytes, consumed) live on one line
//       per side, written only by that side, after every message, never read on a hot path.
//       They are exact: Queue::stats() and the inspector read them, not head, so they trail
//       nothing a caller could observe. A replacement consumer resumes at consumed.
//   SP1 producer release-stores tail -> consumer acquire-loads tail: the records are written.
//   SP2 consumer release-stores head -> producer acquire-loads head: the bytes are free.
//   SP3 each side release-stores its statistics -> a reader acquire-loads them head side
//       first: a consumer's count was stored after it acquired the tail it consumed up to,
//       so a reader that sees it then sees the producer's count (depth never negative).
//
// Typed SPSC invariants (a queue made by Queue::create<T> for one producer and one consumer,
// not joinable: kQueueFlagTyped; max_message = sizeof(T), cell_count = slots (a power of two),
// cell_stride = typed_slot_stride(sizeof(T)), capacity = cell_count * cell_stride, type_hash
// = T's tag from creation on). S1, S4, S5 and SP1-SP3 hold as written, with positions
// counting messages instead of bytes:
//   T1  head, consumed and tail count messages; 0 <= tail - head <= cell_count; the message
//       at position p is the sizeof(T) bytes at data_offset + (p % cell_count) * cell_stride.
//       No record header and no padding: every position is one whole slot.
//   T2  statistics are the positions: messages in = tail, out = consumed (S4: exact, stored
//       after every message), bytes = messages * max_message. tail_count/tail_bytes,
//       head_count/head_bytes stay 0. So the producer stores one word per publication (tail)
//       and the consumer one per message (consumed, on its own line) plus head per batch
//       (S4) of kHeadBatchBytes worth of slots but at least kHeadBatchSlots (at most an
//       eighth of the ring), as the byte ring, except that catching up with the tail it
//       knows publishes nothing: the look that finds the ring empty does.
//   T3  only endpoints built for that T (Producer<T>/Consumer<T> with sizeof(T) ==
//       max_message and the same type tag) attach; untyped ones (Bytes, the Python module)
//       are refused with type_mismatch: they would write record headers.
//
// MPMC invariants (Vyukov-style bounded queue with per-cell sequence numbers):
//   M1  cell i serves positions p with p % cell_count == i. seq == p: free for the producer
//       of position p; seq == p + 1: committed message at p; seq == p + cell_count: freed by
//       the consumer of p, free for position p + cell_count. kCellAbandoned may be or-ed into
//       a committed value: the message is to be skipped (its producer died or gave it up).
//   M2  tail and head only move by CAS, one position at a time.
//   M3  an endpoint stores the position it is about to claim in its EndpointRecord::intent
//       before the CAS on tail/head and keeps it until the cell is committed/freed: a cell
//       claimed but never finished whose position is no live endpoint's intent belongs to a
//       dead process, and may be recovered by anyone (abandoned, or freed).
//   M4  a cell sequence ahead of the index it is read for (producer: seq > tail, consumer:
//       seq > head + 1) means another endpoint claimed that position, so the index has moved:
//       the acquire load of seq synchronises with the claimant, whose CAS on the index
//       happens-before, so the next load of the index sees it moved. An index that stays put
//       over kStuckIndexReads re-reads means the cell was overwritten: the endpoint marks
//       the queue broken and throws errc::corrupt instead of spinning.
//   MP1 producer release-stores seq = p + 1 -> consumer acquire-loads seq: payload written.
//   MP2 consumer release-stores seq = p + N -> producer acquire-loads seq: payload read.
//   MP3 CAS on tail/head (acq_rel, all RMW: one release sequence) -> recoverer acquire-loads
//       tail/head: the claimant's intent store is visible.
//
// Sleep/wake (both kinds): a sleeper announces itself in *_waiting, heavy_fence(), re-checks,
// then futex-waits on the *_seq word; a waker publishes, light_fence(), and only if
// *_waiting is non-zero bumps *_seq and calls futex_wake (see wait.hpp).
// With kQueueFlagSymmetricFences both of those fences are full ones (sleeper_fence /
// waker_fence, wait.hpp); every endpoint follows the flag of its validated geometry.
//
// Doorbells (Consumer::fd / Producer::fd; detail/doorbell.hpp). An endpoint that asked for a
// descriptor is an "fd sleeper": it does not sleep in the kernel on *_seq, its user's event
// loop sleeps on the descriptor. The futex protocol above is unchanged and stays the only
// thing the hot path looks at; doorbells ride on its slow path.
//   D1  EndpointRecord::doorbell (the record's second cache line) is 0 (no descriptor) or
//       id | kBellArmed | kBellCounted: id names the endpoint's socket. Only the endpoint
//       writes the id and sets the bits; any waker clears both with one fetch_and, and the one
//       that cleared the armed bit rings once and, if the counted bit was set, takes the
//       arm's one off consumers_waiting. Exchanged to 0 (same accounting) when the endpoint
//       attaches or closes, and by the reaper of a dead endpoint. The id is untrusted: a waker
//       uses only its id bits and skips 0.
//   D2  consumer_bells / producer_bells count the endpoints of that side holding a
//       descriptor (never below the true count: incremented before the first arm, decremented
//       by whoever exchanges a non-zero doorbell to 0: the closing endpoint or its reaper; a
//       holder killed before storing its id leaves it high, which only costs wakers a scan).
//       A waker scans the endpoint table for armed bells only when the count is non-zero.
//   D3  arm: drain the socket; mark the sleep: a flag side (SPSC consumers, producers) stores
//       doorbell = id | armed, then *_waiting = 1; an MPMC consumer whose bell is not armed
//       yet adds one to the sleeper count consumers_waiting, then stores id | armed | counted
//       (the count never trails the armed bells); heavy_fence(); re-check the ring and the
//       end/broken state, and report what the re-check finds.
//       Waker: publish; light_fence(); if *_waiting != 0, wake as the futex protocol says
//       (flag: exchange it to 0; MPMC count: as many as there are messages, see
//       ProducerCore::wake_consumers), then ring every armed bell of the side (D1). All armed
//       bells ring, not a count of them: a dead, unreaped consumer's armed bell could use up
//       a limit, and an fd sleeper has no bounded re-check. A publish that makes no wake-up
//       call (MPMC: it woke enough consumers at this head already) rings nothing: an arm
//       after that wake finds the unclaimed message at head in its re-check. This is the
//       futex sleeper's Dekker pair with the armed bit stored before the fence: either the
//       re-check sees the publication, or the waker's loads after its fence see the mark and
//       the armed bit. The drain comes before the arm, so a ring for a later publication is
//       never drained. A bell left armed by a re-check that found a message costs one
//       spurious ring later (and, counted, sends publishes to the slow path until then).
//   D4  state changes that wake unconditionally (a producer's close, a reaped death, broken,
//       a seal, a consumer's close) ring every armed bell of the side too (wake_side in queue.cpp);
//       a producer that attaches rings the consumers' bells, so they start watching it (D5).
//   D5  a dead peer: the descriptor is an epoll set of the socket and a pidfd per live
//       endpoint of the other side (re-synced at every arm), so a death makes it readable at
//       once; without pidfd, a one-shot 100 ms timer re-armed at every arm (the futex
//       sleeper's re-check bound). The arm that follows reaps the dead peer (producer_died).
//   D6  what the re-check finds is made visible again: at the end of stream or on a broken
//       queue the endpoint rings its own bell, so the descriptor stays readable (level-style).
//
// The big picture (all layouts, the wake-up protocol, crash semantics): docs/architecture.md.
#pragma once

#include <shmpipe/detail/segment.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace shmpipe::detail {

inline constexpr std::uint32_t kQueueFlagOneProducer = 1u << 0;
inline constexpr std::uint32_t kQueueFlagOneConsumer = 1u << 1;
inline constexpr std::uint32_t kQueueFlagJoinable = 1u << 2;     // QueueOptions::joinable (J1, J2)
inline constexpr std::uint32_t kQueueFlagTyped = 1u << 3;        // typed SPSC: fixed slots (T1-T3)
inline constexpr std::uint32_t kQueueFlagSymmetricFences = 1u << 8;  // QueueOptions::symmetric_fences (wait.hpp)

// T1: a typed slot is sizeof(T) rounded up to 8 bytes, and from 64 bytes on to whole cache
// lines, so every slot of a line or more starts on a line.
inline constexpr std::uint64_t typed_slot_stride(std::uint64_t size) noexcept {
    return size >= kCacheLine ? (size + kCacheLine - 1) / kCacheLine * kCacheLine : (size + 7) / 8 * 8;
}

inline constexpr std::uint32_t kRecordPad = 1u << 0;  // SPSC padding record: skip to the ring start
inline constexpr std::uint64_t kCellAbandoned = std::uint64_t{1} << 63;
inline constexpr std::uint64_t kNoIntent = ~std::uint64_t{0};

struct RecordHeader {  // SPSC: precedes every payload, 8-byte aligned
    std::uint32_t length;  // payload bytes (padding records: bytes to skip after the header)
    std::uint32_t flags;   // kRecordPad
};
static_assert(sizeof(RecordHeader) == 8);

struct alignas(kCacheLine) QueueControl {
    // Geometry: written by the creator, validated by every opener against the body size.
    std::uint64_t capacity;         // SPSC: ring bytes (power of two); MPMC: cell_count * cell_stride
    std::uint64_t max_message;      // largest payload accepted
    std::uint64_t ring_offset;      // RingIndices, from the body start
    std::uint64_t data_offset;      // from the body start
    std::uint64_t cells_offset;     // MPMC only
    std::uint64_t cell_count;       // MPMC, typed SPSC: cells/slots (power of two)
    std::uint64_t cell_stride;      // MPMC: multiple of 64, >= max_message; typed SPSC: typed_slot_stride
    std::uint32_t flags;            // kQueueFlag*
    std::uint32_t expected_producers;

    // Endpoint accounting, on its own line. Counters only grow.
    alignas(kCacheLine) std::atomic<std::uint32_t> producers_attached;  // ever attached
    std::atomic<std::uint32_t> producers_closed;    // closed cleanly
    std::atomic<std::uint32_t> producers_dead;      // found dead without closing (reaped)
    std::atomic<std::uint32_t> consumers_attached;
    std::atomic<std::uint32_t> consumers_closed;
    std::atomic<std::uint32_t> consumers_dead;
    std::atomic<std::uint32_t> extra_expected;      // producers announced later (a restarted replica)
    std::atomic<std::uint32_t> sealed;              // E2: Queue::seal() was called (0/1)
    // E1  A side made for one endpoint is held through its owner word: 0 (free) or
    //     pid << 32 | (start time & 0xffffffff) of the holder. It is claimed by CAS from 0 or
    //     from a word whose process is gone, and given back by CAS on close. The word names
    //     its holder, so a process killed anywhere in attach or close never blocks the side.
    // E2 A producer counts itself attached (producers_attached, seq_cst) and then reads
    //    `sealed` (seq_cst); seal() stores `sealed` (seq_cst). A producer that read 0 was
    //    counted before the seal in the single total order, so a consumer that reads
    //    `sealed` == 1 and then `producers_attached` sees it. One that read 1 counts itself
    //    closed and fails: the end of stream never comes while a producer can still push.
    std::atomic<std::uint64_t> producer_owner;
    std::atomic<std::uint64_t> consumer_owner;
    std::atomic<std::uint64_t> type_hash;           // set by the first typed endpoint (0 = none yet)
    std::atomic<std::uint64_t> messages_abandoned;  // MPMC cells skipped after a producer died
    alignas(kCacheLine) std::atomic<std::uint64_t> messages_lost;  // MPMC cells freed after a consumer died
    // JoinableQueue (kQueueFlagJoinable), off the push/pop path: only task_done() and join()
    // touch this line.
    // J1  tasks_done counts task_done() calls of every consumer; tasks_lost counts messages
    //     join() wrote off because the consumer that took them died (moved by CAS from the
    //     value the write-off was computed from, so two joiners never write off twice).
    //     join() returns once tasks_done + tasks_lost >= messages pushed (not abandoned).
    // J2  a consumer of a joinable queue keeps its EndpointRecord::aux = messages it took and
    //     has not marked done, stored right after each claim and each task_done: the records
    //     tell the work a live consumer still holds from the work a dead one took along.
    // JP1 task_done: fetch_add tasks_done, light_fence, and if join_waiters != 0 bump done_seq
    //     and wake; a joiner: join_waiters++, heavy_fence, re-check, futex-wait on done_seq.
    std::atomic<std::uint64_t> tasks_done;
    std::atomic<std::uint64_t> tasks_lost;
    std::atomic<std::uint32_t> join_waiters;
    std::atomic<std::uint32_t> done_seq;
};

struct RingIndices {
    alignas(kCacheLine) std::atomic<std::uint64_t> tail;   // S1/M2
    alignas(kCacheLine) std::atomic<std::uint64_t> head;   // S1/M2 (SPSC: published in batches, S4)
    // SPSC statistics (S5), one line per side, off the index lines.
    alignas(kCacheLine) std::atomic<std::uint64_t> tail_count;  // messages published
    std::atomic<std::uint64_t> tail_bytes;                      // payload bytes published
    alignas(kCacheLine) std::atomic<std::uint64_t> consumed;    // S4: the consumer's exact head
    std::atomic<std::uint64_t> head_count;                      // messages consumed
    std::atomic<std::uint64_t> head_bytes;                      // payload bytes consumed
    alignas(kCacheLine) std::atomic<std::uint32_t> consumers_waiting;  // sleepers on data_seq
    std::atomic<std::uint32_t> data_seq;                               // futex: data or state changed
    alignas(kCacheLine) std::atomic<std::uint32_t> producers_waiting;  // sleepers on space_seq
    std::atomic<std::uint32_t> space_seq;                              // futex: space or state changed
    std::atomic<std::uint32_t> consumer_bells;  // D2: consumers holding a descriptor (slow path only)
    std::atomic<std::uint32_t> producer_bells;  // D2: producers holding a descriptor
    std::uint8_t pad[kCacheLine - 16];
};
static_assert(offsetof(RingIndices, head) - offsetof(RingIndices, tail) >= kCacheLine);
static_assert(offsetof(RingIndices, tail_count) - offsetof(RingIndices, head) >= kCacheLine);
static_assert(offsetof(RingIndices, consumed) - offsetof(RingIndices, tail_count) >= kCacheLine);
static_assert(offsetof(RingIndices, consumers_waiting) - offsetof(RingIndices, consumed) >= kCacheLine);

struct Cell {  // MPMC
    std::atomic<std::uint64_t> seq;  // M1
    std::uint32_t length;            // payload bytes, written before seq = p + 1
    std::uint32_t producer;          // endpoint index of the producer (informational)
};
static_assert(sizeof(Cell) == 16);
static_assert(sizeof(QueueControl) == 3 * kCacheLine);

// A queue's geometry, copied from QueueControl once and validated (process-local);
// the rules that validate it are in queue_state.hpp.
struct QueueGeometry {
    std::uint64_t capacity = 0, max_message = 0, ring_offset = 0, data_offset = 0;
    std::uint64_t cells_offset = 0, cell_count = 0, cell_stride = 0;
    std::uint32_t flags = 0;
    bool spsc = false;
    bool typed = false;  // typed SPSC (kQueueFlagTyped): fixed slots, T1-T3
};

inline const QueueControl& queue_control(const std::byte* body) noexcept {
    return *reinterpret_cast<const QueueControl*>(body);
}
inline QueueControl& queue_control(std::byte* body) noexcept { return *reinterpret_cast<QueueControl*>(body); }
inline RingIndices& ring_indices(std::byte* body, const QueueGeometry& g) noexcept {
    return *reinterpret_cast<RingIndices*>(body + g.ring_offset);
}
// Re-reads ring_offset from shared memory: for tests and tools that made the segment
// themselves. Library code uses the QueueGeometry overload.
inline RingIndices& ring_indices(std::byte* body) noexcept {
    return *reinterpret_cast<RingIndices*>(body + queue_control(body).ring_offset);
}

// Depth and totals: queue_totals() in queue_state.hpp.

}  // namespace shmpipe::detail
