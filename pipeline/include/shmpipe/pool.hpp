// A pool of forked worker processes fed through shmpipe queues: multiprocessing.Pool and
// concurrent.futures.ProcessPoolExecutor for C++, without their failure modes.
//
//   int square(int x) { return x * x; }
//   shmpipe::Pool pool(3);
//   pool.apply(square, 7);                         // 49
//   auto r = pool.apply_async(square, 7);          // r.get_for(2s)
//   auto v = pool.map(square, xs);                 // chunked, ordered
//   for (int y : pool.imap(square, xs)) ...        // lazy, bounded look-ahead
//   auto f = pool.submit(square, 7);               // Future<int>
//   pool.close(); pool.join();                     // or pool.shutdown()
//
// Tasks are plain functions or captureless lambdas; their arguments and results travel as
// bytes through shmpipe::Codec (a result type without a codec is a compile error). A task
// message carries the function's address: workers are forked from the pool's collector
// thread and share the parent's address space layout, so the address names the same
// function there; a typed trampoline decodes, calls and encodes.
//
// Queues: "shmpipe.pool-<pid>-<n>-tasks" (MPMC, parent -> workers) and "...-results"
// (workers -> parent), created by the pool and removed when it ends. A background thread in
// the parent (the collector) takes results, completes futures, runs callbacks, watches the
// workers and replaces the ones that die.
//
// Failure handling:
//   - an exception in a task reaches the caller as shmpipe::RemoteError (type name, what());
//   - a worker that dies (crash, SIGKILL, OOM) fails the task it held with
//     Error(errc::worker_died) naming the exit code or signal; a replacement starts and
//     the pool goes on; nothing waits forever on a dead worker;
//   - PoolOptions::task_timeout kills the worker holding a task that runs too long and
//     fails that task with Error(errc::timeout);
//   - workers get the parent-death signal: if the parent dies, they die.
//   - workers inherit no descriptor except stdio and PoolOptions::keep_fds.
// Misuse: submitting after close()/terminate() or join() before close() throws
// Error(errc::invalid_state).
//
// Submitting blocks only while the task queue is full, and never blocks close(),
// terminate() or other submitters meanwhile (a submit waiting for room when the pool is
// closed or terminated throws invalid_state). A task submitted from a done-callback (on the
// collector thread) never waits: it is queued in the parent until there is room.
//
// Destroying a Pool that was not joined terminates it (like leaving `with Pool()` in
// Python): unfinished tasks fail with errc::cancelled and nothing waits on a stuck task.
// To let queued tasks finish, call close() and join() (or shutdown()) first.
//
// A cancelled future (cancel() succeeds only while no worker has taken the task) may still
// be run by a worker later; its result is discarded.
#pragma once

#include <shmpipe/codec.hpp>
#include <shmpipe/detail/pool_task.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/future.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace shmpipe {

struct PoolOptions {
    unsigned processes = 0;                  // 0: the number of online CPUs
    std::function<void()> initializer = {};  // run once in every worker before its first task
    unsigned max_tasks_per_child = 0;        // 0: unlimited; else a worker is replaced after that many
    std::chrono::milliseconds task_timeout{0};  // 0: none; else a longer task kills its worker
    std::size_t max_message = std::size_t{256} << 10;  // largest task or result message (bytes)
    // Bytes of each queue: capacity / max_message messages wait at most. 0: what the pool
    // needs, 4 messages per worker, at least 16 and at most 128 (4 MiB per queue for up to 4
    // workers at the default max_message); submitters wait for room beyond that.
    std::size_t queue_capacity = 0;
    std::chrono::milliseconds stop_grace{1000};  // terminate(): SIGTERM, then SIGKILL after this
    // Workers inherit no descriptor but 0, 1, 2 and these (same numbers; each must be open).
    std::vector<int> keep_fds = {};
};
class Pool;

