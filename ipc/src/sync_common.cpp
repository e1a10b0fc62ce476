// Thread identity, the robust lock slow paths and the handle plumbing shared by every
// synchronisation object. Invariants L1-L4 and pairs LP1/LP2: see sync_layout.hpp.
#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/detail/sync_common.hpp>
#include <shmpipe/detail/wait.hpp>
#include <shmpipe/error.hpp>

#include <climits>
#include <cstdio>
#include <mutex>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <utility>

namespace shmpipe::detail {

std::atomic<std::uint32_t> g_fork_generation{1};
constinit thread_local ThreadIdentity t_identity{};

namespace {

void on_fork_child() noexcept { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }

}  // namespace

const ThreadIdentity& this_thread_identity_slow() noexcept {
    static std::once_flag once;
    // Registered before anything is cached, so every cached identity is invalidated in a child.
    std::call_once(once, [] { ::pthread_atfork(nullptr, nullptr, on_fork_child); });
    ThreadIdentity id;
    id.tid = static_cast<std::uint32_t>(::syscall(SYS_gettid));
    id.generation = fork_generation();
    id.packed = pack_owner(id.tid, process_start_time(static_cast<pid_t>(id.tid)));
    t_identity = id;
    return t_identity;
}

bool bounded_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::uint64_t deadline_ns,
                  std::uint64_t slice_ns) noexcept {
    const std::uint64_t now = monotonic_ns();
    if (deadline_ns != 0 && now >= deadline_ns) return true;
    std::uint64_t until = now + slice_ns;
    if (deadline_ns != 0 && deadline_ns < until) until = deadline_ns;
    futex_wait(word, expected, until);
    return deadline_ns != 0 && monotonic_ns() >= deadline_ns;
}

std::string format_duration(std::chrono::nanoseconds d) {
    char buf[64];
    const double ms = static_cast<double>(d.count()) / 1e6;
    if (ms < 1000.0) {
        std::snprintf(buf, sizeof buf, "%g ms", ms);
    } else {
        std::snprintf(buf, sizeof buf, "%g s", ms / 1000.0);
    }
    return buf;
}

// --- robust lock ------------------------------------------------------------------------------

namespace {

// L2/L3: takes the lock over if the TID in the word belongs to a dead thread.
bool try_recover(RobustLock& l, const ThreadIdentity& me) noexcept {
    const std::uint32_t w = l.word.load(std::memory_order_relaxed);
    const std::uint32_t tid = w & kLockTidMask;
    if (tid == 0 || tid == me.tid) return false;
    const std::uint64_t o = l.owner.load(std::memory_order_relaxed);
    if (owner_tid(o) != tid) {
        // L3: the owner has not written `owner` yet. A TID that names no thread at all is
        // dead for sure; one that exists may be the owner about to write: assume alive.
        if (process_alive(tid, 0)) return false;
    } else {
        if (process_alive(tid, owner_start(o))) return false;
        // L3: a new owner with a reused TID may have taken the lock while we looked.
        if (l.owner.load(std::memory_order_relaxed) != o) return false;
    }
    std::uint32_t expected = w;
    if (!l.word.compare_exchange_strong(expected, me.tid | kLockContended, std::memory_order_acquire,  // L2
                                        std::memory_order_relaxed)) {
        return false;
    }
    l.owner.store(me.packed, std::memory_order_relaxed);    // LP2
    l.depth.store(0, std::memory_order_relaxed);            // L4: we own it now
    l.inconsistent.store(1, std::memory_order_relaxed);     // L4
    l.died_tid.store(tid, std::memory_order_relaxed);
    l.recoveries.fetch_add(1, std::memory_order_relaxed);   // statistics only
    return true;
}

}  // namespace

LockResult robust_try_lock(RobustLock& l, const ThreadIdentity& me) noexcept {
    if (robust_try_lock_fast(l, me)) return LockResult::acquired;
    if (try_recover(l, me)) return LockResult::recovered;
    // The word may have become free while we looked.
    return robust_try_lock_fast(l, me) ? LockResult::acquired : LockResult::timeout;
}

