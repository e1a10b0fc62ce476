// pipeline-launch through the real binary: the examples, failures, signals, restarts, specs.
#include "launch_testing.hpp"

#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <string>
#include <vector>

namespace test = shmpipe::test;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

using test::all_dead;
using test::behave;
using test::launch;
using test::launcher;
using test::pids_in;
using test::read_file;
using test::require_no_objects;
using test::TempDir;

TEST_CASE("pipeline-launch --help prints usage and exits 0", "[tools]") {
    const auto r = test::run_program(launcher(), {"--help"}, 10s);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("--check") != std::string::npos);
    CHECK(r.out.find("--summary-json") != std::string::npos);
    CHECK(r.out.find("130 Ctrl-C, 143 SIGTERM") != std::string::npos);  // a stopped run is never 0
}

TEST_CASE("pipeline-launch with a bad argument exits 2 with an error line", "[tools]") {
    const auto r = test::run_program(launcher(), {"--no-such-option", test::source_path("examples/writer_reader.toml")}, 10s);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("pipeline-launch: error:") != std::string::npos);
}

TEST_CASE("pipeline-launch without a spec exits 2", "[tools]") {
    const auto r = test::run_program(launcher(), {}, 10s);
    CHECK(r.exit_code == 2);
}

TEST_CASE("the writer-reader example moves every message in order", "[tools]") {
    const std::string name = test::unique_name("launch");
    const auto r = launch(test::source_path("examples/writer_reader.toml"), name);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("reader.0 | read 1000000 messages, sum 500000500000\n") != std::string::npos);
    CHECK(r.out.find("writer.0 | wrote 1000000 messages\n") != std::string::npos);
    require_no_objects(name);
}

TEST_CASE("the fan-out pool example gives the sum of squares", "[tools]") {
    const std::string name = test::unique_name("launch");
    TempDir dir;
    const auto r = launch(test::source_path("examples/fanout_pool.toml"), name, {"--summary-json", dir.file("s.json")});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == "collector.0 | collected 1000000 results, sum 333333833333500000\n");
    const std::string json = read_file(dir.file("s.json"));
    CHECK(json.find("\"ending\":\"completed\"") != std::string::npos);
    CHECK(json.find("\"name\":\"tasks\"") != std::string::npos);
    CHECK(json.find("\"messages_out\":1000000") != std::string::npos);
    require_no_objects(name);
}

TEST_CASE("the Unix-program pipeline prints what the shell pipeline prints", "[tools]") {
    const std::string name = test::unique_name("launch");
    const auto shell = test::run_program("/bin/sh", {"-c", "seq 1 200000 | grep '7$' | sort -n"}, 30s);
    REQUIRE(shell.exit_code == 0);
    const auto r = launch(test::source_path("examples/unix_pipeline.toml"), name);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out.size() == shell.out.size());
    CHECK(r.out == shell.out);
    require_no_objects(name);
}

TEST_CASE("a stage that exits 1 fails the run, named, and stops the others", "[tools]") {
    const std::string name = test::unique_name("launch");
    TempDir dir;
    const std::string pidfile = dir.file("pids");
    const std::string spec = dir.write("fail.toml", R"([pipeline]
name = "x"
stop_timeout = "2s"
[[stage]]
name = "src"
cmd = [")" + behave() + R"(", "pidfile", ")" + pidfile + R"("]
stdout = "q"
[[stage]]
name = "sink"
cmd = ["cat"]
stdin = "q"
replicas = 2
[[stage]]
name = "bad"
cmd = [")" + behave() + R"(", "exit", "1", "300"]
)");
    const auto r = launch(spec, name, {}, 30s);
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("stage \"bad\" replica 0") != std::string::npos);
    CHECK(r.err.find("exited with code 1") != std::string::npos);
    CHECK(r.err.find("pipeline-launch: error: stage \"bad\" replica 0") != std::string::npos);
    CHECK(r.err.find("bad.0 | stage_behave: exiting with 1") != std::string::npos);
    const auto pids = pids_in(pidfile);
    CHECK(pids.size() == 1);
    CHECK(test::wait_until([&] { return all_dead(pids); }, 5s));
    require_no_objects(name);
}

TEST_CASE("a stage killed by SIGKILL fails the run, named with the signal", "[tools]") {
    const std::string name = test::unique_name("launch");
    TempDir dir;
    const std::string spec = dir.write("kill.toml", R"([[stage]]
name = "victim"
cmd = [")" + behave() + R"(", "signal", "9", "200"]
stdout = "q"
[[stage]]
name = "sink"
cmd = ["cat"]
stdin = "q"
)");
    const auto r = launch(spec, name, {}, 30s);
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("stage \"victim\" replica 0") != std::string::npos);
    CHECK(r.err.find("was killed by signal 9 (SIGKILL)") != std::string::npos);
    require_no_objects(name);
}

