// A named condition variable shared between processes, used with a shmpipe::Mutex (like
// multiprocessing.Condition, whose lock is passed to each wait here).
//
//   auto m = shmpipe::Mutex::open("q-lock");  auto cv = shmpipe::Condition::open("q-cv");
//   std::unique_lock lk(m);
//   cv.wait(lk, [&] { return !queue_empty(); });      // consumer
//   ... cv.notify_one();                               // producer, usually under the lock
//
// wait() releases the mutex, sleeps until a notify (or, for wait_for, the timeout), and
// locks the mutex again before it returns; like std::condition_variable it may also return
// without a notify, so use the predicate forms. The mutex must be held by the calling
// thread (Error(not_owner) otherwise). If the mutex's owner died meanwhile, the re-lock
// recovers it and mutex.owner_died() says so. notify_* never make a system call when
// nobody waits.
#pragma once

#include <shmpipe/detail/anonymous_name.hpp>
#include <shmpipe/detail/sync_common.hpp>
#include <shmpipe/mutex.hpp>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace shmpipe {

class Condition {
public:
    static Condition create(std::string_view name, const SyncOptions& options = {});
    // Anonymous, like Python's Condition(): a unique name is picked (name() tells it; still a
    // visible, cleanable segment). Children forked later keep using the handle.
    static Condition create(const SyncOptions& options = {}) {
        return create(detail::anonymous_name("anon-condition"), options);
    }
    static Condition open(std::string_view name, const OpenOptions& options = {});

    Condition() = default;

    void wait(Mutex& mutex);
    template <class Predicate>
    void wait(Mutex& mutex, Predicate pred) {
        while (!pred()) wait(mutex);
    }
    // False when the timeout passed without a notify.
    template <class Rep, class Period>
    bool wait_for(Mutex& mutex, std::chrono::duration<Rep, Period> timeout) {
        return wait_until_ns(mutex, detail::deadline_after(detail::timeout_ns(timeout)));
    }
    // The predicate's value at the end: false means it timed out with pred() still false.
    template <class Rep, class Period, class Predicate>
    bool wait_for(Mutex& mutex, std::chrono::duration<Rep, Period> timeout, Predicate pred) {
        const std::uint64_t deadline =
            detail::deadline_after(detail::timeout_ns(timeout));
        while (!pred()) {
            if (!wait_until_ns(mutex, deadline)) return pred();
        }
        return true;
    }
    // std::unique_lock forms (the lock must own its mutex).
    void wait(std::unique_lock<Mutex>& lock) { wait(*checked(lock)); }
    template <class Predicate>
    void wait(std::unique_lock<Mutex>& lock, Predicate pred) { wait(*checked(lock), std::move(pred)); }
    template <class Rep, class Period>
    bool wait_for(std::unique_lock<Mutex>& lock, std::chrono::duration<Rep, Period> timeout) {
        return wait_for(*checked(lock), timeout);
    }
    template <class Rep, class Period, class Predicate>
    bool wait_for(std::unique_lock<Mutex>& lock, std::chrono::duration<Rep, Period> timeout, Predicate pred) {
        return wait_for(*checked(lock), timeout, std::move(pred));
    }

    // Wakes up to n waiters (Python's notify(n)); notify(0) does nothing. As with
    // notify_one, a waiter not woken may still return later without a notify (a spurious
    // wake-up: waiters re-check their predicate), so n bounds the immediate wake-ups.
    void notify(std::uint32_t n);
    void notify_one() { notify(1); }
    void notify_all();

    void persist() noexcept { handle_.persist(); }
    const std::string& name() const noexcept { return handle_.name(); }

private:
    explicit Condition(detail::SyncHandle h) : handle_(std::move(h)) {}
    bool wait_until_ns(Mutex& mutex, std::uint64_t deadline_ns);
    Mutex* checked(std::unique_lock<Mutex>& lock) const;
    detail::ConditionBody& body() const;

    detail::SyncHandle handle_;
};

}  // namespace shmpipe
