// Wake-ups of sleeping MPMC consumers: a publish wakes one sleeper, and no message is left
// while a consumer sleeps. The inspector counts the sleepers.
//
// A sleeping consumer re-checks the ring at least every 100 ms on its own (kSleepSliceNs),
// so a lost wake-up shows as a late message, not a hang: the test gives each message to a
// different sleeper (a consumer keeps what it took) and requires every sleeper to have its
// message long before a slice would have rescued it, in most of several rounds.
#include "queue_testing.hpp"
#include "test_support.hpp"

#include <shmpipe/inspect.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <thread>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

std::uint32_t sleeping_consumers(const std::string& name) {
    const auto info = inspect_object(name);
    return info ? info->consumers_waiting : 0;
}

}  // namespace

TEST_CASE("Each message published to an MPMC queue wakes a sleeping consumer", "[unit][queue]") {
    constexpr int kSleepers = 3;
    constexpr int kRounds = 5;
    constexpr auto kPrompt = 40ms;  // well under the 100 ms sleep slice that would rescue a lost wake-up
    int prompt_rounds = 0;
    for (int round = 0; round < kRounds; ++round) {
        const std::string name = test::unique_name("wake");
        test::ShmGuard guard{name};
        auto q = Queue::create(name, test::queue_options(Endpoints::many, 4096, 64));
        std::atomic<int> got{0};
        std::vector<Clock::time_point> when(kSleepers);
        std::vector<std::thread> threads;
        for (int i = 0; i < kSleepers; ++i) {
            threads.emplace_back([&, i] {
                Consumer<> rx(name);
                if (rx.pop_for(10s)) {  // keeps it: the next message needs another consumer
                    when[static_cast<std::size_t>(i)] = Clock::now();
                    got.fetch_add(1);
                }
            });
        }
        const auto asleep_by = Clock::now() + 10s;
        while (sleeping_consumers(name) < kSleepers && Clock::now() < asleep_by) std::this_thread::sleep_for(1ms);
        const std::uint32_t asleep = sleeping_consumers(name);
        Clock::time_point sent;
        {
            // Open until the consumers are done: closing wakes every sleeper, hiding a lost wake-up.
            Producer<> tx(name);
            sent = Clock::now();
            const std::byte message[8] = {};
            for (int i = 0; i < kSleepers; ++i) tx.push(std::span<const std::byte>(message));
            for (auto& t : threads) t.join();
        }
        INFO("round " << round << ": " << asleep << " consumers counted asleep before the publish");
        REQUIRE(asleep == kSleepers);
        REQUIRE(got.load() == kSleepers);  // every message reached a consumer within 10 s
        Clock::time_point last = sent;
        for (const auto& w : when) last = std::max(last, w);
        if (last - sent < kPrompt) ++prompt_rounds;
        CHECK(sleeping_consumers(name) == 0);  // every consumer left its count behind
    }
    INFO(prompt_rounds << " of " << kRounds << " rounds had every sleeper's message within 40 ms");
    CHECK(prompt_rounds >= 3);
}
