// Non-template cores of Producer<T> and Consumer<T>: the ring hot paths (inline, no system
// call, no shared write beyond the ring indices) and the slow paths (blocking, end of
// stream, death detection and recovery; in queue.cpp). Invariants and ordering pairs are
// numbered in queue_layout.hpp (S*, SP*, M*, MP*); each atomic access names the one it uses.
#pragma once

#include <shmpipe/detail/copy.hpp>
#include <shmpipe/detail/doorbell.hpp>
#include <shmpipe/detail/queue_layout.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/detail/wait.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace shmpipe::detail {

enum class PeekResult { ok, timeout, end };

// Queue::join() and its endpoint forms (J1, J2 in queue_layout.hpp).
bool join_queue(const Segment& segment, const QueueGeometry& geometry, std::uint64_t deadline_ns);
// A moved-from Producer/Consumer was used: Error(errc::invalid_state).
[[noreturn]] void throw_moved_from(const char* what);

// Calls f out of line: keeps a fast path that handles the common case small enough for the
// compiler to inline into the caller's loop, with everything else one call away.
//
// The per-message calls of a typed queue (Producer push/try_push, Consumer pop/try_pop/
// pop_into/try_pop_into/try_peek) and the typed_* steps below them are always inlined. Left
// to the compiler, whether they were inlined depended on unrelated code in the caller, and
// a try_pop (or typed_refresh_tail) kept as a call inside a polling loop cost the typed
// 64 B round trip ~80-130 ns in queue_bench (~480 -> 560-620 ns).
template <class F>
[[gnu::noinline]] decltype(auto) out_of_line(F&& f) {
    return std::forward<F>(f)();
}

inline constexpr std::uint64_t align8(std::uint64_t n) noexcept { return (n + 7) & ~std::uint64_t{7}; }

inline constexpr std::uint32_t kStatsBatch = 64;  // endpoint counters are published every 64 messages
// S4 (queue_layout.hpp): an SPSC consumer publishes its head once this many record bytes were
// consumed since the last store (less on a small ring: an eighth of it).
inline constexpr std::uint64_t kHeadBatchBytes = 1024;
// A typed queue's batch (T2) is at least this many slots, however large they are (a look
// that finds the ring empty, or nearly full, still publishes at once). One head store
// per 1 KiB slot cost streaming 1 KiB typed try_push/try_pop ~10% of its throughput
// (queue_bench, 8 alternated runs, medians: 0.79x -> 0.86x the reference ring).
inline constexpr std::uint64_t kHeadBatchSlots = 4;
// A typed consumer prefetches the next published slot when its stride is in this range
// (ConsumerCore::typed_prefetch).
inline constexpr std::uint64_t kTypedPrefetchMin = 512, kTypedPrefetchMax = 1024;
// M4 (queue_layout.hpp): an MPMC claim loop that re-reads its index this many times in a row
// without seeing it move is looking at a corrupt cell sequence, not at a race.
inline constexpr std::uint32_t kStuckIndexReads = 1024;

class EndpointCore {
public:
    EndpointCore(const EndpointCore&) = delete;
    EndpointCore& operator=(const EndpointCore&) = delete;

    const std::string& name() const noexcept { return segment_.name(); }
    std::size_t max_message() const noexcept { return static_cast<std::size_t>(max_message_); }
    bool spsc() const noexcept { return spsc_; }
    bool typed() const noexcept { return typed_; }  // typed SPSC: fixed slots (T1-T3 in queue_layout.hpp)
    bool has_fd() const noexcept { return bell_.is_open(); }
    // Messages waiting now, and whether a max_message push would not fit now. Approximate:
    // stale as soon as read (other endpoints move on). Any endpoint; no system call.
    std::size_t size_approx() const noexcept;
    bool full_approx() const noexcept;
    // JoinableQueue: waits until every message pushed has been marked done (J1); false at
    // deadline_ns (0 = none). Throws consumer_died, invalid_state.
    bool join(std::uint64_t deadline_ns) const { return join_queue(segment_, geometry_, deadline_ns); }

protected:
    // slot_size: sizeof(T) for an endpoint that can use a typed queue's slots (a trivially
    // copyable T with the built-in codec), 0 otherwise (T3: refused on a typed queue).
    EndpointCore(std::string_view name, EndpointRole role, std::uint64_t type_tag, const OpenOptions& options,
                 std::uint64_t slot_size);
    ~EndpointCore() = default;

