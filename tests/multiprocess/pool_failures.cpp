// Pool failure modes that hang or orphan in Python: dead workers, exceptions, terminate
// with tasks in flight, per-task timeouts, worker recycling, a dead parent, misuse.
#include <shmpipe/object.hpp>
#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>

#include "pool_testing.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <future>
#include <mutex>
#include <poll.h>
#include <sys/mman.h>
#include <set>
#include <sstream>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

int square(int x) { return x * x; }

int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}

// Writes this worker's pid to `fd` (a pipe kept through PoolOptions::keep_fds), then blocks.
int report_then_block(int fd) {
    const int pid = ::getpid();
    if (::write(fd, &pid, sizeof pid) != sizeof pid) return -1;
    std::this_thread::sleep_for(60s);
    return 0;
}

int throw_invalid(int x) {
    if (x < 0) throw std::invalid_argument("negative input " + std::to_string(x));
    return x;
}

int crash_self(int) {
    ::kill(::getpid(), SIGKILL);
    return 0;
}

int my_pid(int) { return ::getpid(); }

// 1 when descriptor `fd` is open in the worker.
int fd_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0 ? 1 : 0; }

using shmpipe::test::settle_or_abort;
using shmpipe::test::within;

// Same, for a wait the pool cannot end by itself being terminated (a deadlocked submit in
// the old code): SIGKILLs the workers until f returns, then fails naming `what`.
template <class F>
void within_or_kill_workers(shmpipe::Pool& pool, const std::string& what, F&& f, std::chrono::seconds limit = 30s) {
    auto done = std::async(std::launch::async, std::forward<F>(f));
    if (done.wait_for(limit) == std::future_status::ready) {
        done.get();
        return;
    }
    for (int round = 0; round < 300 && done.wait_for(100ms) != std::future_status::ready; ++round) {
        for (int pid : pool.worker_pids()) ::kill(pid, SIGKILL);
    }
    settle_or_abort(done, what);
    FAIL(what << ": not done within " << limit.count() << " s (workers killed to unblock it)");
}

// A pool whose queues hold 4 messages: the ring wraps after 4 tasks.
shmpipe::PoolOptions tiny_queues(unsigned processes) {
    shmpipe::PoolOptions opt;
    opt.processes = processes;
    opt.max_message = 1024;
    opt.queue_capacity = 4 * 1024;
    return opt;
}

// One-shot thief for the "killed while taking a task" test: a replacement worker's
// initializer claims the next task message itself and dies holding it, exactly like a
// worker killed between taking a message and recording its task.
std::atomic<int>* g_thief_armed = nullptr;  // in a MAP_SHARED mapping: one worker fires it
std::string g_thief_queue;                  // set after the pool exists; replacements see it

void thief_initializer() {
    if (g_thief_armed == nullptr || g_thief_queue.empty() || g_thief_armed->exchange(0) != 1) return;
    shmpipe::Consumer<> in(g_thief_queue);
    [[maybe_unused]] auto m = in.peek_for(20s);  // held, never released
    ::raise(SIGKILL);
}

using shmpipe::test::process_gone;

template <class F>
auto errc_is(shmpipe::errc code, F&& also) {
    return Catch::Predicate<shmpipe::Error>(
        [code, also](const shmpipe::Error& e) { return e.code() == code && also(std::string(e.what())); },
        "shmpipe::Error with the expected code and message");
}

int read_pid(int fd) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20000) != 1) FAIL("no worker reported its pid within 20 s");
    int pid = 0;
    REQUIRE(::read(fd, &pid, sizeof pid) == sizeof pid);
    return pid;
}

}  // namespace

TEST_CASE("A worker killed mid-task fails that task with worker_died and the pool goes on", "[multiprocess]") {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    shmpipe::PoolOptions opt;
    opt.processes = 2;
    opt.keep_fds = {p[1]};
    shmpipe::Pool sut(opt);
    auto held = sut.apply_async(report_then_block, p[1]);
    const int victim = read_pid(p[0]);
    ::kill(victim, SIGKILL);

    REQUIRE_THROWS_MATCHES(held.get_for(20s), shmpipe::Error, errc_is(shmpipe::errc::worker_died, [&](const std::string& m) {
                               return m.find("signal 9") != std::string::npos &&
                                      m.find(std::to_string(victim)) != std::string::npos;
                           }));
    REQUIRE(sut.apply_async(square, 12).get_for(20s) == 144);  // still serving
    REQUIRE(shmpipe::test::wait_until([&] { return sut.worker_pids().size() == 2; }, 10s));
    REQUIRE(sut.workers_started() >= 3);
    sut.close();
    within(sut, "join() after close()", [&] { sut.join(); });
    ::close(p[0]);
    ::close(p[1]);
}

