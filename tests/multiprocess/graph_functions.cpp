// shmpipe::Graph built in code: function stages with replicas, command stages mixed in,
// end of stream, fail-fast, and no objects left behind.
#include "test_support.hpp"

#include <shmpipe/graph.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>

#include <chrono>
#include <cstdio>
#include <fcntl.h>
#include <unistd.h>

namespace test = shmpipe::test;
using namespace std::chrono_literals;

namespace {

// Quiet graphs: reports and stage output go to /dev/null (SHMPIPE_TEST_VERBOSE=1: to the
// test's own stdout/stderr, for debugging).
shmpipe::GraphOptions quiet_options() {
    if (std::getenv("SHMPIPE_TEST_VERBOSE") != nullptr) return {};
    static const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    shmpipe::GraphOptions o;
    o.out_fd = null_fd;
    o.err_fd = null_fd;
    return o;
}

// Runs the graph to its end with a deadline: past it, the graph is killed (and joined) and
// the test fails naming what was awaited.
shmpipe::GraphResult run_within(shmpipe::Graph& sut, std::chrono::milliseconds timeout, const std::string& what) {
    sut.start();
    if (!sut.join_for(timeout)) {
        sut.kill();
        const bool ended = sut.join_for(10s);
        FAIL("graph \"" << sut.spec().name << "\" did not finish within " << timeout.count() << " ms: awaited " << what
                         << (ended ? "" : " (and it did not end after kill either)"));
    }
    return sut.join();
}

}  // namespace

TEST_CASE("a graph of function stages moves every message through a pool", "[multiprocess]") {
    const std::string name = test::unique_name("graph");
    shmpipe::Graph sut(name, quiet_options());
    sut.queue({.name = "tasks", .capacity = 1 << 16, .max_message = 64});
    sut.queue({.name = "results", .capacity = 1 << 16, .max_message = 64});
    sut.stage("source", [](const shmpipe::StageContext& c) {
        shmpipe::Producer<std::uint64_t> tx(c.queue("tasks"));
        for (std::uint64_t i = 1; i <= 100000; ++i) tx.push(i);
        return 0;
    }, {.outputs = {"tasks"}});
    sut.stage("double", [](const shmpipe::StageContext& c) {
        shmpipe::Consumer<std::uint64_t> rx(c.queue("tasks"));
        shmpipe::Producer<std::uint64_t> tx(c.queue("results"));
        while (auto v = rx.pop()) tx.push(*v * 2);
        return 0;
    }, {.inputs = {"tasks"}, .outputs = {"results"}, .replicas = 3});
    sut.stage("check", [](const shmpipe::StageContext& c) {
        shmpipe::Consumer<std::uint64_t> rx(c.queue("results"));
        std::uint64_t sum = 0, n = 0;
        while (auto v = rx.pop()) {
            sum += *v;
            ++n;
        }
        return n == 100000 && sum == 100000ull * 100001ull ? 0 : 5;
    }, {.inputs = {"results"}});
    const auto result = run_within(sut, 60s, "100000 messages through source -> 3 workers -> check");
    INFO(result.summary());
    CHECK(result.success);
    CHECK(result.ending == shmpipe::GraphEnding::completed);
    REQUIRE(result.replicas.size() == 5);
    for (const auto& r : result.replicas) CHECK(r.exit_code == 0);
    CHECK(result.queues[0].messages_out == 100000);
    CHECK(test::shm_objects_with_prefix(name).empty());
}

TEST_CASE("a failing function stage stops the graph and is named", "[multiprocess]") {
    const std::string name = test::unique_name("graph");
    shmpipe::Graph sut(name, quiet_options());
    sut.stage("forever", [](const shmpipe::StageContext& c) {
        shmpipe::Consumer<std::uint64_t> rx(c.queue("q"));
        while (rx.pop()) {
        }
        return 0;
    }, {.inputs = {"q"}});
    sut.stage("breaks", [](const shmpipe::StageContext& c) {
        shmpipe::Producer<std::uint64_t> tx(c.queue("q"));
        tx.push(1);
        ::usleep(100000);
        return 9;
    }, {.outputs = {"q"}});
    const auto result = run_within(sut, 30s, "fail-fast to stop \"forever\" after \"breaks\" exits 9");
    CHECK_FALSE(result.success);
    CHECK(result.ending == shmpipe::GraphEnding::failed);
    CHECK_THAT(result.failure, Catch::Contains("stage \"breaks\" replica 0") && Catch::Contains("exited with code 9"));
    CHECK(test::shm_objects_with_prefix(name).empty());
}

TEST_CASE("a graph can mix command stages with adapters and function stages", "[multiprocess]") {
    const std::string name = test::unique_name("graph");
    shmpipe::Graph sut(name, quiet_options());
    sut.stage({.name = "gen", .cmd = {"seq", "1", "1000"}, .stdout_queue = "lines"});
    sut.stage("count", [](const shmpipe::StageContext& c) {
        shmpipe::Consumer<> rx(c.queue("lines"));
        std::uint64_t n = 0, sum = 0;
        while (auto m = rx.pop()) {
            ++n;
            sum += std::stoull(std::string(reinterpret_cast<const char*>(m->data()), m->size()));
        }
        return n == 1000 && sum == 500500 ? 0 : 7;
    }, {.inputs = {"lines"}});
    const auto result = run_within(sut, 30s, "seq 1 1000 through the stdout adapter to \"count\"");
    INFO(result.summary());
    CHECK(result.success);
    CHECK(test::shm_objects_with_prefix(name).empty());
}