    bool broken() const noexcept {
        return (segment_.header().state.load(std::memory_order_acquire) & kStateBroken) != 0;
    }
    void publish_stats() noexcept;  // copies local counters into our endpoint record (typed: from typed_pos_)
    // Publishes the endpoint counters once kStatsBatch messages were counted since the last time.
    void maybe_publish_stats() noexcept {
        if (messages_ - stats_mark_ >= kStatsBatch) {
            stats_mark_ = messages_;
            publish_stats();
        }
    }
    [[noreturn]] void throw_state(std::string_view verb) const;  // broken / closed
    // Marks the queue broken, wakes every sleeper, throws Error(corrupt) naming the queue.
    [[noreturn]] void throw_corrupt(std::string_view verb, const std::string& why);
    // M4: the claim loop at `pos` saw a cell sequence `seq` ahead of an index that never moves.
    [[noreturn]] void throw_stuck_cell(std::string_view verb, std::uint64_t pos, std::uint64_t seq);
    // M4: counts re-reads that found the index `again` still at `pos`; past kStuckIndexReads
    // drops our intent (M3: nothing claimed) and throws corrupt.
    void check_index_moved(std::uint64_t again, std::uint64_t pos, std::uint64_t seq, std::uint32_t& unchanged,
                           std::string_view verb) {
        unchanged = again == pos ? unchanged + 1 : 0;
        if (unchanged > kStuckIndexReads) [[unlikely]] {
            record_->intent.store(kNoIntent, std::memory_order_relaxed);
            throw_stuck_cell(verb, pos, seq);
        }
    }
    // Sleeps on word (== expected) until woken, deadline_ns, or 100 ms; keeps the inspector's counts.
    void sleep_on(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::uint64_t deadline_ns) noexcept;
    void prefault(std::size_t bytes) noexcept;  // OpenOptions::prefault_bytes
    // Reaps (marks dead) open endpoints of `role` whose processes died; returns how many this call reaped.
    std::uint32_t reap_dead(EndpointRole role) noexcept;
    bool live_intent(EndpointRole role, std::uint64_t pos) const noexcept;
    bool any_live(EndpointRole role) const noexcept;  // reads /proc: slow paths only
    void give_back_owner() noexcept;                  // E1
    bool owned_by_this_process() const noexcept;
    // Doorbells (D1-D6 in queue_layout.hpp). open_bell: the descriptor, made on first use
    // (throws Error naming the queue); sync_bell: drain, then watch the live endpoints of
    // `peers`, true when one of them died; arm_bell: the fd sleeper's half of D3 (`counted`:
    // `waiting` is a sleeper count, MPMC consumers; else a flag); drop_bell: on close.
    int open_bell(std::atomic<std::uint32_t>& bells, const char* verb);
    bool sync_bell(EndpointRole peers) noexcept;
    void arm_bell(std::atomic<std::uint32_t>& waiting, bool counted) noexcept;
    void drop_bell(EndpointRole role) noexcept;

    Segment segment_;
    QueueGeometry geometry_;  // validated copy: never re-read from shared memory
    QueueControl* ctl_ = nullptr;
    RingIndices* ring_ = nullptr;
    std::byte* data_ = nullptr;
    Cell* cells_ = nullptr;
    // SPSC: capacity_ is the ring size in positions (byte ring: bytes; typed: slots, T1), mask_
    // = capacity_ - 1. Typed: cell_stride_ is the slot stride.
    std::uint64_t capacity_ = 0, mask_ = 0, max_message_ = 0;
    std::uint64_t cell_count_ = 0, cell_mask_ = 0, cell_stride_ = 0;
    bool spsc_ = false;
    bool symmetric_fences_ = false;  // kQueueFlagSymmetricFences, read once at attach (wait.hpp)
    bool typed_ = false;  // typed SPSC (spsc_ is true too: every slow path is the SPSC one)
    bool closed_ = false;
    std::uint32_t index_ = 0;  // our endpoint record
    EndpointRecord* record_ = nullptr;
    std::uint32_t owner_pid_ = 0;  // the attaching process: a forked copy of the handle stays passive
    std::uint64_t last_reap_ns_ = 0;  // dead-peer scans are rate-limited (they read /proc)
    std::atomic<std::uint64_t>* owner_ = nullptr;  // E1: the owner word we hold (one-endpoint side)
    std::uint64_t messages_ = 0, bytes_ = 0;  // local counters (S: exact; published in batches)
    // Typed (T2): our position (the producer's tail_, the consumer's head_) and where it was
    // at attach: messages_ and bytes_ are derived from them when published, not counted per message.
    const std::uint64_t* typed_pos_ = nullptr;
    std::uint64_t typed_base_ = 0;
    std::uint64_t stats_mark_ = 0;            // messages_ when the counters were last published
    Doorbell bell_;  // open once fd() was asked for
};

class ProducerCore : public EndpointCore {
public:
    ProducerCore(std::string_view name, std::uint64_t type_tag, const OpenOptions& options = {},
                 std::uint64_t slot_size = 0);
    ~ProducerCore() { close(); }

    // Throws Error(message_too_large) naming the queue when n can never fit.
    void check_size(std::size_t n) const {
        if (n > max_message_) throw_too_large(n);
    }

