// Python:
//   lock = RLock()
//   def deposit(n):
//       with lock: balance.value += n
//   def transfer(n):
//       with lock: deposit(n); deposit(n)   # takes the lock again: fine with an RLock
//   3 processes each transfer(5) ten times; print(balance.value)   # 300
#include <shmpipe/mutex.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/shared_array.hpp>

#include <cstdio>
#include <mutex>
#include <vector>

#include "seed_name.hpp"

int main() {
    auto lock = shmpipe::RecursiveMutex::create(seed_name("rlock"));
    auto balance = shmpipe::SharedValue<int>::create(seed_name("balance"), 0);
    auto deposit = [&](int n) {
        std::lock_guard guard(lock);
        balance.store(balance.load() + n);
    };
    auto transfer = [&](int n) {
        std::lock_guard guard(lock);
        deposit(n);
        deposit(n);
    };
    std::vector<shmpipe::Process> procs;
    for (int i = 0; i < 3; ++i) {
        procs.emplace_back([&] {
            for (int k = 0; k < 10; ++k) transfer(5);
        });
    }
    for (auto& p : procs) p.start();
    for (auto& p : procs) p.join();
    std::printf("balance = %d\n", balance.load());
}
