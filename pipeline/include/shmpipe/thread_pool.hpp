// Pools of threads with the process pool's faces: ThreadPool (multiprocessing.dummy.Pool,
// multiprocessing.pool.ThreadPool) and ThreadPoolExecutor (concurrent.futures).
//
//   shmpipe::ThreadPool pool(4);
//   auto r = pool.apply_async([&cache](int x) { return cache.get(x); }, 7);   // AsyncResult<int>
//   auto v = pool.map([](int x) { return x * x; }, xs);                      // ordered, chunked
//   auto f = pool.submit([buf = std::move(buf)] { return parse(buf); });      // Future<Doc>
//   pool.close(); pool.join();
//
// A task is any callable (capturing, move-only) called with the given arguments (stored as
// decayed copies, moved into the call; pass std::ref to share one); no Codec is involved.
// Results are the same AsyncResult<R> / Future<R> a process Pool returns, so wait() and
// as_completed() take futures of both pools in one call. A task's exception reaches get() /
// result() as itself (the stored std::exception_ptr), not as RemoteError.
//
// Threads: ThreadPoolOptions::threads (0: the number of online CPUs), each runs the
// initializer first; if it throws, every task that thread takes fails with that exception.
// Done-callbacks (add_done_callback, apply_async's callback/error_callback) run on the pool thread that finished
// the task, or at once in the registering thread when it has already finished.
//
// Lifecycle: close() takes no more tasks and lets the queued ones run; join() (after close()
// or terminate()) waits for the threads to end; terminate() fails every queued task with
// Error(errc::cancelled) at once. A running task cannot be stopped (threads share the
// process): terminate() and join() wait for it. Destroying a ThreadPool that was not joined
// terminates it (like leaving `with ThreadPool()` in Python); destroying a
// ThreadPoolExecutor calls shutdown(wait=true), as leaving `with ThreadPoolExecutor()` does.
// Submitting after close()/terminate()/shutdown() throws Error(errc::invalid_state);
// join() from one of the pool's own threads too (it would wait for itself).
#pragma once

#include <shmpipe/error.hpp>
#include <shmpipe/future.hpp>
#include <shmpipe/pool.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace shmpipe {

struct ThreadPoolOptions {
    unsigned threads = 0;                    // 0: the number of online CPUs
    std::function<void()> initializer = {};  // run once in every thread before its first task
};

namespace detail {

// One unit of work for a pool thread. Exactly one of run() (on a pool thread) and abandon()
// (terminate, shutdown with cancel_futures) is called; either completes the job's task(s).
class ThreadJob {
public:
    virtual ~ThreadJob() = default;
    virtual void run() noexcept = 0;
    virtual void abandon(const std::exception_ptr& why) noexcept = 0;
};

class ThreadPoolCore;  // thread_pool.cpp

std::shared_ptr<ThreadPoolCore> make_thread_pool_core(ThreadPoolOptions options, const char* face);
// A fresh pending task state: id and "<kind> task <id>" for messages.
std::shared_ptr<TaskState> thread_task_state(ThreadPoolCore& core, const char* kind);
// Queues a job. Throws Error(invalid_state) after close()/terminate() (the job is dropped
// unrun; its task stays pending, so the caller must not hand out its handle).
void thread_pool_post(ThreadPoolCore& core, std::unique_ptr<ThreadJob> job, const char* kind);
unsigned thread_pool_size(const ThreadPoolCore& core) noexcept;
void thread_pool_close(ThreadPoolCore& core);
void thread_pool_join(ThreadPoolCore& core);
void thread_pool_terminate(ThreadPoolCore& core);
void thread_pool_shutdown(ThreadPoolCore& core, bool wait, bool cancel_futures);

// The result of calling a decayed F with decayed arguments, as a value.
template <class F, class... A>
using thread_result_t = std::remove_cvref_t<std::invoke_result_t<std::decay_t<F>, std::decay_t<A>...>>;

// A submitted task's phase, shared by its job and its state's may_cancel / is_running: the
// first to move it from queued either starts the task or cancels it.
enum ThreadTaskPhase : int { kQueued = 0, kRunning = 1, kCancelled = 2 };

// Runs f(args...) into its state. `phase` is set for submit() (cancellable futures) only.
template <class F, class Args>
class CallJob final : public ThreadJob {
public:
    CallJob(std::shared_ptr<TaskState> s, std::shared_ptr<std::atomic<int>> phase, F f, Args args)
        : state_(std::move(s)), phase_(std::move(phase)), f_(std::move(f)), args_(std::move(args)) {}

