// expect: compiles
// The control: the calls of the failing snippets, written right, compile with the same setup.
#include <shmpipe/pool.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>
int add(int a, int b) { return a + b; }
void fill(const std::vector<int>& in) { std::printf("%zu\n", in.size()); }
void show(int x) { std::printf("%d\n", x); }
int main() {
    shmpipe::Pool pool(2);
    auto r = pool.apply_async([](int x) { return x + 10; }, 1);
    std::printf("%d\n", r.get_for(std::chrono::duration<double>(2.1)));
    std::printf("%d\n", pool.apply_async(add, 1, 2).get());
    pool.apply(fill, std::vector<int>{1, 2});
    pool.apply_async(add, 1, 2, shmpipe::callback([](int s) { std::printf("%d\n", s); }),
                     shmpipe::error_callback([](std::exception_ptr) {}));
    std::vector<int> xs{1, 2, 3};
    pool.map(show, xs);  // a void task: map returns nothing
    for (int y : pool.imap([](int x) { return x * x; }, xs)) std::printf("%d\n", y);
}
