// The read-only inspection API (shmpipe/inspect.hpp) on segments built by hand: computed
// depth and totals, liveness by pid + start time, stale/corrupt decisions, what clean may
// remove, and never crashing on corrupt, truncated, foreign or shrinking segments.
#include "test_support.hpp"

#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/detail/queue_layout.hpp>
#include <shmpipe/detail/segment.hpp>
#include <shmpipe/inspect.hpp>
#include <shmpipe/object.hpp>
#include <shmpipe/barrier.hpp>
#include <shmpipe/mutex.hpp>
#include <shmpipe/queue.hpp>
#include <shmpipe/semaphore.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <fcntl.h>
#include <random>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t kRing = 4096;

std::uint64_t align64(std::uint64_t v) { return (v + 63) / 64 * 64; }

// A fake SPSC queue segment with a valid geometry: the inspector's view of a queue body.
detail::Segment make_fake_spsc(const std::string& name, std::uint32_t endpoints = 2) {
    detail::Segment::CreateParams p;
    p.name = name;
    p.what = "queue";
    p.kind = detail::ObjectKind::spsc_queue;
    p.endpoint_count = endpoints;
    const std::uint64_t ring_offset = align64(sizeof(detail::QueueControl));
    const std::uint64_t data_offset = align64(ring_offset + sizeof(detail::RingIndices));
    p.body_size = data_offset + kRing;
    p.flags = detail::kQueueFlagOneProducer | detail::kQueueFlagOneConsumer;
    return detail::Segment::create(p, [&](std::byte* body) {
        auto& ctl = detail::queue_control(body);
        ctl.capacity = kRing;
        ctl.max_message = 1024;
        ctl.ring_offset = ring_offset;
        ctl.data_offset = data_offset;
        ctl.flags = detail::kQueueFlagOneProducer | detail::kQueueFlagOneConsumer;
    });
}

void set_indices(detail::Segment& s, std::uint64_t head, std::uint64_t tail, std::uint64_t head_count,
                 std::uint64_t tail_count, std::uint64_t head_bytes, std::uint64_t tail_bytes) {
    auto& r = detail::ring_indices(s.body());
    r.head.store(head);
    r.tail.store(tail);
    r.head_count.store(head_count);
    r.tail_count.store(tail_count);
    r.head_bytes.store(head_bytes);
    r.tail_bytes.store(tail_bytes);
}

// The creator looks like a process that reused our pid: same pid, another start time.
void make_creator_dead(detail::Segment& s) { s.header().creator_start_time += 1; }

std::uint32_t dead_pid() {
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    int status = 0;
    ::waitpid(child, &status, 0);
    return static_cast<std::uint32_t>(child);
}

std::string shm_file(const std::string& name) { return "/dev/shm/" + segment_name(name); }

void write_file(const std::string& path, const std::vector<unsigned char>& bytes) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    ::close(fd);
}

std::vector<unsigned char> random_bytes(std::size_t n) {
    std::mt19937 gen(12345);
    std::vector<unsigned char> v(n);
    for (auto& b : v) b = static_cast<unsigned char>(gen());
    return v;
}

void age_file(const std::string& path, int seconds) {
    timespec times[2];
    ::clock_gettime(CLOCK_REALTIME, &times[0]);
    times[0].tv_sec -= seconds;
    times[1] = times[0];
    REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
}

InspectOptions only(const std::string& name) {
    InspectOptions o;
    o.patterns = {name};
    return o;
}

// Removes a file that is not a shmpipe object (ShmGuard only knows shmpipe names).
struct FileGuard {
    std::string path;
    ~FileGuard() { ::unlink(path.c_str()); }
};

}  // namespace

