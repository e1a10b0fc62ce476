// Python:
//   with Pool(2) as pool:
//       r = pool.apply_async(square, (7,)); print(r.get(timeout=10))
//       slow = pool.apply_async(time.sleep, (30,))
//       try: slow.get(timeout=0.5)
//       except TimeoutError: print("TimeoutError")
// Leaving the scope terminates the pool (as `with Pool()` does), so the sleeper goes.
#include <shmpipe/pool.hpp>

#include <chrono>
#include <cstdio>
#include <thread>

using namespace std::chrono_literals;

int square(int x) { return x * x; }
void nap(int seconds) { std::this_thread::sleep_for(std::chrono::seconds(seconds)); }

int main() {
    shmpipe::Pool pool(2);
    auto r = pool.apply_async(square, 7);
    std::printf("%d\n", r.get_for(std::chrono::duration<double>(10.0)));
    auto slow = pool.apply_async(nap, 30);
    try {
        slow.get_for(0.5s);
        std::printf("no timeout?\n");
    } catch (const shmpipe::Error& e) {
        if (e.code() == shmpipe::errc::timeout) std::printf("TimeoutError\n");
    }
}
