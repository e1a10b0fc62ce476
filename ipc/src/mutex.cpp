// Mutex and RecursiveMutex on a RobustLock (sync_layout.hpp, L1-L4).
#include <shmpipe/error.hpp>
#include <shmpipe/mutex.hpp>

namespace shmpipe {
namespace {

using detail::LockResult;
using detail::MutexBody;
using detail::ObjectKind;

constexpr std::string_view kMutex = "mutex";
constexpr std::string_view kRecursive = "recursive mutex";

detail::SyncHandle create_mutex(std::string_view name, std::string_view what, std::uint32_t flags,
                                const SyncOptions& options) {
    return detail::SyncHandle::create(name, what, ObjectKind::mutex, sizeof(MutexBody), flags, options,
                                      [](std::byte*) {});  // L1: a zero word is a free lock
}

detail::SyncHandle open_mutex(std::string_view name, std::string_view what, bool recursive, const OpenOptions& options) {
    auto h = detail::SyncHandle::open(name, what, ObjectKind::mutex, sizeof(MutexBody), options);
    const bool is_recursive = (h.segment().flags() & detail::kMutexRecursive) != 0;
    if (is_recursive != recursive) {
        throw Error(errc::wrong_kind, detail::describe("open", what, name,
                    is_recursive ? "it is a recursive mutex (open it with RecursiveMutex::open)"
                                 : "it is a plain mutex (open it with Mutex::open)"));
    }
    return h;
}

std::string owner_text(const detail::RobustLock& l) {
    const std::uint32_t w = l.word.load(std::memory_order_relaxed);
    if ((w & detail::kLockTidMask) == 0) return "it is not locked";
    return "it is held by thread " + std::to_string(w & detail::kLockTidMask);
}

}  // namespace

// --- Mutex --------------------------------------------------------------------------------

Mutex Mutex::create(std::string_view name, const SyncOptions& options) {
    return Mutex(create_mutex(name, kMutex, 0, options));
}

Mutex Mutex::open(std::string_view name, const OpenOptions& options) {
    return Mutex(open_mutex(name, kMutex, false, options));
}

Mutex::Mutex(detail::SyncHandle h) : handle_(std::move(h)), lock_(&handle_.body<MutexBody>().lock) {}

void Mutex::lock() {
    auto& l = lock_word();
    const auto& me = detail::this_thread_identity();
    if (detail::robust_try_lock_fast(l, me)) [[likely]] return;
    if (detail::robust_owned_by(l, me)) {
        handle_.fail(errc::invalid_state, "lock",
                     "this thread already holds it (locking again would deadlock; use RecursiveMutex)");
    }
    detail::robust_lock_until(l, me, 0);
}

bool Mutex::try_lock() {
    auto& l = lock_word();
    const auto& me = detail::this_thread_identity();
    if (detail::robust_try_lock_fast(l, me)) [[likely]] return true;
    if (detail::robust_owned_by(l, me)) return false;
    return detail::robust_try_lock(l, me) != LockResult::timeout;
}

bool Mutex::try_lock_for_ns(std::chrono::nanoseconds timeout) {
    auto& l = lock_word();
    const auto& me = detail::this_thread_identity();
    if (detail::robust_try_lock_fast(l, me)) return true;
    if (detail::robust_owned_by(l, me)) return false;
    return detail::robust_lock_until(l, me, detail::deadline_after(timeout)) != LockResult::timeout;
}

void Mutex::unlock() {
    auto& l = lock_word();
    std::uint32_t expected = detail::this_thread_identity().tid;
    // LP1: the uncontended release, one CAS that also proves we own it (L1, L2).
    if (l.word.compare_exchange_strong(expected, 0, std::memory_order_release, std::memory_order_relaxed)) [[likely]] {
        return;
    }
    unlock_slow();
}

void Mutex::unlock_slow() {
    auto& l = lock_word();
    const auto& me = detail::this_thread_identity();
    if (!detail::robust_owned_by(l, me)) {
        handle_.fail(errc::not_owner, "unlock",
                     "the calling thread " + std::to_string(me.tid) + " does not hold it (" + owner_text(l) + ")");
    }
    detail::robust_unlock(l, me);
}

bool Mutex::owner_died() const { return lock_word().inconsistent.load(std::memory_order_relaxed) != 0; }  // L4

void Mutex::mark_consistent() {
    auto& l = lock_word();
    if (!detail::robust_owned_by(l, detail::this_thread_identity())) {
        handle_.fail(errc::not_owner, "mark consistent", "only the thread holding the lock may (" + owner_text(l) + ")");
    }
    l.inconsistent.store(0, std::memory_order_relaxed);  // L4: we own it; unlock publishes (LP1)
}

bool Mutex::owned_by_this_thread() const { return detail::robust_owned_by(lock_word(), detail::this_thread_identity()); }

std::uint64_t Mutex::recoveries() const { return lock_word().recoveries.load(std::memory_order_relaxed); }

// --- RecursiveMutex -----------------------------------------------------------------------

RecursiveMutex RecursiveMutex::create(std::string_view name, const SyncOptions& options) {
    return RecursiveMutex(create_mutex(name, kRecursive, detail::kMutexRecursive, options));
}

RecursiveMutex RecursiveMutex::open(std::string_view name, const OpenOptions& options) {
    return RecursiveMutex(open_mutex(name, kRecursive, true, options));
}

detail::RobustLock& RecursiveMutex::lock_word() const {
    handle_.require_open("use recursive mutex");
    return handle_.body<MutexBody>().lock;
}

void RecursiveMutex::after_acquire(LockResult r) {
    (void)r;  // a recovered lock has depth reset to 0 by the recoverer (L4)
    lock_word().depth.store(1, std::memory_order_relaxed);  // L4: owner only
}

void RecursiveMutex::lock() {
    auto& l = lock_word();
    const auto& me = detail::this_thread_identity();
    if (detail::robust_owned_by(l, me)) {
        const std::uint32_t d = l.depth.load(std::memory_order_relaxed);  // L4: owner only
        if (d == UINT32_MAX) handle_.fail(errc::overflow, "lock", "recursion depth overflow");
        l.depth.store(d + 1, std::memory_order_relaxed);
        return;
    }
    if (detail::robust_try_lock_fast(l, me)) {
        after_acquire(LockResult::acquired);
        return;
    }
    after_acquire(detail::robust_lock_until(l, me, 0));
}

bool RecursiveMutex::try_lock() {
    auto& l = lock_word();
    const auto& me = detail::this_thread_identity();
    if (detail::robust_owned_by(l, me)) {
        lock();
        return true;
    }
    const LockResult r = detail::robust_try_lock(l, me);
    if (r == LockResult::timeout) return false;
    after_acquire(r);
    return true;
}

bool RecursiveMutex::try_lock_for_ns(std::chrono::nanoseconds timeout) {
    auto& l = lock_word();
    const auto& me = detail::this_thread_identity();
    if (detail::robust_owned_by(l, me)) {
        lock();
        return true;
    }
    if (detail::robust_try_lock_fast(l, me)) {
        after_acquire(LockResult::acquired);
        return true;
    }
    const LockResult r = detail::robust_lock_until(l, me, detail::deadline_after(timeout));
    if (r == LockResult::timeout) return false;
    after_acquire(r);
    return true;
}

void RecursiveMutex::unlock() {
    auto& l = lock_word();
    const auto& me = detail::this_thread_identity();
    if (!detail::robust_owned_by(l, me)) {
        handle_.fail(errc::not_owner, "unlock",
                     "the calling thread " + std::to_string(me.tid) + " does not hold it (" + owner_text(l) + ")");
    }
    const std::uint32_t d = l.depth.load(std::memory_order_relaxed);  // L4: owner only
    if (d > 1) {
        l.depth.store(d - 1, std::memory_order_relaxed);
        return;
    }
    l.depth.store(0, std::memory_order_relaxed);
    detail::robust_unlock(l, me);
}

bool RecursiveMutex::owner_died() const { return lock_word().inconsistent.load(std::memory_order_relaxed) != 0; }

void RecursiveMutex::mark_consistent() {
    auto& l = lock_word();
    if (!detail::robust_owned_by(l, detail::this_thread_identity())) {
        handle_.fail(errc::not_owner, "mark consistent", "only the thread holding the lock may (" + owner_text(l) + ")");
    }
    l.inconsistent.store(0, std::memory_order_relaxed);
}

bool RecursiveMutex::owned_by_this_thread() const {
    return detail::robust_owned_by(lock_word(), detail::this_thread_identity());
}

std::uint32_t RecursiveMutex::depth() const {
    auto& l = lock_word();
    return detail::robust_owned_by(l, detail::this_thread_identity()) ? l.depth.load(std::memory_order_relaxed) : 0;
}

std::uint64_t RecursiveMutex::recoveries() const { return lock_word().recoveries.load(std::memory_order_relaxed); }

}  // namespace shmpipe
