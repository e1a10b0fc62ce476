// inspect-queues through the real binary: list/show/--json on a running writer->reader
// pair, a SIGKILLed producer and the stale queue it leaves, clean, corrupt/truncated/foreign
// segments, watch under a non-terminal stdout, help and usage errors.
// Tests run in parallel with others: every assertion looks only at this test's own names.
#include "test_support.hpp"

#include <shmpipe/detail/segment.hpp>
#include <shmpipe/object.hpp>
#include <shmpipe/queue.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <chrono>
#include <cstring>
#include <csignal>
#include <fcntl.h>
#include <functional>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

test::RunResult inspect(const std::vector<std::string>& args) {
    return test::run_program(test::bin_path("inspect-queues"), args, 30s);
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

// The object of `name` in --json output (list/show/clean: one document, an object per line;
// watch: an array per line), serialized again, or "" when it is not listed.
std::string json_of(const std::string& out, const std::string& name) {
    auto find_in = [&](const boost::json::value& v) -> std::string {
        auto match = [&](const boost::json::value& o) {
            return o.is_object() && o.as_object().contains("name") && o.as_object().at("name") == name.c_str();
        };
        if (match(v)) return boost::json::serialize(v);
        if (v.is_array()) {
            for (const auto& e : v.as_array()) {
                if (match(e)) return boost::json::serialize(e);
            }
        }
        return {};
    };
    boost::system::error_code ec;
    if (auto whole = boost::json::parse(out, ec); !ec) return find_in(whole);
    for (const auto& line : lines_of(out)) {
        if (auto v = boost::json::parse(line, ec); !ec) {
            if (auto found = find_in(v); !found.empty()) return found;
        }
    }
    return {};
}

// A field of one object from json_of(); nullopt / "" when absent or of another type.
std::optional<std::uint64_t> json_number(const std::string& object, const std::string& key) {
    boost::system::error_code ec;
    const auto v = boost::json::parse(object, ec);
    if (ec || !v.is_object()) return std::nullopt;
    const auto* f = v.as_object().if_contains(key);
    if (f == nullptr) return std::nullopt;
    if (f->is_uint64()) return f->as_uint64();
    if (f->is_int64() && f->as_int64() >= 0) return static_cast<std::uint64_t>(f->as_int64());
    if (f->is_double() && f->as_double() >= 0) return static_cast<std::uint64_t>(f->as_double());
    return std::nullopt;
}

std::string json_string(const std::string& object, const std::string& key) {
    boost::system::error_code ec;
    const auto v = boost::json::parse(object, ec);
    if (ec || !v.is_object()) return {};
    const auto* f = v.as_object().if_contains(key);
    return f != nullptr && f->is_string() ? std::string(f->as_string()) : std::string();
}

struct Endpoint {
    std::uint32_t pid;
    std::string role;
    bool alive;
    std::string state;
};

std::vector<Endpoint> json_endpoints(const std::string& object) {
    std::vector<Endpoint> out;
    boost::system::error_code ec;
    const auto v = boost::json::parse(object, ec);
    if (ec || !v.is_object() || !v.as_object().contains("endpoints")) return out;
    for (const auto& e : v.as_object().at("endpoints").as_array()) {
        const auto& o = e.as_object();
        out.push_back({static_cast<std::uint32_t>(o.at("pid").to_number<std::uint64_t>()), std::string(o.at("role").as_string()),
                       o.at("alive").as_bool(), std::string(o.at("state").as_string())});
    }
    return out;
}

// Snapshot of one object through `inspect-queues --json list NAME`.
std::string snapshot(const std::string& name) {
    const auto r = inspect({"--json", "list", name});
    REQUIRE(r.exit_code == 0);
    return json_of(r.out, name);
}

std::size_t live_endpoints(const std::string& object) {
    std::size_t n = 0;
    for (const auto& e : json_endpoints(object)) n += e.alive && e.state == "open" ? 1 : 0;
    return n;
}

// Waits (with a deadline) until pred(snapshot) holds; FAILs naming what was awaited.
std::string await(const std::string& name, const std::string& what,
                  const std::function<bool(const std::string&)>& pred, std::chrono::milliseconds timeout = 15s) {
    std::string last;
    const bool ok = test::wait_until([&] {
        last = snapshot(name);
        return pred(last);
    }, timeout);
    if (!ok) FAIL("timed out waiting for " << what << " on queue \"" << name << "\"; last snapshot: " << last);
    return last;
}

QueueOptions spsc_options() {
    QueueOptions o;
    o.producers = Endpoints::one;
    o.consumers = Endpoints::one;
    o.capacity = 64 << 10;
    o.max_message = 4096;
    return o;
}

std::string shm_file(const std::string& name) { return "/dev/shm/" + segment_name(name); }

void write_file(const std::string& path, std::size_t size) {
    std::mt19937 gen(static_cast<unsigned>(size));
    std::string bytes(size, '\0');
    for (auto& b : bytes) b = static_cast<char>(gen());
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    ::close(fd);
}

void age_file(const std::string& path, int seconds) {
    timespec times[2];
    ::clock_gettime(CLOCK_REALTIME, &times[0]);
    times[0].tv_sec -= seconds;
    times[1] = times[0];
    REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
}

bool has_line(const std::string& out, const std::string& start, const std::string& contains) {
    for (const auto& line : lines_of(out)) {
        if (line.rfind(start, 0) == 0 && line.find(contains) != std::string::npos) return true;
    }
    return false;
}

struct FileGuard {
    std::string path;
    ~FileGuard() { ::unlink(path.c_str()); }
};

}  // namespace

