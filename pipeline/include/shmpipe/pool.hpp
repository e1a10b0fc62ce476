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
// ProcessPoolExecutor (below) is the concurrent.futures face of the same engine (PoolCore):
// submit, map with a timeout, shutdown; it waits on destruction where Pool terminates.
//
// Tasks are plain functions or captureless lambdas; their arguments and results travel as
// bytes through shmpipe::Codec. The common mistakes (a capturing lambda, a wrong number of
// arguments, a non-const reference parameter, a type without a Codec, imap of a void task)
// are each one static_assert naming the cause (detail::check_task). A task
// message carries the function's address: workers are forked from the pool's collector
// thread and share the parent's address space layout, so the address names the same
// function there; a typed trampoline decodes, calls and encodes.
//
// Queues: "shmpipe.pool-<pid>-<n>-tasks" (MPMC, parent -> workers) and "...-results"
// (workers -> parent), created by the pool and removed when it ends. A thread that waits for
// a result (get, result, wait, map, imap, as_completed, wait()) takes results from the
// queue itself and completes the other callers' futures as it goes (one waiting thread at a
// time; the others wait for it); when no thread waits, a background thread in the parent
// (the collector) takes them. The collector also watches the workers and replaces the ones
// that die. One idle worker at a time waits on the task queue; the others sleep until a
// task is queued for them.
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
// thread that took the result, see future.hpp) never waits: it is queued in the parent
// until there is room.
//
// Destroying a Pool that was not joined terminates it (like leaving `with Pool()` in
// Python): unfinished tasks fail with errc::cancelled and nothing waits on a stuck task.
// To let queued tasks finish, call close() and join() (or shutdown()) first.
//
// A cancelled future (cancel() succeeds only while no worker has taken the task) is not run:
// the worker that takes it skips it, as Python never runs a cancelled task. Only a worker
// that took it in the instant of the cancel (or after 256 newer cancellations) runs it, and
// its result is dropped.
#pragma once

#include <shmpipe/codec.hpp>
#include <shmpipe/detail/pool_task.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/future.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
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
        return next_until(detail::deadline_in(detail::timeout_ns(d)));
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
            if (!ordered_) {
                done_queue_->drive_with(*s);
                s->add_listener([q = done_queue_, slot] { q->push(slot); });
            }
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

// apply_async's optional callbacks, Python's callback= and error_callback=, named so they
// cannot be taken for a task argument (a tuple argument stays an argument):
//   pool.apply_async(square, 7, shmpipe::callback([](int r) { ... }),
//                    shmpipe::error_callback([](std::exception_ptr e) { ... }));
// Either, both or none, after the task's arguments. They run on the thread that takes the
// result from the results queue: a thread waiting on the same pool (get, map, ...) or the
// pool's collector thread (see future.hpp). Keep them short; an exception they throw is dropped.
template <class F>
struct Callback {
    F fn;
};
template <class F>
struct ErrorCallback {
    F fn;
};
template <class F>
Callback<std::decay_t<F>> callback(F&& f) {
    return {std::forward<F>(f)};
}
template <class F>
ErrorCallback<std::decay_t<F>> error_callback(F&& f) {
    return {std::forward<F>(f)};
}

