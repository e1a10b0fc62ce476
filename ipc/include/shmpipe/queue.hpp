// Shared-memory message queues between processes.
//
//   shmpipe::QueueOptions opt;  opt.producers = shmpipe::Endpoints::one;  ...
//   auto q = shmpipe::Queue::create("frames", opt);   // owns the name: unlinks it when destroyed
//   shmpipe::Producer<Frame> tx("frames");             // in any process: attach as a producer
//   shmpipe::Consumer<Frame> rx("frames");             // attach as a consumer
//   tx.push(frame);  tx.close();
//   while (auto f = rx.pop()) use(*f);                 // nullopt: end of stream
//
// A queue made for one producer and one consumer is a lock-free SPSC byte ring with
// variable-size records. Otherwise it is a lock-free MPMC ring of fixed cells of
// max_message bytes; each message goes to exactly one consumer, each producer's messages
// keep their order.
//
// Typed queues: Queue::create<T>(name, opt) (and create<T>(opt), anonymous) for a trivially
// copyable T with the built-in codec makes a queue for that T: max_message = sizeof(T), and
// T's type tag is recorded at creation. Made for one producer and one consumer and not
// joinable, it is a typed fixed-slot SPSC ring (Queue::typed(), QueueStats::typed): no record
// header, slots of sizeof(T) rounded up to 8 bytes (to whole 64-byte lines from 64 bytes on),
// a power-of-two slot count (capacity / slot, or max_messages rounded up). Producer<T> and
// Consumer<T> of that T take the typed path by themselves: per message one copy into or out
// of the slot, one predictable branch (typed or not, fixed at attach), no header, no size
// check; the batch calls copy runs of slots and publish once. Every guarantee is the SPSC
// ring's: end of stream, sleeping and fd() readiness, crash safety, redelivery of the message
// a dead consumer was reading. Endpoints of another T (or untyped ones: Producer<Bytes>, the
// Python module) are refused with type_mismatch naming the queue; a create<T> queue for many
// endpoints, or a joinable one, is an ordinary queue of that T (other T still refused).
//
// Blocking operations spin for ~20 µs (yielding, so a peer on the same core runs), then
// sleep on a futex in the segment; a waker makes a system call only when someone sleeps.
// Sleeps are bounded (re-checks every 100 ms) so a peer's death is noticed.
//
// End of stream (detail/queue_state.hpp holds the rule): pop() returns nullopt in every
// consumer once the queue is drained and no producer can come any more: the N expected
// producers closed (expected_producers = N), or the queue was sealed (seal()) and every
// attached producer closed, or a one-producer queue's producer closed. A `many` queue with
// neither never ends by itself: pop() waits, as Python's get(). Producers close explicitly
// or by destruction. A producer that died without closing is found by pid + start time:
// consumers first drain what it committed, then pop() throws Error(errc::producer_died)
// naming the queue and pid, once per consumer per dead producer; the dead producer then
// counts as closed, so the stream can still end.
//
// Crash safety: a process killed at any instruction does not wedge the queue. Committed
// messages are delivered; a half-written message never is. SPSC: a message a dead
// consumer was reading is delivered again to the next consumer that attaches (at least
// once). MPMC: a cell a dead producer had claimed is skipped, and a message a dead
// consumer had taken is lost (at most once); both are counted in QueueStats.
#pragma once

#include <shmpipe/codec.hpp>
#include <shmpipe/detail/anonymous_name.hpp>
#include <shmpipe/detail/deadline.hpp>
#include <shmpipe/detail/queue_endpoint.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/object.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace shmpipe {

enum class Endpoints { one, many };

struct QueueOptions {
    std::size_t capacity = std::size_t{1} << 20;   // bytes of message storage (SPSC: rounded up to a power of two)
    std::size_t max_message = std::size_t{64} << 10;  // largest message; SPSC needs capacity >= 2 * (max_message + 8)
    Endpoints producers = Endpoints::many;
    Endpoints consumers = Endpoints::many;
    std::uint32_t expected_producers = 0;  // the end comes after this many producers closed (0: see seal())
    // Python's maxsize: the queue holds at least this many messages of up to max_message
    // bytes, and `capacity` is ignored (0: size by `capacity`).
    std::size_t max_messages = 0;
    bool joinable = false;                 // JoinableQueue: Consumer::task_done(), Queue::join()
    // Wake-ups fenced on both sides: every publish pays a full fence, a sleep no membarrier
    // (an IPI to every CPU). For queues whose ends sleep about once per message (a pool's).
    bool symmetric_fences = false;
    std::uint32_t max_endpoints = 64;      // endpoint records for a `many` side (both sides share them)
    mode_t permissions = kDefaultPermissions;
};