    // Room for an n-byte message (n <= max_message), or nullptr when the queue is full.
    // The space is ours until commit() or abandon().
    // Throws Error(invalid_state) while a reservation is still open (commit it first).
    std::byte* try_reserve(std::size_t n) {
        if (holding_) throw_holding();
        std::byte* p = typed_ ? typed_try_reserve() : spsc_ ? spsc_try_reserve(n) : mpmc_try_reserve();
        holding_ = p != nullptr;
        return p;
    }
    // The blocking reserve's fast path, inline: room for n bytes now, or nullptr when the
    // slow path (reserve) has to decide: full, too large, closed, broken or still holding.
    // Throws corrupt like try_reserve (MPMC, M4).
    std::byte* reserve_now(std::size_t n) {
        if (holding_ || closed_ || n > max_message_ || broken()) [[unlikely]] return nullptr;
        std::byte* p = typed_ ? typed_try_reserve() : spsc_ ? spsc_try_reserve(n) : mpmc_try_reserve();
        holding_ = p != nullptr;
        return p;
    }
    // Blocking reserve: nullptr only at deadline_ns (0 = none). Throws message_too_large,
    // closed, broken, consumer_died. Out of line: call reserve_now() first.
    std::byte* reserve(std::size_t n, std::uint64_t deadline_ns);
    // Publishes the reserved message with its first n bytes.
    // Typed: the whole slot is the message (T1), n is ignored.
    void commit(std::size_t n) noexcept {
        holding_ = false;
        if (typed_) {
            ++tail_;
            typed_publish();
        } else if (spsc_) {
            spsc_commit(n);
        } else {
            mpmc_commit(n);
        }
    }
    // Gives the reservation up: SPSC publishes nothing; MPMC marks the claimed cell skipped.
    void abandon() noexcept;

    // Batch calls (Producer::push_n), SPSC only: stage_reserve() is try_reserve without the
    // reservation state, stage() adds the record written there to the batch, publish()
    // makes every staged record visible with one tail store (SP1). A record reserved but
    // not staged is never published. Throws closed/broken (check_open) like push.
    void check_open() const {
        if (closed_ || broken()) [[unlikely]] throw_state("push to");
        if (holding_) [[unlikely]] throw_holding();
    }
    std::byte* stage_reserve(std::size_t n) noexcept { return spsc_try_reserve(n); }
    bool holding() const noexcept { return holding_; }
    // SPSC push fast path: room for n bytes now (to stage() and publish()), or nullptr when
    // the slow path has to decide (full, too large, closed, broken, a reservation open).
    std::byte* spsc_push_now(std::size_t n) noexcept {
        if (holding_ || closed_ || n > max_message_ || broken()) [[unlikely]] return nullptr;
        return spsc_try_reserve(n);
    }
    void stage(std::size_t n) noexcept { spsc_stage(n); }
    void publish() noexcept { spsc_publish(); }

