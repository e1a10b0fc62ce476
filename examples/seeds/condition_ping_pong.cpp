// Python:
//   cond = Condition(); turn = Value('i', 0)
//   def player(me, word):
//       for _ in range(3):
//           with cond:
//               cond.wait_for(lambda: turn.value == me)
//               print(word); turn.value = 1 - me; cond.notify_all()
//   Process(target=player, args=(0, "ping")), Process(target=player, args=(1, "pong"))
#include <shmpipe/condition.hpp>
#include <shmpipe/mutex.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/shared_array.hpp>

#include <cstdio>
#include <mutex>

#include "seed_name.hpp"

int main() {
    auto lock = shmpipe::Mutex::create(seed_name("cond-lock"));
    auto cond = shmpipe::Condition::create(seed_name("cond"));
    auto turn = shmpipe::SharedValue<int>::create(seed_name("turn"), 0);
    auto player = [&](int me, const char* word) {
        for (int round = 0; round < 3; ++round) {
            std::unique_lock guard(lock);
            cond.wait(guard, [&] { return turn.load() == me; });
            std::printf("%s\n", word);
            std::fflush(stdout);
            turn.store(1 - me);
            cond.notify_all();
        }
    };
    shmpipe::Process ping([&] { player(0, "ping"); });
    shmpipe::Process pong([&] { player(1, "pong"); });
    ping.start();
    pong.start();
    ping.join();
    pong.join();
}
