// Placement in specs: [[host]] tables, stage hosts, the SpecGraph's crossing edges, and each
// placement error with its line and a hint.
#include <shmpipe/error.hpp>
#include <shmpipe/spec.hpp>
#include <shmpipe/spec_graph.hpp>

#include <catch2/catch.hpp>

#include <string>

namespace {

shmpipe::PipelineSpec parse(const std::string& text) {
    shmpipe::SpecOptions o;
    o.check_programs = false;
    return shmpipe::parse_spec(text, "t.toml", o);
}

std::string error_of(const std::string& text) {
    try {
        (void)parse(text);
    } catch (const shmpipe::Error& e) {
        CHECK(e.code() == shmpipe::make_error_code(shmpipe::errc::spec_error));
        return e.what();
    }
    return "(no error)";
}

const std::string kHosts = R"([[host]]
name = "a"
address = "tcp://10.0.0.1:7400"
[[host]]
name = "b"
address = "tcp://10.0.0.2:7400"
)";

// source@a -> tasks -> worker x3 @b -> results -> sink@a, plus a local queue on a.
const std::string kStages = R"([[stage]]
name = "source"
host = "a"
cmd = ["p"]
outputs = ["tasks", "local"]
[[stage]]
name = "worker"
host = "b"
cmd = ["p"]
inputs = ["tasks"]
outputs = ["results"]
replicas = 3
[[stage]]
name = "sink"
host = "a"
cmd = ["p"]
inputs = ["results", "local"]
)";

}  // namespace

TEST_CASE("a placed spec knows each stage's host and which queues cross hosts", "[unit]") {
    const auto spec = parse("[pipeline]\nheartbeat = \"100ms\"\ndead_after = \"1s\"\n" + kHosts + kStages);
    REQUIRE(spec.multi_host());
    CHECK(spec.heartbeat == std::chrono::milliseconds(100));
    CHECK(spec.dead_after == std::chrono::milliseconds(1000));
    CHECK(spec.find_stage("worker")->host == "b");
    const shmpipe::SpecGraph sut(spec);
    const auto crossing = sut.crossing();
    REQUIRE(crossing.size() == 2);
    CHECK(spec.queues[crossing[0]->queue].name == "tasks");
    CHECK(crossing[0]->writer_hosts == std::vector<std::string>{"a"});
    CHECK(crossing[0]->reader_hosts == std::vector<std::string>{"b"});
    CHECK(crossing[1]->producers == 3);
    CHECK_FALSE(sut.find("local")->crosses_hosts());
    CHECK(shmpipe::host_edge_address(*spec.find_host("b"), 0) == "tcp://10.0.0.2:7401");
    CHECK(shmpipe::host_edge_address(*spec.find_host("a"), 1) == "tcp://10.0.0.1:7402");
    // Consumers first: sink before worker before source.
    const auto order = sut.start_order();
    REQUIRE(order.size() == 3);
    CHECK(spec.stages[order[0]].name == "sink");
    CHECK(spec.stages[order[2]].name == "source");
    const std::string text = shmpipe::describe_spec(spec);
    CHECK_THAT(text, Catch::Contains("tasks: a -> b (received at b tcp://10.0.0.2:7401)"));
    CHECK_THAT(text, Catch::Contains("results: b -> a (received at a tcp://10.0.0.1:7402)"));
}

TEST_CASE("a spec without hosts has no crossing edge and refuses a stage host", "[unit]") {
    const auto spec = parse(R"([[stage]]
name = "s"
cmd = ["p"]
stdout = "q"
[[stage]]
name = "t"
cmd = ["p"]
stdin = "q"
)");
    CHECK_FALSE(spec.multi_host());
    CHECK(shmpipe::SpecGraph(spec).crossing().empty());
    CHECK_THAT(error_of("[[stage]]\nname = \"s\"\nhost = \"a\"\ncmd = [\"p\"]\n"),
               Catch::Contains("t.toml:2: stage \"s\" names host \"a\" but the spec declares no [[host]]"));
}

TEST_CASE("each placement error names the line, the host and a hint", "[unit]") {
    SECTION("a stage without a host") {
        std::string stages = kStages;
        stages.erase(stages.find("host = \"b\"\n"), 11);
        CHECK_THAT(error_of(kHosts + stages),
                   Catch::Contains("stage \"worker\" has no host (the spec declares hosts a, b; add host = \"...\")"));
    }
    SECTION("an unknown host") {
        std::string stages = kStages;
        stages.replace(stages.find("host = \"b\""), 10, "host = \"c\"");
        CHECK_THAT(error_of(kHosts + stages), Catch::Contains("stage \"worker\": unknown host \"c\" (declared: a, b)"));
    }
    SECTION("a duplicate host") {
        CHECK_THAT(error_of(kHosts + "[[host]]\nname = \"a\"\naddress = \"tcp://10.0.0.3:7400\"\n" + kStages),
                   Catch::Contains("t.toml:8: duplicate host name \"a\" (first declared on line 2)"));
    }
    SECTION("an address that is not tcp://IP:PORT") {
        std::string hosts = kHosts;
        hosts.replace(hosts.find("tcp://10.0.0.2:7400"), 19, "10.0.0.2");
        CHECK_THAT(error_of(hosts + kStages), Catch::Contains("host \"b\": address \"10.0.0.2\" must be \"tcp://IP:PORT\""));
    }
    SECTION("a host without an address") {
        CHECK_THAT(error_of("[[host]]\nname = \"a\"\n" + kStages), Catch::Contains("[[host]]: missing key \"address\""));
    }
    SECTION("a bridged queue both written and read on one host") {
        const std::string extra = R"([[stage]]
name = "local_reader"
host = "a"
cmd = ["p"]
inputs = ["tasks"]
)";
        CHECK_THAT(error_of(kHosts + kStages + extra),
                   Catch::Contains("queue \"tasks\" crosses hosts but is both written and read on host \"a\""));
    }
    SECTION("Curve keys that miss a host") {
        CHECK_THAT(error_of("[pipeline]\ncurve_secret_file = \"k/{host}\"\ncurve_public_keys = { a = \"" +
                            std::string(40, 'x') + "\" }\n" + kHosts + kStages),
                   Catch::Contains("curve_public_keys has no key for host \"b\""));
    }
    SECTION("dead_after not longer than heartbeat") {
        CHECK_THAT(error_of("[pipeline]\nheartbeat = \"1s\"\ndead_after = \"1s\"\n" + kHosts + kStages),
                   Catch::Contains("dead_after (1000 ms) must be longer than heartbeat (1000 ms)"));
    }
}
