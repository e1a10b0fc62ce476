// queue_bench: shmpipe queues against their peers, in one interleaved run.
//
// Transports (ids as in --only and the tables):
//   ref          the reference ring (bench/reference_ring.hpp): fixed slots, busy polling — the ceiling;
//                its payload is written and checked with the size known at compile time
//   ref-rt       the same ring with a run-time-sized payload write and check loop (the reference
//                of earlier runs: at 8 B those cost 15-20% of the ring's ceiling)
//   ref-copy     the same ring whose consumer copies each message out of its slot, releases the
//                slot, then checks the copy, as a pop does (ref reads it in place, as a peek does):
//                the peer of the copying rows (spsc-spin, typed-spin) where the copy matters
//   ref-dense    the same ring with slots packed at the message size rounded up to 8 bytes, the
//                layout of a typed queue (ref gives every message lines of its own: at 8 B one
//                message per 64-byte line): shows what the packed layout itself costs or gains
//   spsc-spin    shmpipe SPSC, try_push / try_pop loops with a pause
//   spsc-block   shmpipe SPSC, push / pop (spin briefly, then futex)
//   spsc-zc      shmpipe SPSC, try_reserve+commit / try_peek (zero copy, spinning); sizes >= 4 KiB
//   spsc-batch   shmpipe SPSC, push_n / pop_n of 128 messages (one publication per batch)
//   typed-spin   shmpipe typed SPSC (Queue::create<T>: fixed slots, no record header), try_push / try_pop
//   typed-block  shmpipe typed SPSC, push / pop
//   typed-batch  shmpipe typed SPSC, push_n / pop_n of 128 messages
//   typed-zc     shmpipe typed SPSC, try_reserve+commit / try_peek: written and checked in the
//                slot at a size known at compile time, as ref does (the copying rows' peer is ref-copy)
//   mpmc-spin    shmpipe MPMC 1->1, try_push / try_pop
//   mpmc-block   shmpipe MPMC 1->1, push / pop
//   mpmc-1to2    shmpipe MPMC, 1 producer -> 2 consumers, push / pop (the consumers share a core)
//   mpmc-2to1    shmpipe MPMC, 2 producers -> 1 consumer, push / pop (the producers share a core)
//   pipe         pipe(2), read/write of whole messages, pipe buffer sized like the rings
//   socketpair   AF_UNIX SOCK_SEQPACKET socketpair
//   boost-mq     boost::interprocess::message_queue
//   zmq          ZeroMQ ipc:// PUSH/PULL (cppzmq, default high-water marks)
//   python-mp    Python multiprocessing.Queue (bench/queue_bench_mp.py, spawned)
//
// Method: every measurement forks fresh processes (producer and consumer), each pinned
// with sched_setaffinity (default CPUs 0 and 1; --one-core pins everything to CPU 0 and
// runs only the transports that block). Every message is the same verified payload: word
// 0 carries producer id and sequence number, the last word its complement, the words
// between a fixed pattern; the receiver checks the sum of all words and the sequence
// (strictly consecutive per producer with one consumer, increasing with two), and the
// parent checks counts and sequence sums, so a broken transport cannot report a number.
// Throughput: the producer sends for --seconds (or exactly --messages), then a stop
// message; msgs/s = messages / (consumer's last receive - producer's first send).
// Ping-pong: one message there and back, timed per round trip; median and p99.
// Each round runs every (size, transport) once, in an order rotated per round; the
// tables show medians over rounds. Every object name carries this process's pid and a
// counter and is removed after its measurement, after a failure, and on SIGINT/SIGTERM.
#include "bench_util.hpp"
#include "reference_ring.hpp"

#include <shmpipe/detail/copy.hpp>
#include <shmpipe/queue.hpp>

#include <boost/interprocess/ipc/message_queue.hpp>
#include <zmq.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <poll.h>
#include <spawn.h>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace {

using bench::now_ns;

// ---------------------------------------------------------------------------------------
// Cleanup of named objects, also from a signal handler (so: fixed arrays, plain syscalls).

constexpr int kMaxRegistered = 32;
struct Registered {
    std::atomic<int> used{0};
    int is_file = 0;  // 1: unlink(path); 0: shm_unlink(name)
    char name[256] = {};
};
Registered g_registered[kMaxRegistered];
std::atomic<pid_t> g_children[8];

int register_name(const std::string& name, bool is_file) {
    for (int i = 0; i < kMaxRegistered; ++i) {
        int expected = 0;
        if (g_registered[i].used.load() == 0) {
            std::snprintf(g_registered[i].name, sizeof g_registered[i].name, "%s", name.c_str());
            g_registered[i].is_file = is_file ? 1 : 0;
            if (g_registered[i].used.compare_exchange_strong(expected, 1)) return i;
        }
    }
    throw std::runtime_error("too many benchmark objects at once");
}
void unregister_and_remove(int slot) noexcept {
    if (slot < 0) return;
    Registered& r = g_registered[slot];
    if (r.is_file != 0) {
        ::unlink(r.name);
    } else {
        ::shm_unlink(r.name);
    }
    r.used.store(0);
}
void remove_all_registered() noexcept {
    for (int i = 0; i < kMaxRegistered; ++i)
        if (g_registered[i].used.load() != 0) unregister_and_remove(i);
}

