// The asyncio examples (examples/asyncio/) run to success: each checks its own results
// (every job done once, each loop step seen) and exits 0 only then.
#include "test_catch.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <string>

using namespace shmpipe;
using namespace std::chrono_literals;

TEST_CASE("The asyncio examples run and check their own results", "[tools]") {
    const std::string example = GENERATE("asyncio_queue_workers", "asyncio_loop_basics");
    INFO(example);
    const auto r = test::run_program(test::bin_path(example), {}, 60s);
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
}