TEST_CASE("a failing replica restarts on failure and the stream continues", "[tools]") {
    const std::string name = test::unique_name("launch");
    TempDir dir;
    const std::string spec = dir.write("restart.toml", R"([[stage]]
name = "flaky"
cmd = [")" + behave() + R"(", "flaky", ")" + dir.file("marker") + R"(", "10"]
stdout = "q"
restart = "on-failure"
max_restarts = 2
[[stage]]
name = "sink"
cmd = ["cat"]
stdin = "q"
stdout = "inherit"
)");
    const auto r = launch(spec, name, {"--summary-json", dir.file("s.json")}, 30s);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n");
    CHECK(r.err.find("restarting (1 of 2)") != std::string::npos);
    CHECK(read_file(dir.file("s.json")).find("\"restarts\":1") != std::string::npos);
    require_no_objects(name);
}

TEST_CASE("a stage that is not critical dies alone", "[tools]") {
    const std::string name = test::unique_name("launch");
    TempDir dir;
    const std::string spec = dir.write("side.toml", R"([[stage]]
name = "gen"
cmd = ["seq", "1", "5"]
stdout = "q"
[[stage]]
name = "sink"
cmd = ["cat"]
stdin = "q"
stdout = "inherit"
[[stage]]
name = "side"
cmd = [")" + behave() + R"(", "exit", "4"]
critical = false
)");
    const auto r = launch(spec, name, {}, 30s);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == "1\n2\n3\n4\n5\n");
    CHECK(r.err.find("stage \"side\" replica 0") != std::string::npos);
    require_no_objects(name);
}

namespace {

// A native pool that runs until stopped: source (infinite) -> 2 workers -> collector.
std::string endless_pool(const TempDir& dir) {
    return test::native_pool_spec(dir, "endless.toml", "[pipeline]\nstop_timeout = \"2s\"\n", 0,
                                  R"([")" + test::bin_path("worker") + R"(", "{queue.tasks}", "{queue.results}"])", 2);
}

}  // namespace

TEST_CASE("Ctrl-C once drains: sources stop, end of stream flows, exit 130 says it was stopped", "[tools]") {
    const std::string name = test::unique_name("launch");
    TempDir dir;
    const std::string spec = endless_pool(dir);
    test::Peer sut(launcher(), {"--name", name, "--no-status", "-q", "--summary-json", dir.file("s.json"), spec});
    REQUIRE(test::wait_until([&] { return test::shm_objects_with_prefix(name).size() == 2; }, 30s));
    // Messages flow through the whole graph: the collector has taken some results.
    std::string results;
    for (const auto& o : test::shm_objects_with_prefix(name)) {
        if (o.size() > 8 && o.compare(o.size() - 8, 8, ".results") == 0) results = o;
    }
    REQUIRE_FALSE(results.empty());
    const bool flowing = test::wait_until(
        [&] {
            try {
                return shmpipe::Queue::open(results).stats().messages_out > 0;
            } catch (const shmpipe::Error&) {
                return false;
            }
        },
        30s);
    if (!flowing) FAIL("no message reached the collector through queue " << results << " within 30 s");
    sut.signal(SIGINT);
    const int code = sut.wait_or_throw(60s, "pipeline-launch to drain after one SIGINT");
    CHECK(code == 128 + SIGINT);  // a clean drain is still a stopped run: its output is partial
    const std::string json = read_file(dir.file("s.json"));
    INFO(json);
    CHECK(json.find("\"ending\":\"drained\"") != std::string::npos);
    CHECK(json.find("\"success\":true") != std::string::npos);  // every stage did its part
    CHECK(json.find("\"stopped\":true") != std::string::npos);
    CHECK(json.find("\"stop_signal\":\"SIGINT\"") != std::string::npos);
    CHECK(json.find("\"stage\":\"collector\",\"replica\":0,") != std::string::npos);
    CHECK(json.find("\"failed\":true") == std::string::npos);
    require_no_objects(name);
}