extern "C" void on_fatal_signal(int sig) {
    for (auto& c : g_children) {
        const pid_t p = c.load();
        if (p != 0) ::kill(p, SIGKILL);  // < 0: a process group (the Python helper)
    }
    remove_all_registered();
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

// A name that is removed when the guard dies (and by the signal handler meanwhile).
class NameGuard {
public:
    NameGuard() = default;
    NameGuard(const std::string& name, bool is_file) : name_(name), slot_(register_name(name, is_file)) {}
    NameGuard(NameGuard&& o) noexcept : name_(std::move(o.name_)), slot_(std::exchange(o.slot_, -1)) {}
    NameGuard& operator=(NameGuard&&) = delete;
    ~NameGuard() { unregister_and_remove(slot_); }
    const std::string& name() const noexcept { return name_; }

private:
    std::string name_;
    int slot_ = -1;
};

std::string unique_suffix() {
    static int counter = 0;
    return std::to_string(::getpid()) + "." + std::to_string(++counter);
}

// ---------------------------------------------------------------------------------------
// The verified payload.

constexpr std::uint64_t kStopBit = std::uint64_t{1} << 63;
constexpr int kProducerShift = 48;
constexpr std::uint64_t kSeqMask = (std::uint64_t{1} << kProducerShift) - 1;
constexpr int kMaxProducers = 4;

std::uint64_t word0(std::uint64_t producer, std::uint64_t seq) { return (producer << kProducerShift) | seq; }

// Word 0 = producer id, sequence (or kStopBit | producer | count); last word = ~word 0;
// the words between: a fixed pattern. The sum of all words is therefore a constant
// (pattern sum - 1 for two or more words), checked by the receiver for every message.
class PayloadFormat {
public:
    explicit PayloadFormat(std::size_t size) : size_(size), words_(size / 8), source_(words_ == 0 ? 1 : words_) {
        if (size < 8 || size % 8 != 0) throw std::invalid_argument("message sizes must be multiples of 8, >= 8");
        std::uint64_t sum = 0;
        for (std::size_t i = 1; i + 1 < words_; ++i) {
            source_[i] = (i * 0x9E3779B97F4A7C15ULL) ^ 0x2545F4914F6CDD1DULL;
            sum += source_[i];
        }
        expected_sum_ = words_ >= 2 ? sum - 1 : 0;  // w0 + ~w0 == 2^64 - 1
    }
    std::size_t size() const noexcept { return size_; }
    std::uint64_t expected_sum() const noexcept { return expected_sum_; }  // of every message's words (16 B and up)
    // Writes the whole message (producers that build in place).
    void fill(std::byte* dst, std::uint64_t w0) const noexcept {
        std::memcpy(dst, source_.data(), size_);
        stamp(dst, w0);
    }
    // Re-stamps a buffer that fill() prepared once (producers that send from a buffer).
    void stamp(std::byte* dst, std::uint64_t w0) const noexcept {
        std::memcpy(dst, &w0, 8);
        if (words_ >= 2) {
            const std::uint64_t last = ~w0;
            std::memcpy(dst + size_ - 8, &last, 8);
        }
    }
    // fill(), stamp() and verify() with the size known at compile time (N == size()): no loop over a
    // run-time count, so a reference's 8-byte message costs two stores and a load. From 257
    // bytes on the whole message is copied, aligned, with the copy a typed queue uses for its
    // slots (shmpipe::detail::copy_fixed: no `rep movsq`), then stamped: the reference writes
    // its payload as fast as the queues it is compared with copy theirs in.
    template <std::size_t N>
    void fill_fixed(std::byte* dst, std::uint64_t w0) const noexcept {
        if constexpr (N >= shmpipe::detail::kVectorCopyMin) {
            shmpipe::detail::copy_fixed<N>(dst, source_.data());
        } else if constexpr (N > 16) {
            std::memcpy(dst + 8, source_.data() + 1, N - 16);
        }
        std::memcpy(dst, &w0, 8);
        if constexpr (N >= 16) {
            const std::uint64_t last = ~w0;
            std::memcpy(dst + N - 8, &last, 8);
        }
    }
    template <std::size_t N>
    void stamp_fixed(std::byte* dst, std::uint64_t w0) const noexcept {
        std::memcpy(dst, &w0, 8);
        if constexpr (N >= 16) {
            const std::uint64_t last = ~w0;
            std::memcpy(dst + N - 8, &last, 8);
        }
    }
    // The sum of a message's words, which verify_fixed compares with expected_sum().
    template <std::size_t N>
    static std::uint64_t word_sum(const std::byte* p) noexcept {
        std::uint64_t sum = 0;
        for (std::size_t i = 0; i < N / 8; ++i) {
            std::uint64_t w;
            std::memcpy(&w, p + i * 8, 8);
            sum += w;
        }
        return sum;
    }
    template <std::size_t N>
    std::uint64_t verify_fixed(const std::byte* p, std::size_t n) const {
        if (n != N) throw std::runtime_error("received " + std::to_string(n) + " bytes, expected " + std::to_string(N));
        std::uint64_t w0 = 0;
        std::memcpy(&w0, p, 8);
        if constexpr (N >= 16) {
            if (word_sum<N>(p) != expected_sum_) throw std::runtime_error("payload checksum mismatch (message word0 " + std::to_string(w0) + ")");
        }
        return w0;
    }
    // Checks length and checksum; returns word 0.
    std::uint64_t verify(const std::byte* p, std::size_t n) const {
        if (n != size_) throw std::runtime_error("received " + std::to_string(n) + " bytes, expected " + std::to_string(size_));
        std::uint64_t w0 = 0;
        std::memcpy(&w0, p, 8);
        if (words_ >= 2) {
            std::uint64_t sum = 0;
            for (std::size_t i = 0; i < words_; ++i) {
                std::uint64_t w;
                std::memcpy(&w, p + i * 8, 8);
                sum += w;
            }
            if (sum != expected_sum_) throw std::runtime_error("payload checksum mismatch (message word0 " + std::to_string(w0) + ")");
        }
        return w0;
    }

private:
    std::size_t size_, words_;
    std::vector<std::uint64_t> source_;
    std::uint64_t expected_sum_ = 0;
};

// ---------------------------------------------------------------------------------------
// Shared state of one measurement (anonymous shared memory, inherited by the children).

struct RunControl {
    std::atomic<int> receivers_ready{0};
    std::atomic<int> receivers_done{0};
    std::atomic<int> ready{0};
    std::atomic<int> go{0};
    std::atomic<int> quit{0};  // the parent gave up: children stop waiting for go
    std::atomic<std::uint64_t> t_start{UINT64_MAX};
    std::atomic<std::uint64_t> t_end{0};
    std::atomic<std::uint64_t> sent[kMaxProducers] = {};
    std::atomic<std::uint64_t> received[kMaxProducers] = {};
    std::atomic<std::uint64_t> seq_sum[kMaxProducers] = {};
    std::atomic<std::uint64_t> round_trips{0}, median_ns{0}, p99_ns{0};
    std::atomic<int> error_taken{0};
    char error[512] = {};

    void fail(const std::string& what) noexcept {
        if (error_taken.exchange(1) == 0) std::snprintf(error, sizeof error, "%s", what.c_str());
    }
};

void atomic_min(std::atomic<std::uint64_t>& a, std::uint64_t v) noexcept {
    auto cur = a.load();
    while (v < cur && !a.compare_exchange_weak(cur, v)) {
    }
}
void atomic_max(std::atomic<std::uint64_t>& a, std::uint64_t v) noexcept {
    auto cur = a.load();
    while (v > cur && !a.compare_exchange_weak(cur, v)) {
    }
}

// Receivers attach first (ZeroMQ's PULL binds, PUSH connects: connecting before the bind
// would cost a reconnect interval inside the measurement); senders wait for that.
bool wait_for_receivers(RunControl& ctl, int receivers) noexcept {
    while (ctl.receivers_ready.load() < receivers) {
        if (ctl.quit.load() != 0) return false;
        timespec nap{0, 20'000};
        ::nanosleep(&nap, nullptr);
    }
    return true;
}

// Senders keep their end open until every receiver is done. With both processes on one
// core a ZeroMQ consumer waited forever for messages its producer had queued before
// closing (default linger); not relying on linger makes every transport end the same way.
void wait_until_receivers_done(RunControl& ctl, int receivers) {
    const std::uint64_t deadline = now_ns() + 20'000'000'000ULL;
    while (ctl.receivers_done.load() < receivers) {
        if (ctl.quit.load() != 0 || ctl.error_taken.load() != 0) return;
        if (now_ns() > deadline) throw std::runtime_error("the receivers did not finish within 20 s of the stop message");
        timespec nap{0, 50'000};
        ::nanosleep(&nap, nullptr);
    }
}

// Child side of the start line: announce, then wait (sleeping: the peer may share the core).
bool ready_and_wait_for_go(RunControl& ctl) noexcept {
    ctl.ready.fetch_add(1);
    while (ctl.go.load(std::memory_order_acquire) == 0) {
        if (ctl.quit.load() != 0) return false;
        timespec nap{0, 20'000};
        ::nanosleep(&nap, nullptr);
    }
    return true;
}

struct Geometry {
    std::size_t size = 8;
    std::size_t capacity = 256 << 10;  // bytes of buffering given to every transport that takes a size
    std::size_t messages_in_flight = 0;  // capacity / (size + 8): for message-counted queues
    int producers = 1, consumers = 1;
};

Geometry geometry_for(std::size_t size) {
    Geometry g;
    g.size = size;
    std::size_t cap = size <= 1024 ? std::size_t{256} << 10 : std::size_t{1} << 20;
    while (cap < 4 * (size + 8)) cap <<= 1;
    g.capacity = cap;
    g.messages_in_flight = std::max<std::size_t>(16, cap / (size + 8));
    return g;
}

struct RunLimits {
    double seconds = 0.2;           // time box per throughput/ping-pong run
    std::uint64_t messages = 0;     // exact count per producer instead (0: time box)
    std::uint64_t max_samples = 1'000'000;
};

// ---------------------------------------------------------------------------------------
// Role drivers, generic over a transport's Tx (send(w0), optional flush()) and Rx
// (recv(fn(ptr, n)); an Rx with a nonzero constant kSize has its payload checked at that size).

template <class Rx>
std::uint64_t verify_for(const PayloadFormat& fmt, const std::byte* p, std::size_t n) {
    if constexpr (requires { Rx::kSize; }) {
        if constexpr (Rx::kSize != 0) return fmt.verify_fixed<Rx::kSize>(p, n);
    }
    return fmt.verify(p, n);
}
template <class Tx>
void flush(Tx& tx) {
    if constexpr (requires { tx.flush(); }) tx.flush();
}

// The timed loops (produce, consume, ping, echo) are functions of their own: how they are
// compiled does not depend on what they would have been inlined into (inlined into the
// measurement lambdas, an unrelated change to consume() once cost the typed 64 B round trip
// 100 ns).
template <class Tx>
[[gnu::noinline]] void produce(Tx& tx, RunControl& ctl, const RunLimits& lim, int producer_id, int stops) {
    const std::uint64_t t0 = now_ns();
    atomic_min(ctl.t_start, t0);
    const std::uint64_t deadline = t0 + static_cast<std::uint64_t>(lim.seconds * 1e9);
    std::uint64_t seq = 0;
    const auto id = static_cast<std::uint64_t>(producer_id);
    if constexpr (requires { tx.send_run(id, seq, std::size_t{1}); }) {
        // A batch transport stamps runs of messages, as a caller of push_n fills an array.
        if (lim.messages != 0) {
            tx.send_run(id, seq, lim.messages);
            seq = lim.messages;
        } else {
            for (;;) {
                tx.send_run(id, seq, 256);
                seq += 256;
                if (now_ns() >= deadline) break;
            }
        }
    } else if (lim.messages != 0) {
        for (; seq < lim.messages; ++seq) tx.send(word0(id, seq));
    } else {
        for (;;) {
            for (int i = 0; i < 256; ++i) tx.send(word0(id, seq++));
            if (now_ns() >= deadline) break;
        }
    }
    ctl.sent[producer_id].store(seq);
    for (int i = 0; i < stops; ++i) tx.send(kStopBit | word0(id, seq));
    flush(tx);
}

// The receiver's checks, message by message: payload (verify_for), producer id, stop
// messages, sequence (strictly consecutive per producer, or increasing), and the counts and
// sequence sums the parent compares with what was sent.
template <class Rx>
struct Checker {
    const PayloadFormat& fmt;
    bool strict;
    std::uint64_t next[kMaxProducers] = {}, count[kMaxProducers] = {}, sum[kMaxProducers] = {};
    int seen_stops = 0;

    void check(const std::byte* p, std::size_t n) {
        const std::uint64_t w0 = verify_for<Rx>(fmt, p, n);
        const auto producer = static_cast<int>((w0 & ~kStopBit) >> kProducerShift);
        const std::uint64_t seq = w0 & kSeqMask;
        if (producer >= kMaxProducers) throw std::runtime_error("bad producer id " + std::to_string(producer));
        if ((w0 & kStopBit) != 0) {
            if (strict && seq != count[producer])
                throw std::runtime_error("stop after " + std::to_string(count[producer]) + " messages, producer sent " + std::to_string(seq));
            ++seen_stops;
            return;
        }
        if (strict ? seq != next[producer] : seq < next[producer])
            throw std::runtime_error("out of order from producer " + std::to_string(producer) + ": expected " +
                                     std::to_string(next[producer]) + ", got " + std::to_string(seq));
        next[producer] = seq + 1;
        ++count[producer];
        sum[producer] += seq;
    }

    // A run of k messages of N bytes each, back to back (a batch row's pop_n). The same checks
    // as check() on every message, in one pass without a branch per message: when the run is
    // exactly the next k sequence numbers of the first message's producer and every checksum
    // holds, it is counted at once; anything else (a stop message, a gap, a bad word) is
    // checked again message by message, which names the fault.
    template <std::size_t N>
    void check_run(const std::byte* base, std::size_t k) {
        static_assert(N % 8 == 0 && N >= 8);
        if (k == 0) return;
        std::uint64_t first = 0;
        std::memcpy(&first, base, 8);
        const auto producer = static_cast<int>((first & ~kStopBit) >> kProducerShift);
        bool clean = strict && (first & kStopBit) == 0 && producer < kMaxProducers;
        if (clean) {
            const std::uint64_t expect0 = word0(static_cast<std::uint64_t>(producer), next[producer]);
            std::uint64_t bad = 0;
            for (std::size_t i = 0; i < k; ++i) {
                const std::byte* m = base + i * N;
                std::uint64_t w0 = 0;
                std::memcpy(&w0, m, 8);
                bad |= w0 ^ (expect0 + i);
                if constexpr (N >= 16) bad |= PayloadFormat::word_sum<N>(m) ^ fmt.expected_sum();
            }
            clean = bad == 0 && ((next[producer] + k - 1) & ~kSeqMask) == 0;
        }
        if (!clean) {
            for (std::size_t i = 0; i < k; ++i) check(base + i * N, N);
            return;
        }
        const std::uint64_t from = next[producer];
        next[producer] = from + k;
        count[producer] += k;
        sum[producer] += k * from + k * (k - 1) / 2;  // from + (from + 1) + ... + (from + k - 1)
    }
};

// Verifies every message; returns when `stops` stop messages arrived. An Rx with
// recv_run(fn(base, k)) hands out whole batches, checked by Checker::check_run.
template <class Rx>
[[gnu::noinline]] void consume(Rx& rx, RunControl& ctl, const PayloadFormat& fmt, int stops, bool strict) {
    Checker<Rx> c{fmt, strict};
    while (c.seen_stops < stops) {
        if constexpr (requires { rx.recv_run([](const std::byte*, std::size_t) {}); }) {
            rx.recv_run([&](const std::byte* base, std::size_t k) { c.template check_run<Rx::kSize>(base, k); });
        } else {
            rx.recv([&](const std::byte* p, std::size_t n) { c.check(p, n); });
        }
    }
    atomic_max(ctl.t_end, now_ns());
    for (int i = 0; i < kMaxProducers; ++i) {
        ctl.received[i].fetch_add(c.count[i]);
        ctl.seq_sum[i].fetch_add(c.sum[i]);
    }
}

template <class Tx, class Rx>
[[gnu::noinline]] void ping(Tx& tx, Rx& rx, RunControl& ctl, const PayloadFormat& fmt, const RunLimits& lim) {
    std::vector<double> samples;
    samples.reserve(1 << 16);
    const std::uint64_t deadline = now_ns() + static_cast<std::uint64_t>(lim.seconds * 1e9);
    const std::uint64_t max_trips = lim.messages != 0 ? lim.messages : lim.max_samples;
    for (std::uint64_t seq = 0; seq < max_trips; ++seq) {
        const std::uint64_t t = now_ns();
        tx.send(word0(0, seq));
        rx.recv([&](const std::byte* p, std::size_t n) {
            const std::uint64_t w0 = verify_for<Rx>(fmt, p, n);
            if (w0 != word0(0, seq)) throw std::runtime_error("echo of " + std::to_string(seq) + " came back as " + std::to_string(w0));
        });
        const std::uint64_t done = now_ns();
        samples.push_back(static_cast<double>(done - t));
        if (done >= deadline) break;
    }
    tx.send(kStopBit);
    flush(tx);
    // Drop the warm-up (first 100 trips or 10%).
    const std::size_t skip = std::min<std::size_t>(100, samples.size() / 10);
    samples.erase(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(skip));
    ctl.round_trips.store(samples.size());
    ctl.median_ns.store(static_cast<std::uint64_t>(bench::median(samples)));
    ctl.p99_ns.store(static_cast<std::uint64_t>(bench::percentile(samples, 99.0)));
}

template <class Tx, class Rx>
[[gnu::noinline]] void echo(Rx& rx, Tx& tx, const PayloadFormat& fmt) {
    std::uint64_t expected = 0;
    for (;;) {
        std::uint64_t w0 = 0;
        rx.recv([&](const std::byte* p, std::size_t n) { w0 = verify_for<Rx>(fmt, p, n); });
        if ((w0 & kStopBit) != 0) return;
        if (w0 != expected) throw std::runtime_error("ping " + std::to_string(w0) + ", expected " + std::to_string(expected));
        ++expected;
        tx.send(w0);
    }
}

// ---------------------------------------------------------------------------------------
// Transports. Each Kind has a parent-side Channel (create/destroy) and child-side Tx/Rx.

struct Buffer {  // an 8-aligned message buffer, prepared with the pattern once
    explicit Buffer(const PayloadFormat& f) : words((f.size() + 7) / 8), fmt(&f) { f.fill(data(), 0); }
    std::byte* data() noexcept { return reinterpret_cast<std::byte*>(words.data()); }
    std::vector<std::uint64_t> words;
    const PayloadFormat* fmt;
};

// The reference ring. N: the payload size, written and checked at compile time (ref); 0:
// at run time, with a loop over the message's words (ref-rt, the reference of earlier runs).
// CopyOut: the consumer copies the message out and releases the slot before checking the
// copy (ref-copy, the peer of a copying pop); else it checks the slot in place. How: lines
// of its own per slot, or slots packed as a typed queue's (ref-dense). Every variant has
// as many slots as fit the capacity at the packed stride.
template <std::size_t N, bool CopyOut = false, bench::RefStride How = bench::RefStride::line>
struct RefKind {
    static_assert(!CopyOut || N != 0, "ref-copy has a compile-time size");
    struct Channel {
        NameGuard name;
    };
    static Channel create(const Geometry& g) {
        Channel c{NameGuard("shmpipe-bench.ref." + unique_suffix(), false)};
        std::size_t stride = (g.size + 7) / 8 * 8, slots = 1;
        while (slots * 2 * stride <= g.capacity) slots *= 2;
        bench::RefRingSegment::create(c.name.name(), g.size, slots, How);
        return c;
    }
    struct Tx {
        Tx(const Channel& c, const Geometry&, const PayloadFormat& f) : seg(bench::RefRingSegment::open(c.name.name())), p(seg), fmt(f) {}
        void send(std::uint64_t w0) {
            std::byte* s;
            while ((s = p.try_reserve()) == nullptr) bench::cpu_relax();
            if constexpr (N == 0) {
                fmt.fill(s, w0);
            } else {
                fmt.fill_fixed<N>(s, w0);
            }
            p.commit();
        }
        bench::RefRingSegment seg;
        bench::RefRingProducer p;
        const PayloadFormat& fmt;
    };
    struct Rx {
        static constexpr std::size_t kSize = N;
        Rx(const Channel& c, const Geometry& g, const PayloadFormat&) : seg(bench::RefRingSegment::open(c.name.name())), r(seg), size(g.size) {}
        template <class F>
        void recv(F&& f) {
            const std::byte* s;
            while ((s = r.try_peek()) == nullptr) bench::cpu_relax();
            if constexpr (CopyOut) {
                shmpipe::detail::copy_fixed<N>(copy.bytes, s);  // as a typed pop copies out
                r.release();
                f(copy.bytes, N);
            } else {
                f(s, N == 0 ? size : N);
                r.release();
            }
        }
        bench::RefRingSegment seg;
        bench::RefRingConsumer r;
        std::size_t size;
        struct alignas(8) Copy {
            std::byte bytes[CopyOut ? N : 1];
        } copy;
    };
};

// shmpipe queues.
template <std::size_t N>
struct Payload {
    alignas(8) std::byte bytes[N];
};

enum class ShmMode { spin, block, zero_copy };

struct ShmChannel {
    NameGuard name;
    std::optional<shmpipe::Queue> owner;
};
// Typed: Queue::create<T> for the payload type (SPSC: fixed slots); the endpoints, the same
// Producer<T>/Consumer<T> as untyped, take the typed path by themselves.
template <class T>
ShmChannel create_shm_channel(const Geometry& g, bool mpmc, bool typed) {
    ShmChannel c{NameGuard("shmpipe.bench." + unique_suffix(), false), std::nullopt};
    shmpipe::QueueOptions opt;
    opt.capacity = g.capacity;
    opt.max_message = g.size;
    opt.producers = mpmc ? shmpipe::Endpoints::many : shmpipe::Endpoints::one;
    opt.consumers = mpmc ? shmpipe::Endpoints::many : shmpipe::Endpoints::one;
    const std::string name = c.name.name().substr(shmpipe::kSegmentPrefix.size());
    c.owner.emplace(typed ? shmpipe::Queue::create<T>(name, opt) : shmpipe::Queue::create(name, opt));
    return c;
}
std::string queue_name(const ShmChannel& c) { return c.name.name().substr(shmpipe::kSegmentPrefix.size()); }

template <std::size_t N, ShmMode Mode, bool Mpmc, bool Typed = false>
struct ShmKind {
    using Channel = ShmChannel;
    static Channel create(const Geometry& g) { return create_shm_channel<Payload<N>>(g, Mpmc, Typed); }

    struct Tx {
        Tx(const Channel& c, const Geometry&, const PayloadFormat& f) : p(queue_name(c)), fmt(f) { fmt.fill(buf.bytes, 0); }
        void send(std::uint64_t w0) {
            fmt.stamp_fixed<N>(buf.bytes, w0);
            if constexpr (Mode == ShmMode::spin) {
                while (!p.try_push(buf)) bench::cpu_relax();
            } else {
                p.push(buf);
            }
        }
        shmpipe::Producer<Payload<N>> p;
        const PayloadFormat& fmt;
        Payload<N> buf;
    };
    struct Rx {
        static constexpr std::size_t kSize = N;
        Rx(const Channel& c, const Geometry&, const PayloadFormat&) : r(queue_name(c)) {}
        template <class F>
        void recv(F&& f) {
            if constexpr (Mode == ShmMode::spin) {
                for (;;) {
                    if (auto m = r.try_pop()) {
                        f(m->bytes, N);
                        return;
                    }
                    bench::cpu_relax();
                }
            } else {
                auto m = r.pop();
                if (!m) throw std::runtime_error("unexpected end of stream");
                f(m->bytes, N);
            }
        }
        shmpipe::Consumer<Payload<N>> r;
    };
};

// shmpipe SPSC batch calls: the producer collects kBatch messages and sends them with one
// push_n; the consumer takes up to kBatch with one pop_n and hands them out one by one.
template <std::size_t N, bool Typed = false>
struct ShmBatchKind {
    static constexpr std::size_t kBatch = 128;
    using Channel = ShmChannel;
    static Channel create(const Geometry& g) { return create_shm_channel<Payload<N>>(g, false, Typed); }
    struct Tx {
        Tx(const Channel& c, const Geometry&, const PayloadFormat& f) : p(queue_name(c)), fmt(f), buf(kBatch) {
            for (auto& b : buf) fmt.fill(b.bytes, 0);
        }
        void send(std::uint64_t w0) {
            fmt.stamp_fixed<N>(buf[used].bytes, w0);
            if (++used == kBatch) flush();
        }
        // Messages seq, seq + 1, ... seq + k - 1 of producer `id`, stamped in one loop per
        // batch (the count in a register, not reloaded after every byte store into buf).
        void send_run(std::uint64_t id, std::uint64_t seq, std::uint64_t k) {
            while (k > 0) {
                const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(k, kBatch - used));
                Payload<N>* b = buf.data() + used;
                for (std::size_t i = 0; i < n; ++i) fmt.stamp_fixed<N>(b[i].bytes, word0(id, seq + i));
                used += n;
                seq += n;
                k -= n;
                if (used == kBatch) flush();
            }
        }
        void flush() {
            p.push_n(std::span<const Payload<N>>(buf.data(), used));
            used = 0;
        }
        shmpipe::Producer<Payload<N>> p;
        const PayloadFormat& fmt;
        std::vector<Payload<N>> buf;
        std::size_t used = 0;
    };
    struct Rx {
        static constexpr std::size_t kSize = N;
        Rx(const Channel& c, const Geometry&, const PayloadFormat&) : r(queue_name(c)), buf(kBatch) {}
        template <class F>
        void recv(F&& f) {
            if (next == have) {
                have = r.pop_n(buf);
                next = 0;
                if (have == 0) throw std::runtime_error("unexpected end of stream");
            }
            f(buf[next++].bytes, N);
        }
        // The whole batch at once (consume() checks it in one pass; recv() is ping/echo's).
        template <class F>
        void recv_run(F&& f) {
            static_assert(sizeof(Payload<N>) == N);
            const std::size_t k = r.pop_n(buf);
            if (k == 0) throw std::runtime_error("unexpected end of stream");
            f(buf[0].bytes, k);
        }
        shmpipe::Consumer<Payload<N>> r;
        std::vector<Payload<N>> buf;
        std::size_t next = 0, have = 0;
    };
};

// Zero copy on a typed queue: the message is written into its slot and checked there, with
// the size known at compile time, as the reference ring does.
template <std::size_t N>
struct TypedZeroCopyKind {
    using Channel = ShmChannel;
    static Channel create(const Geometry& g) { return create_shm_channel<Payload<N>>(g, false, true); }
    struct Tx {
        Tx(const Channel& c, const Geometry&, const PayloadFormat& f) : p(queue_name(c)), fmt(f) {}
        void send(std::uint64_t w0) {
            for (;;) {
                if (auto s = p.try_reserve(N)) {
                    fmt.fill_fixed<N>(s->span().data(), w0);
                    s->commit();
                    return;
                }
                bench::cpu_relax();
            }
        }
        shmpipe::Producer<Payload<N>> p;
        const PayloadFormat& fmt;
    };
    struct Rx {
        static constexpr std::size_t kSize = N;
        Rx(const Channel& c, const Geometry&, const PayloadFormat&) : r(queue_name(c)) {}
        template <class F>
        void recv(F&& f) {
            for (;;) {
                if (auto s = r.try_peek()) {
                    f(s->span().data(), N);
                    return;  // the slot is released here
                }
                bench::cpu_relax();
            }
        }
        shmpipe::Consumer<Payload<N>> r;
    };
};

template <bool Mpmc>
struct ShmZeroCopyKind {
    using Channel = ShmChannel;
    static Channel create(const Geometry& g) { return create_shm_channel<Payload<8>>(g, Mpmc, false); }
    struct Tx {
        Tx(const Channel& c, const Geometry&, const PayloadFormat& f) : p(queue_name(c)), fmt(f) {}
        void send(std::uint64_t w0) {
            for (;;) {
                if (auto s = p.try_reserve(fmt.size())) {
                    fmt.fill(s->span().data(), w0);
                    s->commit();
                    return;
                }
                bench::cpu_relax();
            }
        }
        shmpipe::Producer<> p;
        const PayloadFormat& fmt;
    };
    struct Rx {
        Rx(const Channel& c, const Geometry&, const PayloadFormat&) : r(queue_name(c)) {}
        template <class F>
        void recv(F&& f) {
            for (;;) {
                if (auto s = r.try_peek()) {
                    f(s->span().data(), s->span().size());
                    return;  // the slot is released here
                }
                bench::cpu_relax();
            }
        }
        shmpipe::Consumer<> r;
    };
};

// pipe(2): whole messages, read until complete. The pipe buffer is sized like the rings.
bool write_all(int fd, const std::byte* p, std::size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}
bool read_all(int fd, std::byte* p, std::size_t n) {
    while (n > 0) {
        const ssize_t r = ::read(fd, p, n);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            return false;
        }
        p += r;
        n -= static_cast<std::size_t>(r);
    }
    return true;
}

struct Fds {
    int fd[2] = {-1, -1};
    Fds() = default;
    Fds(Fds&& o) noexcept : fd{std::exchange(o.fd[0], -1), std::exchange(o.fd[1], -1)} {}
    Fds& operator=(Fds&&) = delete;
    ~Fds() {
        for (int f : fd)
            if (f >= 0) ::close(f);
    }
};

struct PipeKind {
    struct Channel {
        Fds fds;
    };
    static Channel create(const Geometry& g) {
        Channel c;
        if (::pipe2(c.fds.fd, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        ::fcntl(c.fds.fd[1], F_SETPIPE_SZ, static_cast<int>(std::min<std::size_t>(g.capacity, 1 << 20)));
        return c;
    }
    struct Tx {
        Tx(const Channel& c, const Geometry&, const PayloadFormat& f) : fd(c.fds.fd[1]), buf(f) {}
        void send(std::uint64_t w0) {
            buf.fmt->stamp(buf.data(), w0);
            if (!write_all(fd, buf.data(), buf.fmt->size())) throw std::runtime_error("pipe write failed");
        }
        int fd;
        Buffer buf;
    };
    struct Rx {
        Rx(const Channel& c, const Geometry&, const PayloadFormat& f) : fd(c.fds.fd[0]), buf(f) {}
        template <class F>
        void recv(F&& f) {
            if (!read_all(fd, buf.data(), buf.fmt->size())) throw std::runtime_error("pipe read failed");
            f(buf.data(), buf.fmt->size());
        }
        int fd;
        Buffer buf;
    };
};

struct SocketpairKind {
    struct Channel {
        Fds fds;
    };
    static Channel create(const Geometry& g) {
        Channel c;
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, c.fds.fd) != 0) throw std::runtime_error("socketpair failed");
        const int buf = static_cast<int>(g.capacity);
        ::setsockopt(c.fds.fd[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
        ::setsockopt(c.fds.fd[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
        return c;
    }
    struct Tx {
        Tx(const Channel& c, const Geometry&, const PayloadFormat& f) : fd(c.fds.fd[0]), buf(f) {}
        void send(std::uint64_t w0) {
            buf.fmt->stamp(buf.data(), w0);
            ssize_t w;
            do {
                w = ::send(fd, buf.data(), buf.fmt->size(), 0);
            } while (w < 0 && errno == EINTR);
            if (w != static_cast<ssize_t>(buf.fmt->size())) throw std::runtime_error("socketpair send failed");
        }
        int fd;
        Buffer buf;
    };
    struct Rx {
        Rx(const Channel& c, const Geometry&, const PayloadFormat& f) : fd(c.fds.fd[1]), buf(f) {}
        template <class F>
        void recv(F&& f) {
            ssize_t r;
            do {
                r = ::recv(fd, buf.data(), buf.fmt->size(), 0);
            } while (r < 0 && errno == EINTR);
            if (r <= 0) throw std::runtime_error("socketpair recv failed");
            f(buf.data(), static_cast<std::size_t>(r));
        }
        int fd;
        Buffer buf;
    };
};

namespace bip = boost::interprocess;

struct BoostMqKind {
    struct Channel {
        NameGuard name;
    };
    static Channel create(const Geometry& g) {
        Channel c{NameGuard("shmpipe-bench.mq." + unique_suffix(), false)};
        bip::message_queue mq(bip::create_only, c.name.name().c_str(), g.messages_in_flight, g.size);
        return c;
    }
    struct Tx {
        Tx(const Channel& c, const Geometry&, const PayloadFormat& f) : mq(bip::open_only, c.name.name().c_str()), buf(f) {}
        void send(std::uint64_t w0) {
            buf.fmt->stamp(buf.data(), w0);
            mq.send(buf.data(), buf.fmt->size(), 0);
        }
        bip::message_queue mq;
        Buffer buf;
    };
    struct Rx {
        Rx(const Channel& c, const Geometry&, const PayloadFormat& f) : mq(bip::open_only, c.name.name().c_str()), buf(f) {}
        template <class F>
        void recv(F&& f) {
            bip::message_queue::size_type got = 0;
            unsigned prio = 0;
            mq.receive(buf.data(), buf.fmt->size(), got, prio);
            f(buf.data(), static_cast<std::size_t>(got));
        }
        bip::message_queue mq;
        Buffer buf;
    };
};

struct ZmqKind {
    struct Channel {
        NameGuard path;
    };
    static Channel create(const Geometry&) { return Channel{NameGuard("/tmp/shmpipe-bench." + unique_suffix() + ".ipc", true)}; }
    // The context is made in the (pinned) child, so its I/O thread shares that core.
    struct Tx {
        Tx(const Channel& c, const Geometry&, const PayloadFormat& f) : sock(ctx, zmq::socket_type::push), buf(f) {
            sock.connect("ipc://" + c.path.name());
        }
        void send(std::uint64_t w0) {
            buf.fmt->stamp(buf.data(), w0);
            sock.send(zmq::const_buffer(buf.data(), buf.fmt->size()), zmq::send_flags::none);
        }
        zmq::context_t ctx{1};
        zmq::socket_t sock;
        Buffer buf;
    };
    struct Rx {
        Rx(const Channel& c, const Geometry&, const PayloadFormat& f) : sock(ctx, zmq::socket_type::pull), buf(f) {
            sock.bind("ipc://" + c.path.name());
        }
        template <class F>
        void recv(F&& f) {
            const auto r = sock.recv(zmq::mutable_buffer(buf.data(), buf.fmt->size()), zmq::recv_flags::none);
            if (!r || r->truncated()) throw std::runtime_error("zmq recv failed or truncated");
            f(buf.data(), r->size);
        }
        zmq::context_t ctx{1};
        zmq::socket_t sock;
        Buffer buf;
    };
};

// ---------------------------------------------------------------------------------------
// Running one measurement.

enum class Test { throughput, pingpong };

struct Measurement {
    bool ok = false;
    std::string error;
    double msgs_per_s = 0, median_ns = 0, p99_ns = 0;
    double involuntary_switches = -1;  // summed over the children; -1: not known (Python)
};

struct Cpus {
    int producer = 0, consumer = 1;
};

constexpr std::uint64_t kSafetyNs = 30'000'000'000ULL;  // a run that takes this long has hung

// Forks the children that fn_for(child index) returns bodies for, starts them together,
// waits, and turns the shared results into a Measurement.
Measurement run_children(RunControl& ctl, const std::vector<std::pair<int, std::function<void()>>>& children,
                         const RunLimits& lim) {
    std::vector<pid_t> pids;
    Measurement m;
    for (std::size_t i = 0; i < children.size(); ++i) {
        const auto& body = children[i].second;
        const pid_t pid = bench::fork_child(children[i].first, [&ctl, &body]() -> int {
            try {
                body();
                return 0;
            } catch (const std::exception& e) {
                ctl.fail(e.what());
            } catch (...) {
                ctl.fail("unknown exception");
            }
            return 1;
        });
        pids.push_back(pid);
        g_children[i].store(pid);
    }
    const std::uint64_t deadline = now_ns() + kSafetyNs + static_cast<std::uint64_t>(lim.seconds * 1e9);
    const std::uint64_t ready_deadline = now_ns() + 10'000'000'000ULL;
    while (ctl.ready.load() < static_cast<int>(children.size()) && ctl.error_taken.load() == 0 && now_ns() < ready_deadline) {
        timespec nap{0, 200'000};
        ::nanosleep(&nap, nullptr);
    }
    if (ctl.ready.load() == static_cast<int>(children.size())) {
        ctl.go.store(1, std::memory_order_release);
    } else {
        ctl.quit.store(1);
        if (ctl.error_taken.load() == 0) ctl.fail("children did not get ready within 10 s");
    }
    std::string why;
    bench::ChildUsage usage;
    const bool exited_ok = bench::wait_children(pids, deadline, why, &usage);
    m.involuntary_switches = static_cast<double>(usage.involuntary_switches);
    for (auto& c : g_children) c.store(0);
    if (ctl.error_taken.load() != 0) {
        m.error = ctl.error;
    } else if (!exited_ok) {
        m.error = why;
    } else {
        m.ok = true;
    }
    return m;
}

template <class Kind>
Measurement measure(Test test, const Geometry& g, const RunLimits& lim, Cpus cpus, int np, int nc) {
    PayloadFormat fmt(g.size);
    bench::SharedBlock<RunControl> ctl;
    if (test == Test::throughput) {
        auto ch = Kind::create(g);
        std::vector<std::pair<int, std::function<void()>>> kids;
        // With several producers they share the producer CPU; consumers likewise.
        for (int p = 0; p < np; ++p)
            kids.emplace_back(cpus.producer, [&, p] {
                if (!wait_for_receivers(*ctl, nc)) return;
                typename Kind::Tx tx(ch, g, fmt);
                if (!ready_and_wait_for_go(*ctl)) return;
                produce(tx, *ctl, lim, p, nc);
                wait_until_receivers_done(*ctl, nc);
            });
        for (int c = 0; c < nc; ++c)
            kids.emplace_back(cpus.consumer, [&] {
                typename Kind::Rx rx(ch, g, fmt);
                ctl->receivers_ready.fetch_add(1);
                if (!ready_and_wait_for_go(*ctl)) return;
                consume(rx, *ctl, fmt, np, nc == 1);
                ctl->receivers_done.fetch_add(1);
            });
        Measurement m = run_children(*ctl, kids, lim);
        if (!m.ok) return m;
        std::uint64_t total = 0;
        for (int p = 0; p < np; ++p) {
            const std::uint64_t n = ctl->sent[p].load();
            total += n;
            if (ctl->received[p].load() != n || ctl->seq_sum[p].load() != (n == 0 ? 0 : n * (n - 1) / 2)) {
                m.ok = false;
                m.error = "producer " + std::to_string(p) + " sent " + std::to_string(n) + ", received " +
                          std::to_string(ctl->received[p].load()) + " (or sequence sum mismatch)";
                return m;
            }
        }
        const double secs = static_cast<double>(ctl->t_end.load() - ctl->t_start.load()) / 1e9;
        m.msgs_per_s = secs > 0 ? static_cast<double>(total) / secs : 0;
        return m;
    }
    auto there = Kind::create(g);
    auto back = Kind::create(g);
    std::vector<std::pair<int, std::function<void()>>> kids;
    kids.emplace_back(cpus.producer, [&] {
        typename Kind::Rx rx(back, g, fmt);
        ctl->receivers_ready.fetch_add(1);
        if (!wait_for_receivers(*ctl, 2)) return;
        typename Kind::Tx tx(there, g, fmt);
        if (!ready_and_wait_for_go(*ctl)) return;
        ping(tx, rx, *ctl, fmt, lim);
        wait_until_receivers_done(*ctl, 1);
    });
    kids.emplace_back(cpus.consumer, [&] {
        typename Kind::Rx rx(there, g, fmt);
        ctl->receivers_ready.fetch_add(1);
        if (!wait_for_receivers(*ctl, 2)) return;
        typename Kind::Tx tx(back, g, fmt);
        if (!ready_and_wait_for_go(*ctl)) return;
        echo(rx, tx, fmt);
        ctl->receivers_done.fetch_add(1);
    });
    Measurement m = run_children(*ctl, kids, lim);
    if (m.ok) {
        m.median_ns = static_cast<double>(ctl->median_ns.load());
        m.p99_ns = static_cast<double>(ctl->p99_ns.load());
        if (ctl->round_trips.load() == 0) {
            m.ok = false;
            m.error = "no round trip completed";
        }
    }
    return m;
}

// Python multiprocessing.Queue, through the helper script.
struct PythonConfig {
    std::string python = "/usr/bin/python3";
    std::string script = SHMPIPE_BENCH_MP_SCRIPT;
};

Measurement measure_python(const PythonConfig& py, Test test, const Geometry& g, const RunLimits& lim, Cpus cpus) {
    Measurement m;
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.3f", std::max(lim.seconds, 0.2));  // Python needs longer to settle
    std::vector<std::string> args = {py.python, py.script, test == Test::throughput ? "throughput" : "pingpong",
                                     std::to_string(g.size), secs, std::to_string(lim.messages),
                                     std::to_string(cpus.producer), std::to_string(cpus.consumer)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);  // its own group: a timeout kills it and its child
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, py.python.c_str(), &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    ::close(out[1]);
    if (rc != 0) {
        ::close(out[0]);
        m.error = "cannot run " + py.python + ": " + std::strerror(rc);
        return m;
    }
    g_children[0].store(-pid);  // kill(-pgid) from the signal handler
    std::string text;
    const std::uint64_t deadline = now_ns() + kSafetyNs + static_cast<std::uint64_t>(lim.seconds * 1e9);
    bool timed_out = false;
    for (;;) {
        const std::uint64_t now = now_ns();
        if (now >= deadline) {
            timed_out = true;
            break;
        }
        pollfd pfd{out[0], POLLIN, 0};
        const int pr = ::poll(&pfd, 1, static_cast<int>(std::min<std::uint64_t>((deadline - now) / 1'000'000 + 1, 1000)));
        if (pr <= 0) continue;
        char buf[512];
        const ssize_t r = ::read(out[0], buf, sizeof buf);
        if (r <= 0) break;
        text.append(buf, static_cast<std::size_t>(r));
    }
    ::close(out[0]);
    if (timed_out) ::kill(-pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::kill(-pid, SIGKILL);  // its multiprocessing child, should it linger
    g_children[0].store(0);
    const auto at = text.rfind("result ");
    auto field = [&](const char* key) -> std::optional<double> {
        const std::string k = std::string(" ") + key + "=";
        const auto p = text.find(k, at);
        if (at == std::string::npos || p == std::string::npos) return std::nullopt;
        return std::strtod(text.c_str() + p + k.size(), nullptr);
    };
    if (timed_out) {
        m.error = "python helper timed out";
    } else if (at == std::string::npos || field("ok").value_or(0) != 1) {
        const auto e = text.find("error=", at == std::string::npos ? 0 : at);
        m.error = "python helper failed: " + (e == std::string::npos ? text : text.substr(e + 6));
        while (!m.error.empty() && m.error.back() == '\n') m.error.pop_back();
    } else if (test == Test::throughput) {
        const double n = field("messages").value_or(0), s = field("seconds").value_or(0);
        m.ok = n > 0 && s > 0;
        m.msgs_per_s = m.ok ? n / s : 0;
        if (!m.ok) m.error = "python helper reported nothing";
    } else {
        m.median_ns = field("median_ns").value_or(0);
        m.p99_ns = field("p99_ns").value_or(0);
        m.ok = m.median_ns > 0;
        if (!m.ok) m.error = "python helper reported nothing";
    }
    return m;
}

// ---------------------------------------------------------------------------------------
// The transports table.

template <class Fn>
Measurement with_size(std::size_t size, Fn&& fn) {
    switch (size) {
        case 8: return fn.template operator()<8>();
        case 16: return fn.template operator()<16>();
        case 32: return fn.template operator()<32>();
        case 64: return fn.template operator()<64>();
        case 128: return fn.template operator()<128>();
        case 256: return fn.template operator()<256>();
        case 512: return fn.template operator()<512>();
        case 1024: return fn.template operator()<1024>();
        case 4096: return fn.template operator()<4096>();
        case 16384: return fn.template operator()<16384>();
        case 65536: return fn.template operator()<65536>();
        default: break;
    }
    Measurement m;
    m.error = "shmpipe typed payloads exist for sizes 8..1024 (powers of two), 4096, 16384, 65536";
    return m;
}
constexpr std::array kSupportedSizes = {8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536};

struct Context {
    RunLimits lim;
    Cpus cpus;
    PythonConfig py;
};

struct Transport {
    std::string id;
    std::string description;
    bool shmpipe;      // ours (rows of the ratio tables)
    bool blocking;     // usable with --one-core
    bool pingpong;     // has a ping-pong test
    std::size_t min_size;
    std::function<Measurement(const Context&, Test, const Geometry&)> run;
};

template <template <std::size_t> class K>
Measurement run_sized(const Context& cx, Test t, const Geometry& g, int np = 1, int nc = 1) {
    return with_size(g.size, [&]<std::size_t N>() { return measure<K<N>>(t, g, cx.lim, cx.cpus, np, nc); });
}
template <std::size_t N> using RefCopy = RefKind<N, true>;
template <std::size_t N> using RefDense = RefKind<N, false, bench::RefStride::packed>;
template <std::size_t N> using SpscSpin = ShmKind<N, ShmMode::spin, false>;
template <std::size_t N> using SpscBlock = ShmKind<N, ShmMode::block, false>;
template <std::size_t N> using TypedSpin = ShmKind<N, ShmMode::spin, false, true>;
template <std::size_t N> using TypedBlock = ShmKind<N, ShmMode::block, false, true>;
template <std::size_t N> using TypedBatch = ShmBatchKind<N, true>;
template <std::size_t N> using MpmcSpin = ShmKind<N, ShmMode::spin, true>;
template <std::size_t N> using MpmcBlock = ShmKind<N, ShmMode::block, true>;

std::vector<Transport> all_transports() {
    std::vector<Transport> t;
    t.push_back({"ref", "reference ring (fixed slots, busy poll)", false, false, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<RefKind>(cx, ts, g); }});
    t.push_back({"ref-rt", "reference ring, run-time-sized payload loop", false, false, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return measure<RefKind<0>>(ts, g, cx.lim, cx.cpus, 1, 1); }});
    t.push_back({"ref-copy", "reference ring, consumer copies out", false, false, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<RefCopy>(cx, ts, g); }});
    t.push_back({"ref-dense", "reference ring, slots packed as typed", false, false, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<RefDense>(cx, ts, g); }});
    t.push_back({"spsc-spin", "shmpipe SPSC try_push/try_pop", true, false, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<SpscSpin>(cx, ts, g); }});
    t.push_back({"spsc-block", "shmpipe SPSC push/pop", true, true, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<SpscBlock>(cx, ts, g); }});
    t.push_back({"spsc-batch", "shmpipe SPSC push_n/pop_n (128)", true, false, false, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<ShmBatchKind>(cx, ts, g); }});
    t.push_back({"typed-spin", "shmpipe typed SPSC try_push/try_pop", true, false, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<TypedSpin>(cx, ts, g); }});
    t.push_back({"typed-block", "shmpipe typed SPSC push/pop", true, true, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<TypedBlock>(cx, ts, g); }});
    t.push_back({"typed-batch", "shmpipe typed SPSC push_n/pop_n (128)", true, false, false, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<TypedBatch>(cx, ts, g); }});
    t.push_back({"spsc-zc", "shmpipe SPSC try_reserve/try_peek", true, false, true, 4096,
                 [](const Context& cx, Test ts, const Geometry& g) {
                     return measure<ShmZeroCopyKind<false>>(ts, g, cx.lim, cx.cpus, 1, 1);
                 }});
    t.push_back({"typed-zc", "shmpipe typed SPSC try_reserve/try_peek", true, false, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<TypedZeroCopyKind>(cx, ts, g); }});
    t.push_back({"mpmc-spin", "shmpipe MPMC 1->1 try_push/try_pop", true, false, false, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<MpmcSpin>(cx, ts, g); }});
    t.push_back({"mpmc-block", "shmpipe MPMC 1->1 push/pop", true, true, false, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<MpmcBlock>(cx, ts, g); }});
    t.push_back({"mpmc-1to2", "shmpipe MPMC 1->2 push/pop", true, true, false, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<MpmcBlock>(cx, ts, g, 1, 2); }});
    t.push_back({"mpmc-2to1", "shmpipe MPMC 2->1 push/pop", true, true, false, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return run_sized<MpmcBlock>(cx, ts, g, 2, 1); }});
    t.push_back({"pipe", "pipe(2)", false, true, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return measure<PipeKind>(ts, g, cx.lim, cx.cpus, 1, 1); }});
    t.push_back({"socketpair", "AF_UNIX SOCK_SEQPACKET socketpair", false, true, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return measure<SocketpairKind>(ts, g, cx.lim, cx.cpus, 1, 1); }});
    t.push_back({"boost-mq", "Boost.Interprocess message_queue", false, true, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return measure<BoostMqKind>(ts, g, cx.lim, cx.cpus, 1, 1); }});
    t.push_back({"zmq", "ZeroMQ ipc:// PUSH/PULL", false, true, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return measure<ZmqKind>(ts, g, cx.lim, cx.cpus, 1, 1); }});
    t.push_back({"python-mp", "Python multiprocessing.Queue", false, true, true, 8,
                 [](const Context& cx, Test ts, const Geometry& g) { return measure_python(cx.py, ts, g, cx.lim, cx.cpus); }});
    return t;
}

