// Creating, opening and attaching to queues: every misuse gets a clear shmpipe::Error that
// names the queue, and nothing is left in /dev/shm.
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/detail/segment.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <sys/stat.h>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

// The Error thrown by f (fails the test when f does not throw one).
template <class F>
Error error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e;
    }
    FAIL("expected a shmpipe::Error");
    throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("Names outside [A-Za-z0-9._-] are refused naming the bad character", "[unit]") {
    const std::string base = test::unique_name("badname");
    SECTION("a slash") {
        const auto e = error_of([&] { Queue::create(base + "/x"); });
        CHECK(e.code() == errc::invalid_name);
        CHECK_THAT(e.what(), Catch::Contains("'/'") && Catch::Contains("position"));
    }
    SECTION("a space, in a producer") {
        const auto e = error_of([&] { Producer<int> sut(base + " x"); });
        CHECK(e.code() == errc::invalid_name);
        CHECK_THAT(e.what(), Catch::Contains("' '"));
    }
    SECTION("a non-ASCII byte, in a consumer") {
        const auto e = error_of([&] { Consumer<int> sut(base + "\xc3\xa9"); });
        CHECK(e.code() == errc::invalid_name);
        CHECK_THAT(e.what(), Catch::Contains("0xc3"));
    }
    SECTION("empty and too long names") {
        CHECK(error_of([] { Queue::create(""); }).code() == errc::invalid_name);
        const auto e = error_of([] { Queue::open(std::string(201, 'a')); });
        CHECK(e.code() == errc::invalid_name);
        CHECK_THAT(e.what(), Catch::Contains("201"));
    }
    SECTION("remove of a bad name returns false and never throws") {
        std::error_code ec;
        CHECK_FALSE(shmpipe::remove("a/b", ec));
        CHECK(ec == errc::invalid_name);
    }
    test::require_gone(base);
}

TEST_CASE("Attaching to a missing queue names it and asks whether the creator runs", "[unit]") {
    const std::string name = test::unique_name("missing");
    test::ShmGuard guard{name};
    for (auto e : {error_of([&] { Producer<int> sut(name); }), error_of([&] { Consumer<> sut(name); }),
                   error_of([&] { Queue::open(name); })}) {
        CHECK(e.code() == errc::not_found);
        CHECK_THAT(e.what(), Catch::Contains(name) && Catch::Contains("is the creator running?"));
    }
    test::require_gone(name);
}

TEST_CASE("Creating a queue whose name is taken fails with already_exists", "[unit]") {
    const std::string name = test::unique_name("taken");
    test::ShmGuard guard{name};
    {
        auto sut = Queue::create(name);
        const auto e = error_of([&] { Queue::create(name); });
        CHECK(e.code() == errc::already_exists);
        CHECK_THAT(e.what(), Catch::Contains(name));
        CHECK(exists(name));  // the failed create did not remove the owner's segment
    }
    test::require_gone(name);
}

TEST_CASE("An SPSC queue refuses a second producer or consumer while the first is attached", "[unit]") {
    const std::string name = test::unique_name("spsc2");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one));
        REQUIRE(q.spsc());
        {
            Producer<int> first(name);
            const auto e = error_of([&] { Producer<int> sut(name); });
            CHECK(e.code() == errc::too_many_endpoints);
            CHECK_THAT(e.what(), Catch::Contains(name) && Catch::Contains("producer"));
        }
        {
            Consumer<int> first(name);
            const auto e = error_of([&] { Consumer<int> sut(name); });
            CHECK(e.code() == errc::too_many_endpoints);
            CHECK_THAT(e.what(), Catch::Contains(name) && Catch::Contains("consumer"));
        }
        // Once the first has gone (closed by its destructor), the place is free again.
        CHECK_NOTHROW(Consumer<int>(name));
    }
    test::require_gone(name);
}

TEST_CASE("A many-endpoint queue refuses endpoints beyond max_endpoints", "[unit]") {
    const std::string name = test::unique_name("maxep");
    test::ShmGuard guard{name};
    {
        auto o = test::queue_options(Endpoints::many);
        o.max_endpoints = 3;
        auto q = Queue::create(name, o);
        Producer<int> p1(name);
        Consumer<int> c1(name);
        Consumer<int> c2(name);
        const auto e = error_of([&] { Consumer<int> sut(name); });
        CHECK(e.code() == errc::too_many_endpoints);
        CHECK_THAT(e.what(), Catch::Contains(name));
    }
    test::require_gone(name);
}

TEST_CASE("Endpoints of different element types are refused with type_mismatch", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("types");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind));
        Producer<int> tx(name);
        const auto e = error_of([&] { Consumer<double> sut(name); });
        CHECK(e.code() == errc::type_mismatch);
        CHECK_THAT(e.what(), Catch::Contains(name));
        // Same size, different type: still a mismatch.
        CHECK(error_of([&] { Consumer<float> sut(name); }).code() == errc::type_mismatch);
        CHECK(error_of([&] { Consumer<std::string> sut(name); }).code() == errc::type_mismatch);
        Consumer<int> rx(name);
        tx.push(7);
        CHECK(rx.try_pop() == 7);
    }
    test::require_gone(name);
}

TEST_CASE("Opening a segment of another kind as a queue fails with wrong_kind", "[unit]") {
    const std::string name = test::unique_name("kind");
    test::ShmGuard guard{name};
    {
        detail::Segment::CreateParams p;
        p.name = name;
        p.what = "semaphore";
        p.kind = detail::ObjectKind::semaphore;
        p.body_size = 64;
        auto seg = detail::Segment::create(p, [](std::byte*) {});
        const auto e = error_of([&] { Consumer<int> sut(name); });
        CHECK(e.code() == errc::wrong_kind);
        CHECK_THAT(e.what(), Catch::Contains(name) && Catch::Contains("semaphore"));
    }
    test::require_gone(name);
}