namespace detail {

class PoolCore;

// Submits one encoded task; returns its state. Defined in pool.cpp.
std::shared_ptr<TaskState> pool_submit(PoolCore& core, Trampoline t, std::uint64_t fn,
                                       std::span<const std::byte> args, const char* kind);
std::size_t pool_max_payload(const PoolCore& core) noexcept;
unsigned pool_size(const PoolCore& core) noexcept;

template <class R>
void append_chunk(std::vector<R>& out, const std::shared_ptr<TaskState>& s) {
    s->wait();
    if constexpr (std::is_trivially_copyable_v<R>) {
        // Flat results: straight from the payload into place (the codec's encoding is the bytes).
        std::lock_guard lock(s->m);
        if (s->status == TaskStatus::ok && s->payload.size() % sizeof(R) == 0) {
            const std::size_t at = out.size();
            out.resize(at + s->payload.size() / sizeof(R));
            if (!s->payload.empty()) std::memcpy(out.data() + at, s->payload.data(), s->payload.size());
            return;
        }
    }
    auto part = take_result<std::vector<R>>(*s);
    out.insert(out.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
}

}  // namespace detail

// The lazy result of imap / imap_unordered: `for (auto& r : it)`, or next() / next_for().
// Keeps at most `lookahead` chunks in flight, so a huge input never floods memory or the
// queue. The input range must outlive the iteration.
template <class R>
class IMapResult {
public:
    using SubmitNext = std::function<std::shared_ptr<detail::TaskState>()>;  // nullptr: input exhausted

    IMapResult(SubmitNext submit_next, std::size_t lookahead, bool ordered)
        : submit_next_(std::move(submit_next)),
          lookahead_(std::max<std::size_t>(lookahead, 1)),
          ordered_(ordered),
          done_queue_(std::make_shared<detail::CompletionQueue>()) {}

    // The next result; nullopt when all are consumed. Throws what the task threw.
    std::optional<R> next() { return next_until(std::chrono::steady_clock::time_point::max()); }
    // Throws Error(errc::timeout) when the next result is not ready in time (it goes on).
    template <class Rep, class Period>
    std::optional<R> next_for(std::chrono::duration<Rep, Period> d) {
        return next_until(std::chrono::steady_clock::now() + d);
    }

    class iterator {
    public:
        using value_type = R;
        using difference_type = std::ptrdiff_t;
        iterator() = default;
        explicit iterator(IMapResult* owner) : owner_(owner) { ++*this; }
        R& operator*() { return *value_; }
        iterator& operator++() {
            value_ = owner_->next();
            if (!value_) owner_ = nullptr;
            return *this;
        }
        void operator++(int) { ++*this; }
        bool operator==(const iterator& o) const { return owner_ == o.owner_; }

    private:
        IMapResult* owner_ = nullptr;
        std::optional<R> value_;
    };
    iterator begin() { return iterator(this); }
    iterator end() { return iterator(); }

private:
    void fill() {
        while (!exhausted_ && in_flight_.size() < lookahead_) {
            auto s = submit_next_();
            if (!s) {
                exhausted_ = true;
                break;
            }
            const std::size_t slot = next_slot_++;
            in_flight_.emplace_back(slot, s);
            if (!ordered_) s->add_listener([q = done_queue_, slot] { q->push(slot); });
        }
    }
    std::optional<R> next_until(std::chrono::steady_clock::time_point deadline) {
        while (buffer_.empty()) {
            fill();
            if (in_flight_.empty()) return std::nullopt;
            std::shared_ptr<detail::TaskState> s;
            if (ordered_) {
                s = in_flight_.front().second;
                const auto left = deadline - std::chrono::steady_clock::now();
                if (deadline != std::chrono::steady_clock::time_point::max() && !s->wait_for(left)) {
                    throw Error(errc::timeout, "imap: next result not ready in time (the tasks go on)");
                }
                s->wait();
                in_flight_.pop_front();
            } else {
                auto slot = done_queue_->pop_until(deadline);
                if (!slot) throw Error(errc::timeout, "imap_unordered: no result ready in time (the tasks go on)");
                auto it = std::find_if(in_flight_.begin(), in_flight_.end(),
                                       [&](const auto& p) { return p.first == *slot; });
                s = it->second;
                in_flight_.erase(it);
            }
            auto part = detail::take_result<std::vector<R>>(*s);
            for (auto& r : part) buffer_.push_back(std::move(r));
        }
        R r = std::move(buffer_.front());
        buffer_.pop_front();
        return r;
    }

