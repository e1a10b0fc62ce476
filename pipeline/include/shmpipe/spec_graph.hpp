// SpecGraph: the one place that answers "who writes and who reads queue q", "which stage feeds
// which", "in what order do the stages start", "which edges cross hosts" and "which queues
// carry batches of lines or become pipes" for a spec.
//
//   shmpipe::SpecGraph g(spec);                 // spec: validated, or at least with every
//                                               // queue a stage names in spec.queues
//   for (const auto& q : g.queues()) q.writers, q.readers, q.producers, q.writer_hosts ...
//   g.start_order();                            // consumers first
//   g.find_cycle();                             // empty, or the stages of a cycle
//   g.line_batch_bytes(q), g.is_pipe_edge(q);   // how the launcher carries queue q
//
// validate_spec, describe_spec and Graph (create_queues, start order, placement) all use it,
// so the rules cannot drift apart. It holds indices into the spec it was built from: build it
// again after changing the spec's stages or queues.
#pragma once

#include <shmpipe/spec.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace shmpipe {

// The two ends of one queue.
struct QueueEnds {
    std::size_t queue = 0;                    // index into PipelineSpec::queues
    std::vector<std::size_t> writers;         // stages writing it (outputs or stdout), spec order
    std::vector<std::size_t> readers;         // stages reading it (inputs or stdin), spec order
    unsigned producers = 0;                   // replicas of the writers
    unsigned consumers = 0;                   // replicas of the readers
    std::vector<std::string> writer_hosts;    // distinct hosts of the writers (spec order); {""} without [[host]]
    std::vector<std::string> reader_hosts;    // distinct hosts of the readers
    // Written on one host and read on another: a bridged edge.
    bool crosses_hosts() const;
    bool written_on(std::string_view host) const;
    bool read_on(std::string_view host) const;
};

class SpecGraph {
public:
    explicit SpecGraph(const PipelineSpec& spec);

    const PipelineSpec& spec() const noexcept { return *spec_; }
    // One entry per spec queue, in spec order.
    const std::vector<QueueEnds>& queues() const noexcept { return queues_; }
    const QueueEnds* find(std::string_view queue) const;
    // next()[a]: the stages that read a queue stage a writes (once per queue).
    const std::vector<std::vector<std::size_t>>& next() const noexcept { return next_; }
    // Every stage, each after the stages it feeds (reverse topological order): consumers
    // start before their producers. Stages on a cycle are left out (validate refuses cycles).
    std::vector<std::size_t> start_order() const;
    // The stages of one cycle (a -> b -> ... -> a, first not repeated), or empty.
    std::vector<std::size_t> find_cycle() const;
    // The queues written on one host and read on another, in spec order.
    std::vector<const QueueEnds*> crossing() const;
    // The host of stage i ("" without [[host]]).
    const std::string& host_of(std::size_t stage) const;
    // Line batching. A queue that only stdout line adapters write and only stdin line
    // adapters read carries whole lines, each with its '\n', as many as fit in one message,
    // instead of one line per message (the adapters in detail/graph_adapter.hpp). Lines keep
    // their limit (the spec's max_message, without the '\n'); the queue's own max_message is
    // the batch size, which this returns (0: the queue carries one line or record per
    // message: some end is native or uses records, or the queue is too small for batches).
    std::size_t line_batch_bytes(const QueueEnds& q) const;
    // Whether queue q may be a pipe edge instead: line-batchable, written by exactly one
    // ordinary program and read by exactly one on the same host, neither with replicas nor
    // restarts (a restart would need the queue to keep what the dead reader never read). The
    // launcher then creates no queue and relays the writer's stdout pipe to the reader's
    // stdin pipe itself (detail::pump_pipe).
    bool is_pipe_edge(const QueueEnds& q) const;

private:
    const PipelineSpec* spec_;
    std::vector<QueueEnds> queues_;
    std::vector<std::vector<std::size_t>> next_;
};

}  // namespace shmpipe