TEST_CASE("join_for gives up on a running graph, which then still ends cleanly", "[multiprocess]") {
    const std::string name = test::unique_name("graph");
    shmpipe::Graph sut(name, quiet_options());
    sut.stage("sleeper", [](const shmpipe::StageContext& c) {
        shmpipe::Producer<std::uint64_t> tx(c.queue("q"));
        ::sleep(30);
        return 0;
    }, {.outputs = {"q"}});
    sut.stage("sink", [](const shmpipe::StageContext& c) {
        shmpipe::Consumer<std::uint64_t> rx(c.queue("q"));
        while (rx.pop()) {
        }
        return 0;
    }, {.inputs = {"q"}});
    sut.start();
    CHECK_FALSE(sut.join_for(200ms));
    CHECK_FALSE(sut.join_for(0.1s));  // any duration, as Python writes it
    sut.terminate();
    REQUIRE(sut.join_for(std::chrono::duration<double>(20.5)));
    const auto result = sut.join();
    CHECK(result.ending == shmpipe::GraphEnding::terminated);
    CHECK(test::shm_objects_with_prefix(name).empty());
}

TEST_CASE("a stdin stage that exits early does not kill the process with SIGPIPE", "[multiprocess]") {
    const std::string name = test::unique_name("graph");
    // No SIGPIPE handler or SIG_IGN here: Graph used as a library must cope on its own.
    struct sigaction old {};
    ::sigaction(SIGPIPE, nullptr, &old);
    REQUIRE(old.sa_handler == SIG_DFL);
    shmpipe::Graph sut(name, quiet_options());
    sut.queue({.name = "lines", .capacity = 1 << 20, .max_message = 256});
    sut.stage("gen", [](const shmpipe::StageContext& c) {
        shmpipe::Producer<std::string> tx(c.queue("lines"));
        const std::string line(200, 'x');
        try {
            for (int i = 0; i < 200000; ++i) tx.push(line);
        } catch (const shmpipe::Error&) {
            return 0;  // the reader side went away: expected here
        }
        return 0;
    }, {.outputs = {"lines"}});
    // Reads one line, then exits: the adapter's next writes hit a closed pipe (EPIPE).
    sut.stage({.name = "early", .cmd = {"head", "-n", "1"}, .stdin_queue = "lines", .stdout_queue = ""});
    const auto result = run_within(sut, 60s, "the stdin adapter of \"early\" to stop after EPIPE");
    INFO(result.summary());
    bool seen = false;
    for (const auto& r : result.replicas) {
        if (r.stage != "early") continue;
        seen = true;
        CHECK(r.exit_code == 0);
    }
    CHECK(seen);
    CHECK(test::shm_objects_with_prefix(name).empty());
}

TEST_CASE("a drain requested before start still starts the consumers and ends drained", "[multiprocess]") {
    const std::string name = test::unique_name("graph");
    shmpipe::Graph sut(name, quiet_options());
    sut.stage("source", [](const shmpipe::StageContext& c) {
        shmpipe::Producer<std::uint64_t> tx(c.queue("tasks"));
        for (std::uint64_t i = 0;; ++i) tx.push(i);
        return 0;
    }, {.outputs = {"tasks"}});
    sut.stage("work", [](const shmpipe::StageContext& c) {
        shmpipe::Consumer<std::uint64_t> rx(c.queue("tasks"));
        shmpipe::Producer<std::uint64_t> tx(c.queue("results"));
        while (auto v = rx.pop()) tx.push(*v);
        return 0;
    }, {.inputs = {"tasks"}, .outputs = {"results"}, .replicas = 2});
    sut.stage("sink", [](const shmpipe::StageContext& c) {
        shmpipe::Consumer<std::uint64_t> rx(c.queue("results"));
        while (rx.pop()) {
        }
        return 0;
    }, {.inputs = {"results"}});
    // Ctrl-C during start(): the drain begins before the first replica starts, so the
    // source is skipped; its queue must still see end of stream (before: the workers waited
    // for it until drain_timeout and the run ended "terminated").
    sut.drain();
    const auto result = run_within(sut, 30s, "end of stream to flow with the source skipped");
    INFO(result.summary());
    CHECK(result.ending == shmpipe::GraphEnding::drained);
    CHECK(result.success);
    for (const auto& r : result.replicas) {
        INFO("stage " << r.stage << "." << r.replica);
        if (r.stage == "source") {
            CHECK_FALSE(r.exit_code.has_value());  // never started
        } else {
            CHECK(r.exit_code == 0);
        }
    }
    CHECK(test::shm_objects_with_prefix(name).empty());
}
