// pool_bench: shmpipe::Pool and shmpipe::Process against Python's multiprocessing.Pool and
// concurrent.futures.ProcessPoolExecutor, in one run, with ratios.
//
//   pool_bench [--processes N] [--small 10000] [--large 1000000] [--rtt 2000] [--no-python]
//
// Figures: Pool.map of trivial tasks (tasks/s, default chunking on both sides, best of 3, and
// the first map of a freshly started pool, median of 5 pools), the
// apply_async round trip (median of sequential apply_async(...).get()), and the cost of
// Process start+join for a function and for /bin/true, next to a bare fork + waitpid.
#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <poll.h>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kFreshPools = 5;  // the first map after start: median over this many new pools

int inc(int x) { return x + 1; }

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

// Runs the Python peer and parses its `key value` lines.
std::map<std::string, double> run_python(unsigned procs, int small, int large, int rtt) {
    std::map<std::string, double> out;
    shmpipe::ProcessOptions opt;
    opt.out = shmpipe::Redirect::pipe();
    shmpipe::Process py(shmpipe::Command{"python3", {SHMPIPE_POOL_BENCH_PY, std::to_string(procs), std::to_string(small),
                                                     std::to_string(large), std::to_string(rtt)}},
                        opt);
    py.start();
    std::string text;
    char buf[4096];
    const auto deadline = Clock::now() + std::chrono::seconds(240);
    while (Clock::now() < deadline) {
        pollfd p{py.stdout_fd(), POLLIN, 0};
        if (::poll(&p, 1, 200) <= 0) continue;
        const ssize_t n = ::read(py.stdout_fd(), buf, sizeof buf);
        if (n <= 0) break;
        text.append(buf, static_cast<std::size_t>(n));
    }
    if (!py.join_for(std::chrono::seconds(5))) {
        py.stop(std::chrono::milliseconds(500));
        std::fprintf(stderr, "pool_bench: the Python peer did not finish in time\n");
    } else if (py.exit_code() != 0) {
        std::fprintf(stderr, "pool_bench: the Python peer exited with %d\n", py.exit_code().value_or(-1));
    }
    std::istringstream in(text);
    std::string key;
    double value = 0;
    while (in >> key >> value) out[key] = value;
    return out;
}

void row(const char* what, double ours, const char* unit, double theirs, bool higher_is_better) {
    if (theirs > 0) {
        const double ratio = higher_is_better ? ours / theirs : theirs / ours;
        std::printf("%-44s %14.1f %-8s %14.1f   %6.1fx\n", what, ours, unit, theirs, ratio);
    } else {
        std::printf("%-44s %14.1f %-8s %14s   %7s\n", what, ours, unit, "-", "-");
    }
}

}  // namespace

