// restart = "on-failure" never hides a loss: a replica SIGKILLed mid-stream has its unread
// input re-delivered and what it had taken counted as lost, reported, and the run fails
// unless the spec says on_loss = "warn". Each scenario runs 5 times: the outcome is decided
// by the launcher's accounting, not by which process noticed the death first.
#include "launch_testing.hpp"

#include <shmpipe/queue.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <csignal>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace test = shmpipe::test;
using namespace std::chrono_literals;
using test::start_launcher;
using test::summary_of;
using test::TempDir;

namespace {

constexpr int kRuns = 5;

// What `object` has delivered so far: messages_out or bytes_out (0 before it exists).
std::uint64_t delivered(const std::string& object, std::uint64_t shmpipe::QueueStats::*what) {
    try {
        return shmpipe::Queue::open(object).stats().*what;
    } catch (const shmpipe::Error&) {
        return 0;
    }
}

// Waits until `object` has delivered `n` messages (or bytes: a queue between line adapters
// carries batches of lines) and `pidfile` names `replicas` processes, then SIGKILLs the
// first; FAILs naming what it awaited.
void kill_one_replica_mid_stream(const std::string& object, std::uint64_t n, const std::string& pidfile,
                                 std::size_t replicas,
                                 std::uint64_t shmpipe::QueueStats::*what = &shmpipe::QueueStats::messages_out) {
    const bool flowing = test::wait_until(
        [&] { return test::pids_in(pidfile).size() >= replicas && delivered(object, what) >= n; }, 30s);
    const char* unit = what == &shmpipe::QueueStats::bytes_out ? " bytes" : " messages";
    if (!flowing) FAIL("queue " << object << " did not deliver " << n << unit << " to " << replicas << " replicas within 30 s");
    const int victim = test::pids_in(pidfile).front();
    REQUIRE(::kill(victim, SIGKILL) == 0);
}

std::uint64_t restarts_of(const boost::json::object& summary, const std::string& stage) {
    std::uint64_t n = 0;
    for (const auto& r : summary.at("stages").as_array()) {
        if (r.at("stage") == stage.c_str()) n += r.at("restarts").to_number<std::uint64_t>();
    }
    return n;
}

// seq 1 N | grep '7$' (3 replicas, restart on failure) | sort -n
std::string grep_spec(const TempDir& dir, unsigned count, const std::string& on_loss) {
    return dir.write("grep.toml", "[pipeline]\non_loss = \"" + on_loss + R"("
[[stage]]
name = "gen"
cmd = ["seq", "1", ")" + std::to_string(count) + R"("]
stdout = "nums"
[[stage]]
name = "grep"
cmd = ["sh", "-c", "echo $$ >> )" + dir.file("pids") + R"(; exec grep '7$'"]
stdin = "nums"
stdout = "hits"
replicas = 3
restart = "on-failure"
success_codes = [0, 1]
[[stage]]
name = "sink"
cmd = ["sort", "-n"]
stdin = "hits"
stdout = "inherit"
)");
}

}  // namespace

