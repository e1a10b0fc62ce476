// expect: an argument type of the task has no shmpipe::Codec
#include <shmpipe/pool.hpp>
#include <map>
#include <string>
int count(std::map<std::string, int> words) { return static_cast<int>(words.size()); }
int main() {
    shmpipe::Pool pool(2);
    std::map<std::string, int> words{{"a", 1}};
    return pool.apply(count, words);
}