namespace detail {

template <class T>
inline constexpr bool is_callback_v = false;
template <class F>
inline constexpr bool is_callback_v<Callback<F>> = true;
template <class T>
inline constexpr bool is_error_callback_v = false;
template <class F>
inline constexpr bool is_error_callback_v<ErrorCallback<F>> = true;
template <class T>
inline constexpr bool is_callback_tag_v = is_callback_v<T> || is_error_callback_v<T>;

template <class...>
inline constexpr bool always_false = false;

// What a call whose task check failed returns: it can be used the way a result would be,
// so the check's static_assert stays the only error. Never constructed by a program that
// compiles.
struct InvalidTask {
    template <class T>
    operator T() const;  // NOLINT(google-explicit-constructor)
    template <class... A>
    InvalidTask get(A&&...) const;
    template <class... A>
    InvalidTask result(A&&...) const;
    template <class... A>
    InvalidTask get_for(A&&...) const;
    template <class... A>
    InvalidTask result_for(A&&...) const;
    template <class... A>
    bool wait_for(A&&...) const;
    void wait() const;
    bool ready() const;
    bool done() const;
    const InvalidTask* begin() const;
    const InvalidTask* end() const;
    std::size_t size() const;
};

// Every parameter type has a Codec (the tuple's own codec does not look inside).
template <class Tuple>
struct each_codable;
template <class... E>
struct each_codable<std::tuple<E...>> : std::bool_constant<(... && is_codable_v<E>)> {};

// The checks of a task and its arguments, each failing with one short compiler message that
// names the cause. Callers compile their body only `if constexpr` this holds, so a failed
// check is the only error (no cascade through the trampolines). `Args` are the argument
// types one call receives (map: the element type).
template <class F, class... Args>
constexpr bool check_task() {
    if constexpr (!TaskFunction<F>) {
        static_assert(always_false<F>,
                      "shmpipe::Pool: tasks must be plain functions or captureless lambdas (a worker process "
                      "cannot receive captured state: pass it as an argument)");
        return false;
    } else {
        using T = FnTraits<fn_ptr_t<F>>;
        using R = typename T::result;
        if constexpr (sizeof...(Args) != T::arity) {
            static_assert(always_false<F>, "shmpipe::Pool: wrong number of arguments for the task");
            return false;
        } else if constexpr (!T::no_mutable_refs) {
            static_assert(always_false<F>,
                          "shmpipe::Pool: a task cannot take non-const references (it runs in another process): "
                          "take the value and return the result");
            return false;
        } else if constexpr (!each_codable<typename T::args>::value) {
            static_assert(always_false<F>,
                          "shmpipe::Pool: an argument type of the task has no shmpipe::Codec (see codec.hpp)");
            return false;
        } else if constexpr (!std::is_void_v<R> && !is_codable_v<R>) {
            static_assert(always_false<F>,
                          "shmpipe::Pool: the task's result type has no shmpipe::Codec (see codec.hpp)");
            return false;
        } else {
            return true;
        }
    }
}

// A map-like call (map, starmap, imap...): Star passes each element's tuple as the arguments.
template <bool Star, class F, class Elem>
constexpr bool check_map_task() {
    if constexpr (Star) {
        if constexpr (!TaskFunction<F>) {
            return check_task<F>();
        } else {
            return []<class... E>(std::type_identity<std::tuple<E...>>) {
                return check_task<F, E...>();
            }(std::type_identity<typename FnTraits<fn_ptr_t<F>>::args>{});
        }
    } else {
        return check_task<F, Elem>();
    }
}

// imap yields results: a void task has none.
template <class F>
constexpr bool check_yields_results() {
    if constexpr (std::is_void_v<typename FnTraits<fn_ptr_t<F>>::result>) {
        static_assert(always_false<F>,
                      "shmpipe::Pool::imap: the task returns void, so there is no result to yield "
                      "(use map, which returns nothing for a void task)");
        return false;
    } else {
        return true;
    }
}

template <class F>
using task_result_t = typename FnTraits<fn_ptr_t<F>>::result;

// Completes `out` once every chunk finished: the first failed chunk's error (in input
// order), or every result concatenated (Codec<std::vector<R>> in the payload).
template <class R>
void gather_chunks(std::vector<std::shared_ptr<TaskState>> chunks, std::shared_ptr<TaskState> out) {
    struct Gather {
        std::vector<std::shared_ptr<TaskState>> chunks;
        std::shared_ptr<TaskState> out;
        std::atomic<std::size_t> left;
    };
    auto g = std::make_shared<Gather>();
    g->left = chunks.size() + 1;  // +1: ours, dropped after every listener is in place
    g->chunks = std::move(chunks);
    g->out = std::move(out);
    auto finish = [](Gather& all) {
        for (auto& c : all.chunks) {
            std::lock_guard lock(c->m);
            if (c->status != TaskStatus::ok) {
                all.out->complete(TaskStatus::failed, {}, c->error);
                return;
            }
        }
        Bytes payload;
        if constexpr (!std::is_void_v<R>) {
            std::vector<R> values;
            for (auto& c : all.chunks) append_chunk(values, c);
            encode_into(values, payload);
        }
        all.out->complete(TaskStatus::ok, std::move(payload), nullptr);
    };
    for (auto& c : g->chunks) {
        c->add_listener([g, finish] {
            if (--g->left == 0) finish(*g);
        });
    }
    if (--g->left == 0) finish(*g);
}

// The templates Pool and ProcessPoolExecutor share (one engine, PoolCore, under both).
class PoolEngine {
protected:
    explicit PoolEngine(PoolOptions options);

