// Shared-memory layouts of the synchronisation objects' bodies (after the common
// SegmentHeader and endpoint table of segment.hpp). Not API: the implementations in
// ipc/src/sync_*.cpp and the inspector (inspect-queues) read this header.
//
// One segment per object, kinds from ObjectKind. Every body starts at body_offset (64-byte
// aligned) with one of the structs below; the opener checks body_size >= sizeof(struct)
// (and, for shared arrays, that the data fits) before touching it.
//
// What the inspector shows, per kind (all fields are plain loads, stale as soon as read):
//
//   kind        value                    owner (pid + start time)          waiters              broken
//   mutex       lock.word != 0 = locked  lock.word & kLockTidMask (a TID),  lock.waiters         -
//               lock.depth (recursive)   lock.owner (tid + start, packed)   (+ kLockContended)   lock.inconsistent
//   semaphore   count                    holders: endpoint records' intent  waiters              -
//                                        (low 32 bits = units held)
//   event       flag (0/1)               -                                  waiters              -
//   barrier     state: count, generation endpoint records = parties         count of arrivals    state & kBarrierBroken,
//               parties                                                                          broken_reason, broken_pid
//   condition   sequence (notifications) -                                  waiters              -
//   shared-array count x elem_size bytes  lock as for mutex (non-lock-free T) lock.waiters        -
//               at data_offset
//
// Identity of an owner: a mutex is owned by a THREAD (Linux TID, which is system-wide unique
// while the thread lives and names the process for a single-threaded program). The lock
// word holds the TID; `owner` holds the TID and that thread's start time (field 22 of
// /proc/<tid>/stat), packed by pack_owner(), so a TID reused by a new thread is not
// mistaken for the old owner.
//
// Invariants (I) and ordering pairs (P). The code cites them at every atomic access.
//
// Robust lock (Mutex, RecursiveMutex, the SharedArray lock):
//   L1  lock.word == 0: free. Otherwise bits 0-29 are the owner's TID and bit 31
//       (kLockContended) says someone may sleep on the word: the unlocker must futex_wake.
//   L2  only the owner changes word away from its TID (unlock), except a recoverer: a waiter
//       that found the owner dead (owner packs the same TID, the thread is gone) CASes the
//       exact dead word to its own TID | kLockContended; one CAS, one winner.
//   L3  owner is written by the thread that just took the lock (after its CAS); a recoverer
//       ignores an owner whose TID differs from the word's (not yet written: assume alive).
//   L4  inconsistent is set by a recoverer before it returns from lock(); cleared only by
//       mark_consistent() of the owner. depth is touched only by the owner (recursive).
//   LP1 unlock release-stores/CASes word -> next locker's acquire CAS: the protected data.
//   LP2 locker's CAS (acquire) then owner store (relaxed; readers check L3).
//
// Semaphore:
//   S1  count is the number of free units, 0 <= count <= max_count.
//   S2  acquire takes a unit only by CAS count -> count - 1 (never below 0).
//   S3  with kSemaphoreRecoverHolders, a process's endpoint record intent holds the units
//       it acquired and has not released (low 32 bits); the record's owner updates it in the
//       instruction after the CAS of S2, and in release un-records before giving back (a
//       holder killed between the two leaks that one unit, never returns it twice; the
//       window is one atomic instruction, measured in tests/stress/semaphore_kills.cpp). A process that finds the record dead moves it to
//       `dead` (one CAS winner, Segment::reap_if_dead) and only that winner adds the units
//       back to count: they are returned exactly once.
//   SP1 release fetch_add count (seq_cst) then loads waiters; a sleeper fetch_adds waiters
//       (seq_cst) then futex_wait re-reads count in the kernel: one of them sees the other
//       (Dekker pair through the seq_cst total order), so a release never misses a sleeper.
//
// Event:
//   E1  flag is 0 (clear) or 1 (set). set() is exchange(1); clear() store(0).
//   EP1 like SP1: set exchanges flag (seq_cst) then loads waiters; a waiter fetch_adds
//       waiters (seq_cst) and futex_waits on flag == 0.
//
// Barrier:
//   B1  state packs generation (bits 32-63), kBarrierBroken (bit 31) and the number of
//       parties that arrived in this generation (bits 0-30), < parties except while the
//       last arrival runs its handle's action (count == parties: no one else is last).
//   B2  state changes only by CAS: an arrival adds 1, the last arrival (count + 1 ==
//       parties; with an action, after adding 1 and running it) moves to generation + 1
//       with count 0; breaking sets kBarrierBroken, which stays until reset() moves to
//       generation + 1 with count 0 (a reset of a generation with arrivals breaks it first,
//       so the releaser's CAS and the reset's cannot both end it).
//   B4  reset_bits bit g % 32 says how generation g ended: set by the reset that ended it
//       (after its break CAS, before the CAS to g + 1); cleared by whoever ends g - 1,
//       before its CAS to g (the enders of g - 1 all write 0). A waiter of g that sees the
//       generation change (acquire) reads the bit: clear = released, set = reset (broken).
//       Wrong only for a waiter asleep through 32 generations, which it is a party of.
//   B3  after every generation change or break, seq is incremented and all sleepers woken.
//   BP1 releaser CASes state (acq_rel) then increments seq (release); a waiter loads seq
//       (acquire) then state: if it saw the old state, its futex_wait on the old seq fails.
//
// Condition:
//   C1  seq only grows (mod 2^32): every notify increments it.
//   CP1 a waiter reads seq while holding the mutex, then unlocks and futex_waits on that
//       value; a notifier increments seq (seq_cst) then loads waiters (seq_cst). A notify
//       after the waiter's read changes seq, so the wait returns at once (no lost wake-up).
//
// Shared array:
//   A1  elem_size, count, data_offset are written by the creator before publication and
//       checked by every opener: data_offset + count * elem_size <= body_size.
//   A2  with kArrayLockFree, every access to an element is a std::atomic_ref operation
//       (lock-free, address-free); otherwise every element access holds lock (L1-L4).
//
// What a process killed at any instruction leaves behind:
//   mutex: a word naming a dead TID; the next locker recovers it (L2) and reports
//          owner_died(). semaphore: the units it held (recovered with kSemaphoreRecoverHolders,
//          lost otherwise). barrier: a party gone: the others break the barrier (errc::broken).
//   waiters counters: a sleeper killed while sleeping leaves waiters one too high; that only
//   costs wakers a spare futex_wake system call.
// The big picture (all layouts, the wake-up protocol, crash semantics): docs/architecture.md.
#pragma once

