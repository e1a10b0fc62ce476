// thread_pool_bench: shmpipe::ThreadPool map of trivial tasks against a hand-written
// std::thread + std::mutex queue pool and against Python's ThreadPoolExecutor and
// multiprocessing.dummy.Pool, interleaved round by round in one run; medians and ratios.
//
//   thread_pool_bench [--threads N (CPUs online)] [--tasks 10000] [--rounds 41] [--no-python]
//
// Every contender maps x -> x + 1 over `tasks` ints into a new vector, with the same number
// of threads, pool made once. Two shapes, compared like for like: one queue entry per task (ThreadPool::map
// with chunksize 1, ThreadPoolExecutor::map, the hand-written pool, Python's executor) and
// chunked (ThreadPool::map's default chunksize len / (4 * threads), the hand-written pool
// with the same chunks, multiprocessing.dummy.Pool.map's default).
#include <shmpipe/process.hpp>
#include <shmpipe/thread_pool.hpp>

#include "bench_util.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <poll.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

int inc(int x) { return x + 1; }

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// What a user writes by hand: threads taking std::function jobs from a mutex-protected deque.
class HandPool {
public:
    explicit HandPool(unsigned n) {
        for (unsigned i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
    }
    ~HandPool() {
        {
            std::lock_guard lock(m_);
            stop_ = true;
        }
        cv_.notify_all();
        for (auto& t : threads_) t.join();
    }
    void post(std::function<void()> job) {
        {
            std::lock_guard lock(m_);
            jobs_.push_back(std::move(job));
        }
        cv_.notify_one();
    }
    // inc over xs, `chunk` elements per job; returns when all are done.
    std::vector<int> map(const std::vector<int>& xs, std::size_t chunk) {
        const std::size_t n = xs.size();
        std::vector<int> out(n);
        std::atomic<std::size_t> left{(n + chunk - 1) / chunk};
        std::mutex dm;
        std::condition_variable dcv;
        for (std::size_t at = 0; at < n; at += chunk) {
            post([&, at] {
                for (std::size_t i = at; i < std::min(at + chunk, n); ++i) out[i] = inc(xs[i]);
                if (left.fetch_sub(1) == 1) {
                    std::lock_guard lock(dm);
                    dcv.notify_one();
                }
            });
        }
        std::unique_lock lock(dm);
        dcv.wait(lock, [&] { return left.load() == 0; });
        return out;
    }

private:
    void work() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock lock(m_);
                cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
                if (jobs_.empty()) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
            }
            job();
        }
    }
    std::mutex m_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> jobs_;
    bool stop_ = false;
    std::vector<std::thread> threads_;
};

// The Python peer: one command line out, one line with the seconds back.
class PythonPeer {
public:
    explicit PythonPeer(unsigned threads)
        : proc_(shmpipe::Command{"python3", {SHMPIPE_THREAD_POOL_BENCH_PY, std::to_string(threads)}}, options()) {
        proc_.start();
    }
    ~PythonPeer() {
        if (proc_.stdin_fd() >= 0) ::close(proc_.stdin_fd());  // EOF: the peer exits
        if (!proc_.join_for(std::chrono::seconds(5))) proc_.stop(std::chrono::milliseconds(500));
    }
    std::optional<double> run(const std::string& what, int n) {
        const std::string cmd = what + " " + std::to_string(n) + "\n";
        if (::write(proc_.stdin_fd(), cmd.data(), cmd.size()) != static_cast<ssize_t>(cmd.size())) return std::nullopt;
        std::string line;
        const auto deadline = Clock::now() + std::chrono::seconds(60);
        while (line.find('\n') == std::string::npos) {
            if (Clock::now() > deadline) return std::nullopt;
            pollfd p{proc_.stdout_fd(), POLLIN, 0};
            if (::poll(&p, 1, 200) <= 0) continue;
            char buf[256];
            const ssize_t got = ::read(proc_.stdout_fd(), buf, sizeof buf);
            if (got <= 0) return std::nullopt;
            line.append(buf, static_cast<std::size_t>(got));
        }
        return std::strtod(line.c_str(), nullptr);
    }

private:
    static shmpipe::ProcessOptions options() {
        shmpipe::ProcessOptions o;
        o.in = shmpipe::Redirect::pipe();
        o.out = shmpipe::Redirect::pipe();
        return o;
    }
    shmpipe::Process proc_;
};

