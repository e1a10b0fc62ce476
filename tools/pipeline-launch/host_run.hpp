// pipeline-launch --host NAME: this host's part of a spec placed on several [[host]]s, run as
// one run with the launchers of the other hosts.
//
//   HostRun run(spec, "a", run_token);   // binds the link (a bad address fails before anything starts)
//   graph.start();                        // GraphOptions::host = "a": this host's stages and queues
//   run.start_bridges(graph);             // a net::Sender or net::Receiver per bridged queue, each on a thread
//   GraphResult r = run.join(graph, between);
//
// join() supervises the graph, the bridges and the link together:
//   - a local failure that stops the graph (fail-fast), a bridge error or a terminate request is
//     sent to every host as RunState::stopping with a reason naming `stage.replica@host`; a
//     host that reports stopping, or is dead (no heartbeat for dead_after) or unreachable
//     (never heard within connect_timeout), terminates the graph here and stops the bridges;
//   - a drain (Ctrl-C) here is sent as draining, and a host that drains makes this one drain;
//   - when the graph and the bridges are done, this host reports finished and waits until every
//     other host finished too (or died), so every launcher ends with the run-wide outcome;
//   - the result carries the bridged edges (GraphResult::bridges) and, when the run failed
//     elsewhere, a failure naming the host: the launcher exits non-zero.
// Each bridged queue's remote side (per peer: credits, in flight, counts, last heard, up) is
// published for inspect-queues in a status object `<queue object>.bridge` (bridge_status.hpp):
// created by start_bridges() (a guardian removes them if the launcher is killed), rewritten by
// join() at most every 100 ms, removed by the destructor.
#pragma once

#include "metrics_text.hpp"

#include <shmpipe/graph.hpp>
#include <shmpipe/spec.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

namespace pipeline_launch {

class HostRun {
public:
    // `run_token`: what the launchers of one run share (--run-id, or the pipeline name).
    // Throws shmpipe::Error: unknown host, bind failure, unreadable Curve keys.
    HostRun(const shmpipe::PipelineSpec& spec, std::string host, std::string run_token);
    ~HostRun();
    HostRun(const HostRun&) = delete;
    HostRun& operator=(const HostRun&) = delete;

    // After graph.start(): the bridges of every queue crossing hosts with an end here.
    void start_bridges(const shmpipe::Graph& graph);
    // Supervises until the run-wide end; `between` runs between supervision slices (metrics).
    shmpipe::GraphResult join(shmpipe::Graph& graph, const std::function<void()>& between);

    // The bridges' and the other hosts' figures as metric families (pipeline-launch
    // --metrics-listen): per bridged queue and peer host, messages, bytes, re-sent, lost,
    // credits, in flight, seconds since last heard; per host, up and seconds since last heard.
    void write_metrics(shmpipe::metrics::TextWriter& out) const;

    // From a signal handler (async-signal-safe): a Ctrl-C or terminate request here, so that
    // join() tells the other hosts. The graph itself is told by the caller.
    void note_interrupt() noexcept { interrupts_.fetch_add(1, std::memory_order_relaxed); }
    void note_terminate() noexcept { terminates_.fetch_add(1, std::memory_order_relaxed); }

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::atomic<int> interrupts_{0}, terminates_{0};  // counters only: nothing is published with them
};

}  // namespace pipeline_launch
