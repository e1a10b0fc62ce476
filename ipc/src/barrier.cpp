// Barrier: invariants B1-B3 and pair BP1 in sync_layout.hpp.
#include <shmpipe/barrier.hpp>
#include <shmpipe/detail/wait.hpp>

#include <climits>

namespace shmpipe {

using detail::BarrierBody;
using detail::BarrierBrokenReason;

namespace {

// B4: generation g starts with its bit clear. Relaxed: the CAS to g that follows publishes it.
void clear_reset_bit(BarrierBody& b, std::uint64_t generation) {
    b.reset_bits.fetch_and(~(1u << (generation % 32)), std::memory_order_relaxed);
}

}  // namespace

Barrier Barrier::create(std::string_view name, std::uint32_t parties, const SyncOptions& options) {
    validate_name(name, "barrier");
    if (parties == 0 || parties > detail::kMaxBarrierParties) {
        throw Error(errc::invalid_argument, detail::describe("create", "barrier", name,
                    "parties must be 1.." + std::to_string(detail::kMaxBarrierParties) + ", got " +
                    std::to_string(parties)));
    }
    return Barrier(detail::SyncHandle::create(name, "barrier", detail::ObjectKind::barrier, sizeof(BarrierBody), 0,
                                              options, [&](std::byte* b) {
                                                  reinterpret_cast<BarrierBody*>(b)->parties = parties;
                                              }));
}

Barrier Barrier::open(std::string_view name, const OpenOptions& options) {
    Barrier b(detail::SyncHandle::open(name, "barrier", detail::ObjectKind::barrier, sizeof(BarrierBody), options));
    const auto& body = b.body();
    if (body.parties == 0 || body.parties > detail::kMaxBarrierParties ||
        BarrierBody::count(body.state.load(std::memory_order_relaxed)) > body.parties) {  // B1
        b.handle_.fail(errc::corrupt, "open", "parties or arrival count out of range (overwritten?)");
    }
    return b;
}

Barrier Barrier::create(std::string_view name, std::uint32_t parties, std::function<void()> action,
                        const SyncOptions& options) {
    Barrier b = create(name, parties, options);
    b.action_ = std::move(action);
    return b;
}

Barrier Barrier::open(std::string_view name, std::function<void()> action, const OpenOptions& options) {
    Barrier b = open(name, options);
    b.action_ = std::move(action);
    return b;
}

BarrierBody& Barrier::body() const {
    handle_.require_open("use barrier");
    return handle_.body<BarrierBody>();
}

void Barrier::throw_broken(std::string_view verb) const {
    const auto& b = body();
    const auto reason = static_cast<BarrierBrokenReason>(b.broken_reason.load(std::memory_order_relaxed));
    const std::string pid = std::to_string(b.broken_pid.load(std::memory_order_relaxed));
    std::string why;
    switch (reason) {
        case BarrierBrokenReason::timeout: why = "a party (pid " + pid + ") timed out waiting"; break;
        case BarrierBrokenReason::party_died: why = "a party (pid " + pid + ") died"; break;
        case BarrierBrokenReason::abort: why = "abort() was called (pid " + pid + ")"; break;
        case BarrierBrokenReason::action_failed: why = "the barrier action threw (in pid " + pid + ")"; break;
        case BarrierBrokenReason::reset: why = "reset() was called (pid " + pid + ")"; break;
        case BarrierBrokenReason::none: why = "broken"; break;
    }
    handle_.fail(errc::broken, verb, "the barrier is broken: " + why + " (a broken barrier stays broken)");
}

bool Barrier::break_generation(std::uint64_t generation, BarrierBrokenReason reason, std::uint32_t pid) {
    auto& b = body();
    std::uint64_t s = b.state.load(std::memory_order_acquire);
    for (;;) {
        if (BarrierBody::broken(s) || BarrierBody::generation(s) != generation) return false;  // B2
        // Informational fields first: a waiter that sees the broken bit reads them (racy by design).
        b.broken_reason.store(static_cast<std::uint32_t>(reason), std::memory_order_relaxed);
        b.broken_pid.store(pid, std::memory_order_relaxed);
        if (b.state.compare_exchange_weak(s, s | detail::kBarrierBroken, std::memory_order_acq_rel)) break;  // B2
    }
    b.seq.fetch_add(1, std::memory_order_release);  // B3, BP1
    detail::futex_wake(b.seq, INT_MAX);
    handle_.segment().set_state(detail::kStateBroken);  // for inspect-queues
    return true;
}

bool Barrier::check_parties(std::uint64_t generation) {
    auto& seg = handle_.segment();
    for (std::uint32_t i = 0; i < seg.endpoint_count(); ++i) {
        const std::uint64_t w = seg.endpoints()[i].word.load(std::memory_order_acquire);
        const auto st = detail::EndpointRecord::state_of(w);
        const std::uint32_t pid = detail::EndpointRecord::pid_of(w);
        if (st == detail::EndpointState::open) {
            seg.reap_if_dead(i);
            if (detail::EndpointRecord::state_of(seg.endpoints()[i].word.load(std::memory_order_acquire)) !=
                detail::EndpointState::dead) {
                continue;
            }
        } else if (st != detail::EndpointState::dead) {
            continue;
        }
        break_generation(generation, BarrierBrokenReason::party_died, pid);
        return true;
    }
    return false;
}

std::uint32_t Barrier::arrive_and_wait() { return arrive_until(0, std::chrono::nanoseconds(0)); }

std::uint32_t Barrier::arrive_until(std::uint64_t deadline_ns, std::chrono::nanoseconds timeout) {
    auto& b = body();
    handle_.ensure_endpoint();  // a forked child becomes a party of its own
    const std::uint64_t parties = b.parties;
    std::uint64_t s = b.state.load(std::memory_order_acquire);
    std::uint64_t generation = 0;
    std::uint32_t index = 0;
    for (;;) {
        if (BarrierBody::broken(s)) throw_broken("wait at");
        generation = BarrierBody::generation(s);
        index = static_cast<std::uint32_t>(BarrierBody::count(s));
        if (index >= parties) {
            // B1: the last arrival runs its action; more threads than parties use the
            // barrier. Wait for the next generation (or a break) and arrive there.
            b.waiters.fetch_add(1, std::memory_order_seq_cst);
            const std::uint32_t seq = b.seq.load(std::memory_order_acquire);  // BP1
            const bool late = b.state.load(std::memory_order_acquire) == s &&
                              detail::bounded_wait(b.seq, seq, deadline_ns, detail::kLivenessCheckNs);
            b.waiters.fetch_sub(1, std::memory_order_relaxed);
            if (late) {
                handle_.fail(errc::timeout, "wait at", "timed out after " + detail::format_duration(timeout) +
                                                           " while the barrier action of the previous generation ran");
            }
            s = b.state.load(std::memory_order_acquire);
            continue;
        }
        if (index + 1 >= parties) {
            if (action_) {
                // B1: count == parties while the action runs, so no one else is last.
                if (!b.state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
                    continue;
                }
                try {
                    action_();
                } catch (...) {
                    break_generation(generation, BarrierBrokenReason::action_failed, detail::self_process().pid);
                    throw;  // the action's own exception, to its party
                }
                s += 1;
            }
            // B2: the last arrival opens the next generation and releases everyone.
            const std::uint64_t next = ((generation + 1) & 0xffff'ffffull) << 32;
            clear_reset_bit(b, generation + 1);  // B4
            if (b.state.compare_exchange_strong(s, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
                // B3, BP1; seq_cst with the waiters load: a Dekker pair with a sleeper's
                // waiters fetch_add and its futex_wait on the old seq (see SP1).
                b.seq.fetch_add(1, std::memory_order_seq_cst);
                if (b.waiters.load(std::memory_order_seq_cst) > 0) detail::futex_wake(b.seq, INT_MAX);
                return index;
            }
            if (action_) throw_broken("wait at");  // broken or reset while the action ran
        } else if (b.state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
            break;
        }
    }
    // Wait for the generation to change (released) or the broken bit (B1).
    detail::SpinWait spin;
    bool counted = false;
    std::uint64_t next_check = 0;
    const std::uint32_t self = detail::self_process().pid;
    auto leave = [&] {
        if (counted) b.waiters.fetch_sub(1, std::memory_order_relaxed);
    };
    // B4: the generation we waited in was released, not reset (the state load was acquire).
    auto released = [&] {
        return (b.reset_bits.load(std::memory_order_relaxed) & (1u << (generation % 32))) == 0;
    };
    for (;;) {
        const std::uint32_t seq = b.seq.load(std::memory_order_acquire);  // BP1: seq before state
        s = b.state.load(std::memory_order_acquire);
        if (BarrierBody::generation(s) != (generation & 0xffff'ffffull)) {
            leave();
            if (!released()) throw_broken("wait at");  // B4: ended by reset()
            return index;
        }
        if (BarrierBody::broken(s)) {
            leave();
            throw_broken("wait at");
        }
        if (spin.spin()) continue;
        const std::uint64_t now = detail::monotonic_ns();
        if (next_check == 0) {
            next_check = now + 1'000'000;
        } else if (now >= next_check) {
            next_check = now + detail::kLivenessCheckNs;
            if (check_parties(generation)) continue;
        }
        if (!counted) {
            b.waiters.fetch_add(1, std::memory_order_seq_cst);
            counted = true;
        }
        std::uint64_t slice = detail::kLivenessCheckNs;
        if (next_check > now && next_check - now < slice) slice = next_check - now;
        if (detail::bounded_wait(b.seq, seq, deadline_ns, slice)) {
            s = b.state.load(std::memory_order_acquire);
            if (BarrierBody::generation(s) != (generation & 0xffff'ffffull)) {
                leave();
                if (!released()) throw_broken("wait at");  // B4: ended by reset()
                return index;
            }
            leave();
            if (break_generation(generation, BarrierBrokenReason::timeout, self)) {
                handle_.fail(errc::timeout, "wait at",
                             "timed out after " + detail::format_duration(timeout) + " with " +
                             std::to_string(BarrierBody::count(s)) + " of " + std::to_string(parties) +
                             " parties arrived; the barrier is now broken for every party");
            }
            s = b.state.load(std::memory_order_acquire);
            if (BarrierBody::generation(s) != (generation & 0xffff'ffffull) && released()) return index;
            throw_broken("wait at");
        }
    }
}

void Barrier::abort() {
    auto& b = body();
    const std::uint64_t s = b.state.load(std::memory_order_acquire);
    break_generation(BarrierBody::generation(s), BarrierBrokenReason::abort, detail::self_process().pid);
}

void Barrier::reset() {
    auto& b = body();
    const std::uint32_t self = detail::self_process().pid;
    std::uint64_t s = b.state.load(std::memory_order_acquire);
    for (;;) {
        const std::uint64_t generation = BarrierBody::generation(s);
        if (!BarrierBody::broken(s)) {
            if (BarrierBody::count(s) == 0) return;  // already empty: nothing to do
            // B2: break it first, so no release can end this generation meanwhile.
            break_generation(generation, BarrierBrokenReason::reset, self);
            s = b.state.load(std::memory_order_acquire);
            continue;
        }
        // Broken, so ours to end (or another reset's: its CAS or ours fails).
        b.reset_bits.fetch_or(1u << (generation % 32), std::memory_order_relaxed);  // B4, before the CAS
        clear_reset_bit(b, generation + 1);
        const std::uint64_t next = ((generation + 1) & 0xffff'ffffull) << 32;
        if (b.state.compare_exchange_weak(s, next, std::memory_order_acq_rel, std::memory_order_acquire)) break;
    }
    b.seq.fetch_add(1, std::memory_order_seq_cst);  // B3, BP1
    if (b.waiters.load(std::memory_order_seq_cst) > 0) detail::futex_wake(b.seq, INT_MAX);
    // Usable again: inspect-queues shows it open (the last break's reason stays readable).
    handle_.segment().header().state.fetch_and(~detail::kStateBroken, std::memory_order_acq_rel);
}

bool Barrier::broken() const { return BarrierBody::broken(body().state.load(std::memory_order_acquire)); }
std::uint32_t Barrier::parties() const { return body().parties; }
std::uint32_t Barrier::n_waiting() const {
    return static_cast<std::uint32_t>(BarrierBody::count(body().state.load(std::memory_order_relaxed)));
}

}  // namespace shmpipe