    // Typed SPSC (T1-T3), for Producer<T> of the queue's T (checked at attach, so the stride
    // is a constant here). typed_push_now: push's fast path, false when full or when the slow
    // path has to decide (closed, broken, a reservation open); typed_try_push_now: try_push's,
    // which sees a broken queue once it is full (as on the byte ring); typed_put: the copy and
    // the publication (one tail store, SP1). typed_put_n: as many of `items` as fit now,
    // published with one tail store; 0 when full.
    [[gnu::always_inline]] bool typed_ready() const noexcept { return !(holding_ || closed_) && !broken(); }
    template <class T>
    [[gnu::always_inline]] bool typed_push_now(const T& v) noexcept {
        if (!typed_ready()) [[unlikely]] return false;
        return typed_put(v);
    }
    template <class T>
    [[gnu::always_inline]] bool typed_try_push_now(const T& v) noexcept {
        if (holding_ || closed_) [[unlikely]] return false;
        return typed_put(v);
    }
    template <class T>
    [[gnu::always_inline]] bool typed_put(const T& v) noexcept {
        constexpr std::uint64_t stride = typed_slot_stride(sizeof(T));
        if (tail_ - cached_head_ >= capacity_) [[unlikely]] {  // T1: full as we last saw it
            if (!spsc_refresh_head(tail_ + 1)) return false;  // full is a result
        }
        copy_in<sizeof(T)>(data_ + (tail_ & mask_) * stride, &v);  // S2, T1: the slot is ours
        ++tail_;
        typed_publish();
        return true;
    }
    template <class T>
    std::size_t typed_put_n(const T* items, std::size_t n) noexcept {
        constexpr std::uint64_t stride = typed_slot_stride(sizeof(T));
        if (capacity_ - (tail_ - cached_head_) < n) spsc_refresh_head(tail_ + n);  // SP2: may free some
        const std::uint64_t room = capacity_ - (tail_ - cached_head_);
        const std::size_t k = n < room ? n : static_cast<std::size_t>(room);
        if (k == 0) return 0;
        const std::uint64_t first = tail_ & mask_;
        if constexpr (stride == sizeof(T)) {  // dense slots: at most two copies (the wrap)
            const std::uint64_t run = capacity_ - first < k ? capacity_ - first : k;
            std::memcpy(data_ + first * stride, items, run * sizeof(T));
            if (run < k) std::memcpy(data_, items + run, (k - run) * sizeof(T));
        } else {
            for (std::size_t i = 0; i < k; ++i) copy_fixed<sizeof(T)>(data_ + ((tail_ + i) & mask_) * stride, items + i);
        }
        tail_ += k;
        typed_publish();
        if (k > 1) publish_stats();  // the batch may have stepped over a multiple of 64
        return k;
    }
    // Ends this producer's stream: counts it closed and wakes the consumers. Idempotent.
    void close() noexcept;
    // The readiness descriptor (Producer::fd); made and armed on the first call.
    int fd();
    // try_reserve for a producer with a descriptor: when full, arms the doorbell (D3) and
    // looks once more; nullptr = still full, wait on fd(). Throws broken, closed.
    std::byte* poll_reserve(std::size_t n);

private:
    [[noreturn]] void throw_too_large(std::size_t n) const;
    [[noreturn]] void throw_holding() const;
    void wake_consumers() noexcept;
    void recover_full() noexcept;  // MPMC: free a cell a dead consumer took and never released
    void count(std::size_t n) noexcept {
        ++messages_;
        bytes_ += n;
        maybe_publish_stats();
    }
    [[gnu::always_inline]] void after_publish() noexcept {
        waker_fence(symmetric_fences_);  // the waker's half of the Dekker pair (wait.hpp)
        if (ring_->consumers_waiting.load(std::memory_order_relaxed) != 0) wake_consumers();
    }
    // Typed: publishes every slot written up to tail_ with one tail store (SP1); the tail is
    // the count (T2), so no statistics store.
    [[gnu::always_inline]] void typed_publish() noexcept {
        ring_->tail.store(tail_, std::memory_order_release);  // SP1: publish
        if ((tail_ & (kStatsBatch - 1)) == 0) publish_stats();  // endpoint counters, every 64th position
        after_publish();
    }
    // The generic reserve (push_for, WriteSlot, the slow paths) on a typed queue.
    [[gnu::always_inline]] std::byte* typed_try_reserve() noexcept {
        if (tail_ - cached_head_ >= capacity_ && !spsc_refresh_head(tail_ + 1)) return nullptr;  // T1
        return data_ + (tail_ & mask_) * cell_stride_;
    }

    std::byte* spsc_try_reserve(std::size_t n) noexcept {
        const std::uint64_t need = sizeof(RecordHeader) + align8(n);
        std::uint64_t pos = tail_;  // S1: only we write tail
        std::uint64_t off = pos & mask_;
        const std::uint64_t contiguous = capacity_ - off;
        const std::uint64_t total = need <= contiguous ? need : contiguous + need;  // S3
        if (pos + total - cached_head_ > capacity_) {
            if (!spsc_refresh_head(pos + total)) return nullptr;  // full is a result
        }
        if (need > contiguous) {
            // S3: pad to the end; published together with the message by one tail store.
            const RecordHeader pad{static_cast<std::uint32_t>(contiguous - sizeof(RecordHeader)), kRecordPad};
            std::memcpy(data_ + off, &pad, sizeof pad);
            pos += contiguous;
            off = 0;
        }
        reserved_pos_ = pos;
        return data_ + off + sizeof(RecordHeader);
    }
    // Writes the record header of the reservation and moves our tail past it, unpublished.
    void spsc_stage(std::size_t n) noexcept {
        const RecordHeader h{static_cast<std::uint32_t>(n), 0};
        std::memcpy(data_ + (reserved_pos_ & mask_), &h, sizeof h);
        tail_ = reserved_pos_ + sizeof(RecordHeader) + align8(n);
        ++messages_;
        bytes_ += n;
    }
    // Publishes every staged record with one tail store.
    void spsc_publish() noexcept {
        // S5: statistics on our own line, before the tail (SP3 relies on the order).
        ring_->tail_count.store(base_count_ + messages_, std::memory_order_release);
        ring_->tail_bytes.store(base_bytes_ + bytes_, std::memory_order_release);
        ring_->tail.store(tail_, std::memory_order_release);  // SP1: publish
        maybe_publish_stats();
        after_publish();
    }
    void spsc_commit(std::size_t n) noexcept {
        spsc_stage(n);
        spsc_publish();
    }
    std::byte* mpmc_try_reserve() {
        std::uint64_t pos = ring_->tail.load(std::memory_order_relaxed);  // M2: validated by the CAS
        std::uint32_t unchanged = 0;  // M4: re-reads of tail that found it where it was
        for (;;) {
            Cell& c = cells_[pos & cell_mask_];
            const std::uint64_t seq = c.seq.load(std::memory_order_acquire);  // MP2: the consumer is done with it
            // M1: compare without the abandoned flag, or a skipped cell of the previous lap
            // would look like a future position and this loop would never leave.
            const auto diff = static_cast<std::int64_t>((seq & ~kCellAbandoned) - pos);
            if (diff == 0 && seq == pos) {
                record_->intent.store(pos, std::memory_order_relaxed);  // M3, published by the CAS (MP3)
                if (ring_->tail.compare_exchange_weak(pos, pos + 1, std::memory_order_acq_rel,
                                                      std::memory_order_relaxed)) {
                    claimed_ = pos;
                    return data_ + (pos & cell_mask_) * cell_stride_;
                }
            } else if (diff < 0) {
                // The cell still holds the previous lap: full. Drop the intent (M3) so a
                // recoverer never waits on a claim we did not make.
                record_->intent.store(kNoIntent, std::memory_order_relaxed);
                return nullptr;
            } else {
                // Another producer moved on (M4: then tail has moved, unless the cell is corrupt).
                const std::uint64_t again = ring_->tail.load(std::memory_order_relaxed);
                check_index_moved(again, pos, seq, unchanged, "push to");
                pos = again;
            }
        }
    }
    // Looks for room up to `end` (a ring position) when our copy of head says full: the
    // published head (SP2), and on the first of every 64 failures in a row the consumer's
    // exact position (S4), so a producer that only polls sees every freed byte, yet a
    // polling loop does not pull the consumer's statistics line across once per try.
    bool spsc_refresh_head(std::uint64_t end) noexcept {
        const std::uint64_t head = ring_->head.load(std::memory_order_acquire);  // SP2
        if (head > cached_head_) cached_head_ = head;
        if (end - cached_head_ > capacity_ && (full_tries_++ & 63) == 0) spsc_refresh_exact();
        if (end - cached_head_ > capacity_) return false;
        full_tries_ = 0;
        return true;
    }
    void spsc_refresh_exact() noexcept {
        const std::uint64_t consumed = ring_->consumed.load(std::memory_order_acquire);  // SP2 (S4)
        if (consumed > cached_head_ && consumed <= tail_) cached_head_ = consumed;  // S2: never past our tail
    }
    void mpmc_commit(std::size_t n) noexcept {
        Cell& c = cells_[claimed_ & cell_mask_];
        c.length = static_cast<std::uint32_t>(n);
        c.producer = index_;
        c.seq.store(claimed_ + 1, std::memory_order_release);  // MP1: publish
        count(n);
        after_publish();
    }