TEST_CASE("a queue's depth, fill and totals are computed from its ring indices", "[unit]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("insp-depth"));
    auto seg = make_fake_spsc(name);
    set_indices(seg, 100, 300, 4, 10, 90, 250);

    const auto sut = inspect_object(name);

    REQUIRE(sut);
    CHECK(sut->kind == "spsc-queue");
    CHECK(sut->state == ObjectState::open);
    CHECK(sut->is_queue);
    CHECK(sut->capacity == kRing);
    CHECK(sut->depth == 6);
    CHECK(sut->bytes_used == 200);
    CHECK(sut->fill == Approx(200.0 / kRing));
    CHECK(sut->messages_in == 10);
    CHECK(sut->messages_out == 4);
    CHECK(sut->bytes_in == 250);
    CHECK(sut->bytes_out == 90);
    CHECK(sut->creator_pid == static_cast<std::uint32_t>(::getpid()));
    CHECK(sut->creator_alive);
}

TEST_CASE("attached endpoints are listed with role, pid and liveness by pid and start time", "[unit]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("insp-endpoints"));
    auto seg = make_fake_spsc(name, 3);
    seg.attach_endpoint(detail::EndpointRole::producer, "queue");
    const std::uint32_t gone = dead_pid();
    auto& rec = seg.endpoints()[1];
    rec.word.store(detail::EndpointRecord::pack(gone, detail::EndpointRole::consumer, detail::EndpointState::open));
    rec.start_time.store(1);

    const auto sut = inspect_object(name);

    REQUIRE(sut);
    REQUIRE(sut->endpoints.size() == 2);
    CHECK(sut->endpoints[0].pid == static_cast<std::uint32_t>(::getpid()));
    CHECK(sut->endpoints[0].role == "producer");
    CHECK(sut->endpoints[0].alive);
    CHECK(sut->endpoints[0].state == "open");
    CHECK(sut->endpoints[1].pid == gone);
    CHECK(sut->endpoints[1].role == "consumer");
    CHECK_FALSE(sut->endpoints[1].alive);
    CHECK(sut->endpoints[1].state == "dead");
    CHECK(sut->live_endpoints == 1);
}

TEST_CASE("an object whose creator is gone and that no live process uses is stale and clean removes it",
          "[unit]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("insp-stale"));
    auto seg = make_fake_spsc(name);
    make_creator_dead(seg);

    const auto sut = inspect_object(name);
    REQUIRE(sut);
    CHECK(sut->state == ObjectState::stale);
    CHECK_FALSE(sut->creator_alive);
    CHECK(removable(*sut, false));

    SECTION("a dry run only reports it") {
        const auto results = clean(false, true, only(name));
        REQUIRE(results.size() == 1);
        CHECK(results[0].name == name);
        CHECK_FALSE(results[0].removed);
        CHECK(exists(name));
    }
    SECTION("clean unlinks it and says so") {
        const auto results = clean(false, false, only(name));
        REQUIRE(results.size() == 1);
        CHECK(results[0].removed);
        CHECK(results[0].error.empty());
        CHECK_FALSE(exists(name));
    }
}

TEST_CASE("an object with a live endpoint is never stale nor removed, even when its creator is gone", "[unit]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("insp-live"));
    auto seg = make_fake_spsc(name);
    make_creator_dead(seg);
    seg.attach_endpoint(detail::EndpointRole::consumer, "queue");

    const auto sut = inspect_object(name);
    REQUIRE(sut);
    CHECK(sut->state == ObjectState::open);
    CHECK_FALSE(removable(*sut, true));
    CHECK(clean(true, false, only(name)).empty());
    CHECK(exists(name));
}

TEST_CASE("closed and broken state bits are reported", "[unit]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("insp-bits"));
    auto seg = make_fake_spsc(name);
    seg.set_state(detail::kStateClosed);
    CHECK(inspect_object(name)->state == ObjectState::closed);
    seg.set_state(detail::kStateBroken);
    CHECK(inspect_object(name)->state == ObjectState::broken);
}

