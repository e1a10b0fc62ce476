// A named counting semaphore shared between processes (like multiprocessing.Semaphore /
// BoundedSemaphore).
//
//   auto slots = shmpipe::Semaphore::create("gpu-slots", 3);   // owns the name
//   auto s = shmpipe::Semaphore::open("gpu-slots");           // in another process
//   s.acquire(); ... s.release();
//   { std::lock_guard hold(s); ... }                           // the same, for a scope
//
// acquire/try_acquire of a free unit and release without sleepers are one atomic
// operation each, no system call. A waiter spins ~20 µs, then sleeps on a futex.
//
// Holders that die: a semaphore count has no owner (any process may release what another
// acquired, e.g. to signal), so by default units a dead process held are simply gone.
// With SemaphoreOptions::recover_dead_holders (a resource pool: the same process acquires
// and releases), every process's acquired-but-not-released units are counted in its
// endpoint record, and a blocked acquirer that finds the holder dead (pid + start time)
// returns them to the count, exactly once (like SysV SEM_UNDO). A holder killed between
// taking a unit and recording it (one atomic instruction apart) leaks that one unit; in a
// tight acquire/release loop that is about a third of random kills (README).
// In that mode a release() first gives back the caller's own units; releasing more than
// the process holds is still allowed (up to max_count).
#pragma once

#include <shmpipe/detail/anonymous_name.hpp>
#include <shmpipe/detail/sync_common.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace shmpipe {

inline constexpr std::int64_t kSemaphoreMax = 0x7fff'ffff;  // SEM_VALUE_MAX on Linux

struct SemaphoreOptions {
    std::int64_t max_count = kSemaphoreMax;  // release above it throws errc::overflow (bounded)
    bool recover_dead_holders = false;       // see the header comment
    mode_t permissions = kDefaultPermissions;
    std::uint32_t max_processes = 64;        // processes attached at once
};

class Semaphore {
public:
    // Throws Error: invalid_name, already_exists, invalid_argument (initial < 0),
    // overflow (initial > max_count or max_count > kSemaphoreMax), permission_denied.
    static Semaphore create(std::string_view name, std::int64_t initial, const SemaphoreOptions& options = {});
    // Anonymous, like Python's Semaphore(n): a unique name is picked (name() tells it; still a
    // visible, cleanable segment). Children forked later keep using the handle.
    static Semaphore create(std::int64_t initial, const SemaphoreOptions& options = {}) {
        return create(detail::anonymous_name("anon-semaphore"), initial, options);
    }
    // Throws Error: invalid_name, not_found, wrong_kind, corrupt, version_mismatch, ...
    static Semaphore open(std::string_view name, const OpenOptions& options = {});

    Semaphore() = default;  // empty handle: operations throw errc::invalid_state

    void acquire();                // blocks until a unit is free
    bool try_acquire();            // never blocks
    template <class Rep, class Period>
    bool try_acquire_for(std::chrono::duration<Rep, Period> timeout) {
        return acquire_until(detail::deadline_after(detail::timeout_ns(timeout)));
    }
    // Adds n units and wakes up to n waiters. Throws Error: invalid_argument (n < 0),
    // overflow (the count would pass max_count; nothing is added then).
    void release(std::int64_t n = 1);

    // Lockable, so std::lock_guard / std::scoped_lock / std::unique_lock hold one unit for
    // a scope (Python's `with sem:`): lock() is acquire(), try_lock() try_acquire(),
    // unlock() release(1).
    void lock() { acquire(); }
    bool try_lock() { return try_acquire(); }
    void unlock() { release(1); }

    std::uint32_t value_approx() const;     // free units right now
    std::uint32_t max_count() const;
    std::uint64_t recovered_units() const;  // units returned from dead holders, ever
    void persist() noexcept { handle_.persist(); }
    const std::string& name() const noexcept { return handle_.name(); }

private:
    explicit Semaphore(detail::SyncHandle h) : handle_(std::move(h)) {}
    bool acquire_until(std::uint64_t deadline_ns);
    std::atomic<std::uint64_t>* held_units();  // S3: our record's units, or nullptr
    void recover_dead_holders();
    detail::SemaphoreBody& body() const;

    detail::SyncHandle handle_;
    bool recover_ = false;
};

}  // namespace shmpipe