TEST_CASE("depth and counters match what the peers pushed and popped", "[tools]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("iq-depth"));
    auto queue = Queue::create(name, spsc_options());
    // The peers' own counts are the truth: 37 pushed (then closed), later 10 popped.
    test::Peer writer(test::peer_path("inspect_peer"), {"writer", name, "--count", "37"});
    REQUIRE(writer.wait_or_throw(30s, "the writer to push 37 messages") == 0);
    const auto pushed = await(name, "37 messages in", [](const std::string& o) {
        return json_number(o, "messages_in").value_or(0) == 37;
    });
    CHECK(json_number(pushed, "depth") == 37);
    CHECK(json_number(pushed, "messages_out") == 0);

    test::Peer reader(test::peer_path("inspect_peer"), {"reader", name, "--count", "10"});
    REQUIRE(reader.wait_or_throw(30s, "the reader to pop 10 messages") == 0);
    const auto popped = await(name, "10 messages out", [](const std::string& o) {
        return json_number(o, "messages_out").value_or(0) == 10;
    });
    CHECK(json_number(popped, "depth") == 27);
    CHECK(json_number(popped, "messages_in") == 37);
}

TEST_CASE("list, show and --json follow a running writer->reader pair", "[tools]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("iq-live"));
    auto queue = Queue::create(name, spsc_options());
    test::Peer writer(test::peer_path("inspect_peer"), {"writer", name, "--size", "100", "--delay-us", "200"});
    test::Peer reader(test::peer_path("inspect_peer"), {"reader", name, "--delay-us", "2000"});

    const auto first = await(name, "a live producer and consumer", [](const std::string& o) { return live_endpoints(o) == 2; });
    const auto a_in = json_number(first, "messages_in").value_or(0);
    const auto a_out = json_number(first, "messages_out").value_or(0);
    const auto second = await(name, "messages in and out to move", [&](const std::string& o) {
        return json_number(o, "messages_in").value_or(0) > a_in && json_number(o, "messages_out").value_or(0) > a_out;
    });

    CHECK(json_string(second, "kind") == "spsc-queue");
    CHECK(json_string(second, "state") == "open");
    CHECK(json_number(second, "capacity") == queue.capacity());
    const auto eps = json_endpoints(second);
    REQUIRE(eps.size() == 2);
    for (const auto& e : eps) {
        INFO("endpoint pid " << e.pid << " role " << e.role);
        CHECK(e.alive);
        CHECK(e.pid == static_cast<std::uint32_t>(e.role == "producer" ? writer.pid() : reader.pid()));
    }
    // The reader is slower: messages accumulate.
    await(name, "a backlog (depth > 0)", [](const std::string& o) { return json_number(o, "depth").value_or(0) > 0; });

    const auto listed = inspect({"list", name});
    CHECK(listed.exit_code == 0);
    CHECK(has_line(listed.out, name + " ", "spsc-queue"));
    CHECK(has_line(listed.out, name + " ", "producer " + std::to_string(writer.pid())));

    const auto shown = inspect({"show", name});
    CHECK(shown.exit_code == 0);
    CHECK_THAT(shown.out, Catch::Contains("spsc-queue") && Catch::Contains("depth:") &&
                              Catch::Contains(std::to_string(writer.pid())) &&
                              Catch::Contains(std::to_string(reader.pid())) && Catch::Contains("consumer"));
    const auto shown_json = inspect({"--json", "show", name});
    CHECK(shown_json.exit_code == 0);
    CHECK(json_string(json_of(shown_json.out, name), "state") == "open");
}

