// shmpipe::Process with real children: functions and programs, exit codes, signals,
// redirection, descriptor hygiene, process groups, the stop ladder, parent death.
#include <shmpipe/error.hpp>
#include <shmpipe/process.hpp>

#include "test_catch.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <poll.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace std::chrono_literals;
using shmpipe::Command;
using shmpipe::Process;
using shmpipe::ProcessOptions;
using shmpipe::Redirect;

namespace {

using shmpipe::test::read_all;
using shmpipe::test::read_line;

using shmpipe::test::process_gone;

// Children meant to be stopped by the test are daemons: a failed check must not leave the
// test waiting for a 60 s sleeper in its destructor.
ProcessOptions daemon_options(ProcessOptions opt = {}) {
    opt.daemon = true;
    return opt;
}

void join_or_fail(Process& sut, std::chrono::milliseconds timeout) {
    if (!sut.join_for(timeout)) {
        sut.stop(0ms);
        FAIL("process \"" << sut.name() << "\" (pid " << sut.pid() << ") did not exit within " << timeout.count()
                          << " ms");
    }
}

}  // namespace

TEST_CASE("A function child that returns exits with code 0", "[multiprocess]") {
    Process sut([] {});
    sut.start();
    REQUIRE(sut.pid() > 0);
    join_or_fail(sut, 10s);
    REQUIRE(sut.exit_code() == 0);
    REQUIRE_FALSE(sut.is_alive());
}

TEST_CASE("A function child that throws exits with code 1 and prints the exception", "[multiprocess]") {
    ProcessOptions opt;
    opt.err = Redirect::pipe();
    opt.name = "thrower";
    Process sut([] { throw std::runtime_error("bad input 42"); }, opt);
    sut.start();
    const std::string err = read_all(sut.stderr_fd(), 10s, "the child's stderr");
    join_or_fail(sut, 10s);
    REQUIRE(sut.exit_code() == 1);
    REQUIRE_THAT(err, Catch::Contains("std::runtime_error") && Catch::Contains("bad input 42") &&
                          Catch::Contains("thrower"));
}

TEST_CASE("A child's exit code is reported by join", "[multiprocess]") {
    Process sut([] { std::_Exit(7); });
    sut.start();
    join_or_fail(sut, 10s);
    REQUIRE(sut.join() == 7);
}

TEST_CASE("A child killed by a signal has the negative signal number as exit code", "[multiprocess]") {
    SECTION("terminate gives -SIGTERM") {
        Process sut([] { std::this_thread::sleep_for(60s); }, daemon_options());
        sut.start();
        sut.terminate();
        join_or_fail(sut, 10s);
        REQUIRE(sut.exit_code() == -SIGTERM);
    }
    SECTION("kill gives -SIGKILL") {
        Process sut(Command{"sleep", {"60"}}, daemon_options());
        sut.start();
        REQUIRE(sut.is_alive());
        sut.kill();
        join_or_fail(sut, 10s);
        REQUIRE(sut.exit_code() == -SIGKILL);
    }
}

TEST_CASE("join_for gives up on a child that keeps running", "[multiprocess]") {
    Process sut([] { std::this_thread::sleep_for(60s); }, daemon_options());
    sut.start();
    REQUIRE_FALSE(sut.join_for(50ms));
    REQUIRE(sut.is_alive());
    REQUIRE_FALSE(sut.exit_code().has_value());
    REQUIRE(sut.stop(2s) == -SIGTERM);
}

TEST_CASE("A program's exit code is reported", "[multiprocess]") {
    Process ok(Command{"/bin/true", {}});
    ok.start();
    join_or_fail(ok, 10s);
    REQUIRE(ok.exit_code() == 0);

    Process three(Command{"sh", {"-c", "exit 3"}});
    three.start();
    join_or_fail(three, 10s);
    REQUIRE(three.exit_code() == 3);
}

TEST_CASE("A program that cannot be started fails start with an error naming it", "[multiprocess]") {
    SECTION("a missing path") {
        Process sut(Command{"/nonexistent/shmpipe-no-such-program", {}});
        REQUIRE_THROWS_MATCHES(sut.start(), shmpipe::Error,
                               Catch::Predicate<shmpipe::Error>([](const shmpipe::Error& e) {
                                   return e.code() == shmpipe::errc::spawn_failed &&
                                          std::string(e.what()).find("shmpipe-no-such-program") != std::string::npos;
                               }, "spawn_failed naming the program"));
        REQUIRE_FALSE(sut.started());
    }
    SECTION("a name not on PATH") {
        Process sut(Command{"shmpipe-no-such-program-xyz", {}});
        REQUIRE_THROWS_WITH(sut.start(), Catch::Contains("shmpipe-no-such-program-xyz") && Catch::Contains("PATH"));
    }
    SECTION("a file that is not executable") {
        const std::string path = "/tmp/" + shmpipe::test::unique_name("noexec");
        {
            const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            REQUIRE(fd >= 0);
            REQUIRE(::write(fd, "#!/bin/sh\n", 10) == 10);
            ::close(fd);
        }
        Process sut(Command{path, {}});
        REQUIRE_THROWS_WITH(sut.start(), Catch::Contains(path) && Catch::Contains("executable"));
        ::unlink(path.c_str());
    }
    SECTION("a missing working directory") {
        Process sut(Command{"/bin/true", {}, {}, "/nonexistent/dir"});
        REQUIRE_THROWS_WITH(sut.start(), Catch::Contains("/nonexistent/dir"));
    }
}

