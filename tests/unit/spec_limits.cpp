// Pipeline specs are untrusted input: sizes and durations out of range are errors that point
// at the line, never a wrapped product or an undefined float-to-integer conversion; files
// that are not regular or too large, and keys too deep, are refused before parsing.
#include <shmpipe/error.hpp>
#include <shmpipe/spec.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

std::string error_of(const std::string& text) {
    shmpipe::SpecOptions o;
    o.check_programs = false;
    try {
        (void)shmpipe::parse_spec(text, "t.toml", o);
    } catch (const shmpipe::Error& e) {
        CHECK(e.code() == shmpipe::make_error_code(shmpipe::errc::spec_error));
        return e.what();
    }
    return "(no error)";
}

std::string with_queue_capacity(const std::string& value) {
    return "[pipeline]\nname = \"p\"\n[[queue]]\nname = \"q\"\ncapacity = " + value +
           "\n[[stage]]\nname = \"a\"\ncmd = [\"x\"]\noutputs = [\"q\"]\n[[stage]]\nname = \"b\"\ncmd = [\"y\"]\ninputs = [\"q\"]\n";
}

}  // namespace

TEST_CASE("a size whose unit product overflows is refused, not wrapped", "[unit]") {
    // 17179869185 GiB = 2^64 + 2^30 bytes: it used to wrap to 1 GiB.
    CHECK_THROWS_WITH(shmpipe::parse_size("17179869185GiB"), Catch::Contains("too large"));
    CHECK_THROWS_WITH(shmpipe::parse_size("1025GiB"), Catch::Contains("too large"));
    CHECK_THROWS_WITH(shmpipe::parse_size("99999999999999999999999"), Catch::Contains("too large"));
    CHECK(shmpipe::parse_size("1024GiB") == std::size_t{1} << 40);
    CHECK(shmpipe::parse_size("1099511627776") == std::size_t{1} << 40);
}

TEST_CASE("a size out of range in a spec points at its line", "[unit]") {
    const std::string err = error_of(with_queue_capacity("\"17179869185GiB\""));
    CHECK_THAT(err, Catch::Contains("t.toml:5:") && Catch::Contains("capacity") && Catch::Contains("too large"));
}

TEST_CASE("a duration too large for milliseconds is refused", "[unit]") {
    CHECK_THROWS_WITH(shmpipe::parse_duration("1e300s"), Catch::Contains("out of range"));
    CHECK_THROWS_WITH(shmpipe::parse_duration("1e300m"), Catch::Contains("out of range"));
    CHECK_THROWS_WITH(shmpipe::parse_duration("inf"), Catch::Contains("out of range"));
    CHECK_THROWS(shmpipe::parse_duration("nan"));
    CHECK(shmpipe::parse_duration("1e9s") == std::chrono::milliseconds(1'000'000'000'000));
}

TEST_CASE("durations out of range in a spec point at their line", "[unit]") {
    SECTION("a huge float") {
        const std::string err = error_of("[pipeline]\nname = \"p\"\nstop_timeout = 1e300\n");
        CHECK_THAT(err, Catch::Contains("t.toml:3:") && Catch::Contains("stop_timeout") &&
                            Catch::Contains("out of range"));
    }
    SECTION("a huge integer number of seconds") {
        const std::string err = error_of("[pipeline]\nname = \"p\"\n\ndrain_timeout = 9223372036854775807\n");
        CHECK_THAT(err, Catch::Contains("t.toml:4:") && Catch::Contains("drain_timeout") &&
                            Catch::Contains("out of range"));
    }
    SECTION("infinity") {
        const std::string err = error_of("[pipeline]\nname = \"p\"\nstop_timeout = inf\n");
        CHECK_THAT(err, Catch::Contains("t.toml:3:") && Catch::Contains("stop_timeout"));
    }
}

TEST_CASE("an integer capacity over 1 TiB is refused like a string one", "[unit]") {
    const std::string err = error_of(with_queue_capacity("9223372036854775807"));
    CHECK_THAT(err, Catch::Contains("t.toml:5:") && Catch::Contains("capacity") && Catch::Contains("too large"));
}