TEST_CASE("a SIGKILLed producer shows as dead, its queue goes stale, and clean removes only that queue",
          "[tools]") {
    test::ShmGuard guard;
    const std::string dying = guard.add(test::unique_name("iq-dying"));
    const std::string live = guard.add(test::unique_name("iq-kept"));
    auto live_queue = Queue::create(live, spsc_options());  // this process: a live creator
    // The writer creates (and owns) its queue; the reader is slow, so it stays attached.
    test::Peer writer(test::peer_path("inspect_peer"), {"writer", dying, "--create", "spsc", "--size", "200"});
    REQUIRE(test::wait_until([&] { return exists(dying); }, 10s));
    test::Peer reader(test::peer_path("inspect_peer"), {"reader", dying, "--delay-us", "50000"});
    await(dying, "a live producer and consumer", [](const std::string& o) { return live_endpoints(o) == 2; });

    writer.signal(SIGKILL);
    CHECK(writer.wait_or_throw(10s, "the SIGKILLed writer to be reaped") == -SIGKILL);

    const auto after_kill = await(dying, "the producer to show as dead", [&](const std::string& o) {
        for (const auto& e : json_endpoints(o)) {
            if (e.role == "producer" && e.pid == static_cast<std::uint32_t>(writer.pid()) && !e.alive) return true;
        }
        return false;
    });
    INFO(after_kill);
    CHECK(json_string(after_kill, "state") != "stale");  // the reader is still attached
    const auto dry_while_live = inspect({"clean", "--dry-run", dying, live});
    CHECK(dry_while_live.exit_code == 0);
    CHECK_THAT(dry_while_live.out, !Catch::Contains("would remove " + dying));

    reader.signal(SIGKILL);
    reader.wait_or_throw(10s, "the SIGKILLed reader to be reaped");
    const auto stale = await(dying, "the queue to become stale", [](const std::string& o) {
        return json_string(o, "state") == "stale";
    });
    for (const auto& e : json_endpoints(stale)) CHECK_FALSE(e.alive);
    CHECK(json_string(snapshot(live), "state") == "open");

    const auto dry = inspect({"clean", "--dry-run", dying, live});
    CHECK(dry.exit_code == 0);
    CHECK_THAT(dry.out, Catch::Contains("would remove " + dying) && !Catch::Contains(live));
    CHECK(exists(dying));
    const auto dry_json = inspect({"--json", "clean", "--dry-run", dying, live});
    CHECK(dry_json.exit_code == 0);
    const std::string planned = json_of(dry_json.out, dying);
    INFO(dry_json.out);
    CHECK(json_string(planned, "state") == "stale");
    CHECK(planned.find("\"removed\":false") != std::string::npos);
    CHECK(planned.find("\"dry_run\":true") != std::string::npos);
    CHECK(json_of(dry_json.out, live).empty());

    const auto cleaned = inspect({"clean", dying, live});
    CHECK(cleaned.exit_code == 0);
    CHECK_THAT(cleaned.out, Catch::Contains("removed " + dying) && !Catch::Contains(live + " "));
    CHECK_FALSE(exists(dying));
    CHECK(exists(live));
}