    std::uint64_t tail_ = 0;         // SPSC: our tail (S1)
    std::uint64_t cached_head_ = 0;  // SPSC: last head we saw (SP2)
    std::uint64_t reserved_pos_ = 0;
    std::uint64_t base_count_ = 0, base_bytes_ = 0;  // SPSC: tail_count / tail_bytes when we attached (S5; typed: tail, T2)
    std::uint64_t claimed_ = 0;      // MPMC: position claimed by try_reserve
    std::uint64_t full_since_ns_ = 0;
    std::uint32_t full_tries_ = 0;  // SPSC: failed reservations in a row (spsc_refresh_head)
    std::uint64_t woke_at_head_ = ~std::uint64_t{0};  // MPMC: ring head at our last wake-up call
    std::uint64_t woken_ = 0;                         // consumers we woke since head was there
    bool holding_ = false;           // a reservation is open
};

class ConsumerCore : public EndpointCore {
public:
    ConsumerCore(std::string_view name, std::uint64_t type_tag, const OpenOptions& options = {},
                 std::uint64_t slot_size = 0);
    ~ConsumerCore() { close(); }

    // The next message in place, or false when none is waiting now. Throws Error(corrupt)
    // when the ring holds a record that cannot be valid (shared memory is untrusted).
    // Throws Error(invalid_state) while the previous message is still held (release it first).
    bool try_peek(std::span<const std::byte>& out) {
        if (holding_) throw_holding();
        holding_ = typed_ ? typed_try_peek(out) : spsc_ ? spsc_try_peek(out) : mpmc_try_peek(out);
        if (joinable_ && holding_) {
            // J2: relaxed, a hint for join(), which acts only on a state that stays put.
            record_->aux.store(messages_ + 1 - done_, std::memory_order_relaxed);
        }
        return holding_;
    }
    // The blocking peek's fast path, inline: false when the slow path (peek) has to decide.
    bool peek_now(std::span<const std::byte>& out) { return !closed_ && try_peek(out); }
    // Blocking peek: ok, timeout (deadline_ns reached; 0 = none) or end of stream. Throws
    // producer_died (once per dead producer, after draining), broken, corrupt.
    PeekResult peek(std::span<const std::byte>& out, std::uint64_t deadline_ns);
    // Consumes the message returned by the last successful peek.
    void release() noexcept {
        if (!holding_) return;
        holding_ = false;
        if (typed_) {
            typed_consume(1);
        } else if (spsc_) {
            spsc_release();
        } else {
            mpmc_release();
        }
    }
    bool ended() const noexcept { return ended_; }
    void close() noexcept;

