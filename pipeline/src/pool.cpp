// Pool: the parent side (submission, the collector thread, supervision) and the worker loop.
//
// Submission never blocks other operations: a submitter holds submit_m_ only for one bounded
// reservation try (kSubmitSlice), then lets go and tries again, so close(), terminate() and
// other submitters get in; terminate() marks the task queue broken first, so a submitter
// waiting for room gives up at once. The collector thread never waits for room: a task
// submitted from a done-callback (which runs there) goes to a local backlog that the
// collector pushes to the queue as room appears; results keep flowing meanwhile.
//
// Workers copy a task message out and release its queue cell before running the task, so a
// long task holds no cell and the ring never wraps round onto it.
//
// Who holds which task:
//   - every worker has a slot in an anonymous MAP_SHARED mapping made before the first fork
//     (parent and workers share it, nothing is left behind): the id of the task it runs
//     (recorded right after taking the message), whether it is taking a task, whether it saw
//     the end of the stream;
//   - the parent is the task queue's only producer, so the k-th message it reserved has MPMC
//     position k (from 0). It records position -> task id as it pushes and forgets the entry
//     when the task completes;
//   - the queue keeps the position each consumer last claimed (Queue::last_claim_of, M3 in
//     queue_layout.hpp) until that consumer's next claim, dead or alive.
// When a worker dies, the collector reads its last claim before anything else can attach (a
// replacement might recycle its endpoint record), notes what the live workers claim and run,
// drains the results already committed, and then fails with errc::worker_died the task in
// its slot and the task at its last claimed position, if that position was claimed (below
// the queue's head), is still pending and no live worker claims or runs it. A live worker's
// claim stays until after it committed that task's result, so a task no live worker claims
// or runs after the drain has no one left to finish it. A position a live worker seems to
// claim is checked again at the next round (a worker between storing its intent and losing
// the claim race shows a position it does not own for a moment). If the dead worker's
// endpoint record was recycled before it was read (only when no record is free; the task
// queue has at least 256), every claimed position still pending is checked the same way.
#include <shmpipe/detail/demangle.hpp>
#include <shmpipe/detail/guardian.hpp>
#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <cxxabi.h>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

namespace shmpipe::detail {
namespace {

using namespace std::chrono_literals;

constexpr auto kSupervisePeriod = 20ms;  // liveness and timeout checks while results flow or not
constexpr auto kBacklogPeriod = 1ms;     // how often the collector retries its backlog
constexpr auto kSubmitSlice = 20ms;      // longest a submitter holds submit_m_ waiting for room
constexpr std::uint64_t kNoPosition = ~std::uint64_t{0};

struct alignas(64) WorkerSlot {
    std::atomic<std::uint64_t> task{0};      // the task being run; 0: none. Worker writes, parent reads.
    std::atomic<std::uint32_t> taking{0};    // 1 from asking for a task until `task` is recorded
    std::atomic<std::uint32_t> ended{0};     // 1: saw the end of the task stream (a clean exit)
    std::atomic<std::uint64_t> completed{0}; // tasks finished by this worker
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free);

// Tasks cancelled while queued, so a worker that takes one skips it (Python never runs a
// cancelled task). The parent writes, workers read; in the same anonymous mapping as the
// slots. A ring: a cancellation older than kCancelRing newer ones may be missed, and a
// worker that took the task before the cancel runs it; either way its result is dropped.
constexpr std::size_t kCancelRing = 256;
struct CancelRing {
    std::atomic<std::uint64_t> count{0};            // entries ever written (parent only)
    std::atomic<std::uint64_t> ids[kCancelRing] = {};
};

std::string describe_exit(int code) {
    if (code < 0) {
        const char* name = sigabbrev_np(-code);
        return "killed by signal " + std::to_string(-code) + (name ? std::string(" (SIG") + name + ")" : "");
    }
    return "exited with code " + std::to_string(code);
}

std::string unique_pool_name() {
    static std::atomic<unsigned> counter{0};
    static const unsigned salt = std::random_device{}() % 1000000;
    return "pool-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" + std::to_string(salt);
}

}  // namespace

class PoolCore {
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

    PoolOptions opt;
    unsigned n = 0;
    std::string base, tasks_name, results_name;
    std::atomic<std::uint64_t> started_count{0};

private:
    struct Pending {
        std::shared_ptr<TaskState> state;
        std::uint64_t position = kNoPosition;  // in the task queue, once pushed
    };
    struct Backlogged {  // a task the collector submitted while the queue was full
        std::uint64_t id;
        Bytes message;   // header and arguments
    };
    struct Suspect {     // a claimed position whose claimant died
        std::uint64_t position;
        std::string who;
    };

