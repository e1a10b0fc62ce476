// A Pool whose parent is SIGKILLed leaves no segment behind (its guardian removes both
// queues), and a default Pool's queues are sized to the pool, not 32 MiB each.
#include "pool_testing.hpp"
#include "test_support.hpp"

#include <shmpipe/object.hpp>
#include <shmpipe/process.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

using namespace std::chrono_literals;
namespace test = shmpipe::test;


TEST_CASE("A SIGKILLed pool parent leaves no segment behind, each time", "[multiprocess]") {
    for (int run = 0; run < 5; ++run) {
        shmpipe::ProcessOptions opt;
        opt.out = shmpipe::Redirect::pipe();
        opt.daemon = true;  // the test kills it; on a failed check it must not be waited for
        shmpipe::Process parent(shmpipe::Command{test::peer_path("process_peer"), {"pool", "2"}}, opt);
        REQUIRE(test::start_pool_parent(parent).size() == 2);
        const std::string prefix = "pool-" + std::to_string(parent.pid()) + "-";
        const auto objects = test::shm_objects_with_prefix(prefix);
        INFO("run " << run << ", objects of " << prefix);
        REQUIRE(objects.size() == 2);
        for (const auto& n : objects) {
            struct stat st{};
            REQUIRE(::stat(("/dev/shm/shmpipe." + n).c_str(), &st) == 0);
            // 16 messages of the default 256 KiB, plus headers: far below the old 32 MiB.
            CHECK(st.st_size < 5 * 1024 * 1024);
        }

        parent.kill();
        REQUIRE(parent.join_for(10s));
        const bool removed = test::wait_until([&] { return test::shm_objects_with_prefix(prefix).empty(); }, 10s);
        for (const auto& n : test::shm_objects_with_prefix(prefix)) shmpipe::remove(n);
        if (!removed) FAIL("the pool's guardian did not remove " << prefix << "* within 10 s of its parent's SIGKILL");
    }
}
