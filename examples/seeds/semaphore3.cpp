// Python:
//   sem = Semaphore(3)
//   def worker(i):
//       with sem:                       # at most three inside at once
//           inside.value += 1; peak = max(peak, inside.value); time.sleep(0.05); inside.value -= 1
//   8 processes; print("at most", peak.value, "at once")
#include <shmpipe/process.hpp>
#include <shmpipe/semaphore.hpp>
#include <shmpipe/shared_array.hpp>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "seed_name.hpp"

int main() {
    auto sem = shmpipe::Semaphore::create(seed_name("sem"), 3);
    auto inside = shmpipe::SharedValue<int>::create(seed_name("inside"), 0);
    auto peak = shmpipe::SharedValue<int>::create(seed_name("peak"), 0);
    std::vector<shmpipe::Process> procs;
    for (int i = 0; i < 8; ++i) {
        procs.emplace_back([&] {
            sem.acquire();
            const int now = inside.fetch_add(1) + 1;
            int seen = peak.load();
            while (now > seen && !peak.compare_exchange(seen, now)) {
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            inside.fetch_sub(1);
            sem.release();
        });
    }
    for (auto& p : procs) p.start();
    for (auto& p : procs) p.join();
    std::printf("8 workers, at most %s at once\n", peak.load() <= 3 ? "3" : "MORE THAN 3");
}
