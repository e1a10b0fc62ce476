// Python:
//   b = Barrier(3)
//   def party(i): arrived.value += 1; b.wait(); print(f"party {i} passed with {arrived.value} arrived")
//   3 processes
#include <shmpipe/barrier.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/shared_array.hpp>

#include <cstdio>
#include <vector>

#include "seed_name.hpp"

int main() {
    auto b = shmpipe::Barrier::create(seed_name("barrier"), 3);
    auto arrived = shmpipe::SharedValue<int>::create(seed_name("arrived"), 0);
    std::vector<shmpipe::Process> parties;
    for (int i = 0; i < 3; ++i) {
        parties.emplace_back([&, i] {
            arrived.fetch_add(1);
            b.wait();
            std::printf("party %d passed with %d arrived\n", i, arrived.load());
        });
    }
    for (auto& p : parties) p.start();
    for (auto& p : parties) p.join();
}
