// The one home of a queue's state rules: when its stream has ended, how deep it is, what
// went in and out, and whether its geometry is valid. The consumer, Queue::stats() and the
// inspector (ipc/src/inspect.cpp) all call these; none keeps its own copy of a rule.
//
// The rules work on plain values. load_*() copy them out of a live segment; the inspector
// copies them from its read-only mapping under its SIGBUS guard and passes the copies.
// Not API.
#pragma once

#include <shmpipe/detail/queue_layout.hpp>

#include <cstdint>

namespace shmpipe::detail {

// What the end-of-stream rule needs to know about a queue's producers.
struct ProducerCounts {
    std::uint32_t expected = 0;   // expected_producers + extra_expected (0: not set)
    std::uint32_t attached = 0;   // ever attached
    std::uint32_t closed = 0;     // closed cleanly
    std::uint32_t dead = 0;       // reaped: died without closing
    bool one_producer = false;    // made for one producer (Endpoints::one)
    bool sealed = false;          // Queue::seal(): no new producer may attach
};

// Loads the counts in the order the rule needs: sealed, then closed and dead, then attached
// (all seq_cst, see E2 in queue_layout.hpp), so a producer that attaches while they are
// read can only make the queue look not ended yet.
ProducerCounts load_producer_counts(const QueueControl& c) noexcept;

// No further producer can come: every expected one attached, or the queue is sealed, or it
// is a one-producer queue whose producer attached. A `many` queue with neither an expected
// count nor a seal can always get another producer.
bool producers_complete(const ProducerCounts& p) noexcept;

// The end-of-stream rule (together with an empty ring): the queue is sealed and every
// attached producer is done, or every expected producer is done, or (no expected count) a
// one-producer queue's producer is done. Otherwise the stream goes on, as Python's get()
// keeps waiting.
bool stream_ended(const ProducerCounts& p) noexcept;

// Geometry copied out of QueueControl (plain fields, written once by the creator).
QueueGeometry copy_geometry(const QueueControl& c, bool spsc) noexcept;

// nullptr when `g` fits a body of `body_size` bytes, else the reason (a static string).
// Used by every opener and the inspector: one rule for what a valid queue is.
const char* validate_queue_geometry(const QueueGeometry& g, std::uint64_t body_size) noexcept;

// Copies the geometry of a live queue segment's body (each field loaded once) and validates
// the copy against the segment's validated body size (checks the kind too). nullptr on
// success, else the reason. Openers keep `out` and never re-read the geometry.
const char* read_queue_geometry(const Segment& segment, QueueGeometry& out) noexcept;

// The ring counters, head side before tail side (SP3 in queue_layout.hpp): tail only grows
// and never passes head + capacity, so a pair read in this order has tail >= consumed >= head.
struct RingCounts {
    std::uint64_t head = 0, consumed = 0, head_count = 0, head_bytes = 0;  // consumed: SPSC (S4)
    std::uint64_t tail = 0, tail_count = 0, tail_bytes = 0;
};
RingCounts load_ring_counts(const RingIndices& r) noexcept;

struct QueueTotals {
    std::uint64_t depth = 0;        // messages waiting
    std::uint64_t bytes_used = 0;   // ring bytes in use (SPSC: records with headers; MPMC: cells * stride)
    std::uint64_t messages_in = 0, messages_out = 0;
    std::uint64_t bytes_in = 0, bytes_out = 0;
};
// Typed SPSC: exact from the positions (T2). SPSC: exact from the statistics lines (S5), also while the consumer batches its head
// (bytes in use count from `consumed`, not the published head). MPMC: messages from the positions (exact), bytes from
// the endpoint records' batched counters, summed by the caller (endpoint_bytes_in/out).
// Depth is clamped to what the ring can hold.
QueueTotals queue_totals(const QueueGeometry& g, const RingCounts& r, std::uint64_t endpoint_bytes_in,
                         std::uint64_t endpoint_bytes_out) noexcept;

// Copies the totals into a report (QueueStats, the inspector's ObjectInfo): same field names.
template <class Report>
void copy_totals(const QueueTotals& t, Report& out) noexcept {
    out.depth = t.depth;
    out.bytes_used = t.bytes_used;
    out.messages_in = t.messages_in;
    out.messages_out = t.messages_out;
    out.bytes_in = t.bytes_in;
    out.bytes_out = t.bytes_out;
}

// A message of max_message bytes would not fit now (SPSC: free ring bytes, ignoring where
// the free bytes lie; MPMC: every cell taken).
bool queue_full(const QueueGeometry& g, const RingCounts& r) noexcept;

}  // namespace shmpipe::detail