struct QueueStats {
    std::string name;
    bool spsc = false;
    bool typed = false;              // typed fixed-slot SPSC (Queue::create<T>)
    std::uint64_t capacity = 0;      // bytes
    std::uint64_t max_message = 0;
    std::uint64_t depth = 0;         // messages waiting
    std::uint64_t bytes_used = 0;    // ring bytes in use (SPSC: records with headers; MPMC: cells * stride)
    std::uint64_t messages_in = 0, messages_out = 0;
    std::uint64_t bytes_in = 0, bytes_out = 0;
    std::uint32_t producers = 0, consumers = 0;  // live attached endpoints
    std::uint32_t producers_closed = 0, producers_dead = 0;
    std::uint32_t sleepers = 0;
    std::uint64_t abandoned = 0, lost = 0;      // MPMC recovery counts
    bool ended = false;    // the end-of-stream rule holds (see the top of this file)
    bool sealed = false;   // Queue::seal() was called
    bool broken = false;
};

// The owner handle (create) or an administrative handle (open). Neither pushes nor pops.
class Queue {
public:
    // Creates "shmpipe.<name>"; throws Error: invalid_name, already_exists, invalid_argument
    // (impossible geometry), permission_denied.
    static Queue create(std::string_view name, const QueueOptions& options = {});
    // An anonymous queue, like Python's Queue(): a unique name is picked (name() tells it;
    // still a visible segment that inspect-queues lists and `clean` removes). Children
    // forked later keep using it; other processes attach by name().
    static Queue create(const QueueOptions& options = {});
    // A queue for elements of type T (see the top of this file): typed fixed slots when made
    // for one producer and one consumer and not joinable; max_message is sizeof(T).
    template <class T>
        requires detail::object_bytes_codec<T>
    static Queue create(std::string_view name, const QueueOptions& options = {}) {
        return create_impl(name, options, type_tag<T>(), sizeof(T));
    }
    template <class T>
        requires detail::object_bytes_codec<T>
    static Queue create(const QueueOptions& options = {}) {
        return create_impl(detail::anonymous_name("anon-queue"), options, type_tag<T>(), sizeof(T));
    }
    // Opens an existing queue without owning its name (for stats, close_endpoints_of, mark_broken).
    // A segment another user owns is refused (permission_denied) unless options allow it.
    static Queue open(std::string_view name, const OpenOptions& options = {});

    Queue(Queue&&) noexcept = default;
    Queue& operator=(Queue&&) noexcept = default;
    ~Queue() = default;

    const std::string& name() const noexcept { return segment_.name(); }
    bool spsc() const noexcept;
    bool typed() const noexcept;  // typed fixed-slot SPSC (Queue::create<T>)
    std::size_t capacity() const noexcept;
    std::size_t max_message() const noexcept;

    // Keep the segment after this handle is destroyed.
    void persist() noexcept { segment_.persist(); }
    // Every blocked and later push/pop throws Error(errc::broken). Any process may call it.
    void mark_broken() noexcept;
    bool broken() const noexcept;
    // Closes the producer/consumer endpoints that process `pid` left open (e.g. a stage that
    // exited without closing its outputs). Returns how many were closed.
    std::size_t close_endpoints_of(std::uint32_t pid) noexcept;
    // MPMC: the position the endpoint of process `pid` in `role` last claimed (M3 in
    // queue_layout.hpp: kept until its next claim), or nullopt if it has none. A supervisor
    // uses it to learn which message a dead consumer had taken. Positions count from 0 in
    // push order, so a queue's only producer can map them to what it pushed.
    std::optional<std::uint64_t> last_claim_of(std::uint32_t pid, bool consumer = true) const noexcept;
    // No new producer may attach from now on (attaching throws Error(errc::closed) naming the
    // queue); once every attached producer has closed, the stream ends. Any process may call
    // it, on an owner or an open() handle. Idempotent, never blocks.
    void seal() noexcept;
    bool sealed() const noexcept;
    // JoinableQueue (QueueOptions::joinable): blocks until every message pushed so far has
    // been marked done (Consumer::task_done) by some consumer, in any process. A consumer
    // that died holding messages it never marked done does not make it wait for ever: once
    // the queue is drained and no live consumer holds work, join throws
    // Error(errc::consumer_died) naming the dead consumer(s) and the count, and writes those
    // messages off, so a later join() returns. Throws invalid_state when not joinable.
    void join();
    template <class Rep, class Period>
    bool join_for(std::chrono::duration<Rep, Period> timeout) {  // false on timeout
        return join_until(detail::deadline_after(timeout));
    }
    // Announces `n` more producers before they attach (a supervisor restarting a replica
    // that died): with expected_producers set, the end of stream then also waits for them.
    void expect_more_producers(std::uint32_t n = 1) noexcept;
    QueueStats stats() const;

private:
    Queue(detail::Segment segment, const detail::QueueGeometry& geometry)
        : segment_(std::move(segment)), geometry_(geometry) {}
    bool join_until(std::uint64_t deadline_ns);
    // slot_size 0: untyped (create(name, options)); else create<T> with T's tag and size.
    static Queue create_impl(std::string_view name, const QueueOptions& options, std::uint64_t type_tag,
                             std::uint64_t slot_size);
    detail::Segment segment_;
    detail::QueueGeometry geometry_;  // validated copy: never re-read from shared memory
};