TEST_CASE("segments that fail validation are reported corrupt, never trusted", "[unit]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("insp-corrupt"));

    SECTION("random bytes") {
        write_file(shm_file(name), random_bytes(8192));
        const auto sut = inspect_object(name);
        REQUIRE(sut);
        CHECK(sut->state == ObjectState::corrupt);
        CHECK_THAT(sut->problem, Catch::Contains("magic"));
    }
    SECTION("shorter than a header") {
        write_file(shm_file(name), random_bytes(10));
        const auto sut = inspect_object(name);
        REQUIRE(sut);
        CHECK(sut->state == ObjectState::corrupt);
        CHECK_THAT(sut->problem, Catch::Contains("too small"));
    }
    SECTION("truncated after creation") {
        { auto seg = make_fake_spsc(name); seg.persist(); }
        REQUIRE(::truncate(shm_file(name).c_str(), 4096) == 0);
        const auto sut = inspect_object(name);
        REQUIRE(sut);
        CHECK(sut->state == ObjectState::corrupt);
    }
    SECTION("ring indices outside the body") {
        auto seg = make_fake_spsc(name);
        detail::queue_control(seg.body()).ring_offset = seg.body_size();
        const auto sut = inspect_object(name);
        REQUIRE(sut);
        CHECK(sut->state == ObjectState::corrupt);
        CHECK_THAT(sut->problem, Catch::Contains("ring indices"));
        CHECK_FALSE(removable(*sut, true));  // its creator (this process) is alive
    }
    SECTION("a ring capacity larger than the body") {
        auto seg = make_fake_spsc(name);
        detail::queue_control(seg.body()).capacity = std::uint64_t{1} << 40;
        const auto sut = inspect_object(name);
        REQUIRE(sut);
        CHECK(sut->state == ObjectState::corrupt);
    }
    SECTION("an endpoint table larger than the segment") {
        auto seg = make_fake_spsc(name);
        seg.header().endpoint_count = detail::kMaxEndpoints;
        const auto sut = inspect_object(name);
        REQUIRE(sut);
        CHECK(sut->state == ObjectState::corrupt);
    }
}

TEST_CASE("corrupt objects are removed only on request and not while they may still be being created",
          "[unit]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("insp-clean-corrupt"));
    write_file(shm_file(name), random_bytes(8192));

    CHECK(clean(false, false, only(name)).empty());
    CHECK(clean(true, false, only(name)).empty());  // too young: may be a creator at work
    age_file(shm_file(name), 10);
    CHECK(clean(false, false, only(name)).empty());
    const auto results = clean(true, false, only(name));
    REQUIRE(results.size() == 1);
    CHECK(results[0].removed);
    CHECK(results[0].state == ObjectState::corrupt);
    CHECK_FALSE(exists(name));
}

TEST_CASE("entries of other prefixes in /dev/shm are ignored", "[unit]") {
    const std::string foreign = test::unique_name("insp-foreign");  // no "shmpipe." prefix
    FileGuard file{"/dev/shm/" + foreign};
    write_file(file.path, random_bytes(4096));

    std::error_code ec;
    const auto names = list_object_names(ec);
    REQUIRE_FALSE(ec);
    CHECK(std::find(names.begin(), names.end(), foreign) == names.end());
    CHECK_FALSE(inspect_object(foreign).has_value());  // looked up as shmpipe.<name>: not there
}

TEST_CASE("a real queue is inspected without attaching to it", "[unit]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("insp-real"));
    QueueOptions opt;
    opt.producers = Endpoints::one;
    opt.consumers = Endpoints::one;
    opt.capacity = 4096;
    opt.max_message = 256;
    auto q = Queue::create(name, opt);
    Producer<std::uint64_t> tx(name);
    for (std::uint64_t i = 0; i < 5; ++i) tx.push(i);

    const auto sut = inspect_object(name);

    REQUIRE(sut);
    CHECK(sut->kind == "spsc-queue");
    CHECK(sut->state == ObjectState::open);
    CHECK(sut->depth == 5);
    CHECK(sut->messages_in == 5);
    CHECK(sut->capacity == q.capacity());
    REQUIRE(sut->endpoints.size() == 1);  // the inspector added none
    CHECK(sut->endpoints[0].role == "producer");
    CHECK(q.stats().depth == 5);
}

