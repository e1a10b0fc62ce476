// Pool: the loop a forked worker runs (see pool_core.hpp). Workers copy a task message
// out and release its queue cell before running the task, so a long task holds no cell and
// the ring never wraps round onto it.
//
// The task door (TaskDoor): one idle worker at a time waits on the task queue (spinning,
// then sleeping in the queue); the other idle workers sleep on door.seq. The worker at the
// door leaves it as soon as it has claimed a task, and wakes a follower when tasks are still
// queued; the parent wakes one after publishing a task when no worker is at the door.
// D1  leader is taken by compare-exchange from 0, and given back (0) by its holder, or by
//     the parent when the holder died (free_door_of).
// D2  A worker leaving the door stores leader = 0, then a full fence, then looks at the queue
//     depth; the parent commits a task, then a full fence, then loads leader: either the
//     worker sees the task (and wakes a follower) or the parent sees the door free (and
//     wakes one). No task waits while an idle worker sleeps on the door.
// D3  A follower counts itself in sleepers, then a full fence, then looks at leader before
//     futex_wait on seq; a waker bumps seq before futex_wake: a follower between its look
//     and its sleep returns at once. Every sleep is bounded (kDoorNap) as a last resort.
#include "pool_core.hpp"

#include <shmpipe/detail/demangle.hpp>
#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/detail/wait.hpp>

#include <climits>
#include <cstring>
#include <cxxabi.h>

namespace shmpipe::detail {

// In the forked worker. Leaves by returning (Process then _exits 0) or by an exception (1).
void PoolCore::worker_main(unsigned index) {
    WorkerSlot& slot = slots_[index];
    set_current_worker_index(index);
    Consumer<> in(tasks_name, hot_cells());
    Producer<> out(results_name, hot_cells());
    const SpinSeat seat(door_->budget, slot.awake);  // awake but for sleeps (wait.hpp)
    if (opt.initializer) opt.initializer();
    Bytes args;
    Bytes result;
    std::uint64_t done = 0;
    while (opt.max_tasks_per_child == 0 || done < opt.max_tasks_per_child) {
        enter_door(index);
        slot.taking.store(1, std::memory_order_release);
        TaskHeader h{};
        {
            std::optional<ReadSlot> rs;
            try {
                rs = in.peek();
            } catch (const Error& e) {
                leave_door(index, true, in);
                if (e.code() == errc::broken) break;  // terminate(): stop quietly
                throw;
            }
            leave_door(index, !rs, in);  // at the end of the stream every follower must see it
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

namespace {
constexpr std::uint64_t kDoorNapNs = 200'000'000;  // D3: the last resort, never the mechanism

void wake_door(TaskDoor& door, int count) noexcept {
    door.seq.fetch_add(1, std::memory_order_release);  // D3
    futex_wake(door.seq, count);
}
}  // namespace

bool PoolCore::enter_door(unsigned index) noexcept {
    TaskDoor& door = *door_;
    const std::uint32_t me = index + 1;
    for (;;) {
        std::uint32_t free = 0;
        if (door.leader.compare_exchange_strong(free, me, std::memory_order_acq_rel)) return true;  // D1
        if (free == me) return true;
        const std::uint32_t seq = door.seq.load(std::memory_order_acquire);
        door.sleepers.fetch_add(1, std::memory_order_relaxed);
        full_fence();  // D3
        if (door.leader.load(std::memory_order_relaxed) != 0) {
            const AsleepInBudget asleep;
            futex_wait(door.seq, seq, monotonic_ns() + kDoorNapNs);
        }
        door.sleepers.fetch_sub(1, std::memory_order_relaxed);
    }
}

void PoolCore::leave_door(unsigned index, bool all, Consumer<>& in) noexcept {
    TaskDoor& door = *door_;
    std::uint32_t me = index + 1;
    if (!door.leader.compare_exchange_strong(me, 0, std::memory_order_acq_rel)) return;  // D1: not ours (freed)
    full_fence();  // D2
    if (door.sleepers.load(std::memory_order_relaxed) == 0) return;
    bool queued = all;
    if (!queued) {
        try {
            queued = in.qsize() != 0;
        } catch (...) {
            queued = true;  // cannot tell: wake one, it looks itself
        }
    }
    if (queued) wake_door(door, all ? INT_MAX : 1);
}

// After a task is committed: D2.
void PoolCore::open_door_for_task() noexcept {
    full_fence();  // D2
    if (door_->leader.load(std::memory_order_relaxed) == 0 && door_->sleepers.load(std::memory_order_relaxed) != 0) {
        wake_door(*door_, 1);
    }
}

// A worker that died at the door leaves it held: free it and wake a follower (D1).
void PoolCore::free_door_of(unsigned index) noexcept {
    std::uint32_t dead = index + 1;
    if (door_->leader.compare_exchange_strong(dead, 0, std::memory_order_acq_rel)) wake_door(*door_, 1);
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

}  // namespace shmpipe::detail
