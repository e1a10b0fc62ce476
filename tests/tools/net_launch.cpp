// pipeline-launch --host: the fan-out example split across two "hosts" (two launchers on
// loopback, or in two network namespaces the test makes), run as one run: the same output as
// on one host; a stage failing on one host, a Ctrl-C on one launcher, a killed launcher and a
// link set down each end the run on every host, naming the stage or host, with nothing left.
#include "launch_testing.hpp"
#include "netns_testing.hpp"
#include "test_support.hpp"

#include <shmpipe/net/bridge.hpp>
#include <shmpipe/queue.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <chrono>
#include <csignal>
#include <dirent.h>
#include <fstream>
#include <netinet/in.h>
#include <random>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

using namespace shmpipe;
namespace net = shmpipe::net;
using namespace std::chrono_literals;

namespace {

// Three consecutive free TCP ports on 127.0.0.1 (a host's link port and its two bridged edges).
unsigned free_port_block() {
    std::mt19937 rng(std::random_device{}());
    for (int attempt = 0; attempt < 200; ++attempt) {
        const auto base = static_cast<unsigned>(20000 + rng() % 30000);
        bool all_free = true;
        for (unsigned p = base; p < base + 3 && all_free; ++p) {
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(static_cast<std::uint16_t>(p));
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            all_free = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
            ::close(fd);
        }
        if (all_free) return base;
    }
    FAIL("no three free consecutive ports on 127.0.0.1");
    return 0;
}

// A loopback address for one host, with its two bridged-edge ports free after it.
std::string loopback_host() { return "tcp://127.0.0.1:" + std::to_string(free_port_block()); }

// The fan-out example placed on two hosts: source and collector on a, the workers on b, so the
// tasks cross a -> b and the results b -> a. `count` 0: the source runs until stopped.
std::string split_spec(const test::TempDir& dir, const std::string& address_a, const std::string& address_b,
                       unsigned long long count, const std::string& worker_cmd = {}, unsigned replicas = 4,
                       const std::string& pipeline_extra = "connect_timeout = \"20s\"\n") {
    const std::string worker = worker_cmd.empty()
                                   ? "[\"" + test::bin_path("worker") + "\", \"{queue.tasks}\", \"{queue.results}\"]"
                                   : worker_cmd;
    return dir.write("split.toml", R"([pipeline]
name = "fanout"
stop_timeout = "2s"
heartbeat = "200ms"
dead_after = "1500ms"
)" + pipeline_extra + R"([[host]]
name = "a"
address = ")" + address_a + R"("
[[host]]
name = "b"
address = ")" + address_b + R"("
[[queue]]
name = "tasks"
capacity = "1MiB"
max_message = 64
[[queue]]
name = "results"
capacity = "1MiB"
max_message = 64
[[stage]]
name = "source"
host = "a"
cmd = [")" + test::bin_path("source") + R"(", ")" + std::to_string(count) + R"("]
outputs = ["tasks"]
[[stage]]
name = "worker"
host = "b"
cmd = )" + worker + R"(
inputs = ["tasks"]
outputs = ["results"]
replicas = )" + std::to_string(replicas) + R"(
[[stage]]
name = "collector"
host = "a"
cmd = [")" + test::bin_path("collector") + R"("]
inputs = ["results"]
)");
}

// One host's launcher, its stdout and stderr in `dir`/<host>.out, its summary in <host>.json;
// inside network namespace `netns` when given.
test::Peer start_host(const test::TempDir& dir, const std::string& spec, const std::string& name, const std::string& host,
                      const std::string& netns = {}, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"-c", "out=$1; shift; exec \"$@\" > \"$out\" 2>&1", "sh", dir.file(host + ".out")};
    if (!netns.empty()) args.insert(args.end(), {"/bin/ip", "netns", "exec", netns});
    args.insert(args.end(), {test::launcher(), "--name", name, "--run-id", "r1", "--no-status", "--host", host,
                             "--summary-json", dir.file(host + ".json")});
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(spec);
    return test::Peer("/bin/sh", args);
}