    template <class F, class... A>
    std::shared_ptr<TaskState> submit_one(F f, const char* kind, A&&... args) {
        using Fp = fn_ptr_t<F>;
        using T = FnTraits<Fp>;
        typename T::args packed{std::forward<A>(args)...};
        Bytes& buf = scratch();
        encode_args(packed, buf);
        return submit_task(&call_one<Fp>, fn_bits(+f), buf, kind);
    }

    template <bool Star, class F, class Range>
    std::shared_ptr<TaskState> submit_range(F f, const Range&, auto first, auto last) {
        using Fp = fn_ptr_t<F>;
        using T = FnTraits<Fp>;
        using Elem = std::conditional_t<Star, typename T::args, std::tuple_element_t<0, typename T::args>>;
        using It = decltype(first);
        if constexpr (std::contiguous_iterator<It> && std::is_same_v<std::iter_value_t<It>, Elem> &&
                      std::is_trivially_copyable_v<Elem>) {
            // A flat vector's encoding is its bytes: submit straight from the input.
            const auto count = static_cast<std::size_t>(last - first);
            const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(std::to_address(first)),
                                                   count * sizeof(Elem));
            if constexpr (Star) {
                return submit_task(&call_star_chunk<Fp>, fn_bits(+f), bytes, "starmap");
            } else {
                return submit_task(&call_chunk<Fp>, fn_bits(+f), bytes, "map");
            }
        }
        std::vector<Elem> part;
        part.reserve(static_cast<std::size_t>(std::distance(first, last)));
        for (auto it = first; it != last; ++it) part.push_back(Elem(*it));
        Bytes& buf = scratch();
        encode_into(part, buf);
        if constexpr (Star) {
            return submit_task(&call_star_chunk<Fp>, fn_bits(+f), buf, "starmap");
        } else {
            return submit_task(&call_chunk<Fp>, fn_bits(+f), buf, "map");
        }
    }

    template <bool Star, class F, class Range>
    std::size_t pick_chunksize(const Range& xs, std::size_t chunksize) {
        using T = FnTraits<fn_ptr_t<F>>;
        using R = typename T::result;
        using Elem = std::conditional_t<Star, typename T::args, std::tuple_element_t<0, typename T::args>>;
        const auto n = static_cast<std::size_t>(std::size(xs));
        if (chunksize != 0 || n == 0) return std::max<std::size_t>(chunksize, 1);
        const std::size_t workers = pool_size();
        std::size_t c = (n + 4 * workers - 1) / (4 * workers);
        // Keep a chunk (and its results) inside one message, judging by the first element.
        const Elem first(*std::begin(xs));
        std::size_t per = Codec<Elem>::size(first) + (std::is_trivially_copyable_v<Elem> ? 0 : 4);
        if constexpr (!std::is_void_v<R> && std::is_trivially_copyable_v<R>) per = std::max(per, sizeof(R));
        per = std::max<std::size_t>(per * 2, 1);  // headroom for elements larger than the first
        const std::size_t cap = std::max<std::size_t>(max_payload() / per, 1);
        return std::clamp<std::size_t>(c, 1, cap);
    }