TEST_CASE("a segment shrinking while it is inspected is reported, never crashes the inspector", "[unit]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("insp-shrink"));
    auto seg = make_fake_spsc(name);
    const std::uint64_t full = seg.size();
    const int fd = ::shm_open(("/" + segment_name(name)).c_str(), O_RDWR | O_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    std::atomic<bool> stop{false};
    const auto& geometry = detail::queue_control(seg.body());
    const std::uint64_t capacity = geometry.capacity, max_message = geometry.max_message;
    const std::uint64_t ring_offset = geometry.ring_offset, data_offset = geometry.data_offset;
    std::thread shrinker([&] {
        while (!stop.load()) {
            (void)!::ftruncate(fd, 4096);  // keeps the header page, drops the body
            std::this_thread::sleep_for(200us);
            (void)!::ftruncate(fd, static_cast<off_t>(full));  // body back, zero-filled
            auto& c = detail::queue_control(seg.body());
            c.capacity = capacity;
            c.max_message = max_message;
            c.ring_offset = ring_offset;
            c.data_offset = data_offset;
            std::this_thread::sleep_for(200us);
        }
    });
    InspectOptions options;
    options.catch_sigbus = true;
    int corrupt = 0, sigbus = 0, other = 0;
    const auto until = std::chrono::steady_clock::now() + 500ms;
    while (std::chrono::steady_clock::now() < until) {
        const auto sut = inspect_object(name, options);
        if (!sut) continue;
        if (sut->state == ObjectState::corrupt) {
            ++corrupt;
            if (sut->problem.find("SIGBUS") != std::string::npos) ++sigbus;
        } else {
            ++other;
        }
    }
    stop = true;
    shrinker.join();
    ::close(fd);
    INFO("corrupt " << corrupt << ", of which caught SIGBUS " << sigbus << ", other " << other);
    CHECK(corrupt + other > 0);
    WARN("shrinking segment: " << corrupt << " corrupt (" << sigbus << " by SIGBUS), " << other << " other");
}

TEST_CASE("an MPMC queue's depth counts cells between head and tail", "[unit]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("insp-mpmc"));
    QueueOptions opt;
    opt.capacity = 16 * 256;
    opt.max_message = 256;
    auto q = Queue::create(name, opt);
    Producer<std::uint64_t> tx(name);
    for (std::uint64_t i = 0; i < 7; ++i) tx.push(i);

    const auto sut = inspect_object(name);

    REQUIRE(sut);
    CHECK(sut->kind == "mpmc-queue");
    CHECK(sut->depth == 7);
    CHECK(sut->capacity == q.capacity());
    CHECK(sut->fill > 0.0);
}

TEST_CASE("synchronisation objects show value, owner and waiters", "[unit]") {
    test::ShmGuard guard;
    SECTION("a semaphore's count") {
        const std::string name = guard.add(test::unique_name("insp-sem"));
        auto sem = Semaphore::create(name, 3);
        sem.acquire();
        const auto sut = inspect_object(name);
        REQUIRE(sut);
        CHECK(sut->kind == "semaphore");
        REQUIRE(sut->sync);
        CHECK(sut->sync->value_name == "count");
        CHECK(sut->sync->value == 2);
        CHECK(sut->sync->waiters == 0);
    }
    SECTION("a locked mutex names its owner thread, alive") {
        const std::string name = guard.add(test::unique_name("insp-mutex"));
        auto m = Mutex::create(name);
        m.lock();
        const auto sut = inspect_object(name);
        m.unlock();
        REQUIRE(sut);
        CHECK(sut->kind == "mutex");
        REQUIRE(sut->sync);
        CHECK(sut->sync->value == 1);
        REQUIRE(sut->sync->owner);
        CHECK(*sut->sync->owner == static_cast<std::uint32_t>(::gettid()));
        CHECK(sut->sync->owner_alive == std::optional<bool>(true));
        CHECK(inspect_object(name)->sync->value == 0);
    }
    SECTION("a barrier's arrivals and parties") {
        const std::string name = guard.add(test::unique_name("insp-barrier"));
        auto b = Barrier::create(name, 3);
        const auto sut = inspect_object(name);
        REQUIRE(sut);
        REQUIRE(sut->sync);
        CHECK(sut->sync->value_name == "arrived");
        CHECK(sut->sync->limit == std::optional<std::uint64_t>(3));
        CHECK_FALSE(sut->sync->broken);
    }
}
