// Pool: result draining. Leader/follower over the results queue (see pool_core.hpp).
//
// L1  rx_ is used only by the thread that made itself leader_ under lead_m_ (a caller, the
//     collector), or by that same thread again from a callback it runs (tl_leading).
// L2  A thread waiting for a task counts itself in waiting_ (seq_cst) before it first looks
//     at done(); a completion (completed()) reads waiting_ after the task's status is set
//     under the task's mutex and, when nonzero, notifies lead_cv_ under lead_m_. The waiter
//     looks at done() and goes to sleep under lead_m_ without letting go of it: either it
//     sees the status, or it is in lead_cv_ when the completer gets lead_m_. No lost wake-up.
// L3  Someone leads whenever a caller waits: a waiter that finds no leader takes the lead;
//     every leader leaves under lead_m_ and notifies lead_cv_. The collector steps down
//     after the message in hand once waiting_ is nonzero; a caller leader steps down when
//     its task is done, at its deadline, or when supervision asks (supervision_wants_,
//     then a wake-up message so a leader asleep in the queue returns at once).
// L4  While no caller waits and tasks are pending, the collector leads (at least once per
//     kSupervisePeriod, at once when a listener is added or the last waiter leaves while a
//     watched task is pending), so callbacks run and workers never stall on a full results
//     queue.
#include "pool_core.hpp"

#include <cstring>

