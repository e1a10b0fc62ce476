// Segments at the edges: a small or full /dev/shm fails at create (errc::no_space), never
// with SIGBUS later; a peer rewriting a live segment's header cannot make its users touch
// memory outside the mapping; a corrupt MPMC cell sequence throws errc::corrupt instead of
// spinning; a segment another user owns is refused unless the caller opts in.
// Tests that need root (a mount namespace, chown) say SKIPPED in a warning and return when
// they cannot run: they never pass silently.
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/detail/queue_state.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/mutex.hpp>
#include <shmpipe/queue.hpp>
#include <shmpipe/semaphore.hpp>

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdint>
#include <functional>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;
namespace sp = shmpipe;
namespace test = shmpipe::test;
using Catch::Matchers::Contains;

namespace {

std::string edge_peer() { return test::peer_path("edge_peer"); }

// Runs fn in a forked child, which leaves with _exit(fn()). Returns its exit code, or FAILs
// naming `what` when it has not finished by the deadline (then it is killed and reaped).
int in_child(const std::function<int()>& fn, std::chrono::milliseconds timeout, const char* what) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int code = 99;
        try {
            code = fn();
        } catch (...) {
            code = 98;
        }
        ::_exit(code);
    }
    int status = 0;
    const bool done = test::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout);
    if (!done) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        FAIL("timed out after " << timeout.count() << " ms waiting for " << what);
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? -WTERMSIG(status) : -1;
}

// 0 when fn throws Error(corrupt), 1 for another Error, 2 when it returns.
int corrupt_code(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const sp::Error& e) {
        return e.code() == sp::errc::corrupt ? 0 : 1;
    }
    return 2;
}

std::string shm_file(const std::string& name) { return "/dev/shm/" + sp::segment_name(name); }

// Runs operations against a segment a hostile peer rewrites: refusing with shmpipe::Error is
// the right answer, a crash (or an ASan report) is not.
struct Attempts {
    std::uint64_t ops = 0, refused = 0;
    void operator()(const std::function<void()>& fn) {
        ++ops;
        try {
            fn();
        } catch (const sp::Error&) {
            ++refused;
        }
    }
};

}  // namespace

// --- 9.1: no SIGBUS on a small /dev/shm ------------------------------------------------------

TEST_CASE("creating what a 1 MiB /dev/shm cannot hold fails with no_space at create (skipped when not root)",
          "[multiprocess][no_space]") {
    if (::geteuid() != 0) {
        WARN("SKIPPED: needs root to mount a private tmpfs on /dev/shm (unshare -m); not run");
        return;
    }
    const std::string name = test::unique_name("small");
    const auto r = test::run_program(edge_peer(), {"small-shm", name}, 60s);
    if (r.exit_code == 77) {
        WARN("SKIPPED: no private mount namespace here: " << r.err);
        return;
    }
    INFO("edge_peer small-shm stderr: " << r.err);
    REQUIRE(r.exit_code == 0);  // a SIGBUS shows as -7 here
    CHECK_THAT(r.out, Contains("does not fit in /dev/shm") && Contains("asked") && Contains("free") &&
                          Contains("--shm-size") && Contains("inspect-queues clean"));
}

TEST_CASE("no_space is its own error code, equivalent to ENOSPC", "[multiprocess][no_space]") {
    const std::error_code sut = sp::make_error_code(sp::errc::no_space);
    CHECK(sut == std::errc::no_space_on_device);
    CHECK(sut.message() == "not enough shared memory");
}

// --- 9.3: hostile writer ---------------------------------------------------------------------

TEST_CASE("a peer rewriting every header field of a live queue never crashes its users",
          "[multiprocess][hostile]") {
    const auto kind = GENERATE(sp::Endpoints::one, sp::Endpoints::many);
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("hostq"));
    sp::QueueOptions o;
    o.producers = o.consumers = kind;
    o.capacity = 16 * 1024;
    o.max_message = 64;
    auto q = sp::Queue::create(name, o);
    sp::Producer<std::uint64_t> tx(name);
    sp::Consumer<std::uint64_t> rx(name);

    test::Peer hostile(edge_peer(), {"hostile", name, "queue", "4"});
    Attempts attempt;
    for (std::uint64_t i = 0; hostile.running(); ++i) {
        attempt([&] {
            if (tx.try_push(i)) (void)rx.try_pop();
        });
        attempt([&] { (void)rx.pop_for(0ms); });
        attempt([&] {
            auto admin = sp::Queue::open(name);
            (void)admin.stats();
            (void)admin.capacity();
        });
        if (kind == sp::Endpoints::many) {
            attempt([&] {
                sp::Consumer<std::uint64_t> extra(name);
                (void)extra.try_pop();
            });
        }
    }
    REQUIRE(hostile.wait_or_throw(30s, "the hostile writer") == 0);
    INFO(attempt.ops << " operations, " << attempt.refused << " refused with shmpipe::Error");
    CHECK(attempt.ops > 0);
    // Every field is restored: the queue works again for the handles that survived.
    while (rx.try_pop()) {
    }
    REQUIRE(tx.try_push(42));
    CHECK(rx.pop_for(5s) == std::optional<std::uint64_t>(42));
}

