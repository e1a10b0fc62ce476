// A named, reusable barrier for a fixed number of parties (like multiprocessing.Barrier).
//
//   auto b = shmpipe::Barrier::create("phase", 4);       // owns the name
//   auto p = shmpipe::Barrier::open("phase");            // each party, in its process
//   p.arrive_and_wait();                                 // all 4 leave together
//
// Every arrive_and_wait() blocks until `parties` calls (of this generation) have arrived,
// then all return and the barrier is ready for the next generation. It returns the
// arrival index, 0 .. parties-1 (parties-1 for the last arrival, which releases the rest).
//
// Broken (like Python's BrokenBarrierError): when a waiting party times out, when abort()
// is called, or when a process attached to the barrier dies (pid + start time, checked by
// the waiters every ~50 ms), the barrier breaks: every waiter and every later arrival
// throws Error(errc::broken) naming the cause; the party that timed out gets
// Error(errc::timeout). A broken barrier stays broken: create a new one.
// A process counts as attached from open()/create() (or, in a forked child, from its
// first arrive) until its handle is destroyed: a process that exits with _exit() without
// destroying its handle counts as dead.
//
// Python's names: wait() / wait_for(d) are arrive_and_wait() / arrive_and_wait_for(d).
// reset() returns the barrier to its empty state, as Python's reset(): parties waiting
// now throw Error(errc::broken) ("reset() was called"), a broken barrier becomes usable.
// At most `parties` threads may use the barrier at once (as in Python).
//
// The action (Python's Barrier(parties, action=)): a callable cannot cross processes, so it
// is given to each handle, create(name, parties, action) / open(name, action), and the last
// party to arrive runs its own handle's action, once per generation, before any party is
// released. Give the same action to every party's handle for Python's behaviour (exactly
// one run per generation); a generation whose last arrival has no action runs none. If the
// action throws, the barrier breaks ("the barrier action threw"): that party gets the
// action's exception, the others Error(errc::broken).
#pragma once

#include <shmpipe/detail/anonymous_name.hpp>
#include <shmpipe/detail/sync_common.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace shmpipe {

class Barrier {
public:
    // Throws Error: invalid_name, already_exists, invalid_argument (parties 0 or above
    // 2^20), permission_denied.
    static Barrier create(std::string_view name, std::uint32_t parties, const SyncOptions& options = {});
    // Anonymous, like Python's Barrier(n): a unique name is picked (name() tells it; still a
    // visible, cleanable segment). Children forked later keep using the handle.
    static Barrier create(std::uint32_t parties, const SyncOptions& options = {}) {
        return create(detail::anonymous_name("anon-barrier"), parties, options);
    }
    static Barrier open(std::string_view name, const OpenOptions& options = {});
    // The same, with an action this handle runs when it is the last to arrive (see above).
    static Barrier create(std::string_view name, std::uint32_t parties, std::function<void()> action,
                          const SyncOptions& options = {});
    static Barrier open(std::string_view name, std::function<void()> action, const OpenOptions& options = {});

    Barrier() = default;

    std::uint32_t arrive_and_wait();  // Error(broken) if broken
    template <class Rep, class Period>
    std::uint32_t arrive_and_wait_for(std::chrono::duration<Rep, Period> timeout) {  // Error(timeout) / Error(broken)
        return arrive_until(detail::deadline_after(detail::timeout_ns(timeout)),
                            detail::timeout_ns(timeout));
    }
    // Python's names for the two above.
    std::uint32_t wait() { return arrive_and_wait(); }
    template <class Rep, class Period>
    std::uint32_t wait_for(std::chrono::duration<Rep, Period> timeout) {
        return arrive_and_wait_for(timeout);
    }
    // Breaks the barrier: current and future waiters throw Error(broken).
    void abort();
    // Back to the empty state of a new generation: current waiters throw Error(broken),
    // later arrivals use the barrier normally (also after it broke).
    void reset();

    bool broken() const;
    std::uint32_t parties() const;
    std::uint32_t n_waiting() const;  // arrivals in the current generation
    void persist() noexcept { handle_.persist(); }
    const std::string& name() const noexcept { return handle_.name(); }

private:
    explicit Barrier(detail::SyncHandle h) : handle_(std::move(h)) {}
    std::uint32_t arrive_until(std::uint64_t deadline_ns, std::chrono::nanoseconds timeout);
    bool break_generation(std::uint64_t generation, detail::BarrierBrokenReason reason, std::uint32_t pid);
    bool check_parties(std::uint64_t generation);
    [[noreturn]] void throw_broken(std::string_view verb) const;
    detail::BarrierBody& body() const;

    detail::SyncHandle handle_;
    std::function<void()> action_;
};

}  // namespace shmpipe
