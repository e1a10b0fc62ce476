// Pool failure modes that hang or orphan in Python: dead workers, exceptions, terminate
// with tasks in flight, per-task timeouts, worker recycling, a dead parent, misuse.
#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/object.hpp>
#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <cerrno>
#include <csignal>
#include <poll.h>
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

// Writes this worker's pid to `fd` (a pipe the pool inherited), then blocks.
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

bool gone(int pid) { return shmpipe::detail::process_start_time(pid) == 0; }

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
    shmpipe::Pool sut(2);
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
    sut.join();
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
    sut.join();
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
    REQUIRE(f.exception() != nullptr);
    REQUIRE_THROWS_AS(sut.map(throw_invalid, std::vector<int>{1, 2, -3}), shmpipe::RemoteError);
    REQUIRE(sut.apply(throw_invalid, 4) == 4);  // the worker survived the exceptions
    sut.close();
    sut.join();
}

TEST_CASE("terminate with tasks in flight leaves no child process", "[multiprocess]") {
    std::vector<int> pids;
    std::vector<shmpipe::Future<int>> futures;
    {
        shmpipe::Pool sut(2);
        pids = sut.worker_pids();
        for (int i = 0; i < 6; ++i) futures.push_back(sut.submit(sleep_ms, 30000));
        std::this_thread::sleep_for(50ms);
        const auto t0 = std::chrono::steady_clock::now();
        sut.terminate();
        REQUIRE(std::chrono::steady_clock::now() - t0 < 10s);
    }
    for (auto& f : futures) {
        REQUIRE(f.done());
        REQUIRE_THROWS_AS(f.result(), shmpipe::Error);
    }
    for (int pid : pids) REQUIRE(gone(pid));
    REQUIRE(::waitpid(-1, nullptr, WNOHANG) == -1);  // nothing left to reap
    REQUIRE(errno == ECHILD);
}

TEST_CASE("A task over the per-task timeout kills its worker and fails with timeout", "[multiprocess]") {
    shmpipe::PoolOptions opt;
    opt.processes = 2;
    opt.task_timeout = 300ms;
    shmpipe::Pool sut(opt);
    auto slow = sut.apply_async(sleep_ms, 20000);
    auto quick = sut.apply_async(sleep_ms, 10);
    REQUIRE_THROWS_MATCHES(slow.get_for(20s), shmpipe::Error, errc_is(shmpipe::errc::timeout, [](const std::string& m) {
                               return m.find("task_timeout") != std::string::npos;
                           }));
    REQUIRE(quick.get_for(20s) == 10);
    REQUIRE(sut.apply_async(square, 5).get_for(20s) == 25);
    sut.close();
    sut.join();
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
    sut.join();
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
    REQUIRE(sut.apply(probe, 0) == "done");
    sut.close();
    sut.join();
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
    sut.join();
}

TEST_CASE("A pool's workers die with its parent", "[multiprocess]") {
    shmpipe::ProcessOptions opt;
    opt.out = shmpipe::Redirect::pipe();
    shmpipe::Process parent(shmpipe::Command{shmpipe::test::peer_path("process_peer"), {"pool", "2"}}, opt);
    parent.start();
    pollfd p{parent.stdout_fd(), POLLIN, 0};
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (line.find('\n') == std::string::npos) {
        if (std::chrono::steady_clock::now() > deadline) FAIL("process_peer pool did not print its workers' pids");
        if (::poll(&p, 1, 100) != 1) continue;
        char c;
        if (::read(parent.stdout_fd(), &c, 1) != 1) FAIL("process_peer pool exited early: " << line);
        line.push_back(c);
    }
    std::istringstream in(line);
    std::string word;
    in >> word;
    REQUIRE(word == "pids");
    std::vector<int> workers;
    for (int pid = 0; in >> pid;) workers.push_back(pid);
    REQUIRE(workers.size() == 2);

    parent.kill();
    REQUIRE(parent.join_for(10s));
    for (int pid : workers) {
        if (!shmpipe::test::wait_until([&] { return gone(pid); }, 10s)) {
            ::kill(pid, SIGKILL);
            FAIL("worker " << pid << " outlived its killed parent by 10 s");
        }
    }
    // The dead parent's queues are left behind (it could not remove them): clean them up.
    for (const auto& n : shmpipe::test::shm_objects_with_prefix("pool-" + std::to_string(parent.pid()) + "-")) {
        shmpipe::remove(n);
    }
}

TEST_CASE("A future no worker took can be cancelled; a running one cannot", "[multiprocess]") {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    shmpipe::Pool sut(1);
    auto running = sut.submit(report_then_block, p[1]);
    read_pid(p[0]);  // the only worker now runs it
    auto queued = sut.submit(square, 3);
    REQUIRE_FALSE(running.cancel());
    REQUIRE(queued.cancel());
    REQUIRE(queued.cancelled());
    REQUIRE(queued.done());
    REQUIRE_THROWS_MATCHES(queued.result(), shmpipe::Error,
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