TEST_CASE("A task that crashes its worker fails with worker_died, others complete", "[multiprocess]") {
    shmpipe::Pool sut(2);
    std::vector<shmpipe::AsyncResult<int>> ok;
    for (int i = 0; i < 10; ++i) ok.push_back(sut.apply_async(square, i));
    auto crash = sut.apply_async(crash_self, 0);
    for (int i = 0; i < 10; ++i) ok.push_back(sut.apply_async(square, i));
    REQUIRE_THROWS_MATCHES(crash.get_for(20s), shmpipe::Error,
                           errc_is(shmpipe::errc::worker_died, [](const std::string& m) {
                               return m.find("SIGKILL") != std::string::npos;
                           }));
    for (int i = 0; i < 20; ++i) REQUIRE(ok[static_cast<std::size_t>(i)].get_for(20s) == (i % 10) * (i % 10));
    sut.close();
    within(sut, "join() after close()", [&] { sut.join(); });
}

TEST_CASE("An exception in a task reaches the caller as RemoteError", "[multiprocess]") {
    shmpipe::Pool sut(1);
    auto r = sut.apply_async(throw_invalid, -5);
    try {
        r.get_for(20s);
        FAIL("no exception");
    } catch (const shmpipe::RemoteError& e) {
        REQUIRE(e.type_name() == "std::invalid_argument");
        REQUIRE(e.remote_message() == "negative input -5");
        REQUIRE(e.code() == shmpipe::errc::remote_error);
    }
    REQUIRE_FALSE(r.successful());
    auto f = sut.submit(throw_invalid, -1);
    if (!f.wait_for(20s)) FAIL("submit(throw_invalid, -1) unfinished after 20 s");
    REQUIRE(f.exception() != nullptr);
    REQUIRE_THROWS_AS(within(sut, "map(throw_invalid, {1, 2, -3})",
                             [&] { return sut.map(throw_invalid, std::vector<int>{1, 2, -3}); }),
                      shmpipe::RemoteError);
    REQUIRE(sut.apply_async(throw_invalid, 4).get_for(20s) == 4);  // the worker survived the exceptions
    sut.close();
    within(sut, "join() after close()", [&] { sut.join(); });
}

TEST_CASE("terminate with tasks in flight leaves no child process", "[multiprocess]") {
    std::vector<int> pids;
    std::vector<shmpipe::Future<int>> futures;
    {
        shmpipe::Pool sut(2);
        pids = sut.worker_pids();
        for (int i = 0; i < 6; ++i) futures.push_back(sut.submit(sleep_ms, 30000));
        std::this_thread::sleep_for(50ms);
        // A generous bound (the ladder's grace is 1 s): a hang fails here, not at CTest's fence.
        auto stopped = std::async(std::launch::async, [&] { sut.terminate(); });
        if (stopped.wait_for(30s) != std::future_status::ready) {
            for (int pid : pids) ::kill(pid, SIGKILL);
            settle_or_abort(stopped, "terminate()");
            FAIL("terminate() with 6 tasks in flight did not return within 30 s");
        }
    }
    for (auto& f : futures) {
        REQUIRE(f.done());
        REQUIRE_THROWS_AS(f.result_for(1s), shmpipe::Error);
    }
    for (int pid : pids) REQUIRE(process_gone(pid));
    REQUIRE(::waitpid(-1, nullptr, WNOHANG) == -1);  // nothing left to reap
    REQUIRE(errno == ECHILD);
}

TEST_CASE("A task over the per-task timeout kills its worker and fails with timeout", "[multiprocess]") {
    shmpipe::PoolOptions opt;
    opt.processes = 2;
    opt.task_timeout = 2s;
    shmpipe::Pool sut(opt);
    auto slow = sut.apply_async(sleep_ms, 60000);
    auto quick = sut.apply_async(sleep_ms, 10);
    REQUIRE_THROWS_MATCHES(slow.get_for(20s), shmpipe::Error, errc_is(shmpipe::errc::timeout, [](const std::string& m) {
                               return m.find("task_timeout") != std::string::npos;
                           }));
    REQUIRE(quick.get_for(20s) == 10);
    REQUIRE(sut.apply_async(square, 5).get_for(20s) == 25);
    sut.close();
    within(sut, "join() after close()", [&] { sut.join(); });
}