// A reserved, writable message (zero copy). commit() publishes it; destroying it without
// commit() gives it up (SPSC: nothing is published; MPMC: the cell is skipped).
class WriteSlot {
public:
    WriteSlot(WriteSlot&& other) noexcept
        : core_(std::exchange(other.core_, nullptr)), data_(other.data_), size_(other.size_) {}
    WriteSlot& operator=(WriteSlot&& other) noexcept {
        if (this != &other) {
            abandon();
            core_ = std::exchange(other.core_, nullptr);
            data_ = other.data_;
            size_ = other.size_;
        }
        return *this;
    }
    ~WriteSlot() { abandon(); }

    std::span<std::byte> span() const noexcept { return {data_, size_}; }
    // Publishes the first `n` bytes (default: all reserved). Producer only.
    void commit(std::size_t n) noexcept {
        if (core_ != nullptr) std::exchange(core_, nullptr)->commit(n < size_ ? n : size_);
    }
    void commit() noexcept { commit(size_); }

private:
    template <class T>
    friend class Producer;
    WriteSlot(detail::ProducerCore* core, std::byte* data, std::size_t size) noexcept
        : core_(core), data_(data), size_(size) {}
    void abandon() noexcept {
        if (core_ != nullptr) std::exchange(core_, nullptr)->abandon();
    }
    detail::ProducerCore* core_;
    std::byte* data_;
    std::size_t size_;
};

// A message read in place (zero copy); released (consumed) when destroyed.
class ReadSlot {
public:
    ReadSlot(ReadSlot&& other) noexcept : core_(std::exchange(other.core_, nullptr)), data_(other.data_) {}
    ReadSlot& operator=(ReadSlot&& other) noexcept {
        if (this != &other) {
            release();
            core_ = std::exchange(other.core_, nullptr);
            data_ = other.data_;
        }
        return *this;
    }
    ~ReadSlot() { release(); }
    std::span<const std::byte> span() const noexcept { return data_; }
    void release() noexcept {
        if (core_ != nullptr) std::exchange(core_, nullptr)->release();
    }

private:
    template <class T>
    friend class Consumer;
    ReadSlot(detail::ConsumerCore* core, std::span<const std::byte> data) noexcept : core_(core), data_(data) {}
    detail::ConsumerCore* core_;
    std::span<const std::byte> data_;
};

// Attaches to queue `name` as a producer. Any process. Throws Error: not_found (is the
// creator running?), too_many_endpoints, type_mismatch (another endpoint uses another T),
// corrupt, permission_denied. The destructor closes.
template <class T = Bytes>
class Producer {
    static_assert(is_codable_v<T>, "shmpipe::Producer<T>: T has no shmpipe::Codec (see codec.hpp)");

public:
    explicit Producer(std::string_view name, const OpenOptions& options = {})
        : core_(std::make_unique<detail::ProducerCore>(name, std::is_same_v<T, Bytes> ? 0 : type_tag<T>(), options,
                                                       kTypable ? sizeof(T) : 0)) {}
    // Movable like a value (a std::vector<Producer<T>> works). A WriteSlot reserved before
    // the move stays valid and commits through the new owner. Assigning over a producer
    // closes the endpoint it held. A moved-from producer may be destroyed, assigned to or
    // closed; anything else throws Error(errc::invalid_state).
    Producer(Producer&&) noexcept = default;
    Producer& operator=(Producer&&) noexcept = default;

    // Blocks while the queue is full. Throws message_too_large at once, broken, consumer_died, closed.
    [[gnu::always_inline]] void push(const T& v) {
        detail::ProducerCore& c = core();
        if constexpr (kTypable) {
            // Typed slots (fixed at attach): the one decision per message. The rest is a call
            // away, so this stays small enough to inline into the caller's loop.
            if (c.typed()) {
                if (c.typed_push_now(v)) [[likely]] return;
                return detail::out_of_line([&] { typed_push_slow(c, v); });
            }
        }
        push_rest(c, v);
    }
    // Never blocks: false when the queue is full (with fd(): then wait on it).
    [[gnu::always_inline]] bool try_push(const T& v) {
        detail::ProducerCore& c = core();
        if constexpr (kTypable) {
            if (c.typed()) {
                if (c.typed_try_push_now(v)) [[likely]] return true;
                return detail::out_of_line([&] { return typed_try_push_slow(c, v); });
            }
        }
        return try_push_rest(c, v);
    }

private:
    // Typed slots, when the fast path could not decide: full, closed, broken, a reservation open.
    void typed_push_slow(detail::ProducerCore& c, const T& v) {
        if (c.typed_push_now(v)) return;
        encode_commit(v, c.reserve(sizeof(T), 0), sizeof(T));  // spins, sleeps, throws
    }
    bool typed_try_push_slow(detail::ProducerCore& c, const T& v) {
        if (c.typed_try_push_now(v)) return true;
        if (!c.typed_ready()) c.check_open();  // throws closed, broken, a reservation open
        if (!c.has_fd()) return false;
        std::byte* p = c.poll_reserve(sizeof(T));  // arms the descriptor when full
        if (p == nullptr) return false;
        encode_commit(v, p, sizeof(T));
        return true;
    }
    // The byte ring and MPMC.
    void push_rest(detail::ProducerCore& c, const T& v) {
        const std::size_t n = Codec<T>::size(v);
        if (c.spsc()) {  // one decision per message; a failed encode stages nothing
            if (std::byte* p = c.spsc_push_now(n)) [[likely]] {
                Codec<T>::encode(v, std::span<std::byte>(p, n));
                c.stage(n);
                c.publish();
                return;
            }
        } else if (std::byte* p = c.reserve_now(n)) [[likely]] {
            encode_commit(v, p, n);
            return;
        }
        encode_commit(v, c.reserve(n, 0), n);  // out of line: spins, sleeps, throws
    }
    bool try_push_rest(detail::ProducerCore& c, const T& v) {
        const std::size_t n = Codec<T>::size(v);
        c.check_size(n);
        if (c.spsc() && !c.holding()) {  // one decision per message; a failed encode stages nothing
            if (std::byte* p = c.stage_reserve(n)) [[likely]] {
                Codec<T>::encode(v, std::span<std::byte>(p, n));
                c.stage(n);
                c.publish();
                return true;
            }
            if (!c.has_fd()) return false;
        }
        std::byte* p = c.try_reserve(n);
        if (p == nullptr && c.has_fd()) p = c.poll_reserve(n);
        if (p == nullptr) return false;
        encode_commit(v, p, n);
        return true;
    }

public:
    // Gives up after the timeout (monotonic clock): false.
    template <class Rep, class Period>
    bool push_for(const T& v, std::chrono::duration<Rep, Period> timeout) {
        const std::size_t n = Codec<T>::size(v);
        std::byte* p = core().reserve(n, detail::deadline_after(timeout));
        if (p == nullptr) return false;
        encode_commit(v, p, n);
        return true;
    }