// ---------------------------------------------------------------------------------------
// Options, rounds, reporting.

struct Options {
    std::vector<std::size_t> sizes = {8, 64, 1024, 65536};
    int rounds = 5;
    RunLimits lim;
    bool one_core = false;
    bool json = false;
    bool quick = false;
    bool no_pingpong = false;
    Cpus cpus;
    std::vector<std::string> only;
    PythonConfig py;
};

[[noreturn]] void usage(int code) {
    std::fprintf(code == 0 ? stdout : stderr,
                 "usage: queue_bench [options]\n"
                 "  --sizes LIST       message sizes, e.g. 8,64,1k,64k (default 8,64,1k,64k)\n"
                 "  --rounds N         rounds, interleaved; medians are reported (default 5)\n"
                 "  --seconds S        time box of each run (default 0.2)\n"
                 "  --messages N       send exactly N messages per producer instead of a time box\n"
                 "  --quick            bounded run (~60 s): 5 rounds of 0.04 s runs\n"
                 "  --one-core         pin every process to CPU 0; only transports that block\n"
                 "  --cpus A,B         producer and consumer CPUs (default 0,1)\n"
                 "  --only LIST        transport ids (ref,ref-rt,ref-copy,ref-dense,spsc-spin,spsc-block,spsc-batch,typed-spin,typed-block,\n"
                 "                     typed-batch,typed-zc,spsc-zc,mpmc-spin,mpmc-block,mpmc-1to2,mpmc-2to1,pipe,socketpair,\n"
                 "                     boost-mq,zmq,python-mp)\n"
                 "  --no-pingpong      throughput only\n"
                 "  --python PATH      interpreter for the multiprocessing peer (default /usr/bin/python3)\n"
                 "  --python-script P  the helper (default: bench/queue_bench_mp.py of the source tree)\n"
                 "  --json             machine-readable output (one JSON object) instead of tables\n");
    std::exit(code);
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ','))
        if (!item.empty()) out.push_back(item);
    return out;
}

