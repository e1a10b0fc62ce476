// A program that uses an installed shmpipe as a user would: the umbrella header, a queue
// between this process and a child started with shmpipe::Process, and a spec parsed with
// the pipeline library. Prints "shmpipe X.Y.Z consumer ok" and exits 0 when all of it works.
#include <shmpipe/shmpipe.hpp>

#include <cstdint>
#include <iostream>
#include <string>
#include <unistd.h>

static_assert(SHMPIPE_VERSION_MAJOR >= 0 && SHMPIPE_VERSION >= 200, "built against shmpipe 0.2 or later");

int main() {
    const std::string name = "consumer-test-" + std::to_string(::getpid());
    shmpipe::QueueOptions opt;
    opt.producers = shmpipe::Endpoints::one;
    opt.consumers = shmpipe::Endpoints::one;
    auto queue = shmpipe::Queue::create(name, opt);  // removed when `queue` goes

    shmpipe::Process child([name] {
        shmpipe::Producer<std::uint64_t> tx(name);
        for (std::uint64_t i = 1; i <= 1000; ++i) tx.push(i);
        tx.close();
    });
    child.start();
    shmpipe::Consumer<std::uint64_t> rx(name);
    std::uint64_t sum = 0;
    while (auto v = rx.pop()) sum += *v;
    child.join();
    if (child.exit_code() != 0 || sum != 500500) {
        std::cerr << "consumer: child exit " << child.exit_code().value_or(-1) << ", sum " << sum << "\n";
        return 1;
    }

    const auto spec = shmpipe::parse_spec("[pipeline]\nname = \"p\"\n[[stage]]\nname = \"s\"\ncmd = [\"true\"]\n", "inline");
    if (spec.stages.size() != 1) return 1;
    std::cout << "shmpipe " << shmpipe::kVersion << " consumer ok\n";
    return 0;
}
