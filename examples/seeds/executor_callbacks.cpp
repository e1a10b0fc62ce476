// Python:
//   with ProcessPoolExecutor(2) as ex:
//       for n in range(4):
//           ex.submit(cube, n).add_done_callback(lambda f: print("done:", f.result()))
//   print("executor closed")        # leaving `with` waits for every task
#include <shmpipe/pool.hpp>

#include <cstdio>

int cube(int n) { return n * n * n; }

int main() {
    {
        shmpipe::ProcessPoolExecutor ex(2);
        for (int n = 0; n < 4; ++n) {
            ex.submit(cube, n).add_done_callback([](const shmpipe::Future<int>& f) {
                std::printf("done: %d\n", f.result());
            });
        }
    }
    std::printf("executor closed\n");
}