// How both launchers of a run ended: exit codes and their output.
struct Ending {
    int a = 0, b = 0;
    std::string out_a, out_b;
};
Ending finish(const test::TempDir& dir, test::Peer& a, test::Peer& b, const std::string& what_a = "launcher of host a") {
    Ending e;
    e.a = a.wait_or_throw(60s, what_a);
    e.b = b.wait_or_throw(60s, "launcher of host b");
    e.out_a = test::read_file(dir.file("a.out"));
    e.out_b = test::read_file(dir.file("b.out"));
    return e;
}

// The two launchers of a split run under one fresh pipeline name: b starts first, then a
// (inside network namespaces when given; `extra_a`: more arguments for a's launcher).
struct SplitRun {
    std::string name;
    test::Peer b, a;
    SplitRun(const test::TempDir& dir, const std::string& spec, const std::string& stem, const std::string& netns_b = {},
             const std::string& netns_a = {}, const std::vector<std::string>& extra_a = {})
        : name(test::unique_name(stem)),
          b(start_host(dir, spec, name, "b", netns_b)),
          a(start_host(dir, spec, name, "a", netns_a, extra_a)) {}
    Ending finish(const test::TempDir& dir, const std::string& what_a = "launcher of host a") {
        return ::finish(dir, a, b, what_a);
    }
};

// The collector's result line ("collected N results, sum S") in a launcher's output.
std::string collector_line(const std::string& output) {
    const auto at = output.find("collected ");
    if (at == std::string::npos) return {};
    return output.substr(at, output.find('\n', at) - at);
}

// Processes of pipeline `name` still alive (their environment names it): orphans, if any.
std::vector<int> processes_of(const std::string& name) {
    std::vector<int> out;
    DIR* d = ::opendir("/proc");
    if (d == nullptr) return out;
    const std::string want = "SHMPIPE_PIPELINE=" + name;
    while (const dirent* e = ::readdir(d)) {
        const int pid = std::atoi(e->d_name);
        if (pid <= 0) continue;
        std::ifstream env("/proc/" + std::string(e->d_name) + "/environ");
        std::string var;
        while (std::getline(env, var, '\0')) {
            if (var == want) {
                out.push_back(pid);
                break;
            }
        }
    }
    ::closedir(d);
    return out;
}

void require_nothing_left(const std::string& name) {
    INFO("processes and objects of run " << name);
    CHECK(test::wait_until([&] { return processes_of(name).empty(); }, 10s));
    CHECK(test::wait_until([&] { return test::shm_objects_with_prefix(name).empty(); }, 10s));
}

// The one-host run of the same fan-out, for comparison.
std::string one_host_line(const test::TempDir& dir, unsigned long long count) {
    const auto spec = test::native_pool_spec(
        dir, "one.toml", "[pipeline]\nname = \"fanout\"\n", count,
        "[\"" + test::bin_path("worker") + "\", \"{queue.tasks}\", \"{queue.results}\"]", 4);
    const auto r = test::launch(spec, test::unique_name("one"));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return collector_line(r.out);
}

boost::json::object summary_of(const std::string& path) {
    return boost::json::parse(test::read_file(path)).as_object();
}

const boost::json::object* find_named(const boost::json::object& summary, const char* list, const char* key,
                                      const std::string& value) {
    for (const auto& v : summary.at(list).as_array()) {
        if (v.as_object().at(key).as_string() == value) return &v.as_object();
    }
    return nullptr;
}

// Waits until queue `object` has had `n` messages in (`in`) or out.
void await_messages(const std::string& object, std::uint64_t n, bool in) {
    INFO("awaiting " << n << " messages " << (in ? "into " : "out of ") << object);
    REQUIRE(test::wait_until(
        [&] {
            try {
                const auto st = Queue::open(object).stats();
                return (in ? st.messages_in : st.messages_out) >= n;
            } catch (const Error&) {
                return false;
            }
        },
        30s));
}

