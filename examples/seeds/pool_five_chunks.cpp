// Python:
//   def partial_sum(r): return sum(x * x for x in range(*r))
//   with Pool(3) as pool: print(sum(pool.map(partial_sum, chunks)))   # 5 chunks of 1..150000
#include <shmpipe/pool.hpp>

#include <cstdio>
#include <numeric>
#include <utility>
#include <vector>

long long partial_sum(std::pair<long long, long long> range) {
    long long s = 0;
    for (long long x = range.first; x < range.second; ++x) s += x * x;
    return s;
}

int main() {
    std::vector<std::pair<long long, long long>> chunks;
    for (long long start = 1; start <= 150000; start += 30000) chunks.emplace_back(start, start + 30000);
    shmpipe::Pool pool(3);
    auto sums = pool.map(partial_sum, chunks);
    std::printf("%zu chunks, sum of squares 1..150000 = %lld\n", sums.size(),
                std::accumulate(sums.begin(), sums.end(), 0LL));
}