    // Batch calls: several messages in one call. On an SPSC queue the whole batch becomes
    // visible with one publication (one store of the ring's tail); on an MPMC queue each
    // message takes its own cell, as push does. Items keep their order.
    //   try_push_n  never blocks: pushes the longest prefix of `items` that fits now and
    //               returns its length (0 when full).
    //   push_n      blocks until every item is in. Throws like push; the items before the
    //               one that failed are in the queue.
    //   push_n_for  gives up at the timeout: returns how many went in.
    std::size_t try_push_n(std::span<const T> items) {
        detail::ProducerCore& c = core();
        if constexpr (kTypable) {
            if (c.typed()) {  // runs of slots, one tail store
                c.check_open();
                if (c.has_fd()) {  // arms the descriptor when full, as try_push
                    if (items.empty() || !try_push(items[0])) return 0;
                    return 1 + c.typed_put_n(items.data() + 1, items.size() - 1);
                }
                return c.typed_put_n(items.data(), items.size());
            }
        }
        if (!c.spsc()) {
            std::size_t done = 0;
            while (done < items.size() && try_push(items[done])) ++done;
            return done;
        }
        c.check_open();
        if (c.has_fd()) {  // arms the descriptor when full, as try_push
            if (items.empty() || !try_push(items[0])) return 0;
            return 1 + stage_n(items.subspan(1));
        }
        return stage_n(items);
    }
    void push_n(std::span<const T> items) {
        core().check_open();
        std::size_t done = 0;
        while (done < items.size()) {
            done += try_push_n(items.subspan(done));
            if (done < items.size()) push(items[done++]);  // full: wait for room (spins, sleeps, throws)
        }
    }
    template <class Rep, class Period>
    std::size_t push_n_for(std::span<const T> items, std::chrono::duration<Rep, Period> timeout) {
        const std::uint64_t deadline = detail::deadline_after(timeout);
        core().check_open();
        std::size_t done = 0;
        while (done < items.size()) {
            done += try_push_n(items.subspan(done));
            if (done == items.size()) break;
            const std::size_t n = Codec<T>::size(items[done]);
            std::byte* p = core().reserve(n, deadline);
            if (p == nullptr) break;  // timeout
            encode_commit(items[done++], p, n);
        }
        return done;
    }

    // Raw bytes (Producer<> only).
    void push(std::span<const std::byte> bytes) requires std::is_same_v<T, Bytes> {
        std::byte* p = core().reserve_now(bytes.size());
        if (p == nullptr) [[unlikely]] p = core().reserve(bytes.size(), 0);
        if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
        core().commit(bytes.size());
    }
    bool try_push(std::span<const std::byte> bytes) requires std::is_same_v<T, Bytes> {
        core().check_size(bytes.size());
        std::byte* p = core().try_reserve(bytes.size());
        if (p == nullptr && core().has_fd()) p = core().poll_reserve(bytes.size());
        if (p == nullptr) return false;
        if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
        core().commit(bytes.size());
        return true;
    }

    // Zero copy: a writable slot of n bytes (blocks while full); commit() publishes it.
    WriteSlot reserve(std::size_t n) { return WriteSlot(&core(), core().reserve(n, 0), n); }
    std::optional<WriteSlot> try_reserve(std::size_t n) {
        core().check_size(n);
        std::byte* p = core().try_reserve(n);
        if (p == nullptr && core().has_fd()) p = core().poll_reserve(n);
        if (p == nullptr) return std::nullopt;
        return WriteSlot(&core(), p, n);
    }
    template <class Rep, class Period>
    std::optional<WriteSlot> reserve_for(std::size_t n, std::chrono::duration<Rep, Period> timeout) {
        std::byte* p = core().reserve(n, detail::deadline_after(timeout));
        if (p == nullptr) return std::nullopt;
        return WriteSlot(&core(), p, n);
    }