LockResult robust_lock_until(RobustLock& l, const ThreadIdentity& me, std::uint64_t deadline_ns) noexcept {
    SpinWait spin;
    std::uint32_t take = me.tid;   // once we slept, others may sleep too: keep kLockContended
    std::uint64_t next_check = 0;  // liveness of the owner: first after 1 ms of waiting
    bool counted = false;
    auto done = [&](LockResult r) {
        if (counted) l.waiters.fetch_sub(1, std::memory_order_relaxed);  // statistics only
        return r;
    };
    for (;;) {
        std::uint32_t w = l.word.load(std::memory_order_relaxed);
        if (w == 0) {
            if (l.word.compare_exchange_weak(w, take, std::memory_order_acquire, std::memory_order_relaxed)) {  // LP1
                l.owner.store(me.packed, std::memory_order_relaxed);  // LP2
                return done(LockResult::acquired);
            }
            continue;
        }
        if (spin.spin()) continue;
        const std::uint64_t now = monotonic_ns();
        if (deadline_ns != 0 && now >= deadline_ns) return done(LockResult::timeout);
        if (next_check == 0) {
            next_check = now + 1'000'000;
        } else if (now >= next_check) {
            next_check = now + kLivenessCheckNs;
            if (try_recover(l, me)) return done(LockResult::recovered);
            continue;
        }
        if ((w & kLockContended) == 0) {
            // L1: tell the owner to wake us. Relaxed: the futex syscall orders the sleep.
            if (!l.word.compare_exchange_weak(w, w | kLockContended, std::memory_order_relaxed)) continue;
            w |= kLockContended;
        }
        take = me.tid | kLockContended;
        if (!counted) {
            l.waiters.fetch_add(1, std::memory_order_relaxed);  // statistics only
            counted = true;
        }
        std::uint64_t slice = kLivenessCheckNs;
        if (next_check > now && next_check - now < slice) slice = next_check - now;
        bounded_wait(l.word, w, deadline_ns, slice);
    }
}

void robust_unlock_contended(RobustLock& l) noexcept {
    const std::uint32_t old = l.word.exchange(0, std::memory_order_release);  // LP1
    if ((old & kLockContended) != 0) futex_wake(l.word, 1);
}

// --- handles ----------------------------------------------------------------------------------

SyncHandle::SyncHandle(Segment seg, std::string_view what) : seg_(std::move(seg)), what_(what) {
    ensure_endpoint();
}

SyncHandle::SyncHandle(SyncHandle&& other) noexcept { *this = std::move(other); }

SyncHandle& SyncHandle::operator=(SyncHandle&& other) noexcept {
    if (this != &other) {
        detach();
        seg_ = std::move(other.seg_);
        what_ = other.what_;
        endpoint_ = std::exchange(other.endpoint_, ~0u);
        generation_ = other.generation_;
    }
    return *this;
}

SyncHandle::~SyncHandle() { detach(); }

void SyncHandle::detach() noexcept {
    // After a fork the record is the parent's: leave it alone.
    if (seg_ && endpoint_ != ~0u && generation_ == fork_generation()) seg_.close_endpoint(endpoint_);
    endpoint_ = ~0u;
}

void SyncHandle::close() noexcept {
    detach();
    seg_ = Segment{};
}

std::uint32_t SyncHandle::ensure_endpoint() {
    if (endpoint_ != ~0u && generation_ == fork_generation()) return endpoint_;
    const std::uint32_t index = seg_.attach_endpoint(EndpointRole::user, what_);
    // We own the record now: `intent` means "units held" for semaphores (S3), start at 0.
    seg_.endpoint(index)->intent.store(0, std::memory_order_release);
    endpoint_ = index;
    generation_ = fork_generation();
    return endpoint_;
}

std::uint32_t SyncHandle::checked_endpoints(std::string_view name, std::string_view what, std::uint32_t n) {
    if (n == 0 || n > kMaxEndpoints) {
        throw Error(errc::invalid_argument,
                    describe("create", what, name, "max_processes must be 1.." + std::to_string(kMaxEndpoints) +
                             ", got " + std::to_string(n)));
    }
    return n;
}

SyncHandle SyncHandle::open(std::string_view name, std::string_view what, ObjectKind kind, std::uint64_t min_body,
                            const OpenOptions& options) {
    Segment seg = Segment::open(name, what, kind, Access::read_write, options);
    if (seg.body_size() < min_body) {  // the segment's validated copy
        throw_problem("open", what, name,
                      {make_error_code(errc::corrupt),
                       "body of " + std::to_string(seg.body_size()) + " bytes, a " + std::string(what) + " needs " +
                           std::to_string(min_body),
                       "`inspect-queues clean --corrupt` removes it"});
    }
    return SyncHandle(std::move(seg), what);
}

std::string SyncHandle::message(std::string_view verb, std::string_view detail) const {
    return describe(verb, what_, seg_ ? std::string_view(seg_.name()) : std::string_view("(closed)"), detail);
}

void SyncHandle::fail(errc code, std::string_view verb, std::string_view detail) const {
    throw Error(code, message(verb, detail));
}

void SyncHandle::require_open(std::string_view verb) const {
    if (!seg_) {
        throw Error(errc::invalid_state, std::string(verb) + " " + std::string(what_) +
                    ": the handle is closed or was moved from");
    }
}

}  // namespace shmpipe::detail