#include <shmpipe/detail/segment.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace shmpipe::detail {

// --- robust lock -----------------------------------------------------------------------------

inline constexpr std::uint32_t kLockContended = 1u << 31;   // L1
inline constexpr std::uint32_t kLockTidMask = (1u << 30) - 1;
inline constexpr unsigned kOwnerTidBits = 24;               // Linux PID_MAX_LIMIT is 2^22

// owner: TID in bits 0-23, start time (clock ticks since boot) in bits 24-63.
inline constexpr std::uint64_t pack_owner(std::uint32_t tid, std::uint64_t start_time) noexcept {
    return (start_time << kOwnerTidBits) | (tid & ((1u << kOwnerTidBits) - 1));
}
inline constexpr std::uint32_t owner_tid(std::uint64_t owner) noexcept {
    return static_cast<std::uint32_t>(owner & ((1u << kOwnerTidBits) - 1));
}
inline constexpr std::uint64_t owner_start(std::uint64_t owner) noexcept { return owner >> kOwnerTidBits; }

struct alignas(kCacheLine) RobustLock {
    std::atomic<std::uint32_t> word;          // L1: 0 | owner TID | kLockContended (futex word)
    std::atomic<std::uint32_t> inconsistent;  // L4: 1 after a dead owner was recovered
    std::atomic<std::uint64_t> owner;         // L3: pack_owner(tid, start) of the last locker
    std::atomic<std::uint32_t> depth;         // L4: recursion depth (RecursiveMutex), owner only
    std::atomic<std::uint32_t> waiters;       // threads in the slow path (inspector only)
    std::atomic<std::uint64_t> recoveries;    // dead owners recovered, ever
    std::atomic<std::uint32_t> died_tid;      // TID of the last dead owner recovered
    std::uint32_t reserved0;
    std::uint64_t reserved[3];
};
static_assert(sizeof(RobustLock) == kCacheLine);

// Header flags of a mutex segment.
inline constexpr std::uint32_t kMutexRecursive = 1u << 0;

struct alignas(kCacheLine) MutexBody {
    RobustLock lock;
};

// --- semaphore -------------------------------------------------------------------------------

