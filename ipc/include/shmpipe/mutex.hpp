// A named, robust, process-shared mutex (like multiprocessing.Lock, but robust) and its
// recursive variant (like multiprocessing.RLock).
//
//   auto m = shmpipe::Mutex::create("counter-lock");      // owns the name
//   auto m2 = shmpipe::Mutex::open("counter-lock");       // in another process
//   { std::lock_guard g(m2); ++*counter; }
//
// Ownership: a mutex is owned by the THREAD that locked it (as std::mutex and RLock are).
// Any thread of any process may wait for it; only the owning thread may unlock it
// (anyone else gets Error(errc::not_owner)). A lock held when a process forks stays with
// the parent's thread: the child cannot unlock it.
//
// Robustness: if the owning thread dies (its process killed, or the thread exited) while
// holding the lock, the next locker takes it over within ~50 ms: lock() succeeds and
// owner_died() returns true until the new owner calls mark_consistent() (also across
// further unlock/lock cycles), so the data the lock protects can be checked or repaired.
// It never deadlocks on a dead owner. (Liveness is decided by TID + thread start time, so
// every process using one mutex must share a PID namespace, as with /dev/shm itself.)
//
// Speed: lock/unlock of a free mutex is one compare-and-swap each, no system call; a
// waiter spins ~20 µs, then sleeps on a futex in the segment.
#pragma once

#include <shmpipe/detail/anonymous_name.hpp>
#include <shmpipe/detail/sync_common.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace shmpipe {

class Mutex {
public:
    // Throws Error: invalid_name, already_exists, permission_denied, invalid_argument.
    static Mutex create(std::string_view name, const SyncOptions& options = {});
    // Anonymous, like Python's Lock(): a unique name is picked (name() tells it; still a
    // visible, cleanable segment). Children forked later keep using the handle.
    static Mutex create(const SyncOptions& options = {}) { return create(detail::anonymous_name("anon-mutex"), options); }
    // Throws Error: invalid_name, not_found, wrong_kind (also for a RecursiveMutex), corrupt, ...
    static Mutex open(std::string_view name, const OpenOptions& options = {});

    Mutex() = default;  // an empty handle: every operation throws errc::invalid_state
    Mutex(Mutex&& other) noexcept : handle_(std::move(other.handle_)), lock_(std::exchange(other.lock_, nullptr)) {}
    Mutex& operator=(Mutex&& other) noexcept {
        handle_ = std::move(other.handle_);
        lock_ = std::exchange(other.lock_, nullptr);
        return *this;
    }

    // Blocks until this thread owns the lock (recovering it from a dead owner). Throws
    // Error(invalid_state) if this thread already holds it (it would deadlock).
    void lock();
    // Never blocks (but may recover a lock whose owner is dead). False if held by another.
    bool try_lock();
    // Gives up after `timeout` and returns false.
    template <class Rep, class Period>
    bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
        return try_lock_for_ns(detail::timeout_ns(timeout));
    }
    // Throws Error(not_owner) unless the calling thread holds the lock.
    void unlock();

    // True while the lock is marked inconsistent: it was recovered from a dead owner and
    // nobody has called mark_consistent() since. Meaningful to the current owner.
    bool owner_died() const;
    // The owner declares the protected data repaired. Throws Error(not_owner) otherwise.
    void mark_consistent();
    // Whether the calling thread holds the lock.
    bool owned_by_this_thread() const;

    // Keep the name after this (creating) handle is destroyed.
    void persist() noexcept { handle_.persist(); }
    const std::string& name() const noexcept { return handle_.name(); }
    // Dead owners recovered so far (statistics).
    std::uint64_t recoveries() const;

private:
    friend class Condition;
    explicit Mutex(detail::SyncHandle h);
    detail::RobustLock& lock_word() const {
        if (lock_ == nullptr) [[unlikely]] handle_.require_open("use mutex");
        return *lock_;
    }
    bool try_lock_for_ns(std::chrono::nanoseconds timeout);
    void unlock_slow();

    detail::SyncHandle handle_;
    detail::RobustLock* lock_ = nullptr;  // in the mapping handle_ owns
};

// Like Mutex, but the owning thread may lock it again; it is released when unlock() has
// been called as many times as lock(). A dead owner's whole depth is recovered as one.
class RecursiveMutex {
public:
    static RecursiveMutex create(std::string_view name, const SyncOptions& options = {});
    // Anonymous, like Python's RLock(): a unique name is picked (name() tells it; still a
    // visible, cleanable segment). Children forked later keep using the handle.
    static RecursiveMutex create(const SyncOptions& options = {}) {
        return create(detail::anonymous_name("anon-rmutex"), options);
    }
    static RecursiveMutex open(std::string_view name, const OpenOptions& options = {});

    RecursiveMutex() = default;

    void lock();
    bool try_lock();
    template <class Rep, class Period>
    bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
        return try_lock_for_ns(detail::timeout_ns(timeout));
    }
    void unlock();  // Error(not_owner) unless this thread holds it

    bool owner_died() const;
    void mark_consistent();
    bool owned_by_this_thread() const;
    // How many times the calling thread holds it (0 if it does not).
    std::uint32_t depth() const;

    void persist() noexcept { handle_.persist(); }
    const std::string& name() const noexcept { return handle_.name(); }
    std::uint64_t recoveries() const;

private:
    explicit RecursiveMutex(detail::SyncHandle h) : handle_(std::move(h)) {}
    detail::RobustLock& lock_word() const;
    bool try_lock_for_ns(std::chrono::nanoseconds timeout);
    void after_acquire(detail::LockResult r);

    detail::SyncHandle handle_;
};

}  // namespace shmpipe