    SubmitNext submit_next_;
    std::size_t lookahead_;
    bool ordered_;
    bool exhausted_ = false;
    std::size_t next_slot_ = 0;
    std::deque<std::pair<std::size_t, std::shared_ptr<detail::TaskState>>> in_flight_;
    std::shared_ptr<detail::CompletionQueue> done_queue_;
    std::deque<R> buffer_;
};

class Pool {
public:
    // Starts the workers (Error(errc::spawn_failed) if a fork fails) and the collector thread.
    explicit Pool(unsigned processes = 0);
    explicit Pool(PoolOptions options);
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;
    // Unless join() completed: terminate() (like `with Pool()` in Python), even after close(),
    // so an exception unwinding past the pool never waits on a stuck task. Removes the queues.
    ~Pool();

    // Blocks for the result of f(args...). Throws what the task threw.
    template <class F, class... A>
        requires detail::TaskFunction<F>
    auto apply(F f, A&&... args) {
        return apply_async(f, std::forward<A>(args)...).get();
    }

    template <class F, class... A>
        requires detail::TaskFunction<F>
    auto apply_async(F f, A&&... args) {
        using R = typename detail::FnTraits<detail::fn_ptr_t<F>>::result;
        return AsyncResult<R>(submit_one(f, "apply_async", std::forward<A>(args)...));
    }

    // Python's apply_async(func, args, callback=, error_callback=): on_result(R) on success,
    // on_error(std::exception_ptr) on failure, both on the collector thread.
    template <class F, class... A, class OnResult, class OnError>
        requires detail::TaskFunction<F>
    auto apply_async_with(F f, std::tuple<A...> args, OnResult on_result, OnError on_error) {
        using R = typename detail::FnTraits<detail::fn_ptr_t<F>>::result;
        auto state = std::apply([&](auto&&... a) { return submit_one(f, "apply_async", a...); }, args);
        state->add_listener([s = state, on_result = std::move(on_result), on_error = std::move(on_error)]() mutable {
            std::exception_ptr e;
            {
                std::lock_guard lock(s->m);
                e = s->error;
            }
            if (e) {
                on_error(e);
            } else if constexpr (std::is_void_v<R>) {
                on_result();
            } else {
                on_result(detail::take_result<R>(*s));
            }
        });
        return AsyncResult<R>(state);
    }

    template <class F, class... A>
        requires detail::TaskFunction<F>
    auto submit(F f, A&&... args) {
        using R = typename detail::FnTraits<detail::fn_ptr_t<F>>::result;
        return Future<R>(submit_one(f, "submit", std::forward<A>(args)...));
    }

    // f over every element, results in input order. chunksize 0: Python's default
    // (len / (4 * processes)), capped so a chunk fits in one message.
    template <class F, class Range>
        requires detail::TaskFunction<F>
    auto map(F f, const Range& xs, std::size_t chunksize = 0) {
        return map_chunks<false>(f, xs, chunksize);
    }
    // f(args...) for every tuple in xs (Python's starmap).
    template <class F, class Range>
        requires detail::TaskFunction<F>
    auto starmap(F f, const Range& xs, std::size_t chunksize = 0) {
        return map_chunks<true>(f, xs, chunksize);
    }
    // Lazy and ordered; at most `lookahead` chunks in flight (0: 2 * processes).
    template <class F, class Range>
        requires detail::TaskFunction<F>
    auto imap(F f, const Range& xs, std::size_t chunksize = 1, std::size_t lookahead = 0) {
        return make_imap(f, xs, chunksize, lookahead, true);
    }
    // Lazy, in completion order (per chunk).
    template <class F, class Range>
        requires detail::TaskFunction<F>
    auto imap_unordered(F f, const Range& xs, std::size_t chunksize = 1, std::size_t lookahead = 0) {
        return make_imap(f, xs, chunksize, lookahead, false);
    }

