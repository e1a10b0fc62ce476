// Graph: run a producer/consumer process graph — queues, stages with replicas — and
// supervise it. The library face of `pipeline-launch`.
//
//   shmpipe::Graph g(shmpipe::load_spec("pipe.toml"));       // or build one in code:
//   shmpipe::Graph g("demo");
//   g.queue({.name = "nums"});
//   g.stage({.name = "gen", .cmd = {"seq", "1", "100"}, .stdout_queue = "nums"});
//   g.stage("sum", [](const shmpipe::StageContext& c) {       // a function, in a forked child
//       shmpipe::Consumer<> rx(c.queue("nums")); ...; return 0; }, {.stdin_queue = ""});
//   g.start();  auto result = g.join();                       // or g.run()
//
// What start() does, in order: validates the spec (programs, cycles, ...), forks a guardian
// process (detail::Guardian) that removes the run's objects if this process dies without
// doing it (SIGKILL, SIGBUS), then creates every queue as "<pipeline>.<run>.<queue>" (a run
// id per Graph, so two runs never collide) with expected_producers = the replicas that write
// it, then starts the stages consumers first (reverse topological order), each replica a
// shmpipe::Process in its own process group with a parent-death signal. The guardian comes
// first, so a launcher killed at any point of start() leaves nothing behind.
// With [[host]] placement (GraphOptions::host) only that host's stages start and only the
// queues with an end on it are created; see GraphOptions::host for bridged queues.
//
// Adapters (ordinary programs as stages) run as threads inside this process, with SIGPIPE
// blocked (a program that stops reading is an EPIPE, never a signal to this process): a stage with
// `stdout_queue` gets a pipe whose lines (or length-prefixed records) a thread pushes as
// messages; a stage with `stdin_queue` gets a pipe that a thread fills with one line per
// message, closed at end of stream (the launcher keeps a copy of that pipe's read end, to
// see what a failed program left unread). A queue that only line adapters use carries
// batches of whole lines instead (SpecGraph::line_batch_bytes): the same bytes come out, and
// loss and re-delivery below count lines. Between exactly one writer and one reader without
// replicas or restarts, such a queue is a pipe edge (SpecGraph::is_pipe_edge): no queue, one
// thread relays the writer's stdout pipe to the reader's stdin pipe and counts its lines
// (QueueResult::pipe); a failed reader lost what it was given, and lines the relay read but
// could not deliver once the reader ended are lost too, both counted; the writer then gets
// EPIPE on its next write. The adapter's Producer/Consumer belong to the replica,
// not to one process, so a restarted replica continues the same stream. Other stdout and
// stderr lines are copied whole, prefixed "stage.replica | ", to GraphOptions::out_fd /
// err_fd and to optional log files.
//
// join() supervises until every stage has ended:
//   - a replica that exits 0 has its endpoints closed on its behalf (close_endpoints_of),
//     so end of stream flows on even when a program did not close its outputs;
//   - a replica that fails (non-zero exit, signal) is reported at once on err_fd, then:
//     restart (RestartPolicy::on_failure, up to max_restarts), or, if the stage is not
//     critical (or the policy is keep-going), it is left dead; otherwise fail-fast: every
//     queue is marked broken so nobody blocks forever and the others are stopped with the
//     ladder (stop_signal to the process group, stop_timeout, SIGKILL, reap);
//   - a replica whose process exited while its pipes stay open (a child it left behind holds
//     them) gets its process group stopped with the ladder before it is reaped; readers of a
//     pipe that still stays silent then give up, so join() always ends;
//   - interrupt() (Ctrl-C) #1 drains: sources get stop_signal and end of stream flows
//     (after drain_timeout it escalates to terminate); a drain during start() still starts
//     every non-source replica and gives end of stream for the sources it skips;
//     #2 terminates: queues broken, ladder;
//     #3 kills: SIGKILL at once. terminate() and kill() jump straight there.
// Whatever the ending, join() returns only when every child is reaped and every adapter
// thread is joined, and it removes every object the Graph created.
//
// Loss: a replica that fails may have taken messages it never finished. What that means is
// decided once, when its process is gone (reaped, its adapter joined), from what the launcher
// knows, never from which of the launcher or a consumer noticed the death first:
//   - stdin adapter: the messages still in the dead program's pipe, or taken but not yet
//     written, were never read: they are given first to the restarted process (re-delivery is
//     safe, the program never saw them), or counted as lost when there is no restart. The
//     messages it had read are counted as lost: what a program did with its input (its
//     buffers, its output not yet flushed) cannot be known.
//   - native consumer: the message it claimed last (Queue::last_claim_of) is counted as lost;
//     its content is gone from the queue, so it cannot be re-delivered.
//   - a dead producer's committed messages are delivered, its half-written one is skipped
//     (QueueResult::abandoned); its death is reported once, by the launcher. Consumers that
//     see errc::producer_died should keep popping: the stdin adapter does.
// Every loss is reported on err_fd as it is decided and summed in GraphResult::lost; a run
// with a loss is not a success unless the spec says on_loss = "warn".
//
// Thread safety: start() and join() must be called from the same thread, one that outlives
// the children (the parent-death signal fires when the forking thread exits). interrupt(),
// drain(), terminate() and kill() only set atomics: call them from any thread or from a
// signal handler.
#pragma once