TEST_CASE("Ctrl-C twice terminates a stage that ignores the drain", "[tools]") {
    const std::string name = test::unique_name("launch");
    TempDir dir;
    const std::string pidfile = dir.file("pids");
    const std::string spec = dir.write("stubborn.toml", R"([pipeline]
stop_timeout = "1s"
drain_timeout = "60s"
[[stage]]
name = "stubborn"
cmd = [")" + behave() + R"(", "ignore-term", ")" + pidfile + R"("]
stdout = "q"
[[stage]]
name = "sink"
cmd = ["cat"]
stdin = "q"
replicas = 2
)");
    test::Peer sut(launcher(), {"--name", name, "--no-status", "-q", "--summary-json", dir.file("s.json"), spec});
    REQUIRE(test::wait_until([&] { return pids_in(pidfile).size() == 1; }, 10s));
    sut.signal(SIGINT);
    std::this_thread::sleep_for(300ms);
    CHECK(sut.running());  // the drain waits for the stubborn source
    sut.signal(SIGINT);
    const int code = sut.wait_or_throw(20s, "pipeline-launch to terminate after two SIGINTs");
    CHECK(code == 128 + SIGINT);
    CHECK(read_file(dir.file("s.json")).find("\"ending\":\"terminated\"") != std::string::npos);
    CHECK(test::wait_until([&] { return all_dead(pids_in(pidfile)); }, 5s));
    require_no_objects(name);
}

TEST_CASE("Ctrl-C three times kills at once", "[tools]") {
    const std::string name = test::unique_name("launch");
    TempDir dir;
    const std::string pidfile = dir.file("pids");
    const std::string spec = dir.write("stubborn.toml", R"([pipeline]
stop_timeout = "60s"
drain_timeout = "60s"
[[stage]]
name = "stubborn"
cmd = [")" + behave() + R"(", "ignore-term", ")" + pidfile + R"("]
outputs = ["q"]
[[stage]]
name = "sink"
cmd = [")" + behave() + R"(", "ignore-term", ")" + pidfile + R"("]
inputs = ["q"]
)");
    test::Peer sut(launcher(), {"--name", name, "--no-status", "-q", "--summary-json", dir.file("s.json"), spec});
    REQUIRE(test::wait_until([&] { return pids_in(pidfile).size() == 2; }, 10s));
    for (int i = 0; i < 3; ++i) {
        sut.signal(SIGINT);
        std::this_thread::sleep_for(100ms);
    }
    const int code = sut.wait_or_throw(10s, "pipeline-launch to kill after three SIGINTs");
    CHECK(code == 128 + SIGINT);
    CHECK(read_file(dir.file("s.json")).find("\"ending\":\"killed\"") != std::string::npos);
    CHECK(test::wait_until([&] { return all_dead(pids_in(pidfile)); }, 5s));
    require_no_objects(name);
}

TEST_CASE("SIGTERM terminates the run and exits 143", "[tools]") {
    const std::string name = test::unique_name("launch");
    TempDir dir;
    const std::string pidfile = dir.file("pids");
    const std::string spec = dir.write("term.toml", R"([[stage]]
name = "a"
cmd = [")" + behave() + R"(", "pidfile", ")" + pidfile + R"("]
replicas = 3
)");
    // Through `sh -c 'exec ... 2>FILE'` to keep its stderr (the summary): same pid.
    test::Peer sut("/bin/sh", {"-c", "exec \"$0\" \"$@\" 2>" + dir.file("err"), launcher(), "--name", name,
                               "--no-status", "--summary-json", dir.file("s.json"), spec});
    REQUIRE(test::wait_until([&] { return pids_in(pidfile).size() == 3; }, 10s));
    sut.signal(SIGTERM);
    CHECK(sut.wait_or_throw(20s, "pipeline-launch to terminate on SIGTERM") == 128 + SIGTERM);
    const std::string json = read_file(dir.file("s.json"));
    CHECK(json.find("\"ending\":\"terminated\"") != std::string::npos);
    CHECK(json.find("\"stop_signal\":\"SIGTERM\"") != std::string::npos);
    const std::string err = read_file(dir.file("err"));
    INFO(err);
    CHECK(err.find("terminated in") != std::string::npos);
    CHECK(err.find("stopped by SIGTERM") != std::string::npos);
    CHECK(test::wait_until([&] { return all_dead(pids_in(pidfile)); }, 5s));
}

