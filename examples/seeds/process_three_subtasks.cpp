// Python: three different functions in three processes, started together, then joined.
#include <shmpipe/process.hpp>

#include <cstdio>

void square(int x) { std::printf("square of %d is %d\n", x, x * x); }
void cube(int x) { std::printf("cube of %d is %d\n", x, x * x * x); }
void greet(const char* who) { std::printf("hello, %s\n", who); }

int main() {
    shmpipe::Process p1([] { square(4); });
    shmpipe::Process p2([] { cube(3); });
    shmpipe::Process p3([] { greet("world"); });
    p1.start();
    p2.start();
    p3.start();
    p1.join();
    p2.join();
    p3.join();
    std::printf("all three done\n");
}