#include <shmpipe/detail/timeout.hpp>
#include <shmpipe/spec.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shmpipe {

// What a function stage sees in its child process.
struct StageContext {
    std::string pipeline;
    std::string run;
    std::string stage;
    unsigned replica = 0;
    unsigned replicas = 1;
    std::map<std::string, std::string> queues;  // logical name -> shared-memory object name
    // The object name of queue `logical` (for Producer/Consumer). Throws Error(not_found).
    const std::string& queue(std::string_view logical) const;
};

using StageFunction = std::function<int(const StageContext&)>;

struct GraphOptions {
    std::string run_id;                // empty: "<pid>-<random>"; with a host, "-<host>" is appended
    std::string log_dir;               // non-empty: also write <stage>.<replica>.log there
    int out_fd = 1;                    // prefixed stdout lines of the stages
    int err_fd = 2;                    // prefixed stderr lines, reports, status line
    bool status_line = false;          // redraw a live status line on err_fd (a terminal)
    std::string report_prefix = "graph";  // reports read "<prefix>: stage ..."
    SpecOptions spec_options;          // how programs are found
    std::chrono::milliseconds status_interval{500};
    // Placement: the [[host]] whose part of the spec this process runs (required when the spec
    // declares hosts, refused when it does not). Only that host's stages start; a queue with
    // an end here is created here, and a bridged queue counts its bridge as that end (one
    // consumer on the writing host, one producer per writing host on the reading host): the
    // caller runs the shmpipe::net bridges on queue_object() (pipeline-launch does).
    std::string host;
};

enum class GraphEnding {
    completed,   // every stage ended (successfully or not)
    failed,      // fail-fast stopped the graph after a failure
    drained,     // interrupted once: sources stopped, end of stream flowed
    terminated,  // interrupted twice or terminate(): stop ladder
    killed,      // interrupted three times or kill()
};
std::string_view to_string(GraphEnding e) noexcept;

struct ReplicaResult {
    std::string stage;
    unsigned replica = 0;
    int pid = 0;                       // the last process
    std::optional<int> exit_code;      // -N: signal N; nullopt: never started
    bool stopped = false;              // ended because the graph stopped it (drain, terminate)
    bool failed = false;               // counted as a failure
    unsigned restarts = 0;
    double seconds = 0;                // run time of all its processes
    std::string error;                 // adapter errors (line too long, ...)
    std::uint64_t lost = 0;            // messages its failed processes had taken (see "Loss" above)
    std::uint64_t redelivered = 0;     // unread input of its failed processes given to the replacement
};

struct QueueResult {
    std::string name;                  // logical
    std::string object;                // shared-memory name; empty for a pipe edge
    bool pipe = false;                 // a pipe edge (SpecGraph::is_pipe_edge): no queue, messages are lines
    std::uint64_t messages_in = 0, messages_out = 0, bytes_in = 0, bytes_out = 0;
    std::uint64_t lost = 0, abandoned = 0;
    bool broken = false;
};

// One bridged queue on this host (filled by whoever ran the bridge: pipeline-launch).
struct BridgeResult {
    std::string queue;                 // logical name
    bool outgoing = false;             // true: sent from this host; false: received here
    std::vector<std::string> peers;    // the hosts at the other end
    std::uint64_t messages = 0, bytes = 0, resent = 0, lost = 0;
    std::string error;                 // why it stopped early, empty when it completed
};

