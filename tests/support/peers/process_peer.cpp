// A parent for the "parent killed -> children gone" tests.
//
//   process_peer tree            starts two function children and one program (sleep 600),
//                                prints "pids <a> <b> <c>" and sleeps until killed.
//   process_peer pool <n>        makes a Pool(n), gives every worker a task that sleeps,
//                                prints "pids <worker pids...>" and sleeps until killed.
#include <shmpipe/pool.hpp>
#include <shmpipe/process.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

int sleep_long(int seconds) {
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    return seconds;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string role = argc > 1 ? argv[1] : "";
    if (role == "tree") {
        // Daemons: the test kills this peer; its children must die with it (parent-death signal).
        shmpipe::ProcessOptions daemon;
        daemon.daemon = true;
        shmpipe::Process a([] { std::this_thread::sleep_for(std::chrono::seconds(600)); }, daemon);
        shmpipe::Process b([] { std::this_thread::sleep_for(std::chrono::seconds(600)); }, daemon);
        shmpipe::Process c(shmpipe::Command{"sleep", {"600"}}, daemon);
        a.start();
        b.start();
        c.start();
        std::printf("pids %d %d %d\n", a.pid(), b.pid(), c.pid());
        std::fflush(stdout);
        std::this_thread::sleep_for(std::chrono::seconds(600));
        return 0;
    }
    if (role == "pool" && argc > 2) {
        const int n = std::atoi(argv[2]);
        shmpipe::Pool pool(static_cast<unsigned>(n));
        std::vector<shmpipe::AsyncResult<int>> busy;
        for (int i = 0; i < n; ++i) busy.push_back(pool.apply_async(sleep_long, 600));
        std::printf("pids");
        for (int pid : pool.worker_pids()) std::printf(" %d", pid);
        std::printf("\n");
        std::fflush(stdout);
        std::this_thread::sleep_for(std::chrono::seconds(600));
        return 0;
    }
    std::fprintf(stderr, "usage: process_peer tree | pool <n>\n");
    return 2;
}
