// Condition: invariant C1 and pair CP1 in sync_layout.hpp.
#include <shmpipe/condition.hpp>
#include <shmpipe/detail/wait.hpp>

#include <algorithm>
#include <climits>

namespace shmpipe {

using detail::ConditionBody;

Condition Condition::create(std::string_view name, const SyncOptions& options) {
    return Condition(detail::SyncHandle::create(name, "condition", detail::ObjectKind::condition,
                                                sizeof(ConditionBody), 0, options, [](std::byte*) {}));
}

Condition Condition::open(std::string_view name, const OpenOptions& options) {
    return Condition(
        detail::SyncHandle::open(name, "condition", detail::ObjectKind::condition, sizeof(ConditionBody), options));
}

ConditionBody& Condition::body() const {
    handle_.require_open("use condition");
    return handle_.body<ConditionBody>();
}

Mutex* Condition::checked(std::unique_lock<Mutex>& lock) const {
    if (lock.mutex() == nullptr || !lock.owns_lock()) {
        handle_.fail(errc::not_owner, "wait on", "the unique_lock does not hold its mutex");
    }
    return lock.mutex();
}

void Condition::wait(Mutex& mutex) { wait_until_ns(mutex, 0); }

bool Condition::wait_until_ns(Mutex& mutex, std::uint64_t deadline_ns) {
    auto& b = body();
    if (!mutex.owned_by_this_thread()) {
        handle_.fail(errc::not_owner, "wait on",
                     "the calling thread does not hold mutex \"" + mutex.name() + "\" (lock it first)");
    }
    const std::uint32_t seq = b.seq.load(std::memory_order_relaxed);  // CP1: read under the mutex
    b.waiters.fetch_add(1, std::memory_order_seq_cst);                // CP1
    mutex.unlock();
    bool notified = false;
    for (;;) {
        if (b.seq.load(std::memory_order_acquire) != seq) {
            notified = true;
            break;
        }
        if (detail::bounded_wait(b.seq, seq, deadline_ns, 500'000'000)) {
            notified = b.seq.load(std::memory_order_acquire) != seq;
            break;
        }
    }
    b.waiters.fetch_sub(1, std::memory_order_relaxed);
    mutex.lock();
    return notified;
}

void Condition::notify(std::uint32_t n) {
    if (n == 0) return;
    auto& b = body();
    b.seq.fetch_add(1, std::memory_order_seq_cst);  // C1, CP1
    b.notifies.fetch_add(1, std::memory_order_relaxed);
    if (b.waiters.load(std::memory_order_seq_cst) > 0) {
        detail::futex_wake(b.seq, static_cast<int>(std::min<std::uint32_t>(n, INT_MAX)));
    }
}

void Condition::notify_all() {
    auto& b = body();
    b.seq.fetch_add(1, std::memory_order_seq_cst);  // C1, CP1
    b.notifies.fetch_add(1, std::memory_order_relaxed);
    if (b.waiters.load(std::memory_order_seq_cst) > 0) detail::futex_wake(b.seq, INT_MAX);
}

}  // namespace shmpipe
