// The bridge status record's reader (tools/common/bridge_status) treats the object as
// untrusted: a record that shrinks under it is refused, naming the object, and never kills
// the reading process (the same SIGBUS guard as the queue inspector's copy).
#include "bridge_status.hpp"

#include <shmpipe/error.hpp>
#include <shmpipe/object.hpp>

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <fcntl.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

TEST_CASE("a bridge status record shrinking while it is read is refused naming the object, never a crash", "[unit]") {
    test::ShmGuard guard;
    const std::string queue = guard.add(test::unique_name("bridge-shrink"));
    const std::string object = guard.add(bridge_status::object_name(queue));
    bridge_status::BridgeStatusWriter writer(queue, true, {"b", "c"});
    writer.update({bridge_status::PeerStatus{.host = "b", .credits = 5, .messages = 7, .up = true}});
    const int fd = ::shm_open(("/" + segment_name(object)).c_str(), O_RDWR | O_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    const auto full = static_cast<std::size_t>(st.st_size);
    REQUIRE(full > 4096);  // the record lives past the header page
    std::vector<char> saved(full);
    REQUIRE(::pread(fd, saved.data(), full, 0) == static_cast<ssize_t>(full));
    std::atomic<bool> stop{false};
    std::thread shrinker([&] {
        while (!stop.load()) {
            (void)!::ftruncate(fd, 4096);  // keeps the header page, drops the record
            std::this_thread::sleep_for(200us);
            (void)!::ftruncate(fd, static_cast<off_t>(full));  // back, zero-filled: restore the record
            (void)!::pwrite(fd, saved.data(), full, 0);
            std::this_thread::sleep_for(200us);
        }
    });
    int shown = 0, sigbus = 0, refused = 0;
    std::string unexpected;
    const auto start = std::chrono::steady_clock::now();
    while (unexpected.empty() && (std::chrono::steady_clock::now() - start < 500ms || sigbus == 0) &&
           std::chrono::steady_clock::now() - start < 20s) {
        try {
            const auto sut = bridge_status::read(queue);
            if (!sut || sut->peers.size() != 2 || sut->peers[0].messages != 7) {
                unexpected = "a record that is not the one written";
            }
            ++shown;
        } catch (const Error& e) {
            const std::string what = e.what();
            if (e.code() != make_error_code(errc::corrupt) || what.find("\"" + object + "\"") == std::string::npos) {
                unexpected = what;
            }
            ++(what.find("shrank while being read (SIGBUS)") != std::string::npos ? sigbus : refused);
        }
    }
    stop = true;
    shrinker.join();
    ::close(fd);

    INFO("shown " << shown << ", refused " << refused << ", of which by SIGBUS " << sigbus);
    CHECK(unexpected.empty());
    CHECK(shown > 0);
    CHECK(sigbus > 0);  // the guard was exercised: without it this process would have died
}