TEST_CASE("max_tasks_per_child recycles workers", "[multiprocess]") {
    shmpipe::PoolOptions opt;
    opt.processes = 2;
    opt.max_tasks_per_child = 2;
    shmpipe::Pool sut(opt);
    std::set<int> pids;
    for (int i = 0; i < 10; ++i) pids.insert(sut.apply_async(my_pid, i).get_for(20s));
    REQUIRE(pids.size() >= 5);
    REQUIRE(sut.workers_started() >= 5);
    sut.close();
    within(sut, "join() after close()", [&] { sut.join(); });
}

TEST_CASE("An initializer runs in every worker", "[multiprocess]") {
    shmpipe::PoolOptions opt;
    opt.processes = 2;
    opt.initializer = [] { ::setenv("SHMPIPE_T_INIT", "done", 1); };
    shmpipe::Pool sut(opt);
    auto probe = +[](int) -> std::string {
        const char* v = std::getenv("SHMPIPE_T_INIT");
        return v ? v : "";
    };
    REQUIRE(sut.apply_async(probe, 0).get_for(20s) == "done");
    sut.close();
    within(sut, "join() after close()", [&] { sut.join(); });
}

TEST_CASE("Misuse of a pool gets invalid_state", "[multiprocess]") {
    shmpipe::Pool sut(1);
    REQUIRE_THROWS_MATCHES(sut.join(), shmpipe::Error,
                           errc_is(shmpipe::errc::invalid_state, [](const std::string& m) {
                               return m.find("before close") != std::string::npos;
                           }));
    sut.close();
    REQUIRE_THROWS_MATCHES(sut.apply_async(square, 1), shmpipe::Error,
                           errc_is(shmpipe::errc::invalid_state, [](const std::string& m) {
                               return m.find("after close") != std::string::npos;
                           }));
    within(sut, "join() after close()", [&] { sut.join(); });
}

TEST_CASE("A pool's workers die with its parent", "[multiprocess]") {
    shmpipe::ProcessOptions opt;
    opt.out = shmpipe::Redirect::pipe();
    opt.daemon = true;  // the test kills it; on a failed check it must not be waited for
    shmpipe::Process parent(shmpipe::Command{shmpipe::test::peer_path("process_peer"), {"pool", "2"}}, opt);
    const std::vector<int> workers = shmpipe::test::start_pool_parent(parent);
    REQUIRE(workers.size() == 2);

    parent.kill();
    REQUIRE(parent.join_for(10s));
    for (int pid : workers) {
        if (!shmpipe::test::wait_until([&] { return process_gone(pid); }, 10s)) {
            ::kill(pid, SIGKILL);
            FAIL("worker " << pid << " outlived its killed parent by 10 s");
        }
    }
    // Its guardian removes the dead parent's queues (pool_guardian.cpp checks that); make
    // sure of it here too, so a slow guardian cannot leave them to the leak check.
    for (const auto& n : shmpipe::test::shm_objects_with_prefix("pool-" + std::to_string(parent.pid()) + "-")) {
        shmpipe::remove(n);
    }
}

TEST_CASE("A future no worker took can be cancelled; a running one cannot", "[multiprocess]") {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    shmpipe::PoolOptions opt;
    opt.processes = 1;
    opt.keep_fds = {p[1]};
    shmpipe::Pool sut(opt);
    auto running = sut.submit(report_then_block, p[1]);
    read_pid(p[0]);  // the only worker now runs it
    auto queued = sut.submit(square, 3);
    REQUIRE_FALSE(running.cancel());
    REQUIRE(queued.cancel());
    REQUIRE(queued.cancelled());
    REQUIRE(queued.done());
    REQUIRE_THROWS_MATCHES(queued.result_for(1s), shmpipe::Error,
                           errc_is(shmpipe::errc::cancelled, [](const std::string&) { return true; }));
    sut.terminate();
    REQUIRE(running.done());
    ::close(p[0]);
    ::close(p[1]);
}

TEST_CASE("as_completed gives up at its timeout", "[multiprocess]") {
    shmpipe::Pool sut(1);
    std::vector<shmpipe::Future<int>> fs{sut.submit(sleep_ms, 5000)};
    auto sut_range = shmpipe::as_completed(fs, 50ms);
    REQUIRE_THROWS_MATCHES(sut_range.begin(), shmpipe::Error,
                           errc_is(shmpipe::errc::timeout, [](const std::string&) { return true; }));
    sut.terminate();
}