TEST_CASE("A message larger than max_message throws message_too_large at once, even when full", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("oversize");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(kind, 1024, 64));
        Producer<> sut(name);
        Consumer<> rx(name);
        // Fill the queue, so a push that waited for room would block forever.
        const std::vector<std::byte> small(8, std::byte{1});
        int pushed = 0;
        while (sut.try_push(std::span<const std::byte>(small))) ++pushed;
        REQUIRE(pushed > 0);
        const std::vector<std::byte> big(65, std::byte{2});
        const auto t0 = std::chrono::steady_clock::now();
        std::error_code code;
        std::string what;
        const bool in_time = test::finishes_within(name, 5s, [&] {
            try {
                sut.push(std::span<const std::byte>(big));
            } catch (const Error& e) {
                code = e.code();
                what = e.what();
            }
        });
        REQUIRE(in_time);  // else push blocked on a full queue instead of throwing
        CHECK(code == errc::message_too_large);
        CHECK_THAT(what, Catch::Contains(name) && Catch::Contains("65"));
        CHECK(std::chrono::steady_clock::now() - t0 < 5s);
        CHECK_THROWS_MATCHES(sut.try_push(std::span<const std::byte>(big)), Error,
                             Catch::Predicate<Error>([](const Error& e) { return e.code() == errc::message_too_large; }));
        CHECK_THROWS_AS(sut.try_reserve(65), Error);
        CHECK_THROWS_AS(sut.reserve_for(65, 10ms), Error);
        // The queue still works: exactly max_message fits once there is room.
        CHECK(rx.try_pop().has_value());
        while (rx.try_pop()) {
        }
        const std::vector<std::byte> exact(64, std::byte{3});
        CHECK(sut.try_push(std::span<const std::byte>(exact)));
        CHECK(rx.try_pop() == exact);
    }
    test::require_gone(name);
}

TEST_CASE("Impossible geometry is refused with invalid_argument and creates nothing", "[unit]") {
    const std::string name = test::unique_name("geometry");
    test::ShmGuard guard{name};
    auto refused = [&](QueueOptions o, const char* why) {
        INFO(why);
        const auto e = error_of([&] { Queue::create(name, o); });
        CHECK(e.code() == errc::invalid_argument);
        CHECK_THAT(e.what(), Catch::Contains(name));
        CHECK_FALSE(exists(name));
    };
    refused(test::queue_options(Endpoints::many, 0, 64), "MPMC capacity 0");
    refused(test::queue_options(Endpoints::one, 4096, 4096), "SPSC capacity below two maximal records");
    refused(test::queue_options(Endpoints::one, 4096, 0), "max_message 0");
    refused(test::queue_options(Endpoints::many, 100, 1000), "MPMC capacity below one message");
    refused(test::queue_options(Endpoints::one, std::size_t{1} << 50, 64), "SPSC capacity of 1 PiB");
    refused(test::queue_options(Endpoints::many, std::size_t{1} << 50, 64), "MPMC capacity of 1 PiB");
    refused(test::queue_options(Endpoints::many, 4096, std::size_t{1} << 33), "max_message beyond 32 bits");
    test::require_gone(name);
}

TEST_CASE("Segments are created 0600 unless other permissions are asked for", "[unit]") {
    const std::string name = test::unique_name("perm");
    test::ShmGuard guard{name};
    auto mode_of = [&] {
        struct stat st {};
        REQUIRE(::stat(("/dev/shm/" + segment_name(name)).c_str(), &st) == 0);
        return st.st_mode & 0777;
    };
    {
        auto sut = Queue::create(name);
        CHECK(mode_of() == 0600);
    }
    {
        auto o = test::queue_options(Endpoints::many);
        o.permissions = 0644;
        auto sut = Queue::create(name, o);
        CHECK(mode_of() == 0644);
    }
    test::require_gone(name);
}

TEST_CASE("The owner unlinks its queue unless persisted; remove never throws", "[unit]") {
    const std::string name = test::unique_name("persist");
    test::ShmGuard guard{name};
    {
        auto sut = Queue::create(name);
        CHECK(exists(name));
    }
    CHECK_FALSE(exists(name));
    {
        auto sut = Queue::create(name, test::queue_options(Endpoints::one));
        sut.persist();
    }
    REQUIRE(exists(name));
    {
        // A persisted queue can be opened and used by anyone.
        auto admin = Queue::open(name);
        CHECK(admin.spsc());
        Producer<int> tx(name);
        Consumer<int> rx(name);
        tx.push(5);
        CHECK(rx.pop() == 5);
    }
    CHECK(exists(name));  // an opener never unlinks
    CHECK(shmpipe::remove(name));
    CHECK_FALSE(exists(name));
    std::error_code ec;
    CHECK_FALSE(shmpipe::remove(name, ec));
    CHECK(ec);
    test::require_gone(name);
}

TEST_CASE("Handles keep working after their name was removed", "[unit]") {
    const std::string name = test::unique_name("unlinked");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one));
        Producer<int> tx(name);
        Consumer<int> rx(name);
        CHECK(shmpipe::remove(name));
        tx.push(1);
        CHECK(rx.pop() == 1);
        // A new queue may take the name; the old owner must not unlink it on destruction.
        auto q2 = Queue::create(name, test::queue_options(Endpoints::many));
        { auto old = std::move(q); }
        CHECK(exists(name));
    }
    test::require_gone(name);
}