TEST_CASE("stop_signal may be a number, and a bad one names its line once", "[unit]") {
    shmpipe::SpecOptions o;
    o.check_programs = false;
    const std::string stage = "[[stage]]\nname = \"a\"\ncmd = [\"x\"]\n";
    CHECK(shmpipe::parse_spec("[pipeline]\nstop_signal = 15\n" + stage, "t.toml", o).stop_signal == 15);
    CHECK(shmpipe::parse_spec("[pipeline]\nstop_signal = \"SIGINT\"\n" + stage, "t.toml", o).stop_signal == 2);
    const std::string bad = error_of("[pipeline]\nstop_signal = 99\n" + stage);
    CHECK_THAT(bad, Catch::StartsWith("t.toml:2:") && Catch::Contains("out of range"));
    const std::string unknown = error_of("[pipeline]\nstop_signal = \"SIGNOPE\"\n" + stage);
    CHECK_THAT(unknown, Catch::StartsWith("t.toml:2:") && Catch::Contains("unknown signal"));
    CHECK(unknown.find("t.toml", 1) == std::string::npos);  // the location once
    const std::string typed = error_of("[pipeline]\nstop_signal = true\n" + stage);
    CHECK(typed.find("t.toml", 1) == std::string::npos);
}

TEST_CASE("on_loss is fail by default, warn on request, anything else refused", "[unit]") {
    shmpipe::SpecOptions o;
    o.check_programs = false;
    const std::string stage = "[[stage]]\nname = \"a\"\ncmd = [\"x\"]\n";
    CHECK(shmpipe::parse_spec(stage, "t.toml", o).on_loss == shmpipe::LossPolicy::fail);
    CHECK(shmpipe::parse_spec("[pipeline]\non_loss = \"warn\"\n" + stage, "t.toml", o).on_loss == shmpipe::LossPolicy::warn);
    CHECK_THAT(error_of("[pipeline]\non_loss = \"ignore\"\n" + stage), Catch::StartsWith("t.toml:2:"));
}

TEST_CASE("a 40 000-part dotted key is refused before toml++ recurses over it", "[unit]") {
    std::string key = "a";
    for (int i = 1; i < 40000; ++i) key += ".a";
    const std::string err = error_of("[pipeline]\nname = \"p\"\n" + key + " = 1\n");
    CHECK_THAT(err, Catch::StartsWith("t.toml:3:") && Catch::Contains("more than 64 parts"));
    const std::string header = error_of("[" + key + "]\n");
    CHECK_THAT(header, Catch::StartsWith("t.toml:1:") && Catch::Contains("more than 64 parts"));
    // Dots inside strings and comments, and floats, are not key parts.
    shmpipe::SpecOptions o;
    o.check_programs = false;
    std::string dots = "\"";
    for (int i = 0; i < 100; ++i) dots += "a.";
    dots += "\"";
    CHECK_NOTHROW(shmpipe::parse_spec("# " + key.substr(0, 400) + "\n[pipeline]\nname = \"p\"\nstop_timeout = 1.5\n"
                                      "[[stage]]\nname = \"a\"\ncmd = [\"x\", " + dots + "]\n",
                                      "t.toml", o));
}

TEST_CASE("spec text over 16 MiB is refused before parsing", "[unit]") {
    const std::string big = "# " + std::string(std::size_t{16} << 20, 'x') + "\n";
    CHECK_THAT(error_of(big), Catch::Contains("larger than the 16 MiB"));
}

TEST_CASE("names echoed in errors are capped", "[unit]") {
    const std::string long_name(100000, 'q');
    const std::string err = error_of("[[stage]]\nname = \"a\"\ncmd = [\"x\"]\nstdin = \"" + long_name + "\"\n");
    CHECK(err.size() < 1000);
    const std::string dup = error_of("[[stage]]\nname = \"" + long_name + "\"\ncmd = [\"x\"]\n[[stage]]\nname = \"" +
                                     long_name + "\"\ncmd = [\"x\"]\n");
    CHECK_THAT(dup, Catch::Contains("duplicate stage name") && Catch::Contains("(100000 bytes)"));
    CHECK(dup.size() < 1000);
    const std::string stage = error_of("[[stage]]\nname = \"" + long_name + "\"\ncmd = [\"x\"]\n");
    CHECK_THAT(stage, Catch::Contains("must be 1-200 characters") && Catch::Contains("(100000 bytes)"));
    CHECK(stage.size() < 1000);
}

TEST_CASE("load_spec refuses what is not a regular file, and a file over 16 MiB", "[unit]") {
    CHECK_THROWS_WITH(shmpipe::load_spec("/dev/zero"), Catch::Contains("not a regular file"));
    CHECK_THROWS_WITH(shmpipe::load_spec("/"), Catch::Contains("not a regular file"));
    char path[] = "/tmp/spec-limits-XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, (std::int64_t{16} << 20) + 1) == 0);
    ::close(fd);
    CHECK_THROWS_WITH(shmpipe::load_spec(path), Catch::Contains("larger than the 16 MiB"));
    ::unlink(path);
}