TEST_CASE("corrupt and truncated segments are listed as corrupt and a segment not ours is ignored", "[tools]") {
    test::ShmGuard guard;
    const std::string garbage = guard.add(test::unique_name("iq-garbage"));
    const std::string tiny = guard.add(test::unique_name("iq-tiny"));
    const std::string truncated = guard.add(test::unique_name("iq-truncated"));
    const std::string foreign = test::unique_name("iq-foreign");  // no shmpipe. prefix
    FileGuard foreign_file{"/dev/shm/" + foreign};
    write_file(shm_file(garbage), 8192);
    write_file(shm_file(tiny), 10);
    Queue::create(truncated, spsc_options()).persist();
    REQUIRE(::truncate(shm_file(truncated).c_str(), 4096) == 0);
    write_file(foreign_file.path, 8192);

    const auto all = inspect({"--json"});  // every object, not only ours: must not crash
    REQUIRE(all.exit_code == 0);
    for (const auto& n : {garbage, tiny, truncated}) {
        INFO("object " << n);
        CHECK(json_string(json_of(all.out, n), "state") == "corrupt");
        CHECK_FALSE(json_string(json_of(all.out, n), "problem").empty());
    }
    CHECK_THAT(all.out, !Catch::Contains(foreign));

    const auto table = inspect({"list"});
    REQUIRE(table.exit_code == 0);
    CHECK(has_line(table.out, garbage + " ", "corrupt"));
    CHECK(has_line(table.out, truncated + " ", "corrupt"));
    CHECK_THAT(table.out, !Catch::Contains(foreign));

    const auto shown = inspect({"show", tiny});
    CHECK(shown.exit_code == 0);
    CHECK_THAT(shown.out, Catch::Contains("corrupt") && Catch::Contains("too small"));

    // Not without --corrupt, and not while they may still be being created. (Dated a minute
    // ahead: under load the inspections above can take longer than the 2 s grace period.)
    for (const auto& n : {garbage, tiny, truncated}) age_file(shm_file(n), -60);
    CHECK_THAT(inspect({"clean", garbage, tiny, truncated}).out, Catch::Contains("nothing to clean"));
    CHECK_THAT(inspect({"clean", "--corrupt", garbage, tiny, truncated}).out, Catch::Contains("nothing to clean"));
    for (const auto& n : {garbage, tiny, truncated}) age_file(shm_file(n), 10);
    const auto dry = inspect({"clean", "--corrupt", "--dry-run", garbage, tiny, truncated});
    CHECK_THAT(dry.out, Catch::Contains("would remove " + garbage));
    CHECK(exists(garbage));
    const auto cleaned = inspect({"clean", "--corrupt", garbage, tiny, truncated});
    CHECK(cleaned.exit_code == 0);
    for (const auto& n : {garbage, tiny}) {
        INFO("object " << n);
        CHECK_THAT(cleaned.out, Catch::Contains("removed " + n));
        CHECK_FALSE(exists(n));
    }
    // Its header still names its creator, this live process: a damaged object in use stays.
    CHECK_THAT(cleaned.out, !Catch::Contains(truncated));
    CHECK(exists(truncated));
    CHECK(::access(foreign_file.path.c_str(), F_OK) == 0);  // not ours: never touched
}