TEST_CASE("A worker killed between taking a task and recording it fails that task", "[multiprocess]") {
    void* mem = ::mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    g_thief_armed = new (mem) std::atomic<int>(0);
    struct Unmap {
        void* p;
        ~Unmap() {
            g_thief_armed = nullptr;
            g_thief_queue.clear();
            ::munmap(p, sizeof(std::atomic<int>));
        }
    } unmap{mem};
    shmpipe::PoolOptions opt;
    opt.processes = 1;
    opt.initializer = thief_initializer;
    shmpipe::Pool sut(opt);
    g_thief_queue = sut.tasks_queue_name();  // replacement workers are forked after this
    g_thief_armed->store(1);

    // The first worker dies; its replacement claims the next task and dies without
    // recording it (the window a SIGKILL can hit in a real worker).
    REQUIRE_THROWS_MATCHES(sut.apply_async(crash_self, 0).get_for(20s), shmpipe::Error,
                           errc_is(shmpipe::errc::worker_died, [](const std::string&) { return true; }));
    auto victim = sut.apply_async(square, 7);
    REQUIRE_THROWS_MATCHES(victim.get_for(20s), shmpipe::Error,
                           errc_is(shmpipe::errc::worker_died, [](const std::string& m) {
                               return m.find("while taking it") != std::string::npos;
                           }));
    REQUIRE(g_thief_armed->load() == 0);
    // Innocent tasks around it are not failed, and the pool goes on.
    std::vector<shmpipe::AsyncResult<int>> after;
    for (int i = 0; i < 20; ++i) after.push_back(sut.apply_async(square, i));
    for (int i = 0; i < 20; ++i) REQUIRE(after[static_cast<std::size_t>(i)].get_for(20s) == i * i);
    sut.close();
    within(sut, "join() after close()", [&] { sut.join(); });
}

TEST_CASE("A long task does not stall submissions when the task queue wraps round to it", "[multiprocess]") {
    shmpipe::Pool sut(tiny_queues(2));
    auto slow = sut.submit(sleep_ms, 60000);
    std::vector<shmpipe::Future<int>> quick;
    within_or_kill_workers(sut, "submitting 40 quick tasks past a long one through a 4-message queue", [&] {
        for (int i = 0; i < 40; ++i) quick.push_back(sut.submit(square, i));
    });
    for (int i = 0; i < 40; ++i) REQUIRE(quick[static_cast<std::size_t>(i)].result_for(20s) == i * i);
    REQUIRE_FALSE(slow.done());
    sut.terminate();
    REQUIRE_THROWS_MATCHES(slow.result_for(1s), shmpipe::Error,
                           errc_is(shmpipe::errc::cancelled, [](const std::string&) { return true; }));
}

TEST_CASE("A done-callback may submit while the task queue is full", "[multiprocess]") {
    shmpipe::Pool sut(tiny_queues(1));
    std::mutex m;
    std::vector<shmpipe::Future<int>> follow_ups;
    std::vector<shmpipe::Future<int>> first;
    within_or_kill_workers(sut, "40 submissions whose callbacks submit follow-ups", [&] {
        for (int i = 0; i < 40; ++i) {
            auto f = sut.submit(sleep_ms, 1);
            f.add_done_callback([&sut, &m, &follow_ups, i](const shmpipe::Future<int>&) {
                auto next = sut.submit(square, i);  // on the collector thread
                std::lock_guard lock(m);
                follow_ups.push_back(next);
            });
            first.push_back(f);
        }
    });
    for (auto& f : first) REQUIRE(f.result_for(20s) == 1);
    if (!shmpipe::test::wait_until([&] {
            std::lock_guard lock(m);
            return follow_ups.size() == 40;
        }, 20s)) {
        FAIL("the done-callbacks did not submit 40 follow-ups within 20 s");
    }
    std::set<int> got;
    {
        std::lock_guard lock(m);
        for (auto& f : follow_ups) got.insert(f.result_for(20s));
    }
    std::set<int> expected;
    for (int i = 0; i < 40; ++i) expected.insert(i * i);
    REQUIRE(got == expected);
    sut.close();
    within(sut, "join() after close()", [&] { sut.join(); });
}

