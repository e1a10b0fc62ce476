// Results of pool tasks: AsyncResult<R> (multiprocessing.pool.AsyncResult) and Future<R>
// (concurrent.futures.Future), as_completed and wait.
//
//   auto r = pool.apply_async(square, 7);  r.get_for(2s);   // Error(errc::timeout) when late
//   auto f = pool.submit(square, 7);       f.add_done_callback([](auto& f) { ... });
//   for (auto& f : shmpipe::as_completed(futures)) use(f.result());
//
// Both are cheap handles on one shared state; copies see the same result. Blocking calls
// (get, result, wait) may be made from any thread; ready/successful/done never block.
// A process pool's results are taken from its results queue by the thread that waits for
// one (get, result, wait, map, imap, as_completed and wait() over one pool's futures), which
// completes the other callers' tasks as it goes (leader/follower); when no thread waits,
// the pool's collector thread takes them. Callbacks run on whichever of these threads
// completes the task (or at once, in the registering thread, when the task is already
// finished). They may submit new tasks (a submit there never waits for room: the pool
// keeps the task until the queue has room), and should not block for long: other callers'
// results wait behind them.
// A task that raised in a worker throws shmpipe::RemoteError from get()/result(); a task
// whose worker died throws Error(errc::worker_died); a cancelled one Error(errc::cancelled).
// The same types serve ThreadPool tasks and Promise (thread_pool.hpp, promise.hpp), whose
// exceptions are rethrown as they were thrown.
#pragma once

#include <shmpipe/codec.hpp>
#include <shmpipe/detail/timeout.hpp>
#include <shmpipe/error.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace shmpipe {

namespace detail {

enum class TaskStatus { pending, ok, failed, cancelled };

// Where a process pool's task completions come from when a thread waits for one: the
// waiting thread drains the pool's results queue itself (see pipeline/src/pool_core.hpp).
class CompletionDriver {
public:
    // Until done() holds or the deadline passes (time_point::max(): none); returns done().
    // done() only looks at the state it reads (it locks that state's own mutex, nothing else).
    virtual bool drive_until(const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline) = 0;
    // A listener was added to a pending task: its completion must come even if no thread waits.
    virtual void watch() noexcept = 0;
    // A task finished (its listeners ran); `watched`: watch() was called for it.
    virtual void completed(bool watched) noexcept = 0;

protected:
    ~CompletionDriver() = default;
};

// The state one task's handles share. A process pool completes it with an encoded payload
// (on the thread that drains its results); a thread pool or a Promise with the result
// object itself (value).
struct TaskState {
    std::uint64_t id = 0;
    std::string what;  // for messages: "task 12 (square)"
    mutable std::mutex m;
    mutable std::condition_variable cv;
    TaskStatus status = TaskStatus::pending;
    Bytes payload;               // the encoded result (ok), from a worker process
    std::shared_ptr<void> value;  // or the result itself (ok), made in this process; see take_result
    std::exception_ptr error;    // failed / cancelled
    std::vector<std::function<void()>> listeners;  // run once, after completion
    // Set by the pool: true when the task may be cancelled (no worker took it yet).
    std::function<bool(std::uint64_t)> may_cancel;
    // Set by the pool: true while a worker executes the task (taken, result not yet sent).
    std::function<bool(std::uint64_t)> is_running;
    // Set by a process pool before the state is shared: waiting drives it (never changed after).
    std::weak_ptr<CompletionDriver> driver;
    bool watched = false;  // a listener was added while pending (under m)
    // Set by a process pool's map while it waits (under m): an ok result of exactly
    // sink_size bytes (flat, trivially copyable elements) is copied straight there by the
    // thread that takes it from the queue (in_sink), not into payload.
    std::byte* sink = nullptr;
    std::size_t sink_size = 0;
    bool in_sink = false;