TEST_CASE("A bridged queue's status record that fails validation is refused, naming the object", "[tools]") {
    // pipeline-launch --host writes "<queue>.bridge" (tools/common/bridge_status); here a
    // hostile or damaged one, made by hand: a wrong version, a body too small, a wrong record size,
    // a file cut short.
    struct Case {
        const char* what;
        std::uint64_t body_size;
        std::uint32_t words[4];  // version, record size, direction, peer count
        const char* reason;
        bool truncated = false;  // the file cut back to its header page after it was made
    };
    const Case cases[] = {
        {"a wrong version", 4096, {99, 0, 1, 1}, "record version 99"},
        {"a body too small", 16, {1, 16, 1, 1}, "its body has 16 bytes"},
        {"a wrong record size", 4096, {1, 0, 1, 1}, "record size 0"},
        {"its file truncated", 4096, {1, 0, 1, 1}, "header says 8192 bytes, segment has 4096", true},
    };
    for (const auto& c : cases) {
        INFO("status record with " << c.what);
        test::ShmGuard guard;
        const std::string queue = guard.add(test::unique_name("iq-bridged"));
        const std::string status = guard.add(queue + ".bridge");
        auto q = Queue::create(queue, spsc_options());
        detail::Segment::CreateParams p;
        p.name = status;
        p.kind = detail::ObjectKind::bridge_status;
        p.body_size = c.body_size;
        auto seg = detail::Segment::create(p, [&](std::byte* body) { std::memcpy(body, c.words, std::min<std::size_t>(16, c.body_size)); });
        if (c.truncated) REQUIRE(::truncate(shm_file(status).c_str(), 4096) == 0);

        const auto shown = inspect({"show", queue});
        CHECK(shown.exit_code == 1);
        CHECK_THAT(shown.out, Catch::Contains("remote side: refused"));
        CHECK_THAT(shown.err, Catch::Contains("bridge status \"" + status + "\"") && Catch::Contains("is corrupt") &&
                                  Catch::Contains(c.reason));
        const auto json = inspect({"--json", "show", queue});
        CHECK(json.exit_code == 1);
        boost::system::error_code ec;
        const auto v = boost::json::parse(json.out, ec);
        REQUIRE_FALSE(ec);
        const auto* remote = v.as_object().if_contains("remote");
        REQUIRE(remote != nullptr);
        CHECK_THAT(std::string(remote->as_object().at("error").as_string()), Catch::Contains(c.reason));
        // list still lists everything, the queue's row saying its bridge status was refused.
        const auto table = inspect({"list", queue + "*"});
        CHECK(table.exit_code == 0);
        CHECK(has_line(table.out, queue + " ", "bridge: refused"));
        CHECK(has_line(table.out, status + " ", c.truncated ? "corrupt" : "bridge-status"));
    }
}

TEST_CASE("watch prints plain periodic lines when stdout is not a terminal and stops after --count", "[tools]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("iq-watch"));
    auto queue = Queue::create(name, spsc_options());

    const auto r = inspect({"watch", "--interval", "0.1", "--count", "3", name});

    CHECK(r.exit_code == 0);
    std::size_t refreshes = 0;
    for (const auto& line : lines_of(r.out)) {
        if (line.find(" " + name + " spsc-queue open") != std::string::npos) {
            ++refreshes;
            CHECK_THAT(line, Catch::Contains("depth=0") && Catch::Contains("msgs/s="));
        }
        CHECK_THAT(line, !Catch::Contains("\x1b["));  // no terminal control sequences
    }
    CHECK(refreshes == 3);

    const auto json = inspect({"--json", "watch", "--interval", "0.05", "--count", "2", name});
    CHECK(json.exit_code == 0);
    const auto json_lines = lines_of(json.out);
    REQUIRE(json_lines.size() == 2);
    CHECK(json_string(json_of(json_lines[1], name), "state") == "open");
    CHECK(json_number(json_of(json_lines[1], name), "msgs_out_per_s").has_value());
}

