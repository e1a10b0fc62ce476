// Pipeline specs: the TOML file pipeline-launch runs, parsed and validated before anything
// starts.
//
//   [pipeline]  name, failure = "fail-fast" | "keep-going", stop_signal = "SIGTERM" (or 15),
//               stop_timeout = "5s", drain_timeout = "30s", on_loss = "fail" | "warn"
//   [[queue]]   name, capacity = "4MiB", max_message = 65536
//   [[stage]]   name, cmd = ["prog", "arg", ...], inputs = [...], outputs = [...],
//               stdin = "queue", stdout = "queue" | "inherit", stdin_format / stdout_format =
//               "lines" | "records", replicas = 1, restart = "never" | "on-failure",
//               max_restarts = 3, env = { K = "v" }, cwd = "dir", stop_timeout = "5s",
//               critical = true, success_codes = [0], host = "a"
//   [[host]]    name, address = "tcp://10.0.0.1:7400" (where that host's launcher listens)
//   [pipeline]  with hosts: heartbeat = "500ms", dead_after = "3s", connect_timeout = "30s",
//               curve_secret_file = "keys/{host}.secret", curve_public_keys = { a = "...", ... }
//
// Placement: without [[host]] everything runs on this machine. With [[host]] tables every stage
// names its host; a queue written on one host and read on another is bridged (SpecGraph::
// crossing()): a local queue on each side joined by shmpipe::net. A bridged queue may not be
// both written and read on one host. A host's launcher listens on its address (heartbeats
// between launchers) and on the next ports, one per bridged edge (host_edge_address).
//
// A queue a stage names but no [[queue]] table declares gets the default geometry.
// Placeholders in cmd, env and cwd: {queue.<name>} (the run's shared-memory name of that
// queue), {stage}, {replica} (0-based), {replicas}, {pipeline}, {run}; "{{" and "}}" are
// literal braces.
//
// Every error is a shmpipe::Error(errc::spec_error) whose message starts with
// "<file>:<line>:" so an editor can jump to it. A spec is untrusted input: load_spec refuses
// anything but a regular file, and both readers refuse text over 16 MiB and dotted keys of
// more than 64 parts before toml++ parses them; sizes are capped at 1 TiB.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace shmpipe {

enum class RestartPolicy { never, on_failure };
enum class FailurePolicy { fail_fast, keep_going };
// What a run that lost messages (a replica that died holding some, see graph.hpp) exits
// with: fail = non-zero even if every stage ended well; warn = reported, not a failure.
enum class LossPolicy { fail, warn };
// How an ordinary program's standard input/output maps to messages.
enum class StreamFormat {
    lines,    // one line (without its '\n') per message; batched when only line adapters use the queue (graph_adapter.hpp)
    records,  // u32 little-endian length, then that many bytes, per message
};

// The special value of StageSpec::stdout_queue: the stage writes straight to the launcher's
// standard output (unprefixed), e.g. the last stage of a Unix pipeline.
inline constexpr std::string_view kInheritStdout = "inherit";

struct QueueSpec {
    std::string name = {};
    std::size_t capacity = std::size_t{4} << 20;
    std::size_t max_message = std::size_t{64} << 10;
    bool declared = false;  // false: only named by a stage, default geometry
    int line = 0;           // where it was declared (0: not in a file)
};

struct StageSpec {
    std::string name = {};
    std::vector<std::string> cmd = {};          // argv, placeholders not yet expanded
    std::vector<std::string> inputs = {};       // native: the program attaches itself
    std::vector<std::string> outputs = {};
    std::string stdin_queue = {};               // empty: /dev/null
    std::string stdout_queue = {};              // empty: prefixed log; "inherit": raw stdout
    StreamFormat stdin_format = StreamFormat::lines;
    StreamFormat stdout_format = StreamFormat::lines;
    unsigned replicas = 1;
    RestartPolicy restart = RestartPolicy::never;
    unsigned max_restarts = 3;             // per replica
    std::map<std::string, std::string> env = {};
    std::string cwd = {};                        // empty: the launcher's
    std::chrono::milliseconds stop_timeout{-1};  // < 0: the pipeline's
    bool critical = true;
    std::vector<int> success_codes = {0};  // exit codes that count as success (grep: [0, 1])
    std::string program = {};                   // cmd[0] resolved to a path by validate_spec
    bool is_function = false;              // a Graph function stage: no program to find
    std::string host = {};                 // where it runs: a [[host]] name ("" without hosts)
    int line = 0;

