// Pipe edges: a line queue between exactly one ordinary writer and one ordinary reader (no
// replicas, no restarts) becomes a pipe the launcher relays. It gives the shell's bytes, is
// counted in the summary, has no shared-memory object, and a run that lost lines on it or was
// stopped never exits 0, whichever end is killed.
#include "launch_testing.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <csignal>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace test = shmpipe::test;
using namespace std::chrono_literals;
using test::start_launcher;
using test::summary_of;
using test::TempDir;

namespace {

const boost::json::object& edge_of(const boost::json::object& summary, const std::string& name) {
    for (const auto& q : summary.at("queues").as_array()) {
        if (q.at("name") == name.c_str()) return q.as_object();
    }
    FAIL("no queue \"" << name << "\" in the summary");
    throw;  // not reached
}

std::uint64_t number(const boost::json::object& o, const char* key) { return o.at(key).to_number<std::uint64_t>(); }

// gen -> nums -> sink, both ordinary programs, one replica each: a pipe edge.
std::string two_stage_spec(const TempDir& dir, const std::string& gen, const std::string& sink,
                           const std::string& sink_extra = {}) {
    return dir.write("pipe.toml", "[pipeline]\nstop_timeout = \"2s\"\n[[stage]]\nname = \"gen\"\ncmd = " + gen +
                                      "\nstdout = \"nums\"\n[[stage]]\nname = \"sink\"\ncmd = " + sink +
                                      "\nstdin = \"nums\"\nstdout = \"inherit\"\n" + sink_extra);
}

// Waits until `pidfile` names `n` processes; FAILs naming what it awaited.
void await_pids(const std::string& pidfile, std::size_t n) {
    if (!test::wait_until([&] { return test::pids_in(pidfile).size() >= n; }, 30s)) {
        FAIL("the stages did not write " << n << " pids to " << pidfile << " within 30 s");
    }
}

// `seq` to a reader that discards, each writing its pid to its own file; returns the spec.
std::string endless_spec(const TempDir& dir, const std::string& sink_extra = {}) {
    return two_stage_spec(dir, R"(["sh", "-c", "echo $$ > )" + dir.file("gen.pid") + R"(; exec seq 1 1000000000"])",
                          R"(["sh", "-c", "echo $$ > )" + dir.file("sink.pid") + R"(; exec cat > /dev/null"])",
                          sink_extra);
}

// The pids of both ends of endless_spec, once both wrote them.
std::pair<int, int> await_both(const TempDir& dir) {
    await_pids(dir.file("gen.pid"), 1);
    await_pids(dir.file("sink.pid"), 1);
    return {test::pids_in(dir.file("gen.pid")).front(), test::pids_in(dir.file("sink.pid")).front()};
}

}  // namespace

TEST_CASE("a pipe edge gives the shell's output, has no object and counts every line and byte", "[tools]") {
    TempDir dir;
    const std::string name = test::unique_name("pipe");
    // The sink waits before reading, so the run is surely under way when the objects are listed.
    const std::string spec = dir.write("grep.toml", R"([pipeline]
[[stage]]
name = "gen"
cmd = ["seq", "1", "100000"]
stdout = "nums"
[[stage]]
name = "grep"
cmd = ["grep", "7$"]
stdin = "nums"
stdout = "hits"
success_codes = [0, 1]
[[stage]]
name = "sink"
cmd = ["sh", "-c", "echo $$ >> )" + dir.file("pids") + R"(; sleep 0.5; exec sort -n"]
stdin = "hits"
stdout = "inherit"
)");
    test::Peer sut = start_launcher(dir, name, spec);
    await_pids(dir.file("pids"), 1);
    CHECK(test::shm_objects_with_prefix(name + ".").empty());  // neither edge is a queue
    const int code = sut.wait_or_throw(60s, "pipeline-launch to finish the pipe-edge pipeline");
    INFO(test::read_file(dir.file("err")));
    CHECK(code == 0);
    std::string expected;
    std::uint64_t nums_bytes = 0;
    for (unsigned i = 1; i <= 100000; ++i) {
        const std::string line = std::to_string(i) + "\n";
        nums_bytes += line.size();
        if (i % 10 == 7) expected += line;
    }
    CHECK(test::read_file(dir.file("out")) == expected);
    const auto summary = summary_of(dir);
    const auto& nums = edge_of(summary, "nums");
    CHECK(nums.at("pipe") == true);
    CHECK(nums.at("object").is_null());
    CHECK(number(nums, "messages_in") == 100000);  // lines
    CHECK(number(nums, "messages_out") == 100000);
    CHECK(number(nums, "bytes_out") == nums_bytes);
    const auto& hits = edge_of(summary, "hits");
    CHECK(number(hits, "messages_out") == 10000);
    CHECK(number(hits, "bytes_out") == expected.size());
    CHECK(test::read_file(dir.file("err")).find("pipe  nums") != std::string::npos);  // the summary names it a pipe
    test::require_no_objects(name);
}

TEST_CASE("a pipe edge keeps empty lines and ends a last line without a newline like a queue does", "[tools]") {
    TempDir dir;
    const std::string name = test::unique_name("pipe");
    const auto r = test::launch(two_stage_spec(dir, R"(["printf", 'a\n\n\001\377\n\nlast'])", R"(["cat"])"), name,
                                {"-q", "--summary-json", dir.file("s.json")});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out == "a\n\n\001\377\n\nlast\n");
    CHECK(number(edge_of(summary_of(dir), "nums"), "messages_out") == 5);
}

