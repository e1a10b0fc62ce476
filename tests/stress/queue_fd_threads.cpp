// Readiness descriptors under threads in one process (where ThreadSanitizer checks the
// arm/ring orderings, D1-D6 in queue_layout.hpp): producers push as fast as they can while
// consumers wait only on their descriptors with epoll. The multi-process versions are in
// tests/multiprocess/queue_fd.cpp. A lost wake-up runs into the per-wait deadline.
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/inspect.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <span>
#include <string>
#include <sys/epoll.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

struct ConsumerResult {
    std::uint64_t messages = 0;
    std::uint64_t sum = 0;
    bool ended = false;
    std::string error;
};

// Waits on rx.fd() with epoll (10 s per wait), drains with try_pop, until the end of stream.
void consume_by_fd(Consumer<std::uint64_t>& rx, ConsumerResult& out) {
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, rx.fd(), &ev);
    for (;;) {
        epoll_event got{};
        if (::epoll_wait(ep, &got, 1, 10'000) != 1) {
            out.error = "no readiness within 10 s after " + std::to_string(out.messages) + " messages";
            break;
        }
        while (auto v = rx.try_pop()) {
            ++out.messages;
            out.sum += *v;
        }
        if (rx.ended()) {
            out.ended = true;
            break;
        }
    }
    ::close(ep);
}

}  // namespace

TEST_CASE("Consumers on descriptors receive every message from producer threads exactly once", "[stress]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("fdthr");
    test::ShmGuard guard{name};
    const std::uint32_t producers = kind == Endpoints::one ? 1 : 2;
    const std::uint32_t consumers = kind == Endpoints::one ? 1 : 3;
    const std::uint64_t per_producer = 50'000 * test::stress_scale();
    QueueOptions o = test::queue_options(kind, 4096, 64);
    o.expected_producers = producers;
    auto q = Queue::create(name, o);

    std::vector<ConsumerResult> results(consumers);
    std::vector<std::thread> threads;
    {
        std::vector<std::unique_ptr<Consumer<std::uint64_t>>> rx;
        for (std::uint32_t c = 0; c < consumers; ++c) rx.push_back(std::make_unique<Consumer<std::uint64_t>>(name));
        for (std::uint32_t c = 0; c < consumers; ++c) {
            threads.emplace_back([&, c] { consume_by_fd(*rx[c], results[c]); });
        }
        for (std::uint32_t p = 0; p < producers; ++p) {
            threads.emplace_back([&, p] {
                Producer<std::uint64_t> tx(name);
                for (std::uint64_t i = 1; i <= per_producer; ++i) {
                    tx.push(i + p * per_producer);
                    if (i % 4096 == 0) std::this_thread::sleep_for(200us);  // lets the consumers go idle and arm
                }
            });
        }
        for (auto& t : threads) t.join();
    }

    std::uint64_t messages = 0, sum = 0;
    for (const auto& r : results) {
        INFO(r.error);
        CHECK(r.error.empty());
        CHECK(r.ended);
        messages += r.messages;
        sum += r.sum;
    }
    const std::uint64_t total = per_producer * producers;
    CHECK(messages == total);
    CHECK(sum == total * (total + 1) / 2);
}

TEST_CASE("MPMC: armed descriptors count as sleepers, each message wakes a consumer, the count returns to zero",
          "[stress]") {
    // Two consumers wait on their descriptors, two sleep in pop_for; each keeps the first
    // message it gets, so the four messages need four wake-ups reaching four consumers. A
    // descriptor has no 100 ms re-check: a wake-up lost for it runs into the 10 s wait.
    constexpr int kFd = 2, kFutex = 2, kRounds = 3;
    using Clock = std::chrono::steady_clock;
    auto counted = [](const std::string& n) {
        const auto info = inspect_object(n);
        return info ? info->consumers_waiting : 0u;
    };
    for (int round = 0; round < kRounds; ++round) {
        INFO("round " << round);
        const std::string name = test::unique_name("fdcount");
        test::ShmGuard guard{name};
        auto q = Queue::create(name, test::queue_options(Endpoints::many, 4096, 64));
        std::atomic<int> got{0};
        std::vector<std::string> errors(kFd + kFutex);
        std::vector<std::thread> threads;
        for (int i = 0; i < kFd; ++i) {
            threads.emplace_back([&, i] {
                Consumer<> rx(name);
                const int ep = ::epoll_create1(EPOLL_CLOEXEC);
                epoll_event ev{};
                ev.events = EPOLLIN;
                ::epoll_ctl(ep, EPOLL_CTL_ADD, rx.fd(), &ev);
                for (;;) {
                    if (rx.try_pop()) {  // keeps it: the next message needs another consumer
                        got.fetch_add(1);
                        break;
                    }
                    epoll_event e{};
                    if (::epoll_wait(ep, &e, 1, 10'000) != 1) {
                        errors[static_cast<std::size_t>(i)] = "descriptor not readable within 10 s (lost wake-up)";
                        break;
                    }
                }
                ::close(ep);
            });
        }
        for (int i = 0; i < kFutex; ++i) {
            threads.emplace_back([&, i] {
                Consumer<> rx(name);
                if (rx.pop_for(10s)) {
                    got.fetch_add(1);
                } else {
                    errors[static_cast<std::size_t>(kFd + i)] = "pop_for found nothing within 10 s";
                }
            });
        }
        const auto asleep_by = Clock::now() + 10s;
        while (counted(name) < kFd + kFutex && Clock::now() < asleep_by) std::this_thread::sleep_for(1ms);
        const std::uint32_t asleep = counted(name);
        {
            // Open until the consumers are done: a close would ring every bell, hiding a lost wake-up.
            Producer<> tx(name);
            const std::byte message[8] = {};
            for (int i = 0; i < kFd + kFutex; ++i) {
                tx.push(std::span<const std::byte>(message));
                std::this_thread::sleep_for(2ms);  // one at a time: each needs its own wake-up
            }
            for (auto& t : threads) t.join();
        }
        INFO(asleep << " consumers counted asleep before the first publish");
        CHECK(asleep == kFd + kFutex);  // the armed descriptors are in the count
        for (const auto& e : errors) CHECK(e.empty());
        CHECK(got.load() == kFd + kFutex);
        CHECK(counted(name) == 0);  // closed descriptors and woken sleepers left no count behind
    }
}