    void collector_main();
    void worker_main(unsigned index);
    void start_worker(unsigned index);
    void handle_message(std::span<const std::byte> m);
    void drain_ready();
    void supervise();
    void resolve_suspects(bool sweep, const std::string& sweep_who);
    void flush_backlog();
    std::shared_ptr<TaskState> take_pending(std::uint64_t id);
    void fail(std::uint64_t id, errc code, const std::string& why);
    void fail_all(errc code, const std::string& why);
    void stop_workers();
    void release_queues();
    bool may_cancel(std::uint64_t id) const;
    bool is_running(std::uint64_t id) const;
    bool cancelled_while_queued(std::uint64_t id) const noexcept;  // in a worker
    void publish(WriteSlot& w, std::uint64_t id, std::span<const std::byte> header,
                 std::span<const std::byte> args);  // under submit_m_
    std::string closed_message(const char* kind) const;

    detail::Guardian guardian_;               // removes both queues if this process dies; outlives them
    std::mutex handles_m_;                    // the Queue handles (terminate() vs release_queues())
    std::optional<Queue> tasks_q_, results_q_;
    std::optional<Producer<>> tx_;            // parent -> workers (under submit_m_)
    std::optional<Producer<>> wake_;          // parent -> collector: keeps the result stream open
    std::optional<Consumer<>> rx_;            // the collector's
    WorkerSlot* slots_ = nullptr;
    CancelRing* cancelled_ = nullptr;         // after the slots, in the same mapping
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
    std::deque<Backlogged> backlog_;          // pushed by the collector, in order
    std::atomic<bool> backlog_nonempty_{false};

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

PoolCore::PoolCore(PoolOptions o) : opt(std::move(o)) {
    n = opt.processes != 0 ? opt.processes : cpu_count();
    base = unique_pool_name();
    tasks_name = base + "-tasks";
    results_name = base + "-results";
    const std::size_t overhead = sizeof(TaskHeader) + 64;
    if (opt.max_message < overhead + 64) {
        throw Error(errc::invalid_argument, "Pool: max_message " + std::to_string(opt.max_message) +
                                                " is too small (at least " + std::to_string(overhead + 64) + " bytes)");
    }
    // The guardian first: a parent killed from here on leaves no segment behind.
    guardian_ = detail::Guardian("pool " + base + " guardian", {tasks_name, results_name});
    QueueOptions tq;
    tq.capacity = opt.queue_capacity != 0 ? opt.queue_capacity
                                          : std::clamp<std::size_t>(std::size_t{4} * n, 16, 128) * opt.max_message;
    tq.max_message = opt.max_message;
    tq.producers = Endpoints::one;
    tq.consumers = Endpoints::many;
    // Generous: a dead worker's endpoint record keeps its last claim until it is recycled,
    // which happens only when no free record is left.
    tq.max_endpoints = std::max(256u, n * 16 + 16);
    QueueOptions rq = tq;
    rq.producers = Endpoints::many;
    rq.consumers = Endpoints::one;
    tasks_q_.emplace(Queue::create(tasks_name, tq));
    results_q_.emplace(Queue::create(results_name, rq));
    tx_.emplace(tasks_name);
    wake_.emplace(results_name);
    rx_.emplace(results_name);
    max_message_ = tx_->max_message();

    slots_bytes_ = sizeof(WorkerSlot) * n + sizeof(CancelRing);
    void* mem = ::mmap(nullptr, slots_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw Error::from_errno(errno, "Pool: map the worker slots");
    slots_ = new (mem) WorkerSlot[n];
    cancelled_ = new (static_cast<std::byte*>(mem) + sizeof(WorkerSlot) * n) CancelRing;
    workers_.resize(n);
    seen_busy_.assign(n, {0, {}});

    // Workers are forked by the collector thread: their parent-death signal follows the
    // thread that forked them, and that thread lives as long as the pool.
    collector_ = std::thread([this] {
        collector_main();
        {
            std::lock_guard lock(state_m_);
            collector_exited_ = true;
        }
        state_cv_.notify_all();
    });
    std::unique_lock lock(state_m_);
    state_cv_.wait(lock, [&] { return ready_; });
    if (start_error_) {
        lock.unlock();
        collector_.join();
        ::munmap(slots_, slots_bytes_);
        std::rethrow_exception(start_error_);
    }
}

PoolCore::~PoolCore() {
    if (collector_.joinable()) {
        terminating_ = true;
        collector_.join();
    }
    if (slots_ != nullptr) ::munmap(slots_, slots_bytes_);
}

void PoolCore::start_worker(unsigned index) {
    WorkerSlot& s = slots_[index];
    s.task.store(0, std::memory_order_relaxed);
    s.taking.store(0, std::memory_order_relaxed);
    s.ended.store(0, std::memory_order_relaxed);
    s.completed.store(0, std::memory_order_relaxed);
    seen_busy_[index] = {0, {}};
    ProcessOptions po;
    po.name = base + "-worker-" + std::to_string(index);
    po.stop_grace = opt.stop_grace;
    po.daemon = true;  // the pool stops its workers itself (stop_workers); never wait on one
    // No leaked descriptors: a worker needs none of the parent's (it opens the queues by
    // name, the slots are an anonymous mapping), only stdio and what the user keeps.
    po.close_fds = true;
    po.keep_fds = opt.keep_fds;
    auto p = std::make_unique<Process>([this, index] { worker_main(index); }, po);
    p->start();
    ++started_count;
    std::lock_guard lock(workers_m_);
    workers_[index] = std::move(p);
}

// In the forked worker. Leaves by returning (Process then _exits 0) or by an exception (1).
void PoolCore::worker_main(unsigned index) {
    WorkerSlot& slot = slots_[index];
    set_current_worker_index(index);
    Consumer<> in(tasks_name);
    Producer<> out(results_name);
    if (opt.initializer) opt.initializer();
    Bytes args;
    Bytes result;
    std::uint64_t done = 0;
    while (opt.max_tasks_per_child == 0 || done < opt.max_tasks_per_child) {
        slot.taking.store(1, std::memory_order_release);
        TaskHeader h{};
        {
            std::optional<ReadSlot> rs;
            try {
                rs = in.peek();
            } catch (const Error& e) {
                if (e.code() == errc::broken) break;  // terminate(): stop quietly
                throw;
            }
            if (!rs) {
                slot.ended.store(1, std::memory_order_release);
                break;
            }
            const auto m = rs->span();
            if (m.size() < sizeof h) continue;  // not ours: skip it
            std::memcpy(&h, m.data(), sizeof h);
            slot.task.store(h.id, std::memory_order_release);  // before the cell is released
            slot.taking.store(0, std::memory_order_release);
            // Copy out and release the cell before running: a long task must not keep it.
            args.assign(m.begin() + static_cast<std::ptrdiff_t>(sizeof h), m.end());
        }
        ResultHeader rh{h.id, kResultOk, 0};
        if (cancelled_while_queued(h.id)) {
            rh.status = kResultCancelled;  // cancelled before we took it: never run (Python's rule)
            result.clear();
        } else {
            try {
                reinterpret_cast<Trampoline>(static_cast<std::uintptr_t>(h.trampoline))(
                    static_cast<std::uintptr_t>(h.fn), std::span<const std::byte>(args), result);
            } catch (...) {
                rh.status = kResultException;
                std::string type = "unknown exception";
                std::string what;
                if (const auto* t = abi::__cxa_current_exception_type()) type = demangle(t->name());
                try {
                    throw;
                } catch (const std::exception& e) {
                    what = e.what();
                } catch (...) {
                }
                encode_into(std::pair<std::string, std::string>(type, what), result);
            }
        }
        if (sizeof rh + result.size() > out.max_message()) {
            const std::string why = "result of " + std::to_string(result.size()) + " bytes exceeds the pool's "
                                    "max_message of " + std::to_string(out.max_message()) +
                                    " (raise PoolOptions::max_message or use a smaller chunksize)";
            rh.status = kResultTooLarge;
            encode_into(why, result);
        }
        auto w = out.reserve(sizeof rh + result.size());
        std::memcpy(w.span().data(), &rh, sizeof rh);
        if (!result.empty()) std::memcpy(w.span().data() + sizeof rh, result.data(), result.size());
        w.commit();
        slot.task.store(0, std::memory_order_release);
        slot.completed.fetch_add(1, std::memory_order_relaxed);
        ++done;
    }
    in.close();
    out.close();
}

void PoolCore::collector_main() {
    collector_id_ = std::this_thread::get_id();  // published to submitters by state_m_ below
    try {
        for (unsigned i = 0; i < n; ++i) start_worker(i);
    } catch (...) {
        start_error_ = std::current_exception();
        stop_workers();
    }
    {
        std::lock_guard lock(state_m_);
        ready_ = true;
    }
    state_cv_.notify_all();
    if (start_error_) return;

    auto last_check = std::chrono::steady_clock::now();
    while (true) {
        const bool backlog = backlog_nonempty_.load();
        try {
            if (backlog || (closed_ && !tx_closed_)) flush_backlog();
            if (auto m = rx_->peek_for(backlog ? kBacklogPeriod : kSupervisePeriod)) handle_message(m->span());
        } catch (const Error& e) {
            // producer_died: a worker died mid-stream; supervise() finds which. Anything
            // else (a queue marked broken) is not ours to fix: do not spin on it.
            if (e.code() != errc::producer_died) std::this_thread::sleep_for(kSupervisePeriod);
            last_check = {};
        }
        const auto now = std::chrono::steady_clock::now();
        if (now - last_check >= kSupervisePeriod) {
            last_check = now;
            if (terminating_) break;
            supervise();
            bool all_gone = true;
            {
                std::lock_guard lock(workers_m_);
                for (auto& w : workers_) all_gone = all_gone && w == nullptr;
            }
            if (closed_ && all_gone) {
                drain_ready();
                fail_all(errc::worker_died, "no worker left to run it (the pool was closed)");
                break;
            }
        }
    }
    if (terminating_) {
        stop_workers();
        drain_ready();
        fail_all(errc::cancelled, "the pool was terminated");
    }
}

std::shared_ptr<TaskState> PoolCore::take_pending(std::uint64_t id) {
    std::lock_guard lock(pending_m_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return nullptr;
    auto s = std::move(it->second.state);
    if (it->second.position != kNoPosition) positions_.erase(it->second.position);
    pending_.erase(it);
    return s;
}

void PoolCore::handle_message(std::span<const std::byte> m) {
    ResultHeader h{};
    if (m.size() < sizeof h) return;
    std::memcpy(&h, m.data(), sizeof h);
    if (h.id == 0) return;  // a wake-up
    auto s = take_pending(h.id);
    if (!s) return;  // cancelled, timed out or failed already
    const auto payload = m.subspan(sizeof h);
    if (h.status == kResultCancelled) {
        s->complete(TaskStatus::cancelled, {},
                    std::make_exception_ptr(Error(errc::cancelled, s->what + ": cancelled")));  // already, normally
    } else if (h.status == kResultOk) {
        s->complete(TaskStatus::ok, Bytes(payload.begin(), payload.end()), nullptr);
    } else if (h.status == kResultException) {
        std::exception_ptr e;
        try {
            auto [type, what] = Codec<std::pair<std::string, std::string>>::decode(payload);
            e = std::make_exception_ptr(RemoteError(std::move(type), std::move(what)));
        } catch (const Error& bad) {
            e = std::make_exception_ptr(bad);
        }
        s->complete(TaskStatus::failed, {}, e);
    } else {
        s->complete(TaskStatus::failed, {},
                    std::make_exception_ptr(Error(errc::message_too_large,
                                                  s->what + ": " + Codec<std::string>::decode(payload))));
    }
}

// Takes every result already committed (before judging a dead worker's task).
void PoolCore::drain_ready() {
    for (int guard = 0; guard < 1'000'000; ++guard) {
        try {
            auto m = rx_->try_peek();
            if (!m) return;
            handle_message(m->span());
        } catch (const Error&) {
            // producer_died is a notice; keep draining.
        }
    }
}

void PoolCore::fail(std::uint64_t id, errc code, const std::string& why) {
    auto s = take_pending(id);
    if (s) s->complete(TaskStatus::failed, {}, std::make_exception_ptr(Error(code, s->what + ": " + why)));
}

void PoolCore::fail_all(errc code, const std::string& why) {
    std::map<std::uint64_t, Pending> all;
    {
        std::lock_guard lock(pending_m_);
        all.swap(pending_);
        positions_.clear();
    }
    {
        std::lock_guard lock(backlog_m_);
        backlog_.clear();
        backlog_nonempty_ = false;
    }
    for (auto& [id, p] : all) {
        p.state->complete(code == errc::cancelled ? TaskStatus::cancelled : TaskStatus::failed, {},
                          std::make_exception_ptr(Error(code, p.state->what + ": " + why)));
    }
}

void PoolCore::supervise() {
    const auto now = std::chrono::steady_clock::now();
    struct Dead {
        unsigned index;
        std::unique_ptr<Process> proc;
        std::uint64_t holding;
        std::string who;
        bool clean_end;
    };
    std::vector<Dead> dead;
    bool sweep = false;
    std::string sweep_who;
    for (unsigned i = 0; i < n; ++i) {
        Process* w = nullptr;
        {
            std::lock_guard lock(workers_m_);
            w = workers_[i].get();
        }
        if (w == nullptr) continue;
        WorkerSlot& slot = slots_[i];
        const std::uint64_t held = slot.task.load(std::memory_order_acquire);

        // Per-task timeout: kill the worker; its death below fails nothing more.
        if (opt.task_timeout.count() > 0 && held != 0) {
            if (seen_busy_[i].first != held) {
                seen_busy_[i] = {held, now};
            } else if (now - seen_busy_[i].second > opt.task_timeout) {
                w->kill();
                fail(held, errc::timeout,
                     "ran longer than the pool's task_timeout of " + std::to_string(opt.task_timeout.count()) +
                         " ms; worker " + std::to_string(w->pid()) + " was killed");
            }
        }
        if (w->is_alive()) continue;

        const int code = w->exit_code().value_or(-1);
        const auto pid = static_cast<std::uint32_t>(w->pid());
        std::string who = "worker " + w->name() + " (pid " + std::to_string(pid) + ") " + describe_exit(code);
        // M3: what it claimed last. Read now, before any replacement starts and might recycle
        // its endpoint record.
        if (auto pos = tasks_q_->last_claim_of(pid)) {
            suspects_.push_back({*pos, who + " while taking it from the queue"});
        } else if (slot.taking.load(std::memory_order_acquire) != 0 && slot.ended.load() == 0) {
            // Its record is gone (recycled): it may have claimed a message we cannot name.
            sweep = true;
            sweep_who = who + " while taking it from the queue";
        }
        Dead d{i, nullptr, slot.task.load(std::memory_order_acquire), std::move(who),
               slot.ended.load(std::memory_order_acquire) != 0};
        {
            std::lock_guard lock(workers_m_);
            d.proc = std::move(workers_[i]);
        }
        dead.push_back(std::move(d));
    }
    if (!dead.empty()) {
        drain_ready();
        for (auto& d : dead) {
            if (d.holding != 0) fail(d.holding, errc::worker_died, d.who + " while running it");
        }
    }
    if (!suspects_.empty() || sweep) resolve_suspects(sweep, sweep_who);
    for (auto& d : dead) {
        if (terminating_ || d.clean_end) continue;
        try {
            start_worker(d.index);
        } catch (const std::exception& e) {
            // Cannot fork now: the slot stays empty (the pool runs one worker short).
            std::fprintf(stderr, "shmpipe: pool %s: cannot start a replacement worker: %s\n", base.c_str(), e.what());
        }
    }
}

// Fails the tasks at suspect positions that no live worker can finish (see the file comment).
void PoolCore::resolve_suspects(bool sweep, const std::string& sweep_who) {
    // First what the live workers claim and run, then the queue's head, then the drain: a
    // live worker's claim lasts until after it committed the result.
    std::vector<std::uint64_t> live_claims, live_tasks;
    {
        std::lock_guard lock(workers_m_);
        for (unsigned i = 0; i < n; ++i) {
            if (!workers_[i]) continue;
            if (auto pos = tasks_q_->last_claim_of(static_cast<std::uint32_t>(workers_[i]->pid()))) {
                live_claims.push_back(*pos);
            }
            live_tasks.push_back(slots_[i].task.load(std::memory_order_acquire));
        }
    }
    const std::uint64_t head = tasks_q_->stats().messages_out;  // MPMC: positions claimed so far
    drain_ready();
    if (sweep) {
        std::lock_guard lock(pending_m_);
        for (const auto& [id, p] : pending_) {
            if (p.position != kNoPosition && p.position < head) suspects_.push_back({p.position, sweep_who});
        }
    }
    std::vector<Suspect> keep;
    for (auto& s : suspects_) {
        std::uint64_t id = 0;
        {
            std::lock_guard lock(pending_m_);
            auto it = positions_.find(s.position);
            if (it != positions_.end()) id = it->second;
        }
        if (id == 0) continue;                 // finished (or never ours)
        if (s.position >= head) continue;      // not claimed: a live worker will take it
        if (std::find(live_tasks.begin(), live_tasks.end(), id) != live_tasks.end()) continue;  // running
        if (std::find(live_claims.begin(), live_claims.end(), s.position) != live_claims.end()) {
            keep.push_back(std::move(s));      // look again next round
            continue;
        }
        fail(id, errc::worker_died, s.who);
    }
    suspects_ = std::move(keep);
}

void PoolCore::stop_workers() {
    std::vector<std::unique_ptr<Process>> all;
    {
        std::lock_guard lock(workers_m_);
        for (auto& w : workers_) {
            if (w) all.push_back(std::move(w));
        }
    }
    for (auto& w : all) w->signal_group(SIGTERM);  // everyone at once, then the ladder each
    for (auto& w : all) w->stop(opt.stop_grace);
}

std::string PoolCore::closed_message(const char* kind) const {
    return std::string("Pool ") + base + ": " + kind + " after " + (terminating_ ? "terminate()" : "close()") +
           " (no new tasks are accepted)";
}

void PoolCore::publish(WriteSlot& w, std::uint64_t id, std::span<const std::byte> header,
                       std::span<const std::byte> args) {
    // The queue's only producer: this reservation has MPMC position next_position_.
    const std::uint64_t position = next_position_++;
    {
        std::lock_guard lock(pending_m_);
        auto it = pending_.find(id);
        if (it != pending_.end()) {
            it->second.position = position;
            positions_[position] = id;
        }
    }
    std::memcpy(w.span().data(), header.data(), header.size());
    if (!args.empty()) std::memcpy(w.span().data() + header.size(), args.data(), args.size());
    w.commit();
}

std::shared_ptr<TaskState> PoolCore::submit(Trampoline t, std::uint64_t fn, std::span<const std::byte> args,
                                            const char* kind) {
    if (closed_ || terminating_) throw Error(errc::invalid_state, closed_message(kind));
    if (sizeof(TaskHeader) + args.size() > max_message_) {
        throw Error(errc::message_too_large,
                    std::string("Pool ") + base + ": " + kind + ": arguments of " + std::to_string(args.size()) +
                        " bytes exceed max_message " + std::to_string(max_message_) +
                        " (raise PoolOptions::max_message or use a smaller chunksize)");
    }
    auto s = std::make_shared<TaskState>();
    const std::uint64_t id = next_id_.fetch_add(1);
    s->id = id;
    s->what = std::string(kind) + " task " + std::to_string(id);
    s->may_cancel = [this](std::uint64_t task) { return may_cancel(task); };
    s->is_running = [this](std::uint64_t task) { return is_running(task); };
    const TaskHeader h{id, static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(t)), fn};
    const auto header = std::as_bytes(std::span(&h, 1));
    const std::size_t size = sizeof h + args.size();
    {
        // Registered before it is pushed: its result may come back at once.
        std::lock_guard lock(pending_m_);
        pending_.emplace(id, Pending{s, kNoPosition});
    }
    try {
        if (std::this_thread::get_id() == collector_id_) {
            // A done-callback: the collector must never wait for room (it is what makes room).
            std::unique_lock lock(submit_m_, std::try_to_lock);
            if (lock && !closed_ && !terminating_ && !backlog_nonempty_) {
                if (auto w = tx_->try_reserve(size)) {
                    publish(*w, id, header, args);
                    return s;
                }
            }
            if (closed_ || terminating_) throw Error(errc::invalid_state, closed_message(kind));
            Backlogged b{id, Bytes(size)};
            std::memcpy(b.message.data(), &h, sizeof h);
            if (!args.empty()) std::memcpy(b.message.data() + sizeof h, args.data(), args.size());
            std::lock_guard block(backlog_m_);
            backlog_.push_back(std::move(b));
            backlog_nonempty_ = true;
            return s;
        }
        while (true) {
            std::unique_lock lock(submit_m_);
            if (closed_ || terminating_) throw Error(errc::invalid_state, closed_message(kind));
            std::optional<WriteSlot> w;
            try {
                w = tx_->reserve_for(size, kSubmitSlice);
            } catch (const Error& e) {
                if (e.code() == errc::broken && terminating_) throw Error(errc::invalid_state, closed_message(kind));
                throw;
            }
            if (w) {
                publish(*w, id, header, args);
                return s;
            }
            lock.unlock();  // full: let close(), terminate() and the others in before trying again
            if (backlog_nonempty_) {
                std::this_thread::sleep_for(2 * kBacklogPeriod);  // the collector's backlog goes first
            } else {
                std::this_thread::yield();
            }
        }
    } catch (...) {
        take_pending(id);
        throw;
    }
}

// The collector's backlog goes to the queue as room appears; after close(), the stream ends
// once the backlog is out.
void PoolCore::flush_backlog() {
    std::unique_lock lock(submit_m_, std::try_to_lock);
    if (!lock || tx_closed_) return;
    {
        std::lock_guard block(backlog_m_);
        while (!backlog_.empty()) {
            Backlogged& b = backlog_.front();
            bool live = false;
            {
                std::lock_guard plock(pending_m_);
                auto it = pending_.find(b.id);
                live = it != pending_.end() && !it->second.state->finished();
                if (it != pending_.end() && !live) pending_.erase(it);  // cancelled meanwhile
            }
            if (live) {
                auto w = tx_->try_reserve(b.message.size());
                if (!w) break;
                publish(*w, b.id, std::span<const std::byte>(b.message).first(sizeof(TaskHeader)),
                        std::span<const std::byte>(b.message).subspan(sizeof(TaskHeader)));
            }
            backlog_.pop_front();
        }
        backlog_nonempty_ = !backlog_.empty();
        if (!closed_ || !backlog_.empty()) return;
    }
    tx_->close();  // the workers drain the queue, see its end and exit
    tx_closed_ = true;
}

// A worker records the task in its slot right after taking it and clears it after sending
// the result: in between, the task runs.
bool PoolCore::is_running(std::uint64_t id) const {
    for (unsigned j = 0; j < n; ++j) {
        if (slots_[j].task.load(std::memory_order_acquire) == id) return true;
    }
    return false;
}

bool PoolCore::may_cancel(std::uint64_t id) const {
    for (unsigned j = 0; j < n; ++j) {
        if (slots_[j].task.load(std::memory_order_acquire) == id) return false;
    }
    std::lock_guard lock(pending_m_);  // also makes us the ring's only writer
    if (pending_.count(id) == 0) return false;
    // Tell the workers. C1: the id is stored before the count that publishes it; a worker
    // acquire-loads the count first.
    const std::uint64_t k = cancelled_->count.load(std::memory_order_relaxed);  // we are the only writer
    cancelled_->ids[k % kCancelRing].store(id, std::memory_order_relaxed);
    cancelled_->count.store(k + 1, std::memory_order_release);  // C1
    return true;
}

bool PoolCore::cancelled_while_queued(std::uint64_t id) const noexcept {
    const std::uint64_t k = cancelled_->count.load(std::memory_order_acquire);  // C1
    if (k == 0) return false;  // nothing was ever cancelled: the common case costs one load
    const std::uint64_t seen = std::min<std::uint64_t>(k, kCancelRing);
    for (std::uint64_t i = 0; i < seen; ++i) {
        if (cancelled_->ids[i].load(std::memory_order_relaxed) == id) return true;  // C1 covers entries below k
    }
    return false;
}

void PoolCore::cancel_pending() {
    std::vector<std::shared_ptr<TaskState>> all;
    {
        std::lock_guard lock(pending_m_);
        for (auto& [id, p] : pending_) all.push_back(p.state);
    }
    for (auto& s : all) {
        if (s->cancel()) take_pending(s->id);
    }
}

void PoolCore::close() {
    std::lock_guard lock(submit_m_);  // held by others only for one bounded try
    if (closed_) return;
    closed_ = true;
    {
        std::lock_guard block(backlog_m_);
        if (!backlog_.empty()) return;  // the collector closes the stream after the backlog
    }
    if (tx_ && !tx_closed_) {
        tx_->close();  // the workers drain the queue, see its end and exit
        tx_closed_ = true;
    }
}

void PoolCore::join() {
    std::lock_guard lock(lifecycle_m_);
    if (joined_) return;
    if (!closed_ && !terminating_) {
        throw Error(errc::invalid_state, "Pool " + base + ": join() before close() or terminate()");
    }
    if (collector_.joinable()) collector_.join();
    joined_ = true;
    joined_flag_ = true;
    release_queues();
}

bool PoolCore::join_for(std::chrono::nanoseconds timeout) {
    {
        std::lock_guard lock(lifecycle_m_);
        if (joined_) return true;
        if (!closed_ && !terminating_) {
            throw Error(errc::invalid_state, "Pool " + base + ": join_for() before close() or terminate()");
        }
    }
    {
        std::unique_lock lock(state_m_);
        if (!state_cv_.wait_until(lock, deadline_in(timeout), [&] { return collector_exited_; })) return false;
    }
    join();  // the collector has returned: this only joins its thread and removes the queues
    return true;
}

// The pool has ended: detach and remove both queues now (not when the Pool is destroyed).
void PoolCore::release_queues() {
    std::lock_guard lock(submit_m_);
    rx_.reset();
    wake_.reset();
    tx_.reset();
    std::lock_guard hlock(handles_m_);
    tasks_q_.reset();
    results_q_.reset();
    guardian_.release();
}

void PoolCore::terminate() {
    terminating_ = true;
    {
        // A submitter waiting for room gives up at once (and the workers stop taking tasks).
        std::lock_guard hlock(handles_m_);
        if (tasks_q_) tasks_q_->mark_broken();
    }
    {
        std::lock_guard lock(submit_m_);
        closed_ = true;
        if (tx_ && !tx_closed_) {
            tx_->close();
            tx_closed_ = true;
        }
    }
    std::lock_guard lock(lifecycle_m_);
    if (collector_.joinable()) collector_.join();
    joined_ = true;
    joined_flag_ = true;
    release_queues();
}

std::vector<int> PoolCore::worker_pids() const {
    std::vector<int> pids;
    std::lock_guard lock(workers_m_);
    for (const auto& w : workers_) {
        if (w) pids.push_back(w->pid());
    }
    return pids;
}

std::shared_ptr<TaskState> pool_submit(PoolCore& core, Trampoline t, std::uint64_t fn, std::span<const std::byte> args,
                                       const char* kind) {
    return core.submit(t, fn, args, kind);
}
std::size_t pool_max_payload(const PoolCore& core) noexcept { return core.opt.max_message - sizeof(TaskHeader) - 64; }
unsigned pool_size(const PoolCore& core) noexcept { return core.n; }

}  // namespace shmpipe::detail

namespace shmpipe {

namespace detail {

PoolEngine::PoolEngine(PoolOptions options) : core_(std::make_shared<PoolCore>(std::move(options))) {}

void PoolEngine::close_engine() { core_->close(); }
void PoolEngine::join_engine() { core_->join(); }
void PoolEngine::terminate_engine() { core_->terminate(); }
void PoolEngine::shutdown_engine(bool wait, bool cancel_pending) {
    core_->close();
    if (cancel_pending) core_->cancel_pending();
    if (wait) core_->join();
}
bool PoolEngine::engine_joined() const noexcept { return core_->joined(); }

Bytes& PoolEngine::scratch() {
    thread_local Bytes buf;
    return buf;
}

}  // namespace detail

namespace {
PoolOptions with_processes(unsigned processes) {
    PoolOptions o;
    o.processes = processes;
    return o;
}
}  // namespace

Pool::Pool(unsigned processes) : Pool(with_processes(processes)) {}

Pool::Pool(PoolOptions options) : PoolEngine(std::move(options)) {}

Pool::~Pool() {
    if (!core_ || engine_joined()) return;
    try {
        terminate_engine();  // like `with Pool()` in Python: never waits on a task
    } catch (...) {
    }
}

void Pool::close() { close_engine(); }
void Pool::join() { join_engine(); }
bool Pool::join_for_ns(std::chrono::nanoseconds timeout) { return core_->join_for(timeout); }
void Pool::terminate() { terminate_engine(); }
void Pool::shutdown(bool wait, bool cancel_pending) { shutdown_engine(wait, cancel_pending); }
unsigned Pool::size() const noexcept { return core_->n; }
std::vector<int> Pool::worker_pids() const { return core_->worker_pids(); }
std::uint64_t Pool::workers_started() const noexcept { return core_->started_count.load(); }
const std::string& Pool::tasks_queue_name() const noexcept { return core_->tasks_name; }
const std::string& Pool::results_queue_name() const noexcept { return core_->results_name; }

ProcessPoolExecutor::ProcessPoolExecutor(unsigned max_workers) : ProcessPoolExecutor(with_processes(max_workers)) {}

ProcessPoolExecutor::ProcessPoolExecutor(PoolOptions options) : PoolEngine(std::move(options)) {}

ProcessPoolExecutor::~ProcessPoolExecutor() {
    if (!core_ || engine_joined()) return;
    try {
        shutdown_engine(true, false);  // like leaving `with ProcessPoolExecutor()`: the queued tasks run
    } catch (...) {
        try {
            terminate_engine();
        } catch (...) {
        }
    }
}

void ProcessPoolExecutor::shutdown(bool wait, bool cancel_futures) { shutdown_engine(wait, cancel_futures); }
unsigned ProcessPoolExecutor::size() const noexcept { return core_->n; }
std::vector<int> ProcessPoolExecutor::worker_pids() const { return core_->worker_pids(); }

}  // namespace shmpipe