    // Python's qsize(), empty(), full(): approximate, stale as soon as read (other endpoints
    // move on). qsize() counts the messages waiting; full() says that a max_message push
    // would not fit now. Any thread; no system call.
    std::size_t qsize() const { return core().size_approx(); }
    bool empty() const { return qsize() == 0; }
    bool full() const { return core().full_approx(); }

    // JoinableQueue (QueueOptions::joinable): blocks until every message pushed so far, by
    // any producer, has been marked done by some consumer (Consumer::task_done), like
    // Queue::join(). Here because a process that only pushes often holds no Queue handle.
    // Throws consumer_died (a consumer died holding messages never marked done: they are
    // written off, and a later join() can succeed), invalid_state (not joinable).
    void join() { core().join(0); }
    template <class Rep, class Period>
    bool join_for(std::chrono::duration<Rep, Period> timeout) {  // false on timeout
        return core().join(detail::deadline_after(timeout));
    }

    // Ends this producer's stream (idempotent). Later pushes throw Error(errc::closed).
    // A descriptor for event loops (poll, epoll, Boost.Asio), readable when there may be
    // room, when a consumer closed or died, or when the queue broke. Level-style: it starts
    // readable; try_push until it returns false, then wait on fd() again; no wake-up is lost
    // in between (try_push arms it before its last look). Made on the first call and owned
    // by this producer (valid until close or destruction; a move keeps it). A queue whose
    // consumers are all gone stays full: push_for reports that (closed / consumer_died).
    // Throws Error naming the queue when no descriptor can be made, closed after close().
    int fd() { return core().fd(); }
    void close() noexcept {
        if (core_) core_->close();
    }
    const std::string& name() const { return core().name(); }
    std::size_t max_message() const { return core().max_message(); }

private:
    // Typed slots apply to T's with the built-in object-bytes codec (Queue::create<T>).
    static constexpr bool kTypable = detail::object_bytes_codec<T>;
    // SPSC batch: stages what fits now and publishes it with one tail store.
    std::size_t stage_n(std::span<const T> items) {
        detail::ProducerCore& c = core();
        std::size_t done = 0;
        try {
            for (; done < items.size(); ++done) {
                const std::size_t n = Codec<T>::size(items[done]);
                c.check_size(n);
                std::byte* p = c.stage_reserve(n);
                if (p == nullptr) break;
                Codec<T>::encode(items[done], std::span<std::byte>(p, n));
                c.stage(n);
            }
        } catch (...) {
            if (done != 0) c.publish();  // what was staged before the failure goes out
            throw;
        }
        if (done != 0) c.publish();
        return done;
    }
    void encode_commit(const T& v, std::byte* p, std::size_t n) {
        try {
            Codec<T>::encode(v, std::span<std::byte>(p, n));
        } catch (...) {
            core().abandon();
            throw;
        }
        core().commit(n);
    }
    detail::ProducerCore& core() const {
        if (!core_) [[unlikely]] detail::throw_moved_from("producer");
        return *core_;
    }
    std::unique_ptr<detail::ProducerCore> core_;  // on the heap: a slot keeps pointing at it when we move
};

// Attaches to queue `name` as a consumer. Any process. Throws like Producer.
template <class T = Bytes>
class Consumer {
    static_assert(is_codable_v<T>, "shmpipe::Consumer<T>: T has no shmpipe::Codec (see codec.hpp)");

public:
    explicit Consumer(std::string_view name, const OpenOptions& options = {})
        : core_(std::make_unique<detail::ConsumerCore>(name, std::is_same_v<T, Bytes> ? 0 : type_tag<T>(), options,
                                                       kTypable ? sizeof(T) : 0)) {}
    // Movable like a value (a std::vector<Consumer<T>> works). A ReadSlot peeked before the
    // move stays valid and is released through the new owner. Assigning over a consumer
    // closes the endpoint it held. A moved-from consumer may be destroyed, assigned to or
    // closed; anything else throws Error(errc::invalid_state).
    Consumer(Consumer&&) noexcept = default;
    Consumer& operator=(Consumer&&) noexcept = default;