TEST_CASE("A failed start leaves no zombie behind", "[multiprocess]") {
    for (int i = 0; i < 3; ++i) {
        Process sut(Command{"/nonexistent/prog", {}});
        REQUIRE_THROWS_AS(sut.start(), shmpipe::Error);
    }
    // Every child of ours has been reaped: waitpid(-1) finds none.
    REQUIRE(::waitpid(-1, nullptr, WNOHANG) == -1);
    REQUIRE(errno == ECHILD);
}

TEST_CASE("Standard streams go to pipes, files and /dev/null", "[multiprocess]") {
    SECTION("stdin and stdout pipes through cat") {
        ProcessOptions opt;
        opt.in = Redirect::pipe();
        opt.out = Redirect::pipe();
        Process sut(Command{"cat", {}}, opt);
        sut.start();
        REQUIRE(::write(sut.stdin_fd(), "hello\n", 6) == 6);
        sut.close_stdin();
        REQUIRE(read_all(sut.stdout_fd(), 10s, "cat's stdout") == "hello\n");
        join_or_fail(sut, 10s);
        REQUIRE(sut.exit_code() == 0);
    }
    SECTION("stdout to a file, stderr merged into it") {
        const std::string path = "/tmp/" + shmpipe::test::unique_name("out") + ".txt";
        ProcessOptions opt;
        opt.out = Redirect::file(path);
        opt.err = Redirect::to_stdout();
        Process sut(Command{"sh", {"-c", "echo out; echo err >&2"}}, opt);
        sut.start();
        join_or_fail(sut, 10s);
        const int fd = ::open(path.c_str(), O_RDONLY);
        REQUIRE(fd >= 0);
        const std::string text = read_all(fd, 5s, path);
        ::close(fd);
        ::unlink(path.c_str());
        REQUIRE(text == "out\nerr\n");
    }
    SECTION("a function child's stdout pipe") {
        ProcessOptions opt;
        opt.out = Redirect::pipe();
        opt.in = Redirect::null();
        Process sut([] { std::printf("from the child\n"); }, opt);
        sut.start();
        REQUIRE(read_all(sut.stdout_fd(), 10s, "the child's stdout") == "from the child\n");
        join_or_fail(sut, 10s);
    }
    SECTION("an unopenable stdin file names the file") {
        ProcessOptions opt;
        opt.in = Redirect::file("/nonexistent/input.txt");
        Process sut(Command{"cat", {}}, opt);
        REQUIRE_THROWS_WITH(sut.start(), Catch::Contains("/nonexistent/input.txt"));
    }
}

TEST_CASE("Extra environment variables and the working directory reach the child", "[multiprocess]") {
    ProcessOptions opt;
    opt.out = Redirect::pipe();
    Process sut(Command{"sh", {"-c", "echo \"$SHMPIPE_T_VAR\"; pwd"}, {{"SHMPIPE_T_VAR", "v a l"}}, "/tmp"}, opt);
    sut.start();
    REQUIRE(read_all(sut.stdout_fd(), 10s, "sh's stdout") == "v a l\n/tmp\n");
    join_or_fail(sut, 10s);

    ProcessOptions fopt;
    fopt.env = {{"SHMPIPE_T_FN", "x"}};
    fopt.cwd = "/";
    Process fn([] {
        const char* v = std::getenv("SHMPIPE_T_FN");
        char cwd[64] = {};
        const bool ok = v != nullptr && std::string(v) == "x" && ::getcwd(cwd, sizeof cwd) != nullptr &&
                        std::string(cwd) == "/";
        std::_Exit(ok ? 0 : 5);
    }, fopt);
    fn.start();
    join_or_fail(fn, 10s);
    REQUIRE(fn.exit_code() == 0);
}

TEST_CASE("A program inherits no descriptor except those asked for", "[multiprocess]") {
    // An inheritable descriptor (no FD_CLOEXEC) far from the ones the shell uses.
    const int fd = ::fcntl(0, F_DUPFD, 40);
    REQUIRE(fd >= 40);
    const std::string probe = "test -e /proc/self/fd/" + std::to_string(fd);
    SECTION("not asked for: closed") {
        Process sut(Command{"sh", {"-c", probe}});
        sut.start();
        join_or_fail(sut, 10s);
        REQUIRE(sut.exit_code() == 1);
    }
    SECTION("asked for: kept") {
        ProcessOptions opt;
        opt.keep_fds = {fd};
        Process sut(Command{"sh", {"-c", probe}}, opt);
        sut.start();
        join_or_fail(sut, 10s);
        REQUIRE(sut.exit_code() == 0);
    }
    ::close(fd);
}

