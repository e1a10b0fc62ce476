// The metrics of a running graph. Stage families (labels pipeline, stage):
//   shmpipe_stage_replicas{state}       replicas running, exited, or waiting (not started yet,
//                                       or between an exit and a restart)
//   shmpipe_stage_restarts_total        restarts of the stage's replicas
//   shmpipe_stage_failed_replicas       replicas counted as failures
//   shmpipe_stage_exit_code{replica}    the last exit code of each replica that exited
//                                       (-N: killed by signal N)
// plus shmpipe_pipeline_uptime_seconds, and every queue of the run as `inspect-queues metrics`
// shows it (tools/common/metrics_text), from a read-only inspection of its object.
#include "run_metrics.hpp"

#include "cli_util.hpp"
#include "metrics_http.hpp"
#include "metrics_text.hpp"

#include <shmpipe/error.hpp>
#include <shmpipe/inspect.hpp>

#include <chrono>
#include <iostream>

namespace pipeline_launch {

namespace metrics = shmpipe::metrics;

struct RunMetrics::Impl {
    std::unique_ptr<metrics::HttpServer> server;
    const shmpipe::Graph* graph = nullptr;  // set while join() runs
    std::function<void(metrics::TextWriter&)> extra;
};

RunMetrics::RunMetrics(const std::string& listen) : impl_(std::make_unique<Impl>()) {
    const auto address = metrics::parse_listen_address(listen);
    impl_->server = std::make_unique<metrics::HttpServer>(address, [this] {
        if (impl_->graph == nullptr) return std::string();
        std::string text = render(*impl_->graph);
        if (impl_->extra) {
            metrics::TextWriter more;
            impl_->extra(more);
            text += more.text();
        }
        return text;
    });
    if (!address.loopback) {
        shmpipe::cli::print_warning("pipeline-launch", "serving metrics on " + listen +
                                                           ", reachable from other machines (loopback is 127.0.0.1)");
    }
    std::cerr << "pipeline-launch: serving metrics at " << impl_->server->url() << std::endl;
}

RunMetrics::~RunMetrics() = default;

void RunMetrics::set_extra(std::function<void(metrics::TextWriter&)> extra) { impl_->extra = std::move(extra); }

shmpipe::GraphResult RunMetrics::join(shmpipe::Graph& graph) {
    impl_->graph = &graph;
    // Supervision and scrapes take turns: a scrape waits at most one supervision slice.
    while (!graph.join_for(std::chrono::milliseconds(20))) impl_->server->poll(std::chrono::milliseconds(0));
    impl_->graph = nullptr;
    return graph.join();
}

void RunMetrics::serve(const shmpipe::Graph& graph) {
    impl_->graph = &graph;
    impl_->server->poll(std::chrono::milliseconds(0));
    impl_->graph = nullptr;
}

std::string RunMetrics::render(const shmpipe::Graph& graph) {
    const auto& spec = graph.spec();
    const shmpipe::GraphStatus status = graph.status();
    metrics::TextWriter out;

    out.family("shmpipe_pipeline_uptime_seconds", "gauge", "Seconds since the run started.");
    out.sample("shmpipe_pipeline_uptime_seconds", {{"pipeline", spec.name}}, status.seconds);

    auto stage_labels = [&](const std::string& stage) { return metrics::Labels{{"pipeline", spec.name}, {"stage", stage}}; };
    out.family("shmpipe_stage_replicas", "gauge",
               "Replicas of a stage by state: running, exited, waiting (to start, or to restart).");
    for (const auto& s : status.stages) {
        const unsigned waiting = s.replicas - std::min(s.replicas, s.alive + s.exited);
        for (const auto& [state, n] : {std::pair{"running", s.alive}, {"exited", s.exited}, {"waiting", waiting}}) {
            auto l = stage_labels(s.name);
            l.emplace_back("state", state);
            out.sample("shmpipe_stage_replicas", l, n);
        }
    }
    out.family("shmpipe_stage_restarts_total", "counter", "Restarts of the stage's replicas (restart = \"on-failure\").");
    for (const auto& s : status.stages) out.sample("shmpipe_stage_restarts_total", stage_labels(s.name), s.restarts);
    out.family("shmpipe_stage_failed_replicas", "gauge", "Replicas of the stage counted as failures.");
    for (const auto& s : status.stages) out.sample("shmpipe_stage_failed_replicas", stage_labels(s.name), s.failed);
    out.family("shmpipe_stage_exit_code", "gauge",
               "The last exit code of each replica that exited (-N: killed by signal N).");
    for (const auto& s : status.stages) {
        for (std::size_t r = 0; r < s.exit_codes.size(); ++r) {
            if (!s.exit_codes[r]) continue;
            auto l = stage_labels(s.name);
            l.emplace_back("replica", std::to_string(r));
            out.sample("shmpipe_stage_exit_code", l, *s.exit_codes[r]);
        }
    }

    std::vector<shmpipe::ObjectInfo> infos;
    shmpipe::InspectOptions io;
    io.catch_sigbus = true;
    for (const auto& q : spec.queues) {
        std::string object;
        try {
            object = graph.queue_object(q.name);
        } catch (const shmpipe::Error&) {
            continue;  // a pipe edge, or a queue of other hosts only: no object here
        }
        if (auto info = shmpipe::inspect_object(object, io)) infos.push_back(std::move(*info));
    }
    metrics::write_objects(out, infos, std::vector<std::string>(infos.size(), spec.name));
    metrics::write_build_info(out, "pipeline-launch");
    return out.text();
}

}  // namespace pipeline_launch
