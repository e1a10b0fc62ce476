// inspect-queues watch on a real terminal: run under tmux (a private server on its own
// socket), the pane captured and its layout checked: nothing wider than the terminal, long
// names shortened in the middle, endpoints on their own line, `q` quits.
#include "test_catch.hpp"

#include <catch2/catch.hpp>

#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace test = shmpipe::test;
using namespace std::chrono_literals;

namespace {

// A tmux server of our own (-L socket), killed with everything in it at the end.
struct Tmux {
    std::string socket = "shmpipe-test-" + std::to_string(::getpid());
    test::RunResult run(const std::vector<std::string>& args) const {
        std::vector<std::string> all{"-L", socket};
        all.insert(all.end(), args.begin(), args.end());
        return test::run_program("/usr/bin/tmux", all, 10s);
    }
    ~Tmux() { run({"kill-server"}); }
};

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

std::string shell_quote(const std::string& s) { return "'" + s + "'"; }

// Runs watch in an X-column tmux pane until it shows `expect`; returns the (joined) capture.
std::string watch_screen(const Tmux& tmux, int columns, const std::string& pattern, const std::string& expect) {
    const std::string cmd = shell_quote(test::bin_path("inspect-queues")) + " watch --interval 0.2 " + shell_quote(pattern);
    REQUIRE(tmux.run({"new-session", "-d", "-x", std::to_string(columns), "-y", "24", cmd}).exit_code == 0);
    std::string screen;
    const bool shown = test::wait_until([&] {
        // -J joins wrapped lines, so a line wider than the pane shows up as one long line.
        screen = tmux.run({"capture-pane", "-p", "-J"}).out;
        return screen.find(expect) != std::string::npos;
    }, 15s);
    if (!shown) FAIL("timed out waiting for watch to show \"" << expect << "\"; screen:\n" << screen);
    return screen;
}

}  // namespace

TEST_CASE("watch fits an 80-column terminal: names shortened in the middle, endpoints below", "[tools]") {
    test::ShmGuard guard;
    const std::string stem = test::unique_name("watch");
    // 70+ characters: too long for 80 columns next to the figures.
    const std::string long_name = guard.add(stem + ".a-pipeline-with-a-long-name.12345-abcd.results-of-the-workers");
    const std::string short_name = guard.add(stem + ".in");
    test::Peer a(test::peer_path("inspect_peer"), {"writer", long_name, "--create", "mpmc", "--count", "3"});
    test::Peer b(test::peer_path("inspect_peer"), {"writer", short_name, "--create", "spsc", "--count", "7"});

    Tmux tmux;
    const std::string screen = watch_screen(tmux, 80, stem + ".*", "of-the-workers  mpmc");
    INFO("screen:\n" << screen);
    const auto lines = lines_of(screen);
    for (const auto& line : lines) CHECK(line.size() <= 80);
    REQUIRE(lines.size() >= 7);
    CHECK(lines[0].rfind("inspect-queues watch", 0) == 0);
    CHECK(lines[2].rfind("NAME", 0) == 0);
    CHECK(lines[2].find("KIND  STATE  DEPTH   FILL  MSGS/S  MB/S") != std::string::npos);
    // The long name: its start and end kept, the middle replaced by '~'.
    std::string long_row, short_row, short_detail;
    for (std::size_t i = 3; i + 1 < lines.size(); ++i) {
        if (lines[i].rfind(stem.substr(0, 10), 0) == 0 && lines[i].find('~') != std::string::npos) long_row = lines[i];
        if (lines[i].rfind(short_name + " ", 0) == 0) {
            short_row = lines[i];
            short_detail = lines[i + 1];
        }
    }
    CHECK(long_row.find("~") != std::string::npos);
    CHECK(long_row.find("of-the-workers  mpmc  open") != std::string::npos);
    CHECK(long_row.rfind(long_name.substr(0, 15), 0) == 0);
    CHECK(short_row.find("spsc  open") != std::string::npos);
    CHECK(short_row.find("  7  ") != std::string::npos);  // depth
    // The endpoints line names the producer by pid (closed after its 7 messages: "-").
    CHECK(short_detail.rfind("  ", 0) == 0);

    // q quits without Enter: the pane's only process ends, and with it the session.
    REQUIRE(tmux.run({"send-keys", "q"}).exit_code == 0);
    const bool gone = test::wait_until([&] { return tmux.run({"has-session"}).exit_code != 0; }, 10s);
    if (!gone) FAIL("watch did not quit on q; screen:\n" << tmux.run({"capture-pane", "-p"}).out);
}

TEST_CASE("watch on a wide terminal shows long names whole", "[tools]") {
    test::ShmGuard guard;
    const std::string stem = test::unique_name("watchwide");
    const std::string long_name = guard.add(stem + ".a-pipeline-with-a-long-name.12345-abcd.results-of-the-workers");
    test::Peer a(test::peer_path("inspect_peer"), {"writer", long_name, "--create", "mpmc", "--count", "3"});
    Tmux tmux;
    const std::string screen = watch_screen(tmux, 160, stem + ".*", long_name + "  mpmc");
    INFO("screen:\n" << screen);
    for (const auto& line : lines_of(screen)) CHECK(line.size() <= 160);
}