namespace shmpipe::detail {

namespace {
constexpr int kDrainAfterDone = 64;  // results a leader takes, at most, once its own task is done

thread_local const PoolCore* tl_leading = nullptr;  // L1: the pool whose results this thread drains now

struct Leading {
    Leading(const PoolCore* c, SpinBudget& budget) noexcept
        : previous(std::exchange(tl_leading, c)), seat(budget, counted) {}
    ~Leading() { tl_leading = previous; }
    Leading(const Leading&) = delete;
    Leading& operator=(const Leading&) = delete;
    const PoolCore* previous;
    std::atomic<std::uint32_t> counted{0};
    SpinSeat seat;  // the draining thread spins only while the pool's threads have CPUs
};
}  // namespace

bool PoolCore::draining_here() const noexcept {
    return tl_leading == this || std::this_thread::get_id() == collector_id_;
}

bool PoolCore::drive_until(const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline) {
    using clock = std::chrono::steady_clock;
    if (tl_leading == this) {
        // A callback on the draining thread waits for another task: drain on (L1). A task
        // it submitted may sit in the backlog, and on the collector no one else pushes it.
        while (!done()) {
            const auto now = clock::now();
            if (now >= deadline) return false;
            const bool backlog = backlog_nonempty_.load();
            if (backlog) flush_backlog();
            const clock::duration slice = backlog ? clock::duration(kBacklogPeriod) : clock::duration(kSupervisePeriod);
            if (!drain_one(std::min<clock::duration>(deadline - now, slice))) return done();
        }
        return true;
    }
    waiting_.fetch_add(1, std::memory_order_seq_cst);  // L2: before the first look at done()
    struct Leave {
        PoolCore& c;
        ~Leave() {
            // L4: the last waiter leaves while callbacks wait for results: the collector leads.
            if (c.waiting_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
                c.watched_.load(std::memory_order_relaxed) > 0) {
                c.kick_collector();
            }
        }
    } leave{*this};
    std::unique_lock lock(lead_m_);
    for (;;) {
        if (done()) return true;  // L2: under lead_m_
        if (clock::now() >= deadline) return false;
        if (leader_ == Leader::none && !supervision_wants_.load(std::memory_order_acquire)) {
            leader_ = Leader::caller;
            lock.unlock();
            lead(done, deadline);
            lock.lock();
            if (leader_ == Leader::caller) leader_ = Leader::none;
            lead_cv_.notify_all();  // L3: a follower takes over, or the collector waiting for the lead
            continue;
        }
        if (deadline == clock::time_point::max()) {
            lead_cv_.wait(lock);
        } else {
            lead_cv_.wait_until(lock, deadline);
        }
    }
}

void PoolCore::lead(const std::function<bool()>& done, std::chrono::steady_clock::time_point deadline) {
    using clock = std::chrono::steady_clock;
    Leading here(this, door_->budget);
    while (!done()) {
        if (supervision_wants_.load(std::memory_order_acquire)) return;  // L3
        const auto now = clock::now();
        if (now >= deadline) return;
        if (!drain_one(std::min<clock::duration>(deadline - now, kSupervisePeriod))) {
            std::this_thread::sleep_for(kBacklogPeriod);  // not ours to fix: do not spin on it
            return;
        }
    }
    // Done: take what is already committed too (a map's next chunks), so the workers do not
    // stall on a full results queue while this thread goes on; never waits.
    for (int i = 0; i < kDrainAfterDone && !supervision_wants_.load(std::memory_order_acquire); ++i) {
        try {
            auto m = rx_->try_peek();
            if (!m) return;
            handle_message(std::move(*m));
        } catch (const Error&) {
            return;  // a notice (producer_died) or a broken queue: the next leader sees it
        }
    }
}

void PoolCore::watch() noexcept {
    watched_.fetch_add(1, std::memory_order_relaxed);
    if (waiting_.load(std::memory_order_seq_cst) == 0) kick_collector();  // L4
}

void PoolCore::completed(bool watched) noexcept {
    if (watched) watched_.fetch_sub(1, std::memory_order_relaxed);
    if (waiting_.load(std::memory_order_seq_cst) != 0) {  // L2
        { std::lock_guard lock(lead_m_); }
        lead_cv_.notify_all();
    }
}

void PoolCore::kick_collector() noexcept {
    {
        std::lock_guard lock(idle_m_);
        if (kicked_) return;
        kicked_ = true;
    }
    idle_cv_.notify_one();
}

bool PoolCore::drain_one(std::chrono::steady_clock::duration wait) {
    try {
        if (auto m = rx_->peek_for(wait)) handle_message(std::move(*m));
        return true;
    } catch (const Error& e) {
        // producer_died: a worker died mid-stream (everything it committed was delivered);
        // supervision finds which, at once. Anything else (a queue marked broken) is not ours.
        if (e.code() != errc::producer_died) return false;
        supervise_now_.store(true, std::memory_order_relaxed);
        kick_collector();
        return true;
    }
}

// The collector leads while no caller waits (L4), for at most `wait`.
void PoolCore::collector_drain(std::chrono::steady_clock::duration wait) {
    {
        std::lock_guard lock(lead_m_);
        if (leader_ != Leader::none || waiting_.load(std::memory_order_seq_cst) != 0) return;
        leader_ = Leader::collector;
    }
    const auto until = std::chrono::steady_clock::now() + wait;
    bool failed = false;
    {
        Leading here(this, door_->budget);
        while (waiting_.load(std::memory_order_seq_cst) == 0 && !terminating_ && !supervise_now_) {
            const auto now = std::chrono::steady_clock::now();
            if (now >= until) break;
            if (!drain_one(until - now)) {
                failed = true;
                break;
            }
        }
    }
    step_down();
    if (failed) std::this_thread::sleep_for(kSupervisePeriod);  // not ours to fix: do not spin on it
}

// Supervision needs the results committed so far (a worker died), or the pool ends (for
// good: no one leads after this, the queues go). Asks a caller leader to step down (L3).
void PoolCore::take_lead_for_collector(bool for_good) {
    supervision_wants_.store(true, std::memory_order_release);
    {
        std::lock_guard lock(wake_m_);
        if (wake_) {
            try {
                if (auto w = wake_->try_reserve(sizeof(ResultHeader))) {
                    const ResultHeader h{0, kResultOk, 0};  // id 0: a wake-up, no task
                    std::memcpy(w->span().data(), &h, sizeof h);
                    w->commit();
                }
            } catch (const Error&) {
                // A broken queue: the leader's next look fails too, and it steps down.
            }
        }
    }
    std::unique_lock lock(lead_m_);
    lead_cv_.wait(lock, [&] { return leader_ == Leader::none || leader_ == Leader::ended; });
    leader_ = for_good ? Leader::ended : Leader::collector;
    supervision_wants_.store(false, std::memory_order_release);
}

void PoolCore::step_down() {
    {
        std::lock_guard lock(lead_m_);
        if (leader_ == Leader::collector) leader_ = Leader::none;
    }
    lead_cv_.notify_all();  // L3
}

bool PoolCore::pending_any() const {
    std::lock_guard lock(pending_m_);
    return !pending_.empty();
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

void PoolCore::handle_message(ReadSlot m) {
    const auto bytes = m.span();
    ResultHeader h{};
    if (bytes.size() < sizeof h) return;
    std::memcpy(&h, bytes.data(), sizeof h);
    if (h.id == 0) return;  // a wake-up
    auto s = take_pending(h.id);
    if (!s) return;  // cancelled, timed out or failed already
    const auto payload = bytes.subspan(sizeof h);
    TaskStatus status = TaskStatus::failed;
    Bytes result;
    std::exception_ptr e;
    if (h.status == kResultCancelled) {
        status = TaskStatus::cancelled;  // already, normally
        e = std::make_exception_ptr(Error(errc::cancelled, s->what + ": cancelled"));
    } else if (h.status == kResultOk) {
        status = TaskStatus::ok;
        bool placed = false;
        {
            std::lock_guard lock(s->m);  // a waiting map set the sink; it clears it under m before leaving
            if (s->sink != nullptr && payload.size() == s->sink_size) {
                if (!payload.empty()) std::memcpy(s->sink, payload.data(), payload.size());
                s->in_sink = placed = true;
            }
        }
        if (!placed) result.assign(payload.begin(), payload.end());
    } else if (h.status == kResultException) {
        try {
            auto [type, what] = Codec<std::pair<std::string, std::string>>::decode(payload);
            e = std::make_exception_ptr(RemoteError(std::move(type), std::move(what)));
        } catch (const Error& bad) {
            e = std::make_exception_ptr(bad);
        }
    } else {
        e = std::make_exception_ptr(Error(errc::message_too_large, s->what + ": " + Codec<std::string>::decode(payload)));
    }
    m.release();  // before the callbacks: one of them may wait for (and so drain) another result
    s->complete(status, std::move(result), e);
}

// Takes every result already committed (before judging a dead worker's task). The caller leads.
void PoolCore::drain_ready() {
    Leading here(this, door_->budget);
    for (int guard = 0; guard < 1'000'000; ++guard) {
        try {
            auto m = rx_->try_peek();
            if (!m) return;
            handle_message(std::move(*m));
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

}  // namespace shmpipe::detail