    // Batch calls (Consumer::pop_n), SPSC queues that are not joinable: batch_next() is
    // try_peek without the holding state, batch_take() consumes that message locally, and
    // batch_end() publishes the statistics (S5) and head (S4) once for the whole batch.
    bool batchable() const noexcept { return spsc_ && !joinable_; }
    // A one-message batch: the pop fast path of a batchable queue (no holding state).
    bool spsc_pop_now(std::span<const std::byte>& out) {
        if (closed_ || holding_) [[unlikely]] return false;
        return spsc_try_peek(out);
    }
    bool spsc_try_pop(std::span<const std::byte>& out) { return spsc_try_peek(out); }  // try_pop: no closed check
    void spsc_pop_done() noexcept { spsc_release(); }
    bool holding() const noexcept { return holding_; }
    bool open_idle() const noexcept { return !(closed_ || holding_); }  // not closed, no slot held
    bool batch_next(std::span<const std::byte>& out) {
        if (holding_) [[unlikely]] throw_holding();
        return spsc_try_peek(out);
    }
    void batch_take() noexcept {
        head_ = peek_end_;
        ++messages_;
        bytes_ += peek_len_;
    }
    void batch_end() noexcept {
        spsc_store_stats();
        maybe_publish_stats();
        publish_head();
        after_release();
    }
    // Typed SPSC (T1-T3), for Consumer<T> of the queue's T. typed_front: the next message's
    // slot, or nullptr when none is waiting now (or, with `checked`, when the slow path has
    // to decide: closed, a ReadSlot held); typed_consume(k) consumes the k messages at head.
    // typed_take_n: copies up to n waiting messages out and consumes them with one head
    // store (S4). Throw corrupt when the published tail is impossible (T1: untrusted).
    template <std::uint64_t Stride, bool checked>
    [[gnu::always_inline]] const std::byte* typed_front() {
        if constexpr (checked) {
            if (closed_ || holding_) [[unlikely]] return nullptr;
        }
        if (head_ == cached_tail_ && !typed_refresh_tail()) return nullptr;
        return data_ + (head_ & mask_) * Stride;
    }
    // Typed: the next slot, held in place (a ReadSlot's), or nullptr when none is waiting
    // now. Consumer::try_peek's polling look, inline as try_pop's.
    template <std::uint64_t Stride>
    [[gnu::always_inline]] const std::byte* typed_hold() {
        if (holding_) throw_holding();
        const std::byte* p = typed_front<Stride, false>();
        holding_ = p != nullptr;
        if (holding_) typed_prefetch<Stride>(1);  // the next slot, while the caller works in this one
        return p;
    }
    // Typed slots of 512 B to 1 KiB: when the slot `ahead` of head is already published,
    // start loading it, so its copy out does not wait for the other CPU's cache line by line
    // (a published slot is never written until consumed: no line is taken from the producer).
    // Streaming 1 KiB try_push/try_pop went from 0.87x to 0.97x the benchmark's reference
    // ring with it (queue_bench, 5 runs alternated with a build without it, medians); at
    // 512 B the change was within the noise; at 4 KiB, 64 prefetches per slot made it slower,
    // so larger slots are left to the hardware's own prefetch. The round trip, where no next
    // slot is ever waiting, pays one compare.
    template <std::uint64_t Stride>
    [[gnu::always_inline]] void typed_prefetch(std::uint64_t ahead) const noexcept {
        if constexpr (Stride >= kTypedPrefetchMin && Stride <= kTypedPrefetchMax) {
            if (cached_tail_ - head_ > ahead) {
                const std::byte* next = data_ + ((head_ + ahead) & mask_) * Stride;
                for (std::uint64_t off = 0; off < Stride; off += 64) __builtin_prefetch(next + off, 0, 3);
            }
        }
    }
    // The copying pops' take of the slot at head once it is copied out: consumed, and the
    // next one started while the caller works on this copy.
    template <std::uint64_t Stride>
    [[gnu::always_inline]] void typed_take_one() noexcept {
        typed_consume(1);
        typed_prefetch<Stride>(0);
    }
    // Per message one store on our own line (consumed) and one compare; at publish_at_
    // (S4: a batch of slots further, or at once when the tail we loaded showed the ring
    // nearly full) the head, the endpoint counters, and the waker's check for a sleeping
    // producer. Catching up with that tail publishes nothing: the next look that finds the
    // ring empty does (typed_refresh_tail), so a reply sent right after a pop does not wait
    // behind it. A producer that sleeps re-checks consumed after announcing itself, and the
    // ring it waits on is full, so while we keep taking messages publish_at_ comes within a
    // batch (the tail we load next shows the ring nearly full, or a batch passes), and at
    // the latest the look that finds it empty; a consumer that stops taking leaves it to
    // its bounded re-check, as a stop between two batch publications always did.
    [[gnu::always_inline]] void typed_consume(std::uint64_t k) noexcept {
        head_ += k;
        ring_->consumed.store(head_, std::memory_order_release);  // S4, T2: the exact count
        if (head_ >= publish_at_) typed_publish_head();
    }
    [[gnu::noinline]] void typed_publish_head() noexcept {
        publish_head();
        publish_at_ = head_ + head_batch_;
        publish_stats();
        after_release();
    }
    template <class T>
    std::size_t typed_take_n(T* out, std::size_t n) {
        constexpr std::uint64_t stride = typed_slot_stride(sizeof(T));
        if (holding_) [[unlikely]] throw_holding();
        if (cached_tail_ - head_ < n && !typed_refresh_tail()) return 0;
        const std::uint64_t avail = cached_tail_ - head_;
        const std::size_t k = n < avail ? n : static_cast<std::size_t>(avail);
        if (k == 0) return 0;
        const std::uint64_t first = head_ & mask_;
        if constexpr (stride == sizeof(T)) {  // dense slots: at most two copies (the wrap)
            const std::uint64_t run = capacity_ - first < k ? capacity_ - first : k;
            std::memcpy(static_cast<void*>(out), data_ + first * stride, run * sizeof(T));
            if (run < k) std::memcpy(static_cast<void*>(out + run), data_, (k - run) * sizeof(T));
        } else {
            for (std::size_t i = 0; i < k; ++i) {
                copy_fixed<sizeof(T)>(out + i, data_ + ((head_ + i) & mask_) * stride);
            }
        }
        typed_consume(k);
        return k;
    }

