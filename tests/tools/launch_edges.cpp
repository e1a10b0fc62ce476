// pipeline-launch at its edges: killed at any point of its start it leaves no object behind;
// hostile spec input is refused before parsing; small inconsistencies stay fixed.
#include "launch_testing.hpp"

#include <shmpipe/object.hpp>

#include <catch2/catch.hpp>

#include <csignal>
#include <fcntl.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace test = shmpipe::test;
using namespace std::chrono_literals;
using test::TempDir;

TEST_CASE("a launcher killed at any point of its start leaves no object and no process behind", "[tools]") {
    TempDir dir;
    // Many queues and replicas: the start takes long enough for the kills to land anywhere in
    // it (before, while and after the queues are created, while stages start).
    std::string spec = "[pipeline]\nstop_timeout = \"1s\"\n";
    for (int i = 0; i < 12; ++i) {
        const std::string q = "q" + std::to_string(i);
        spec += "[[stage]]\nname = \"w" + std::to_string(i) + "\"\ncmd = [\"" + test::behave() + "\", \"pidfile\", \"" +
                dir.file("pids") + "\"]\noutputs = [\"" + q + "\"]\nreplicas = 2\n";
        spec += "[[stage]]\nname = \"r" + std::to_string(i) + "\"\ncmd = [\"" + test::behave() + "\", \"pidfile\", \"" +
                dir.file("pids") + "\"]\ninputs = [\"" + q + "\"]\n";
    }
    const std::string path = dir.write("many.toml", spec);
    const int signals[] = {SIGKILL, SIGBUS, SIGSEGV};  // SIGBUS: what a full /dev/shm used to raise
    for (int i = 0; i < 24; ++i) {
        const std::string name = test::unique_name("edge");
        const int sig = signals[i % 3];
        INFO("run " << i << ", " << name << ", signal " << sig << " after " << i * 2 << " ms");
        test::Peer sut(test::launcher(), {"--name", name, "--no-status", "-q", path});
        std::this_thread::sleep_for(std::chrono::milliseconds(i * 2));
        sut.signal(sig);
        const int code = sut.wait_or_throw(10s, "the launcher to die of its signal");
        CHECK((code < 0 || code == 0 || code == 1));  // a signal (ASan turns SIGBUS into SIGABRT), or done already
        const bool clean = test::wait_until([&] { return test::shm_objects_with_prefix(name).empty(); }, 10s);
        for (const auto& n : test::shm_objects_with_prefix(name)) shmpipe::remove(n);
        CHECK(clean);
    }
    const auto pids = test::pids_in(dir.file("pids"));
    INFO("stage processes must die with the launcher (parent-death signal)");
    CHECK(test::wait_until([&] { return test::all_dead(pids); }, 10s));
}

TEST_CASE("pipeline-launch --check refuses a device, a directory and an oversized spec at once", "[tools]") {
    for (const std::string path : {"/dev/zero", "/dev/null", "/tmp"}) {
        const auto r = test::run_program(test::launcher(), {"--check", path}, 10s);
        INFO(path << ": " << r.err);
        CHECK((r.exit_code == 1 || r.exit_code == 2));  // CLI11 refuses a directory as a usage error
        CHECK(r.err.find("pipeline-launch: error:") != std::string::npos);
    }
    const auto zero = test::run_program(test::launcher(), {"--check", "/dev/zero"}, 10s);
    CHECK(zero.err.find("not a regular file") != std::string::npos);
    TempDir dir;
    const std::string big = dir.file("big.toml");
    const int fd = ::open(big.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, (off_t{16} << 20) + 1) == 0);
    ::close(fd);
    const auto r = test::run_program(test::launcher(), {"--check", big}, 10s);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("larger than the 16 MiB") != std::string::npos);
}

TEST_CASE("pipeline-launch --check on a 40 000-part dotted key is an error, not a crash", "[tools]") {
    TempDir dir;
    std::string key = "a";
    for (int i = 1; i < 40000; ++i) key += ".a";
    const auto r = test::run_program(test::launcher(), {"--check", dir.write("deep.toml", key + " = 1\n")}, 10s);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("more than 64 parts") != std::string::npos);
}

TEST_CASE("pipeline-launch --check takes stop_signal = 15 and refuses a 2^63-1 capacity", "[tools]") {
    TempDir dir;
    const std::string stages = "[[stage]]\nname = \"a\"\ncmd = [\"true\"]\noutputs = [\"q\"]\n"
                               "[[stage]]\nname = \"b\"\ncmd = [\"true\"]\ninputs = [\"q\"]\n";
    const auto sig = test::run_program(test::launcher(), {"--check", dir.write("sig.toml", "[pipeline]\nstop_signal = 15\n" + stages)}, 10s);
    INFO(sig.err);
    CHECK(sig.exit_code == 0);
    CHECK(sig.out.find("stop SIGTERM") != std::string::npos);
    const auto cap = test::run_program(
        test::launcher(),
        {"--check", dir.write("cap.toml", "[[queue]]\nname = \"q\"\ncapacity = 9223372036854775807\n" + stages)}, 10s);
    INFO(cap.err);
    CHECK(cap.exit_code == 1);
    CHECK(cap.err.find("cap.toml:3:") != std::string::npos);
    CHECK(cap.err.find("too large (at most 1 TiB)") != std::string::npos);
}

TEST_CASE("a stage that cannot start is reported as such, not as pid 0 exiting with 127", "[tools]") {
    const std::string name = test::unique_name("edge");
    TempDir dir;
    const std::string spec = dir.write("nocwd.toml", R"([[stage]]
name = "lost"
cmd = ["true"]
cwd = "/no/such/directory"
)");
    const auto r = test::launch(spec, name, {}, 30s);
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("stage \"lost\" replica 0 could not start") != std::string::npos);
    CHECK(r.err.find("pid 0") == std::string::npos);
    CHECK(r.err.find("exited with code 127") == std::string::npos);
    test::require_no_objects(name);
}
