// Python:
//   def add(lock, counter):
//       for _ in range(1000):
//           with lock: counter.value += 1
//   lock = Lock(); counter = Value('i', 0); 4 processes; print(counter.value)  # 4000
#include <shmpipe/mutex.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/shared_array.hpp>

#include <cstdio>
#include <mutex>
#include <vector>

#include "seed_name.hpp"

int main() {
    auto lock = shmpipe::Mutex::create(seed_name("lock"));
    auto counter = shmpipe::SharedValue<int>::create(seed_name("counter"), 0);
    std::vector<shmpipe::Process> procs;
    for (int i = 0; i < 4; ++i) {
        procs.emplace_back([&] {
            for (int k = 0; k < 1000; ++k) {
                std::lock_guard guard(lock);
                counter.store(counter.load() + 1);  // a read-modify-write the lock protects
            }
        });
    }
    for (auto& p : procs) p.start();
    for (auto& p : procs) p.join();
    std::printf("counter = %d\n", counter.load());
}