    // Blocks until a message or the end of stream (nullopt). Throws producer_died (after
    // draining), broken, corrupt, type_mismatch (a message that does not decode as T).
    [[gnu::always_inline]] std::optional<T> pop() {
        detail::ConsumerCore& c = core();
        if constexpr (kTypable) {
            // Typed slots (fixed at attach): the one decision per message; the rest is a call away.
            if (c.typed()) {
                if (const std::byte* p = c.typed_front<kStride, true>()) [[likely]] return take_typed(c, p);
                return detail::out_of_line([&] { return typed_pop_slow(c); });
            }
        }
        return pop_rest(c);
    }
    // Never blocks: nullopt when nothing is waiting (or at the end: see ended()). With
    // fd(), an empty try_pop also arms the descriptor and reports the end of stream (ended())
    // and a dead producer (throws producer_died) as pop() does.
    [[gnu::always_inline]] std::optional<T> try_pop() {
        detail::ConsumerCore& c = core();
        if constexpr (kTypable) {
            if (c.typed()) {
                if (!c.holding()) {
                    if (const std::byte* p = c.typed_front<kStride, false>()) [[likely]] return take_typed(c, p);
                    // Empty: a polling loop pays one load of tail per try, as the reference
                    // ring; only a descriptor has more to do (arm it, see the end of stream).
                    if (!c.has_fd()) return std::nullopt;
                }
                return detail::out_of_line([&] { return typed_try_pop_slow(c); });
            }
        }
        return try_pop_rest(c);
    }

private:
    [[gnu::always_inline]] static std::optional<T> take_typed(detail::ConsumerCore& c, const std::byte* p) {
        std::optional<T> v = decode({p, sizeof(T)});  // object bytes: cannot throw
        c.template typed_take_one<kStride>();
        return v;
    }
    // The copy-out forms' take: the slot straight into `out`, then consumed (true).
    [[gnu::always_inline]] static bool take_typed_into(detail::ConsumerCore& c, const std::byte* p, T& out) {
        detail::copy_fixed<sizeof(T)>(&out, p);
        c.template typed_take_one<kStride>();
        return true;
    }
    // Typed slots, when the fast path could not decide: empty, closed, a ReadSlot held.
    std::optional<T> typed_pop_slow(detail::ConsumerCore& c) {
        std::span<const std::byte> m;
        if (!c.peek_now(m) && c.peek(m, 0) != detail::PeekResult::ok) return std::nullopt;  // spins, sleeps
        return decode_release(m);
    }
    std::optional<T> typed_try_pop_slow(detail::ConsumerCore& c) {
        std::span<const std::byte> m;
        if (!c.holding()) {
            if (const std::byte* p = c.typed_front<kStride, false>()) return take_typed(c, p);
            if (!c.has_fd()) return std::nullopt;
        }
        if (!c.try_peek(m) && !(c.has_fd() && c.poll_peek(m) == detail::PeekResult::ok)) return std::nullopt;
        return decode_release(m);
    }
    // The byte ring and MPMC.
    std::optional<T> pop_rest(detail::ConsumerCore& c) {
        std::span<const std::byte> m;
        if (c.batchable() && c.spsc_pop_now(m)) [[likely]] {  // inline fast path, one decision
            struct Done {
                detail::ConsumerCore& c;
                ~Done() { c.spsc_pop_done(); }
            } done{c};  // consumed even if it fails to decode
            return decode(m);
        }
        if (!c.peek_now(m) && c.peek(m, 0) != detail::PeekResult::ok) return std::nullopt;  // slow path
        return decode_release(m);
    }
    std::optional<T> try_pop_rest(detail::ConsumerCore& c) {
        std::span<const std::byte> m;
        if (c.batchable() && !c.holding()) {  // one decision per message
            if (c.spsc_try_pop(m)) [[likely]] {
                struct Done {
                    detail::ConsumerCore& c;
                    ~Done() { c.spsc_pop_done(); }
                } done{c};
                return decode(m);
            }
            if (!c.has_fd()) return std::nullopt;
        }
        if (!c.try_peek(m) && !(c.has_fd() && c.poll_peek(m) == detail::PeekResult::ok)) return std::nullopt;
        return decode_release(m);
    }

public:
    // nullopt on timeout or at the end of stream; ended() tells which.
    template <class Rep, class Period>
    std::optional<T> pop_for(std::chrono::duration<Rep, Period> timeout) {
        return take(detail::deadline_after(timeout));
    }