    template <bool Star, class F, class Range>
    std::vector<std::shared_ptr<TaskState>> submit_chunks(F f, const Range& xs, std::size_t chunksize) {
        const std::size_t c = pick_chunksize<Star, F>(xs, chunksize);
        std::vector<std::shared_ptr<TaskState>> chunks;
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

    // Every chunk's results in input order; waits for each chunk until `deadline` (then
    // cancels what no worker took and throws Error(errc::timeout)). `per_chunk`: elements
    // per chunk (the last may have fewer).
    template <class R>
    static auto collect_chunks(std::vector<std::shared_ptr<TaskState>>& chunks, std::size_t expected,
                               std::size_t per_chunk, std::chrono::steady_clock::time_point deadline,
                               const char* what) {
        if constexpr (!std::is_void_v<R> && std::is_trivially_copyable_v<R>) {
            // Flat results: the thread that takes a chunk's result copies it straight into
            // place (TaskState::sink); only a chunk finished before this is copied from its payload.
            std::vector<R> out(expected);
            struct Unsink {  // on every way out, before `out` goes: no one writes there after
                std::vector<std::shared_ptr<TaskState>>& all;
                ~Unsink() {
                    for (auto& c : all) {
                        std::lock_guard lock(c->m);
                        c->sink = nullptr;
                    }
                }
            } unsink{chunks};
            for (std::size_t i = 0; i < chunks.size(); ++i) {
                const std::size_t first = std::min(i * per_chunk, expected);
                std::lock_guard lock(chunks[i]->m);
                chunks[i]->sink = reinterpret_cast<std::byte*>(out.data() + first);
                chunks[i]->sink_size = std::min(per_chunk, expected - first) * sizeof(R);
            }
            wait_chunks(chunks, deadline, what);
            for (auto& c : chunks) {
                {
                    std::lock_guard lock(c->m);
                    if (c->in_sink) continue;
                    if (c->status == TaskStatus::ok && c->payload.size() == c->sink_size) {
                        if (!c->payload.empty()) std::memcpy(c->sink, c->payload.data(), c->payload.size());
                        continue;
                    }
                }
                auto part = take_result<std::vector<R>>(*c);  // throws the chunk's failure
                throw Error(errc::invalid_state, std::string(what) + ": a chunk returned " + std::to_string(part.size()) +
                                                     " results for " + std::to_string(c->sink_size / sizeof(R)) +
                                                     " elements");
            }
            return out;
        } else {
            wait_chunks(chunks, deadline, what);
            if constexpr (std::is_void_v<R>) {
                for (auto& s : chunks) take_result<void>(*s);
            } else {
                std::vector<R> out;
                out.reserve(expected);
                for (auto& s : chunks) append_chunk(out, s);
                return out;
            }
        }
    }
    static void wait_chunks(std::vector<std::shared_ptr<TaskState>>& chunks,
                            std::chrono::steady_clock::time_point deadline, const char* what) {
        for (auto& s : chunks) {
            if (deadline == std::chrono::steady_clock::time_point::max()) {
                s->wait();
            } else if (!s->wait_for(std::max(deadline - std::chrono::steady_clock::now(),
                                             std::chrono::steady_clock::duration::zero()))) {
                for (auto& c : chunks) c->cancel();
                throw Error(errc::timeout, std::string(what) + ": results not ready in time (the cancellable "
                                                               "chunks were cancelled, the running ones go on)");
            }
        }
    }

    template <bool Star, class F, class Range>
    std::shared_ptr<TaskState> map_async_state(F f, const Range& xs, std::size_t chunksize) {
        auto chunks = submit_chunks<Star>(f, xs, chunksize);
        auto out = std::make_shared<TaskState>();
        out->id = chunks.empty() ? 0 : chunks.front()->id;
        if (!chunks.empty()) out->driver = chunks.front()->driver;  // waiting for it drains the pool's results
        out->what = std::string(Star ? "starmap_async" : "map_async") + " of " + std::to_string(std::size(xs)) +
                    " elements in " + std::to_string(chunks.size()) + " chunks";
        out->is_running = [chunks](std::uint64_t) {
            return std::any_of(chunks.begin(), chunks.end(), [](const auto& c) { return c->running(); });
        };
        gather_chunks<task_result_t<F>>(std::move(chunks), out);
        return out;
    }

    // The public calls, checked (detail::check_task) and shared by Pool and the executor.
    template <class F, class... A>
    auto submit_future(F f, A&&... args) {
        if constexpr (check_task<F, std::remove_cvref_t<A>...>()) {
            return Future<task_result_t<F>>(submit_one(f, "submit", std::forward<A>(args)...));
        } else {
            return InvalidTask{};
        }
    }
    template <bool Star, class F, class Range>
    auto map_until(F f, const Range& xs, std::size_t chunksize, std::chrono::steady_clock::time_point deadline,
                   const char* what) {
        if constexpr (check_map_task<Star, F, std::ranges::range_value_t<Range>>()) {
            const std::size_t per_chunk = pick_chunksize<Star, F>(xs, chunksize);
            auto chunks = submit_chunks<Star>(f, xs, per_chunk);
            return collect_chunks<task_result_t<F>>(chunks, std::size(xs), per_chunk, deadline, what);
        } else {
            return InvalidTask{};
        }
    }
    template <bool Star, class F, class Range>
    auto map_async_result(F f, const Range& xs, std::size_t chunksize) {
        if constexpr (check_map_task<Star, F, std::ranges::range_value_t<Range>>()) {
            using R = task_result_t<F>;
            using Out = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
            return AsyncResult<Out>(map_async_state<Star>(f, xs, chunksize));
        } else {
            return InvalidTask{};
        }
    }
    template <class F, class Range>
    auto imap_result(F f, const Range& xs, std::size_t chunksize, std::size_t lookahead, bool ordered) {
        if constexpr (check_map_task<false, F, std::ranges::range_value_t<Range>>() && check_yields_results<F>()) {
            return make_imap(f, xs, chunksize, lookahead, ordered);
        } else {
            return InvalidTask{};
        }
    }

    template <class F, class Range>
    auto make_imap(F f, const Range& xs, std::size_t chunksize, std::size_t lookahead, bool ordered) {
        using R = task_result_t<F>;
        const std::size_t c = std::max<std::size_t>(chunksize, 1);
        auto submit_next = [this, f, c, it = std::begin(xs), end = std::end(xs), &xs]() mutable
            -> std::shared_ptr<TaskState> {
            if (it == end) return nullptr;
            auto stop = it;
            for (std::size_t k = 0; k < c && stop != end; ++k) ++stop;
            auto s = submit_range<false>(f, xs, it, stop);
            it = stop;
            return s;
        };
        return IMapResult<R>(std::move(submit_next), lookahead != 0 ? lookahead : 2 * pool_size(), ordered);
    }

    void close_engine();
    void join_engine();
    void terminate_engine();
    void shutdown_engine(bool wait, bool cancel_pending);
    bool engine_joined() const noexcept;

    static Bytes& scratch();

    std::shared_ptr<PoolCore> core_;

private:
    // Submits one encoded task; returns its state.
    std::shared_ptr<TaskState> submit_task(Trampoline t, std::uint64_t fn, std::span<const std::byte> args,
                                           const char* kind);
    std::size_t max_payload() const noexcept;
    unsigned pool_size() const noexcept;
};

// apply_async's trailing callback(...) / error_callback(...) tags (Pool and ThreadPool): they
// follow the task's arguments, at most one of each.
template <class Tuple, std::size_t n, std::size_t... I, std::size_t... J>
constexpr void check_callback_tags(std::index_sequence<I...>, std::index_sequence<J...>) {
    static_assert((... && !is_callback_tag_v<std::remove_cvref_t<std::tuple_element_t<I, Tuple>>>),
                  "shmpipe: apply_async: callback(...) and error_callback(...) come after the task's arguments");
    static_assert((std::size_t{0} + ... + (is_callback_v<std::remove_cvref_t<std::tuple_element_t<n + J, Tuple>>> ? 1 : 0)) <= 1 &&
                      (std::size_t{0} + ... + (is_error_callback_v<std::remove_cvref_t<std::tuple_element_t<n + J, Tuple>>> ? 1 : 0)) <= 1,
                  "shmpipe: apply_async: at most one callback(...) and one error_callback(...)");
}

template <class R, class Tag>
void run_callback(const TaskState& st, const std::exception_ptr& e, Tag& tag) {
    if constexpr (is_callback_v<Tag>) {
        if (e) return;
        if constexpr (std::is_void_v<R>) {
            static_assert(std::is_invocable_v<decltype(tag.fn)&>,
                          "shmpipe::callback: the task returns void, so the callback takes no argument");
            tag.fn();
        } else {
            static_assert(std::is_invocable_v<decltype(tag.fn)&, R>,
                          "shmpipe::callback: the callback must take the task's result type");
            tag.fn(take_result<R>(st));
        }
    } else {
        static_assert(std::is_invocable_v<decltype(tag.fn)&, std::exception_ptr>,
                      "shmpipe::error_callback: the callback must take a std::exception_ptr");
        if (e) tag.fn(e);
    }
}

// Runs the callbacks once the task is complete (on the thread that completes it).
template <class R, class Tags>
void attach_callbacks(const std::shared_ptr<TaskState>& state, Tags tags) {
    state->add_listener([s = std::weak_ptr<TaskState>(state), tags = std::move(tags)]() mutable {
        auto st = s.lock();  // alive: complete() runs listeners while its caller holds it
        if (!st) return;
        std::exception_ptr e;
        {
            std::lock_guard lock(st->m);
            e = st->error;
        }
        std::apply([&](auto&... tag) { (run_callback<R>(*st, e, tag), ...); }, tags);
    });
}

}  // namespace detail