struct GraphResult {
    GraphEnding ending = GraphEnding::completed;
    // Every stage succeeded and nothing was lost (or the spec accepts loss: on_loss = "warn").
    // A drain counts as success: see `stopped`.
    bool success = false;
    bool stopped = false;              // drained, terminated or killed on request: the output may be partial
    int stop_signal = 0;               // the signal given to interrupt()/terminate()/kill() first, 0: none
    std::uint64_t lost = 0;            // sum of the replicas' `lost`
    LossPolicy on_loss = LossPolicy::fail;
    std::string failure;               // the first failure, named: stage "w" replica 1 exited with code 3
    double seconds = 0;
    std::vector<ReplicaResult> replicas;
    std::vector<QueueResult> queues;
    std::string host;                  // GraphOptions::host ("" on one machine)
    std::vector<BridgeResult> bridges; // bridged edges of this host
    std::string to_json() const;
    std::string summary() const;       // human-readable table
};

// A live view for status lines (also available from status()).
struct GraphStatus {
    struct Queue {
        std::string name;
        std::uint64_t depth = 0;
        double messages_per_second = 0;
        std::uint64_t messages_out = 0;
        bool ended = false, broken = false;
        bool pipe = false;             // a pipe edge: messages are lines relayed, depth 0
    };
    struct Stage {
        std::string name;
        unsigned alive = 0, replicas = 0, exited = 0, restarts = 0;
        unsigned failed = 0;                        // replicas counted as failures
        std::vector<std::optional<int>> exit_codes; // per replica, the last process's (-N: signal N)
    };
    double seconds = 0;
    std::vector<Queue> queues;
    std::vector<Stage> stages;
    std::string failure;               // the first failure, as GraphResult::failure ("" none yet)
    std::string failed_replica;        // its "stage.replica"
    bool fail_fast = false;            // that failure made fail-fast stop the graph
    std::string to_line(std::size_t width) const;
};

class Graph {
public:
    explicit Graph(std::string name, GraphOptions options = {});
    explicit Graph(PipelineSpec spec, GraphOptions options = {});
    Graph(const Graph&) = delete;
    Graph& operator=(const Graph&) = delete;
    // A started graph that was not joined is killed (SIGKILL ladder) and cleaned up.
    ~Graph();

    // Building (before start). Throw Error(invalid_state) after start.
    Graph& queue(QueueSpec q);
    Graph& stage(StageSpec s);
    Graph& stage(std::string name, StageFunction fn, StageSpec options = {});
    // Placement: a [[host]] of the graph; stages then name theirs (StageSpec::host), and
    // GraphOptions::host says which part this process runs.
    Graph& host(HostSpec h);

    // Validates, creates the queues, starts every stage. Throws Error(spec_error) for a bad
    // graph, Error from Queue::create, Error(spawn_failed) naming the stage; on a throw,
    // whatever was started is stopped and removed.
    void start();
    // Supervises until the end (see above). Never throws for a stage's failure: it is in
    // the result. Throws Error(invalid_state) before start.
    GraphResult join();
    // Supervises for up to `timeout`: true when every stage has ended (join() then returns
    // the result at once), false if some still run (the graph goes on; call join_for,
    // terminate or kill, then join). Same thread and errors as join().
    bool join_for(std::chrono::milliseconds timeout);
    // Any other duration (0.5s, std::chrono::duration<double>(2.1)), rounded up to the next ms.
    template <class Rep, class Period>
    bool join_for(std::chrono::duration<Rep, Period> timeout) {
        return join_for(std::chrono::ceil<std::chrono::milliseconds>(detail::timeout_ns(timeout)));
    }
    GraphResult run() {
        start();
        return join();
    }

    // Requests (async-signal-safe). `signal`: the signal that asked for it (a launcher's
    // SIGINT, SIGTERM), reported in GraphResult::stop_signal; 0 for a request from code.
    void interrupt(int signal = 0) noexcept;  // 1: drain, 2: terminate, 3: kill
    void drain() noexcept;
    void terminate(int signal = 0) noexcept;
    void kill() noexcept;

    const PipelineSpec& spec() const noexcept;
    const std::string& run_id() const noexcept;
    // The shared-memory object name of a queue (valid after start).
    std::string queue_object(std::string_view logical) const;
    GraphStatus status() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace shmpipe
