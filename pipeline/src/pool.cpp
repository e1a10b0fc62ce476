// Pool: the parent side (submission, the collector thread, supervision) and the worker loop.
//
// Who holds which task: every worker has a slot in an anonymous MAP_SHARED mapping made
// before the first fork (so parent and workers share it, and nothing is left behind):
// the id of the task it runs, whether it is between taking a task and recording it, and
// whether it saw the end of the task stream. When a worker dies, the collector first drains
// the results already committed, then fails the task in the slot (worker_died), then starts
// a replacement in the same slot. A worker killed in the few instructions between taking a
// task and recording it leaves the MPMC queue's `lost` count raised: the oldest pending task
// no worker holds is the one it took (tasks are taken in queue order), and it fails too.
#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <map>
#include <mutex>
#include <random>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>

namespace shmpipe::detail {
namespace {

using namespace std::chrono_literals;

constexpr auto kSupervisePeriod = 20ms;  // liveness and timeout checks while results flow or not

struct alignas(64) WorkerSlot {
    std::atomic<std::uint64_t> task{0};      // the task being run; 0: none. Worker writes, parent reads.
    std::atomic<std::uint32_t> taking{0};    // 1 while waiting for / taking a task (before `task` is set)
    std::atomic<std::uint32_t> ended{0};     // 1: saw the end of the task stream (a clean exit)
    std::atomic<std::uint64_t> completed{0}; // tasks finished by this worker
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free);

std::string demangle(const char* mangled) {
    int status = 0;
    char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    std::string out = (status == 0 && d != nullptr) ? d : mangled;
    std::free(d);
    return out;
}

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
    void terminate();
    void cancel_pending();
    std::vector<int> worker_pids() const;
    bool closed_flag() const noexcept { return closed_.load(); }

    PoolOptions opt;
    unsigned n = 0;
    std::string base, tasks_name, results_name;
    std::atomic<std::uint64_t> started_count{0};

private:
    void collector_main();
    void worker_main(unsigned index);
    void start_worker(unsigned index);
    void handle_message(std::span<const std::byte> m);
    void drain_ready();
    void supervise();
    void fail(std::uint64_t id, errc code, const std::string& why);
    void fail_all(errc code, const std::string& why);
    void stop_workers();
    void release_queues();
    bool may_cancel(std::uint64_t id) const;

    std::optional<Queue> tasks_q_, results_q_;
    std::optional<Producer<>> tx_;            // parent -> workers (under submit_m_)
    std::optional<Producer<>> wake_;          // parent -> collector: keeps the result stream open
    std::optional<Consumer<>> rx_;            // the collector's
    WorkerSlot* slots_ = nullptr;
    std::size_t slots_bytes_ = 0;

    mutable std::mutex workers_m_;
    std::vector<std::unique_ptr<Process>> workers_;
    std::vector<std::pair<std::uint64_t, std::chrono::steady_clock::time_point>> seen_busy_;  // collector only

    mutable std::mutex pending_m_;
    std::map<std::uint64_t, std::shared_ptr<TaskState>> pending_;  // ordered: oldest first
    std::uint64_t next_id_ = 1;
    std::uint64_t lost_seen_ = 0;

