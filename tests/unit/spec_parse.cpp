// Pipeline specs: reading, defaults, placeholders and each validation error with its line.
#include <shmpipe/error.hpp>
#include <shmpipe/spec.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

shmpipe::PipelineSpec parse(const std::string& text) {
    shmpipe::SpecOptions o;
    o.check_programs = false;
    return shmpipe::parse_spec(text, "t.toml", o);
}

std::string error_of(const std::string& text, bool programs = false) {
    shmpipe::SpecOptions o;
    o.check_programs = programs;
    try {
        (void)shmpipe::parse_spec(text, "t.toml", o);
    } catch (const shmpipe::Error& e) {
        CHECK(e.code() == shmpipe::make_error_code(shmpipe::errc::spec_error));
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("a full spec is read with every key", "[unit]") {
    const auto sut = parse(R"([pipeline]
name = "demo"
failure = "keep-going"
stop_signal = "SIGINT"
stop_timeout = "250ms"
drain_timeout = 3
[[queue]]
name = "nums"
capacity = "4MiB"
max_message = 128
[[stage]]
name = "gen"
cmd = ["seq", "1", "10"]
stdout = "nums"
stdout_format = "records"
[[stage]]
name = "work"
cmd = ["w", "{queue.nums}", "{queue.out}", "{stage}-{replica}/{replicas}", "{{x}}"]
inputs = ["nums"]
outputs = ["out"]
replicas = 4
restart = "on-failure"
max_restarts = 7
env = { MODE = "fast-{replica}" }
cwd = "/tmp"
stop_timeout = 1.5
critical = false
[[stage]]
name = "sink"
cmd = ["sort"]
stdin = "out"
stdout = "inherit"
)");
    CHECK(sut.name == "demo");
    CHECK(sut.failure == shmpipe::FailurePolicy::keep_going);
    CHECK(sut.stop_signal == 2);
    CHECK(sut.stop_timeout == 250ms);
    CHECK(sut.drain_timeout == 3000ms);
    REQUIRE(sut.queues.size() == 2);
    CHECK(sut.queues[0].capacity == 4u << 20);
    CHECK(sut.queues[0].max_message == 128);
    CHECK(sut.queues[1].name == "out");
    CHECK_FALSE(sut.queues[1].declared);
    const auto& w = *sut.find_stage("work");
    CHECK(w.replicas == 4);
    CHECK(w.restart == shmpipe::RestartPolicy::on_failure);
    CHECK(w.max_restarts == 7);
    CHECK(w.stop_timeout == 1500ms);
    CHECK_FALSE(w.critical);
    CHECK(sut.find_stage("gen")->stdout_format == shmpipe::StreamFormat::records);
    CHECK(sut.find_stage("gen")->is_source());
    CHECK_FALSE(w.is_source());

    const std::map<std::string, std::string> objects = {{"nums", "demo.r.nums"}, {"out", "demo.r.out"}};
    CHECK(shmpipe::expand_placeholders(w.cmd[1], w, 2, objects) == "demo.r.nums");
    CHECK(shmpipe::expand_placeholders(w.cmd[3], w, 2, objects) == "work-2/4");
    CHECK(shmpipe::expand_placeholders(w.cmd[4], w, 2, objects) == "{x}");
    CHECK(shmpipe::expand_placeholders(w.env.at("MODE"), w, 1, objects) == "fast-1");
    CHECK(shmpipe::queue_env_name("my-queue.2") == "SHMPIPE_QUEUE_MY_QUEUE_2");
}

TEST_CASE("sizes, durations and signals parse with units", "[unit]") {
    CHECK(shmpipe::parse_size("64") == 64);
    CHECK(shmpipe::parse_size("64k") == 65536);
    CHECK(shmpipe::parse_size("2 MiB") == 2u << 20);
    CHECK_THROWS_WITH(shmpipe::parse_size("2 parsecs"), Catch::Contains("unknown unit"));
    CHECK(shmpipe::parse_duration("250ms") == 250ms);
    CHECK(shmpipe::parse_duration("2m") == 120000ms);
    CHECK_THROWS_WITH(shmpipe::parse_duration("soon"), Catch::Contains("duration \"soon\""));
    CHECK(shmpipe::parse_signal("TERM") == 15);
    CHECK(shmpipe::parse_signal("sigkill") == 9);
    CHECK_THROWS(shmpipe::parse_signal("SIGNOPE"));
}

TEST_CASE("each validation error names the file, the line and the reason", "[unit]") {
    SECTION("TOML syntax") { CHECK_THAT(error_of("[[stage]\n"), Catch::StartsWith("t.toml:1:")); }
    SECTION("unknown top-level key") {
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"x\"]\n[extra]\n"),
                   Catch::StartsWith("t.toml:4: spec: unknown key \"extra\""));
    }
    SECTION("unknown stage key") {
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"x\"]\nreplica=2\n"),
                   Catch::StartsWith("t.toml:4: stage \"a\": unknown key \"replica\""));
    }
    SECTION("unknown queue key") {
        CHECK_THAT(error_of("[[queue]]\nname=\"q\"\nsize=3\n"), Catch::StartsWith("t.toml:3: [[queue]]: unknown key \"size\""));
    }
    SECTION("duplicate queue") {
        CHECK_THAT(error_of("[[queue]]\nname=\"q\"\n[[queue]]\nname=\"q\"\n"),
                   Catch::StartsWith("t.toml:4: duplicate queue name \"q\" (first declared on line 2)"));
    }
    SECTION("duplicate stage") {
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"x\"]\n[[stage]]\nname=\"a\"\ncmd=[\"x\"]\n"),
                   Catch::StartsWith("t.toml:5: duplicate stage name \"a\""));
    }
    SECTION("queue nobody writes") {
        CHECK_THAT(error_of("[[queue]]\nname=\"q\"\n[[stage]]\nname=\"a\"\ncmd=[\"x\"]\ninputs=[\"q\"]\n"),
                   Catch::StartsWith("t.toml:2: queue \"q\" is read but nobody writes it"));
    }
    SECTION("queue nobody reads") {
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"x\"]\noutputs=[\"q\"]\n"),
                   Catch::StartsWith("t.toml:2: queue \"q\" is written but nobody reads it"));
    }
    SECTION("declared queue nobody uses") {
        CHECK_THAT(error_of("[[queue]]\nname=\"q\"\n[[stage]]\nname=\"a\"\ncmd=[\"x\"]\n"),
                   Catch::Contains("queue \"q\" is read but nobody writes it (and nobody reads it)"));
    }
    SECTION("a stage reading what it writes") {
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"x\"]\ninputs=[\"q\"]\nstdout=\"q\"\n"),
                   Catch::Contains("stage \"a\" reads queue \"q\" that it also writes"));
    }
    SECTION("a cycle") {
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"x\"]\ninputs=[\"y\"]\noutputs=[\"x\"]\n"
                            "[[stage]]\nname=\"b\"\ncmd=[\"x\"]\ninputs=[\"x\"]\noutputs=[\"z\"]\n"
                            "[[stage]]\nname=\"c\"\ncmd=[\"x\"]\ninputs=[\"z\"]\noutputs=[\"y\"]\n"),
                   Catch::Contains("the pipeline has a cycle: a -> b -> c -> a"));
    }
    SECTION("a program that does not exist") {
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"no-such-program-xyz\"]\n", true),
                   Catch::StartsWith("t.toml:2: stage \"a\": program \"no-such-program-xyz\" was not found on PATH"));
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"./missing\"]\n", true),
                   Catch::Contains("program \"./missing\" does not exist"));
    }
    SECTION("a program that is not executable") {
        char path[] = "/tmp/spec-noexec-XXXXXX";
        const int fd = ::mkstemp(path);
        REQUIRE(fd >= 0);
        ::fchmod(fd, 0644);
        ::close(fd);
        const std::string msg = error_of("[[stage]]\nname=\"a\"\ncmd=[\"" + std::string(path) + "\"]\n", true);
        ::unlink(path);
        CHECK_THAT(msg, Catch::Contains("program \"" + std::string(path) + "\" is not an executable file"));
    }
    SECTION("an unknown placeholder") {
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"x\", \"{queue.nope}\"]\n"),
                   Catch::Contains("placeholder {queue.nope} names no queue"));
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"x\", \"{what}\"]\n"), Catch::Contains("unknown placeholder {what}"));
    }
    SECTION("bad values") {
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"x\"]\nreplicas=0\n"),
                   Catch::StartsWith("t.toml:4: stage \"a\": replicas = 0 is out of range"));
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[\"x\"]\nrestart=\"always\"\n"),
                   Catch::StartsWith("t.toml:4: stage \"a\": restart must be"));
        CHECK_THAT(error_of("[pipeline]\nname=\"a b\"\n[[stage]]\nname=\"a\"\ncmd=[\"x\"]\n"),
                   Catch::StartsWith("t.toml:2: [pipeline]: name:"));
        CHECK_THAT(error_of("[[stage]]\nname=\"a\"\ncmd=[]\n"), Catch::StartsWith("t.toml:3: stage \"a\": cmd must name a program"));
    }
}
