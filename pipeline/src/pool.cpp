// Pool: construction, close / join / terminate, and the public faces (Pool,
// ProcessPoolExecutor, PoolEngine). The roles live in pool_submit.cpp, pool_results.cpp,
// pool_supervise.cpp and pool_worker.cpp around pool_core.hpp.
#include "pool_core.hpp"

#include <algorithm>
#include <random>
#include <sys/mman.h>
#include <unistd.h>

namespace shmpipe::detail {
namespace {

std::string unique_pool_name() {
    static std::atomic<unsigned> counter{0};
    static const unsigned salt = std::random_device{}() % 1000000;
    return "pool-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" + std::to_string(salt);
}

}  // namespace

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
    // A worker sleeps in the task queue and the draining thread in the results queue about
    // once per task when tasks come one at a time: no membarrier per sleep (wait.hpp).
    tq.symmetric_fences = true;
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
    tx_.emplace(tasks_name, hot_cells());
    wake_.emplace(results_name);
    rx_.emplace(results_name, hot_cells());
    max_message_ = tx_->max_message();

    const std::size_t ring_at = sizeof(WorkerSlot) * n;  // WorkerSlot is 64 bytes: the ring is aligned
    const std::size_t door_at = (ring_at + sizeof(CancelRing) + alignof(TaskDoor) - 1) / alignof(TaskDoor) * alignof(TaskDoor);
    slots_bytes_ = door_at + sizeof(TaskDoor);
    void* mem = ::mmap(nullptr, slots_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw Error::from_errno(errno, "Pool: map the worker slots");
    slots_ = new (mem) WorkerSlot[n];
    cancelled_ = new (static_cast<std::byte*>(mem) + ring_at) CancelRing;
    door_ = new (static_cast<std::byte*>(mem) + door_at) TaskDoor;
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
    {
        std::lock_guard llock(lead_m_);
        leader_ = Leader::ended;  // the collector ended the leadership already; no one drains now
    }
    rx_.reset();
    {
        std::lock_guard wlock(wake_m_);
        wake_.reset();
    }
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

std::shared_ptr<TaskState> PoolEngine::submit_task(Trampoline t, std::uint64_t fn, std::span<const std::byte> args,
                                                   const char* kind) {
    return core_->submit(t, fn, args, kind);
}
std::size_t PoolEngine::max_payload() const noexcept { return core_->opt.max_message - sizeof(TaskHeader) - 64; }
unsigned PoolEngine::pool_size() const noexcept { return core_->n; }

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
