// inspect-queues metrics and serve through the real binaries: a scrape with curl while queue
// peers run, parsed by python3-prometheus-client's text parser and checked figure by figure
// against `inspect-queues --json`; the HTTP responder's answers to bad and slow clients.
// Every address is on loopback, with a port the kernel picks.
#include "queue_testing.hpp"
#include "test_catch.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <csignal>
#include <fstream>
#include <netinet/in.h>
#include <regex>
#include <sstream>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace test = shmpipe::test;
using namespace std::chrono_literals;

namespace {

// Debian's interpreter, where python3-prometheus-client is installed (scripts/deps.sh).
constexpr const char* kPython = "/usr/bin/python3";

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void spit(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

test::RunResult inspect(const std::vector<std::string>& args) {
    return test::run_program(test::bin_path("inspect-queues"), args, 30s);
}

test::RunResult curl(const std::vector<std::string>& args) {
    std::vector<std::string> all{"-sS", "--max-time", "10"};
    all.insert(all.end(), args.begin(), args.end());
    return test::run_program("/usr/bin/curl", all, 30s);
}

// A sample line of `metric` for queue `name` in a scrape, e.g. "... 40"; "" when absent.
std::string sample_value(const std::string& text, const std::string& metric, const std::string& name) {
    std::istringstream in(text);
    const std::string start = metric + "{queue=\"" + name + "\"";
    for (std::string line; std::getline(in, line);) {
        if (line.rfind(start, 0) == 0) return line.substr(line.rfind(' ') + 1);
    }
    return {};
}

void await_sample(const std::string& name, const std::string& metric, const std::string& value) {
    std::string last;
    const bool ok = test::wait_until([&] {
        last = sample_value(inspect({"metrics", name}).out, metric, name);
        return last == value;
    }, 15s);
    if (!ok) FAIL("timed out waiting for " << metric << " = " << value << " on queue \"" << name << "\"; last: " << last);
}

// `inspect-queues serve` on an ephemeral loopback port; the URL comes from its stderr line.
struct Server {
    test::Peer peer;
    std::string url;
    Server(const test::TempDir& dir, const std::vector<std::string>& patterns)
        : peer("/bin/sh", shell_args(dir, patterns)) {
        const std::string log = dir.file("serve.err");
        const std::regex re("serving metrics at (http://127\\.0\\.0\\.1:[0-9]+/metrics)");
        std::smatch m;
        std::string text;
        const bool ok = test::wait_until([&] {
            text = slurp(log);
            return std::regex_search(text, m, re);
        }, 15s);
        if (!ok) FAIL("timed out waiting for inspect-queues serve to print its URL; stderr: " << text);
        url = m[1];
    }
    static std::vector<std::string> shell_args(const test::TempDir& dir, const std::vector<std::string>& patterns) {
        std::vector<std::string> a{"-c", "exec \"$0\" serve --listen 127.0.0.1:0 \"$@\" 2>" + dir.file("serve.err"),
                                   test::bin_path("inspect-queues")};
        a.insert(a.end(), patterns.begin(), patterns.end());
        return a;
    }
};

int port_of(const std::string& url) {
    const auto colon = url.rfind(':');
    return std::stoi(url.substr(colon + 1, url.find('/', colon) - colon - 1));
}

}  // namespace

TEST_CASE("a curl scrape of inspect-queues serve parses and matches inspect-queues --json", "[tools]") {
    test::ShmGuard guard;
    test::TempDir dir;
    const std::string mpmc = guard.add(test::unique_name("metrics-mpmc"));
    const std::string spsc = guard.add(test::unique_name("metrics-spsc"));
    // Writers create the queues (64 KiB, 4 KiB messages: an MPMC queue holds 15), push a known
    // count, close, and keep the names while alive.
    test::Peer mpmc_writer(test::peer_path("inspect_peer"), {"writer", mpmc, "--create", "mpmc", "--count", "12"});
    test::Peer spsc_writer(test::peer_path("inspect_peer"), {"writer", spsc, "--create", "spsc", "--count", "25", "--size", "100"});
    await_sample(mpmc, "shmpipe_queue_messages_in_total", "12");
    await_sample(spsc, "shmpipe_queue_messages_in_total", "25");
    test::Peer reader(test::peer_path("inspect_peer"), {"reader", mpmc, "--count", "5"});
    REQUIRE(reader.wait_or_throw(30s, "the reader to pop 5 messages") == 0);
    await_sample(mpmc, "shmpipe_queue_messages_out_total", "5");
    // A consumer killed while attached shows as dead.
    test::Peer doomed(test::peer_path("inspect_peer"), {"reader", spsc, "--count", "1000", "--delay-us", "2000000"});
    await_sample(spsc, "shmpipe_queue_messages_out_total", "1");
    doomed.signal(SIGKILL);
    REQUIRE(doomed.wait_or_throw(10s, "the killed reader to exit") == -SIGKILL);

    Server server(dir, {"t-metrics-*"});
    const auto scrape = curl({"-o", dir.file("scrape.txt"), "-w", "%{http_code} %{content_type}", server.url});
    REQUIRE(scrape.exit_code == 0);
    CHECK(scrape.out == "200 text/plain; version=0.0.4; charset=utf-8");
    const auto listing = inspect({"--json", "list", mpmc, spsc});
    REQUIRE(listing.exit_code == 0);
    spit(dir.file("list.json"), listing.out);

    const auto text = slurp(dir.file("scrape.txt"));
    CHECK(sample_value(text, "shmpipe_queue_depth_messages", mpmc) == "7");
    CHECK(sample_value(text, "shmpipe_queue_depth_messages", spsc) == "24");
    CHECK(sample_value(text, "shmpipe_queue_bytes_in_total", spsc) == "2500");
    CHECK(text.find("shmpipe_object_endpoints{queue=\"" + spsc +
                    "\",pipeline=\"\",kind=\"spsc-queue\",role=\"consumer\",status=\"dead\"} 1") != std::string::npos);

    const auto check = test::run_program(kPython, {test::source_path("tests/support/check_metrics.py"),
                                                   dir.file("scrape.txt"), dir.file("list.json"), mpmc, spsc}, 60s);
    INFO("check_metrics.py: " << check.out << check.err);
    CHECK(check.exit_code == 0);
    CHECK(check.out.rfind("ok: 2 queue(s)", 0) == 0);

    server.peer.signal(SIGTERM);
    CHECK(server.peer.wait_or_throw(10s, "inspect-queues serve to stop on SIGTERM") == 0);
}

TEST_CASE("the metrics responder answers bad requests with 4xx and is not held up by a silent client", "[tools]") {
    test::TempDir dir;
    Server server(dir, {"t-metrics-none-*"});
    const std::string base = server.url.substr(0, server.url.size() - std::string("/metrics").size());

    // A client that connects and says nothing must not block the others.
    const int silent = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(silent >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(port_of(server.url)));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(silent, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);

    CHECK(curl({"-o", "/dev/null", "-w", "%{http_code}", server.url}).out == "200");
    CHECK(curl({"-o", "/dev/null", "-w", "%{http_code}", base + "/nothing"}).out == "404");
    CHECK(curl({"-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", server.url}).out == "405");
    CHECK(curl({"-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Big: " + std::string(9000, 'x'), server.url}).out == "431");
    const auto head = curl({"-I", server.url});
    CHECK(head.out.rfind("HTTP/1.1 200 OK", 0) == 0);

    // The silent client is dropped after the request timeout (5 s): it reads end of stream.
    std::string rest = test::read_all(silent, 15s, "the server to drop a silent client");
    CHECK(rest.empty());
    ::close(silent);

    server.peer.signal(SIGINT);
    CHECK(server.peer.wait_or_throw(10s, "inspect-queues serve to stop on SIGINT") == 0);
}

TEST_CASE("inspect-queues serve refuses a bad listen address with a usage error", "[tools]") {
    const auto r = inspect({"serve", "--listen", "127.0.0.1"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("listen address \"127.0.0.1\": no port") != std::string::npos);
    const auto name = inspect({"serve", "--listen", "example.org:80"});
    CHECK(name.exit_code == 2);
    CHECK(name.err.find("numeric") != std::string::npos);
}

TEST_CASE("pipeline-launch --metrics-listen serves stage and queue metrics that match inspect-queues --json",
          "[tools]") {
    test::TempDir dir;
    const std::string name = test::unique_name("metrics-run");
    // A source that sends 20 lines and then idles, two sinks, and a non-critical stage that
    // exits 3 at once: the queue is quiet after the 20 lines (51 bytes with their '\n', in
    // as many messages as the reads brought: the queue carries batches of lines), so two
    // snapshots agree.
    const std::string spec = dir.file("run.toml");
    spit(spec, "[pipeline]\nname = \"x\"\n"
               "[[queue]]\nname = \"lines\"\ncapacity = \"64KiB\"\nmax_message = 256\n"
               "[[stage]]\nname = \"src\"\ncmd = [\"sh\", \"-c\", \"seq 1 20; exec sleep 60\"]\nstdout = \"lines\"\n"
               "[[stage]]\nname = \"sink\"\ncmd = [\"cat\"]\nstdin = \"lines\"\nreplicas = 2\n"
               "[[stage]]\nname = \"oops\"\ncmd = [\"sh\", \"-c\", \"exit 3\"]\ncritical = false\n");
    test::Peer launcher("/bin/sh", {"-c", "exec \"$0\" --name \"$1\" --no-status --metrics-listen 127.0.0.1:0 \"$2\" "
                                          ">/dev/null 2>\"$3\"",
                                    test::bin_path("pipeline-launch"), name, spec, dir.file("launch.err")});
    std::string url, text;
    const std::regex re("serving metrics at (http://127\\.0\\.0\\.1:[0-9]+/metrics)");
    if (!test::wait_until([&] {
            std::smatch m;
            text = slurp(dir.file("launch.err"));
            if (!std::regex_search(text, m, re)) return false;
            url = m[1];
            return true;
        }, 15s)) {
        FAIL("timed out waiting for pipeline-launch to print its metrics URL; stderr: " << text);
    }

    // Wait until every line went through and the failing stage's exit was seen.
    std::vector<std::string> objects;  // the run's one queue
    std::string scrape;
    const bool quiet = test::wait_until([&] {
        objects = test::shm_objects_with_prefix(name + ".");
        if (objects.size() != 1) return false;
        const auto r = curl({url});
        scrape = r.out;
        return r.exit_code == 0 && scrape.find("shmpipe_stage_exit_code{pipeline=\"" + name +
                                               "\",stage=\"oops\",replica=\"0\"} 3") != std::string::npos &&
               sample_value(scrape, "shmpipe_queue_bytes_out_total", objects[0]) == "51";
    }, 30s);
    INFO("last scrape:\n" << scrape);
    REQUIRE(quiet);
    CHECK(scrape.find("shmpipe_stage_replicas{pipeline=\"" + name + "\",stage=\"sink\",state=\"running\"} 2") !=
          std::string::npos);
    CHECK(scrape.find("shmpipe_stage_restarts_total{pipeline=\"" + name + "\",stage=\"src\"} 0") != std::string::npos);
    CHECK(scrape.find("shmpipe_build_info{tool=\"pipeline-launch\"") != std::string::npos);

    // The queue's figures against inspect-queues --json, through prometheus_client's parser.
    const auto r = curl({"-o", dir.file("scrape.txt"), url});
    REQUIRE(r.exit_code == 0);
    const auto listing = inspect({"--json", "list", objects[0]});
    REQUIRE(listing.exit_code == 0);
    spit(dir.file("list.json"), listing.out);
    // The sinks' consumers sleep in 100 ms slices, so who is asleep may differ between the two
    // snapshots; every other figure must be equal.
    const auto check = test::run_program(kPython, {test::source_path("tests/support/check_metrics.py"), "--moving",
                                                   "sleepers,consumers_waiting,producers_waiting", dir.file("scrape.txt"),
                                                   dir.file("list.json"), objects[0]}, 60s);
    INFO("check_metrics.py: " << check.out << check.err);
    CHECK(check.exit_code == 0);
    // Every message pushed was taken (the producer's byte counter waits for its next batch
    // of 64 messages or its close: inspect-queues shows the same figure).
    const std::string scraped = slurp(dir.file("scrape.txt"));
    CHECK(sample_value(scraped, "shmpipe_queue_messages_in_total", objects[0]) ==
          sample_value(scraped, "shmpipe_queue_messages_out_total", objects[0]));
    CHECK(sample_value(scraped, "shmpipe_queue_messages_in_total", objects[0]) != "0");
    // inspect-queues finds the same pipeline label in the run's object name.
    const auto own = inspect({"metrics", objects[0]});
    CHECK(own.out.find("shmpipe_queue_depth_messages{queue=\"" + objects[0] + "\",pipeline=\"" + name +
                       "\",kind=\"mpmc-queue\"}") != std::string::npos);

    // The run is stopped: exit 128+SIGTERM, the server gone with it, no object left.
    launcher.signal(SIGTERM);
    CHECK(launcher.wait_or_throw(30s, "pipeline-launch to stop on SIGTERM") == 128 + SIGTERM);
    CHECK(curl({url}).exit_code != 0);
    test::require_gone(name);
}
