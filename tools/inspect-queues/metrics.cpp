// inspect-queues metrics [PATTERN...] and inspect-queues serve [--listen ADDR] [PATTERN...]:
// every object's gauges and counters in the Prometheus text format (tools/common/metrics_text),
// printed once or served at /metrics (tools/common/metrics_http). Each scrape inspects afresh,
// read-only, like `list`.
#include "metrics_commands.hpp"

#include "cli_util.hpp"
#include "metrics_http.hpp"
#include "metrics_text.hpp"
#include "stop_signals.hpp"

#include <shmpipe/inspect.hpp>

#include <iostream>

namespace inspect_queues {

namespace {

std::string render(const std::vector<std::string>& patterns) {
    shmpipe::InspectOptions io;
    io.catch_sigbus = true;
    io.patterns = patterns;
    shmpipe::metrics::TextWriter out;
    shmpipe::metrics::write_objects(out, shmpipe::inspect_all(io));
    shmpipe::metrics::write_build_info(out, "inspect-queues");
    return out.text();
}

}  // namespace

int run_metrics(const MetricsOptions& options) {
    std::cout << render(options.patterns) << std::flush;
    return 0;
}

int run_serve(const ServeOptions& options) {
    const auto address = shmpipe::metrics::parse_listen_address(options.listen);
    shmpipe::metrics::HttpServer server(address, [&] { return render(options.patterns); });
    if (!address.loopback) {
        shmpipe::cli::print_warning("inspect-queues", "serving on " + options.listen +
                                                          ", reachable from other machines: the metrics name "
                                                          "every object and its processes (loopback is 127.0.0.1)");
    }
    shmpipe::cli::install_stop_handlers();
    std::cerr << "inspect-queues: serving metrics at " << server.url() << " (Ctrl-C stops)" << std::endl;
    while (!shmpipe::cli::stop_requested()) server.poll(std::chrono::milliseconds(200));
    return 0;
}

}  // namespace inspect_queues
