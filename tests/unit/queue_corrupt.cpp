// Shared memory is untrusted input: a queue segment overwritten, truncated, of another
// version or with damaged geometry is refused with a clear Error (corrupt,
// version_mismatch), never trusted, never a crash or a hang; a damaged record inside a live
// ring makes pop throw corrupt.
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/detail/queue_layout.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

std::string shm_path(const std::string& name) { return "/dev/shm/" + segment_name(name); }

// Makes a persisted queue (no owner handle left) and returns its segment size.
std::size_t make_orphan_queue(const std::string& name, Endpoints kind) {
    auto q = Queue::create(name, test::queue_options(kind));
    q.persist();
    struct stat st {};
    REQUIRE(::stat(shm_path(name).c_str(), &st) == 0);
    return static_cast<std::size_t>(st.st_size);
}

// A writable mapping of the segment file, independent of shmpipe's validation.
class RawMapping {
public:
    explicit RawMapping(const std::string& name) {
        const int fd = ::open(shm_path(name).c_str(), O_RDWR);
        REQUIRE(fd >= 0);
        struct stat st {};
        ::fstat(fd, &st);
        size_ = static_cast<std::size_t>(st.st_size);
        base_ = static_cast<std::byte*>(::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
        ::close(fd);
        REQUIRE(base_ != MAP_FAILED);
    }
    ~RawMapping() { ::munmap(base_, size_); }
    std::byte* base() const { return base_; }
    std::size_t size() const { return size_; }
    detail::SegmentHeader& header() const { return *reinterpret_cast<detail::SegmentHeader*>(base_); }
    std::byte* body() const { return base_ + header().body_offset; }

private:
    std::byte* base_ = nullptr;
    std::size_t size_ = 0;
};

// The errc of what attaching as `role` throws (nullopt when it attaches).
std::optional<std::error_code> attach_error(const std::string& name, int role, std::string* what = nullptr) {
    try {
        if (role == 0) (void)Queue::open(name);
        if (role == 1) Producer<> tx(name);
        if (role == 2) Consumer<> rx(name);
    } catch (const Error& e) {
        if (what != nullptr) *what = e.what();
        return e.code();
    }
    return std::nullopt;
}

}  // namespace

TEST_CASE("A queue overwritten with random bytes is refused as corrupt", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("random");
    test::ShmGuard guard{name};
    std::mt19937_64 rng(99);
    for (int round = 0; round < 5; ++round) {
        const std::size_t size = make_orphan_queue(name, kind);
        {
            RawMapping m(name);
            for (std::size_t i = 0; i + 8 <= m.size(); i += 8) {
                const std::uint64_t v = rng();
                std::memcpy(m.base() + i, &v, 8);
            }
        }
        for (int role = 0; role < 3; ++role) {
            std::string what;
            const test::HangGuard hang(name, 10s, "attaching to a queue of random bytes");
            const auto ec = attach_error(name, role, &what);
            INFO("role " << role << ": " << what);
            REQUIRE(ec.has_value());
            CHECK(*ec == errc::corrupt);
            CHECK_THAT(what, Catch::Contains(name) && Catch::Contains("corrupt"));
        }
        CHECK(size > 0);
        REQUIRE(shmpipe::remove(name));
    }
    test::require_gone(name);
}

TEST_CASE("A truncated queue is refused as corrupt", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("trunc");
    test::ShmGuard guard{name};
    const std::size_t full = make_orphan_queue(name, kind);
    for (const std::size_t size : {std::size_t{0}, std::size_t{100}, sizeof(detail::SegmentHeader) + 8,
                                   std::size_t{4096}, full / 2, full - 4096}) {
        INFO("truncated to " << size << " of " << full << " bytes");
        REQUIRE(::truncate(shm_path(name).c_str(), static_cast<off_t>(size)) == 0);
        for (int role = 0; role < 3; ++role) {
            std::string what;
            const test::HangGuard hang(name, 10s, "attaching to a truncated queue");
            const auto ec = attach_error(name, role, &what);
            INFO("role " << role << ": " << what);
            REQUIRE(ec.has_value());
            CHECK(*ec == errc::corrupt);
            CHECK_THAT(what, Catch::Contains(name));
        }
    }
    REQUIRE(shmpipe::remove(name));
    test::require_gone(name);
}

TEST_CASE("A queue of another layout version is refused with version_mismatch", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("version");
    test::ShmGuard guard{name};
    {
        auto owner = Queue::create(name, test::queue_options(kind));
        {
            RawMapping m(name);
            m.header().version = detail::kLayoutVersion + 1;
        }
        for (int role = 0; role < 3; ++role) {
            std::string what;
            const auto ec = attach_error(name, role, &what);
            INFO("role " << role << ": " << what);
            REQUIRE(ec.has_value());
            CHECK(*ec == errc::version_mismatch);
            CHECK_THAT(what, Catch::Contains(name) && Catch::Contains("version " + std::to_string(detail::kLayoutVersion + 1)));
        }
    }
    test::require_gone(name);  // the owner still unlinks what it created
}