TEST_CASE("a launcher killed with SIGKILL leaves no process and, soon, no object", "[tools]") {
    const std::string name = test::unique_name("launch");
    TempDir dir;
    const std::string pidfile = dir.file("pids");
    const std::string spec = dir.write("orphans.toml", R"([[stage]]
name = "src"
cmd = [")" + behave() + R"(", "pidfile", ")" + pidfile + R"("]
outputs = ["q"]
replicas = 2
[[stage]]
name = "dst"
cmd = [")" + behave() + R"(", "ignore-term", ")" + pidfile + R"("]
inputs = ["q"]
replicas = 2
)");
    test::Peer sut(launcher(), {"--name", name, "--no-status", spec});
    REQUIRE(test::wait_until([&] { return pids_in(pidfile).size() == 4; }, 10s));
    REQUIRE(test::shm_objects_with_prefix(name).size() == 1);
    sut.signal(SIGKILL);
    CHECK(sut.wait_or_throw(5s, "pipeline-launch to die of SIGKILL") == -SIGKILL);
    const auto pids = pids_in(pidfile);
    INFO("stage pids must die with the launcher (parent-death signal)");
    CHECK(test::wait_until([&] { return all_dead(pids); }, 5s));
    INFO("the guardian removes the run's objects");
    CHECK(test::wait_until([&] { return test::shm_objects_with_prefix(name).empty(); }, 5s));
    test::ShmGuard guard;
    for (const auto& n : test::shm_objects_with_prefix(name)) guard.add(n);
}

TEST_CASE("pipeline-launch --check validates and prints the graph without running it", "[tools]") {
    const auto r = test::run_program(launcher(), {"--check", test::source_path("examples/unix_pipeline.toml")}, 10s);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("matches: capacity 1048576 B, max_message 256 B, 4 expected producers; grep x4 -> sort x1") !=
          std::string::npos);
    CHECK(r.out.find("spec OK") != std::string::npos);
}

TEST_CASE("a malformed spec is refused with the line and the reason", "[tools]") {
    TempDir dir;
    struct Case {
        const char* what;
        std::string toml;
        std::string message;
    };
    const std::vector<Case> cases = {
        {"unknown key", "[[stage]]\nname = \"a\"\ncmd = [\"true\"]\nreplica = 2\n", ":4: stage \"a\": unknown key \"replica\""},
        {"duplicate stage", "[[stage]]\nname = \"a\"\ncmd = [\"true\"]\n[[stage]]\nname = \"a\"\ncmd = [\"true\"]\n",
         ":5: duplicate stage name \"a\" (first declared on line 2)"},
        {"nobody writes", "[[stage]]\nname = \"a\"\ncmd = [\"cat\"]\nstdin = \"q\"\n", "queue \"q\" is read but nobody writes it"},
        {"nobody reads", "[[queue]]\nname = \"q\"\n[[stage]]\nname = \"a\"\ncmd = [\"seq\", \"3\"]\nstdout = \"q\"\n",
         ":2: queue \"q\" is written but nobody reads it"},
        {"self loop", "[[stage]]\nname = \"a\"\ncmd = [\"cat\"]\nstdin = \"q\"\nstdout = \"q\"\n",
         "stage \"a\" reads queue \"q\" that it also writes"},
        {"missing program", "[[stage]]\nname = \"a\"\ncmd = [\"no-such-program-xyz\"]\n",
         ":2: stage \"a\": program \"no-such-program-xyz\" was not found on PATH"},
        {"cycle",
         "[[stage]]\nname = \"a\"\ncmd = [\"cat\"]\nstdin = \"x\"\nstdout = \"y\"\n[[stage]]\nname = \"b\"\ncmd = [\"cat\"]\n"
         "stdin = \"y\"\nstdout = \"x\"\n",
         "the pipeline has a cycle: a -> b -> a"},
        {"syntax", "[[stage]\nname = \"a\"\n", ":1: "},
    };
    for (const auto& c : cases) {
        SECTION(c.what) {
            const std::string spec = dir.write("bad.toml", c.toml);
            const auto r = test::run_program(launcher(), {"--check", spec}, 10s);
            INFO(r.err);
            CHECK(r.exit_code == 1);
            CHECK(r.err.find("pipeline-launch: error: " + spec) != std::string::npos);
            CHECK(r.err.find(c.message) != std::string::npos);
        }
    }
}

TEST_CASE("a stage that exits but leaves a child holding its output does not hang the run", "[tools]") {
    const std::string name = test::unique_name("launch");
    TempDir dir;
    const std::string pidfile = dir.file("leftover");
    // sh starts a background sleep that inherits stdout and stderr, then becomes `true` and
    // exits 0: the pipes stay open as long as the sleep lives, in the stage's process group.
    const std::string spec = dir.write("leftover.toml", R"([pipeline]
stop_timeout = "1s"
[[stage]]
name = "leaver"
cmd = ["sh", "-c", "sleep 100 & echo $! > )" + pidfile + R"(; exec true"]
)");
    const auto r = launch(spec, name, {}, 60s);
    INFO(r.err);
    CHECK(r.exit_code == 0);
    const auto pids = pids_in(pidfile);
    REQUIRE(pids.size() == 1);
    INFO("leftover sleep pid " << pids[0]);
    CHECK(test::wait_until([&] { return all_dead(pids); }, 10s));
    require_no_objects(name);
}
