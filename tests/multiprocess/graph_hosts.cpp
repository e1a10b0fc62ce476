// shmpipe::Graph with placement (GraphOptions::host): only this host's stages run, only the
// queues with an end here exist, and a bridged queue has exactly one end for its bridge, which
// the test plays itself (pipeline-launch runs a net::Sender or net::Receiver there).
#include "test_support.hpp"

#include <shmpipe/error.hpp>
#include <shmpipe/graph.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <fcntl.h>
#include <unistd.h>

namespace test = shmpipe::test;
using namespace std::chrono_literals;

namespace {

shmpipe::GraphOptions options_for(const std::string& host) {
    static const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    shmpipe::GraphOptions o;
    o.out_fd = null_fd;
    o.err_fd = null_fd;
    o.host = host;
    return o;
}

// source@a -> "tasks" (bridged) -> sink@b; "local" stays on a (source -> tally@a).
void build(shmpipe::Graph& g) {
    g.host({.name = "a", .address = "tcp://127.0.0.1:7400"});
    g.host({.name = "b", .address = "tcp://127.0.0.1:7410"});
    g.queue({.name = "tasks", .capacity = 1 << 16, .max_message = 64});
    g.queue({.name = "local", .capacity = 1 << 16, .max_message = 64});
    g.stage("source", [](const shmpipe::StageContext& c) {
        shmpipe::Producer<std::uint64_t> tx(c.queue("tasks"));
        shmpipe::Producer<std::uint64_t> local(c.queue("local"));
        for (std::uint64_t i = 1; i <= 1000; ++i) {
            tx.push(i);
            local.push(i);
        }
        return 0;
    }, {.outputs = {"tasks", "local"}, .host = "a"});
    g.stage("tally", [](const shmpipe::StageContext& c) {
        shmpipe::Consumer<std::uint64_t> rx(c.queue("local"));
        std::uint64_t n = 0;
        while (rx.pop()) ++n;
        return n == 1000 ? 0 : 1;
    }, {.inputs = {"local"}, .host = "a"});
    g.stage("sink", [](const shmpipe::StageContext&) { return 9; }, {.inputs = {"tasks"}, .host = "b"});
}

}  // namespace

TEST_CASE("a graph placed on hosts runs only this host's stages, with the bridged queue's far end left to the bridge",
          "[multiprocess]") {
    const std::string name = test::unique_name("ghosts");
    shmpipe::Graph sut(name, options_for("a"));
    build(sut);
    sut.start();
    // The test is host a's bridge: the one consumer of "tasks" (sink runs on host b, not here).
    shmpipe::Consumer<std::uint64_t> bridge(sut.queue_object("tasks"));
    std::uint64_t sum = 0, n = 0;
    while (auto v = bridge.pop()) {
        sum += *v;
        ++n;
    }
    REQUIRE(sut.join_for(30s));
    const auto result = sut.join();
    CHECK(result.success);
    CHECK(result.host == "a");
    CHECK(n == 1000);
    CHECK(sum == 500500);
    REQUIRE(result.replicas.size() == 2);  // source and tally; sink is host b's
    for (const auto& r : result.replicas) CHECK(r.stage != "sink");
    CHECK(test::shm_objects_with_prefix(name).empty());
}

TEST_CASE("on the reading host the bridged queue waits for one producer per writing host", "[multiprocess]") {
    const std::string name = test::unique_name("ghostsb");
    shmpipe::Graph sut(name, options_for("b"));
    build(sut);
    sut.start();
    CHECK_THROWS_AS(sut.queue_object("local"), shmpipe::Error);  // both its ends are on a
    {
        shmpipe::Producer<std::uint64_t> bridge(sut.queue_object("tasks"));  // host a's sender, as the receiver pushes it
        bridge.push(1);
    }
    REQUIRE(sut.join_for(30s));
    const auto result = sut.join();
    CHECK_FALSE(result.success);  // sink exits 9: a failure on host b, named
    CHECK(result.failure.find("stage \"sink\" replica 0") != std::string::npos);
    CHECK(test::shm_objects_with_prefix(name).empty());
}

TEST_CASE("a placed graph needs its host, and refuses one the spec does not declare", "[multiprocess]") {
    for (const std::string host : {"", "c"}) {
        shmpipe::Graph sut(test::unique_name("ghostsx"), options_for(host));
        build(sut);
        try {
            sut.start();
            FAIL("start() accepted host \"" << host << "\"");
        } catch (const shmpipe::Error& e) {
            CHECK(e.code() == shmpipe::make_error_code(shmpipe::errc::spec_error));
            CHECK(std::string(e.what()).find(host.empty() ? "say which one this is" : "unknown host \"c\"") != std::string::npos);
        }
    }
}
