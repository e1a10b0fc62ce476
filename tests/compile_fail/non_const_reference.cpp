// expect: cannot take non-const references
#include <shmpipe/pool.hpp>
#include <vector>
void fill(std::vector<int>& out) { out.push_back(1); }
int main() {
    shmpipe::Pool pool(2);
    std::vector<int> v;
    pool.apply(fill, v);
}
