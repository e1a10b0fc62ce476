// pipeline-launch benchmark, two parts, each one run of real processes:
//   1. Unix programs: `seq 1 N | grep 7$ | sort -n` as a shell pipeline and as a
//      pipeline-launch spec (stdout/stdin adapters, grep with R replicas: line-batched
//      queues; R = 1: both edges are pipe edges); prints both times and the throughput
//      ratio (launcher / shell; > 1 means the launcher is faster).
//   2. A native fan-out pool (source -> W workers -> collector, examples/*.cpp) moving M
//      small messages (8 bytes) through two MPMC queues; prints messages per second,
//      launcher start-up and teardown included.
// Usage: launch_bench [N=2000000] [R=2] [M=10000000] [W=2]
// Programs are found beside this binary (<build>/bin).
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

std::string self_dir() {
    char buf[PATH_MAX];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return ".";
    std::string p(buf, static_cast<std::size_t>(n));
    return p.substr(0, p.rfind('/'));
}

// Runs argv with stdout to out_path (or /dev/null) and stderr to /dev/null; returns seconds.
double run(const std::vector<std::string>& argv, const char* out_path = "/dev/null") {
    const auto t0 = std::chrono::steady_clock::now();
    const pid_t pid = ::fork();
    if (pid < 0) {
        std::perror("fork");
        std::exit(1);
    }
    if (pid == 0) {
        const int out = ::open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        const int null = ::open("/dev/null", O_WRONLY);
        ::dup2(out, 1);
        ::dup2(null, 2);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "launch_bench: %s failed (status %d)\n", argv[0].c_str(), status);
        std::exit(1);
    }
    return s;
}

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
    const unsigned long long n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 2000000;
    const unsigned long long replicas = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 2;
    const unsigned long long m = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 10000000;
    const unsigned long long workers = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 2;
    const std::string bin = self_dir();
    const std::string launcher = bin + "/pipeline-launch";
    char tmpl[] = "/tmp/launch-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return 1;
    const std::string dir = tmpl;
    const std::string name = "bench-" + std::to_string(::getpid());

    // 1. Unix programs.
    const std::string unix_spec = dir + "/unix.toml";
    std::ofstream(unix_spec) << "[pipeline]\nname = \"" << name << "\"\n"
                             << "[[queue]]\nname = \"numbers\"\ncapacity = \"4MiB\"\nmax_message = 256\n"
                             << "[[queue]]\nname = \"matches\"\ncapacity = \"1MiB\"\nmax_message = 256\n"
                             << "[[stage]]\nname = \"seq\"\ncmd = [\"seq\", \"1\", \"" << n << "\"]\nstdout = \"numbers\"\n"
                             << "[[stage]]\nname = \"grep\"\ncmd = [\"grep\", \"7$\"]\nstdin = \"numbers\"\n"
                             << "stdout = \"matches\"\nsuccess_codes = [0, 1]\nreplicas = " << replicas << "\n"
                             << "[[stage]]\nname = \"sort\"\ncmd = [\"sort\", \"-n\"]\nstdin = \"matches\"\nstdout = \"inherit\"\n";
    const std::string shell_cmd = "seq 1 " + std::to_string(n) + " | grep '7$' | sort -n";
    const double shell_s = run({"/bin/sh", "-c", shell_cmd}, (dir + "/shell.out").c_str());
    const double launch_s = run({launcher, "--no-status", "-q", unix_spec}, (dir + "/launch.out").c_str());
    const bool same = slurp(dir + "/shell.out") == slurp(dir + "/launch.out");
    std::printf("unix pipeline, %llu lines (grep x%llu in the launcher):\n", n, replicas);
    std::printf("  shell          %8.3f s  %12.0f lines/s\n", shell_s, static_cast<double>(n) / shell_s);
    std::printf("  pipeline-launch%8.3f s  %12.0f lines/s\n", launch_s, static_cast<double>(n) / launch_s);
    std::printf("  throughput ratio launcher/shell = %.2f, outputs %s\n", shell_s / launch_s,
                same ? "identical" : "DIFFER");

    // 2. Native fan-out pool.
    const std::string pool_spec = dir + "/pool.toml";
    std::ofstream(pool_spec) << "[pipeline]\nname = \"" << name << "\"\n"
                             << "[[queue]]\nname = \"tasks\"\ncapacity = \"1MiB\"\nmax_message = 16\n"
                             << "[[queue]]\nname = \"results\"\ncapacity = \"1MiB\"\nmax_message = 16\n"
                             << "[[stage]]\nname = \"source\"\ncmd = [\"" << bin << "/source\", \"" << m
                             << "\"]\noutputs = [\"tasks\"]\n"
                             << "[[stage]]\nname = \"worker\"\ncmd = [\"" << bin
                             << "/worker\", \"{queue.tasks}\", \"{queue.results}\"]\ninputs = [\"tasks\"]\n"
                             << "outputs = [\"results\"]\nreplicas = " << workers << "\n"
                             << "[[stage]]\nname = \"collector\"\ncmd = [\"" << bin << "/collector\"]\ninputs = [\"results\"]\n";
    const double pool_s = run({launcher, "--no-status", "-q", pool_spec}, (dir + "/pool.out").c_str());
    const std::string pool_out = slurp(dir + "/pool.out");
    std::printf("native fan-out pool, %llu messages of 8 bytes, 1 source -> %llu workers -> 1 collector:\n", m, workers);
    std::printf("  %8.3f s  %12.0f msgs/s end to end (each message crosses 2 queues)\n", pool_s,
                static_cast<double>(m) / pool_s);
    std::printf("  %s", pool_out.c_str());

    std::remove((dir + "/unix.toml").c_str());
    std::remove((dir + "/pool.toml").c_str());
    std::remove((dir + "/shell.out").c_str());
    std::remove((dir + "/launch.out").c_str());
    std::remove((dir + "/pool.out").c_str());
    ::rmdir(dir.c_str());
    return same ? 0 : 1;
}
