// pipeline-launch --metrics-listen ADDR: the run's metrics at http://ADDR/metrics for as long
// as the run lasts. Per queue, the same families as `inspect-queues metrics` (labelled with
// the pipeline's name); per stage, replicas by state, restarts, failures and exit codes.
#pragma once

#include "metrics_text.hpp"

#include <shmpipe/graph.hpp>

#include <functional>
#include <memory>
#include <string>

namespace pipeline_launch {

class RunMetrics {
public:
    // Binds at once (before the run starts, so a bad address fails early); prints the URL on
    // stderr, and a warning for a non-loopback address. Throws like HttpServer.
    explicit RunMetrics(const std::string& listen);
    ~RunMetrics();
    RunMetrics(const RunMetrics&) = delete;
    RunMetrics& operator=(const RunMetrics&) = delete;

    // Supervises `graph` (started) to its end, answering scrapes in between; returns join().
    shmpipe::GraphResult join(shmpipe::Graph& graph);
    // Answers the scrapes waiting now, from `graph` (for callers with their own supervision loop).
    void serve(const shmpipe::Graph& graph);

    // The metrics text of `graph` now (what a scrape returns, without the extra families).
    static std::string render(const shmpipe::Graph& graph);
    // More families written into each scrape after the graph's (the bridges of a multi-host run).
    void set_extra(std::function<void(shmpipe::metrics::TextWriter&)> extra);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pipeline_launch