int main(int argc, char** argv) {
    unsigned procs = std::max(1u, std::thread::hardware_concurrency());
    int small = 10'000, large = 1'000'000, rtt = 2000;
    bool python = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&] { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
        if (a == "--processes") procs = static_cast<unsigned>(std::max(1, next()));
        else if (a == "--small") small = std::max(1, next());
        else if (a == "--large") large = std::max(1, next());
        else if (a == "--rtt") rtt = std::max(1, next());
        else if (a == "--no-python") python = false;
        else {
            std::fprintf(stderr, "usage: pool_bench [--processes N] [--small N] [--large N] [--rtt N] [--no-python]\n");
            return 2;
        }
    }

    std::map<std::string, double> py;
    if (python) py = run_python(procs, small, large, rtt);

    std::map<std::string, double> ours;
    {
        // The first map after a pool starts (no warm-up): median over fresh pools.
        std::vector<int> xs(static_cast<std::size_t>(small));
        std::iota(xs.begin(), xs.end(), 0);
        std::vector<double> firsts;
        for (int rep = 0; rep < kFreshPools; ++rep) {
            shmpipe::Pool pool(procs);
            const auto t0 = Clock::now();
            const auto out = pool.map(inc, xs);
            firsts.push_back(seconds_since(t0));
            if (out.back() != small) {
                std::fprintf(stderr, "pool_bench: wrong map result\n");
                return 1;
            }
            pool.close();
            pool.join();
        }
        ours["pool_map_first_" + std::to_string(small)] = small / median(firsts);
    }
    {
        shmpipe::Pool pool(procs);
        pool.map(inc, std::vector<int>(100, 1));  // warm up
        for (int n : {small, large}) {
            std::vector<int> xs(static_cast<std::size_t>(n));
            std::iota(xs.begin(), xs.end(), 0);
            double best = 1e9;
            for (int rep = 0; rep < 3; ++rep) {  // best of 3, like the Python side
                const auto t0 = Clock::now();
                const auto out = pool.map(inc, xs);
                best = std::min(best, seconds_since(t0));
                if (out.back() != n) {
                    std::fprintf(stderr, "pool_bench: wrong map result\n");
                    return 1;
                }
            }
            ours["pool_map_" + std::to_string(n)] = n / best;
        }
        std::vector<double> samples;
        for (int i = 0; i < rtt; ++i) {
            const auto t0 = Clock::now();
            if (pool.apply_async(inc, i).get() != i + 1) return 1;
            samples.push_back(seconds_since(t0) * 1e6);
        }
        ours["apply_async_rtt_median_us"] = median(samples);
        pool.close();
        pool.join();
    }
    {
        // Interleaved, medians: on a shared machine the load drifts between two separate loops.
        const int count = 200;
        std::vector<double> bare, fn, program;
        for (int i = 0; i < count; ++i) {
            auto t0 = Clock::now();
            const pid_t pid = ::fork();
            if (pid == 0) ::_exit(0);
            int status = 0;
            ::waitpid(pid, &status, 0);
            bare.push_back(seconds_since(t0) * 1e6);

            t0 = Clock::now();
            shmpipe::Process p([] {});
            p.start();
            p.join();
            fn.push_back(seconds_since(t0) * 1e6);

            if (i % 2 == 0) {
                t0 = Clock::now();
                shmpipe::Process c(shmpipe::Command{"/bin/true", {}});
                c.start();
                c.join();
                program.push_back(seconds_since(t0) * 1e6);
            }
        }
        ours["bare_fork_waitpid_us"] = median(bare);
        ours["process_start_join_us"] = median(fn);
        ours["program_start_join_us"] = median(program);
    }

    std::printf("pool_bench: %u worker processes, %u CPUs online\n", procs, std::thread::hardware_concurrency());
    std::printf("%-44s %14s %-8s %14s   %7s\n", "figure", "shmpipe", "unit", "python", "ratio");
    row(("Pool.map " + std::to_string(small) + " first map of a new pool").c_str(),
        ours["pool_map_first_" + std::to_string(small)], "tasks/s", py["pool_map_first_" + std::to_string(small)], true);
    for (int n : {small, large}) {
        const std::string k = "pool_map_" + std::to_string(n);
        row(("Pool.map " + std::to_string(n) + " trivial tasks").c_str(), ours[k], "tasks/s", py[k], true);
        row(("  vs ProcessPoolExecutor.map " + std::to_string(n)).c_str(), ours[k], "tasks/s",
            py["executor_map_" + std::to_string(n)], true);
    }
    row("apply_async round trip (median)", ours["apply_async_rtt_median_us"], "us", py["apply_async_rtt_median_us"],
        false);
    row("Process start+join, function (median)", ours["process_start_join_us"], "us", py["process_start_join_us"], false);
    row("Process start+join, /bin/true (median)", ours["program_start_join_us"], "us", 0, false);
    row("bare fork + waitpid (median)", ours["bare_fork_waitpid_us"], "us", 0, false);
    std::printf("Process(function) start+join / bare fork+waitpid: %.2fx (target <= 1.5x)\n",
                ours["process_start_join_us"] / ours["bare_fork_waitpid_us"]);
    const double map_ratio = py["pool_map_" + std::to_string(large)] > 0
                                 ? ours["pool_map_" + std::to_string(large)] / py["pool_map_" + std::to_string(large)]
                                 : 0;
    std::printf("Pool.map %d vs Python Pool.map: %.1fx (target >= 20x); apply_async round trip %.1f us (target <= 50 us)\n",
                large, map_ratio, ours["apply_async_rtt_median_us"]);
    return 0;
}
