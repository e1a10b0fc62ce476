// shmpipe::Process: never acting on a pid or group id after the reap, poll_exit without
// reaping, moved-from handles, and the fork-safe failure path of a function child.
#include <shmpipe/error.hpp>
#include <shmpipe/process.hpp>

#include "test_catch.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <poll.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;
using shmpipe::Process;
using shmpipe::ProcessOptions;
using shmpipe::Redirect;

namespace {

// Alive and not a zombie (a reparented grandchild is reaped by init, not by us).
bool running(int pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text;
    if (!std::getline(stat, text)) return false;
    const auto close = text.rfind(')');
    return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

using shmpipe::test::read_all;
using shmpipe::test::read_line;

// A function child that forks a grandchild (same group, sleeping), prints its pid, exits 0.
Process leaves_a_grandchild() {
    ProcessOptions opt;
    opt.out = Redirect::pipe();
    return Process(
        [] {
            const pid_t g = ::fork();
            if (g == 0) {
                ::sleep(60);
                ::_exit(0);
            }
            std::printf("%d\n", g);
            std::fflush(stdout);
            ::_exit(0);
        },
        opt);
}

// Kills a leftover grandchild (not our child: init reaps it).
struct KillOnExit {
    int pid = 0;
    ~KillOnExit() {
        if (pid > 0) ::kill(pid, SIGKILL);
    }
};

}  // namespace

TEST_CASE("stop after the child was reaped signals nothing: its group id may be someone else's", "[multiprocess]") {
    Process sut = leaves_a_grandchild();
    sut.start();
    KillOnExit grandchild{std::stoi(read_line(sut.stdout_fd(), 10s, "the grandchild's pid"))};
    REQUIRE(sut.join_for(10s));  // reaped: from now on pid and pgid are free for reuse
    REQUIRE(sut.stop(0ms) == 0);
    sut.signal_group(SIGKILL);
    sut.kill();
    // Still running: neither stop() nor the signals reached the (former) group.
    CHECK(running(grandchild.pid));
}

TEST_CASE("stop on an exited, unreaped child still kills what it left in its group", "[multiprocess]") {
    Process sut = leaves_a_grandchild();
    sut.start();
    KillOnExit grandchild{std::stoi(read_line(sut.stdout_fd(), 10s, "the grandchild's pid"))};
    REQUIRE(shmpipe::test::wait_until([&] { return sut.poll_exit().has_value(); }, 10s));
    REQUIRE(running(grandchild.pid));
    REQUIRE(sut.stop(0ms) == 0);
    INFO("grandchild pid " << grandchild.pid);
    CHECK(shmpipe::test::wait_until([&] { return !running(grandchild.pid); }, 10s));
}

TEST_CASE("poll_exit reports the exit without reaping; join reaps", "[multiprocess]") {
    Process sut([] { ::_exit(7); });
    sut.start();
    REQUIRE(shmpipe::test::wait_until([&] { return sut.poll_exit().has_value(); }, 10s));
    CHECK(sut.poll_exit() == 7);
    siginfo_t info{};
    REQUIRE(::waitid(P_PID, static_cast<id_t>(sut.pid()), &info, WEXITED | WNOHANG | WNOWAIT) == 0);
    CHECK(info.si_pid == sut.pid());  // still a zombie of ours
    CHECK(sut.join() == 7);
    CHECK(sut.poll_exit() == 7);
    CHECK(::waitid(P_PID, static_cast<id_t>(sut.pid()), &info, WEXITED | WNOHANG) == -1);  // reaped
}

TEST_CASE("a moved-from Process answers safely", "[multiprocess]") {
    Process source([] {});
    Process sut(std::move(source));
    // source is moved from: queries give defaults, actions that need a child throw.
    CHECK(source.name().empty());
    CHECK(source.pid() == 0);
    CHECK_FALSE(source.started());
    CHECK_FALSE(source.is_alive());
    CHECK_FALSE(source.exit_code().has_value());
    CHECK_FALSE(source.poll_exit().has_value());
    CHECK_FALSE(source.stop(0ms).has_value());
    source.terminate();
    source.signal_group(SIGTERM);
    CHECK_THROWS_WITH(source.join(), Catch::Contains("moved from"));
    CHECK_THROWS_WITH(source.join_for(1ms), Catch::Contains("moved from"));
    CHECK_THROWS_WITH(source.start(), Catch::Contains("moved from"));
    sut.start();
    REQUIRE(sut.join_for(10s));
    CHECK(sut.exit_code() == 0);
}

TEST_CASE("a function child whose setup fails says why and exits 127", "[multiprocess]") {
    ProcessOptions opt;
    opt.name = "bad-cwd";
    opt.cwd = "/nonexistent/shmpipe-test-dir";
    opt.env = {{"SHMPIPE_T_UNUSED", "1"}};
    opt.close_fds = true;
    opt.err = Redirect::pipe();
    Process sut([] { ::_exit(0); }, opt);
    sut.start();
    const std::string err = read_all(sut.stderr_fd(), 10s, "the child's stderr");
    CHECK_THAT(err, Catch::Contains("process \"bad-cwd\": child setup failed: ENOENT (errno 2)"));
    REQUIRE(sut.join_for(10s));
    CHECK(sut.exit_code() == 127);
}