    void run() noexcept override {
        int queued = kQueued;
        if (phase_ && !phase_->compare_exchange_strong(queued, kRunning)) return;  // cancelled first
        using R = std::remove_cvref_t<decltype(std::apply(std::move(f_), std::move(args_)))>;
        try {
            if constexpr (std::is_void_v<R>) {
                std::apply(std::move(f_), std::move(args_));
                state_->complete(TaskStatus::ok, {}, nullptr);
            } else {
                auto v = std::make_shared<R>(std::apply(std::move(f_), std::move(args_)));
                state_->complete(TaskStatus::ok, {}, nullptr, std::move(v));
            }
        } catch (...) {
            state_->complete(TaskStatus::failed, {}, std::current_exception());
        }
    }
    void abandon(const std::exception_ptr& why) noexcept override {
        state_->complete(TaskStatus::cancelled, {}, why);
    }

private:
    std::shared_ptr<TaskState> state_;
    std::shared_ptr<std::atomic<int>> phase_;
    F f_;
    Args args_;
};

// What a map (f(x)) or starmap (std::apply(f, x)) task returns, as a value.
template <bool Star, class F, class Elem>
struct MapResult {
    using type = std::remove_cvref_t<std::invoke_result_t<F&, Elem&&>>;
};
template <class F, class Elem>
struct MapResult<true, F, Elem> {
    using type = std::remove_cvref_t<decltype(std::apply(std::declval<F&>(), std::declval<Elem&&>()))>;
};

// A map over copied inputs, split into chunk jobs; the last chunk to finish completes the
// one task with the results in input order, or with the error of the earliest failing input.
template <bool Star, class F, class Elem>
class MapRun {
public:
    using R = typename MapResult<Star, F, Elem>::type;

    MapRun(std::shared_ptr<TaskState> s, F f, std::vector<Elem> in, std::size_t chunks)
        : state_(std::move(s)), f_(std::move(f)), in_(std::move(in)), left_(chunks), error_at_(in_.size()) {
        if constexpr (!std::is_void_v<R>) out_.resize(in_.size());
    }

    void run_chunk(std::size_t first, std::size_t last) noexcept {
        for (std::size_t i = first; i < last; ++i) {
            try {
                if constexpr (std::is_void_v<R>) {
                    call(i);
                } else if constexpr (kDirect) {
                    out_[i] = call(i);
                } else {
                    out_[i].emplace(call(i));
                }
            } catch (...) {
                fail(i, std::current_exception());
                break;  // like Python, a failed chunk stops there
            }
        }
        finish_chunk();
    }
    void abandon_chunk(std::size_t first, const std::exception_ptr& why) noexcept {
        fail(first, why);
        finish_chunk();
    }

private:
    decltype(auto) call(std::size_t i) {
        if constexpr (Star) {
            return std::apply(f_, std::move(in_[i]));
        } else {
            return std::invoke(f_, std::move(in_[i]));
        }
    }
    void fail(std::size_t i, std::exception_ptr e) noexcept {
        std::lock_guard lock(error_m_);
        if (i < error_at_) {
            error_at_ = i;
            error_ = std::move(e);
        }
    }
    void finish_chunk() noexcept {
        if (left_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;  // acq_rel: every chunk's writes
        if (error_) {
            state_->complete(TaskStatus::failed, {}, error_);
            return;
        }
        try {
            if constexpr (std::is_void_v<R>) {
                state_->complete(TaskStatus::ok, {}, nullptr);
            } else if constexpr (kDirect) {
                state_->complete(TaskStatus::ok, {}, nullptr, std::make_shared<std::vector<R>>(std::move(out_)));
            } else {
                auto all = std::make_shared<std::vector<R>>();
                all->reserve(out_.size());
                for (auto& r : out_) all->push_back(std::move(*r));
                state_->complete(TaskStatus::ok, {}, nullptr, std::move(all));
            }
        } catch (...) {
            state_->complete(TaskStatus::failed, {}, std::current_exception());
        }
    }

    std::shared_ptr<TaskState> state_;
    F f_;
    std::vector<Elem> in_;
    // Results in place when R is default-constructible (and not bool: vector<bool> packs bits,
    // and chunks write neighbouring elements from different threads), else optional slots.
    using Out = std::conditional_t<std::is_void_v<R>, char, R>;
    static constexpr bool kDirect = std::is_default_constructible_v<Out> && !std::is_same_v<Out, bool>;
    std::vector<std::conditional_t<kDirect, Out, std::optional<Out>>> out_;
    std::atomic<std::size_t> left_;
    std::mutex error_m_;
    std::size_t error_at_;
    std::exception_ptr error_;
};

// Waits for the result of a task whose only handle is the caller's (a blocking map) and
// moves it out instead of copying it.
template <class R>
R sole_result(const AsyncResult<R>& r) {
    r.wait();
    TaskState& s = *r.state();
    std::lock_guard lock(s.m);
    if (s.status != TaskStatus::ok) std::rethrow_exception(s.error);
    if constexpr (!std::is_void_v<R>) return std::move(*static_cast<R*>(s.value.get()));
}

template <class Run>
class ChunkJob final : public ThreadJob {
public:
    ChunkJob(std::shared_ptr<Run> run, std::size_t first, std::size_t last)
        : run_(std::move(run)), first_(first), last_(last) {}
    void run() noexcept override { run_->run_chunk(first_, last_); }
    void abandon(const std::exception_ptr& why) noexcept override { run_->abandon_chunk(first_, why); }

private:
    std::shared_ptr<Run> run_;
    std::size_t first_;
    std::size_t last_;
};

}  // namespace detail

class ThreadPool {
public:
    // Starts the threads (0: one per online CPU).
    explicit ThreadPool(unsigned threads = 0) : ThreadPool(ThreadPoolOptions{threads}) {}
    explicit ThreadPool(ThreadPoolOptions options)
        : core_(detail::make_thread_pool_core(std::move(options), "ThreadPool")) {}
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;
    // Unless join() completed: terminate(), then wait for the running tasks.
    ~ThreadPool();