// Waits until `n` messages left a's tasks queue (popped by the bridge to b) and as many
// results came back into a's results queue (pushed by the bridge from b): both directions work.
void await_tasks_sent(const std::string& name, std::uint64_t n) {
    await_messages(name + ".r1-a.tasks", n, false);
    await_messages(name + ".r1-a.results", n, true);
}

}  // namespace

TEST_CASE("Two launchers on loopback run the fan-out split across two hosts with the one-host output",
          "[tools][net]") {
    test::TempDir dir;
    const unsigned long long n = 200000;
    const std::string expected = one_host_line(dir, n);
    REQUIRE(!expected.empty());
    const auto spec = split_spec(dir, loopback_host(), loopback_host(), n);
    SplitRun run(dir, spec, "split");
    const auto [ra, rb, out_a, out_b] = run.finish(dir);
    INFO("a:\n" << out_a << "\nb:\n" << out_b);
    CHECK(ra == 0);
    CHECK(rb == 0);
    CHECK(collector_line(out_a) == expected);
    // Both summaries carry the bridged edges, and the counts agree end to end.
    for (const char* host : {"a", "b"}) {
        const auto s = summary_of(dir.file(std::string(host) + ".json"));
        CHECK(s.at("host").as_string() == host);
        const auto* tasks = find_named(s, "bridges", "queue", "tasks");
        const auto* results = find_named(s, "bridges", "queue", "results");
        REQUIRE(tasks != nullptr);
        REQUIRE(results != nullptr);
        CHECK(tasks->at("lost").to_number<std::uint64_t>() == 0);
        CHECK(results->at("lost").to_number<std::uint64_t>() == 0);
        CHECK(tasks->at("messages").to_number<std::uint64_t>() == n);
        CHECK(results->at("messages").to_number<std::uint64_t>() == n);
    }
    require_nothing_left(run.name);
}

TEST_CASE("A stage failing on one host stops the run on every host, each launcher naming stage.replica@host",
          "[tools][net]") {
    test::TempDir dir;
    const auto spec = split_spec(dir, loopback_host(), loopback_host(), 0, R"(["/bin/sh", "-c", "sleep 0.5; exit 3"])", 1);
    SplitRun run(dir, spec, "splitfail");
    const auto [ra, rb, out_a, out_b] = run.finish(dir);
    INFO("a:\n" << out_a << "\nb:\n" << out_b);
    CHECK(ra == 1);
    CHECK(rb == 1);
    CHECK(out_a.find("error: run stopped: worker.0@b: ") != std::string::npos);
    CHECK(out_b.find("error: run stopped: worker.0@b: ") != std::string::npos);
    CHECK(out_a.find("exited with code 3") != std::string::npos);
    require_nothing_left(run.name);
}

TEST_CASE("Ctrl-C on one launcher drains the whole run, the other host drains too and neither exits 0",
          "[tools][net]") {
    test::TempDir dir;
    const auto spec = split_spec(dir, loopback_host(), loopback_host(), 0);
    SplitRun run(dir, spec, "splitint");
    await_tasks_sent(run.name, 5000);
    run.b.signal(SIGINT);  // on the host without the source: the drain must reach host a
    const auto [ra, rb, out_a, out_b] = run.finish(dir, "launcher of host a to drain");
    INFO("a:\n" << out_a << "\nb:\n" << out_b);
    CHECK(rb == 128 + SIGINT);
    CHECK(ra == 1);
    CHECK(out_a.find("drained from another host") != std::string::npos);
    // A drain lets end of stream flow: every task the source made was worked and collected.
    const auto s = summary_of(dir.file("a.json"));
    CHECK(s.at("ending").as_string() == "drained");
    const auto* tasks = find_named(s, "queues", "name", "tasks");
    const auto* results = find_named(s, "queues", "name", "results");
    REQUIRE(tasks != nullptr);
    REQUIRE(results != nullptr);
    CHECK(tasks->at("messages_in").to_number<std::uint64_t>() == results->at("messages_out").to_number<std::uint64_t>());
    CHECK(collector_line(out_a).find("collected " + std::to_string(tasks->at("messages_in").to_number<std::uint64_t>()) + " results") == 0);
    require_nothing_left(run.name);
}

