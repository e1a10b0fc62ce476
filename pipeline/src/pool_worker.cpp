// Pool: the loop a forked worker runs (see pool_core.hpp). Workers copy a task message
// out and release its queue cell before running the task, so a long task holds no cell and
// the ring never wraps round onto it.
#include "pool_core.hpp"

#include <shmpipe/detail/demangle.hpp>

#include <cstring>
#include <cxxabi.h>

namespace shmpipe::detail {

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
