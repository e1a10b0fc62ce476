// shmpipe::Graph built in code: function stages with replicas, command stages mixed in,
// end of stream, fail-fast, and no objects left behind.
#include "test_support.hpp"

#include <shmpipe/graph.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <cstdio>
#include <fcntl.h>
#include <unistd.h>

namespace test = shmpipe::test;

namespace {

// Quiet graphs: reports and stage output go to /dev/null.
shmpipe::GraphOptions quiet_options() {
    static const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    shmpipe::GraphOptions o;
    o.out_fd = null_fd;
    o.err_fd = null_fd;
    return o;
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
    const auto result = sut.run();
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
    const auto result = sut.run();
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
    const auto result = sut.run();
    INFO(result.summary());
    CHECK(result.success);
    CHECK(test::shm_objects_with_prefix(name).empty());
}
