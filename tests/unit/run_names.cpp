// Run object names (<pipeline>.<run>.<queue>): what Graph composes, the metrics exporter
// splits back into its pipeline, and names of any other shape are left alone.
#include <shmpipe/detail/run_names.hpp>

#include <catch2/catch.hpp>

using namespace shmpipe::detail;

TEST_CASE("a name composed with a default run id splits back into its parts", "[unit]") {
    const std::string run = default_run_id(12345, 0x1abcdu);
    CHECK(run == "12345-abcd");
    const auto sut = split_run_object_name(run_object_name("fanout", run, "tasks"));
    REQUIRE(sut);
    CHECK(sut->pipeline == "fanout");
    CHECK(sut->run == "12345-abcd");
    CHECK(sut->queue == "tasks");
}

TEST_CASE("dotted pipeline and queue names split at the run id", "[unit]") {
    const auto sut = split_run_object_name("my.pipe.77-0f0f.out.v2");
    REQUIRE(sut);
    CHECK(sut->pipeline == "my.pipe");
    CHECK(sut->queue == "out.v2");
}

TEST_CASE("names without a default run id have no pipeline", "[unit]") {
    CHECK_FALSE(split_run_object_name("frames"));
    CHECK_FALSE(split_run_object_name("demo.frames.x"));          // no run id part
    CHECK_FALSE(split_run_object_name("p.12-abc.q"));             // 3 hex digits
    CHECK_FALSE(split_run_object_name("p.12-abcde.q"));           // 5 hex digits
    CHECK_FALSE(split_run_object_name("p.x2-abcd.q"));            // not a pid
    CHECK_FALSE(split_run_object_name("12-abcd.q"));              // nothing before the run id
    CHECK_FALSE(split_run_object_name("p.12-abcd."));             // nothing after it
    CHECK_FALSE(split_run_object_name("p.12-abcd"));
    CHECK(is_default_run_id("1-0000"));
    CHECK_FALSE(is_default_run_id("-abcd"));
    CHECK_FALSE(is_default_run_id("12-ghij"));
}