std::size_t parse_size(const std::string& s) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    std::size_t mult = 1;
    if (*end == 'k' || *end == 'K') mult = 1024, ++end;
    if (*end != 0 || v == 0) throw std::invalid_argument("bad size: " + s);
    return static_cast<std::size_t>(v) * mult;
}

Options parse(int argc, char** argv) {
    Options o;
    bool seconds_given = false;
    bool rounds_given = false;
    auto value = [&](int& i) -> std::string {
        if (i + 1 >= argc) {
            std::fprintf(stderr, "queue_bench: error: %s needs a value\n", argv[i]);
            usage(2);
        }
        return argv[++i];
    };
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            if (a == "--help" || a == "-h") usage(0);
            else if (a == "--sizes") {
                o.sizes.clear();
                for (auto& s : split(value(i))) o.sizes.push_back(parse_size(s));
            } else if (a == "--rounds") o.rounds = std::stoi(value(i)), rounds_given = true;
            else if (a == "--seconds") o.lim.seconds = std::stod(value(i)), seconds_given = true;
            else if (a == "--messages") o.lim.messages = std::stoull(value(i));
            else if (a == "--quick") o.quick = true;
            else if (a == "--one-core") o.one_core = true;
            else if (a == "--json") o.json = true;
            else if (a == "--no-pingpong") o.no_pingpong = true;
            else if (a == "--cpus") {
                const auto c = split(value(i));
                if (c.size() != 2) throw std::invalid_argument("--cpus takes two CPUs: A,B");
                o.cpus = {std::stoi(c[0]), std::stoi(c[1])};
            } else if (a == "--only") o.only = split(value(i));
            else if (a == "--python") o.py.python = value(i);
            else if (a == "--python-script") o.py.script = value(i);
            else {
                std::fprintf(stderr, "queue_bench: error: unknown option %s\n", a.c_str());
                usage(2);
            }
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "queue_bench: error: %s\n", e.what());
        usage(2);
    }
    if (o.quick) {
        if (!seconds_given) o.lim.seconds = 0.04;
        if (!rounds_given) o.rounds = 5;
    }
    if (o.rounds < 1 || o.lim.seconds <= 0) {
        std::fprintf(stderr, "queue_bench: error: --rounds and --seconds must be positive\n");
        usage(2);
    }
    for (std::size_t s : o.sizes) {
        if (std::find(kSupportedSizes.begin(), kSupportedSizes.end(), static_cast<int>(s)) == kSupportedSizes.end()) {
            std::fprintf(stderr, "queue_bench: error: size %zu: supported sizes are 8..1024 (powers of two), 4k, 16k, 64k\n", s);
            std::exit(2);
        }
    }
    if (o.one_core) o.cpus = {0, 0};
    return o;
}

