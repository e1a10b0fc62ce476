// expect: wrong number of arguments for the task
#include <shmpipe/pool.hpp>
#include <cstdio>
int add(int a, int b) { return a + b; }
int main() {
    shmpipe::Pool pool(2);
    auto r = pool.apply_async(add, 1);
    std::printf("%d\n", r.get());
}