TEST_CASE("A forked function does not hold other children's pipe ends open", "[multiprocess]") {
    ProcessOptions opt;
    opt.in = Redirect::pipe();
    Process reader(Command{"cat", {}}, opt);
    reader.start();
    Process bystander([] { std::this_thread::sleep_for(60s); }, daemon_options());
    bystander.start();
    reader.close_stdin();
    // cat sees EOF although the bystander was forked while the pipe was open.
    join_or_fail(reader, 10s);
    REQUIRE(reader.exit_code() == 0);
    REQUIRE(bystander.stop(2s) == -SIGTERM);
}

TEST_CASE("Every child runs in its own process group", "[multiprocess]") {
    Process sut(Command{"sleep", {"60"}}, daemon_options());
    sut.start();
    REQUIRE(sut.pgid() == sut.pid());
    REQUIRE(::getpgid(sut.pid()) == sut.pid());
    sut.signal_group(SIGKILL);
    join_or_fail(sut, 10s);
    REQUIRE(sut.exit_code() == -SIGKILL);
}

TEST_CASE("stop climbs the ladder from SIGTERM to SIGKILL and reaps", "[multiprocess]") {
    SECTION("a child that obeys SIGTERM") {
        Process sut([] { std::this_thread::sleep_for(60s); }, daemon_options());
        sut.start();
        REQUIRE(sut.stop(5s) == -SIGTERM);
    }
    SECTION("a child that ignores SIGTERM is killed after the grace period") {
        ProcessOptions opt = daemon_options();
        opt.out = Redirect::pipe();
        Process sut([] {
            std::signal(SIGTERM, SIG_IGN);
            std::printf("ready\n");
            std::fflush(stdout);
            std::this_thread::sleep_for(60s);
        }, opt);
        sut.start();
        REQUIRE(read_line(sut.stdout_fd(), 10s, "the child's ready line") == "ready");
        const auto t0 = std::chrono::steady_clock::now();
        REQUIRE(sut.stop(200ms) == -SIGKILL);
        REQUIRE(std::chrono::steady_clock::now() - t0 >= 150ms);
        REQUIRE(process_gone(sut.pid()));
    }
    SECTION("grandchildren in the group go too") {
        ProcessOptions opt = daemon_options();
        opt.out = Redirect::pipe();
        Process sut([] {
            const pid_t g = ::fork();
            if (g == 0) {
                std::signal(SIGTERM, SIG_IGN);
                ::pause();
                ::_exit(0);
            }
            std::printf("%d\n", g);
            std::fflush(stdout);
            ::pause();
        }, opt);
        sut.start();
        const int grandchild = std::stoi(read_line(sut.stdout_fd(), 10s, "the grandchild's pid"));
        REQUIRE_FALSE(process_gone(grandchild));
        sut.stop(100ms);
        REQUIRE(shmpipe::test::wait_until([&] { return process_gone(grandchild); }, 10s));
    }
}

TEST_CASE("Destroying a started, unjoined daemon Process stops and reaps it", "[multiprocess]") {
    int pid = 0;
    {
        Process sut([] { std::this_thread::sleep_for(60s); }, daemon_options());
        sut.start();
        pid = sut.pid();
    }
    REQUIRE(process_gone(pid));
    REQUIRE(::waitpid(pid, nullptr, WNOHANG) == -1);  // already reaped: not our child any more
}

TEST_CASE("Misuse gets invalid_state", "[multiprocess]") {
    Process sut([] {});
    REQUIRE_THROWS_AS(sut.join(), shmpipe::Error);
    sut.start();
    REQUIRE_THROWS_WITH(sut.start(), Catch::Contains("already started"));
    join_or_fail(sut, 10s);
}

TEST_CASE("Children die with their parent", "[multiprocess]") {
    ProcessOptions opt = daemon_options();
    opt.out = Redirect::pipe();
    Process parent(Command{shmpipe::test::peer_path("process_peer"), {"tree"}}, opt);
    parent.start();
    std::istringstream line(read_line(parent.stdout_fd(), 20s, "process_peer's child pids"));
    std::string word;
    line >> word;
    REQUIRE(word == "pids");
    std::vector<int> children;
    for (int pid = 0; line >> pid;) children.push_back(pid);
    REQUIRE(children.size() == 3);
    for (int pid : children) REQUIRE_FALSE(process_gone(pid));

    parent.kill();
    join_or_fail(parent, 10s);
    for (int pid : children) {
        if (!shmpipe::test::wait_until([&] { return process_gone(pid); }, 10s)) {
            ::kill(pid, SIGKILL);
            FAIL("child " << pid << " of the killed process_peer still runs after 10 s");
        }
    }
}