    // JoinableQueue: one message taken by this consumer is done (J1, J2, JP1).
    void task_done();
    // The readiness descriptor (Consumer::fd); made and armed on the first call.
    int fd();
    // try_peek for a consumer with a descriptor: when empty, arms the doorbell (D3) and
    // settles what the re-check finds: ok, end (also rings the bell, D6) or timeout (empty:
    // wait on fd()). Throws like peek: producer_died (once per dead producer), broken, corrupt.
    PeekResult poll_peek(std::span<const std::byte>& out);

private:
    enum class Ending { none, ended, died };
    [[noreturn]] void corrupt(const char* why);
    [[noreturn]] void throw_holding() const;
    Ending ending() noexcept;            // empty now: end of stream, a dead producer, or neither
    [[noreturn]] void throw_producer_died();  // reports the newest dead producer (once)
    // The queue looked empty: ok (a message came after all), end, or timeout (keep
    // waiting). Sets ended(); throws producer_died.
    PeekResult settle(std::span<const std::byte>& out);
    void wake_producers() noexcept;
    bool recover_stuck_head() noexcept;  // MPMC: skip a cell whose (dead) producer never committed
    void count(std::size_t n) noexcept {
        ++messages_;
        bytes_ += n;
        maybe_publish_stats();
    }
    [[gnu::always_inline]] void after_release() noexcept {
        waker_fence(symmetric_fences_);
        if (ring_->producers_waiting.load(std::memory_order_relaxed) != 0) wake_producers();
    }