    // Blocks for f(args...); throws what f threw.
    template <class F, class... A>
    auto apply(F&& f, A&&... args) {
        return apply_async(std::forward<F>(f), std::forward<A>(args)...).get();
    }

    // f(args...) on a thread; the result later. Optional callbacks after the arguments, as
    // for Pool: apply_async(f, x, shmpipe::callback(on_result), shmpipe::error_callback(on_error));
    // on_result(R) (on_result() for a void task) or on_error(std::exception_ptr), on the
    // pool thread that ran the task.
    template <class F, class... A>
    auto apply_async(F&& f, A&&... args) {
        constexpr std::size_t tags =
            (std::size_t{0} + ... + (detail::is_callback_tag_v<std::remove_cvref_t<A>> ? 1 : 0));
        return apply_async_split(std::forward<F>(f), std::forward_as_tuple(std::forward<A>(args)...),
                                 std::make_index_sequence<sizeof...(A) - tags>{}, std::make_index_sequence<tags>{});
    }

    // A cancellable Future<R>: cancel() succeeds while no thread has started the task;
    // running() is true while a thread runs it.
    template <class F, class... A>
    auto submit(F&& f, A&&... args) {
        using R = detail::thread_result_t<F, A...>;
        return Future<R>(post_call("submit", true, std::forward<F>(f), std::forward<A>(args)...));
    }

    // f over every element, results in input order (a task returning void gives void).
    // chunksize 0: Python's default, len / (4 * threads) rounded up. The input is copied.
    template <class F, class Range>
    auto map(F f, const Range& xs, std::size_t chunksize = 0) {
        return detail::sole_result(map_async(std::move(f), xs, chunksize));
    }
    template <class F, class Range>
    auto map_async(F f, const Range& xs, std::size_t chunksize = 0) {
        return post_map<false>("map", std::move(f), std::begin(xs), std::end(xs), chunksize);
    }
    // std::apply(f, element) for every tuple-like element (Python's starmap).
    template <class F, class Range>
    auto starmap(F f, const Range& xs, std::size_t chunksize = 0) {
        return detail::sole_result(starmap_async(std::move(f), xs, chunksize));
    }
    template <class F, class Range>
    auto starmap_async(F f, const Range& xs, std::size_t chunksize = 0) {
        return post_map<true>("starmap", std::move(f), std::begin(xs), std::end(xs), chunksize);
    }
    // Lazy and ordered, at most `lookahead` chunks in flight (0: 2 * threads); the input
    // range must outlive the iteration.
    template <class F, class Range>
    auto imap(F f, const Range& xs, std::size_t chunksize = 1, std::size_t lookahead = 0) {
        return make_imap(std::move(f), xs, chunksize, lookahead, true);
    }
    // Lazy, in completion order (per chunk).
    template <class F, class Range>
    auto imap_unordered(F f, const Range& xs, std::size_t chunksize = 1, std::size_t lookahead = 0) {
        return make_imap(std::move(f), xs, chunksize, lookahead, false);
    }

