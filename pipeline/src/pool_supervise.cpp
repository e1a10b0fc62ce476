// Pool: the collector thread. It forks the workers, watches them (deaths, task timeouts,
// replacements), leads the result draining while no caller waits (pool_results.cpp), and
// pushes the backlog of tasks submitted by draining threads.
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
// replacement might recycle its endpoint record), reads the queue's head, then notes what the
// live workers claim and run, drains the results already committed, and then fails with errc::worker_died the task in
// its slot and the task at its last claimed position, if that position was claimed (below
// the queue's head), is still pending and no live worker claims or runs it. A live worker's
// claim stays until after it committed that task's result, so a task no live worker claims
// or runs after the drain has no one left to finish it. A position a live worker seems to
// claim is checked again at the next round (a worker between storing its intent and losing
// the claim race shows a position it does not own for a moment). If the dead worker's
// endpoint record was recycled before it was read (only when no record is free; the task
// queue has at least 256), every claimed position still pending is checked the same way.
#include "pool_core.hpp"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>

namespace shmpipe::detail {

namespace {

std::string describe_exit(int code) {
    if (code < 0) {
        const char* name = sigabbrev_np(-code);
        return "killed by signal " + std::to_string(-code) + (name ? std::string(" (SIG") + name + ")" : "");
    }
    return "exited with code " + std::to_string(code);
}

}  // namespace

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
    // Counted before the fork: a caller that drains results itself may see the new worker's
    // first result before this thread returns from start().
    ++started_count;
    try {
        p->start();
    } catch (...) {
        --started_count;
        throw;
    }
    std::lock_guard lock(workers_m_);
    workers_[index] = std::move(p);
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

    using clock = std::chrono::steady_clock;
    auto last_check = clock::now();
    bool ended = false;
    while (!ended) {
        const bool backlog = backlog_nonempty_.load();
        if (backlog || (closed_ && !tx_closed_)) flush_backlog();
        const auto since = clock::now() - last_check;
        const clock::duration wait = backlog ? clock::duration(kBacklogPeriod)
                                             : std::max<clock::duration>(kSupervisePeriod - since, clock::duration::zero());
        if (waiting_.load(std::memory_order_seq_cst) == 0 && pending_any()) {
            collector_drain(wait);  // L4 (pool_results.cpp)
        } else {
            std::unique_lock lock(idle_m_);
            idle_cv_.wait_for(lock, wait, [&] { return kicked_; });
            kicked_ = false;
        }
        const auto now = clock::now();
        if (now - last_check >= kSupervisePeriod || supervise_now_.exchange(false)) {
            last_check = now;
            if (terminating_) break;
            supervise();
            bool all_gone = true;
            {
                std::lock_guard lock(workers_m_);
                for (auto& w : workers_) all_gone = all_gone && w == nullptr;
            }
            if (closed_ && all_gone) {
                take_lead_for_collector(true);  // for good: the queues go after this
                drain_ready();
                fail_all(errc::worker_died, "no worker left to run it (the pool was closed)");
                ended = true;
            }
        }
    }
    if (terminating_) {
        stop_workers();
        take_lead_for_collector(true);
        drain_ready();
        fail_all(errc::cancelled, "the pool was terminated");
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
        free_door_of(i);  // it may have died waiting on the task queue (D1, pool_worker.cpp)
        SpinSeat::write_off(door_->budget, slot.awake);  // it may have died awake
        Dead d{i, nullptr, slot.task.load(std::memory_order_acquire), std::move(who),
               slot.ended.load(std::memory_order_acquire) != 0};
        {
            std::lock_guard lock(workers_m_);
            d.proc = std::move(workers_[i]);
        }
        dead.push_back(std::move(d));
    }
    if (!dead.empty() || !suspects_.empty() || sweep) {
        take_lead_for_collector(false);  // the results committed so far are needed (L3)
        if (!dead.empty()) {
            drain_ready();
            for (auto& d : dead) {
                if (d.holding != 0) fail(d.holding, errc::worker_died, d.who + " while running it");
            }
        }
        if (!suspects_.empty() || sweep) resolve_suspects(sweep, sweep_who);
        step_down();
    }
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
    // First the queue's head, then what the live workers claim and run, then the drain. A
    // suspect position below that head was claimed before we looked at the claims: by a live
    // worker, whose claim lasts until after it committed the result (so it is still in
    // live_claims, or its result is in the drain), or by the dead one. Read the other way
    // round, a live worker that claimed the position between the two reads (after a worker
    // that was killed having only announced it, M3) had its task failed.
    const std::uint64_t head = tasks_q_->stats().messages_out;  // MPMC: positions claimed so far
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

}  // namespace shmpipe::detail