TEST_CASE("Random bytes and truncated frames sent to a launcher's ports do not disturb the run", "[tools][net]") {
    test::TempDir dir;
    const auto pa = free_port_block(), pb = free_port_block();
    const auto spec = split_spec(dir, "tcp://127.0.0.1:" + std::to_string(pa), "tcp://127.0.0.1:" + std::to_string(pb), 0);
    SplitRun run(dir, spec, "splitbad");
    await_tasks_sent(run.name, 1000);
    // A bad peer: connects to every port of both launchers (link, bridged edges) and sends
    // random bytes, a ZMTP greeting cut short, and a greeting followed by garbage.
    std::mt19937 rng(12345);
    const std::string greeting_start("\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03\x00NULL", 16);
    for (int round = 0; round < 20; ++round) {
        for (unsigned base : {pa, pb}) {
            for (unsigned port = base; port < base + 3; ++port) {
                const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                sockaddr_in addr{};
                addr.sin_family = AF_INET;
                addr.sin_port = htons(static_cast<std::uint16_t>(port));
                addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
                    std::string junk;
                    if (round % 3 == 0) junk = greeting_start.substr(0, 1 + rng() % greeting_start.size());
                    if (round % 3 == 1) junk = greeting_start;
                    const std::size_t extra = rng() % 512;
                    for (std::size_t i = 0; i < extra; ++i) junk += static_cast<char>(rng());
                    (void)!::write(fd, junk.data(), junk.size());
                }
                ::close(fd);
            }
        }
    }
    // Both launchers still run, and the run still moves (the source never ends by itself).
    CHECK(run.a.running());
    CHECK(run.b.running());
    const auto sent = Queue::open(run.name + ".r1-a.tasks").stats().messages_out;
    await_tasks_sent(run.name, sent + 20000);
    run.a.signal(SIGINT);
    const auto [ra, rb, out_a, out_b] = run.finish(dir, "launcher of host a to drain");
    INFO("a:\n" << out_a << "\nb:\n" << out_b);
    CHECK(ra == 128 + SIGINT);
    CHECK(rb == 1);
    CHECK(out_a.find("is dead") == std::string::npos);
    CHECK(out_b.find("is dead") == std::string::npos);
    const auto s = summary_of(dir.file("a.json"));
    const auto* tasks = find_named(s, "queues", "name", "tasks");
    REQUIRE(tasks != nullptr);
    CHECK(collector_line(out_a).find("collected " + std::to_string(tasks->at("messages_in").to_number<std::uint64_t>()) +
                                     " results") == 0);
    require_nothing_left(run.name);
}

TEST_CASE("With Curve keys in the spec the run is encrypted end to end, a host with the wrong key is refused",
          "[tools][net]") {
    if (!net::curve_available()) {
        WARN("SKIPPED: this libzmq has no CurveZMQ");
        return;
    }
    test::TempDir dir;
    const auto ka = net::make_curve_keypair(), kb = net::make_curve_keypair(), other = net::make_curve_keypair();
    dir.write("a.secret", ka.secret_key + "\n");
    const auto pa = free_port_block(), pb = free_port_block();
    const std::string keys = "curve_secret_file = \"{host}.secret\"\ncurve_public_keys = { a = \"" + ka.public_key +
                             "\", b = \"" + kb.public_key + "\" }\n";
    const std::string address_a = "tcp://127.0.0.1:" + std::to_string(pa), address_b = "tcp://127.0.0.1:" + std::to_string(pb);

    SECTION("the right keys: the whole run") {
        dir.write("b.secret", kb.secret_key + "\n");
        const unsigned long long n = 50000;
        const auto spec = split_spec(dir, address_a, address_b, n, {}, 4, "connect_timeout = \"20s\"\n" + keys);
        SplitRun run(dir, spec, "curve");
        const auto [ra, rb, out_a, out_b] = run.finish(dir);
        INFO("a:\n" << out_a << "\nb:\n" << out_b);
        CHECK(ra == 0);
        CHECK(rb == 0);
        CHECK(collector_line(out_a).find("collected " + std::to_string(n) + " results") == 0);
        CHECK(out_a.find("warning") == std::string::npos);  // loopback and keys: nothing to warn about
        require_nothing_left(run.name);
    }
    SECTION("host b holds a key the spec does not list: nobody hears it, the run fails on both") {
        dir.write("b.secret", other.secret_key + "\n");
        const auto spec = split_spec(dir, address_a, address_b, 0, {}, 4, "connect_timeout = \"3s\"\n" + keys);
        SplitRun run(dir, spec, "curvebad");
        const auto [ra, rb, out_a, out_b] = run.finish(dir);
        INFO("a:\n" << out_a << "\nb:\n" << out_b);
        CHECK(ra == 1);
        CHECK(rb == 1);
        CHECK(out_a.find("run stopped: host \"b\" is dead: unreachable") != std::string::npos);
        require_nothing_left(run.name);
    }
}

