// Pool: submission, the backlog of tasks submitted by draining threads, cancellation.
//
// Submission never blocks other operations: a submitter holds submit_m_ only for one bounded
// reservation try (kSubmitSlice), then lets go and tries again, so close(), terminate() and
// other submitters get in; terminate() marks the task queue broken first, so a submitter
// waiting for room gives up at once. A thread that drains results (the collector, or a
// caller leading the draining) never waits for room: a task submitted from a done-callback
// (which runs there) goes to a local backlog that the collector pushes to the queue as room
// appears; results keep flowing meanwhile.
#include "pool_core.hpp"

#include <algorithm>
#include <cstring>

namespace shmpipe::detail {

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
    open_door_for_task();  // D2 (pool_worker.cpp): no idle worker sleeps on the door past a task
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
    s->driver = weak_from_this();  // a thread waiting for it drains the results (pool_results.cpp)
    const TaskHeader h{id, static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(t)), fn};
    const auto header = std::as_bytes(std::span(&h, 1));
    const std::size_t size = sizeof h + args.size();
    {
        // Registered before it is pushed: its result may come back at once.
        std::lock_guard lock(pending_m_);
        pending_.emplace(id, Pending{s, kNoPosition});
    }
    try {
        if (draining_here()) {
            // A done-callback, on the collector or on a caller that leads the draining: it must
            // never wait for room (draining is what makes room).
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
                w = tx_->try_reserve(size);
                if (!w) {
                    // Full: the workers make room only as their results are taken. A thread
                    // waiting for one takes them; if none does, the collector must, now (L4).
                    if (waiting_.load(std::memory_order_seq_cst) == 0) kick_collector();
                    w = tx_->reserve_for(size, kSubmitSlice);
                }
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

}  // namespace shmpipe::detail
