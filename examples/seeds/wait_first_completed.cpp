// Python:
//   with ProcessPoolExecutor(2) as ex:
//       fast, slow = ex.submit(nap, 0), ex.submit(nap, 2)
//       done, not_done = wait([fast, slow], return_when=FIRST_COMPLETED)
//       print(len(done), "done,", len(not_done), "not done, first result", done.pop().result())
#include <shmpipe/pool.hpp>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

int nap(int seconds) {
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    return seconds;
}

int main() {
    shmpipe::ProcessPoolExecutor ex(2);
    std::vector<shmpipe::Future<int>> futures{ex.submit(nap, 0), ex.submit(nap, 2)};
    auto [done, not_done] = shmpipe::wait(futures, shmpipe::ReturnWhen::first_completed);
    std::printf("%zu done, %zu not done, first result %d\n", done.size(), not_done.size(), done.front().result());
}