    // Copy-out forms: the message lands in `out` (a trivially copyable T is copied straight
    // in, nothing is built or zero-filled first; std::string and Bytes reuse out's storage).
    // pop_into blocks: false at the end of stream. try_pop_into never blocks: false when
    // nothing is waiting. pop_into_for: false on timeout or at the end (ended() tells).
    // Throw like pop(); on a type_mismatch `out` is unchanged.
    [[gnu::always_inline]] bool pop_into(T& out) {
        if constexpr (kTypable) {
            detail::ConsumerCore& c = core();
            if (c.typed()) {
                if (const std::byte* p = c.typed_front<kStride, true>()) [[likely]] return take_typed_into(c, p, out);
                return detail::out_of_line([&] { return pop_into_slow(out); });
            }
        }
        return pop_into_rest(out);
    }
    [[gnu::always_inline]] bool try_pop_into(T& out) {  // with fd(): arms it when empty, as try_pop
        if constexpr (kTypable) {
            detail::ConsumerCore& c = core();
            if (c.typed()) {
                if (!c.holding()) {
                    if (const std::byte* p = c.typed_front<kStride, false>()) [[likely]] return take_typed_into(c, p, out);
                    if (!c.has_fd()) return false;  // empty: one load of tail per try, as try_pop
                }
                return detail::out_of_line([&] { return try_pop_into_slow(out); });
            }
        }
        return try_pop_into_rest(out);
    }

private:
    // Typed slots, when the fast path could not decide (out of line).
    bool pop_into_slow(T& out) {
        std::span<const std::byte> m;
        if (!core().peek_now(m) && core().peek(m, 0) != detail::PeekResult::ok) return false;  // spins, sleeps
        decode_release_into(m, out);
        return true;
    }
    bool try_pop_into_slow(T& out) {
        detail::ConsumerCore& c = core();
        if (!c.holding()) {
            if (const std::byte* p = c.typed_front<kStride, false>()) return take_typed_into(c, p, out);
            if (!c.has_fd()) return false;
        }
        return try_pop_into_rest(out);
    }
    // The byte ring and MPMC (and the typed peek paths).
    bool pop_into_rest(T& out) {
        std::span<const std::byte> m;
        if (!core().peek_now(m)) [[unlikely]] {
            if (core().peek(m, 0) != detail::PeekResult::ok) return false;
        }
        decode_release_into(m, out);
        return true;
    }
    bool try_pop_into_rest(T& out) {
        std::span<const std::byte> m;
        detail::ConsumerCore& c = core();
        if (!c.try_peek(m) && !(c.has_fd() && c.poll_peek(m) == detail::PeekResult::ok)) return false;
        decode_release_into(m, out);
        return true;
    }

public:
    template <class Rep, class Period>
    bool pop_into_for(T& out, std::chrono::duration<Rep, Period> timeout) {
        std::span<const std::byte> m;
        if (core().peek(m, detail::deadline_after(timeout)) != detail::PeekResult::ok) return false;
        decode_release_into(m, out);
        return true;
    }

    // Batch calls: several messages in one call, into the caller's objects (as pop_into).
    // On an SPSC queue that is not joinable the batch is consumed with one publication of
    // the ring's head and statistics; otherwise message by message.
    //   try_pop_n  never blocks: takes up to out.size() messages waiting now; 0 when none.
    //   pop_n      blocks until one message is there, then takes up to out.size() of those
    //              waiting; 0 only at the end of stream.
    //   pop_n_for  as pop_n, 0 on timeout or at the end (ended() tells which).
    // Throw like pop(); a message that fails to decode is consumed, and the ones before it
    // are in out[0..k) (k is lost with the exception: use pop_into to tell them apart).
    std::size_t try_pop_n(std::span<T> out) {  // with fd(): arms it when empty, as try_pop
        if (!core().has_fd()) return take_n(out);
        if (out.empty() || !try_pop_into(out[0])) return 0;
        return 1 + take_n(out.subspan(1));
    }
    // pop_n and pop_n_for take what is waiting with one publication; only an empty queue
    // (or a closed consumer, a held slot: the errors) goes through the single-message wait,
    // which takes one message, and then the rest that came with it.
    std::size_t pop_n(std::span<T> out) {
        if (out.empty()) return 0;
        if (const std::size_t k = take_waiting(out)) return k;
        if (!pop_into(out[0])) return 0;
        return 1 + take_n(out.subspan(1));
    }
    template <class Rep, class Period>
    std::size_t pop_n_for(std::span<T> out, std::chrono::duration<Rep, Period> timeout) {
        if (out.empty()) return 0;
        if (const std::size_t k = take_waiting(out)) return k;
        if (!pop_into_for(out[0], timeout)) return 0;
        return 1 + take_n(out.subspan(1));
    }

    // Zero copy: the next message in place (blocks); nullopt at the end of stream. The
    // message is consumed when the ReadSlot is destroyed.
    std::optional<ReadSlot> peek() { return peek_until(0); }
    [[gnu::always_inline]] std::optional<ReadSlot> try_peek() {
        detail::ConsumerCore& c = core();
        if constexpr (kTypable) {
            if (c.typed() && !c.has_fd()) {  // typed slots: one inline look, as try_pop
                if (const std::byte* p = c.typed_hold<kStride>()) [[likely]] return ReadSlot(&c, {p, sizeof(T)});
                return std::nullopt;
            }
        }
        std::span<const std::byte> m;
        if (!c.try_peek(m) && !(c.has_fd() && c.poll_peek(m) == detail::PeekResult::ok)) return std::nullopt;
        return ReadSlot(&c, m);
    }
    template <class Rep, class Period>
    std::optional<ReadSlot> peek_for(std::chrono::duration<Rep, Period> timeout) {
        return peek_until(detail::deadline_after(timeout));
    }

    // Approximate, as Producer::qsize(), empty(), full().
    std::size_t qsize() const { return core().size_approx(); }
    bool empty() const { return qsize() == 0; }
    bool full() const { return core().full_approx(); }

    // JoinableQueue (QueueOptions::joinable): marks one message this consumer took (popped
    // or peeked) as done. Throws invalid_argument when called more often than messages were
    // taken (Python's ValueError), invalid_state when the queue is not joinable. Never blocks.
    void task_done() { core().task_done(); }

    // True once the end of stream was seen by this consumer.
    bool ended() const { return core().ended(); }

