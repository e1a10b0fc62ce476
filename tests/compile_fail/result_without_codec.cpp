// expect: result type has no shmpipe::Codec
#include <shmpipe/pool.hpp>
#include <map>
#include <string>
std::map<std::string, int> count_words(std::string text) { return {{text, 1}}; }
int main() {
    shmpipe::Pool pool(2);
    auto r = pool.apply_async(count_words, std::string("a b"));
    return static_cast<int>(r.get().size());
}