    // Every queue this stage reads (inputs + stdin) / writes (outputs + stdout).
    std::vector<std::string> reads() const;
    std::vector<std::string> writes() const;
    // A source reads no queue: a drain (first Ctrl-C) stops it.
    bool is_source() const { return reads().empty(); }
};

struct HostSpec {
    std::string name = {};
    std::string address = {};  // "tcp://IP:PORT": its launcher binds exactly this
    int line = 0;
};

struct PipelineSpec {
    std::string name = "pipeline";
    FailurePolicy failure = FailurePolicy::fail_fast;
    int stop_signal = 15;                           // SIGTERM
    std::chrono::milliseconds stop_timeout{5000};   // grace between the polite signal and SIGKILL
    std::chrono::milliseconds drain_timeout{30000}; // after a drain request, then terminate
    LossPolicy on_loss = LossPolicy::fail;
    std::vector<QueueSpec> queues = {};                  // declared first, then implicit ones
    std::vector<StageSpec> stages = {};
    std::vector<HostSpec> hosts = {};                    // empty: one machine
    std::chrono::milliseconds heartbeat{500};            // between launchers and bridge ends
    std::chrono::milliseconds dead_after{3000};          // a host silent this long is dead
    std::chrono::milliseconds connect_timeout{30000};    // a host never heard from this long is unreachable
    std::string curve_secret_file = {};                  // "{host}" is this host's name; empty: no Curve
    std::map<std::string, std::string> curve_public_keys = {};  // host -> Z85 public key
    std::string source = {};                             // file name for messages ("<spec>" if none)
    std::string base_dir = {};                           // relative paths resolve against it

    const QueueSpec* find_queue(std::string_view name) const;
    const StageSpec* find_stage(std::string_view name) const;
    const HostSpec* find_host(std::string_view name) const;
    bool multi_host() const noexcept { return !hosts.empty(); }
};

struct SpecOptions {
    // Extra directories searched for a bare program name (after PATH, before the
    // launcher's own directory).
    std::vector<std::string> bin_dirs = {};
    // Directory of the running launcher, searched last ("" to skip). pipeline-launch sets
    // it to the folder of its own executable so specs find the example programs beside it.
    std::string self_dir = {};
    // Skip checking that programs exist (parse-only tests).
    bool check_programs = true;
};

// Parses TOML text (source names the file in messages) and validates it. Throws Error(spec_error).
PipelineSpec parse_spec(std::string_view toml_text, std::string_view source, const SpecOptions& options = {});
// Reads and parses a file; relative program paths and cwd resolve against its directory.
PipelineSpec load_spec(const std::string& path, const SpecOptions& options = {});

// The checks parse_spec runs after reading: names, queues written and read, self-loops,
// cycles, programs. Exposed for specs built in code (Graph). Fills StageSpec::program.
void validate_spec(PipelineSpec& spec, const SpecOptions& options = {});

// The address the launcher of `host` listens on for bridged edge `edge` (0-based, the order of
// SpecGraph::crossing()): the host's address with its port + 1 + edge.
std::string host_edge_address(const HostSpec& host, std::size_t edge);

// Human-readable description of the graph (what `pipeline-launch --check` prints).
std::string describe_spec(const PipelineSpec& spec);

// Expands placeholders in one string. queue_names maps a logical queue name to the run's
// shared-memory object name. Throws Error(spec_error) on an unknown placeholder.
std::string expand_placeholders(std::string_view text, const StageSpec& stage, unsigned replica,
                                const std::map<std::string, std::string>& queue_names,
                                std::string_view pipeline = {}, std::string_view run = {});

// "SHMPIPE_QUEUE_" + the name upper-cased, every character outside [A-Z0-9] as '_'.
std::string queue_env_name(std::string_view queue);

// "4MiB", "64k", 65536 -> bytes; "5s", "250ms", "1m", 2.5 -> milliseconds. Throw Error(spec_error).
std::size_t parse_size(std::string_view text);
std::chrono::milliseconds parse_duration(std::string_view text);
// "SIGTERM", "TERM", "15" -> 15.
int parse_signal(std::string_view text);
std::string signal_name(int sig);

}  // namespace shmpipe
