// Python:
//   def work(n): print(f"worker {n}")
//   for n in range(5): Process(target=work, args=(n,)).start()
// A non-daemon child is waited for when its handle goes, so every line is printed.
#include <shmpipe/process.hpp>

#include <cstdio>

void work(int n) { std::printf("worker %d\n", n); }

int main() {
    for (int n = 0; n < 5; ++n) shmpipe::Process([n] { work(n); }).start();
}
