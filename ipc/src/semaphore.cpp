// Semaphore: invariants S1-S3 and pair SP1 in sync_layout.hpp.
#include <shmpipe/detail/wait.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/semaphore.hpp>

#include <climits>

namespace shmpipe {

using detail::SemaphoreBody;

Semaphore Semaphore::create(std::string_view name, std::int64_t initial, const SemaphoreOptions& options) {
    validate_name(name, "semaphore");
    auto bad = [&](errc code, const std::string& detail) {
        throw Error(code, detail::describe("create", "semaphore", name, detail));
    };
    if (options.max_count < 1 || options.max_count > kSemaphoreMax) {
        bad(errc::overflow, "max_count " + std::to_string(options.max_count) + " is outside 1.." +
                            std::to_string(kSemaphoreMax));
    }
    if (initial < 0) bad(errc::invalid_argument, "initial count " + std::to_string(initial) + " is negative");
    if (initial > options.max_count) {
        bad(errc::overflow, "initial count " + std::to_string(initial) + " is above max_count " +
                            std::to_string(options.max_count));
    }
    SyncOptions sync;
    sync.permissions = options.permissions;
    sync.max_processes = options.max_processes;
    const std::uint32_t flags = options.recover_dead_holders ? detail::kSemaphoreRecoverHolders : 0;
    Semaphore s(detail::SyncHandle::create(
        name, "semaphore", detail::ObjectKind::semaphore, sizeof(SemaphoreBody), flags, sync, [&](std::byte* b) {
            auto* body = reinterpret_cast<SemaphoreBody*>(b);
            body->max_count = static_cast<std::uint32_t>(options.max_count);
            body->initial = static_cast<std::uint32_t>(initial);
            body->count.store(static_cast<std::uint32_t>(initial), std::memory_order_relaxed);  // published by magic
        }));
    s.recover_ = options.recover_dead_holders;
    return s;
}

Semaphore Semaphore::open(std::string_view name, const OpenOptions& options) {
    Semaphore s(
        detail::SyncHandle::open(name, "semaphore", detail::ObjectKind::semaphore, sizeof(SemaphoreBody), options));
    auto& b = s.body();
    if (b.max_count == 0 || b.max_count > kSemaphoreMax || b.count.load(std::memory_order_relaxed) > b.max_count) {
        s.handle_.fail(errc::corrupt, "open", "the count or max_count is out of range (overwritten?)");
    }
    s.recover_ = (s.handle_.segment().flags() & detail::kSemaphoreRecoverHolders) != 0;
    return s;
}

SemaphoreBody& Semaphore::body() const {
    handle_.require_open("use semaphore");
    return handle_.body<SemaphoreBody>();
}

namespace {

// S2 + S3: takes a unit and, with `held` (recover_dead_holders), records it at once: the
// record update is the instruction after the successful CAS, so a kill between the two (the
// only way to lose the unit) has a window of a few instructions.
bool try_take(SemaphoreBody& b, std::atomic<std::uint64_t>* held) noexcept {
    std::uint32_t c = b.count.load(std::memory_order_relaxed);
    while (c > 0) {
        // S2; acquire pairs with the releaser's RMW (what it did before release is visible).
        if (b.count.compare_exchange_weak(c, c - 1, std::memory_order_acquire, std::memory_order_relaxed)) {
            // S3: only this process writes its record's intent; other threads of it may too (RMW).
            if (held != nullptr) held->fetch_add(1, std::memory_order_release);
            return true;
        }
    }
    return false;
}

}  // namespace

std::atomic<std::uint64_t>* Semaphore::held_units() {
    // Resolved before a unit is taken: attaching may throw, recording must not.
    return recover_ ? &handle_.record(handle_.ensure_endpoint()).intent : nullptr;
}

bool Semaphore::try_acquire() {
    auto& b = body();
    return try_take(b, held_units());
}

void Semaphore::acquire() { acquire_until(0); }

bool Semaphore::acquire_until(std::uint64_t deadline_ns) {
    auto& b = body();
    std::atomic<std::uint64_t>* const held = held_units();
    if (try_take(b, held)) return true;
    detail::SpinWait spin;
    while (spin.spin()) {
        if (try_take(b, held)) return true;
    }
    b.waiters.fetch_add(1, std::memory_order_seq_cst);  // SP1
    std::uint64_t next_check = detail::monotonic_ns() + 1'000'000;
    bool got = false;
    for (;;) {
        if (try_take(b, held)) {
            got = true;
            break;
        }
        if (recover_ && detail::monotonic_ns() >= next_check) {
            recover_dead_holders();
            next_check = detail::monotonic_ns() + detail::kLivenessCheckNs;
            continue;
        }
        const std::uint64_t slice = recover_ ? detail::kLivenessCheckNs : 500'000'000;
        if (detail::bounded_wait(b.count, 0, deadline_ns, slice)) {  // SP1: the kernel re-reads count
            got = try_take(b, held);
            break;
        }
    }
    b.waiters.fetch_sub(1, std::memory_order_relaxed);
    return got;
}

void Semaphore::recover_dead_holders() {
    auto& seg = handle_.segment();
    auto& b = body();
    const std::uint32_t self = detail::self_process().pid;
    for (std::uint32_t i = 0; i < seg.endpoint_count(); ++i) {
        auto& r = seg.endpoints()[i];
        const std::uint64_t w = r.word.load(std::memory_order_acquire);
        if (detail::EndpointRecord::state_of(w) != detail::EndpointState::open) continue;
        const std::uint32_t pid = detail::EndpointRecord::pid_of(w);
        if (pid == self) continue;
        // S3: read the units before the reap; a dead owner no longer changes them.
        const std::uint64_t intent = r.intent.load(std::memory_order_acquire);
        if (!seg.reap_if_dead(i)) continue;  // alive, or another process won the reap
        const std::uint32_t units =
            intent == detail::kIntentUnset ? 0u : static_cast<std::uint32_t>(intent & detail::kHeldMask);
        r.intent.store(0, std::memory_order_relaxed);
        if (units == 0) continue;
        std::uint32_t c = b.count.load(std::memory_order_relaxed);
        std::uint32_t n = 0;
        do {
            n = c + units > b.max_count || c + units < c ? b.max_count : c + units;  // S1 holds even if corrupt
        } while (!b.count.compare_exchange_weak(c, n, std::memory_order_seq_cst, std::memory_order_relaxed));
        b.recovered.fetch_add(units, std::memory_order_relaxed);
        b.died_pid.store(pid, std::memory_order_relaxed);
        if (b.waiters.load(std::memory_order_seq_cst) > 0) detail::futex_wake(b.count, INT_MAX);  // SP1
    }
}

void Semaphore::release(std::int64_t n) {
    auto& b = body();
    if (n < 0) handle_.fail(errc::invalid_argument, "release", "count " + std::to_string(n) + " is negative");
    if (n == 0) return;
    const std::uint32_t max = b.max_count;  // one load: the checks below agree with each other
    if (n > static_cast<std::int64_t>(max)) {
        handle_.fail(errc::overflow, "release", "releasing " + std::to_string(n) + " units would pass max_count " +
                                                    std::to_string(max));
    }
    const auto units = static_cast<std::uint32_t>(n);
    auto overflow = [&](std::uint32_t c) {
        handle_.fail(errc::overflow, "release", "releasing " + std::to_string(units) + " unit(s) with " +
                     std::to_string(c) + " free would pass max_count " + std::to_string(max) +
                     " (more releases than acquires?)");
    };
    std::atomic<std::uint64_t>* const held = held_units();  // may throw: before anything changes
    std::uint32_t c = b.count.load(std::memory_order_relaxed);
    if (c > max - units) overflow(c);
    // S3: un-record our own units, then give them back; the count CAS follows at once (a kill
    // between the two leaks them rather than letting a recoverer return them twice).
    std::uint32_t returned = 0;
    if (held != nullptr) {
        std::uint64_t h = held->load(std::memory_order_relaxed);
        do {
            returned = static_cast<std::uint32_t>(std::min<std::uint64_t>(h & detail::kHeldMask, units));
        } while (returned != 0 &&
                 !held->compare_exchange_weak(h, h - returned, std::memory_order_release, std::memory_order_relaxed));
    }
    // SP1: seq_cst RMW, then the seq_cst load of waiters below.
    while (!b.count.compare_exchange_weak(c, c + units, std::memory_order_seq_cst, std::memory_order_relaxed)) {
        if (c > max - units) {
            if (returned != 0) held->fetch_add(returned, std::memory_order_relaxed);
            overflow(c);
        }
    }
    if (b.waiters.load(std::memory_order_seq_cst) > 0) {
        detail::futex_wake(b.count, units >= static_cast<std::uint32_t>(INT_MAX) ? INT_MAX : static_cast<int>(units));
    }
}

std::uint32_t Semaphore::value_approx() const { return body().count.load(std::memory_order_relaxed); }
std::uint32_t Semaphore::max_count() const { return body().max_count; }
std::uint64_t Semaphore::recovered_units() const { return body().recovered.load(std::memory_order_relaxed); }

}  // namespace shmpipe