    // No more tasks; the queued ones still run.
    void close() { detail::thread_pool_close(*core_); }
    // Waits for the threads to end. Error(invalid_state) unless close() or terminate() came first.
    void join() { detail::thread_pool_join(*core_); }
    // Fails the queued tasks with Error(errc::cancelled); running ones finish (join waits).
    void terminate() { detail::thread_pool_terminate(*core_); }
    // concurrent.futures: close; fail what no thread started (cancel_futures); join if wait.
    void shutdown(bool wait = true, bool cancel_futures = false) {
        detail::thread_pool_shutdown(*core_, wait, cancel_futures);
    }
    unsigned size() const noexcept { return detail::thread_pool_size(*core_); }

private:
    template <class F, class Tuple, std::size_t... I, std::size_t... J>
    auto apply_async_split(F&& f, Tuple&& all, std::index_sequence<I...>, std::index_sequence<J...>) {
        constexpr std::size_t n = sizeof...(I);
        detail::check_callback_tags<Tuple, n>(std::index_sequence<I...>{}, std::index_sequence<J...>{});
        using R = detail::thread_result_t<F, std::tuple_element_t<I, Tuple>...>;
        auto state = post_call("apply_async", false, std::forward<F>(f),
                               std::forward<std::tuple_element_t<I, Tuple>>(std::get<I>(all))...);
        if constexpr (sizeof...(J) != 0) {
            detail::attach_callbacks<R>(
                state, std::tuple<std::remove_cvref_t<std::tuple_element_t<n + J, Tuple>>...>(std::get<n + J>(all)...));
        }
        return AsyncResult<R>(state);
    }

    template <class F, class... A>
    std::shared_ptr<detail::TaskState> post_call(const char* kind, bool cancellable, F&& f, A&&... args) {
        static_assert(std::is_invocable_v<std::decay_t<F>, std::decay_t<A>...>,
                      "shmpipe::ThreadPool: the task cannot be called with these arguments (they are "
                      "passed as decayed copies: use std::ref for a reference)");
        using Args = std::tuple<std::decay_t<A>...>;
        auto state = detail::thread_task_state(*core_, kind);
        std::shared_ptr<std::atomic<int>> phase;
        if (cancellable) {
            phase = std::make_shared<std::atomic<int>>(detail::kQueued);
            state->may_cancel = [phase](std::uint64_t) {
                int queued = detail::kQueued;
                return phase->compare_exchange_strong(queued, detail::kCancelled);
            };
            state->is_running = [phase](std::uint64_t) { return phase->load() == detail::kRunning; };
        }
        detail::thread_pool_post(*core_,
                                 std::make_unique<detail::CallJob<std::decay_t<F>, Args>>(
                                     state, std::move(phase), std::forward<F>(f), Args(std::forward<A>(args)...)),
                                 kind);
        return state;
    }

    template <bool Star, class F, class It>
    auto post_map(const char* kind, F f, It first, It last, std::size_t chunksize) {
        using Elem = std::iter_value_t<It>;
        using Run = detail::MapRun<Star, F, Elem>;
        using R = typename Run::R;
        using Result = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
        std::vector<Elem> in(first, last);
        const std::size_t n = in.size();
        std::size_t c = chunksize;
        if (c == 0) c = n == 0 ? 1 : (n + 4 * size() - 1) / (4 * size());
        const std::size_t chunks = n == 0 ? 0 : (n + c - 1) / c;
        auto state = detail::thread_task_state(*core_, kind);
        if (chunks == 0) {
            if constexpr (std::is_void_v<R>) {
                state->complete(detail::TaskStatus::ok, {}, nullptr);
            } else {
                state->complete(detail::TaskStatus::ok, {}, nullptr, std::make_shared<std::vector<R>>());
            }
            return AsyncResult<Result>(state);
        }
        auto run = std::make_shared<Run>(state, std::move(f), std::move(in), chunks);
        for (std::size_t at = 0; at < n; at += c) {
            auto job = std::make_unique<detail::ChunkJob<Run>>(run, at, std::min(at + c, n));
            try {
                detail::thread_pool_post(*core_, std::move(job), kind);
            } catch (...) {
                // Closed meanwhile: the chunks not queued fail, so the task still completes.
                const auto why = std::current_exception();
                for (std::size_t rest = at; rest < n; rest += c) run->abandon_chunk(rest, why);
                throw;
            }
        }
        return AsyncResult<Result>(state);
    }