class Pool : private detail::PoolEngine {
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
    auto apply(F f, A&&... args) {
        if constexpr (detail::check_task<F, std::remove_cvref_t<A>...>()) {
            return apply_async(f, std::forward<A>(args)...).get();
        } else {
            return detail::InvalidTask{};
        }
    }

    // f(args...) in a worker; the result later. Optional callbacks after the arguments:
    //   pool.apply_async(f, x, y, shmpipe::callback(on_result), shmpipe::error_callback(on_error));
    // on_result(R) (on_result() for a void task) on success, on_error(std::exception_ptr) on
    // failure, both once the result is set (get() may return first), on the thread that took
    // the result: a thread waiting on this pool, or the collector thread.
    template <class F, class... A>
    auto apply_async(F f, A&&... args) {
        constexpr std::size_t tags = (std::size_t{0} + ... + (detail::is_callback_tag_v<std::remove_cvref_t<A>> ? 1 : 0));
        constexpr std::size_t n = sizeof...(A) - tags;
        return apply_async_split(f, std::forward_as_tuple(std::forward<A>(args)...), std::make_index_sequence<n>{},
                                 std::make_index_sequence<tags>{});
    }

    template <class F, class... A>
    auto submit(F f, A&&... args) {
        return submit_future(f, std::forward<A>(args)...);
    }