    bool finished() const {
        std::lock_guard lock(m);
        return status != TaskStatus::pending;
    }
    // First completion wins; later ones are ignored. Returns whether this call completed it.
    bool complete(TaskStatus s, Bytes result, std::exception_ptr e, std::shared_ptr<void> v = nullptr) {
        std::vector<std::function<void()>> run;
        bool was = false;
        {
            std::lock_guard lock(m);
            if (status != TaskStatus::pending) return false;
            status = s;
            payload = std::move(result);
            value = std::move(v);
            error = std::move(e);
            run.swap(listeners);
            was = watched;
        }
        cv.notify_all();
        for (auto& f : run) {
            try {
                f();
            } catch (...) {  // a callback's exception must not kill the thread that completes
            }
        }
        if (auto d = driver.lock()) d->completed(was);  // wakes the threads waiting on the driver
        return true;
    }
    void add_listener(std::function<void()> f) {
        bool first = false;
        bool queued = false;
        {
            std::lock_guard lock(m);
            if (status == TaskStatus::pending) {
                listeners.push_back(std::move(f));
                queued = true;
                first = !std::exchange(watched, true);
            }
        }
        if (queued) {  // the completing thread runs it
            if (first) {
                if (auto d = driver.lock()) d->watch();
            }
            return;
        }
        f();
    }
    void wait() const { wait_until(std::chrono::steady_clock::time_point::max()); }
    bool wait_for(std::chrono::nanoseconds d) const {
        // "forever": no deadline arithmetic
        return wait_until(d == std::chrono::nanoseconds::max() ? std::chrono::steady_clock::time_point::max()
                                                               : deadline_in(d));
    }
    bool wait_until(std::chrono::steady_clock::time_point deadline) const {
        if (finished()) return true;
        if (auto d = driver.lock()) return d->drive_until([this] { return finished(); }, deadline);
        std::unique_lock lock(m);
        if (deadline == std::chrono::steady_clock::time_point::max()) {
            cv.wait(lock, [&] { return status != TaskStatus::pending; });
            return true;
        }
        return cv.wait_until(lock, deadline, [&] { return status != TaskStatus::pending; });
    }
    // Neither finished nor queued: a worker executes it now.
    bool running() const {
        if (finished() || !is_running) return false;
        return is_running(id);
    }
    bool cancel() {
        {
            std::lock_guard lock(m);
            if (status == TaskStatus::cancelled) return true;
            if (status != TaskStatus::pending) return false;
        }
        if (!may_cancel || !may_cancel(id)) return false;
        return complete(TaskStatus::cancelled, {},
                        std::make_exception_ptr(Error(errc::cancelled, what + ": cancelled")));
    }
};

template <class R>
struct ResultOf {
    static R decode(const Bytes& b) {
        if constexpr (is_codable_v<R>) {
            return Codec<R>::decode(b);
        } else {  // only thread tasks and promises make such results, and they set `value`
            throw Error(errc::invalid_state, "a result without a codec was not set as a value");
        }
    }
};
template <>
struct ResultOf<void> {
    static void decode(const Bytes&) {}
};

// Throws the task's error, or returns its result: a copy of `value` when set (a result
// that cannot be copied is moved out, so only the first get() has it), else the decoded
// payload. The task is finished.
template <class R>
R take_result(const TaskState& s) {
    std::lock_guard lock(s.m);
    if (s.status != TaskStatus::ok) std::rethrow_exception(s.error);
    if constexpr (!std::is_void_v<R>) {
        if (s.value) {
            auto* r = static_cast<R*>(s.value.get());
            if constexpr (std::is_copy_constructible_v<R>) {
                return *r;
            } else {
                return std::move(*r);
            }
        }
    }
    return ResultOf<R>::decode(s.payload);
}

[[noreturn]] inline void throw_not_ready(const TaskState& s, std::chrono::nanoseconds d) {
    throw Error(errc::timeout, s.what + ": no result after " +
                                   std::to_string(std::chrono::ceil<std::chrono::milliseconds>(d).count()) +
                                   " ms (the task goes on)");
}

}  // namespace detail

// multiprocessing.pool.AsyncResult: get, get_for, wait, wait_for, ready, successful.
template <class R>
class AsyncResult {
public:
    AsyncResult() = default;
    explicit AsyncResult(std::shared_ptr<detail::TaskState> s) : state_(std::move(s)) {}

    // Blocks for the result; throws what the task threw (RemoteError, worker_died, ...).
    R get() const {
        state_->wait();
        return detail::take_result<R>(*state_);
    }
    // Throws Error(errc::timeout) when not ready within d (the task goes on).
    // Any duration: get_for(2s), get_for(0.5s), get_for(std::chrono::duration<double>(2.1))
    // (rounded up to the next nanosecond).
    template <class Rep, class Period>
    R get_for(std::chrono::duration<Rep, Period> d) const {
        const auto ns = detail::timeout_ns(d);
        if (!state_->wait_for(ns)) detail::throw_not_ready(*state_, ns);
        return detail::take_result<R>(*state_);
    }
    void wait() const { state_->wait(); }
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> d) const {
        return state_->wait_for(detail::timeout_ns(d));
    }
    bool ready() const { return state_->finished(); }
    // Throws Error(errc::invalid_state) when not ready (as Python raises ValueError).
    bool successful() const {
        std::lock_guard lock(state_->m);
        if (state_->status == detail::TaskStatus::pending) {
            throw Error(errc::invalid_state, state_->what + ": successful() before the result is ready");
        }
        return state_->status == detail::TaskStatus::ok;
    }
    std::uint64_t id() const noexcept { return state_->id; }
    const std::shared_ptr<detail::TaskState>& state() const noexcept { return state_; }

