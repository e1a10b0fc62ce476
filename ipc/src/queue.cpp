// Queue creation, validation and the slow paths of the endpoint cores: attaching,
// blocking, end of stream, death detection and recovery. The hot paths are inline in
// detail/queue_endpoint.hpp; invariants (S*, M*) and ordering pairs (SP*, MP*) are in
// detail/queue_layout.hpp.
#include <shmpipe/detail/anonymous_name.hpp>
#include <shmpipe/detail/demangle.hpp>
#include <shmpipe/detail/queue_endpoint.hpp>
#include <shmpipe/detail/queue_state.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/queue.hpp>

#include <algorithm>
#include <bit>
#include <climits>
#include <memory>
#include <string>
#include <vector>
#include <sys/mman.h>
#include <unistd.h>

namespace shmpipe {
namespace detail {
namespace {

constexpr std::uint64_t kSleepSliceNs = 100'000'000;    // sleepers re-check state at least this often
constexpr std::uint64_t kReapIntervalNs = 50'000'000;   // dead-peer scans at most this often
constexpr std::uint64_t kConsumerGoneGraceNs = 1'000'000'000;
constexpr std::uint32_t kSpscEndpointRecords = 4;       // one producer, one consumer, and room to re-attach

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

std::string pid_text(std::uint32_t pid) { return "pid " + std::to_string(pid); }

// Opens a queue segment (either kind) and copies and validates its geometry; errors name the queue.
Segment open_queue_segment(std::string_view name, std::string_view verb, Access access, QueueGeometry& geometry,
                           const OpenOptions& options = {}) {
    validate_name(name, "queue");
    OpenProblem problem;
    Segment s = Segment::open_any(name, access, problem, options);
    if (problem.code) throw_problem(verb, "queue", name, problem);
    if (s.kind() != ObjectKind::spsc_queue && s.kind() != ObjectKind::mpmc_queue) {
        throw Error(errc::wrong_kind, describe(verb, "queue", name,
                    std::string("it is a ") + kind_name(s.kind()) + ", not a queue"));
    }
    if (const char* why = read_queue_geometry(s, geometry)) {
        throw_problem(verb, "queue", name,
                      {make_error_code(errc::corrupt), why, "`inspect-queues clean --corrupt` removes it"});
    }
    return s;
}

// E1: an owner word names its holder by pid and the low 32 bits of its start time.
std::uint64_t owner_word(const ProcessId& p) noexcept {
    return (std::uint64_t{p.pid} << 32) | (p.start_time & 0xffffffffu);
}
bool owner_alive(std::uint64_t w) noexcept {
    if (w == 0) return false;
    const std::uint64_t start = process_start_time(static_cast<pid_t>(w >> 32));
    return start != 0 && (start & 0xffffffffu) == (w & 0xffffffffu);
}

void bump_and_wake(std::atomic<std::uint32_t>& seq) noexcept {
    seq.fetch_add(1, std::memory_order_release);
    futex_wake(seq, INT_MAX);
}

// D1: a cleared armed bell that was counted among the MPMC consumer sleepers leaves the count.
void uncount_bell(RingIndices& r, std::uint64_t was) noexcept {
    if ((was & kBellArmed) != 0 && (was & kBellCounted) != 0) r.consumers_waiting.fetch_sub(1, std::memory_order_relaxed);
}

// D1, D2: rings up to `limit` armed doorbells of the endpoints in `role` (any state: a dead
// or closed endpoint's armed bell is cleared here too); returns how many it rang. Slow path only.
std::uint32_t ring_bells(const Segment& s, RingIndices& r, EndpointRole role,
                         std::uint32_t limit = UINT32_MAX) noexcept {
    // Relaxed: ordered by the caller's D3 fence (or by the RMW that made this a wake).
    auto& holders = role == EndpointRole::consumer ? r.consumer_bells : r.producer_bells;
    if (holders.load(std::memory_order_relaxed) == 0) return 0;  // D2: nobody has a descriptor
    EndpointRecord* table = s.endpoints();
    std::uint32_t rung = 0;
    for (std::uint32_t i = 0, n = s.endpoint_count(); i < n && rung < limit; ++i) {
        if (EndpointRecord::role_of(table[i].word.load(std::memory_order_relaxed)) != role) continue;
        if ((table[i].doorbell.load(std::memory_order_relaxed) & kBellArmed) == 0) continue;
        // D1: whoever clears the armed bit rings (and uncounts); a concurrent waker finds it clear.
        const std::uint64_t was = table[i].doorbell.fetch_and(~(kBellArmed | kBellCounted), std::memory_order_acq_rel);
        if ((was & kBellArmed) == 0) continue;
        uncount_bell(r, was);
        ring_doorbell(was);
        ++rung;
    }
    return rung;
}

// D3, D4: wakes the futex sleepers of one side and rings all its armed doorbells.
void wake_side(const Segment& s, RingIndices& r, EndpointRole sleepers) noexcept {
    bump_and_wake(sleepers == EndpointRole::consumer ? r.data_seq : r.space_seq);
    // D3's waker half for the wakes that do not come through after_publish (close, death,
    // broken, seal): the state change is published; the bell loads go after a fence. A full
    // one: sound against sleepers of either fence mode (wait.hpp), and these wakes are rare.
    full_fence();
    ring_bells(s, r, sleepers);
}

// D2: the descriptor of an endpoint that is gone (reaped): its bell is nobody's any more.
void forget_bell(EndpointRecord& e, RingIndices& r, EndpointRole role) noexcept {
    const std::uint64_t was = e.doorbell.exchange(0, std::memory_order_acq_rel);
    if (was == 0) return;
    uncount_bell(r, was);
    (role == EndpointRole::consumer ? r.consumer_bells : r.producer_bells).fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace

[[noreturn]] void throw_decode_error(const char* type, const char* what, std::size_t have, std::size_t need) {
    throw Error(errc::type_mismatch, "decode " + demangle(type) + ": " + what + " has " + std::to_string(have) +
                                         " bytes, expected " + std::to_string(need) +
                                         " (do both ends use the same element type and codec?)");
}

// --- EndpointCore --------------------------------------------------------------------------

EndpointCore::EndpointCore(std::string_view name, EndpointRole role, std::uint64_t type_tag,
                           const OpenOptions& options, std::uint64_t slot_size) {
    const char* role_text = role == EndpointRole::producer ? "attach producer to" : "attach consumer to";
    QueueGeometry g;
    segment_ = open_queue_segment(name, role_text, Access::read_write, g, options);
    // Only the validated copy is used from here on (queue_layout.hpp).
    std::byte* body = segment_.body();
    ctl_ = &queue_control(body);
    ring_ = &ring_indices(body, g);
    geometry_ = g;
    spsc_ = g.spsc;
    symmetric_fences_ = (g.flags & kQueueFlagSymmetricFences) != 0;
    typed_ = g.typed;
    capacity_ = typed_ ? g.cell_count : g.capacity;  // T1: typed positions count slots
    mask_ = capacity_ - 1;
    max_message_ = g.max_message;
    data_ = body + g.data_offset;
    if (typed_) {
        cell_stride_ = g.cell_stride;
        // T3: only Producer<T>/Consumer<T> of the queue's T use its slots (the tag is checked below).
        if (slot_size != g.max_message || type_tag == 0) {
            throw Error(errc::type_mismatch,
                        describe(role_text, "queue", name,
                                 "it is a typed queue of " + std::to_string(g.max_message) +
                                     "-byte elements (made by Queue::create<T>) and this endpoint " +
                                     (slot_size == 0 ? std::string("is untyped (Bytes, a codec type or Python)")
                                                     : "has " + std::to_string(slot_size) + "-byte elements") +
                                     "; attach with Producer<T>/Consumer<T> of the queue's element type"));
        }
    }
    if (!spsc_) {
        cells_ = reinterpret_cast<Cell*>(body + g.cells_offset);
        cell_count_ = g.cell_count;
        cell_mask_ = cell_count_ - 1;
        cell_stride_ = g.cell_stride;
    }
    register_process_for_fences();
    if (options.prefault_bytes != 0) prefault(options.prefault_bytes);

    const bool producer = role == EndpointRole::producer;
    const std::uint32_t one_flag = producer ? kQueueFlagOneProducer : kQueueFlagOneConsumer;
    if ((g.flags & one_flag) != 0) {
        // E1: take the side's owner word, from nobody or from a process that is gone.
        reap_dead(role);  // count a dead predecessor before replacing it
        owner_ = producer ? &ctl_->producer_owner : &ctl_->consumer_owner;
        const std::uint64_t mine = owner_word(self_process());
        std::uint64_t cur = owner_->load(std::memory_order_acquire);
        for (;;) {
            if (cur != 0 && owner_alive(cur)) {
                owner_ = nullptr;
                throw Error(errc::too_many_endpoints,
                            describe(role_text, "queue", name,
                                     std::string("it was made for one ") + role_name(role) + " and pid " +
                                         std::to_string(cur >> 32) +
                                         " is attached as one (create it with Endpoints::many)"));
            }
            if (owner_->compare_exchange_weak(cur, mine, std::memory_order_acq_rel)) break;
        }
    }
    if (type_tag != 0) {
        std::uint64_t expected = 0;
        if (!ctl_->type_hash.compare_exchange_strong(expected, type_tag, std::memory_order_acq_rel) &&
            expected != type_tag) {
            give_back_owner();
            throw Error(errc::type_mismatch,
                        describe(role_text, "queue", name,
                                 typed_ ? std::string("it was made by Queue::create<T> for another element type of "
                                                      "the same size (producers and consumers must use that T)")
                                        : std::string("its other endpoints use another element type (producers and "
                                                      "consumers must agree on T)")));
        }
    }
    if (spsc_) {
        // Indices come from shared memory: a fresh endpoint must not trust them (S1, S2).
        const std::uint64_t consumed = ring_->consumed.load(std::memory_order_acquire);  // S4
        const std::uint64_t head = ring_->head.load(std::memory_order_acquire);
        const std::uint64_t tail = ring_->tail.load(std::memory_order_acquire);
        // The producer fills up to the consumer's exact position (S4), so the ring spans
        // consumed..tail; the published head may trail consumed by up to a batch.
        // Typed queues count slots (T1): any position is one.
        const bool misaligned = !typed_ && (head % 8 != 0 || tail % 8 != 0 || consumed % 8 != 0);
        if (misaligned || tail < consumed || consumed < head || tail - consumed > capacity_) {
            give_back_owner();
            throw Error(errc::corrupt, describe(role_text, "queue", name,
                        "its ring indices are inconsistent (head " + std::to_string(head) + ", consumed " +
                        std::to_string(consumed) + ", tail " + std::to_string(tail) +
                        "): the segment was overwritten (`inspect-queues clean --corrupt` removes it)"));
        }
    }
    // The attach is counted while our record is `attaching`: readers already see a live
    // endpoint, so no consumer ends the stream under us. A kill before the count leaves a
    // dead `attaching` record and no count; a kill after it leaves a count whose record never
    // opens, which ending() resolves (no live producer is left). The reaper only counts
    // `open` records as dead, so nothing is counted twice.
    auto& attached = producer ? ctl_->producers_attached : ctl_->consumers_attached;
    try {
        index_ = segment_.attach_endpoint(
            role, "queue",
            [this] {
                reap_dead(EndpointRole::producer);  // a dead endpoint is counted before its record is reused
                reap_dead(EndpointRole::consumer);
            },
            [&attached] { attached.fetch_add(1, std::memory_order_seq_cst); });  // E2
    } catch (...) {
        give_back_owner();
        throw;
    }
    record_ = segment_.endpoint(index_);  // attach_endpoint returns an index inside the table
    // D1: no descriptor yet. A recycled record's bell is normally cleared already (drop_bell,
    // forget_bell); one left armed and counted gives its count back here.
    uncount_bell(*ring_, record_->doorbell.exchange(0, std::memory_order_acq_rel));
    owner_pid_ = current_pid();
    if (producer && ctl_->sealed.load(std::memory_order_seq_cst) != 0) {  // E2: counted, then refused
        closed_ = true;
        give_back_owner();
        if (segment_.close_endpoint(index_)) ctl_->producers_closed.fetch_add(1, std::memory_order_release);
        wake_side(segment_, *ring_, EndpointRole::consumer);
        throw Error(errc::closed, describe(role_text, "queue", name,
                    "it was sealed (Queue::seal): no new producer may attach"));
    }
    // D4: consumers with a descriptor start watching this producer (D5) at their next arm.
    if (producer) {
        full_fence();  // our open record before the bell loads (D3's pair, as in wake_side)
        ring_bells(segment_, *ring_, EndpointRole::consumer);
    }
}

std::size_t EndpointCore::size_approx() const noexcept {
    return static_cast<std::size_t>(queue_totals(geometry_, load_ring_counts(*ring_), 0, 0).depth);
}

bool EndpointCore::full_approx() const noexcept {
    return queue_full(geometry_, load_ring_counts(*ring_));
}

int EndpointCore::open_bell(std::atomic<std::uint32_t>& bells, const char* verb) {
    if (closed_) throw_state(verb);
    if (!bell_.is_open()) {
        bell_ = Doorbell::open(verb, name());
        bells.fetch_add(1, std::memory_order_seq_cst);  // D2: before the first arm
        record_->doorbell.store(bell_.id(), std::memory_order_relaxed);  // D1: id, not armed yet
    }
    return bell_.fd();
}

void EndpointCore::drop_bell(EndpointRole role) noexcept {
    if (!bell_.is_open()) return;
    forget_bell(*record_, *ring_, role);  // D1, D2
    bell_.reset();
}

bool EndpointCore::sync_bell(EndpointRole peers) noexcept {
    bool gone = bell_.drain();
    // D5: the live endpoints of the other side, as the records name them.
    ProcessId live[64];
    std::size_t n = 0;
    const EndpointRecord* table = segment_.endpoints();
    for (std::uint32_t i = 0, count = segment_.endpoint_count(); i < count && n < std::size(live); ++i) {
        const std::uint64_t w = table[i].word.load(std::memory_order_acquire);
        if (EndpointRecord::role_of(w) != peers || EndpointRecord::state_of(w) != EndpointState::open) continue;
        live[n++] = ProcessId{EndpointRecord::pid_of(w), table[i].start_time.load(std::memory_order_relaxed)};
    }
    // More than 64 peers: the rest are left to the bounded re-checks of a blocking pop.
    gone = bell_.watch(std::span<const ProcessId>(live, n)) || gone;
    return gone;
}

void EndpointCore::arm_bell(std::atomic<std::uint32_t>& waiting, bool counted) noexcept {
    // D3: the armed bit and the sleeper mark go before the fence; the caller re-checks after it.
    if (!counted) {
        record_->doorbell.store(bell_.id() | kBellArmed, std::memory_order_relaxed);
        waiting.store(1, std::memory_order_relaxed);  // a flag (SPSC consumer, producers)
    } else if ((record_->doorbell.load(std::memory_order_relaxed) & kBellArmed) == 0) {
        // MPMC consumer: the armed bell is one of the counted sleepers until its bit is
        // cleared (D1). Counted before the bit is set, so the count never trails the bells.
        waiting.fetch_add(1, std::memory_order_relaxed);
        record_->doorbell.store(bell_.id() | kBellArmed | kBellCounted, std::memory_order_relaxed);
    }
    sleeper_fence(symmetric_fences_);
}

bool EndpointCore::owned_by_this_process() const noexcept {
    return owner_pid_ == current_pid();  // no system call: checked every stats batch
}

void EndpointCore::publish_stats() noexcept {
    if (record_ == nullptr || !owned_by_this_process()) return;
    if (typed_pos_ != nullptr) {  // T2: derived from our position
        messages_ = *typed_pos_ - typed_base_;
        bytes_ = messages_ * max_message_;
    }
    record_->messages.store(messages_, std::memory_order_relaxed);  // statistics only
    record_->bytes.store(bytes_, std::memory_order_relaxed);
}

void EndpointCore::throw_state(std::string_view verb) const {
    if (closed_) {
        throw Error(errc::closed, describe(verb, "queue", name(), "this endpoint was closed"));
    }
    throw Error(errc::broken, describe(verb, "queue", name(),
                "the queue was marked broken (a stage of the pipeline failed, or a record was corrupt)"));
}

void EndpointCore::throw_corrupt(std::string_view verb, const std::string& why) {
    segment_.set_state(kStateBroken);
    wake_side(segment_, *ring_, EndpointRole::consumer);
    wake_side(segment_, *ring_, EndpointRole::producer);
    throw Error(errc::corrupt, describe(verb, "queue", name(),
                why + " (the segment was overwritten; the queue is now marked broken)"));
}

void EndpointCore::throw_stuck_cell(std::string_view verb, std::uint64_t pos, std::uint64_t seq) {
    throw_corrupt(verb, "corrupt cell: sequence " + std::to_string(seq) + " at position " + std::to_string(pos) +
                            " is ahead of an index that does not move");
}

void EndpointCore::prefault(std::size_t bytes) noexcept {
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    auto populate = [&](std::byte* p, std::size_t n) {
        const std::uintptr_t from = reinterpret_cast<std::uintptr_t>(p) & ~(page - 1);
        const std::uintptr_t to = reinterpret_cast<std::uintptr_t>(p) + n;
        // Linux 5.14+; elsewhere EINVAL and the pages fault in on first use as before.
        (void)::madvise(reinterpret_cast<void*>(from), to - from, MADV_POPULATE_WRITE);
    };
    if (spsc_) {
        populate(data_, std::min<std::uint64_t>(bytes, geometry_.capacity));  // ring bytes (typed: slots * stride)
        return;
    }
    for (std::uint64_t i = 0; i < cell_count_; ++i) {
        populate(data_ + i * cell_stride_, std::min<std::uint64_t>(bytes, cell_stride_));
    }
}

void EndpointCore::sleep_on(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                            std::uint64_t deadline_ns) noexcept {
    std::uint64_t wake_at = monotonic_ns() + kSleepSliceNs;
    if (deadline_ns != 0 && deadline_ns < wake_at) wake_at = deadline_ns;
    auto& h = segment_.header();
    record_->sleeping.store(1, std::memory_order_relaxed);  // statistics only
    h.waiters.fetch_add(1, std::memory_order_relaxed);
    const AsleepInBudget asleep;  // out of the thread's spin budget while asleep (wait.hpp)
    futex_wait(word, expected, wake_at);
    h.waiters.fetch_sub(1, std::memory_order_relaxed);
    record_->sleeping.store(0, std::memory_order_relaxed);
}

std::uint32_t EndpointCore::reap_dead(EndpointRole role) noexcept {
    std::uint32_t reaped = 0;
    const std::uint32_t n = segment_.endpoint_count();
    EndpointRecord* table = segment_.endpoints();
    for (std::uint32_t i = 0; i < n; ++i) {
        const std::uint64_t w = table[i].word.load(std::memory_order_acquire);
        if (EndpointRecord::role_of(w) != role || EndpointRecord::state_of(w) != EndpointState::open) continue;
        if (!segment_.reap_if_dead(i)) continue;  // CAS open -> dead: one winner counts it
        ++reaped;
        forget_bell(table[i], *ring_, role);  // D2: a dead process's descriptor is gone
        (role == EndpointRole::producer ? ctl_->producers_dead : ctl_->consumers_dead)
            .fetch_add(1, std::memory_order_acq_rel);
    }
    if (reaped != 0) {
        wake_side(segment_, *ring_, EndpointRole::consumer);
        wake_side(segment_, *ring_, EndpointRole::producer);
    }
    return reaped;
}

bool EndpointCore::any_live(EndpointRole role) const noexcept {
    const std::uint32_t n = segment_.endpoint_count();
    const EndpointRecord* table = segment_.endpoints();
    for (std::uint32_t i = 0; i < n; ++i) {
        const std::uint64_t w = table[i].word.load(std::memory_order_acquire);
        const auto st = EndpointRecord::state_of(w);
        if (EndpointRecord::role_of(w) != role) continue;
        if (st != EndpointState::open && st != EndpointState::attaching) continue;
        if (process_alive(EndpointRecord::pid_of(w), table[i].start_time.load(std::memory_order_relaxed))) return true;
    }
    return false;
}

void EndpointCore::give_back_owner() noexcept {
    if (owner_ == nullptr) return;
    std::uint64_t mine = owner_word(self_process());
    owner_->compare_exchange_strong(mine, 0, std::memory_order_acq_rel);  // E1
    owner_ = nullptr;
}

bool EndpointCore::live_intent(EndpointRole role, std::uint64_t pos) const noexcept {
    const std::uint32_t n = segment_.endpoint_count();
    const EndpointRecord* table = segment_.endpoints();
    for (std::uint32_t i = 0; i < n; ++i) {
        const std::uint64_t w = table[i].word.load(std::memory_order_acquire);
        const auto st = EndpointRecord::state_of(w);
        if (EndpointRecord::role_of(w) != role) continue;
        if (st != EndpointState::open && st != EndpointState::attaching) continue;
        if (table[i].intent.load(std::memory_order_acquire) != pos) continue;  // M3
        if (process_alive(EndpointRecord::pid_of(w), table[i].start_time.load(std::memory_order_relaxed))) {
            return true;
        }
    }
    return false;
}

// --- ProducerCore ----------------------------------------------------------------------------

ProducerCore::ProducerCore(std::string_view name, std::uint64_t type_tag, const OpenOptions& options,
                           std::uint64_t slot_size)
    : EndpointCore(name, EndpointRole::producer, type_tag, options, slot_size) {
    if (spsc_) {
        tail_ = ring_->tail.load(std::memory_order_acquire);  // a replacement producer continues here
        cached_head_ = ring_->head.load(std::memory_order_acquire);
        base_count_ = ring_->tail_count.load(std::memory_order_relaxed);  // S5: we continue the counts
        base_bytes_ = ring_->tail_bytes.load(std::memory_order_relaxed);
        if (typed_) {  // T2: our messages are the positions we publish
            typed_pos_ = &tail_;
            typed_base_ = tail_;
        }
    }
}

void ProducerCore::throw_too_large(std::size_t n) const {
    throw Error(errc::message_too_large,
                describe("push to", "queue", name(), "a message of " + std::to_string(n) +
                         " bytes is larger than its max_message of " + std::to_string(max_message_) +
                         " bytes (create the queue with QueueOptions::max_message = " + std::to_string(n) +
                         " or more)"));
}

void ProducerCore::throw_holding() const {
    throw Error(errc::invalid_state, describe("reserve in", "queue", name(),
                "the previous reservation is not committed yet (commit or drop the WriteSlot first)"));
}

std::byte* ProducerCore::reserve(std::size_t n, std::uint64_t deadline_ns) {
    check_size(n);
    if (closed_) throw_state("push to");
    SpinWait spin;
    for (;;) {
        if (broken()) throw_state("push to");
        if (std::byte* p = try_reserve(n)) {
            full_since_ns_ = 0;
            return p;
        }
        if (spin.spin()) continue;

        // Full for ~20 µs: look for dead consumers and stuck cells before sleeping.
        publish_stats();
        const std::uint64_t now = monotonic_ns();
        if (deadline_ns != 0 && now >= deadline_ns) return nullptr;
        bool scanned = false;
        if (now - last_reap_ns_ >= kReapIntervalNs) {
            last_reap_ns_ = now;
            scanned = true;
            reap_dead(EndpointRole::consumer);
            if (!spsc_) recover_full();
        }
        const bool consumers_gone = scanned && ctl_->consumers_attached.load(std::memory_order_acquire) != 0 &&
                                    !any_live(EndpointRole::consumer);
        if (!consumers_gone) {
            if (scanned) full_since_ns_ = 0;
        } else if (full_since_ns_ == 0) {
            full_since_ns_ = now;
        } else if (now - full_since_ns_ >= kConsumerGoneGraceNs) {
            const bool died = ctl_->consumers_dead.load(std::memory_order_acquire) != 0;
            throw Error(died ? errc::consumer_died : errc::closed,
                        describe("push to", "queue", name(),
                                 died ? "the queue is full and every consumer died (pid " +
                                            std::to_string(segment_.header().died_pid.load()) + " last)"
                                      : std::string("the queue is full and every consumer has closed")));
        }

        const std::uint32_t seq = ring_->space_seq.load(std::memory_order_acquire);
        ring_->producers_waiting.store(1, std::memory_order_relaxed);
        sleeper_fence(symmetric_fences_);  // sleeper's half of the Dekker pair (wait.hpp)
        if (spsc_) spsc_refresh_exact();  // S4: what the consumer freed and has not published
        if (std::byte* p = try_reserve(n)) return p;  // the flag may cost the consumer one wake-up
        if (broken()) throw_state("push to");
        sleep_on(ring_->space_seq, seq, deadline_ns);
        spin.reset();
    }
}

int ProducerCore::fd() {
    const bool first = !bell_.is_open();
    const int f = open_bell(ring_->producer_bells, "watch");
    if (first) bell_.ring();  // starts readable: the first try_push that fails arms it (D3)
    return f;
}

std::byte* ProducerCore::poll_reserve(std::size_t n) {
    if (std::byte* p = try_reserve(n)) return p;
    if (broken()) {
        bell_.ring();  // D6: stays readable
        throw_state("push to");
    }
    if (sync_bell(EndpointRole::consumer)) {  // D5: a consumer died; what it held may be freed
        last_reap_ns_ = monotonic_ns();
        reap_dead(EndpointRole::consumer);
        if (!spsc_) recover_full();
    }
    arm_bell(ring_->producers_waiting, false);  // D3 (a flag)
    if (spsc_) spsc_refresh_exact();  // S4: what the consumer freed and has not published
    if (std::byte* p = try_reserve(n)) return p;
    if (broken()) {
        bell_.ring();
        throw_state("push to");
    }
    return nullptr;
}

void ProducerCore::abandon() noexcept {
    if (!holding_) return;
    holding_ = false;
    if (!spsc_) {
        // We own the claimed cell (M1): mark it skipped so consumers move past it.
        cells_[claimed_ & cell_mask_].length = 0;
        cells_[claimed_ & cell_mask_].seq.store((claimed_ + 1) | kCellAbandoned, std::memory_order_release);  // MP1
        ctl_->messages_abandoned.fetch_add(1, std::memory_order_relaxed);
        after_publish();
    }
    // SPSC: nothing was published; the next reservation reuses the space.
}

void ProducerCore::close() noexcept {
    if (closed_ || record_ == nullptr) return;
    closed_ = true;
    if (!owned_by_this_process()) return;  // a forked copy: the endpoint is the parent's
    abandon();
    publish_stats();
    // Count the close only if we are the one who closed the record: Queue::close_endpoints_of
    // (the launcher) may have closed it on our behalf already.
    give_back_owner();
    drop_bell(EndpointRole::producer);
    if (!segment_.close_endpoint(index_)) return;
    // Release: every record we published happens-before a consumer that sees the count.
    ctl_->producers_closed.fetch_add(1, std::memory_order_release);
    wake_side(segment_, *ring_, EndpointRole::consumer);
}

// SPSC: consumers_waiting is a flag for the one consumer; the first publish clears it, so
// the messages that follow while it wakes cost no system call.
// MPMC: consumers_waiting counts the consumers between announcing a sleep and leaving it,
// and each publish that sees a nonzero count wakes as many of them as there are messages
// waiting in the ring, at least one: one task wakes one consumer (waking all for one
// message makes every idle consumer run to find nothing), a burst wakes its consumers in a
// few calls. No message is stranded while a consumer
// sleeps: by the Dekker pair (wait.hpp), a publish either is seen by the sleeper's last look
// or sees its count. Such a publish changes data_seq, so a consumer that counted itself but
// has not entered futex_wait yet returns from it at once, and one inside it is woken; either
// way one live consumer looks at the ring again before it can sleep (a dead one counted is
// in no futex queue). For two wake-ups to reach the same consumer it must have slept again
// in between, after a look that found no message to claim. A publish makes no call when this
// producer already woke as many consumers as there are messages waiting and head has not
// moved since, counting only the wake-ups it made while its own just-published message was
// still unclaimed (head <= its position): none of the woken has claimed yet, so at least one
// is awake and will find that message (or, if the cell at head belongs to another producer
// still writing it, that producer's commit wakes it: it cannot have counted a wake-up at
// that head, its earlier messages all lie below it). A consumer killed while counted
// leaves the count above zero: publishes then make one futex_wake call each while head
// moves (slower, never a lost wake-up).
void ProducerCore::wake_consumers() noexcept {
    if (spsc_) {
        if (ring_->consumers_waiting.exchange(0, std::memory_order_acq_rel) != 0) {
            wake_side(segment_, *ring_, EndpointRole::consumer);
        }
        return;
    }
    // As many as there are messages waiting (at least one: this publish's), less those we
    // woke already while no consumer has claimed anything since (head has not moved): each
    // of them will claim a message before it can sleep again, so a burst makes a few calls,
    // not one per message. Only our own wake-ups count: other producers' are not known here.
    const std::uint64_t tail = ring_->tail.load(std::memory_order_relaxed);
    const std::uint64_t head = ring_->head.load(std::memory_order_acquire);
    const std::uint64_t waiting = tail > head ? tail - head : 1;
    const std::uint64_t sleepers = ring_->consumers_waiting.load(std::memory_order_relaxed);
    const std::uint64_t want = std::max<std::uint64_t>(1, std::min(waiting, sleepers));
    // A wake-up counts only while the message we just published (at claimed_) is still
    // unclaimed: a consumer woken after it was taken may find the cell at head not yet
    // committed, sleep again without claiming, and head would not move for our next publish
    // (it would skip, and that consumer would sleep with our next message in the ring).
    const bool ours_waiting = head <= claimed_;
    if (head != woke_at_head_ || !ours_waiting) {
        woke_at_head_ = head;
        woken_ = 0;
    }
    if (woken_ >= want) return;
    const std::uint64_t wake = std::min<std::uint64_t>(want - woken_, INT_MAX);
    if (ours_waiting) woken_ += wake;
    ring_->data_seq.fetch_add(1, std::memory_order_release);
    futex_wake(ring_->data_seq, static_cast<int>(wake));
    // D3: armed doorbells are counted sleepers too; all of them ring. A limit could spend
    // itself on the bell of a consumer that died unreaped, and an fd sleeper has no bounded
    // re-check to fall back on; each rung consumer drains before it arms again.
    ring_bells(segment_, *ring_, EndpointRole::consumer);
}

void ProducerCore::recover_full() noexcept {
    // M3: the cell at tail holds the previous lap's message p. If a consumer claimed p
    // (head > p) and no live consumer has p as its intent, that consumer died holding it.
    const std::uint64_t pos = ring_->tail.load(std::memory_order_acquire);
    Cell& c = cells_[pos & cell_mask_];
    std::uint64_t seq = c.seq.load(std::memory_order_acquire);
    const std::uint64_t p = pos - cell_count_;
    if ((seq & ~kCellAbandoned) != p + 1) return;
    if (ring_->head.load(std::memory_order_acquire) <= p) return;  // MP3: not claimed: just full
    if (live_intent(EndpointRole::consumer, p)) return;
    if (c.seq.compare_exchange_strong(seq, pos, std::memory_order_acq_rel)) {  // MP2: free for lap pos
        ctl_->messages_lost.fetch_add(1, std::memory_order_relaxed);
    }
}

// --- ConsumerCore ----------------------------------------------------------------------------

ConsumerCore::ConsumerCore(std::string_view name, std::uint64_t type_tag, const OpenOptions& options,
                           std::uint64_t slot_size)
    : EndpointCore(name, EndpointRole::consumer, type_tag, options, slot_size) {
    joinable_ = (geometry_.flags & kQueueFlagJoinable) != 0;
    if (joinable_) record_->aux.store(0, std::memory_order_relaxed);  // J2: a recycled record's old value
    if (spsc_) {
        // A replacement consumer continues after the last message its predecessor consumed
        // (S4, validated by EndpointCore), and hands the producer what it had not published.
        head_ = ring_->consumed.load(std::memory_order_acquire);
        cached_tail_ = head_;
        published_head_ = ring_->head.load(std::memory_order_acquire);
        if (published_head_ != head_) publish_head();
        head_batch_ = std::min<std::uint64_t>(kHeadBatchBytes, capacity_ / 8);
        near_full_ = capacity_ - 2 * (sizeof(RecordHeader) + align8(max_message_));  // validated: >= 0
        base_count_ = ring_->head_count.load(std::memory_order_relaxed);  // S5: we continue the counts
        base_bytes_ = ring_->head_bytes.load(std::memory_order_relaxed);
        if (typed_) {
            // T1, T2: slots, not bytes. A head store per kHeadBatchBytes worth of slots, at
            // least kHeadBatchSlots (at most an eighth of the ring), and per message once at
            // most one slot is free.
            typed_pos_ = &head_;
            typed_base_ = head_;
            head_batch_ = std::min(std::max(kHeadBatchBytes / cell_stride_, kHeadBatchSlots),
                                   std::max<std::uint64_t>(capacity_ / 8, 1));
            near_full_ = capacity_ - 2;
        }
    }
}

void ConsumerCore::throw_holding() const {
    throw Error(errc::invalid_state, describe("pop from", "queue", name(),
                "the previous message is still held (drop the ReadSlot first)"));
}

void ConsumerCore::corrupt(const char* why) { throw_corrupt("pop from", std::string("corrupt ring: ") + why); }

ConsumerCore::Ending ConsumerCore::ending() noexcept {
    const std::uint64_t now = monotonic_ns();
    bool scanned = false;
    if (now - last_reap_ns_ >= kReapIntervalNs) {
        last_reap_ns_ = now;
        scanned = true;
        reap_dead(EndpointRole::producer);
    }
    const ProducerCounts p = load_producer_counts(*ctl_);
    if (p.dead > dead_reported_) return Ending::died;
    if (stream_ended(p)) return Ending::ended;
    // The counters can trail the endpoint records when a process was killed between a
    // record change and its count (inside attach or close). The records are the truth: every
    // producer that was to come came, and none of their processes is left to publish.
    if (scanned && producers_complete(p) && p.attached != 0 && !any_live(EndpointRole::producer)) {
        // A producer that died between the scan above and this look is a death, not an end.
        reap_dead(EndpointRole::producer);
        if (ctl_->producers_dead.load(std::memory_order_acquire) > dead_reported_) return Ending::died;
        return Ending::ended;
    }
    return Ending::none;
}

PeekResult ConsumerCore::peek(std::span<const std::byte>& out, std::uint64_t deadline_ns) {
    if (closed_) throw_state("pop from");
    SpinWait spin;
    for (;;) {
        if (try_peek(out)) return PeekResult::ok;
        if (broken()) throw_state("pop from");
        if (spin.spin()) continue;

        // Empty for ~20 µs: the end of stream, a dead producer, or keep waiting.
        if (const PeekResult r = settle(out); r != PeekResult::timeout) return r;
        if (!spsc_ && recover_stuck_head()) {
            spin.reset();
            continue;
        }
        if (deadline_ns != 0 && monotonic_ns() >= deadline_ns) return PeekResult::timeout;

        // The count of sleepers (MPMC; a flag for SPSC): see ProducerCore::wake_consumers.
        const std::uint32_t seq = ring_->data_seq.load(std::memory_order_acquire);
        struct Counted {  // leaves the count however this look ends (try_peek may throw)
            std::atomic<std::uint32_t>* count;
            ~Counted() {
                if (count != nullptr) count->fetch_sub(1, std::memory_order_relaxed);
            }
        } counted{spsc_ ? nullptr : &ring_->consumers_waiting};
        if (spsc_) {
            ring_->consumers_waiting.store(1, std::memory_order_relaxed);
        } else {
            ring_->consumers_waiting.fetch_add(1, std::memory_order_relaxed);
        }
        sleeper_fence(symmetric_fences_);  // sleeper's half of the Dekker pair (wait.hpp)
        if (try_peek(out)) return PeekResult::ok;
        if (broken()) throw_state("pop from");
        sleep_on(ring_->data_seq, seq, deadline_ns);
        spin.reset();
    }
}

PeekResult ConsumerCore::settle(std::span<const std::byte>& out) {
    // Counters first, then one more look: a producer publishes before it counts itself
    // closed (release), so data seen as absent once the counts say "ended" is absent.
    publish_stats();
    if (spsc_ && published_head_ != head_) publish_head();  // S4: before sleeping or arming
    const Ending e = ending();
    if (try_peek(out)) return PeekResult::ok;
    if (e == Ending::died) throw_producer_died();
    ended_ = e == Ending::ended;
    return ended_ ? PeekResult::end : PeekResult::timeout;
}

void ConsumerCore::throw_producer_died() {
    dead_reported_ = ctl_->producers_dead.load(std::memory_order_acquire);
    throw Error(errc::producer_died,
                describe("pop from", "queue", name(),
                         "producer " + pid_text(segment_.header().died_pid.load(std::memory_order_relaxed)) +
                             " died without closing (everything it committed was delivered)"));
}

int ConsumerCore::fd() {
    const bool first = !bell_.is_open();
    const int f = open_bell(ring_->consumer_bells, "watch");
    if (first) bell_.ring();  // starts readable: the first try_pop that finds nothing arms it (D3)
    return f;
}

PeekResult ConsumerCore::poll_peek(std::span<const std::byte>& out) {
    if (closed_) throw_state("pop from");
    for (;;) {
        if (try_peek(out)) return PeekResult::ok;
        if (broken()) {
            bell_.ring();  // D6
            throw_state("pop from");
        }
        if (sync_bell(EndpointRole::producer)) last_reap_ns_ = 0;  // D5: ending() reaps now
        arm_bell(ring_->consumers_waiting, !spsc_);               // D3 (MPMC: counted)
        if (try_peek(out)) return PeekResult::ok;
        if (broken()) {
            bell_.ring();
            throw_state("pop from");
        }
        const PeekResult r = settle(out);  // after the fence (D3)
        if (r == PeekResult::end) bell_.ring();  // D6: the end stays visible
        if (r != PeekResult::timeout) return r;
        if (!spsc_ && recover_stuck_head()) continue;
        return PeekResult::timeout;  // empty: wait on fd()
    }
}

bool ConsumerCore::recover_stuck_head() noexcept {
    // M3: position `pos` was claimed by a producer (tail > pos) but never committed. If no
    // live producer has it as intent, its producer died: skip the cell.
    const std::uint64_t pos = ring_->head.load(std::memory_order_acquire);
    if (ring_->tail.load(std::memory_order_acquire) <= pos) return false;  // MP3
    Cell& c = cells_[pos & cell_mask_];
    std::uint64_t seq = c.seq.load(std::memory_order_acquire);
    if (seq != pos) return false;
    if (live_intent(EndpointRole::producer, pos)) return false;
    if (!c.seq.compare_exchange_strong(seq, (pos + 1) | kCellAbandoned, std::memory_order_acq_rel)) return false;
    ctl_->messages_abandoned.fetch_add(1, std::memory_order_relaxed);
    return true;
}


void ConsumerCore::close() noexcept {
    if (closed_ || record_ == nullptr) return;
    closed_ = true;
    if (!owned_by_this_process()) return;
    release();
    if (spsc_ && published_head_ != head_) publish_head();  // S4: at close
    publish_stats();
    give_back_owner();
    drop_bell(EndpointRole::consumer);
    if (!segment_.close_endpoint(index_)) return;  // closed on our behalf already
    ctl_->consumers_closed.fetch_add(1, std::memory_order_release);
    wake_side(segment_, *ring_, EndpointRole::producer);
}

void ConsumerCore::task_done() {
    if (!joinable_) {
        throw Error(errc::invalid_state, describe("task_done on", "queue", name(),
                    "it is not joinable (create it with QueueOptions::joinable = true)"));
    }
    const std::uint64_t taken = messages_ + (holding_ ? 1 : 0);
    if (done_ >= taken) {
        throw Error(errc::invalid_argument,
                    describe("task_done on", "queue", name(),
                             "called more times than this consumer took messages (" + std::to_string(taken) +
                                 " taken, all marked done already)"));
    }
    ++done_;
    record_->aux.store(taken - done_, std::memory_order_relaxed);  // J2
    ctl_->tasks_done.fetch_add(1, std::memory_order_release);     // J1
    waker_fence(symmetric_fences_);                                // JP1: the waker's half
    if (ctl_->join_waiters.load(std::memory_order_relaxed) != 0) bump_and_wake(ctl_->done_seq);
}

[[noreturn]] void throw_moved_from(const char* what) {
    throw Error(errc::invalid_state, std::string("use of a moved-from ") + what +
                                         " (it may only be destroyed, assigned to or closed)");
}

namespace {

// What join() decides from: the messages pushed and written off, and the consumers' work (J1, J2).
struct JoinView {
    std::uint64_t pushed = 0, done = 0, lost = 0, depth = 0;
    std::uint64_t live_held = 0;       // J2: work live consumers took and have not marked done
    std::vector<std::uint32_t> dead;   // consumers that died (their pids; those holding work first)
    bool finished() const noexcept { return done + lost >= pushed; }
    // Taken, not done, and held by no live consumer: it went with a dead one.
    std::uint64_t orphaned() const noexcept {
        const std::uint64_t open = pushed - done - lost;
        return depth == 0 && live_held == 0 && !dead.empty() ? open : 0;
    }
};

JoinView join_view(const Segment& seg, const QueueGeometry& g, bool scan) {
    const QueueControl& c = queue_control(seg.body());
    JoinView v;
    v.done = c.tasks_done.load(std::memory_order_acquire);  // J1, before the pushes it counts
    v.lost = c.tasks_lost.load(std::memory_order_acquire);
    const QueueTotals t = queue_totals(g, load_ring_counts(ring_indices(seg.body(), g)), 0, 0);
    const std::uint64_t abandoned = c.messages_abandoned.load(std::memory_order_acquire);
    v.pushed = t.messages_in >= abandoned ? t.messages_in - abandoned : 0;  // abandoned cells are never delivered
    v.depth = t.depth;
    if (v.done + v.lost > v.pushed) v.pushed = v.done + v.lost;  // counters read apart: never negative
    if (!scan) return v;
    std::vector<std::uint32_t> idle_dead;
    for (std::uint32_t i = 0; i < seg.endpoint_count(); ++i) {
        const EndpointRecord& e = seg.endpoints()[i];
        const std::uint64_t w = e.word.load(std::memory_order_acquire);
        if (EndpointRecord::role_of(w) != EndpointRole::consumer) continue;
        const auto st = EndpointRecord::state_of(w);
        const std::uint64_t held = e.aux.load(std::memory_order_relaxed);  // J2
        bool dead = st == EndpointState::dead;
        if (st == EndpointState::open || st == EndpointState::attaching) {
            dead = !process_alive(EndpointRecord::pid_of(w), e.start_time.load(std::memory_order_relaxed));
            if (!dead) v.live_held += held;
        }
        if (dead) (held != 0 ? v.dead : idle_dead).push_back(EndpointRecord::pid_of(w));
    }
    v.dead.insert(v.dead.end(), idle_dead.begin(), idle_dead.end());
    return v;
}

}  // namespace

bool join_queue(const Segment& seg, const QueueGeometry& g, std::uint64_t deadline_ns) {
    QueueControl& c = queue_control(seg.body());
    if ((g.flags & kQueueFlagJoinable) == 0) {
        throw Error(errc::invalid_state, describe("join", "queue", seg.name(),
                    "it is not joinable (create it with QueueOptions::joinable = true)"));
    }
    // A write-off needs the same orphaned count on two looks a sleep slice apart: a live
    // consumer between its claim and its J2 store is gone by then.
    std::uint64_t suspect_done = ~std::uint64_t{0}, suspect_count = 0;
    for (;;) {
        if ((seg.header().state.load(std::memory_order_acquire) & kStateBroken) != 0) {
            throw Error(errc::broken, describe("join", "queue", seg.name(), "the queue was marked broken"));
        }
        const std::uint64_t seq = c.done_seq.load(std::memory_order_acquire);
        JoinView v = join_view(seg, g, false);
        if (v.finished()) return true;
        const std::uint64_t now = monotonic_ns();
        if (deadline_ns != 0 && now >= deadline_ns) return false;
        if (v.depth == 0) {
            v = join_view(seg, g, true);
            const std::uint64_t orphaned = v.orphaned();
            if (orphaned == 0) {
                suspect_count = 0;
            } else if (suspect_count != orphaned || suspect_done != v.done + v.lost) {
                suspect_count = orphaned;
                suspect_done = v.done + v.lost;
            } else {
                std::uint64_t lost = v.lost;
                if (c.tasks_lost.compare_exchange_strong(lost, lost + orphaned, std::memory_order_acq_rel)) {  // J1
                    std::string pids;
                    for (std::size_t i = 0; i < v.dead.size() && i < 8; ++i) pids += (i ? ", " : "") + std::to_string(v.dead[i]);
                    if (v.dead.size() > 8) pids += ", ...";
                    bump_and_wake(c.done_seq);  // other joiners see the write-off
                    throw Error(errc::consumer_died,
                                describe("join", "queue", seg.name(),
                                         "consumer " + std::string(v.dead.size() > 1 ? "pids " : "pid ") + pids +
                                             " died holding " + std::to_string(orphaned) +
                                             " message(s) never marked done; they are written off (a message a "
                                             "dead consumer took is not delivered again), so the next join() can return"));
                }
                suspect_count = 0;
                continue;  // another joiner wrote them off
            }
        }
        // JP1: the sleeper's half; bounded, so deaths are noticed.
        c.join_waiters.fetch_add(1, std::memory_order_relaxed);
        sleeper_fence((g.flags & kQueueFlagSymmetricFences) != 0);
        if (!join_view(seg, g, false).finished()) {
            std::uint64_t wake_at = now + kSleepSliceNs;
            if (deadline_ns != 0 && deadline_ns < wake_at) wake_at = deadline_ns;
            futex_wait(c.done_seq, static_cast<std::uint32_t>(seq), wake_at);
        }
        c.join_waiters.fetch_sub(1, std::memory_order_relaxed);
    }
}

void ConsumerCore::wake_producers() noexcept {
    if (spsc_) {
        // Batch wake-ups: a sleeping producer is woken once half the ring is free (or the
        // ring is empty), not for every message, so one core does not ping-pong per message.
        // S4: a waiting producer sees every freed byte at once (its 100 ms re-check finds it).
        if (published_head_ != head_) publish_head();
        const std::uint64_t used = ring_->tail.load(std::memory_order_relaxed) - head_;
        if (used > capacity_ / 2) return;
    }
    if (ring_->producers_waiting.exchange(0, std::memory_order_acq_rel) != 0) wake_side(segment_, *ring_, EndpointRole::producer);
}

}  // namespace detail

// --- Queue -----------------------------------------------------------------------------------

Queue Queue::create(std::string_view name, const QueueOptions& o) { return create_impl(name, o, 0, 0); }

Queue Queue::create_impl(std::string_view name, const QueueOptions& options, std::uint64_t type_tag,
                         std::uint64_t slot_size) {
    using namespace detail;
    // Queue::create<T>: the element size is the message size, and T's tag is recorded now, so
    // endpoints of another T are refused from the first one on.
    QueueOptions o = options;
    if (slot_size != 0) o.max_message = slot_size;
    validate_name(name, "queue");
    auto bad = [&](const std::string& why) {
        throw Error(errc::invalid_argument, describe("create", "queue", name, why));
    };
    if (o.max_message == 0) bad("max_message must be at least 1 byte");
    if (o.max_message > (std::size_t{1} << 30)) bad("max_message must be at most 1 GiB");
    if (o.capacity > (std::size_t{1} << 40)) bad("capacity must be at most 1 TiB");
    const bool spsc = o.producers == Endpoints::one && o.consumers == Endpoints::one;
    // Typed fixed slots (T1-T3) wherever they apply: a fixed T, one producer, one consumer,
    // not joinable (task_done bookkeeping stays on the byte ring).
    const bool typed = spsc && slot_size != 0 && !o.joinable;
    std::uint32_t flags = 0;
    if (o.producers == Endpoints::one) flags |= kQueueFlagOneProducer;
    if (o.consumers == Endpoints::one) flags |= kQueueFlagOneConsumer;
    if (o.joinable) flags |= kQueueFlagJoinable;
    if (o.symmetric_fences) flags |= kQueueFlagSymmetricFences;

    const std::uint64_t ring_offset = align_up(sizeof(QueueControl), kCacheLine);
    std::uint64_t capacity = 0, cell_count = 0, cell_stride = 0, cells_offset = 0, data_offset = 0;
    std::uint32_t records = 0;
    // Sizing by messages (QueueOptions::max_messages, Python's maxsize) or by bytes. The
    // errors name what one message really costs: its record or cell, not max_message.
    const std::uint64_t n = o.max_messages;
    if (n > (std::uint64_t{1} << 32)) bad("max_messages must be at most 2^32");
    if (typed) {
        cell_stride = typed_slot_stride(slot_size);
        if (n != 0) {
            cell_count = std::bit_ceil(std::max<std::uint64_t>(n, 2));
        } else {
            const std::uint64_t fit = o.capacity / cell_stride;
            if (fit < 2) {
                bad("capacity " + std::to_string(o.capacity) + " holds fewer than 2 elements of " +
                    std::to_string(slot_size) + " bytes (typed slots of " + std::to_string(cell_stride) +
                    " bytes), so capacity >= " + std::to_string(2 * cell_stride) +
                    " (or set QueueOptions::max_messages instead)");
            }
            cell_count = std::bit_floor(fit);
        }
        if (cell_count * cell_stride > (std::uint64_t{1} << 40)) {
            bad(std::to_string(cell_count) + " slots of " + std::to_string(cell_stride) + " bytes need more than 1 TiB");
        }
        capacity = cell_count * cell_stride;
        flags |= kQueueFlagTyped;
        data_offset = align_up(ring_offset + sizeof(RingIndices), 4096);
        records = kSpscEndpointRecords;
    } else if (spsc) {
        const std::uint64_t record = sizeof(RecordHeader) + align8(o.max_message);
        if (n != 0) {
            // n whole records, plus one for the padding a record that would straddle the
            // ring's end leaves (S3), and never fewer than the two the ring needs.
            const std::uint64_t need = std::max<std::uint64_t>(n + 1, 2) * record;
            if (need > (std::uint64_t{1} << 40)) {
                bad("max_messages " + std::to_string(n) + " of up to " + std::to_string(record) +
                    " bytes each (max_message " + std::to_string(o.max_message) +
                    " + an 8-byte header, 8-aligned) need more than 1 TiB");
            }
            capacity = std::bit_ceil(std::max<std::uint64_t>(need, 4096));
        } else {
            capacity = std::bit_ceil(std::max<std::uint64_t>(o.capacity, 4096));
        }
        if (capacity < 2 * record) {
            bad("capacity " + std::to_string(o.capacity) + " is too small for max_message " +
                std::to_string(o.max_message) + ": each message costs up to " + std::to_string(record) +
                " bytes in an SPSC ring (8-byte header, 8-aligned) and the ring needs room for 2, so capacity >= " +
                std::to_string(2 * record) + " (or set QueueOptions::max_messages instead)");
        }
        data_offset = align_up(ring_offset + sizeof(RingIndices), 4096);
        records = kSpscEndpointRecords;
    } else {
        cell_stride = align_up(o.max_message, kCacheLine);
        if (n != 0) {
            cell_count = std::bit_ceil(std::max<std::uint64_t>(n, 2));
            if (cell_count * cell_stride > (std::uint64_t{1} << 40)) {
                bad("max_messages " + std::to_string(n) + " cells of " + std::to_string(cell_stride) +
                    " bytes each (max_message " + std::to_string(o.max_message) +
                    " rounded up to 64-byte lines) need more than 1 TiB");
            }
        } else {
            const std::uint64_t fit = o.capacity / cell_stride;
            if (fit < 2) {
                bad("capacity " + std::to_string(o.capacity) + " holds fewer than 2 messages: each message costs a cell of " +
                    std::to_string(cell_stride) + " bytes in an MPMC queue (max_message " +
                    std::to_string(o.max_message) + " rounded up to 64-byte lines), so capacity >= " +
                    std::to_string(2 * cell_stride) + " (or set QueueOptions::max_messages instead)");
            }
            cell_count = std::bit_floor(fit);
        }
        capacity = cell_count * cell_stride;
        cells_offset = ring_offset + sizeof(RingIndices);
        data_offset = align_up(cells_offset + cell_count * sizeof(Cell), 4096);
        records = std::clamp<std::uint32_t>(o.max_endpoints, 2, kMaxEndpoints);
    }
    Segment::CreateParams p;
    p.name = name;
    p.what = "queue";
    p.kind = spsc ? ObjectKind::spsc_queue : ObjectKind::mpmc_queue;
    p.body_size = data_offset + capacity;
    p.endpoint_count = records;
    p.permissions = o.permissions;
    p.flags = flags;
    const QueueGeometry g{capacity, o.max_message, ring_offset, data_offset, cells_offset, cell_count, cell_stride,
                          flags, spsc, typed};
    Segment s = Segment::create(p, [&](std::byte* body) {
        auto& c = queue_control(body);
        c.capacity = capacity;
        c.max_message = o.max_message;
        c.ring_offset = ring_offset;
        c.data_offset = data_offset;
        c.cells_offset = cells_offset;
        c.cell_count = cell_count;
        c.cell_stride = cell_stride;
        c.flags = flags;
        c.expected_producers = o.expected_producers;
        c.type_hash.store(type_tag, std::memory_order_relaxed);  // published with the segment
        if (!spsc) {
            Cell* cells = reinterpret_cast<Cell*>(body + cells_offset);
            for (std::uint64_t i = 0; i < cell_count; ++i) cells[i].seq.store(i, std::memory_order_relaxed);  // M1
        }
    });
    return Queue(std::move(s), g);
}

Queue Queue::create(const QueueOptions& options) { return create(detail::anonymous_name("anon-queue"), options); }

Queue Queue::open(std::string_view name, const OpenOptions& options) {
    detail::QueueGeometry g;
    detail::Segment s = detail::open_queue_segment(name, "open", detail::Access::read_write, g, options);
    return Queue(std::move(s), g);
}

// Geometry comes from the handle's validated copy, never from shared memory.
bool Queue::spsc() const noexcept { return geometry_.spsc; }
bool Queue::typed() const noexcept { return geometry_.typed; }
std::size_t Queue::capacity() const noexcept { return static_cast<std::size_t>(geometry_.capacity); }
std::size_t Queue::max_message() const noexcept { return static_cast<std::size_t>(geometry_.max_message); }

void Queue::mark_broken() noexcept {
    segment_.set_state(detail::kStateBroken);
    auto& r = detail::ring_indices(segment_.body(), geometry_);
    detail::wake_side(segment_, r, detail::EndpointRole::consumer);
    detail::wake_side(segment_, r, detail::EndpointRole::producer);
    detail::bump_and_wake(detail::queue_control(segment_.body()).done_seq);  // joiners
}

bool Queue::broken() const noexcept {
    return (segment_.header().state.load(std::memory_order_acquire) & detail::kStateBroken) != 0;
}

std::size_t Queue::close_endpoints_of(std::uint32_t pid) noexcept {
    using namespace detail;
    auto& c = queue_control(segment_.body());
    std::size_t closed = 0;
    for (std::uint32_t i = 0; i < segment_.endpoint_count(); ++i) {
        auto& r = segment_.endpoints()[i];
        std::uint64_t w = r.word.load(std::memory_order_acquire);
        if (EndpointRecord::pid_of(w) != pid || EndpointRecord::state_of(w) != EndpointState::open) continue;
        const auto role = EndpointRecord::role_of(w);
        if (!r.word.compare_exchange_strong(w, EndpointRecord::pack(pid, role, EndpointState::closed),
                                            std::memory_order_acq_rel)) {
            continue;  // closed or reaped meanwhile: counted by whoever won
        }
        ++closed;
        if (role == EndpointRole::producer) {
            c.producers_closed.fetch_add(1, std::memory_order_release);
        } else if (role == EndpointRole::consumer) {
            c.consumers_closed.fetch_add(1, std::memory_order_release);
        }
        // E1: free a one-endpoint side that this process held.
        for (auto* owner : {&c.producer_owner, &c.consumer_owner}) {
            std::uint64_t held = owner->load(std::memory_order_acquire);
            if ((held >> 32) == pid) owner->compare_exchange_strong(held, 0, std::memory_order_acq_rel);
        }
    }
    if (closed != 0) {
        auto& r = ring_indices(segment_.body(), geometry_);
        wake_side(segment_, r, EndpointRole::consumer);
        wake_side(segment_, r, EndpointRole::producer);
    }
    return closed;
}

std::optional<std::uint64_t> Queue::last_claim_of(std::uint32_t pid, bool consumer) const noexcept {
    using namespace detail;
    if (spsc()) return std::nullopt;
    const auto want = consumer ? EndpointRole::consumer : EndpointRole::producer;
    std::optional<std::uint64_t> found;
    for (std::uint32_t i = 0; i < segment_.endpoint_count(); ++i) {
        const auto& e = segment_.endpoints()[i];
        const std::uint64_t w = e.word.load(std::memory_order_acquire);
        if (EndpointRecord::pid_of(w) != pid || EndpointRecord::role_of(w) != want) continue;
        if (EndpointRecord::state_of(w) == EndpointState::free) continue;
        const std::uint64_t intent = e.intent.load(std::memory_order_acquire);  // M3
        if (intent != kNoIntent) found = intent;
    }
    return found;
}

void Queue::seal() noexcept {
    auto& c = detail::queue_control(segment_.body());
    c.sealed.store(1, std::memory_order_seq_cst);  // E2
    // Sleepers and armed descriptors re-check the end (D4).
    detail::wake_side(segment_, detail::ring_indices(segment_.body(), geometry_), detail::EndpointRole::consumer);
}

bool Queue::sealed() const noexcept {
    return detail::queue_control(segment_.body()).sealed.load(std::memory_order_acquire) != 0;
}

void Queue::join() { join_until(0); }
bool Queue::join_until(std::uint64_t deadline_ns) { return detail::join_queue(segment_, geometry_, deadline_ns); }

void Queue::expect_more_producers(std::uint32_t n) noexcept {
    detail::queue_control(segment_.body()).extra_expected.fetch_add(n, std::memory_order_acq_rel);
}

QueueStats Queue::stats() const {
    using namespace detail;
    QueueStats st;
    const auto& c = queue_control(segment_.body());
    const auto& r = ring_indices(segment_.body(), geometry_);
    st.name = name();
    st.spsc = spsc();
    st.typed = typed();
    st.capacity = geometry_.capacity;
    st.max_message = geometry_.max_message;
    std::uint64_t endpoint_bytes_in = 0, endpoint_bytes_out = 0;
    for (std::uint32_t i = 0; i < segment_.endpoint_count(); ++i) {
        const auto& e = segment_.endpoints()[i];
        const std::uint64_t w = e.word.load(std::memory_order_acquire);
        const auto role = EndpointRecord::role_of(w);
        if (EndpointRecord::state_of(w) == EndpointState::free) continue;
        if (role == EndpointRole::producer) {
            endpoint_bytes_in += e.bytes.load(std::memory_order_relaxed);
        } else if (role == EndpointRole::consumer) {
            endpoint_bytes_out += e.bytes.load(std::memory_order_relaxed);
        }
        if (EndpointRecord::state_of(w) == EndpointState::open &&
            process_alive(EndpointRecord::pid_of(w), e.start_time.load(std::memory_order_relaxed))) {
            (role == EndpointRole::producer ? st.producers : st.consumers) += 1;
        }
    }
    const QueueTotals t = queue_totals(geometry_, load_ring_counts(r), endpoint_bytes_in,
                                       endpoint_bytes_out);
    copy_totals(t, st);
    const ProducerCounts p = load_producer_counts(c);
    st.producers_closed = p.closed;
    st.producers_dead = p.dead;
    st.sleepers = segment_.header().waiters.load(std::memory_order_relaxed);
    st.abandoned = c.messages_abandoned.load(std::memory_order_relaxed);
    st.lost = c.messages_lost.load(std::memory_order_relaxed);
    st.ended = stream_ended(p);
    st.sealed = p.sealed;
    st.broken = broken();
    return st;
}

}  // namespace shmpipe
