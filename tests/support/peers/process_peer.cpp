// A parent for the "parent killed -> children gone" tests.
//
//   process_peer tree            starts two function children and one program (sleep 600),
//                                prints "pids <a> <b> <c>" and sleeps until killed.
#include <shmpipe/process.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

int main(int argc, char** argv) {
    const std::string role = argc > 1 ? argv[1] : "";
    if (role == "tree") {
        shmpipe::Process a([] { std::this_thread::sleep_for(std::chrono::seconds(600)); });
        shmpipe::Process b([] { std::this_thread::sleep_for(std::chrono::seconds(600)); });
        shmpipe::Process c(shmpipe::Command{"sleep", {"600"}});
        a.start();
        b.start();
        c.start();
        std::printf("pids %d %d %d\n", a.pid(), b.pid(), c.pid());
        std::fflush(stdout);
        std::this_thread::sleep_for(std::chrono::seconds(600));
        return 0;
    }
    std::fprintf(stderr, "usage: process_peer tree\n");
    return 2;
}