TEST_CASE("a killed grep replica: unread input goes to its replacement, what it read counts as lost, exit 1",
          "[tools]") {
    constexpr unsigned kCount = 3'000'000;
    int runs_with_loss = 0;
    for (int run = 0; run < kRuns; ++run) {
        INFO("run " << run);
        const std::string name = test::unique_name("loss");
        TempDir dir;
        const std::string spec = grep_spec(dir, kCount, "fail");
        test::Peer sut = start_launcher(dir, name, spec);
        kill_one_replica_mid_stream(name + ".r.nums", 1'400'000, dir.file("pids"), 3, &shmpipe::QueueStats::bytes_out);
        const int code = sut.wait_or_throw(120s, "pipeline-launch to finish after a grep replica was killed");
        const std::string err = test::read_file(dir.file("err"));
        INFO(err);
        const auto summary = summary_of(dir);
        REQUIRE(restarts_of(summary, "grep") == 1);  // killed mid-stream, not after its end

        // What came out: no duplicate, nothing outside the input, and every missing line is
        // within what the launcher counted as lost.
        std::istringstream out(test::read_file(dir.file("out")));
        std::set<unsigned> seen;
        std::size_t lines = 0, foreign = 0;
        for (unsigned v; out >> v; ++lines) {
            foreign += v % 10 != 7 || v > kCount ? 1 : 0;  // a cut-off line would show here
            seen.insert(v);
        }
        CHECK(foreign == 0);
        CHECK(seen.size() == lines);
        const std::uint64_t missing = kCount / 10 - seen.size();
        const std::uint64_t lost = summary.at("lost").to_number<std::uint64_t>();
        CHECK(missing <= lost);
        CHECK(err.find("was killed by signal 9 (SIGKILL); restarting (1 of 3)") != std::string::npos);
        if (lost > 0) {
            ++runs_with_loss;
            CHECK(code == 1);
            CHECK(summary.at("success") == false);
            CHECK(err.find("counted as lost") != std::string::npos);
            CHECK(err.find("messages were lost by replicas that failed") != std::string::npos);
        } else {
            // Killed before it had read anything from its pipe (everything it was given went
            // to its replacement): nothing is missing, and a run that lost nothing succeeds.
            CHECK(missing == 0);
            CHECK(code == 0);
        }
        test::require_no_objects(name);
    }
    CHECK(runs_with_loss > 0);  // the loss path itself was exercised
}

TEST_CASE("on_loss = \"warn\" reports the loss and exits 0", "[tools]") {
    constexpr unsigned kCount = 3'000'000;
    const std::string name = test::unique_name("loss");
    TempDir dir;
    test::Peer sut = start_launcher(dir, name, grep_spec(dir, kCount, "warn"));
    kill_one_replica_mid_stream(name + ".r.nums", 1'400'000, dir.file("pids"), 3, &shmpipe::QueueStats::bytes_out);
    const int code = sut.wait_or_throw(120s, "pipeline-launch to finish after a grep replica was killed");
    const std::string err = test::read_file(dir.file("err"));
    INFO(err);
    const auto summary = summary_of(dir);
    REQUIRE(restarts_of(summary, "grep") == 1);
    CHECK(code == 0);
    CHECK(summary.at("success") == true);
    CHECK(summary.at("lost").to_number<std::uint64_t>() > 0);
    CHECK(err.find("counted as lost") != std::string::npos);
    CHECK(err.find("lost (on_loss = \"warn\")") != std::string::npos);
    test::require_no_objects(name);
}

TEST_CASE("a killed native worker's claimed message counts as lost; the outcome follows the count", "[tools]") {
    constexpr unsigned kCount = 2'000'000;
    for (int run = 0; run < kRuns; ++run) {
        INFO("run " << run);
        const std::string name = test::unique_name("loss");
        TempDir dir;
        const std::string spec = test::native_pool_spec(
            dir, "pool.toml", "", kCount,
            R"(["sh", "-c", "echo $$ >> )" + dir.file("pids") + "; exec " + test::bin_path("worker") +
                R"( {queue.tasks} {queue.results}"])",
            3, "restart = \"on-failure\"\n");
        test::Peer sut = start_launcher(dir, name, spec);
        kill_one_replica_mid_stream(name + ".r.results", 100'000, dir.file("pids"), 3);
        const int code = sut.wait_or_throw(120s, "pipeline-launch to finish after a worker was killed");
        const std::string err = test::read_file(dir.file("err"));
        const std::string out = test::read_file(dir.file("out"));
        INFO(err << out);
        const auto summary = summary_of(dir);
        REQUIRE(restarts_of(summary, "worker") == 1);
        unsigned long long collected = 0, sum = 0;
        REQUIRE(std::sscanf(out.substr(out.find("collected")).c_str(), "collected %llu results, sum %llu", &collected,
                            &sum) == 2);
        const std::uint64_t lost = summary.at("lost").to_number<std::uint64_t>();
        CHECK(collected <= kCount);
        CHECK(collected + lost >= kCount);  // nothing lost silently
        CHECK(lost <= 1);                   // one claim per dead consumer
        // The exit status follows the launcher's count, whoever saw the death first.
        CHECK(code == (lost != 0 ? 1 : 0));
        CHECK(summary.at("success") == (lost == 0));
        if (lost != 0) CHECK(err.find("failed holding message") != std::string::npos);
        test::require_no_objects(name);
    }
}
