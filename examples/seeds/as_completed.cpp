// Python:
//   with ProcessPoolExecutor(3) as ex:
//       futures = [ex.submit(slow_square, n) for n in (3, 1, 2)]
//       for f in as_completed(futures, timeout=30): print(f.result())
#include <shmpipe/pool.hpp>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

int slow_square(int n) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100 * n));
    return n * n;
}

int main() {
    shmpipe::ProcessPoolExecutor ex(3);
    std::vector<shmpipe::Future<int>> futures;
    for (int n : {3, 1, 2}) futures.push_back(ex.submit(slow_square, n));
    int finished = 0;
    for (const auto& f : shmpipe::as_completed(futures, 30s)) {
        std::printf("%d\n", f.result());
        ++finished;
    }
    std::printf("%d futures completed\n", finished);
}