    std::mutex submit_m_;
    std::mutex state_m_;
    std::condition_variable state_cv_;
    bool ready_ = false;                 // workers started (or failed to)
    std::exception_ptr start_error_;
    std::atomic<bool> closed_{false};
    std::atomic<bool> terminating_{false};
    bool joined_ = false;
    std::thread collector_;
    std::mutex lifecycle_m_;             // close/join/terminate from user threads
};

PoolCore::PoolCore(PoolOptions o) : opt(std::move(o)) {
    n = opt.processes != 0 ? opt.processes : std::max(1u, std::thread::hardware_concurrency());
    base = unique_pool_name();
    tasks_name = base + "-tasks";
    results_name = base + "-results";
    const std::size_t overhead = sizeof(TaskHeader) + 64;
    if (opt.max_message < overhead + 64) {
        throw Error(errc::invalid_argument, "Pool: max_message " + std::to_string(opt.max_message) +
                                                " is too small (at least " + std::to_string(overhead + 64) + " bytes)");
    }
    QueueOptions tq;
    tq.capacity = opt.queue_capacity;
    tq.max_message = opt.max_message;
    tq.producers = Endpoints::one;
    tq.consumers = Endpoints::many;
    tq.max_endpoints = std::max(64u, n * 4 + 8);
    QueueOptions rq = tq;
    rq.producers = Endpoints::many;
    rq.consumers = Endpoints::one;
    tasks_q_.emplace(Queue::create(tasks_name, tq));
    results_q_.emplace(Queue::create(results_name, rq));
    tx_.emplace(tasks_name);
    wake_.emplace(results_name);
    rx_.emplace(results_name);

    slots_bytes_ = sizeof(WorkerSlot) * n;
    void* mem = ::mmap(nullptr, slots_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw Error::from_errno(errno, "Pool: map the worker slots");
    slots_ = new (mem) WorkerSlot[n];
    workers_.resize(n);
    seen_busy_.assign(n, {0, {}});

    // Workers are forked by the collector thread: their parent-death signal follows the
    // thread that forked them, and that thread lives as long as the pool.
    collector_ = std::thread([this] { collector_main(); });
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
    auto p = std::make_unique<Process>([this, index] { worker_main(index); }, po);
    p->start();
    ++started_count;
    std::lock_guard lock(workers_m_);
    workers_[index] = std::move(p);
}

// In the forked worker. Leaves by returning (Process then _exits 0) or by an exception (1).
void PoolCore::worker_main(unsigned index) {
    WorkerSlot& slot = slots_[index];
    Consumer<> in(tasks_name);
    Producer<> out(results_name);
    if (opt.initializer) opt.initializer();
    Bytes result;
    std::uint64_t done = 0;
    while (opt.max_tasks_per_child == 0 || done < opt.max_tasks_per_child) {
        slot.taking.store(1, std::memory_order_release);
        auto rs = in.peek();
        if (!rs) {
            slot.ended.store(1, std::memory_order_release);
            break;
        }
        TaskHeader h{};
        const auto m = rs->span();
        if (m.size() < sizeof h) continue;  // not ours: skip it
        std::memcpy(&h, m.data(), sizeof h);
        slot.task.store(h.id, std::memory_order_release);  // before the message is released
        slot.taking.store(0, std::memory_order_release);
        // The arguments are decoded in place; the message is released after the call (a
        // held MPMC cell only delays the producer's reuse of that one cell).
        ResultHeader rh{h.id, kResultOk, 0};
        try {
            reinterpret_cast<Trampoline>(static_cast<std::uintptr_t>(h.trampoline))(
                static_cast<std::uintptr_t>(h.fn), m.subspan(sizeof h), result);
            rs.reset();
        } catch (...) {
            rs.reset();
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
        try {
            if (auto m = rx_->peek_for(kSupervisePeriod)) handle_message(m->span());
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

void PoolCore::handle_message(std::span<const std::byte> m) {
    ResultHeader h{};
    if (m.size() < sizeof h) return;
    std::memcpy(&h, m.data(), sizeof h);
    if (h.id == 0) return;  // a wake-up
    std::shared_ptr<TaskState> s;
    {
        std::lock_guard lock(pending_m_);
        auto it = pending_.find(h.id);
        if (it == pending_.end()) return;  // cancelled, timed out or failed already
        s = std::move(it->second);
        pending_.erase(it);
    }
    const auto payload = m.subspan(sizeof h);
    if (h.status == kResultOk) {
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
    std::shared_ptr<TaskState> s;
    {
        std::lock_guard lock(pending_m_);
        auto it = pending_.find(id);
        if (it == pending_.end()) return;
        s = std::move(it->second);
        pending_.erase(it);
    }
    s->complete(TaskStatus::failed, {}, std::make_exception_ptr(Error(code, s->what + ": " + why)));
}

void PoolCore::fail_all(errc code, const std::string& why) {
    std::map<std::uint64_t, std::shared_ptr<TaskState>> all;
    {
        std::lock_guard lock(pending_m_);
        all.swap(pending_);
    }
    for (auto& [id, s] : all) {
        s->complete(code == errc::cancelled ? TaskStatus::cancelled : TaskStatus::failed, {},
                    std::make_exception_ptr(Error(code, s->what + ": " + why)));
    }
}

void PoolCore::supervise() {
    const auto now = std::chrono::steady_clock::now();
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
        drain_ready();
        const std::uint64_t holding = slot.task.load(std::memory_order_acquire);
        const std::string who = "worker " + w->name() + " (pid " + std::to_string(w->pid()) + ") " + describe_exit(code);
        if (holding != 0) {
            fail(holding, errc::worker_died, who + " while running it");
        } else if (slot.taking.load(std::memory_order_acquire) != 0 && slot.ended.load() == 0 && code != 0) {
            // Died while taking a task: if the queue lost a message, it was the oldest unheld one.
            const auto lost = tasks_q_->stats().lost;
            if (lost > lost_seen_) {
                lost_seen_ = lost;
                std::uint64_t victim = 0;
                {
                    std::lock_guard lock(pending_m_);
                    for (const auto& [id, s] : pending_) {
                        bool held_by_other = false;
                        for (unsigned j = 0; j < n; ++j) held_by_other = held_by_other || slots_[j].task.load() == id;
                        if (!held_by_other) {
                            victim = id;
                            break;
                        }
                    }
                }
                if (victim != 0) fail(victim, errc::worker_died, who + " while taking it from the queue");
            }
        }
        const bool clean_end = slot.ended.load(std::memory_order_acquire) != 0;
        {
            std::lock_guard lock(workers_m_);
            workers_[i].reset();
        }
        if (!terminating_ && !clean_end) {
            try {
                start_worker(i);
            } catch (const std::exception& e) {
                // Cannot fork now: try again at the next check.
                std::fprintf(stderr, "shmpipe: pool %s: cannot start a replacement worker: %s\n", base.c_str(),
                             e.what());
            }
        }
    }
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

std::shared_ptr<TaskState> PoolCore::submit(Trampoline t, std::uint64_t fn, std::span<const std::byte> args,
                                            const char* kind) {
    auto s = std::make_shared<TaskState>();
    std::lock_guard lock(submit_m_);
    if (closed_ || terminating_) {
        throw Error(errc::invalid_state, std::string("Pool ") + base + ": " + kind + " after " +
                                             (terminating_ ? "terminate()" : "close()") +
                                             " (no new tasks are accepted)");
    }
    if (sizeof(TaskHeader) + args.size() > tx_->max_message()) {
        throw Error(errc::message_too_large,
                    std::string("Pool ") + base + ": " + kind + ": arguments of " + std::to_string(args.size()) +
                        " bytes exceed max_message " + std::to_string(tx_->max_message()) +
                        " (raise PoolOptions::max_message or use a smaller chunksize)");
    }
    const std::uint64_t id = next_id_++;
    s->id = id;
    s->what = std::string(kind) + " task " + std::to_string(id);
    s->may_cancel = [this](std::uint64_t task) { return may_cancel(task); };
    {
        std::lock_guard plock(pending_m_);
        pending_.emplace(id, s);
    }
    const TaskHeader h{id, static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(t)), fn};
    try {
        auto w = tx_->reserve(sizeof h + args.size());
        std::memcpy(w.span().data(), &h, sizeof h);
        if (!args.empty()) std::memcpy(w.span().data() + sizeof h, args.data(), args.size());
        w.commit();
    } catch (...) {
        std::lock_guard plock(pending_m_);
        pending_.erase(id);
        throw;
    }
    return s;
}

bool PoolCore::may_cancel(std::uint64_t id) const {
    for (unsigned j = 0; j < n; ++j) {
        if (slots_[j].task.load(std::memory_order_acquire) == id) return false;
    }
    std::lock_guard lock(pending_m_);
    return pending_.count(id) != 0;
}

void PoolCore::cancel_pending() {
    std::vector<std::shared_ptr<TaskState>> all;
    {
        std::lock_guard lock(pending_m_);
        for (auto& [id, s] : pending_) all.push_back(s);
    }
    for (auto& s : all) {
        if (s->cancel()) {
            std::lock_guard lock(pending_m_);
            pending_.erase(s->id);
        }
    }
}

void PoolCore::close() {
    std::lock_guard lock(submit_m_);
    if (closed_) return;
    closed_ = true;
    if (tx_) tx_->close();  // the workers drain the queue, see its end and exit
}

void PoolCore::join() {
    std::lock_guard lock(lifecycle_m_);
    if (joined_) return;
    if (!closed_ && !terminating_) {
        throw Error(errc::invalid_state, "Pool " + base + ": join() before close() or terminate()");
    }
    if (collector_.joinable()) collector_.join();
    joined_ = true;
    release_queues();
}

// The pool has ended: detach and remove both queues now (not when the Pool is destroyed).
void PoolCore::release_queues() {
    std::lock_guard lock(submit_m_);
    rx_.reset();
    wake_.reset();
    tx_.reset();
    tasks_q_.reset();
    results_q_.reset();
}

void PoolCore::terminate() {
    {
        std::lock_guard lock(submit_m_);
        terminating_ = true;
        closed_ = true;
        if (tx_) tx_->close();
    }
    std::lock_guard lock(lifecycle_m_);
    if (collector_.joinable()) collector_.join();
    joined_ = true;
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

Pool::Pool(unsigned processes) : Pool([&] {
    PoolOptions o;
    o.processes = processes;
    return o;
}()) {}

Pool::Pool(PoolOptions options) : core_(std::make_shared<detail::PoolCore>(std::move(options))) {}

Pool::~Pool() {
    if (!core_) return;
    try {
        if (core_->closed_flag()) {
            core_->join();
        } else {
            core_->terminate();
        }
    } catch (...) {
    }
}

void Pool::close() { core_->close(); }
void Pool::join() { core_->join(); }
void Pool::terminate() { core_->terminate(); }
void Pool::shutdown(bool wait, bool cancel_pending) {
    core_->close();
    if (cancel_pending) core_->cancel_pending();
    if (wait) core_->join();
}
unsigned Pool::size() const noexcept { return core_->n; }
std::vector<int> Pool::worker_pids() const { return core_->worker_pids(); }
std::uint64_t Pool::workers_started() const noexcept { return core_->started_count.load(); }
const std::string& Pool::tasks_queue_name() const noexcept { return core_->tasks_name; }
const std::string& Pool::results_queue_name() const noexcept { return core_->results_name; }

Bytes& Pool::scratch() {
    thread_local Bytes buf;
    return buf;
}

}  // namespace shmpipe
