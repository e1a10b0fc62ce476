// Python:
//   def waiter(e, i): e.wait(); print(f"waiter {i} saw the event")
//   e = Event(); 3 processes; time.sleep(0.1); print("setting"); e.set(); join all
#include <shmpipe/event.hpp>
#include <shmpipe/process.hpp>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "seed_name.hpp"

int main() {
    auto e = shmpipe::Event::create(seed_name("event"));
    std::vector<shmpipe::Process> procs;
    for (int i = 0; i < 3; ++i) {
        procs.emplace_back([&e, i] {
            e.wait();
            std::printf("waiter %d saw the event\n", i);
        });
    }
    for (auto& p : procs) p.start();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::printf("setting the event\n");
    std::fflush(stdout);
    e.set();
    for (auto& p : procs) p.join();
}
