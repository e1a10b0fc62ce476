// The spin policy's budget (detail/wait.hpp): a seated thread counts itself awake, leaves
// the count while asleep, is counted once however its seats nest, and a supervisor can write
// a dead one off; SpinWait spins while the group fits the CPUs and gives up after one yield
// when it does not. A forked child does not inherit its parent thread's seat. A yield that
// lost the CPU to another program's busy loop makes the next spins sleep without yielding.
#include "test_support.hpp"

#include <shmpipe/detail/wait.hpp>
#include <shmpipe/process.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <sys/mman.h>
#include <thread>
#include <vector>

using namespace shmpipe;
using shmpipe::detail::AsleepInBudget;
using shmpipe::detail::SpinBudget;
using shmpipe::detail::SpinSeat;
using shmpipe::detail::SpinWait;

namespace {

// How many times spin() says "spin again" before it says "sleep" (capped).
int spins_before_sleep(int cap = 100000) {
    SpinWait w;
    int n = 0;
    while (n < cap && w.spin()) ++n;
    return n;
}

}  // namespace

TEST_CASE("A seated thread counts itself awake except while asleep, once however seats nest", "[unit][wait]") {
    SpinBudget budget;
    std::atomic<std::uint32_t> counted{0}, inner_counted{0};
    {
        const SpinSeat seat(budget, counted);
        CHECK(budget.awake.load() == 1);
        CHECK(counted.load() == 1);
        {
            const SpinSeat inner(budget, inner_counted);  // nested: the outer seat counts us
            CHECK(budget.awake.load() == 1);
            CHECK(inner_counted.load() == 0);
            {
                const AsleepInBudget asleep;
                CHECK(budget.awake.load() == 0);
                CHECK(counted.load() == 0);
            }
            CHECK(budget.awake.load() == 1);
        }
        CHECK(budget.awake.load() == 1);
    }
    CHECK(budget.awake.load() == 0);
    CHECK(counted.load() == 0);
    {
        const AsleepInBudget asleep;  // no seat: nothing to leave
        CHECK(budget.awake.load() == 0);
    }
}

TEST_CASE("A thread written off by a supervisor leaves the count once", "[unit][wait]") {
    SpinBudget budget;
    std::atomic<std::uint32_t> counted{0};
    std::atomic<bool> seated{false}, release{false};
    std::thread t([&] {
        const SpinSeat seat(budget, counted);
        seated = true;
        while (!release) std::this_thread::yield();
    });
    REQUIRE(test::wait_until([&] { return seated.load(); }, std::chrono::seconds(10)));  // the thread took its seat
    CHECK(budget.awake.load() == 1);
    SpinSeat::write_off(budget, counted);  // as for a worker found dead
    CHECK(budget.awake.load() == 0);
    SpinSeat::write_off(budget, counted);  // a second look at the same death changes nothing
    CHECK(budget.awake.load() == 0);
    release = true;
    t.join();
    CHECK(budget.awake.load() == 0);  // the seat's own leave finds itself written off already
}

TEST_CASE("SpinWait spins while the budget fits the CPUs and gives up after one yield beyond", "[unit][wait]") {
    const auto cpus = static_cast<std::int32_t>(detail::allowed_cpus());
    REQUIRE(cpus >= 1);
    SpinBudget budget;
    std::atomic<std::uint32_t> counted{0};
    const SpinSeat seat(budget, counted);
    // Within the budget (this thread only): the time-bounded spin. Its first 32 iterations
    // are pause-only, unbounded by time, except on one CPU, where it yields from the start
    // and a loaded CPU may use up the 20 µs in one yield.
    CHECK(spins_before_sleep() >= (cpus > 1 ? 32 : 1));
    // Over it: the other threads of the group already use every CPU. One yield, however
    // little time passed.
    budget.awake.fetch_add(cpus);
    CHECK(spins_before_sleep() == 1);
    budget.awake.fetch_sub(cpus);
}

TEST_CASE("A forked child does not inherit the seat of the thread that forked it", "[unit][wait]") {
    // The budget in shared memory, as a pool keeps it, so the parent sees what the child did.
    void* mem = ::mmap(nullptr, sizeof(SpinBudget) + 64, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    auto* budget = new (mem) SpinBudget;
    auto* counted = new (static_cast<std::byte*>(mem) + 64) std::atomic<std::uint32_t>{0};
    {
        const SpinSeat seat(*budget, *counted);
        REQUIRE(budget->awake.load() == 1);
        Process child([budget] {
            // Not seated here: a sleep leaves no count, and spinning is bounded by time only.
            {
                const AsleepInBudget asleep;
                if (budget->awake.load() != 1) std::_Exit(2);
            }
            // Over a seated thread's budget; unseated, the pause-only iterations go on (on one
            // CPU there are none, and the time-bounded yields prove nothing).
            budget->awake.fetch_add(100);
            SpinWait w;
            const bool spun = detail::allowed_cpus() == 1 || (w.spin() && w.spin() && w.spin());
            budget->awake.fetch_sub(100);
            std::_Exit(spun ? 0 : 3);
        });
        child.start();
        REQUIRE(child.join_for(std::chrono::seconds(30)));  // the child checked and exited
        CHECK(child.exit_code() == 0);
        CHECK(budget->awake.load() == 1);
    }
    CHECK(budget->awake.load() == 0);
    ::munmap(mem, sizeof(SpinBudget) + 64);
}

TEST_CASE("Behind busy programs on every CPU, a yield that lost the CPU makes the next spins sleep without yielding",
          "[unit][wait]") {
    const unsigned cpus = detail::allowed_cpus();
    // Busy loops of another program, one per CPU we may use: a yield of ours hands one of
    // them the CPU for its time slice.
    std::vector<Process> busy;
    for (unsigned i = 0; i < cpus; ++i) {
        ProcessOptions opt;
        opt.daemon = true;  // stopped by the destructor if a check below fails
        opt.stop_grace = std::chrono::milliseconds(100);
        busy.emplace_back(
            [] {
                volatile std::uint64_t n = 0;
                for (;;) n = n + 1;
            },
            opt);
        busy.back().start();
    }
    bool lost = false;
    const bool tried = test::wait_until(
        [&] {
            spins_before_sleep();  // yields (after the pause burst) until 20 µs passed
            lost = detail::yields_lose_cpu();
            return lost;
        },
        std::chrono::seconds(cpus == 1 ? 1 : 5));
    if (cpus == 1) {
        // One allowed CPU (taskset -c 0): yielding is how the peer we wait for runs, so a long
        // yield is no sign of another program.
        CHECK_FALSE(tried);
        CHECK_FALSE(lost);
    } else {
        REQUIRE(tried);  // some yield within 5 s lost the CPU to a busy loop for >= 200 µs
        // Now: the pause burst (32 iterations), then sleep, with no yield.
        CHECK(spins_before_sleep() == 32);
    }
    for (auto& p : busy) {
        p.kill();
        REQUIRE(p.join_for(std::chrono::seconds(10)));  // the busy loop was killed and reaped
    }
}