TEST_CASE("The launcher's metrics show each bridged queue's remote side: peer host, credits, in flight, last heard",
          "[tools][net]") {
    test::TempDir dir;
    const auto pa = free_port_block(), pb = free_port_block(), pm = free_port_block();
    const auto spec = split_spec(dir, "tcp://127.0.0.1:" + std::to_string(pa), "tcp://127.0.0.1:" + std::to_string(pb), 0);
    const std::string listen = "127.0.0.1:" + std::to_string(pm);
    SplitRun run(dir, spec, "splitmet", {}, {}, {"--metrics-listen", listen});
    await_tasks_sent(run.name, 5000);
    // Scrapes until host a has heard host b's launcher (its first status may wait for a reconnect).
    const std::string host_up = "shmpipe_host_up{pipeline=\"" + run.name + "\",host=\"b\"} 1";
    test::RunResult scrape;
    const bool heard = test::wait_until(
        [&] {
            scrape = test::run_program("/usr/bin/curl", {"-sS", "--max-time", "10", "http://" + listen + "/metrics"}, 30s);
            return scrape.out.find(host_up) != std::string::npos;
        },
        20s);
    run.a.signal(SIGINT);
    const auto [ra, rb, out_a, out_b] = run.finish(dir, "launcher of host a to drain");
    INFO("scrape:\n" << scrape.out << scrape.err << "\na:\n" << out_a);
    REQUIRE(scrape.exit_code == 0);
    const std::string out_labels = "{pipeline=\"" + run.name + "\",queue=\"tasks\",direction=\"out\",peer=\"b\"}";
    const std::string in_labels = "{pipeline=\"" + run.name + "\",queue=\"results\",direction=\"in\",peer=\"b\"}";
    for (const char* family : {"shmpipe_bridge_messages_total", "shmpipe_bridge_credits", "shmpipe_bridge_in_flight",
                               "shmpipe_bridge_last_heard_seconds", "shmpipe_bridge_lost_total"}) {
        CHECK(scrape.out.find(family + out_labels + " ") != std::string::npos);
        CHECK(scrape.out.find(family + in_labels + " ") != std::string::npos);
    }
    CHECK(scrape.out.find("shmpipe_bridge_peer_up" + out_labels + " 1") != std::string::npos);
    CHECK(heard);
    CHECK(ra == 128 + SIGINT);
    CHECK(rb == 1);
    require_nothing_left(run.name);
}

