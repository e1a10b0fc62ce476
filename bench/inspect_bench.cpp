// inspect_bench: does `inspect-queues watch` slow a running queue? SPSC throughput between
// two processes (this one producing, a forked child consuming), in rounds that alternate
// without and with `inspect-queues watch --interval 0.1 <queue>` running (ABBA order, each
// round on a fresh queue), so drift in machine load and order effects hit both sides alike. Prints per-round rates, the medians and their ratio.
//
//   inspect_bench [--rounds N] [--messages N] [--size B] [--interval S] [--inspector PATH]
//                 [--pattern P]   (watch P instead of the queue: a control for the wake-ups)
//
// --messages 0 (default) calibrates a round to ~0.3 s. The inspector defaults to the
// inspect-queues next to this program (both are built into <build>/bin).
#include <shmpipe/queue.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <string>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace {

struct Options {
    int rounds = 10;
    std::uint64_t messages = 0;
    std::size_t size = 64;
    std::string interval = "0.1";
    std::string inspector;
    std::string pattern;  // what watch watches (default: the round's queue); a control run
                          // passes a name that matches nothing: same wake-ups, no queue read
};

std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string sibling(const std::string& program) {
    char self[PATH_MAX];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return program;
    std::string path(self, static_cast<std::size_t>(n));
    return path.substr(0, path.rfind('/') + 1) + program;
}

// One round: a fresh SPSC queue, a forked consumer popping `messages`, this process pushing
// them. Returns messages per second (from the first push to the consumer's exit).
double run_round(const std::string& name, std::uint64_t messages, std::size_t size, pid_t* watcher,
                 const Options& opt) {
    shmpipe::QueueOptions qo;
    qo.producers = shmpipe::Endpoints::one;
    qo.consumers = shmpipe::Endpoints::one;
    qo.capacity = 1 << 20;
    qo.max_message = 4096;
    auto queue = shmpipe::Queue::create(name, qo);

    if (watcher != nullptr) {
        // The inspector, output discarded, watching this round's queue.
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        std::vector<std::string> args{opt.inspector, "watch", "--interval", opt.interval,
                                      opt.pattern.empty() ? name : opt.pattern};
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        if (posix_spawn(watcher, opt.inspector.c_str(), &fa, nullptr, argv.data(), environ) != 0) {
            throw std::runtime_error("cannot start " + opt.inspector + " (pass --inspector PATH)");
        }
        posix_spawn_file_actions_destroy(&fa);
        std::this_thread::sleep_for(std::chrono::milliseconds(150));  // it is refreshing now
    }

    const pid_t child = ::fork();
    if (child < 0) throw std::runtime_error("fork failed");
    if (child == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int code = 0;
        try {
            shmpipe::Consumer<> rx(name);
            std::uint64_t got = 0;
            while (auto m = rx.pop()) got += m->size() == size ? 1 : 0;
            code = got == messages ? 0 : 3;
        } catch (...) {
            code = 2;
        }
        std::_Exit(code);
    }
    std::vector<std::byte> msg(size, std::byte{0x42});
    const std::uint64_t start = now_ns();
    {
        shmpipe::Producer<> tx(name);
        for (std::uint64_t i = 0; i < messages; ++i) tx.push(msg);
        tx.close();
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    const std::uint64_t end = now_ns();
    if (watcher != nullptr) {
        ::kill(*watcher, SIGTERM);
        int ws = 0;
        ::waitpid(*watcher, &ws, 0);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("consumer failed");
    return static_cast<double>(messages) * 1e9 / static_cast<double>(end - start);
}

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    for (int i = 1; i < argc; ++i) {
        const std::string k = argv[i];
        if (i + 1 >= argc) {
            std::cerr << "inspect_bench: missing value after " << k << "\n";
            return 2;
        }
        const std::string v = argv[++i];
        if (k == "--rounds") {
            opt.rounds = std::max(2, std::atoi(v.c_str()));
        } else if (k == "--messages") {
            opt.messages = std::strtoull(v.c_str(), nullptr, 10);
        } else if (k == "--size") {
            opt.size = static_cast<std::size_t>(std::strtoull(v.c_str(), nullptr, 10));
        } else if (k == "--interval") {
            opt.interval = v;
        } else if (k == "--pattern") {
            opt.pattern = v;
        } else if (k == "--inspector") {
            opt.inspector = v;
        } else {
            std::cerr << "inspect_bench: unknown option " << k << "\n";
            return 2;
        }
    }
    if (opt.inspector.empty()) opt.inspector = sibling("inspect-queues");
    const std::string name = "bench-inspect-" + std::to_string(::getpid());
    shmpipe::remove(name);
    try {
        if (opt.messages == 0) {
            const std::uint64_t probe = 200'000;
            const double rate = run_round(name, probe, opt.size, nullptr, opt);
            opt.messages = std::max<std::uint64_t>(probe, static_cast<std::uint64_t>(rate * 0.3));
        }
        std::printf("SPSC %zu-byte messages, %llu per round, %d rounds, ABBA; watcher: %s watch --interval %s\n",
                    opt.size, static_cast<unsigned long long>(opt.messages), opt.rounds, opt.inspector.c_str(),
                    opt.interval.c_str());
        std::vector<double> without, with;
        for (int r = 0; r < opt.rounds; ++r) {
            const bool watched = r % 4 == 1 || r % 4 == 2;  // ABBA: order effects cancel
            pid_t watcher = -1;
            const double rate = run_round(name, opt.messages, opt.size, watched ? &watcher : nullptr, opt);
            (watched ? with : without).push_back(rate);
            std::printf("round %2d  %-13s %8.2f M msgs/s\n", r + 1, watched ? "with watch" : "without", rate / 1e6);
        }
        const double m0 = median(without), m1 = median(with);
        std::printf("median without watch: %.2f M msgs/s (%.1f MB/s)\n", m0 / 1e6, m0 * static_cast<double>(opt.size) / 1e6);
        std::printf("median with watch:    %.2f M msgs/s (%.1f MB/s)\n", m1 / 1e6, m1 * static_cast<double>(opt.size) / 1e6);
        std::printf("ratio with/without:   %.3f\n", m0 > 0 ? m1 / m0 : 0.0);
    } catch (const std::exception& e) {
        shmpipe::remove(name);
        std::cerr << "inspect_bench: " << e.what() << "\n";
        return 1;
    }
    shmpipe::remove(name);
    return 0;
}