struct Cell {  // one (transport, size, test) across rounds
    std::vector<double> values;  // msgs/s, or median ns
    std::vector<double> p99;
    std::vector<double> preempted;  // involuntary context switches per run
    std::vector<std::string> errors;
    double med() const { return bench::median(values); }
    double med_p99() const { return bench::median(p99); }
    bool has() const { return !values.empty(); }
};

std::string human_rate(double v) {
    char b[32];
    if (v >= 1e6) std::snprintf(b, sizeof b, "%.2f M", v / 1e6);
    else if (v >= 1e3) std::snprintf(b, sizeof b, "%.1f k", v / 1e3);
    else std::snprintf(b, sizeof b, "%.0f", v);
    return b;
}
std::string human_ns(double ns) {
    char b[32];
    if (ns >= 1e6) std::snprintf(b, sizeof b, "%.2f ms", ns / 1e6);
    else if (ns >= 1e3) std::snprintf(b, sizeof b, "%.2f us", ns / 1e3);
    else std::snprintf(b, sizeof b, "%.0f ns", ns);
    return b;
}
std::string size_label(std::size_t s) { return s >= 1024 ? std::to_string(s / 1024) + " KiB" : std::to_string(s) + " B"; }

std::string json_escape(const std::string& s) {
    std::string o;
    for (char c : s) {
        if (c == '"' || c == '\\') o += '\\', o += c;
        else if (static_cast<unsigned char>(c) < 0x20) o += ' ';
        else o += c;
    }
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    const Options opt = parse(argc, argv);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, on_fatal_signal);
    ::signal(SIGPIPE, SIG_IGN);

    std::vector<Transport> transports;
    for (auto& t : all_transports()) {
        if (!opt.only.empty() && std::find(opt.only.begin(), opt.only.end(), t.id) == opt.only.end()) continue;
        if (opt.one_core && !t.blocking) continue;
        transports.push_back(std::move(t));
    }
    if (transports.empty()) {
        std::fprintf(stderr, "queue_bench: error: no transport selected (--only, --one-core)\n");
        return 2;
    }
    Context cx{opt.lim, opt.cpus, opt.py};
    // results[test][transport id][size]
    std::map<std::string, std::map<std::size_t, Cell>> tput, rtt;
    const std::uint64_t started = now_ns();

    struct Job {
        const Transport* t;
        std::size_t size;
        Test test;
    };
    std::vector<Job> jobs;
    for (std::size_t s : opt.sizes)
        for (const auto& t : transports) {
            if (s < t.min_size) continue;
            jobs.push_back({&t, s, Test::throughput});
            if (t.pingpong && !opt.no_pingpong) jobs.push_back({&t, s, Test::pingpong});
        }
    if (!opt.json)
        std::fprintf(stderr, "queue_bench: %zu measurements x %d rounds, %.3f s each, CPUs %d,%d%s\n", jobs.size(), opt.rounds,
                     opt.lim.seconds, opt.cpus.producer, opt.cpus.consumer, opt.one_core ? " (one core)" : "");
    for (int r = 0; r < opt.rounds; ++r) {
        // Rotate the order each round: no transport always runs first or after the same neighbour.
        const std::size_t shift = jobs.empty() ? 0 : (static_cast<std::size_t>(r) * 7) % jobs.size();
        for (std::size_t k = 0; k < jobs.size(); ++k) {
            const Job& j = jobs[(k + shift) % jobs.size()];
            const Geometry g = geometry_for(j.size);
            Measurement m;
            try {
                m = j.t->run(cx, j.test, g);
            } catch (const std::exception& e) {
                m.ok = false;
                m.error = e.what();
            }
            Cell& c = (j.test == Test::throughput ? tput : rtt)[j.t->id][j.size];
            if (!m.ok) {
                c.errors.push_back(m.error);
                std::fprintf(stderr, "queue_bench: %s %s %s failed: %s\n", j.t->id.c_str(), size_label(j.size).c_str(),
                             j.test == Test::throughput ? "throughput" : "ping-pong", m.error.c_str());
                continue;
            }
            if (m.involuntary_switches >= 0) c.preempted.push_back(m.involuntary_switches);
            if (j.test == Test::throughput) {
                c.values.push_back(m.msgs_per_s);
            } else {
                c.values.push_back(m.median_ns);
                c.p99.push_back(m.p99_ns);
            }
        }
        if (!opt.json) std::fprintf(stderr, "queue_bench: round %d/%d done (%.1f s)\n", r + 1, opt.rounds, static_cast<double>(now_ns() - started) / 1e9);
    }
    remove_all_registered();

    // The targets of issues 2 and 15, as (ours, peer, test, at-least?, bound, sizes) checks; each
    // check carries the issue it comes from, and a check both issues set is listed once.
    struct Target {
        std::string ours, peer;
        Test test;
        bool at_least;
        double bound;
        std::vector<std::size_t> sizes;
        std::string issue = "2";
    };
    std::vector<Target> targets;
    if (!opt.one_core) {
        for (const char* peer : {"ref", "pipe", "boost-mq", "zmq", "python-mp"}) {
            const double b = std::string(peer) == "ref" ? 0.8 : std::string(peer) == "pipe" ? 8 : std::string(peer) == "boost-mq" ? 5 : std::string(peer) == "zmq" ? 4 : 50;
            targets.push_back({"spsc-spin", peer, Test::throughput, true, b, {8, 1024}});
        }
        targets.push_back({"spsc-spin", "ref", Test::pingpong, false, 1.2, {8, 64, 1024, 65536}});
        targets.push_back({"spsc-block", "pipe", Test::pingpong, false, 0.3, {8, 64, 1024, 65536}});
        targets.push_back({"spsc-spin", "ref", Test::throughput, true, 0.8, {65536}});
        targets.push_back({"spsc-zc", "ref", Test::throughput, true, 1.0, {65536}});
        targets.push_back({"mpmc-spin", "spsc-spin", Test::throughput, true, 0.5, {8, 64, 1024, 65536}});
        // Issue 15: the SPSC fast paths against the reference ring.
        targets.push_back({"spsc-spin", "ref", Test::throughput, true, 0.8, {8, 64}, "15"});
        targets.push_back({"spsc-spin", "ref", Test::throughput, true, 0.9, {1024}, "15"});
        targets.push_back({"spsc-spin", "ref", Test::throughput, true, 0.7, {65536}, "15"});
        targets.push_back({"spsc-spin", "ref", Test::pingpong, false, 1.15, {8, 64, 1024, 65536}, "15"});
        targets.push_back({"spsc-batch", "ref", Test::throughput, true, 3.0, {8}, "15"});
        // The same targets for the typed fixed-slot mode (Queue::create<T>).
        targets.push_back({"typed-spin", "ref", Test::throughput, true, 0.8, {8, 64}, "15"});
        targets.push_back({"typed-spin", "ref", Test::throughput, true, 0.9, {1024}, "15"});
        targets.push_back({"typed-spin", "ref", Test::throughput, true, 0.7, {65536}, "15"});
        targets.push_back({"typed-spin", "ref", Test::pingpong, false, 1.15, {8, 64, 1024, 65536}, "15"});
        targets.push_back({"typed-batch", "ref", Test::throughput, true, 3.0, {8}, "15"});
        // The copying rows against a reference that copies too (ref reads in place), and the
        // typed zero-copy row, which reads in place, against ref.
        targets.push_back({"typed-spin", "ref-copy", Test::throughput, true, 0.7, {65536}, "15"});
        targets.push_back({"typed-spin", "ref-copy", Test::pingpong, false, 1.15, {8, 64, 1024, 65536}, "15"});
        targets.push_back({"typed-zc", "ref", Test::pingpong, false, 1.15, {8, 64, 1024, 65536}, "15"});
        // The 8 B throughput target against a reference with the typed queue's packed slots
        // (ref gives each 8 B message a line of its own); the check against ref stays above.
        targets.push_back({"typed-spin", "ref-dense", Test::throughput, true, 0.8, {8}, "15"});
    } else {
        targets.push_back({"spsc-block", "boost-mq", Test::throughput, true, 1.0, {8, 1024}});
        targets.push_back({"spsc-block", "pipe", Test::throughput, true, 1.5, {8, 1024}});
    }
    struct Checked {
        const Target* t;
        std::size_t size;
        double ratio;
        bool pass;
        std::string issues;  // "2", "15" or "2, 15"
    };
    std::vector<Checked> checked;
    for (const auto& t : targets)
        for (std::size_t s : t.sizes) {
            auto& tab = t.test == Test::throughput ? tput : rtt;
            if (!tab[t.ours][s].has() || !tab[t.peer][s].has()) continue;
            auto same = std::find_if(checked.begin(), checked.end(), [&](const Checked& c) {
                return c.size == s && c.t->ours == t.ours && c.t->peer == t.peer && c.t->test == t.test &&
                       c.t->at_least == t.at_least && c.t->bound == t.bound;
            });
            if (same != checked.end()) {
                same->issues += ", " + t.issue;
                continue;
            }
            const double ratio = tab[t.ours][s].med() / tab[t.peer][s].med();
            checked.push_back({&t, s, ratio, t.at_least ? ratio >= t.bound : ratio <= t.bound, t.issue});
        }

    int failures = 0;
    for (auto* tab : {&tput, &rtt})
        for (auto& [id, by_size] : *tab)
            for (auto& [s, c] : by_size) failures += static_cast<int>(c.errors.size());

    if (opt.json) {
        std::printf("{\"one_core\":%s,\"rounds\":%d,\"seconds\":%g,\"cpus\":[%d,%d],\"results\":[", opt.one_core ? "true" : "false",
                    opt.rounds, opt.lim.seconds, opt.cpus.producer, opt.cpus.consumer);
        bool first = true;
        for (const auto& t : transports)
            for (std::size_t s : opt.sizes) {
                const Cell& a = tput[t.id][s];
                const Cell& b = rtt[t.id][s];
                if (!a.has() && !b.has() && a.errors.empty() && b.errors.empty()) continue;
                std::printf("%s{\"transport\":\"%s\",\"size\":%zu", first ? "" : ",", t.id.c_str(), s);
                first = false;
                if (a.has()) std::printf(",\"msgs_per_s\":%.0f,\"mb_per_s\":%.1f", a.med(), a.med() * static_cast<double>(s) / 1e6);
                if (b.has()) std::printf(",\"rtt_median_ns\":%.0f,\"rtt_p99_ns\":%.0f", b.med(), b.med_p99());
                if (!a.preempted.empty()) std::printf(",\"preempted_per_run\":%.0f", bench::median(a.preempted));
                std::printf(",\"rounds_ok\":[%zu,%zu],\"errors\":[", a.values.size(), b.values.size());
                bool fe = true;
                for (const auto* c : {&a, &b})
                    for (const auto& e : c->errors) std::printf("%s\"%s\"", fe ? "" : ",", json_escape(e).c_str()), fe = false;
                std::printf("]}");
            }
        std::printf("],\"targets\":[");
        for (std::size_t i = 0; i < checked.size(); ++i) {
            const auto& c = checked[i];
            std::printf("%s{\"ours\":\"%s\",\"peer\":\"%s\",\"test\":\"%s\",\"size\":%zu,\"ratio\":%.3f,\"bound\":\"%s%.2f\",\"pass\":%s,"
                        "\"issues\":\"%s\"}",
                        i ? "," : "", c.t->ours.c_str(), c.t->peer.c_str(), c.t->test == Test::throughput ? "throughput" : "pingpong_median",
                        c.size, c.ratio, c.t->at_least ? ">=" : "<=", c.t->bound, c.pass ? "true" : "false", c.issues.c_str());
        }
        std::printf("],\"failed_runs\":%d}\n", failures);
        return failures == 0 ? 0 : 1;
    }

    std::printf("\nqueue_bench: medians of %d rounds, %.3f s per run, producer CPU %d, consumer CPU %d%s\n", opt.rounds,
                opt.lim.seconds, opt.cpus.producer, opt.cpus.consumer, opt.one_core ? " (one core)" : "");
    for (std::size_t s : opt.sizes) {
        std::printf("\n%s messages\n", size_label(s).c_str());
        std::printf("  %-12s %-38s %12s %10s %11s %11s %6s %8s\n", "transport", "", "msgs/s", "MB/s", "rtt median", "rtt p99", "ok",
                    "preempt");
        for (const auto& t : transports) {
            const Cell& a = tput[t.id][s];
            const Cell& b = rtt[t.id][s];
            if (!a.has() && !b.has() && a.errors.empty() && b.errors.empty()) continue;
            char mb[32] = "-";
            if (a.has()) std::snprintf(mb, sizeof mb, "%.1f", a.med() * static_cast<double>(s) / 1e6);
            char pre[32] = "-";
            if (!a.preempted.empty()) std::snprintf(pre, sizeof pre, "%.0f", bench::median(a.preempted));
            std::printf("  %-12s %-38s %12s %10s %11s %11s %3zu/%-2zu %8s\n", t.id.c_str(), t.description.c_str(),
                        a.has() ? human_rate(a.med()).c_str() : "-", mb, b.has() ? human_ns(b.med()).c_str() : "-",
                        b.has() ? human_ns(b.med_p99()).c_str() : "-", a.values.size() + b.values.size(),
                        a.values.size() + b.values.size() + a.errors.size() + b.errors.size(), pre);
        }
    }
    std::size_t runs = 0, disturbed = 0;
    for (auto* tab : {&tput, &rtt})
        for (auto& [id, by_size] : *tab)
            for (auto& [sz, c] : by_size)
                for (double v : c.preempted) ++runs, disturbed += v > 0 ? 1 : 0;
    std::printf("\npreempt = median involuntary context switches of the pinned processes per throughput run\n"
                "(another process took their core); %zu of %zu runs were preempted at least once\n", disturbed, runs);
    std::printf("\nratios shmpipe / peer (throughput: higher is better; ping-pong median: lower is better)\n");
    std::printf("  %-10s %-12s %-10s", "ours", "test", "size");
    std::vector<std::string> peers;
    for (const auto& t : transports)
        if (!t.shmpipe) peers.push_back(t.id);
    for (const auto& p : peers) std::printf(" %10s", p.c_str());
    std::printf("\n");
    for (const auto& ours : transports) {
        if (!ours.shmpipe) continue;
        for (Test test : {Test::throughput, Test::pingpong}) {
            auto& tab = test == Test::throughput ? tput : rtt;
            for (std::size_t s : opt.sizes) {
                if (!tab[ours.id][s].has()) continue;
                std::printf("  %-10s %-12s %-10s", ours.id.c_str(), test == Test::throughput ? "throughput" : "rtt median",
                            size_label(s).c_str());
                for (const auto& p : peers) {
                    if (tab[p][s].has()) std::printf(" %9.2fx", tab[ours.id][s].med() / tab[p][s].med());
                    else std::printf(" %10s", "-");
                }
                std::printf("\n");
            }
        }
    }
    if (!checked.empty()) {
        std::printf("\ntargets (issue numbers on the right)\n");
        for (const auto& c : checked)
            std::printf("  %-5s %-11s / %-10s %-11s %-7s %7.2fx  (target %s %.2fx)  issue %s\n", c.pass ? "PASS" : "MISS",
                        c.t->ours.c_str(), c.t->peer.c_str(), c.t->test == Test::throughput ? "throughput" : "rtt median",
                        size_label(c.size).c_str(), c.ratio, c.t->at_least ? ">=" : "<=", c.t->bound, c.issues.c_str());
    }
    if (failures != 0) std::printf("\n%d run(s) failed (see stderr); their rounds are left out of the medians\n", failures);
    std::printf("\ntotal %.1f s\n", static_cast<double>(now_ns() - started) / 1e9);
    return failures == 0 ? 0 : 1;
}