    // No more tasks; the workers finish what is queued and exit.
    void close();
    // Waits for the workers to exit. Throws Error(errc::invalid_state) unless close() or
    // terminate() came first.
    void join();
    // Stops the workers now (SIGTERM, grace, SIGKILL, reap); unfinished tasks fail with
    // Error(errc::cancelled).
    void terminate();
    // concurrent.futures: close; cancel what no worker took (cancel_pending); join if wait.
    void shutdown(bool wait = true, bool cancel_pending = false);

    unsigned size() const noexcept;
    // The live workers' pids (for tests and supervision).
    std::vector<int> worker_pids() const;
    // Workers started so far, replacements included.
    std::uint64_t workers_started() const noexcept;
    const std::string& tasks_queue_name() const noexcept;
    const std::string& results_queue_name() const noexcept;

private:
    template <class F, class... A>
    std::shared_ptr<detail::TaskState> submit_one(F f, const char* kind, A&&... args) {
        using Fp = detail::fn_ptr_t<F>;
        using T = detail::FnTraits<Fp>;
        using R = typename T::result;
        static_assert(std::is_void_v<R> || is_codable_v<R>,
                      "shmpipe::Pool: the task's result type has no shmpipe::Codec (see codec.hpp)");
        static_assert(is_codable_v<typename T::args> || T::arity == 0,
                      "shmpipe::Pool: an argument type has no shmpipe::Codec (see codec.hpp)");
        static_assert(T::no_mutable_refs, "shmpipe::Pool: a task cannot take non-const references (it runs "
                                          "in another process); take the value and return the result");
        static_assert(sizeof...(A) == T::arity, "shmpipe::Pool: wrong number of arguments for the task");
        typename T::args packed{std::forward<A>(args)...};
        Bytes& buf = scratch();
        detail::encode_args(packed, buf);
        return detail::pool_submit(*core_, &detail::call_one<Fp>, detail::fn_bits(+f), buf, kind);
    }

    template <bool Star, class F, class Range>
    std::shared_ptr<detail::TaskState> submit_range(F f, const Range&, auto first, auto last) {
        using Fp = detail::fn_ptr_t<F>;
        using T = detail::FnTraits<Fp>;
        using Elem = std::conditional_t<Star, typename T::args, std::tuple_element_t<0, typename T::args>>;
        using It = decltype(first);
        if constexpr (std::contiguous_iterator<It> && std::is_same_v<std::iter_value_t<It>, Elem> &&
                      std::is_trivially_copyable_v<Elem>) {
            // A flat vector's encoding is its bytes: submit straight from the input.
            const auto count = static_cast<std::size_t>(last - first);
            const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(std::to_address(first)),
                                                   count * sizeof(Elem));
            if constexpr (Star) {
                return detail::pool_submit(*core_, &detail::call_star_chunk<Fp>, detail::fn_bits(+f), bytes, "starmap");
            } else {
                return detail::pool_submit(*core_, &detail::call_chunk<Fp>, detail::fn_bits(+f), bytes, "map");
            }
        }
        std::vector<Elem> part;
        part.reserve(static_cast<std::size_t>(std::distance(first, last)));
        for (auto it = first; it != last; ++it) part.push_back(Elem(*it));
        Bytes& buf = scratch();
        detail::encode_into(part, buf);
        if constexpr (Star) {
            return detail::pool_submit(*core_, &detail::call_star_chunk<Fp>, detail::fn_bits(+f), buf, "starmap");
        } else {
            return detail::pool_submit(*core_, &detail::call_chunk<Fp>, detail::fn_bits(+f), buf, "map");
        }
    }