    // f over every element, results in input order. chunksize 0: Python's default
    // (len / (4 * processes)), capped so a chunk fits in one message. A task returning void
    // gives nothing back: map returns void once every call has finished (and throws the
    // first failure, in input order), where Python returns a list of None.
    template <class F, class Range>
    auto map(F f, const Range& xs, std::size_t chunksize = 0) {
        return map_until<false>(f, xs, chunksize, std::chrono::steady_clock::time_point::max(), "map");
    }
    // f(args...) for every tuple in xs (Python's starmap).
    template <class F, class Range>
    auto starmap(F f, const Range& xs, std::size_t chunksize = 0) {
        return map_until<true>(f, xs, chunksize, std::chrono::steady_clock::time_point::max(), "starmap");
    }
    // map / starmap without waiting: an AsyncResult<std::vector<R>> (AsyncResult<void> for
    // a void task) that is ready when every chunk is, and fails with the first failed chunk.
    template <class F, class Range>
    auto map_async(F f, const Range& xs, std::size_t chunksize = 0) {
        return map_async_result<false>(f, xs, chunksize);
    }
    template <class F, class Range>
    auto starmap_async(F f, const Range& xs, std::size_t chunksize = 0) {
        return map_async_result<true>(f, xs, chunksize);
    }
    // Lazy and ordered; at most `lookahead` chunks in flight (0: 2 * processes).
    template <class F, class Range>
    auto imap(F f, const Range& xs, std::size_t chunksize = 1, std::size_t lookahead = 0) {
        return imap_result(f, xs, chunksize, lookahead, true);
    }
    // Lazy, in completion order (per chunk).
    template <class F, class Range>
    auto imap_unordered(F f, const Range& xs, std::size_t chunksize = 1, std::size_t lookahead = 0) {
        return imap_result(f, xs, chunksize, lookahead, false);
    }