TEST_CASE("inspect-queues shows a bridged queue's remote side while the run is in flight, and nothing is left after",
          "[tools][net]") {
    test::TempDir dir;
    const auto spec = split_spec(dir, loopback_host(), loopback_host(), 0);
    SplitRun run(dir, spec, "splitiq");
    await_tasks_sent(run.name, 5000);
    const std::string tasks = run.name + ".r1-a.tasks", results = run.name + ".r1-a.results";
    auto inspect = [](const std::vector<std::string>& args) {
        return test::run_program(test::bin_path("inspect-queues"), args, 30s);
    };
    // The remote side of host a's tasks queue (sent to b), once b is up and has acknowledged some.
    boost::json::object remote, peer;
    test::RunResult shown;
    const bool seen = test::wait_until(
        [&] {
            shown = inspect({"--json", "show", tasks});
            boost::system::error_code ec;
            const auto v = boost::json::parse(shown.out, ec);
            if (ec || shown.exit_code != 0 || !v.as_object().contains("remote")) return false;
            remote = v.as_object().at("remote").as_object();
            if (!remote.contains("peers") || remote.at("peers").as_array().empty()) return false;
            peer = remote.at("peers").as_array().front().as_object();
            return peer.at("up").as_bool() && peer.at("messages").to_number<std::uint64_t>() > 0;
        },
        20s);
    INFO("show --json: " << shown.out << shown.err);
    REQUIRE(seen);
    CHECK(remote.at("object").as_string() == tasks + ".bridge");
    CHECK(remote.at("direction").as_string() == "out");
    CHECK(remote.at("peers_total").to_number<std::uint64_t>() == 1);
    CHECK(peer.at("host").as_string() == "b");
    CHECK(peer.at("bytes").to_number<std::uint64_t>() >= peer.at("messages").to_number<std::uint64_t>());
    CHECK(peer.at("lost").to_number<std::uint64_t>() == 0);
    CHECK(peer.at("in_flight").to_number<std::uint64_t>() <= 1u << 20);  // bounded by the credit window
    CHECK(peer.at("last_heard_s").to_number<double>() < 10.0);            // heartbeats every 200 ms
    CHECK(remote.at("updated_age_s").to_number<double>() < 10.0);          // rewritten every ~100 ms
    // The messages acknowledged by b never exceed what left a's queue for the bridge.
    const auto local = boost::json::parse(shown.out).as_object();
    CHECK(peer.at("messages").to_number<std::uint64_t>() <= local.at("messages_out").to_number<std::uint64_t>());

    // The other direction, on the queue a receives into; the text views show both.
    const auto in = inspect({"--json", "list", results});
    REQUIRE(in.exit_code == 0);
    const auto in_arr = boost::json::parse(in.out).as_array();
    REQUIRE(in_arr.size() == 1);
    CHECK(in_arr[0].as_object().at("remote").as_object().at("direction").as_string() == "in");
    const auto text = inspect({"show", tasks});
    INFO("show: " << text.out);
    CHECK(text.exit_code == 0);
    CHECK_THAT(text.out, Catch::Contains("remote side (" + tasks + ".bridge") && Catch::Contains("sent to") &&
                             Catch::Contains("CREDITS") && Catch::Contains("IN FLIGHT") && Catch::Contains("LAST HEARD"));
    const auto table = inspect({"list", run.name + "*"});
    INFO("list: " << table.out);
    CHECK_THAT(table.out, Catch::Contains("bridge out to b (up") && Catch::Contains("bridge in from b ("));
    const auto watched = inspect({"watch", "--count", "1", tasks});
    INFO("watch: " << watched.out);
    CHECK(watched.exit_code == 0);
    CHECK_THAT(watched.out, Catch::Contains("bridge out to b (up"));

    run.a.signal(SIGINT);
    const auto [ra, rb, out_a, out_b] = run.finish(dir, "launcher of host a to drain");
    INFO("a:\n" << out_a << "\nb:\n" << out_b);
    CHECK(ra == 128 + SIGINT);
    CHECK(rb == 1);
    require_nothing_left(run.name);  // the status objects with the queues
}