    template <bool Star, class F, class Range>
    void check_chunk_types() {
        using T = detail::FnTraits<detail::fn_ptr_t<F>>;
        using R = typename T::result;
        static_assert(!std::is_void_v<R>, "shmpipe::Pool::map: the task must return a value");
        static_assert(is_codable_v<R>, "shmpipe::Pool: the task's result type has no shmpipe::Codec");
        static_assert(Star || T::arity == 1, "shmpipe::Pool::map: the task takes one argument (use starmap)");
        static_assert(T::no_mutable_refs, "shmpipe::Pool: a task cannot take non-const references");
    }

    template <bool Star, class F, class Range>
    std::size_t pick_chunksize(const Range& xs, std::size_t chunksize) {
        using T = detail::FnTraits<detail::fn_ptr_t<F>>;
        using R = typename T::result;
        using Elem = std::conditional_t<Star, typename T::args, std::tuple_element_t<0, typename T::args>>;
        const auto n = static_cast<std::size_t>(std::size(xs));
        if (chunksize != 0 || n == 0) return std::max<std::size_t>(chunksize, 1);
        const std::size_t workers = detail::pool_size(*core_);
        std::size_t c = (n + 4 * workers - 1) / (4 * workers);
        // Keep a chunk (and its results) inside one message, judging by the first element.
        const Elem first(*std::begin(xs));
        std::size_t per = Codec<Elem>::size(first) + (std::is_trivially_copyable_v<Elem> ? 0 : 4);
        if constexpr (std::is_trivially_copyable_v<R>) per = std::max(per, sizeof(R));
        per = std::max<std::size_t>(per * 2, 1);  // headroom for elements larger than the first
        const std::size_t cap = std::max<std::size_t>(detail::pool_max_payload(*core_) / per, 1);
        return std::clamp<std::size_t>(c, 1, cap);
    }

    template <bool Star, class F, class Range>
    std::vector<std::shared_ptr<detail::TaskState>> submit_chunks(F f, const Range& xs, std::size_t chunksize) {
        check_chunk_types<Star, F, Range>();
        const std::size_t c = pick_chunksize<Star, F>(xs, chunksize);
        std::vector<std::shared_ptr<detail::TaskState>> chunks;
        auto it = std::begin(xs);
        const auto end = std::end(xs);
        while (it != end) {
            auto stop = it;
            for (std::size_t k = 0; k < c && stop != end; ++k) ++stop;
            chunks.push_back(submit_range<Star>(f, xs, it, stop));
            it = stop;
        }
        return chunks;
    }

    template <bool Star, class F, class Range>
    auto map_chunks(F f, const Range& xs, std::size_t chunksize) {
        using R = typename detail::FnTraits<detail::fn_ptr_t<F>>::result;
        auto chunks = submit_chunks<Star>(f, xs, chunksize);
        std::vector<R> out;
        out.reserve(static_cast<std::size_t>(std::size(xs)));
        for (auto& s : chunks) detail::append_chunk(out, s);
        return out;
    }

    template <class F, class Range>
    auto make_imap(F f, const Range& xs, std::size_t chunksize, std::size_t lookahead, bool ordered) {
        check_chunk_types<false, F, Range>();
        using R = typename detail::FnTraits<detail::fn_ptr_t<F>>::result;
        const std::size_t c = std::max<std::size_t>(chunksize, 1);
        auto submit_next = [this, f, c, it = std::begin(xs), end = std::end(xs), &xs]() mutable
            -> std::shared_ptr<detail::TaskState> {
            if (it == end) return nullptr;
            auto stop = it;
            for (std::size_t k = 0; k < c && stop != end; ++k) ++stop;
            auto s = submit_range<false>(f, xs, it, stop);
            it = stop;
            return s;
        };
        return IMapResult<R>(std::move(submit_next), lookahead != 0 ? lookahead : 2 * size(), ordered);
    }

    static Bytes& scratch();

    std::shared_ptr<detail::PoolCore> core_;
};

}  // namespace shmpipe
