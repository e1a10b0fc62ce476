// inspect-queues watch [PATTERN...]: refreshes every --interval with msgs/s and MB/s per
// queue and a mark on queues that are full, stalled or have a dead endpoint.
//
// On a terminal (stdout is a tty) the screen is redrawn and, when stdin is a terminal too,
// it is put in non-canonical no-echo mode so `q` quits without Enter (restored on every exit
// path, including Ctrl-C). Otherwise one plain line per object per refresh is printed and
// flushed, for logs and pipes. Ctrl-C (SIGINT) and SIGTERM quit cleanly; --count N quits
// after N refreshes.
#include "commands.hpp"
#include "stop_signals.hpp"
#include "watch_screen.hpp"

#include <shmpipe/detail/process_id.hpp>

#include <cerrno>
#include <ctime>
#include <iostream>
#include <map>
#include <sstream>
#include <optional>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

namespace inspect_queues {
namespace {

// Puts stdin in non-canonical, no-echo mode for the lifetime of the object.
class RawTerminal {
public:
    RawTerminal() {
        if (::isatty(STDIN_FILENO) == 0 || ::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
        termios raw = saved_;
        raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    ~RawTerminal() {
        if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
    }
    RawTerminal(const RawTerminal&) = delete;
    RawTerminal& operator=(const RawTerminal&) = delete;
    bool active() const noexcept { return active_; }

private:
    termios saved_{};
    bool active_ = false;
};

// Waits up to `seconds`; returns false when the user asked to quit (q, Ctrl-C, SIGTERM).
bool pause_for(double seconds, bool read_keys) {
    const std::uint64_t deadline = shmpipe::detail::monotonic_ns() + static_cast<std::uint64_t>(seconds * 1e9);
    while (!shmpipe::cli::stop_requested()) {
        const std::uint64_t now = shmpipe::detail::monotonic_ns();
        if (now >= deadline) return true;
        const int ms = static_cast<int>((deadline - now + 999'999) / 1'000'000);
        pollfd pfd{read_keys ? STDIN_FILENO : -1, POLLIN, 0};
        const int n = ::poll(&pfd, 1, ms);  // EINTR on a signal: the loop re-checks the stop flag
        if (n > 0 && read_keys && (pfd.revents & POLLIN) != 0) {
            char c = 0;
            if (::read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q')) return false;
        }
    }
    return false;
}

struct Sample {
    std::uint64_t messages_in = 0, messages_out = 0, bytes_in = 0, bytes_out = 0;
    std::uint64_t at_ns = 0;
    std::uint64_t ino = 0;
};

Rates rates_for(const shmpipe::ObjectInfo& o, const Sample* prev, std::uint64_t now_ns) {
    Rates r;
    std::string mark;
    auto add = [&](const char* m) { mark += mark.empty() ? m : std::string(",") + m; };
    if (o.is_queue && (o.state == shmpipe::ObjectState::open || o.state == shmpipe::ObjectState::closed ||
                       o.state == shmpipe::ObjectState::broken || o.state == shmpipe::ObjectState::stale)) {
        if (prev != nullptr && prev->ino == o.ino && now_ns > prev->at_ns) {
            const double dt = static_cast<double>(now_ns - prev->at_ns) / 1e9;
            auto per_s = [&](std::uint64_t now_v, std::uint64_t then) {
                return now_v >= then ? static_cast<double>(now_v - then) / dt : 0.0;
            };
            r.msgs_in_per_s = per_s(o.messages_in, prev->messages_in);
            r.msgs_out_per_s = per_s(o.messages_out, prev->messages_out);
            r.mb_in_per_s = per_s(o.bytes_in, prev->bytes_in) / 1e6;
            r.mb_out_per_s = per_s(o.bytes_out, prev->bytes_out) / 1e6;
            // Stalled: messages wait and nobody took one during the whole interval.
            if (o.depth > 0 && o.messages_out == prev->messages_out) add("STALLED");
        }
        if (o.fill >= 0.95 || (o.producers_waiting > 0 && o.depth > 0)) add("FULL");
    }
    for (const auto& e : o.endpoints) {
        if (e.state == "dead" || (e.state == "open" && !e.alive)) {
            add("DEAD");
            break;
        }
    }
    r.mark = mark;
    return r;
}

std::string clock_text() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
    return buf;
}

}  // namespace

int run_watch(const WatchOptions& options) {
    shmpipe::cli::install_stop_handlers();

    const bool tty = ::isatty(STDOUT_FILENO) != 0 && !options.json;
    std::optional<RawTerminal> terminal_guard;  // raw mode only when stdout is a terminal
    if (tty) terminal_guard.emplace();
    const bool read_keys = terminal_guard && terminal_guard->active();

    shmpipe::InspectOptions io;
    io.catch_sigbus = true;
    io.patterns = options.patterns;
    std::map<std::string, Sample> previous;
    for (unsigned refresh = 1; !shmpipe::cli::stop_requested(); ++refresh) {
        const auto infos = shmpipe::inspect_all(io);
        const std::uint64_t now = shmpipe::detail::monotonic_ns();
        std::map<std::string, Sample> current;
        std::vector<std::pair<shmpipe::ObjectInfo, Rates>> screen;
        std::string json = "[";
        for (const auto& o : infos) {
            const auto it = previous.find(o.name);
            const Rates r = rates_for(o, it == previous.end() ? nullptr : &it->second, now);
            current[o.name] = Sample{o.messages_in, o.messages_out, o.bytes_in, o.bytes_out, now, o.ino};
            if (options.json) {
                json += (json.size() == 1 ? "" : ", ") + to_json(o, &r);
                continue;
            }
            if (tty) {
                screen.emplace_back(o, r);
            } else {
                std::string line = clock_text() + " " + o.name + " " + o.kind + " " + shmpipe::to_string(o.state);
                if (o.is_queue && (o.state != shmpipe::ObjectState::corrupt)) {
                    line += " depth=" + std::to_string(o.depth) + " fill=" + percent(o.fill) +
                            " in=" + std::to_string(o.messages_in) + " out=" + std::to_string(o.messages_out) +
                            " msgs/s=" + rate_text(r.msgs_out_per_s) + " MB/s=" + mb_text(r.mb_out_per_s);
                } else if (!o.problem.empty()) {
                    line += " problem=\"" + o.problem + "\"";
                }
                if (!r.mark.empty()) line += " [" + r.mark + "]";
                if (const auto remote = remote_side(o)) line += " " + remote_summary(*remote);
                std::cout << line << '\n';
            }
        }
        previous = std::move(current);
        if (options.json) {
            std::cout << json << "]\n";
        } else if (tty) {
            std::ostringstream title;
            title << "inspect-queues watch  " << clock_text() << "  every " << options.interval_s << " s  "
                  << (read_keys ? "(q or Ctrl-C quits)" : "(Ctrl-C quits)");
            std::cout << "\x1b[H\x1b[2J";
            print_watch_screen(std::cout, title.str(), screen, terminal_size(STDOUT_FILENO));
        } else if (infos.empty()) {
            std::cout << clock_text() << " no matching shmpipe objects\n";
        }
        std::cout << std::flush;
        if (options.count != 0 && refresh >= options.count) break;
        if (!pause_for(options.interval_s, read_keys)) break;
    }
    return 0;
}

}  // namespace inspect_queues