    template <class F, class Range>
    auto make_imap(F f, const Range& xs, std::size_t chunksize, std::size_t lookahead, bool ordered) {
        using Elem = std::ranges::range_value_t<const Range>;
        using R = typename detail::MapResult<false, F, Elem>::type;
        static_assert(!std::is_void_v<R>, "shmpipe::ThreadPool::imap: the task must return a value");
        const std::size_t c = std::max<std::size_t>(chunksize, 1);
        // One shared callable for every chunk (f need not be copyable).
        auto call = [shared = std::make_shared<F>(std::move(f))](auto&& x) -> R {
            return std::invoke(*shared, std::forward<decltype(x)>(x));
        };
        auto submit_next = [this, call, c, it = std::begin(xs), end = std::end(xs)]() mutable
            -> std::shared_ptr<detail::TaskState> {
            if (it == end) return nullptr;
            auto stop = it;
            for (std::size_t k = 0; k < c && stop != end; ++k) ++stop;
            auto r = post_map<false>("imap", call, it, stop, c);
            it = stop;
            return r.state();
        };
        return IMapResult<R>(std::move(submit_next), lookahead != 0 ? lookahead : 2 * size(), ordered);
    }

    std::shared_ptr<detail::ThreadPoolCore> core_;
};

// concurrent.futures.ThreadPoolExecutor: submit, map, shutdown; destroying it waits for
// every submitted task (shutdown(wait=true)).
class ThreadPoolExecutor {
public:
    explicit ThreadPoolExecutor(unsigned max_workers = 0) : pool_(max_workers) {}
    explicit ThreadPoolExecutor(ThreadPoolOptions options) : pool_(std::move(options)) {}
    ~ThreadPoolExecutor() {
        try {
            pool_.shutdown(true);
        } catch (...) {  // a destructor must not throw; ~ThreadPool still stops the threads
        }
    }

    template <class F, class... A>
    auto submit(F&& f, A&&... args) {
        return pool_.submit(std::forward<F>(f), std::forward<A>(args)...);
    }
    // f over every element, results in input order (void for a void task); throws the
    // earliest input's exception. With a timeout (any duration, counted from the call):
    // Error(errc::timeout) when not every result is ready in time (the tasks go on).
    // chunksize 1 as in Python.
    template <class F, class Range>
    auto map(F f, const Range& xs) {
        return map_for(std::move(f), xs, std::nullopt, 1);
    }
    template <class F, class Range, class Rep, class Period>
    auto map(F f, const Range& xs, std::chrono::duration<Rep, Period> timeout, std::size_t chunksize = 1) {
        return map_for(std::move(f), xs, std::chrono::ceil<std::chrono::nanoseconds>(timeout), chunksize);
    }
    // No timeout, a chunk size: map(f, xs, std::nullopt, 64).
    template <class F, class Range>
    auto map(F f, const Range& xs, std::nullopt_t, std::size_t chunksize) {
        return map_for(std::move(f), xs, std::nullopt, chunksize);
    }
    void shutdown(bool wait = true, bool cancel_futures = false) { pool_.shutdown(wait, cancel_futures); }
    unsigned size() const noexcept { return pool_.size(); }

private:
    template <class F, class Range>
    auto map_for(F f, const Range& xs, std::optional<std::chrono::nanoseconds> timeout, std::size_t chunksize) {
        auto r = pool_.map_async(std::move(f), xs, std::max<std::size_t>(chunksize, 1));
        if (timeout && !r.wait_for(*timeout)) detail::throw_not_ready(*r.state(), *timeout);
        return detail::sole_result(r);
    }

    ThreadPool pool_;
};

}  // namespace shmpipe