    // Typed: loads the published tail (SP1) and checks it (T1); false when nothing is waiting.
    [[gnu::always_inline]] bool typed_refresh_tail() {
        cached_tail_ = ring_->tail.load(std::memory_order_acquire);  // SP1
        const std::uint64_t avail = cached_tail_ - head_;
        if (avail > capacity_) corrupt("tail more than a ring ahead of head");  // T1: untrusted
        if (avail != 0) {
            // S4: publish after a batch, and at once when the ring was nearly full (the
            // producer may be stuck on it), as spsc_release; not when we catch up with this
            // tail (typed_consume): the look that finds the ring empty publishes.
            publish_at_ = avail > near_full_ ? head_ + 1 : published_head_ + head_batch_;
            return true;
        }
        if (published_head_ != head_) typed_publish_head();  // S4: empty
        return false;
    }
    [[gnu::always_inline]] bool typed_try_peek(std::span<const std::byte>& out) {
        if (head_ == cached_tail_ && !typed_refresh_tail()) return false;
        out = {data_ + (head_ & mask_) * cell_stride_, max_message_};
        return true;
    }
    bool spsc_try_peek(std::span<const std::byte>& out) {
        for (;;) {
            const std::uint64_t pos = head_;  // S1: only we write head
            if (pos == cached_tail_) {
                cached_tail_ = ring_->tail.load(std::memory_order_acquire);  // SP1
                if (pos == cached_tail_) {
                    if (published_head_ != pos) publish_head();  // S4: empty (a padding skip)
                    return false;
                }
            }
            const std::uint64_t avail = cached_tail_ - pos;
            const std::uint64_t off = pos & mask_;
            RecordHeader h;  // a private copy: validated once, never re-read (untrusted)
            std::memcpy(&h, data_ + off, sizeof h);
            const std::uint64_t size = sizeof(RecordHeader) + align8(h.length);
            if (avail > capacity_ || size > avail || off + size > capacity_) corrupt("record outside the published bytes");
            if ((h.flags & kRecordPad) != 0) {
                if (off + size != capacity_) corrupt("padding record does not end at the ring end");
                head_ = pos + size;  // S3: skip to the start; published with the next release
                continue;
            }
            if (h.length > max_message_) corrupt("record larger than max_message");
            peek_end_ = pos + size;
            peek_len_ = h.length;
            out = {data_ + off + sizeof(RecordHeader), h.length};
            return true;
        }
    }
    // Consumes the peeked record: exact statistics on our own line (S5), head in batches (S4).
    void spsc_consume() noexcept {
        head_ = peek_end_;
        ++messages_;
        bytes_ += peek_len_;
        spsc_store_stats();
        maybe_publish_stats();
    }
    void spsc_store_stats() noexcept {
        ring_->consumed.store(head_, std::memory_order_release);  // SP3
        ring_->head_bytes.store(base_bytes_ + bytes_, std::memory_order_release);
        ring_->head_count.store(base_count_ + messages_, std::memory_order_release);
    }
    void spsc_release() noexcept {
        // S4: publish after a batch; when we caught up with the tail we know (likely empty);
        // and when the ring was nearly full as we last saw it (the producer may be stuck on it).
        const bool near_full = cached_tail_ - head_ > near_full_;
        spsc_consume();
        if (head_ - published_head_ >= head_batch_ || head_ == cached_tail_ || near_full) publish_head();
        after_release();
    }
    void publish_head() noexcept {
        published_head_ = head_;
        ring_->head.store(head_, std::memory_order_release);  // SP2: the bytes are free
    }
    bool mpmc_try_peek(std::span<const std::byte>& out) {
        std::uint64_t pos = ring_->head.load(std::memory_order_relaxed);  // M2: validated by the CAS
        std::uint32_t unchanged = 0;  // M4
        for (;;) {
            Cell& c = cells_[pos & cell_mask_];
            const std::uint64_t seq = c.seq.load(std::memory_order_acquire);  // MP1: payload written
            const auto diff = static_cast<std::int64_t>((seq & ~kCellAbandoned) - (pos + 1));
            if (diff == 0) {
                // M3, published by the CAS (MP3). Release: a supervisor that sees this next
                // claim also sees what we did before it (e.g. the result of the previous task).
                record_->intent.store(pos, std::memory_order_release);
                if (ring_->head.compare_exchange_weak(pos, pos + 1, std::memory_order_acq_rel,
                                                      std::memory_order_relaxed)) {
                    if ((seq & kCellAbandoned) != 0) {
                        // Nobody will ever finish this message: free the cell and look further.
                        c.seq.store(pos + cell_count_, std::memory_order_release);  // MP2
                        ++pos;
                        continue;
                    }
                    const std::uint32_t len = c.length;  // ordered by MP1
                    if (len > max_message_) {
                        c.seq.store(pos + cell_count_, std::memory_order_release);
                        corrupt("cell length larger than max_message");
                    }
                    claimed_ = pos;
                    peek_len_ = len;
                    out = {data_ + (pos & cell_mask_) * cell_stride_, len};
                    return true;
                }
            } else if (diff < 0) {
                record_->intent.store(kNoIntent, std::memory_order_relaxed);  // M3: nothing claimed
                return false;  // empty, or the producer of pos is still writing
            } else {
                // Another consumer took pos (M4: then head has moved, unless the cell is corrupt).
                const std::uint64_t again = ring_->head.load(std::memory_order_relaxed);
                check_index_moved(again, pos, seq, unchanged, "pop from");
                pos = again;
            }
        }
    }
    void mpmc_release() noexcept {
        cells_[claimed_ & cell_mask_].seq.store(claimed_ + cell_count_, std::memory_order_release);  // MP2
        count(peek_len_);
        after_release();
    }

    std::uint64_t head_ = 0;         // SPSC (S1)
    std::uint64_t cached_tail_ = 0;  // SPSC (SP1)
    std::uint64_t peek_end_ = 0;
    std::uint64_t peek_len_ = 0;
    std::uint64_t published_head_ = 0;  // SPSC: the head we last stored (S4)
    std::uint64_t publish_at_ = 0;      // typed: the head_ at which to publish next (typed_consume)
    std::uint64_t head_batch_ = kHeadBatchBytes;
    std::uint64_t near_full_ = 0;  // SPSC: more bytes in use than this may leave a producer stuck (S3: 2 records)
    std::uint64_t base_count_ = 0, base_bytes_ = 0;  // SPSC: head_count / head_bytes when we attached (S5; typed: consumed, T2)
    std::uint64_t claimed_ = 0;      // MPMC
    std::uint32_t dead_reported_ = 0;  // producers_dead already reported by this consumer
    std::uint64_t done_ = 0;           // task_done() calls (J2)
    bool joinable_ = false;            // kQueueFlagJoinable, read once at attach
    bool ended_ = false;
    bool holding_ = false;  // a peeked message is not released yet
};

}  // namespace shmpipe::detail
