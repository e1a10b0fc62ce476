// OpenOptions::prefault_bytes: an endpoint that asks for it has the first bytes of every cell
// (MPMC) or of the ring (SPSC) mapped at attach, so its first writes into cells it has not
// touched take no page fault; and mapping changes no message already queued.
#include "queue_testing.hpp"
#include "test_support.hpp"

#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstddef>
#include <string>
#include <sys/resource.h>
#include <vector>

using namespace shmpipe;

namespace {

long minor_faults_of_this_thread() {
    rusage r{};
    ::getrusage(RUSAGE_THREAD, &r);
    return r.ru_minflt;
}

// Page faults taken while pushing one 4000-byte message into each of `cells` fresh cells.
long faults_filling(Endpoints kind, std::size_t prefault) {
    const std::string name = test::unique_name("prefault");
    test::ShmGuard guard{name};
    // MPMC: 16 cells of 64 KiB; SPSC: a 1 MiB ring, of which the messages use the first 64 KiB.
    auto q = Queue::create(name, test::queue_options(kind, std::size_t{1} << 20, std::size_t{64} << 10));
    OpenOptions o;
    o.prefault_bytes = kind == Endpoints::many ? std::size_t{8} << 10 : std::size_t{64} << 10;
    if (prefault == 0) o.prefault_bytes = 0;
    Producer<> tx(name, o);
    const std::vector<std::byte> message(4000, std::byte{7});
    const long before = minor_faults_of_this_thread();
    for (int i = 0; i < 16; ++i) REQUIRE(tx.try_push(std::span<const std::byte>(message)));  // room for all 16
    return minor_faults_of_this_thread() - before;
}

}  // namespace

TEST_CASE("A prefaulting producer writes into fresh cells without page faults", "[unit][queue]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    // The fewest of three fills each way: faults the queue does not cause only add (a sanitizer's
    // shadow memory faults in alongside, ThreadSanitizer's by the dozen under load), so the
    // minimum is the queue's own count.
    long cold = faults_filling(kind, 0);
    long hot = faults_filling(kind, 1);
    for (int attempt = 1; attempt < 3; ++attempt) {
        cold = std::min(cold, faults_filling(kind, 0));
        hot = std::min(hot, faults_filling(kind, 1));
    }
    INFO(cold << " page faults without prefault_bytes, " << hot << " with it (fewest of 3 fills each)");
    // Each of the 16 messages lands on a page no one has mapped: prefaulting must save at least
    // half of those faults. Compared, not absolute, because shadow memory also faults in for
    // every page touched; without prefaulting the difference is 0 give or take that noise.
    CHECK(cold - hot >= 8);
}

TEST_CASE("Prefaulting at attach leaves queued messages intact", "[unit][queue]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("prefault");
    test::ShmGuard guard{name};
    auto q = Queue::create(name, test::queue_options(kind, std::size_t{1} << 16, 1024));
    Producer<int> tx(name);
    for (int i = 0; i < 20; ++i) REQUIRE(tx.try_push(i));  // room for all 20
    OpenOptions o;
    o.prefault_bytes = std::size_t{1} << 20;  // more than any cell or the ring: clamped
    Consumer<int> rx(name, o);
    for (int i = 0; i < 20; ++i) CHECK(rx.try_pop() == i);
}
