// expect: tasks must be plain functions or captureless lambdas
#include <shmpipe/pool.hpp>
#include <cstdio>
int main() {
    shmpipe::Pool pool(2);
    int offset = 10;
    auto r = pool.apply_async([offset](int x) { return x + offset; }, 1);
    std::printf("%d\n", r.get());
}
