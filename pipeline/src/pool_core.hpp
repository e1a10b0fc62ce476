// PoolCore: the engine under Pool and ProcessPoolExecutor. Private to pipeline/src; one file
// per role:
//   pool.cpp            construction, close / join / terminate, the public faces
//   pool_submit.cpp     submission, the collector's backlog, cancellation
//   pool_results.cpp    result draining: leader/follower, completing tasks
//   pool_supervise.cpp  the collector thread: worker deaths, timeouts, replacements
//   pool_worker.cpp     the loop a forked worker runs
//
// Result draining (leader/follower). The results queue has one consumer endpoint, rx_, and
// one thread at a time uses it: the leader. A thread that waits for a task (get, result,
// wait, map, imap, as_completed, wait()) becomes the leader when there is none and drains
// rx_ until its own task is done, completing every task whose result it takes (their
// callbacks run on it); the others wait on lead_cv_ (followers) and one of them takes over
// when the leader leaves. So a result reaches a waiting caller in one hop (worker ->
// caller). When no thread waits, the collector thread leads, so callbacks and
// fire-and-forget results still flow; it steps down after the message in hand as soon as a
// caller waits. The collector also takes the lead, asking a caller leader to step down
// (supervision_wants_ and a wake-up message), when supervision must drain the results
// already committed (a worker died) and when the pool ends (then for good, leader_ ==
// Leader::ended, before the queues are released).
//
// Lock order (a thread holding one may take only those to its right):
//   lifecycle_m_ -> submit_m_ -> backlog_m_ -> pending_m_ -> TaskState::m
//                   submit_m_ -> handles_m_
//   lead_m_ -> TaskState::m / CompletionQueue's mutex (the done() predicates, which look only)
//   workers_m_, state_m_, wake_m_, idle_m_: leaves, nothing taken under them.
// No lock is held while a task is completed (its listeners run user callbacks).
#pragma once

#include <shmpipe/detail/guardian.hpp>
#include <shmpipe/detail/wait.hpp>
#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace shmpipe::detail {

using namespace std::chrono_literals;

inline constexpr auto kSupervisePeriod = 20ms;  // liveness and timeout checks; longest leader slice
inline constexpr auto kBacklogPeriod = 1ms;     // how often the collector retries its backlog
inline constexpr auto kSubmitSlice = 20ms;      // longest a submitter holds submit_m_ waiting for room
inline constexpr std::uint64_t kNoPosition = ~std::uint64_t{0};

// The first 8 KiB of every queue cell (a task or result of up to ~2 000 ints, every
// apply_async) are mapped when an endpoint attaches, in one call per cell: otherwise each
// map's chunks land in cells this process has not touched yet and pay a page fault per page
// in every process (the first maps of a new pool).
inline OpenOptions hot_cells() {
    OpenOptions o;
    o.prefault_bytes = std::size_t{8} << 10;
    return o;
}

struct alignas(64) WorkerSlot {
    std::atomic<std::uint64_t> task{0};      // the task being run; 0: none. Worker writes, parent reads.
    std::atomic<std::uint32_t> taking{0};    // 1 from asking for a task until `task` is recorded
    std::atomic<std::uint32_t> ended{0};     // 1: saw the end of the task stream (a clean exit)
    std::atomic<std::uint64_t> completed{0}; // tasks finished by this worker
    std::atomic<std::uint32_t> awake{0};     // 1 while counted in TaskDoor::budget (SpinSeat)
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free);

// Tasks cancelled while queued, so a worker that takes one skips it (Python never runs a
// cancelled task). The parent writes, workers read; in the same anonymous mapping as the
// slots. A ring: a cancellation older than kCancelRing newer ones may be missed, and a
// worker that took the task before the cancel runs it; either way its result is dropped.
inline constexpr std::size_t kCancelRing = 256;
struct CancelRing {
    std::atomic<std::uint64_t> count{0};            // entries ever written (parent only)
    std::atomic<std::uint64_t> ids[kCancelRing] = {};
};

// Which worker waits on the task queue: one at a time (the door's leader), the other idle
// workers sleep on `seq` (followers). So one idle worker spins in the queue while the
// caller waits for its result, instead of every idle worker spinning and taking CPU time
// from the thread being waited for (see pool_worker.cpp, D1-D3). In the same mapping.
struct TaskDoor {
    alignas(64) std::atomic<std::uint32_t> leader{0};  // 1 + index of the worker at the door; 0: none
    std::atomic<std::uint32_t> seq{0};                 // futex word, bumped for each wake-up
    std::atomic<std::uint32_t> sleepers{0};            // followers between counting and leaving a sleep
    // The pool's spin budget (wait.hpp): workers, and the parent thread draining results,
    // count themselves while not asleep, so none spins while they outnumber the CPUs.
    alignas(64) SpinBudget budget;
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

class PoolCore final : public CompletionDriver, public std::enable_shared_from_this<PoolCore> {
public:
    explicit PoolCore(PoolOptions o);
    ~PoolCore();

    std::shared_ptr<TaskState> submit(Trampoline t, std::uint64_t fn, std::span<const std::byte> args,
                                      const char* kind);
    void close();
    void join();
    bool join_for(std::chrono::nanoseconds timeout);
    void terminate();
    void cancel_pending();
    std::vector<int> worker_pids() const;
    bool joined() const noexcept { return joined_flag_.load(); }

    // CompletionDriver (pool_results.cpp).
    bool drive_until(const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline) override;
    void watch() noexcept override;
    void completed(bool watched) noexcept override;

