// Pipeline specs: sizes and durations out of range are errors that point at the line, never
// a wrapped product or an undefined float-to-integer conversion.
#include <shmpipe/error.hpp>
#include <shmpipe/spec.hpp>

#include <catch2/catch.hpp>

#include <string>

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
