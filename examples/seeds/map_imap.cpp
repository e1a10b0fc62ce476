// Python:
//   with Pool(4) as pool:
//       print(pool.map(f, range(10)))
//       for x in pool.imap(f, range(10)): print(x, end=" ")
//       print(sorted(pool.imap_unordered(f, range(10))))
#include <shmpipe/pool.hpp>

#include <algorithm>
#include <cstdio>
#include <vector>

int f(int x) { return x * x; }

void print(const std::vector<int>& v) {
    for (int x : v) std::printf("%d ", x);
    std::printf("\n");
}

int main() {
    std::vector<int> xs{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    shmpipe::Pool pool(4);
    print(pool.map(f, xs));
    for (int x : pool.imap(f, xs)) std::printf("%d ", x);
    std::printf("\n");
    std::vector<int> unordered;
    for (int x : pool.imap_unordered(f, xs)) unordered.push_back(x);
    std::sort(unordered.begin(), unordered.end());
    print(unordered);
}
