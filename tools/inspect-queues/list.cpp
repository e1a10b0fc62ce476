// inspect-queues list [PATTERN...]: one line per object, sorted by name, aligned.
#include "commands.hpp"

#include <iostream>

namespace inspect_queues {

int run_list(const ListOptions& options) {
    shmpipe::InspectOptions io;
    io.catch_sigbus = true;
    io.patterns = options.patterns;
    const auto infos = shmpipe::inspect_all(io);
    if (options.json) {
        std::cout << to_json_array(infos) << '\n';
        return 0;
    }
    if (infos.empty()) {
        std::cout << (options.patterns.empty() ? "no shmpipe objects in /dev/shm\n" : "no matching shmpipe objects\n");
        return 0;
    }
    std::vector<std::vector<std::string>> rows{list_header()};
    for (const auto& o : infos) rows.push_back(list_row(o));
    print_table(std::cout, rows, list_alignment());
    return 0;
}

}  // namespace inspect_queues