TEST_CASE("terminate() gets through a submit that waits for room", "[multiprocess]") {
    shmpipe::Pool sut(tiny_queues(1));
    auto blocker = sut.submit(sleep_ms, 60000);
    std::atomic<int> submitted{0};
    auto submitter = std::async(std::launch::async, [&] {
        for (int i = 0; i < 50; ++i) {
            sut.submit(square, i);  // blocks once the 4-message queue is full
            ++submitted;
        }
    });
    if (!shmpipe::test::wait_until([&] { return submitted.load() >= 3; }, 20s)) {
        FAIL("the submitter did not push 3 tasks within 20 s");
    }
    auto stopped = std::async(std::launch::async, [&] { sut.terminate(); });
    if (stopped.wait_for(30s) != std::future_status::ready) {
        for (int pid : sut.worker_pids()) ::kill(pid, SIGKILL);
        settle_or_abort(stopped, "terminate()");
        FAIL("terminate() did not get through a blocked submit within 30 s");
    }
    if (submitter.wait_for(30s) != std::future_status::ready) {
        settle_or_abort(submitter, "a submit blocked across terminate()");
        FAIL("a submit blocked across terminate() did not return within 30 s");
    }
    REQUIRE_THROWS_MATCHES(submitter.get(), shmpipe::Error,
                           errc_is(shmpipe::errc::invalid_state, [](const std::string& m) {
                               return m.find("after terminate()") != std::string::npos;
                           }));
    REQUIRE(submitted.load() < 50);
    REQUIRE(blocker.done());
}

TEST_CASE("Destroying a closed, unjoined pool terminates a stuck task instead of waiting", "[multiprocess]") {
    shmpipe::Future<int> stuck;
    std::vector<int> pids;
    auto scope = std::async(std::launch::async, [&] {
        shmpipe::Pool sut(1);
        pids = sut.worker_pids();
        stuck = sut.submit(sleep_ms, 60000);
        sut.close();
        // No join(): an exception unwinding past the pool ends up here.
    });
    if (scope.wait_for(30s) != std::future_status::ready) {
        for (int pid : pids) ::kill(pid, SIGKILL);
        settle_or_abort(scope, "~Pool");
        FAIL("~Pool after close() waited on a 60 s task (still waiting after 30 s)");
    }
    scope.get();
    REQUIRE(stuck.done());
    REQUIRE_THROWS_MATCHES(stuck.result_for(1s), shmpipe::Error,
                           errc_is(shmpipe::errc::cancelled, [](const std::string&) { return true; }));
    for (int pid : pids) REQUIRE(process_gone(pid));
}

TEST_CASE("Workers inherit no descriptor of the parent except keep_fds", "[multiprocess]") {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    {
        shmpipe::Pool sut(1);
        REQUIRE(sut.apply_async(fd_open, p[0]).get_for(20s) == 0);
        REQUIRE(sut.apply_async(fd_open, p[1]).get_for(20s) == 0);
        REQUIRE(sut.apply_async(fd_open, 2).get_for(20s) == 1);  // stdio stays
        sut.close();
        within(sut, "join() after close()", [&] { sut.join(); });
    }
    {
        shmpipe::PoolOptions opt;
        opt.processes = 1;
        opt.keep_fds = {p[1]};
        shmpipe::Pool sut(opt);
        REQUIRE(sut.apply_async(fd_open, p[0]).get_for(20s) == 0);
        REQUIRE(sut.apply_async(fd_open, p[1]).get_for(20s) == 1);
        sut.close();
        within(sut, "join() after close()", [&] { sut.join(); });
    }
    ::close(p[0]);
    ::close(p[1]);
}

TEST_CASE("close() runs every task a done-callback queued before it", "[multiprocess]") {
    shmpipe::Pool sut(tiny_queues(1));
    std::mutex m;
    std::vector<std::pair<int, shmpipe::Future<int>>> accepted;
    int rejected = 0;
    std::vector<shmpipe::Future<int>> first;
    within_or_kill_workers(sut, "30 submissions whose callbacks submit follow-ups", [&] {
        for (int i = 0; i < 30; ++i) {
            auto f = sut.submit(sleep_ms, 1);
            f.add_done_callback([&sut, &m, &accepted, &rejected, i](const shmpipe::Future<int>&) {
                try {
                    auto next = sut.submit(square, i);
                    std::lock_guard lock(m);
                    accepted.emplace_back(i, next);
                } catch (const shmpipe::Error& e) {
                    std::lock_guard lock(m);
                    if (e.code() == shmpipe::errc::invalid_state) ++rejected;  // after close(): refused
                }
            });
            first.push_back(f);
        }
    });
    sut.close();
    within(sut, "join() after close() with callbacks still submitting", [&] { sut.join(); });
    for (auto& f : first) REQUIRE(f.result_for(0s) == 1);
    std::lock_guard lock(m);
    REQUIRE(accepted.size() + static_cast<std::size_t>(rejected) == 30);
    for (auto& [i, f] : accepted) REQUIRE(f.result_for(0s) == i * i);  // none stranded by close()
}
