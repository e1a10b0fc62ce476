// inspect-queues clean [--dry-run] [--corrupt] [PATTERN...]: removes stale objects (no live
// process attached, creator dead) and, with --corrupt, corrupt ones; says what it removed.
// Never touches an object with a live endpoint or a live creator (shmpipe::clean re-checks
// each one, and its identity, right before unlinking it).
#include "commands.hpp"

#include <boost/json.hpp>

#include <iostream>

namespace inspect_queues {

int run_clean(const CleanOptions& options) {
    shmpipe::InspectOptions io;
    io.catch_sigbus = true;
    io.patterns = options.patterns;
    const auto results = shmpipe::clean(options.corrupt, options.dry_run, io);
    int status = 0;
    if (options.json) {
        // One object per line, like `list --json`.
        std::string out = "[";
        for (std::size_t i = 0; i < results.size(); ++i) {
            const auto& r = results[i];
            boost::json::object o;
            o["name"] = r.name;
            o["state"] = std::string(shmpipe::to_string(r.state));
            o["reason"] = r.reason;
            o["removed"] = r.removed;
            o["dry_run"] = options.dry_run;
            if (!r.error.empty()) o["error"] = r.error;
            out += (i == 0 ? "\n  " : ",\n  ") + boost::json::serialize(o);
            if (!r.error.empty()) status = 1;
        }
        out += results.empty() ? "]" : "\n]";
        std::cout << out << '\n';
        for (const auto& r : results) {
            if (!r.error.empty()) std::cerr << "inspect-queues: error: cannot remove \"" << r.name << "\": " << r.error << '\n';
        }
        return status;
    }
    std::size_t removed = 0;
    for (const auto& r : results) {
        if (!r.error.empty()) {
            std::cerr << "inspect-queues: error: cannot remove \"" << r.name << "\": " << r.error
                      << " (owned by another user? /dev/shm is sticky)\n";
            status = 1;
        } else if (options.dry_run) {
            std::cout << "would remove " << r.name << " (" << r.reason << ")\n";
        } else if (r.removed) {
            std::cout << "removed " << r.name << " (" << r.reason << ")\n";
            ++removed;
        } else {
            std::cout << "skipped " << r.name << " (" << r.reason << ")\n";
        }
    }
    if (results.empty()) {
        std::cout << "nothing to clean\n";
    } else if (!options.dry_run) {
        std::cout << removed << (removed == 1 ? " object" : " objects") << " removed\n";
    }
    return status;
}

}  // namespace inspect_queues