TEST_CASE("a peer rewriting every header field of a live semaphore and mutex never crashes their users",
          "[multiprocess][hostile]") {
    test::ShmGuard guard;
    const std::string sname = guard.add(test::unique_name("hosts"));
    const std::string mname = guard.add(test::unique_name("hostm"));
    auto sem = sp::Semaphore::create(sname, 1);
    auto mtx = sp::Mutex::create(mname);

    test::Peer hs(edge_peer(), {"hostile", sname, "sync", "4"});
    test::Peer hm(edge_peer(), {"hostile", mname, "sync", "4"});
    Attempts attempt;
    while (hs.running() || hm.running()) {
        attempt([&] {
            if (sem.try_acquire()) sem.release();
        });
        attempt([&] {
            if (mtx.try_lock()) mtx.unlock();
        });
        attempt([&] {
            auto s = sp::Semaphore::open(sname);
            if (s.try_acquire()) s.release();
        });
        attempt([&] {
            auto m = sp::Mutex::open(mname);
            if (m.try_lock()) m.unlock();
        });
    }
    REQUIRE(hs.wait_or_throw(30s, "the hostile writer of the semaphore") == 0);
    REQUIRE(hm.wait_or_throw(30s, "the hostile writer of the mutex") == 0);
    INFO(attempt.ops << " operations, " << attempt.refused << " refused with shmpipe::Error");
    CHECK(attempt.ops > 0);
    REQUIRE(sem.try_acquire_for(5s));
    sem.release();
    REQUIRE(mtx.try_lock_for(5s));
    mtx.unlock();
}

// --- 9.4: a corrupt MPMC cell sequence -------------------------------------------------------

TEST_CASE("a corrupt MPMC cell sequence makes push and pop throw corrupt instead of spinning",
          "[multiprocess][corrupt]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("stuck"));
    sp::QueueOptions o;
    o.producers = o.consumers = sp::Endpoints::many;
    o.capacity = 4096;
    o.max_message = 64;
    auto q = sp::Queue::create(name, o);
    {
        sp::Producer<std::uint64_t> tx(name);
        REQUIRE(tx.try_push(1));
        REQUIRE(tx.try_push(2));
    }
    // The cells at tail and head get a sequence far ahead of their index (M1, M4).
    auto seg = sp::detail::Segment::open(name, "queue", sp::detail::ObjectKind::mpmc_queue);
    sp::detail::QueueGeometry g;
    REQUIRE(sp::detail::read_queue_geometry(seg, g) == nullptr);
    auto& ring = sp::detail::ring_indices(seg.body(), g);
    auto* cells = reinterpret_cast<sp::detail::Cell*>(seg.body() + g.cells_offset);
    const std::uint64_t head = ring.head.load();
    const std::uint64_t tail = ring.tail.load();

    // Each operation runs in a child with a deadline: before the fix it spun forever.
    auto throws_corrupt = [&](const std::function<void()>& op, const char* what) {
        seg.header().state.fetch_and(~sp::detail::kStateBroken);
        INFO(what);
        CHECK(in_child([&] { return corrupt_code(op); }, 10s, what) == 0);
        CHECK(sp::Queue::open(name).broken());  // marked broken for every other endpoint too
    };
    SECTION("try_push and push_for") {
        cells[tail & (g.cell_count - 1)].seq.store(tail + 5);
        throws_corrupt([&] { (void)sp::Producer<std::uint64_t>(name).try_push(3); }, "try_push on a corrupt cell");
        throws_corrupt([&] { (void)sp::Producer<std::uint64_t>(name).push_for(std::uint64_t{3}, 100ms); },
                       "push_for(100ms) on a corrupt cell");
    }
    SECTION("try_pop and pop_for") {
        cells[head & (g.cell_count - 1)].seq.store(head + 1 + 7);
        throws_corrupt([&] { (void)sp::Consumer<std::uint64_t>(name).try_pop(); }, "try_pop on a corrupt cell");
        throws_corrupt([&] { (void)sp::Consumer<std::uint64_t>(name).pop_for(100ms); },
                       "pop_for(100ms) on a corrupt cell");
    }
}

// --- 9.7: another user's segment ---------------------------------------------------------------

TEST_CASE("a segment owned by another user is refused unless the caller opts in (skipped when not root)",
          "[multiprocess][owner]") {
    if (::geteuid() != 0) {
        WARN("SKIPPED: needs root to chown a segment to another user; not run");
        return;
    }
    test::ShmGuard guard;
    const std::string qname = guard.add(test::unique_name("foreignq"));
    const std::string mname = guard.add(test::unique_name("foreignm"));
    sp::QueueOptions o;
    o.producers = o.consumers = sp::Endpoints::many;
    auto q = sp::Queue::create(qname, o);
    auto m = sp::Mutex::create(mname);
    constexpr uid_t kNobody = 65534;
    REQUIRE(::chown(shm_file(qname).c_str(), kNobody, kNobody) == 0);
    REQUIRE(::chown(shm_file(mname).c_str(), kNobody, kNobody) == 0);

    auto refused = [](const std::function<void()>& fn) {
        try {
            fn();
        } catch (const sp::Error& e) {
            CHECK_THAT(e.what(), Contains("belongs to uid 65534") && Contains("allow_foreign_owner"));
            return e.code() == sp::errc::permission_denied;
        }
        return false;
    };
    CHECK(refused([&] { (void)sp::Queue::open(qname); }));
    CHECK(refused([&] { sp::Producer<std::uint64_t> tx(qname); }));
    CHECK(refused([&] { sp::Consumer<std::uint64_t> rx(qname); }));
    CHECK(refused([&] { (void)sp::Mutex::open(mname); }));

    sp::OpenOptions trust;
    trust.allow_foreign_owner = true;
    sp::Producer<std::uint64_t> tx(qname, trust);
    sp::Consumer<std::uint64_t> rx(qname, trust);
    REQUIRE(tx.try_push(7));
    CHECK(rx.pop_for(5s) == std::optional<std::uint64_t>(7));
    auto sut = sp::Mutex::open(mname, trust);
    REQUIRE(sut.try_lock());
    sut.unlock();
}