TEST_CASE("Random damage to the header or the queue geometry is refused or survived, never a crash", "[unit]") {
    const auto kind = GENERATE(Endpoints::one, Endpoints::many);
    INFO(test::kind_label(kind));
    const std::string name = test::unique_name("fuzz");
    test::ShmGuard guard{name};
    std::mt19937_64 rng(kind == Endpoints::one ? 1 : 2);
    int refused = 0, accepted = 0;
    for (int round = 0; round < 150; ++round) {
        make_orphan_queue(name, kind);
        std::uint64_t damaged_at = 0;
        {
            RawMapping m(name);
            std::byte* const body = m.body();  // before the header's body_offset is damaged
            const int words = 1 + static_cast<int>(rng() % 3);
            for (int w = 0; w < words; ++w) {
                // Header identity words 1..10 (magic stays: a zero magic is waited for), or
                // the queue's geometry words 0..7.
                std::byte* where = rng() % 2 == 0 ? m.base() + 8 * (1 + rng() % 10) : body + 8 * (rng() % 8);
                std::uint64_t v = 0;
                std::memcpy(&v, where, 8);
                switch (rng() % 4) {
                    case 0: v = rng(); break;
                    case 1: v = rng() % 8192; break;
                    case 2: v += (rng() % 2 == 0 ? 1 : ~std::uint64_t{0}); break;
                    default: v ^= std::uint64_t{1} << (rng() % 64); break;
                }
                std::memcpy(where, &v, 8);
                damaged_at = static_cast<std::uint64_t>(where - m.base());
            }
        }
        INFO("round " << round << ", last damaged offset " << damaged_at);
        const test::HangGuard hang(name, 10s, "attaching to / using a damaged queue");
        try {
            Producer<> tx(name);
            Consumer<> rx(name);
            // Accepted: the damage left a valid queue. It must still behave.
            const auto msg = test::make_message(1, 0, 16);
            if (tx.try_push(std::span<const std::byte>(msg))) (void)rx.try_pop();
            ++accepted;
        } catch (const Error&) {
            ++refused;
        }
        REQUIRE(shmpipe::remove(name));
    }
    CHECK(refused > 0);
    CHECK(refused + accepted == 150);
    test::require_gone(name);
}

TEST_CASE("A corrupted record length inside a live SPSC ring makes pop throw corrupt", "[unit]") {
    const std::string name = test::unique_name("badrecord");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one));
        Producer<> tx(name);
        Consumer<> sut(name);
        const auto msg = test::make_message(1, 0, 40);
        tx.push(std::span<const std::byte>(msg));
        REQUIRE(sut.try_pop() == msg);
        tx.push(std::span<const std::byte>(msg));  // the record at ring offset 48
        {
            RawMapping m(name);
            auto& ctl = detail::queue_control(m.body());
            auto* data = m.body() + ctl.data_offset;
            detail::RecordHeader h{};
            std::memcpy(&h, data + 48, sizeof h);
            REQUIRE(h.length == 40);  // we found the record
            h.length = 0x7fffffff;
            std::memcpy(data + 48, &h, sizeof h);
        }
        std::string what;
        try {
            const test::HangGuard hang(name, 10s, "try_pop of a corrupt record");
            (void)sut.try_pop();
            FAIL("try_pop of a record longer than the ring did not throw");
        } catch (const Error& e) {
            CHECK(e.code() == errc::corrupt);
            what = e.what();
        }
        CHECK_THAT(what, Catch::Contains(name) && Catch::Contains("corrupt"));
        CHECK(q.broken());  // the queue is marked broken, so its peers stop too
        CHECK_THROWS_MATCHES(tx.push(std::span<const std::byte>(msg)), Error,
                             Catch::Predicate<Error>([](const Error& e) { return e.code() == errc::broken; }));
    }
    test::require_gone(name);
}

TEST_CASE("A padding record that does not end at the ring end makes pop throw corrupt", "[unit]") {
    const std::string name = test::unique_name("badpad");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::one));
        Producer<> tx(name);
        Consumer<> sut(name);
        const auto msg = test::make_message(1, 0, 40);
        tx.push(std::span<const std::byte>(msg));
        {
            RawMapping m(name);
            auto* data = m.body() + detail::queue_control(m.body()).data_offset;
            const detail::RecordHeader pad{16, detail::kRecordPad};
            std::memcpy(data, &pad, sizeof pad);
        }
        const test::HangGuard hang(name, 10s, "try_pop of a bad padding record");
        CHECK_THROWS_MATCHES(sut.try_pop(), Error,
                             Catch::Predicate<Error>([](const Error& e) { return e.code() == errc::corrupt; }));
    }
    test::require_gone(name);
}

TEST_CASE("A corrupted cell length inside a live MPMC ring makes pop throw corrupt", "[unit]") {
    const std::string name = test::unique_name("badcell");
    test::ShmGuard guard{name};
    {
        auto q = Queue::create(name, test::queue_options(Endpoints::many, 4096, 256));
        Producer<> tx(name);
        Consumer<> sut(name);
        const auto msg = test::make_message(1, 0, 40);
        tx.push(std::span<const std::byte>(msg));
        tx.push(std::span<const std::byte>(msg));
        {
            RawMapping m(name);
            auto& ctl = detail::queue_control(m.body());
            auto* cells = reinterpret_cast<detail::Cell*>(m.body() + ctl.cells_offset);
            REQUIRE(cells[0].length == 40);
            cells[0].length = 0xffffffffu;
        }
        const test::HangGuard hang(name, 10s, "try_pop of a corrupt cell");
        CHECK_THROWS_MATCHES(sut.try_pop(), Error,
                             Catch::Predicate<Error>([](const Error& e) { return e.code() == errc::corrupt; }));
        CHECK(q.broken());
    }
    test::require_gone(name);
}
