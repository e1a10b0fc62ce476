// A queue's state rules (see detail/queue_state.hpp): end of stream, depth and totals,
// geometry validation. Plain functions of copied values, shared by the endpoint cores,
// Queue::stats() and the inspector.
#include <shmpipe/detail/queue_endpoint.hpp>
#include <shmpipe/detail/queue_state.hpp>

#include <algorithm>
#include <bit>

namespace shmpipe::detail {

ProducerCounts load_producer_counts(const QueueControl& c) noexcept {
    ProducerCounts p;
    p.one_producer = (c.flags & kQueueFlagOneProducer) != 0;
    p.sealed = c.sealed.load(std::memory_order_seq_cst) != 0;  // E2: before attached
    // Done before attached: a producer that attaches and closes between the loads can only
    // raise `attached`, which delays the end, never advances it.
    p.closed = c.producers_closed.load(std::memory_order_seq_cst);
    p.dead = c.producers_dead.load(std::memory_order_seq_cst);
    p.attached = c.producers_attached.load(std::memory_order_seq_cst);  // E2
    if (c.expected_producers != 0) p.expected = c.expected_producers + c.extra_expected.load(std::memory_order_acquire);
    return p;
}

// An expected count is the authority over the one-producer default: a one-producer queue
// expecting N incarnations (a replacement after each death) ends after the N-th.
bool producers_complete(const ProducerCounts& p) noexcept {
    if (p.sealed) return true;
    if (p.expected != 0) return p.attached >= p.expected;
    return p.one_producer && p.attached != 0;
}

bool stream_ended(const ProducerCounts& p) noexcept {
    const std::uint64_t done = std::uint64_t{p.closed} + p.dead;
    if (p.sealed && done >= p.attached) return true;  // sealed before anyone attached: nobody can
    if (p.expected != 0) return done >= p.expected;
    return p.one_producer && p.attached != 0 && done >= p.attached;
}

QueueGeometry copy_geometry(const QueueControl& c, bool spsc) noexcept {
    QueueGeometry g;
    g.spsc = spsc;
    g.flags = c.flags;
    g.capacity = c.capacity;
    g.max_message = c.max_message;
    g.ring_offset = c.ring_offset;
    g.data_offset = c.data_offset;
    g.cells_offset = c.cells_offset;
    g.cell_count = c.cell_count;
    g.cell_stride = c.cell_stride;
    g.typed = spsc && (c.flags & kQueueFlagTyped) != 0;
    return g;
}

const char* validate_queue_geometry(const QueueGeometry& g, std::uint64_t size) noexcept {
    if (size < sizeof(QueueControl)) return "queue body too small";
    if (g.ring_offset < sizeof(QueueControl) || g.ring_offset % kCacheLine != 0 || g.ring_offset > size ||
        size - g.ring_offset < sizeof(RingIndices)) {
        return "ring indices outside the segment";
    }
    if (g.max_message == 0 || g.max_message > (std::uint64_t{1} << 32) - 1) return "bad max_message";
    if (g.data_offset % kCacheLine != 0 || g.data_offset < g.ring_offset + sizeof(RingIndices) || g.data_offset > size) {
        return "data region outside the segment";
    }
    if (!g.spsc && (g.flags & kQueueFlagTyped) != 0) return "typed flag on an MPMC queue";
    if (g.typed) {
        // T1: fixed slots; the consumer copies max_message bytes out of each.
        if ((g.flags & (kQueueFlagOneProducer | kQueueFlagOneConsumer)) !=
                (kQueueFlagOneProducer | kQueueFlagOneConsumer) ||
            (g.flags & kQueueFlagJoinable) != 0) {
            return "typed SPSC queue with other than one-producer/one-consumer flags";
        }
        if (g.cell_count < 2 || !std::has_single_bit(g.cell_count)) return "slot count is not a power of two";
        if (g.cell_stride != typed_slot_stride(g.max_message)) return "slot stride does not match the element size";
        if (g.cell_count > (size - g.data_offset) / g.cell_stride) return "slots outside the segment";
        if (g.capacity != g.cell_count * g.cell_stride) return "capacity does not match the slots";
    } else if (g.spsc) {
        if ((g.flags & (kQueueFlagOneProducer | kQueueFlagOneConsumer)) !=
            (kQueueFlagOneProducer | kQueueFlagOneConsumer)) {
            return "SPSC queue without one-producer/one-consumer flags";
        }
        if (g.capacity < 64 || !std::has_single_bit(g.capacity)) return "ring capacity is not a power of two";
        if (g.capacity > size - g.data_offset) return "ring larger than the segment";
        if (2 * (sizeof(RecordHeader) + align8(g.max_message)) > g.capacity) return "max_message too large for the ring";
    } else {
        if (g.cell_count < 2 || !std::has_single_bit(g.cell_count)) return "cell count is not a power of two";
        if (g.cell_stride < g.max_message || g.cell_stride % kCacheLine != 0 || g.cell_stride == 0) {
            return "bad cell stride";
        }
        if (g.cells_offset < g.ring_offset + sizeof(RingIndices) || g.cells_offset % alignof(Cell) != 0 ||
            g.cells_offset > size || g.cell_count > (size - g.cells_offset) / sizeof(Cell) ||
            g.cells_offset + g.cell_count * sizeof(Cell) > g.data_offset) {
            return "cells outside the segment";
        }
        if (g.cell_count > (size - g.data_offset) / g.cell_stride) return "cell data outside the segment";
        if (g.capacity != g.cell_count * g.cell_stride) return "capacity does not match the cells";
    }
    return nullptr;
}

const char* read_queue_geometry(const Segment& segment, QueueGeometry& out) noexcept {
    const std::uint64_t size = segment.body_size();  // validated by the segment layer
    if (size < sizeof(QueueControl)) return "queue body too small";
    const bool spsc = segment.kind() == ObjectKind::spsc_queue;
    if (segment.kind() != ObjectKind::mpmc_queue && !spsc) return "not a queue";
    const QueueGeometry g = copy_geometry(queue_control(segment.body()), spsc);  // one load per field
    if (const char* why = validate_queue_geometry(g, size)) return why;
    out = g;
    return nullptr;
}

RingCounts load_ring_counts(const RingIndices& r) noexcept {
    RingCounts c;
    c.head_count = r.head_count.load(std::memory_order_acquire);  // SP3: head side first
    c.head_bytes = r.head_bytes.load(std::memory_order_acquire);
    c.consumed = r.consumed.load(std::memory_order_acquire);
    c.head = r.head.load(std::memory_order_acquire);
    c.tail = r.tail.load(std::memory_order_acquire);
    c.tail_count = r.tail_count.load(std::memory_order_acquire);
    c.tail_bytes = r.tail_bytes.load(std::memory_order_acquire);
    return c;
}

QueueTotals queue_totals(const QueueGeometry& g, const RingCounts& r, std::uint64_t endpoint_bytes_in,
                         std::uint64_t endpoint_bytes_out) noexcept {
    QueueTotals t;
    if (g.typed) {
        // T2: the positions are the counts; consumed is exact, head may trail (S4).
        const std::uint64_t out = std::max(r.head, r.consumed);
        t.messages_in = r.tail;
        t.messages_out = out;
        t.bytes_in = r.tail * g.max_message;
        t.bytes_out = out * g.max_message;
        t.depth = std::min(r.tail >= out ? r.tail - out : 0, g.cell_count);
        t.bytes_used = t.depth * g.cell_stride;
    } else if (g.spsc) {
        t.messages_in = r.tail_count;
        t.bytes_in = r.tail_bytes;
        t.messages_out = r.head_count;
        t.bytes_out = r.head_bytes;
        t.depth = t.messages_in >= t.messages_out ? t.messages_in - t.messages_out : 0;
        const std::uint64_t head = std::max(r.head, r.consumed);  // S4: consumed is exact, head may trail
        t.bytes_used = std::min(r.tail >= head ? r.tail - head : 0, g.capacity);
    } else {
        // Positions count every claimed message exactly; bytes come from the batched counters.
        t.messages_in = r.tail;
        t.messages_out = r.head;
        t.depth = std::min(r.tail >= r.head ? r.tail - r.head : 0, g.cell_count);
        t.bytes_used = t.depth * g.cell_stride;
        t.bytes_in = endpoint_bytes_in;
        t.bytes_out = endpoint_bytes_out;
    }
    return t;
}

bool queue_full(const QueueGeometry& g, const RingCounts& r) noexcept {
    const QueueTotals t = queue_totals(g, r, 0, 0);
    if (!g.spsc || g.typed) return t.depth >= g.cell_count;
    return g.capacity - t.bytes_used < sizeof(RecordHeader) + align8(g.max_message);
}

}  // namespace shmpipe::detail
