// inspect-queues metrics|serve: the Prometheus face of inspect-queues (metrics.cpp).
#pragma once

#include <string>
#include <vector>

namespace inspect_queues {

struct MetricsOptions {
    std::vector<std::string> patterns;  // glob patterns on names; empty = all
};
struct ServeOptions {
    std::vector<std::string> patterns;
    std::string listen = "127.0.0.1:9464";
};

// Prints every matching object's metrics once, in the Prometheus text format.
int run_metrics(const MetricsOptions& options);
// Serves the same at http://LISTEN/metrics until SIGINT or SIGTERM (then exits 0).
int run_serve(const ServeOptions& options);

}  // namespace inspect_queues