private:
    std::shared_ptr<detail::TaskState> state_;
};

// concurrent.futures.Future: result, result_for, done, cancel, cancelled, exception,
// add_done_callback.
template <class R>
class Future {
public:
    Future() = default;
    explicit Future(std::shared_ptr<detail::TaskState> s) : state_(std::move(s)) {}

    R result() const {
        state_->wait();
        return detail::take_result<R>(*state_);
    }
    template <class Rep, class Period>
    R result_for(std::chrono::duration<Rep, Period> d) const {
        const auto ns = detail::timeout_ns(d);
        if (!state_->wait_for(ns)) detail::throw_not_ready(*state_, ns);
        return detail::take_result<R>(*state_);
    }
    // The task's exception (nullptr when it succeeded); blocks until finished.
    std::exception_ptr exception() const {
        state_->wait();
        std::lock_guard lock(state_->m);
        return state_->error;
    }
    bool done() const { return state_->finished(); }
    // True only while a worker executes the task: a queued task is neither running nor done
    // (and cancel() on it succeeds).
    bool running() const { return state_->running(); }
    bool cancelled() const {
        std::lock_guard lock(state_->m);
        return state_->status == detail::TaskStatus::cancelled;
    }
    // Cancels a task no worker has taken yet; false when it runs or has finished.
    bool cancel() { return state_->cancel(); }
    // cb(const Future<R>&) once finished: on the thread that completes the task (for a
    // process pool, the thread that took its result), or now when already done.
    template <class F>
    void add_done_callback(F cb) {
        state_->add_listener([self = *this, cb = std::move(cb)]() mutable { cb(self); });
    }
    void wait() const { state_->wait(); }
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> d) const {
        return state_->wait_for(detail::timeout_ns(d));
    }
    std::uint64_t id() const noexcept { return state_->id; }
    const std::shared_ptr<detail::TaskState>& state() const noexcept { return state_; }

private:
    std::shared_ptr<detail::TaskState> state_;
};

namespace detail {

// Collects completions of a set of tasks in the order they finish. With a driver (every
// task from the same process pool), a thread waiting for the next one drains that pool's
// results itself.
class CompletionQueue {
public:
    void push(std::size_t index) {
        {
            std::lock_guard lock(m_);
            done_.push_back(index);
        }
        cv_.notify_all();
    }
    // Next finished index; nullopt when none finished before the deadline.
    std::optional<std::size_t> pop_until(std::chrono::steady_clock::time_point deadline) {
        if (auto d = driver_.lock()) {
            d->drive_until([this] {
                std::lock_guard lock(m_);
                return !done_.empty();
            }, deadline);
        }
        std::unique_lock lock(m_);
        if (!cv_.wait_until(lock, deadline, [&] { return !done_.empty(); })) return std::nullopt;
        const std::size_t i = done_.front();
        done_.pop_front();
        return i;
    }
    // Call for every task before adding its listener: when all share one driver, waiting
    // drives it; a task without one (a thread pool's) or from another pool turns that off.
    void drive_with(const TaskState& s) {
        if (mixed_) return;
        auto d = s.driver.lock();
        if (d && (!seen_ || d == driver_.lock())) {
            driver_ = d;
        } else {
            mixed_ = true;
            driver_.reset();
        }
        seen_ = true;
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    std::deque<std::size_t> done_;
    std::weak_ptr<CompletionDriver> driver_;  // set before the queue is shared
    bool seen_ = false;
    bool mixed_ = false;
};

}  // namespace detail

// The futures in the order they finish: `for (auto& f : as_completed(fs)) ...`. Iterating
// blocks for each next one; with a timeout, throws Error(errc::timeout) when the next one
// is not finished in time (counted from the call, like Python).
template <class R>
class AsCompleted {
public:
    AsCompleted(std::vector<Future<R>> futures, std::optional<std::chrono::nanoseconds> timeout)
        : futures_(std::move(futures)), queue_(std::make_shared<detail::CompletionQueue>()) {
        deadline_ = timeout ? detail::deadline_in(*timeout) : std::chrono::steady_clock::time_point::max();
        for (const auto& f : futures_) queue_->drive_with(*f.state());
        for (std::size_t i = 0; i < futures_.size(); ++i) {
            futures_[i].state()->add_listener([q = queue_, i] { q->push(i); });
        }
    }