    PoolOptions opt;
    unsigned n = 0;
    std::string base, tasks_name, results_name;
    std::atomic<std::uint64_t> started_count{0};

private:
    struct Pending {
        std::shared_ptr<TaskState> state;
        std::uint64_t position = kNoPosition;  // in the task queue, once pushed
    };
    struct Backlogged {  // a task submitted by a draining thread while the queue was full
        std::uint64_t id;
        Bytes message;   // header and arguments
    };
    struct Suspect {     // a claimed position whose claimant died
        std::uint64_t position;
        std::string who;
    };
    enum class Leader { none, caller, collector, ended };

    // pool_supervise.cpp
    void collector_main();
    void start_worker(unsigned index);
    void supervise();
    void resolve_suspects(bool sweep, const std::string& sweep_who);
    void stop_workers();
    // pool_worker.cpp
    void worker_main(unsigned index);
    bool cancelled_while_queued(std::uint64_t id) const noexcept;
    bool enter_door(unsigned index) noexcept;      // in a worker: false when the door was dropped
    void leave_door(unsigned index, bool all, Consumer<>& in) noexcept;
    void open_door_for_task() noexcept;            // in the parent, after publishing a task
    void free_door_of(unsigned index) noexcept;    // in the parent, for a dead worker
    // pool_results.cpp
    void lead(const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline);
    bool drain_one(std::chrono::steady_clock::duration wait);  // false: the queue failed (not ours to fix)
    void handle_message(ReadSlot m);
    void drain_ready();
    void collector_drain(std::chrono::steady_clock::duration wait);
    void take_lead_for_collector(bool for_good);
    void step_down();
    void kick_collector() noexcept;
    bool pending_any() const;
    std::shared_ptr<TaskState> take_pending(std::uint64_t id);
    void fail(std::uint64_t id, errc code, const std::string& why);
    void fail_all(errc code, const std::string& why);
    bool draining_here() const noexcept;
    // pool_submit.cpp
    void flush_backlog();
    bool may_cancel(std::uint64_t id) const;
    bool is_running(std::uint64_t id) const;
    void publish(WriteSlot& w, std::uint64_t id, std::span<const std::byte> header,
                 std::span<const std::byte> args);  // under submit_m_
    std::string closed_message(const char* kind) const;
    // pool.cpp
    void release_queues();

    detail::Guardian guardian_;               // removes both queues if this process dies; outlives them
    std::mutex handles_m_;                    // the Queue handles (terminate() vs release_queues())
    std::optional<Queue> tasks_q_, results_q_;
    std::optional<Producer<>> tx_;            // parent -> workers (under submit_m_)
    // Parent -> results queue: keeps the result stream open while no worker is attached
    // (between a worker's exit and its replacement), and carries the wake-up message
    // (ResultHeader id 0) that makes a caller leader step down at once (under wake_m_).
    std::optional<Producer<>> wake_;
    std::optional<Consumer<>> rx_;            // used by the leader only
    WorkerSlot* slots_ = nullptr;
    CancelRing* cancelled_ = nullptr;         // after the slots, in the same mapping
    TaskDoor* door_ = nullptr;                // after the cancel ring, in the same mapping
    std::size_t slots_bytes_ = 0;
    std::size_t max_message_ = 0;

    mutable std::mutex workers_m_;
    std::vector<std::unique_ptr<Process>> workers_;
    std::vector<std::pair<std::uint64_t, std::chrono::steady_clock::time_point>> seen_busy_;  // collector only
    std::vector<Suspect> suspects_;           // collector only

    mutable std::mutex pending_m_;
    std::map<std::uint64_t, Pending> pending_;                     // by task id
    std::unordered_map<std::uint64_t, std::uint64_t> positions_;   // queue position -> task id
    std::atomic<std::uint64_t> next_id_{1};

    std::mutex submit_m_;                     // tx_, next_position_, tx_closed_
    std::uint64_t next_position_ = 0;         // the MPMC position of the next reservation
    std::atomic<bool> tx_closed_{false};    // written under submit_m_
    std::mutex backlog_m_;
    std::deque<Backlogged> backlog_;          // pushed by draining threads, in order
    std::atomic<bool> backlog_nonempty_{false};

    // Leadership (pool_results.cpp).
    std::mutex lead_m_;
    std::condition_variable lead_cv_;         // leadership free, a task completed, or the pool ended
    Leader leader_ = Leader::none;            // under lead_m_
    std::atomic<unsigned> followers_{0};      // threads in lead_cv_ (changed under lead_m_)
    std::atomic<unsigned> waiting_{0};        // callers inside drive_until (leading or following)
    std::atomic<bool> supervision_wants_{false};  // the collector waits for the lead
    std::atomic<bool> supervise_now_{false};      // a worker died mid-stream: supervise at once
    std::atomic<long> watched_{0};            // pending tasks with listeners (may dip below 0 briefly)
    std::mutex wake_m_;                       // wake_
    std::mutex idle_m_;
    std::condition_variable idle_cv_;         // the collector, when it does not lead
    bool kicked_ = false;                     // under idle_m_

    std::mutex state_m_;
    std::condition_variable state_cv_;
    bool ready_ = false;                 // workers started (or failed to)
    bool collector_exited_ = false;      // the collector returned: every worker is reaped
    std::exception_ptr start_error_;
    std::atomic<bool> closed_{false};
    std::atomic<bool> terminating_{false};
    bool joined_ = false;
    std::atomic<bool> joined_flag_{false};
    std::thread collector_;
    std::thread::id collector_id_;        // set before ready_, never changed
    std::mutex lifecycle_m_;             // join/terminate from user threads
};

}  // namespace shmpipe::detail