    // A descriptor for event loops (poll, epoll, Boost.Asio, Python's loop.add_reader),
    // readable when a message, the end of stream, a dead producer or a broken queue awaits.
    // Level-style: it starts readable; drain with try_pop until it returns nullopt, then
    // check ended() and wait on fd() again. No wake-up is lost in between: the empty
    // try_pop arms the descriptor before its last look. A producer that dies makes it
    // readable at once (a pidfd per producer; 100 ms without pidfd). Spurious readiness is
    // possible (try_pop then just returns nullopt). Made on the first call and owned by this
    // consumer (valid until close or destruction; a move keeps it); the fast path is
    // unchanged, a producer pays one datagram only when it wakes an armed consumer. Throws
    // Error naming the queue when no descriptor can be made, closed after close().
    int fd() { return core().fd(); }
    void close() noexcept {
        if (core_) core_->close();
    }
    const std::string& name() const { return core().name(); }

private:
    static constexpr bool kTypable = detail::object_bytes_codec<T>;  // as Producer
    static constexpr std::uint64_t kStride = detail::typed_slot_stride(sizeof(T));
    // pop_n's first look: the messages waiting now, 0 when none or when the consumer is
    // closed or holds a slot (the blocking pop then reports those).
    std::size_t take_waiting(std::span<T> out) {
        const detail::ConsumerCore& c = core();
        return c.open_idle() ? take_n(out) : 0;
    }
    // The batch calls' work: the messages waiting now, without arming a descriptor.
    std::size_t take_n(std::span<T> out) {
        detail::ConsumerCore& c = core();
        if constexpr (kTypable) {
            if (c.typed()) return c.typed_take_n(out.data(), out.size());  // runs of slots, one head store
        }
        std::size_t done = 0;
        std::span<const std::byte> m;
        if (!c.batchable()) {
            while (done < out.size() && c.try_peek(m)) decode_release_into(m, out[done++]);
            return done;
        }
        struct End {  // one publication for the batch, also when a decode throws
            detail::ConsumerCore& c;
            bool any = false;
            ~End() {
                if (any) c.batch_end();
            }
        } end{c};
        while (done < out.size() && c.batch_next(m)) {
            c.batch_take();  // consumed even if it fails to decode (as pop)
            end.any = true;
            decode_into(m, out[done]);
            ++done;
        }
        return done;
    }
    std::optional<T> take(std::uint64_t deadline_ns) {
        std::span<const std::byte> m;
        if (core().peek(m, deadline_ns) != detail::PeekResult::ok) return std::nullopt;
        return decode_release(m);
    }
    std::optional<ReadSlot> peek_until(std::uint64_t deadline_ns) {
        std::span<const std::byte> m;
        if (core().peek(m, deadline_ns) != detail::PeekResult::ok) return std::nullopt;
        return ReadSlot(&core(), m);
    }
    std::optional<T> decode_release(std::span<const std::byte> m) {
        struct Release {
            detail::ConsumerCore& c;
            ~Release() { c.release(); }
        } guard{core()};  // a message that fails to decode is still consumed, never re-read
        return decode(m);
    }
    static std::optional<T> decode(std::span<const std::byte> m) {
        if constexpr (detail::object_bytes_codec<T> && std::is_default_constructible_v<T>) {
            // Copy straight into the result: decode() + optional(T&&) would copy twice, and
            // optional(in_place) would zero-fill T first. The conversion builds T by default-
            // initialisation (no fill) in the optional's storage (the copy is elided).
            if (m.size() != sizeof(T)) detail::throw_decode_error(typeid(T).name(), "value", m.size(), sizeof(T));
            struct Raw {
                const std::byte* p;
                operator T() const noexcept {
                    T v;
                    detail::copy_fixed<sizeof(T)>(&v, p);
                    return v;
                }
            };
            return std::optional<T>(std::in_place, Raw{m.data()});
        } else {
            return Codec<T>::decode(m);
        }
    }
    void decode_release_into(std::span<const std::byte> m, T& out) {
        struct Release {
            detail::ConsumerCore& c;
            ~Release() { c.release(); }
        } guard{core()};
        decode_into(m, out);
    }
    static void decode_into(std::span<const std::byte> m, T& out) {
        if constexpr (detail::object_bytes_codec<T>) {
            if (m.size() != sizeof(T)) detail::throw_decode_error(typeid(T).name(), "value", m.size(), sizeof(T));
            detail::copy_fixed<sizeof(T)>(&out, m.data());
        } else if constexpr (std::is_same_v<T, Bytes>) {
            out.assign(m.begin(), m.end());
        } else if constexpr (std::is_same_v<T, std::string>) {
            out.assign(reinterpret_cast<const char*>(m.data()), m.size());
        } else {
            out = Codec<T>::decode(m);
        }
    }
    detail::ConsumerCore& core() const {
        if (!core_) [[unlikely]] detail::throw_moved_from("consumer");
        return *core_;
    }
    std::unique_ptr<detail::ConsumerCore> core_;  // on the heap: a slot keeps pointing at it when we move
};

}  // namespace shmpipe