    class iterator {
    public:
        using value_type = Future<R>;
        using difference_type = std::ptrdiff_t;
        iterator() = default;
        explicit iterator(AsCompleted* owner) : owner_(owner) { advance(); }
        const Future<R>& operator*() const { return owner_->futures_[current_]; }
        const Future<R>* operator->() const { return &owner_->futures_[current_]; }
        iterator& operator++() {
            advance();
            return *this;
        }
        void operator++(int) { advance(); }
        bool operator==(const iterator& o) const { return owner_ == o.owner_; }

    private:
        void advance() {
            if (owner_->yielded_ == owner_->futures_.size()) {
                owner_ = nullptr;
                return;
            }
            auto i = owner_->queue_->pop_until(owner_->deadline_);
            if (!i) {
                throw Error(errc::timeout, "as_completed: " +
                                               std::to_string(owner_->futures_.size() - owner_->yielded_) +
                                               " of " + std::to_string(owner_->futures_.size()) +
                                               " futures unfinished at the timeout");
            }
            current_ = *i;
            ++owner_->yielded_;
        }
        AsCompleted* owner_ = nullptr;
        std::size_t current_ = 0;
    };

    iterator begin() { return iterator(this); }
    iterator end() { return iterator(); }

private:
    std::vector<Future<R>> futures_;
    std::shared_ptr<detail::CompletionQueue> queue_;
    std::chrono::steady_clock::time_point deadline_;
    std::size_t yielded_ = 0;
};

template <class R>
AsCompleted<R> as_completed(std::vector<Future<R>> futures) {
    return AsCompleted<R>(std::move(futures), std::nullopt);
}
// With a timeout: any duration (as_completed(fs, 0.5s)).
template <class R, class Rep, class Period>
AsCompleted<R> as_completed(std::vector<Future<R>> futures, std::chrono::duration<Rep, Period> timeout) {
    return AsCompleted<R>(std::move(futures), detail::timeout_ns(timeout));
}

enum class ReturnWhen { first_completed, first_exception, all_completed };

template <class R>
struct DoneAndNotDone {
    std::vector<Future<R>> done;
    std::vector<Future<R>> not_done;
};

// concurrent.futures.wait: blocks until `when` holds or the timeout passes; never throws
// for a timeout (the not_done set says what is left).
template <class R>
DoneAndNotDone<R> wait(const std::vector<Future<R>>& futures, ReturnWhen when = ReturnWhen::all_completed,
                       std::optional<std::chrono::nanoseconds> timeout = std::nullopt) {
    auto queue = std::make_shared<detail::CompletionQueue>();
    for (const auto& f : futures) queue->drive_with(*f.state());
    for (std::size_t i = 0; i < futures.size(); ++i) futures[i].state()->add_listener([queue, i] { queue->push(i); });
    const auto deadline = timeout ? detail::deadline_in(*timeout) : std::chrono::steady_clock::time_point::max();
    std::vector<bool> finished(futures.size(), false);
    std::size_t count = 0;
    while (count < futures.size()) {
        auto i = queue->pop_until(deadline);
        if (!i) break;
        finished[*i] = true;
        ++count;
        if (when == ReturnWhen::first_completed) break;
        if (when == ReturnWhen::first_exception && futures[*i].exception() != nullptr) break;
    }
    DoneAndNotDone<R> out;
    for (std::size_t i = 0; i < futures.size(); ++i) {
        (futures[i].done() ? out.done : out.not_done).push_back(futures[i]);
    }
    return out;
}
// With a timeout: any duration (wait(fs, ReturnWhen::first_completed, 0.5s)).
template <class R, class Rep, class Period>
DoneAndNotDone<R> wait(const std::vector<Future<R>>& futures, ReturnWhen when,
                       std::chrono::duration<Rep, Period> timeout) {
    return wait(futures, when, std::optional<std::chrono::nanoseconds>(detail::timeout_ns(timeout)));
}

}  // namespace shmpipe