TEST_CASE("--help exits 0, usage errors exit 2, runtime failures exit 1", "[tools]") {
    const auto help = inspect({"--help"});
    CHECK(help.exit_code == 0);
    CHECK_THAT(help.out, Catch::Contains("watch") && Catch::Contains("clean") && Catch::Contains("--json"));

    const auto bad = inspect({"--no-such-option"});
    CHECK(bad.exit_code == 2);
    CHECK_THAT(bad.err, Catch::StartsWith("inspect-queues: error: "));

    CHECK(inspect({"watch", "--interval", "0"}).exit_code == 2);
    CHECK(inspect({"show"}).exit_code == 2);
    const auto bad_name = inspect({"show", "no/such"});
    CHECK(bad_name.exit_code == 2);
    CHECK_THAT(bad_name.err, Catch::Contains("'/'"));

    const auto missing = inspect({"show", test::unique_name("iq-missing")});
    CHECK(missing.exit_code == 1);
    CHECK_THAT(missing.err, Catch::StartsWith("inspect-queues: error: ") && Catch::Contains("does not exist"));
}

TEST_CASE("A drained queue whose producers all closed shows closed in --json, open before", "[tools]") {
    const bool sealed = GENERATE(false, true);
    INFO((sealed ? "sealed" : "expected_producers = 2"));
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("iq-closed"));
    QueueOptions o;
    o.capacity = 64 * 64;
    o.max_message = 64;
    o.expected_producers = sealed ? 0 : 2;
    auto queue = Queue::create(name, o);
    Consumer<> rx(name);
    for (const char* id : {"1", "2"}) {
        test::Peer producer(test::peer_path("queue_peer"), {"produce", name, id, "10", "32"});
        CHECK(producer.wait_or_throw(30s, std::string("producer ") + id + " to push 10 messages to " + name) == 0);
    }
    auto before = snapshot(name);
    CHECK(json_string(before, "state") == "open");  // messages still wait
    CHECK(json_number(before, "depth") == 20);
    for (int i = 0; i < 20; ++i) REQUIRE(rx.pop_for(5s));
    if (sealed) {
        // Drained and both producers closed, but a many queue could still get a producer.
        CHECK(json_string(snapshot(name), "state") == "open");
        queue.seal();
    }
    const auto after = snapshot(name);
    CHECK(json_string(after, "state") == "closed");
    CHECK(json_number(after, "depth") == 0);
    CHECK(queue.stats().ended);
    CHECK_FALSE(rx.pop_for(1s));
    CHECK(rx.ended());
}

TEST_CASE("a typed queue shows its mode, slot size and exact counts", "[tools]") {
    test::ShmGuard guard;
    const std::string name = guard.add(test::unique_name("iq-typed"));
    QueueOptions o;
    o.producers = o.consumers = Endpoints::one;
    o.capacity = 4096;
    auto queue = Queue::create<std::uint64_t>(name, o);
    Producer<std::uint64_t> tx(name);
    Consumer<std::uint64_t> rx(name);
    for (std::uint64_t i = 0; i < 37; ++i) tx.push(i);
    for (std::uint64_t i = 0; i < 10; ++i) REQUIRE(rx.pop() == i);  // the head is still unpublished (S4)

    const auto shown_json = inspect({"--json", "show", name});
    REQUIRE(shown_json.exit_code == 0);
    const auto obj = json_of(shown_json.out, name);
    CHECK_THAT(obj, Catch::Contains("\"typed\":true") && Catch::Contains("\"slot_bytes\":8"));
    CHECK(json_number(obj, "depth") == 27);
    CHECK(json_number(obj, "messages_in") == 37);
    CHECK(json_number(obj, "messages_out") == 10);
    CHECK(json_number(obj, "bytes_out") == 80);
    CHECK(json_number(obj, "capacity") == 4096);

    const auto listed = inspect({"list", name});
    CHECK(listed.exit_code == 0);
    CHECK(has_line(listed.out, name + " ", "spsc-queue typed"));
    const auto shown = inspect({"show", name});
    CHECK(shown.exit_code == 0);
    CHECK_THAT(shown.out, Catch::Contains("typed fixed slots of 8 bytes, 512 slots"));
}