TEST_CASE("Check mode validates the placement and prints the edges that cross hosts, bad placements are named",
          "[tools][net]") {
    test::TempDir dir;
    const auto spec = split_spec(dir, "tcp://127.0.0.1:7400", "tcp://127.0.0.1:7410", 10);
    SECTION("--check lists the crossing edges and where they are received") {
        const auto r = test::run_program(test::launcher(), {"--check", spec}, 30s);
        INFO(r.err);
        CHECK(r.exit_code == 0);
        CHECK(r.out.find("tasks: a -> b (received at b tcp://127.0.0.1:7411)") != std::string::npos);
        CHECK(r.out.find("results: b -> a (received at a tcp://127.0.0.1:7402)") != std::string::npos);
    }
    SECTION("a run without --host names the hosts to choose from") {
        const auto r = test::run_program(test::launcher(), {spec}, 30s);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find("places stages on hosts a, b: say which one this is with --host NAME") != std::string::npos);
    }
    SECTION("an unknown --host is refused") {
        const auto r = test::run_program(test::launcher(), {"--host", "c", spec}, 30s);
        CHECK(r.exit_code == 2);
        CHECK(r.err.find("unknown host \"c\" (") != std::string::npos);
    }
    SECTION("a stage on an undeclared host is a spec error on its line") {
        std::string text = test::read_file(spec);
        text.replace(text.find("host = \"b\""), 10, "host = \"z\"");
        const auto bad = dir.write("bad.toml", text);
        const auto r = test::run_program(test::launcher(), {"--check", bad}, 30s);
        CHECK(r.exit_code == 1);
        CHECK(r.err.find("stage \"worker\": unknown host \"z\" (declared: a, b)") != std::string::npos);
    }
}

TEST_CASE("A receiving host killed with tasks in flight: every launcher stops naming it, and the counts add up",
          "[tools][net]") {
    // source@a -> tasks -> worker_b@b and worker_c@c -> results -> collector@a
    test::TempDir dir;
    std::string text = R"([pipeline]
name = "fanout3"
stop_timeout = "2s"
heartbeat = "200ms"
dead_after = "1500ms"
connect_timeout = "20s"
[[queue]]
name = "tasks"
capacity = "64KiB"
max_message = 64
[[queue]]
name = "results"
capacity = "64KiB"
max_message = 64
[[stage]]
name = "source"
host = "a"
cmd = [")" + test::bin_path("source") + R"(", "0"]
outputs = ["tasks"]
[[stage]]
name = "collector"
host = "a"
cmd = [")" + test::bin_path("collector") + R"("]
inputs = ["results"]
)";
    for (const char* h : {"a", "b", "c"}) text += "[[host]]\nname = \"" + std::string(h) + "\"\naddress = \"" + loopback_host() + "\"\n";
    for (const char* h : {"b", "c"}) {
        text += "[[stage]]\nname = \"worker_" + std::string(h) + "\"\nhost = \"" + h + "\"\ncmd = [\"" + test::bin_path("worker") +
                "\", \"{queue.tasks}\", \"{queue.results}\"]\ninputs = [\"tasks\"]\noutputs = [\"results\"]\nreplicas = 2\n";
    }
    const auto spec = dir.write("three.toml", text);
    const std::string name = test::unique_name("three");
    // a first: the others' status then reaches it at once, so c is known before it is killed.
    auto a = start_host(dir, spec, name, "a");
    auto b = start_host(dir, spec, name, "b");
    auto c = start_host(dir, spec, name, "c");
    await_tasks_sent(name, 20000);
    c.signal(SIGKILL);
    CHECK(c.wait_or_throw(10s, "killed launcher of host c") == -SIGKILL);
    const auto [ra, rb, out_a, out_b] = finish(dir, a, b, "launcher of host a to notice host c is gone");
    INFO("a:\n" << out_a << "\nb:\n" << out_b);
    CHECK(ra == 1);
    CHECK(rb == 1);
    CHECK(out_a.find("error: run stopped: host \"c\" is dead") != std::string::npos);
    CHECK(out_b.find("error: run stopped: host \"c\" is dead") != std::string::npos);
    // Every task a's bridge took is acknowledged by b or c, or counted lost; none vanished.
    const auto s = summary_of(dir.file("a.json"));
    const auto* bridge = find_named(s, "bridges", "queue", "tasks");
    const auto* queue = find_named(s, "queues", "name", "tasks");
    REQUIRE(bridge != nullptr);
    REQUIRE(queue != nullptr);
    CHECK(bridge->at("messages").to_number<std::uint64_t>() + bridge->at("lost").to_number<std::uint64_t>() ==
          queue->at("messages_out").to_number<std::uint64_t>());
    // What b's bridge pushed into its tasks queue is no more than what a's bridge saw acknowledged in all.
    const auto sb = summary_of(dir.file("b.json"));
    const auto* into_b = find_named(sb, "bridges", "queue", "tasks");
    REQUIRE(into_b != nullptr);
    CHECK(into_b->at("messages").to_number<std::uint64_t>() <= bridge->at("messages").to_number<std::uint64_t>() +
                                                                  bridge->at("lost").to_number<std::uint64_t>());
    require_nothing_left(name);
}