TEST_CASE("SIGKILL of a pipe edge's writer fails the run and stops its reader", "[tools]") {
    TempDir dir;
    const std::string name = test::unique_name("pipe");
    test::Peer sut = start_launcher(dir, name, endless_spec(dir));
    const auto [writer, reader] = await_both(dir);
    REQUIRE(::kill(writer, SIGKILL) == 0);
    const int code = sut.wait_or_throw(60s, "pipeline-launch to end after its writer was killed");
    const std::string err = test::read_file(dir.file("err"));
    INFO(err);
    CHECK(code == 1);
    CHECK(err.find("stage \"gen\" replica 0 (pid " + std::to_string(writer) + ") was killed by signal 9") !=
          std::string::npos);
    CHECK(summary_of(dir).at("success") == false);
    CHECK(test::all_dead({writer, reader}));
    test::require_no_objects(name);
}

TEST_CASE("SIGKILL of a pipe edge's reader fails the run and counts what it was given as lost", "[tools]") {
    TempDir dir;
    const std::string name = test::unique_name("pipe");
    // Not critical: its death alone would not fail the run, the lost lines do.
    test::Peer sut = start_launcher(dir, name, endless_spec(dir, "critical = false\n"));
    const auto [writer, reader] = await_both(dir);
    std::this_thread::sleep_for(200ms);  // lines flowing
    REQUIRE(::kill(reader, SIGKILL) == 0);
    const int code = sut.wait_or_throw(60s, "pipeline-launch to end after its reader was killed");
    const std::string err = test::read_file(dir.file("err"));
    INFO(err);
    CHECK(code == 1);
    const auto summary = summary_of(dir);
    CHECK(summary.at("success") == false);
    CHECK(number(summary, "lost") > 0);
    CHECK(number(summary, "lost") >= number(edge_of(summary, "nums"), "messages_out"));
    CHECK(err.find("failed after reading from pipe edge \"nums\"") != std::string::npos);
    CHECK(test::all_dead({writer, reader}));
    test::require_no_objects(name);
}

TEST_CASE("a pipe edge's reader that ends before its input did is a loss, never an exit 0", "[tools]") {
    TempDir dir;
    const std::string name = test::unique_name("pipe");
    const auto r = test::launch(two_stage_spec(dir, R"(["seq", "1", "10000000"])", R"(["head", "-n", "1"])"), name,
                                {"--summary-json", dir.file("s.json")});
    INFO(r.err);
    CHECK(r.out == "1\n");
    CHECK(r.exit_code == 1);
    CHECK(summary_of(dir).at("success") == false);
    CHECK(r.err.find("ended before its input on pipe edge \"nums\" did") != std::string::npos);
    test::require_no_objects(name);
}

TEST_CASE("SIGTERM to the launcher stops both ends of a pipe edge with the ladder and exits 143", "[tools]") {
    TempDir dir;
    const std::string name = test::unique_name("pipe");
    test::Peer sut = start_launcher(dir, name, endless_spec(dir));
    const auto [writer, reader] = await_both(dir);
    sut.signal(SIGTERM);
    const int code = sut.wait_or_throw(60s, "pipeline-launch to stop on SIGTERM");
    INFO(test::read_file(dir.file("err")));
    CHECK(code == 128 + SIGTERM);
    const auto summary = summary_of(dir);
    CHECK(summary.at("stopped") == true);
    CHECK(summary.at("success") == false);
    CHECK(test::all_dead({writer, reader}));
    test::require_no_objects(name);
}

TEST_CASE("SIGINT drains a pipe edge: the reader gets every whole line the writer printed, the run exits 130",
          "[tools]") {
    TempDir dir;
    const std::string name = test::unique_name("pipe");
    test::Peer sut = start_launcher(
        dir, name,
        two_stage_spec(dir, R"(["sh", "-c", "echo $$ > )" + dir.file("gen.pid") + R"(; exec seq 1 1000000000"])",
                       R"(["sh", "-c", "echo $$ > )" + dir.file("sink.pid") + R"(; exec cat"])"));
    const auto [writer, reader] = await_both(dir);
    std::this_thread::sleep_for(100ms);  // lines flowing
    sut.signal(SIGINT);
    const int code = sut.wait_or_throw(60s, "pipeline-launch to drain on SIGINT");
    INFO(test::read_file(dir.file("err")));
    CHECK(code == 128 + SIGINT);
    const auto summary = summary_of(dir);
    CHECK(summary.at("ending") == "drained");
    CHECK(number(summary, "lost") == 0);
    // The output is 1..k, every line whole (a line cut by the writer's death is dropped).
    std::istringstream out(test::read_file(dir.file("out")));
    std::uint64_t k = 0;
    std::string line;
    bool in_order = true;
    while (std::getline(out, line)) in_order = in_order && line == std::to_string(++k);
    CHECK(in_order);
    CHECK(k == number(edge_of(summary, "nums"), "messages_out"));
    CHECK(test::read_file(dir.file("out")).back() == '\n');
    CHECK(test::all_dead({writer, reader}));
    test::require_no_objects(name);
}