    // No more tasks; the workers finish what is queued and exit.
    void close();
    // Waits for the workers to exit. Throws Error(errc::invalid_state) unless close() or
    // terminate() came first.
    void join();
    // join() for at most `timeout` (any duration, rounded up to the next nanosecond); true
    // when the workers have exited and the pool is joined.
    template <class Rep, class Period>
    bool join_for(std::chrono::duration<Rep, Period> timeout) {
        return join_for_ns(detail::timeout_ns(timeout));
    }
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
    bool join_for_ns(std::chrono::nanoseconds timeout);

    template <class F, class Tuple, std::size_t... I, std::size_t... J>
    auto apply_async_split(F f, Tuple&& all, std::index_sequence<I...>, std::index_sequence<J...>) {
        constexpr std::size_t n = sizeof...(I);
        detail::check_callback_tags<Tuple, n>(std::index_sequence<I...>{}, std::index_sequence<J...>{});
        if constexpr (detail::check_task<F, std::remove_cvref_t<std::tuple_element_t<I, Tuple>>...>()) {
            using R = detail::task_result_t<F>;
            auto state = submit_one(f, "apply_async", std::forward<std::tuple_element_t<I, Tuple>>(std::get<I>(all))...);
            if constexpr (sizeof...(J) != 0) {
                detail::attach_callbacks<R>(state, std::tuple<std::remove_cvref_t<std::tuple_element_t<n + J, Tuple>>...>(
                                               std::get<n + J>(all)...));
            }
            return AsyncResult<R>(state);
        } else {
            return detail::InvalidTask{};
        }
    }
};

// concurrent.futures.ProcessPoolExecutor on the same engine as Pool:
//   shmpipe::ProcessPoolExecutor ex(4);
//   auto f = ex.submit(square, 7);            // Future<int>
//   auto v = ex.map(square, xs, 10s);         // results in order; errc::timeout after 10 s
//   ex.shutdown(/*wait=*/true, /*cancel_futures=*/false);
// Destroying it calls shutdown(wait=true), as leaving `with ProcessPoolExecutor()` does:
// queued tasks run to the end (Pool, like `with Pool()`, terminates instead).
class ProcessPoolExecutor : private detail::PoolEngine {
public:
    // max_workers 0: cpu_count().
    explicit ProcessPoolExecutor(unsigned max_workers = 0);
    explicit ProcessPoolExecutor(PoolOptions options);
    ProcessPoolExecutor(const ProcessPoolExecutor&) = delete;
    ProcessPoolExecutor& operator=(const ProcessPoolExecutor&) = delete;
    ~ProcessPoolExecutor();

    // Throws Error(errc::invalid_state) after shutdown().
    template <class F, class... A>
    auto submit(F f, A&&... args) {
        return submit_future(f, std::forward<A>(args)...);
    }

    // Results of f over xs in input order, as a std::vector (void for a void task); chunks
    // of `chunksize` elements (Python's default 1). With a timeout (any duration, counted
    // from the call): Error(errc::timeout) when not every result is ready in time; the
    // chunks no worker took are cancelled, as Python's map does.
    template <class F, class Range>
    auto map(F f, const Range& xs) {
        return map_until<false>(f, xs, 1, std::chrono::steady_clock::time_point::max(), kMapName);
    }
    template <class F, class Range, class Rep, class Period>
    auto map(F f, const Range& xs, std::chrono::duration<Rep, Period> timeout, std::size_t chunksize = 1) {
        return map_until<false>(f, xs, std::max<std::size_t>(chunksize, 1), detail::deadline_in(detail::timeout_ns(timeout)),
                                kMapName);
    }
    // No timeout, a chunk size: map(f, xs, std::nullopt, 64).
    template <class F, class Range>
    auto map(F f, const Range& xs, std::nullopt_t, std::size_t chunksize) {
        return map_until<false>(f, xs, std::max<std::size_t>(chunksize, 1), std::chrono::steady_clock::time_point::max(),
                                kMapName);
    }

    // No more tasks. cancel_futures: cancel what no worker took. wait: until every worker
    // has exited (the tasks taken have finished). Never throws for a second call.
    void shutdown(bool wait = true, bool cancel_futures = false);

    unsigned size() const noexcept;
    std::vector<int> worker_pids() const;

private:
    static constexpr const char* kMapName = "ProcessPoolExecutor::map";
};

}  // namespace shmpipe