TEST_CASE("Across two network namespaces: the split run, a killed launcher, a link set down", "[tools][net][netns]") {
    if (const auto why = test::netns_unavailable(); !why.empty()) {
        WARN("SKIPPED: network namespace test needs root and iproute2: " << why);
        return;
    }
    test::NetnsPair ns;
    INFO(ns.error);
    REQUIRE(ns.ok());
    test::TempDir dir;
    const std::string address_a = "tcp://198.18.0.1:7400", address_b = "tcp://198.18.0.2:7400";

    SECTION("the whole run gives the one-host output") {
        const unsigned long long n = 200000;
        const std::string expected = one_host_line(dir, n);
        const auto spec = split_spec(dir, address_a, address_b, n);
        SplitRun run(dir, spec, "nssplit", ns.b(), ns.a());
        const auto [ra, rb, out_a, out_b] = run.finish(dir);
        INFO("a:\n" << out_a << "\nb:\n" << out_b);
        CHECK(ra == 0);
        CHECK(rb == 0);
        CHECK(collector_line(out_a) == expected);
        require_nothing_left(run.name);
    }

    // Host b (the receiving end of tasks) dies or becomes unreachable with tasks in flight:
    // a stops within the liveness bound, names b, and its counts add up (every task a's bridge
    // took is acknowledged by b or counted lost).
    auto check_host_b_gone = [&](test::Peer& a) {
        const auto t0 = std::chrono::steady_clock::now();
        const int ra = a.wait_or_throw(30s, "launcher of host a to notice host b is gone");
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const std::string out_a = test::read_file(dir.file("a.out"));
        INFO("a (exited after " << seconds << " s):\n" << out_a);
        CHECK(ra == 1);
        CHECK(out_a.find("error: run stopped: host \"b\" is dead") != std::string::npos);
        const auto s = summary_of(dir.file("a.json"));
        const auto* bridge = find_named(s, "bridges", "queue", "tasks");
        const auto* queue = find_named(s, "queues", "name", "tasks");
        REQUIRE(bridge != nullptr);
        REQUIRE(queue != nullptr);
        CHECK(bridge->at("messages").to_number<std::uint64_t>() + bridge->at("lost").to_number<std::uint64_t>() == queue->at("messages_out").to_number<std::uint64_t>());
    };

    SECTION("kill -9 of host b's launcher mid-run") {
        const auto spec = split_spec(dir, address_a, address_b, 0);
        SplitRun run(dir, spec, "nskill", ns.b(), ns.a());
        await_tasks_sent(run.name, 20000);
        run.b.signal(SIGKILL);
        CHECK(run.b.wait_or_throw(10s, "killed launcher of host b") == -SIGKILL);
        check_host_b_gone(run.a);
        require_nothing_left(run.name);  // b's stages died with it, its guardian removed its queues
    }

    SECTION("the link set down mid-run") {
        const auto spec = split_spec(dir, address_a, address_b, 0);
        SplitRun run(dir, spec, "nsdown", ns.b(), ns.a());
        await_tasks_sent(run.name, 20000);
        REQUIRE(ns.link_down());
        check_host_b_gone(run.a);
        const int rb = run.b.wait_or_throw(30s, "launcher of host b to notice host a is gone");
        const std::string out_b = test::read_file(dir.file("b.out"));
        INFO("b:\n" << out_b);
        CHECK(rb == 1);
        CHECK(out_b.find("error: run stopped: host \"a\" is dead") != std::string::npos);
        require_nothing_left(run.name);
    }
}
