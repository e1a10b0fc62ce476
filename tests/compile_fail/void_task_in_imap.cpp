// expect: the task returns void, so there is no result
#include <shmpipe/pool.hpp>
#include <cstdio>
#include <vector>
void show(int x) { std::printf("%d\n", x); }
int main() {
    shmpipe::Pool pool(2);
    std::vector<int> xs{1, 2, 3};
    for (auto r : pool.imap(show, xs)) (void)r;
}
