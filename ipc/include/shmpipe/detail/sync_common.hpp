// Internals shared by the synchronisation objects: the identity of the calling thread, the
// robust lock algorithm on a RobustLock (sync_layout.hpp, invariants L1-L4), and the
// handle plumbing every named object shares (create/open/attach/detach). Not API.
#pragma once

#include <shmpipe/detail/deadline.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/detail/sync_layout.hpp>
#include <shmpipe/error.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace shmpipe {

// Options every named synchronisation object accepts at creation.
struct SyncOptions {
    mode_t permissions = kDefaultPermissions;  // of the segment, like open(2)
    // Endpoint records: handles open at once (each create/open takes one, freed when the
    // handle is destroyed or its process dies); one more is too_many_endpoints.
    std::uint32_t max_processes = 64;
};

}  // namespace shmpipe

namespace shmpipe::detail {

// Bumped in every child after fork (pthread_atfork): process-local caches keyed on it.
extern std::atomic<std::uint32_t> g_fork_generation;
inline std::uint32_t fork_generation() noexcept { return g_fork_generation.load(std::memory_order_relaxed); }

// The calling thread: Linux TID and start time, packed as RobustLock::owner wants it.
struct ThreadIdentity {
    std::uint32_t tid = 0;
    std::uint32_t generation = 0;  // fork_generation() when cached
    std::uint64_t packed = 0;      // pack_owner(tid, start time)
};
extern constinit thread_local ThreadIdentity t_identity;  // constinit: no TLS init guard on the hot path
const ThreadIdentity& this_thread_identity_slow() noexcept;
inline const ThreadIdentity& this_thread_identity() noexcept {
    if (t_identity.tid != 0 && t_identity.generation == fork_generation()) [[likely]] return t_identity;
    return this_thread_identity_slow();
}


// --- robust lock (L1-L4) --------------------------------------------------------------------

enum class LockResult { acquired, recovered, timeout };

// No system call when the lock is free.
inline bool robust_try_lock_fast(RobustLock& l, const ThreadIdentity& me) noexcept {
    std::uint32_t expected = 0;
    if (l.word.compare_exchange_strong(expected, me.tid, std::memory_order_acquire,  // LP1
                                       std::memory_order_relaxed)) {
        l.owner.store(me.packed, std::memory_order_relaxed);  // LP2, L3
        return true;
    }
    return false;
}
// try_lock that also recovers a lock whose owner is dead (one liveness check, no waiting).
LockResult robust_try_lock(RobustLock& l, const ThreadIdentity& me) noexcept;
// Blocks until acquired, recovered (dead owner, L2), or the deadline (0 = none) passes.
// The caller has checked that it does not already own the lock.
LockResult robust_lock_until(RobustLock& l, const ThreadIdentity& me, std::uint64_t deadline_ns) noexcept;
void robust_unlock_contended(RobustLock& l) noexcept;
// Releases a lock the caller owns (checked by the caller). No system call without sleepers.
inline void robust_unlock(RobustLock& l, const ThreadIdentity& me) noexcept {
    std::uint32_t expected = me.tid;
    if (l.word.compare_exchange_strong(expected, 0, std::memory_order_release,  // LP1
                                       std::memory_order_relaxed)) {
        return;
    }
    robust_unlock_contended(l);
}
inline bool robust_owned_by(const RobustLock& l, const ThreadIdentity& me) noexcept {
    // L2: only we move the word away from our TID, so a relaxed load is exact for us.
    return (l.word.load(std::memory_order_relaxed) & kLockTidMask) == me.tid;
}

// --- handles ----------------------------------------------------------------------------------

// A named sync object's mapping plus this process's endpoint record. Move-only. After a
// fork the child re-attaches its own record on first use (ensure_endpoint) and never
// closes the parent's.
class SyncHandle {
public:
    SyncHandle() = default;
    SyncHandle(Segment seg, std::string_view what);
    SyncHandle(SyncHandle&& other) noexcept;
    SyncHandle& operator=(SyncHandle&& other) noexcept;
    SyncHandle(const SyncHandle&) = delete;
    SyncHandle& operator=(const SyncHandle&) = delete;
    ~SyncHandle();

    // Creates the segment (body zero-filled, then init(body)), attaches an endpoint.
    template <class Init>
    static SyncHandle create(std::string_view name, std::string_view what, ObjectKind kind,
                             std::uint64_t body_size, std::uint32_t flags, const SyncOptions& options,
                             Init&& init, std::uint64_t type_hash = 0, std::uint32_t type_size = 0) {
        Segment::CreateParams p;
        p.name = name;
        p.what = what;
        p.kind = kind;
        p.body_size = body_size;
        p.endpoint_count = checked_endpoints(name, what, options.max_processes);
        p.permissions = options.permissions;
        p.type_hash = type_hash;
        p.type_size = type_size;
        p.flags = flags;
        return SyncHandle(Segment::create(p, init), what);
    }
    // Opens (kind checked by the segment layer), checks the body holds `min_body` bytes.
    static SyncHandle open(std::string_view name, std::string_view what, ObjectKind kind,
                           std::uint64_t min_body, const OpenOptions& options = {});

    Segment& segment() noexcept { return seg_; }
    const Segment& segment() const noexcept { return seg_; }
    template <class Body>
    Body& body() const noexcept { return *reinterpret_cast<Body*>(seg_.body()); }
    const std::string& name() const noexcept { return seg_.name(); }
    std::string_view what() const noexcept { return what_; }
    explicit operator bool() const noexcept { return static_cast<bool>(seg_); }

    // This process's endpoint record (re-attached after a fork).
    std::uint32_t ensure_endpoint();
    EndpointRecord& record(std::uint32_t index) const noexcept { return seg_.endpoints()[index]; }

    // "<verb> <what> "<name>": <detail>"
    std::string message(std::string_view verb, std::string_view detail) const;
    [[noreturn]] void fail(errc code, std::string_view verb, std::string_view detail) const;
    // Throws Error(invalid_state) when used after close/move.
    void require_open(std::string_view verb) const;

    void persist() noexcept { seg_.persist(); }
    void close() noexcept;

private:
    static std::uint32_t checked_endpoints(std::string_view name, std::string_view what, std::uint32_t n);
    void detach() noexcept;

    Segment seg_;
    std::string_view what_ = "object";  // a string literal
    std::uint32_t endpoint_ = ~0u;
    std::uint32_t generation_ = 0;       // fork_generation() when endpoint_ was attached
};

// Sleeps on a futex word while it equals `expected`, at most until the earlier of
// deadline_ns (0 = none) and now + slice_ns. Returns true when the deadline has passed.
bool bounded_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::uint64_t deadline_ns,
                  std::uint64_t slice_ns) noexcept;

inline constexpr std::uint64_t kLivenessCheckNs = 50'000'000;  // dead owners/parties found within ~50 ms

std::string format_duration(std::chrono::nanoseconds d);

}  // namespace shmpipe::detail