// Header flags of a semaphore segment.
inline constexpr std::uint32_t kSemaphoreRecoverHolders = 1u << 0;  // S3
inline constexpr std::uint64_t kHeldMask = 0xffff'ffffull;         // EndpointRecord::intent
inline constexpr std::uint64_t kIntentUnset = ~std::uint64_t{0};   // attach_endpoint's value: holds 0

struct alignas(kCacheLine) SemaphoreBody {
    std::atomic<std::uint32_t> count;        // S1: free units (futex word)
    std::atomic<std::uint32_t> waiters;      // SP1: processes/threads about to sleep or sleeping
    std::uint32_t max_count;                 // S1: release beyond it is refused (overflow)
    std::uint32_t initial;                   // the count at creation (informational)
    std::atomic<std::uint64_t> recovered;    // S3: units returned from dead holders, ever
    std::atomic<std::uint32_t> died_pid;     // last dead holder whose units came back
    std::uint32_t reserved0;
};

// --- event -----------------------------------------------------------------------------------

struct alignas(kCacheLine) EventBody {
    std::atomic<std::uint32_t> flag;     // E1 (futex word)
    std::atomic<std::uint32_t> waiters;  // EP1
    std::atomic<std::uint64_t> sets;     // set() calls that changed the flag, ever
};

// --- barrier ---------------------------------------------------------------------------------

inline constexpr std::uint64_t kBarrierBroken = 1ull << 31;         // B1
inline constexpr std::uint64_t kBarrierCountMask = (1ull << 31) - 1;
inline constexpr std::uint32_t kMaxBarrierParties = 1u << 20;

enum class BarrierBrokenReason : std::uint32_t {
    none = 0, timeout = 1, party_died = 2, abort = 3, action_failed = 4, reset = 5
};

struct alignas(kCacheLine) BarrierBody {
    std::uint32_t parties;                     // fixed at creation, 1..kMaxBarrierParties
    std::atomic<std::uint32_t> seq;            // B3 (futex word)
    std::atomic<std::uint64_t> state;          // B1/B2: generation | broken | count
    std::atomic<std::uint32_t> broken_reason;  // BarrierBrokenReason, written before the break CAS
    std::atomic<std::uint32_t> broken_pid;     // the party that died or timed out
    std::atomic<std::uint32_t> waiters;        // sleeping parties (inspector)
    std::atomic<std::uint32_t> reset_bits;     // B4: bit g % 32 set = generation g ended by reset()
    static constexpr std::uint64_t generation(std::uint64_t s) noexcept { return s >> 32; }
    static constexpr std::uint64_t count(std::uint64_t s) noexcept { return s & kBarrierCountMask; }
    static constexpr bool broken(std::uint64_t s) noexcept { return (s & kBarrierBroken) != 0; }
};

// --- condition -------------------------------------------------------------------------------

struct alignas(kCacheLine) ConditionBody {
    std::atomic<std::uint32_t> seq;        // C1 (futex word)
    std::atomic<std::uint32_t> waiters;    // CP1
    std::atomic<std::uint64_t> notifies;   // notify calls, ever
};

// --- shared array ----------------------------------------------------------------------------

inline constexpr std::uint32_t kArrayLockFree = 1u << 0;  // header flags: A2

struct alignas(kCacheLine) SharedArrayBody {
    std::uint64_t count;        // A1: elements
    std::uint64_t data_offset;  // A1: from the body start, 64-byte aligned
    std::uint32_t elem_size;    // A1: sizeof(T), also SegmentHeader::type_size
    std::uint32_t flags;        // kArrayLockFree (mirrors the header flags)
    std::uint64_t reserved[5];
    RobustLock lock;            // A2: serialises access when T is not lock-free, and lock()
};
inline constexpr std::uint64_t kArrayDataOffset = sizeof(SharedArrayBody);

// Every body is standard-layout, pointer-free, and its atomics are lock-free (address-free).
static_assert(std::is_standard_layout_v<RobustLock> && std::is_standard_layout_v<MutexBody>);
static_assert(std::is_standard_layout_v<SemaphoreBody> && std::is_standard_layout_v<EventBody>);
static_assert(std::is_standard_layout_v<BarrierBody> && std::is_standard_layout_v<ConditionBody>);
static_assert(std::is_standard_layout_v<SharedArrayBody>);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == 4, "futex words are 32 bits");
static_assert(kArrayDataOffset % kCacheLine == 0);

}  // namespace shmpipe::detail
