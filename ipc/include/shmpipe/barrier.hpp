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
#pragma once

#include <shmpipe/detail/sync_common.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace shmpipe {

class Barrier {
public:
    // Throws Error: invalid_name, already_exists, invalid_argument (parties 0 or above
    // 2^20), permission_denied.
    static Barrier create(std::string_view name, std::uint32_t parties, const SyncOptions& options = {});
    static Barrier open(std::string_view name, const OpenOptions& options = {});

    Barrier() = default;

    std::uint32_t arrive_and_wait();  // Error(broken) if broken
    template <class Rep, class Period>
    std::uint32_t arrive_and_wait_for(std::chrono::duration<Rep, Period> timeout) {  // Error(timeout) / Error(broken)
        return arrive_until(detail::deadline_after(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout)),
                            std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
    }
    // Breaks the barrier: current and future waiters throw Error(broken).
    void abort();

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
};

}  // namespace shmpipe