void row(const char* what, double tasks_per_s, double against, const char* against_name) {
    if (against > 0) {
        std::printf("%-46s %12.0f   %6.2fx %s\n", what, tasks_per_s, tasks_per_s / against, against_name);
    } else {
        std::printf("%-46s %12.0f\n", what, tasks_per_s);
    }
}

}  // namespace

int main(int argc, char** argv) {
    unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    int tasks = 10'000;
    int rounds = 41;
    bool python = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&] { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
        if (a == "--threads") threads = static_cast<unsigned>(std::max(1, next()));
        else if (a == "--tasks") tasks = std::max(1, next());
        else if (a == "--rounds") rounds = std::max(1, next());
        else if (a == "--no-python") python = false;
        else {
            std::fprintf(stderr, "usage: thread_pool_bench [--threads N] [--tasks N] [--rounds N] [--no-python]\n");
            return 2;
        }
    }
    std::vector<int> xs(static_cast<std::size_t>(tasks));
    std::iota(xs.begin(), xs.end(), 0);
    const std::size_t chunk = (xs.size() + 4 * threads - 1) / (4 * threads);  // ThreadPool::map's default

    shmpipe::ThreadPool pool(threads);
    shmpipe::ThreadPoolExecutor executor(threads);
    HandPool hand(threads);
    std::optional<PythonPeer> py;
    if (python) py.emplace(threads);

    std::map<std::string, std::vector<double>> rate;  // tasks/s per round
    bool ok = true;
    auto check = [&](const std::vector<int>& out) {
        if (out.size() != xs.size() || out.back() != tasks) ok = false;
    };
    auto time_it = [&](const std::string& key, auto&& body) {
        const auto t0 = Clock::now();
        body();
        rate[key].push_back(tasks / seconds_since(t0));
    };
    for (int r = -1; r < rounds; ++r) {  // round -1 warms every contender up and is dropped
        // The same inlinable callable everywhere (the hand-written pool calls inc directly).
        const auto task = [](int x) { return inc(x); };
        time_it("pool_map_default", [&] { check(pool.map(task, xs)); });
        time_it("pool_map_chunk1", [&] { check(pool.map(task, xs, 1)); });
        time_it("executor_map", [&] { check(executor.map(task, xs)); });
        time_it("hand_per_task", [&] { check(hand.map(xs, 1)); });
        time_it("hand_chunked", [&] { check(hand.map(xs, chunk)); });
        if (py) {
            for (const char* what : {"executor", "dummy"}) {
                auto s = py->run(what, tasks);
                if (!s) {
                    std::fprintf(stderr, "thread_pool_bench: the Python peer did not answer (%s)\n", what);
                    return 1;
                }
                rate[std::string("py_") + what].push_back(tasks / *s);
            }
        }
        if (r < 0) rate.clear();
    }
    if (!ok) {
        std::fprintf(stderr, "thread_pool_bench: a map returned a wrong result\n");
        return 1;
    }
    auto med = [&](const char* k) { return bench::median(rate[k]); };
    std::printf("thread_pool_bench: %d trivial tasks, %u threads, %d interleaved rounds (medians), %u CPUs online\n",
                tasks, threads, rounds, std::thread::hardware_concurrency());
    std::printf("%-46s %12s   %s\n", "contender", "tasks/s", "ratio");
    std::printf("one queue entry per task:\n");
    row("  shmpipe ThreadPool::map, chunksize 1", med("pool_map_chunk1"), med("hand_per_task"), "of hand-written");
    row("  shmpipe ThreadPoolExecutor::map", med("executor_map"), med("hand_per_task"), "of hand-written");
    row("  hand-written std::thread + std::mutex pool", med("hand_per_task"), 0, "");
    if (py) {
        row("  Python ThreadPoolExecutor.map", med("py_executor"), 0, "");
        row("  shmpipe ThreadPool::map, chunksize 1", med("pool_map_chunk1"), med("py_executor"), "of Python executor");
    }
    std::printf("chunked (%zu tasks per chunk in C++):\n", chunk);
    row("  shmpipe ThreadPool::map, default chunks", med("pool_map_default"), med("hand_chunked"), "of hand-written");
    row("  hand-written pool, same chunks", med("hand_chunked"), 0, "");
    if (py) {
        row("  Python multiprocessing.dummy.Pool.map", med("py_dummy"), 0, "");
        row("  shmpipe ThreadPool::map, default chunks", med("pool_map_default"), med("py_dummy"), "of Python dummy Pool");
    }
    return 0;
}
