// Process with Python's semantics: non-daemon children are waited for when their handle is
// destroyed, daemon children are stopped; move-only callables; join_for with any duration;
// current_process(), active_children(), cpu_count(). Real children, every wait bounded.
#include <shmpipe/error.hpp>
#include <shmpipe/pipe.hpp>
#include <shmpipe/process.hpp>

#include "test_catch.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
using shmpipe::Command;
using shmpipe::Process;
using shmpipe::ProcessOptions;
using shmpipe::Redirect;

namespace {

using shmpipe::test::process_gone;

// Runs `destroy` (which destroys Processes and so may wait for children) with a deadline:
// when it expires, the children in `pids()` are SIGKILLed (so the wait ends) and the test fails.
template <class F, class Pids>
void destroys_within(F destroy, Pids pids, std::chrono::seconds limit, const std::string& what) {
    auto done = std::async(std::launch::async, std::move(destroy));
    if (done.wait_for(limit) != std::future_status::ready) {
        for (int pid : pids()) ::kill(pid, SIGKILL);
        done.wait();
        FAIL(what << ": not done within " << limit.count() << " s (the children were killed)");
    }
    done.get();
}

std::vector<std::string> lines_of(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

struct TempFile {
    std::string path = "/tmp/" + shmpipe::test::unique_name("proc") + ".txt";
    ~TempFile() { ::unlink(path.c_str()); }
};

}  // namespace

TEST_CASE("Destroying a started non-daemon Process waits for the child to finish", "[multiprocess]") {
    TempFile out;
    int pid = 0;
    bool daemon = true;
    std::atomic<int> started_pid{0};
    destroys_within(
        [&] {
            ProcessOptions opt;
            opt.out = Redirect::file(out.path);
            Process sut([] {
                std::this_thread::sleep_for(300ms);  // still running when the handle goes
                std::printf("finished\n");
            }, opt);
            daemon = sut.daemon();
            sut.start();
            started_pid = pid = sut.pid();
        },
        [&] { return std::vector<int>{started_pid.load()}; }, 20s, "destroying a non-daemon Process");
    REQUIRE_FALSE(daemon);
    REQUIRE(lines_of(out.path) == std::vector<std::string>{"finished"});
    REQUIRE(process_gone(pid));
    REQUIRE(::waitpid(pid, nullptr, WNOHANG) == -1);  // reaped by the destructor: not our child any more
}

TEST_CASE("Fire and forget: ten Processes started as temporaries all run to the end", "[multiprocess]") {
    TempFile out;
    std::vector<int> pids;
    std::mutex m;
    destroys_within(
        [&] {
            ProcessOptions opt;
            opt.out = Redirect::file(out.path, /*append=*/true);
            for (int each = 0; each < 10; ++each) {
                // Python: Process(target=work, args=(each,)).start()
                Process p([each] { std::printf("worker %d\n", each); }, opt);
                p.start();
                std::lock_guard lock(m);
                pids.push_back(p.pid());
            }
        },
        [&] {
            std::lock_guard lock(m);
            return pids;
        },
        30s, "ten fire-and-forget Processes");
    auto lines = lines_of(out.path);
    std::sort(lines.begin(), lines.end());
    std::vector<std::string> expected;
    for (int each = 0; each < 10; ++each) expected.push_back("worker " + std::to_string(each));
    std::sort(expected.begin(), expected.end());
    REQUIRE(lines == expected);
}

TEST_CASE("A non-daemon child reading its stdin pipe sees EOF when the handle is destroyed", "[multiprocess]") {
    std::atomic<int> pid{0};
    destroys_within(
        [&] {
            ProcessOptions opt;
            opt.in = Redirect::pipe();
            opt.out = Redirect::null();
            Process sut(Command{"cat", {}}, opt);
            sut.start();
            pid = sut.pid();
        },
        [&] { return std::vector<int>{pid.load()}; }, 20s, "destroying a Process whose child reads stdin");
    REQUIRE(process_gone(pid));
}

TEST_CASE("A daemon child is stopped by the ladder when the handle is destroyed", "[multiprocess]") {
    int pid = 0;
    const auto t0 = std::chrono::steady_clock::now();
    {
        ProcessOptions opt;
        opt.daemon = true;
        Process sut([] { std::this_thread::sleep_for(60s); }, opt);
        REQUIRE(sut.daemon());
        sut.start();
        pid = sut.pid();
    }
    REQUIRE(process_gone(pid));
    REQUIRE(std::chrono::steady_clock::now() - t0 < 30s);  // SIGTERM ended it, nobody waited 60 s
}

TEST_CASE("A Process runs a move-only callable: a moved Pipe end and a unique_ptr", "[multiprocess]") {
    auto [parent_end, child_end] = shmpipe::Pipe::create();
    auto greeting = std::make_unique<std::string>("hello from the child");
    ProcessOptions opt;
    opt.daemon = true;  // on a failed check, do not wait for it
    Process sut([end = std::move(child_end), text = std::move(greeting)]() mutable {
        end.send(*text);
        end.send(static_cast<int>(end.recv<std::string>().size()));
    }, opt);
    sut.start();
    REQUIRE(parent_end.poll(20s));
    REQUIRE(parent_end.recv<std::string>() == "hello from the child");
    parent_end.send(std::string("four"));
    REQUIRE(parent_end.poll(20s));
    REQUIRE(parent_end.recv<int>() == 4);
    REQUIRE(sut.join_for(20s));
    REQUIRE(sut.exit_code() == 0);
    // Reaped: the parent's copy of the callable is gone too, so the child's end is closed
    // everywhere and the parent's end reports it.
    REQUIRE(parent_end.poll(20s));
    REQUIRE_THROWS_MATCHES(parent_end.recv<int>(), shmpipe::Error,
                           Catch::Predicate<shmpipe::Error>(
                               [](const shmpipe::Error& e) { return e.code() == shmpipe::errc::closed; },
                               "errc::closed once the child is joined"));
}

TEST_CASE("join_for takes any duration, floating-point included", "[multiprocess]") {
    ProcessOptions opt;
    opt.daemon = true;
    Process sleeper([] { std::this_thread::sleep_for(60s); }, opt);
    sleeper.start();
    REQUIRE_FALSE(sleeper.join_for(0.05s));
    REQUIRE_FALSE(sleeper.join_for(std::chrono::duration<double>(0.01)));
    REQUIRE_FALSE(sleeper.join_for(std::chrono::duration<double>(-1.0)));  // negative: a poll
    REQUIRE(sleeper.stop(2s) == -SIGTERM);

    Process quick([] {});
    quick.start();
    REQUIRE(quick.join_for(std::chrono::duration<double>(20.1)));
    REQUIRE(quick.exit_code() == 0);
}

TEST_CASE("current_process names the main process, a Process child and its pid", "[multiprocess]") {
    const auto me = shmpipe::current_process();
    REQUIRE(me.name == "MainProcess");
    REQUIRE(me.pid == ::getpid());
    REQUIRE_FALSE(me.worker_index.has_value());

    ProcessOptions opt;
    opt.name = "reporter";
    opt.out = Redirect::pipe();
    Process sut([] {
        const auto info = shmpipe::current_process();
        std::printf("%s %d %d %d\n", info.name.c_str(), info.pid, info.worker_index.has_value() ? 1 : 0,
                    info.daemon ? 1 : 0);
    }, opt);
    sut.start();
    const auto line = shmpipe::test::read_line(sut.stdout_fd(), 20s, "the child's current_process()");
    REQUIRE(line == "reporter " + std::to_string(sut.pid()) + " 0 0");
    REQUIRE(sut.join_for(20s));
}

TEST_CASE("active_children lists the started, unreaped Processes and reaps the finished ones", "[multiprocess]") {
    ProcessOptions opt;
    opt.daemon = true;
    opt.name = "long-" + shmpipe::test::unique_name("ac");
    Process sleeper([] { std::this_thread::sleep_for(60s); }, opt);
    ProcessOptions quick_opt;
    quick_opt.name = "quick-" + shmpipe::test::unique_name("ac");
    Process quick([] {}, quick_opt);
    Process never([] {});  // not started: not listed
    sleeper.start();
    quick.start();
    auto names = [] {
        std::set<std::string> out;
        for (const auto& c : shmpipe::active_children()) out.insert(c.name);
        return out;
    };
    REQUIRE(names().count(sleeper.name()) == 1);
    REQUIRE(names().count(never.name()) == 0);
    // The quick child exits by itself; active_children reaps it and stops listing it.
    REQUIRE(shmpipe::test::wait_until([&] { return names().count(quick.name()) == 0; }, 20s));
    REQUIRE(quick.exit_code() == 0);
    for (const auto& c : shmpipe::active_children()) {
        if (c.name == sleeper.name()) {
            REQUIRE(c.pid == sleeper.pid());
            REQUIRE(c.daemon);
        }
    }
    REQUIRE(sleeper.stop(2s) == -SIGTERM);
    REQUIRE(names().count(sleeper.name()) == 0);
}

TEST_CASE("cpu_count is the number of online CPUs", "[multiprocess]") {
    REQUIRE(shmpipe::cpu_count() >= 1);
    REQUIRE(shmpipe::cpu_count() == static_cast<unsigned>(::sysconf(_SC_NPROCESSORS_ONLN)));
}
