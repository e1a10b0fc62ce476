// shmpipe::Graph: queues, stages on shmpipe::Process, adapters, supervision. See graph.hpp.
#include <shmpipe/graph.hpp>

#include <shmpipe/detail/exit_text.hpp>
#include <shmpipe/detail/graph_adapter.hpp>
#include <shmpipe/detail/guardian.hpp>
#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/detail/run_names.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/object.hpp>
#include <shmpipe/process.hpp>
#include <shmpipe/queue.hpp>
#include <shmpipe/spec_graph.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <random>
#include <sys/ioctl.h>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace shmpipe {

const std::string& StageContext::queue(std::string_view logical) const {
    const auto it = queues.find(std::string(logical));
    if (it == queues.end()) {
        throw Error(errc::not_found, "stage \"" + stage + "\": no queue \"" + std::string(logical) +
                                         "\" in pipeline \"" + pipeline + "\"");
    }
    return it->second;
}

std::string_view to_string(GraphEnding e) noexcept {
    switch (e) {
        case GraphEnding::completed: return "completed";
        case GraphEnding::failed: return "failed";
        case GraphEnding::drained: return "drained";
        case GraphEnding::terminated: return "terminated";
        case GraphEnding::killed: return "killed";
    }
    return "unknown";
}

namespace {

using Clock = std::chrono::steady_clock;

using detail::describe_exit;

std::string human_rate(double v) {
    char buf[32];
    if (v >= 1e6) {
        std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
    } else if (v >= 1e3) {
        std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
    } else {
        std::snprintf(buf, sizeof buf, "%.0f", v);
    }
    return buf;
}

std::string make_run_id() {
    std::random_device rd;
    return detail::default_run_id(static_cast<long>(::getpid()), static_cast<unsigned>(rd()));
}

}  // namespace

std::string GraphResult::to_json() const {
    namespace json = boost::json;
    auto text_or_null = [](const std::string& t) { return t.empty() ? json::value(nullptr) : json::value(t); };
    json::array stages;
    for (const auto& r : replicas) {
        json::object o;
        o["stage"] = r.stage;
        o["replica"] = r.replica;
        o["pid"] = r.pid;
        o["exit_code"] = r.exit_code ? json::value(*r.exit_code) : json::value(nullptr);
        o["signal"] = r.exit_code && *r.exit_code < 0 ? json::value(detail::signal_name(-*r.exit_code)) : json::value(nullptr);
        o["stopped"] = r.stopped;
        o["failed"] = r.failed;
        o["restarts"] = r.restarts;
        o["seconds"] = r.seconds;
        o["error"] = text_or_null(r.error);
        o["lost"] = r.lost;
        o["redelivered"] = r.redelivered;
        stages.push_back(std::move(o));
    }
    json::array qs;
    for (const auto& q : queues) {
        json::object o;
        o["name"] = q.name;
        o["object"] = text_or_null(q.object);
        o["pipe"] = q.pipe;
        o["messages_in"] = q.messages_in;
        o["messages_out"] = q.messages_out;
        o["bytes_in"] = q.bytes_in;
        o["bytes_out"] = q.bytes_out;
        o["lost"] = q.lost;
        o["abandoned"] = q.abandoned;
        o["broken"] = q.broken;
        qs.push_back(std::move(o));
    }
    json::object top;
    top["ending"] = std::string(to_string(ending));
    top["success"] = success;
    top["failure"] = text_or_null(failure);
    top["stopped"] = stopped;
    top["stop_signal"] = stop_signal != 0 ? json::value(detail::signal_name(stop_signal)) : json::value(nullptr);
    top["lost"] = lost;
    top["on_loss"] = on_loss == LossPolicy::fail ? "fail" : "warn";
    top["seconds"] = seconds;
    top["stages"] = std::move(stages);
    top["queues"] = std::move(qs);
    top["host"] = text_or_null(host);
    json::array bs;
    for (const auto& b : bridges) {
        json::object o;
        o["queue"] = b.queue;
        o["direction"] = b.outgoing ? "out" : "in";
        json::array peers;
        for (const auto& p : b.peers) peers.push_back(json::value(p));
        o["peers"] = std::move(peers);
        o["messages"] = b.messages;
        o["bytes"] = b.bytes;
        o["resent"] = b.resent;
        o["lost"] = b.lost;
        o["error"] = text_or_null(b.error);
        bs.push_back(std::move(o));
    }
    top["bridges"] = std::move(bs);
    return json::serialize(top) + "\n";
}

std::string GraphResult::summary() const {
    std::ostringstream o;
    char buf[256];
    std::string headline = success ? "every stage succeeded" : (failure.empty() ? "not every stage succeeded" : failure);
    if (stopped) {
        headline = std::string("stopped") + (stop_signal != 0 ? " by " + detail::signal_name(stop_signal) : "") +
                   ", the output may be partial; " + headline;
    }
    if (lost != 0 && on_loss == LossPolicy::warn) headline += "; " + std::to_string(lost) + " lost (on_loss = \"warn\")";
    o << to_string(ending);
    std::snprintf(buf, sizeof buf, " in %.2f s: ", seconds);
    o << buf << headline << "\n";
    for (const auto& r : replicas) {
        std::string status;
        if (!r.exit_code) {
            status = "never started";
        } else if (*r.exit_code >= 0) {
            status = "exit " + std::to_string(*r.exit_code);
        } else {
            status = detail::signal_name(-*r.exit_code);
        }
        if (r.stopped) status += " (stopped)";
        if (r.failed) status += " FAILED";
        std::snprintf(buf, sizeof buf, "  stage %-16s %-28s %8.2f s  restarts %u", (r.stage + "." + std::to_string(r.replica)).c_str(),
                      status.c_str(), r.seconds, r.restarts);
        o << buf;
        if (r.lost != 0) o << "  lost " << r.lost;
        if (r.redelivered != 0) o << "  redelivered " << r.redelivered;
        o << "\n";
        if (!r.error.empty()) o << "      " << r.error << "\n";
    }
    for (const auto& q : queues) {
        std::snprintf(buf, sizeof buf, q.pipe ? "  pipe  %-16s %12llu lines in    %12llu out %14llu bytes"
                                              : "  queue %-16s %12llu messages in %12llu out %14llu bytes",
                      q.name.c_str(),
                      static_cast<unsigned long long>(q.messages_in), static_cast<unsigned long long>(q.messages_out),
                      static_cast<unsigned long long>(q.bytes_out));
        o << buf;
        if (q.lost != 0) o << "  lost " << q.lost;
        if (q.abandoned != 0) o << "  abandoned " << q.abandoned;
        if (q.broken) o << "  (broken)";
        o << "\n";
    }
    for (const auto& b : bridges) {
        std::string peers;
        for (const auto& p : b.peers) peers += (peers.empty() ? "" : ",") + p;
        const std::string edge = b.outgoing ? host + " -> " + peers : peers + " -> " + host;
        std::snprintf(buf, sizeof buf, "  bridge %-15s %-20s %12llu messages %14llu bytes  re-sent %llu  lost %llu",
                      b.queue.c_str(), edge.c_str(), static_cast<unsigned long long>(b.messages),
                      static_cast<unsigned long long>(b.bytes), static_cast<unsigned long long>(b.resent),
                      static_cast<unsigned long long>(b.lost));
        o << buf << "\n";
        if (!b.error.empty()) o << "      " << b.error << "\n";
    }
    return o.str();
}

std::string GraphStatus::to_line(std::size_t width) const {
    char buf[64];
    std::snprintf(buf, sizeof buf, "[%.1fs]", seconds);
    std::string s = buf;
    for (const auto& q : queues) {
        s += " " + q.name + ":" + (q.pipe ? std::string("pipe") : std::to_string(q.depth)) + " " +
             human_rate(q.messages_per_second) + "/s";
        if (q.broken) {
            s += " broken";
        } else if (q.ended) {
            s += " end";
        }
    }
    s += " |";
    for (const auto& st : stages) {
        s += " " + st.name + " " + std::to_string(st.alive) + "/" + std::to_string(st.replicas) + " up";
        if (st.restarts != 0) s += " r" + std::to_string(st.restarts);
    }
    if (width > 1 && s.size() >= width) s.resize(width - 1);
    return s;
}

// One replica of a stage: its current process, its adapter endpoints (which outlive a
// restart) and its adapter/log threads.
struct Replica {
    std::size_t stage = 0;  // index into Impl::spec.stages
    unsigned index = 0;
    enum class Phase { idle, running, exited, done } phase = Phase::idle;
    std::unique_ptr<Process> proc;
    std::unique_ptr<Producer<>> producer;  // stdout adapter
    std::unique_ptr<Consumer<>> consumer;  // stdin adapter
    std::vector<std::thread> threads;
    std::shared_ptr<std::atomic<int>> threads_running;
    std::shared_ptr<std::atomic<bool>> stop_stdin;
    std::shared_ptr<std::atomic<bool>> abandon_pipes;  // readers stop once their pipe is silent
    std::shared_ptr<std::atomic<int>> verdict;          // detail::ExitVerdict of the current process
    std::shared_ptr<std::atomic<std::size_t>> dropped_bytes;  // its partial last line, dropped
    // After the process exited while its pipes are still being read: 0 nothing done yet,
    // 1 SIGTERM to its group, 2 SIGKILL to its group, 3 pipes abandoned.
    int leftover_step = 0;
    Clock::time_point leftover_next{};
    detail::AdapterErrors errors;
    int log_fd = -1;
    int pid = 0;
    std::optional<int> exit_code;
    bool stopped_by_us = false;
    bool failed = false;
    bool restart_pending = false;
    unsigned restarts = 0;
    Clock::time_point started_at{};
    double seconds = 0;
    std::optional<Clock::time_point> kill_at;  // the ladder's SIGKILL time
    std::string error;
    // Loss accounting (see graph.hpp): decided once per process, when it is gone.
    int stdin_read_fd = -1;                        // our copy of the stdin pipe's read end
    std::unique_ptr<detail::StdinLedger> ledger;   // what the stdin adapter gave the current process
    std::vector<std::string> redeliver;            // unread input of a failed process, for its replacement
    bool instance_failed = false;                  // the current process failed (not stopped by us)
    std::uint64_t lost = 0, redelivered = 0;

    std::string label(const PipelineSpec& spec) const { return spec.stages[stage].name + "." + std::to_string(index); }
};

struct Graph::Impl {
    PipelineSpec spec;
    GraphOptions opt;
    std::map<std::string, StageFunction> functions;
    std::string run;
    bool started = false, joined = false;
    std::optional<SpecGraph> graph;                  // built once, after validation
    // Owner handles, in spec.queues order; none for a pipe edge or a queue of other hosts only.
    std::vector<std::optional<Queue>> queues;
    std::map<std::string, std::string> objects;      // logical -> object name
    std::map<std::string, std::size_t> line_limits;  // line-batched queues -> their line limit (SpecGraph::line_batch_bytes)
    // A pipe edge (SpecGraph::is_pipe_edge): the reader's stdin write end, kept from the
    // reader's spawn until the writer's relay takes it. The relay counts as one of the
    // reader's threads (from the reader's spawn on), so the reader is settled after it.
    struct PipeEdge {
        int reader_fd = -1;
        std::shared_ptr<std::atomic<bool>> reader_stop;
        std::shared_ptr<std::atomic<int>> reader_threads;  // decremented once, when the relay ends or never starts
        std::shared_ptr<detail::PipeEdgeCounts> counts = std::make_shared<detail::PipeEdgeCounts>();
    };
    std::map<std::string, PipeEdge> pipe_edges;
    // The writer of pipe edge `e` will never run a relay: the reader gets EOF.
    static void give_up_pipe_edge(PipeEdge& e) noexcept {
        if (e.reader_fd >= 0) ::close(e.reader_fd);
        e.reader_fd = -1;
        if (e.reader_threads) std::exchange(e.reader_threads, nullptr)->fetch_sub(1, std::memory_order_release);
    }
    std::vector<std::unique_ptr<Replica>> replicas;  // in start order
    detail::Guardian guardian;
    std::unique_ptr<detail::Output> out;

    std::atomic<int> interrupts{0};
    std::atomic<bool> drain_req{false}, terminate_req{false}, kill_req{false};
    std::atomic<int> stop_signal{0};
    bool stop_requested = false;  // drain, terminate or kill was asked for (not fail-fast)

    // The first signal that asked the graph to stop (a relaxed CAS: only the value is published).
    void note_signal(int signal) noexcept {
        int none = 0;
        if (signal != 0) stop_signal.compare_exchange_strong(none, signal, std::memory_order_relaxed);
    }
    int interrupts_seen = 0;

    enum class Mode { running, draining, terminating, killing } mode = Mode::running;
    bool fail_fast_triggered = false;
    bool terminate_requested = false;
    std::string first_failure;
    std::string first_failed_replica;  // "stage.replica"
    Clock::time_point t0{};
    std::optional<Clock::time_point> drain_deadline;
    Clock::time_point last_status{};
    std::vector<std::uint64_t> last_out;  // per queue, for rates
    mutable std::vector<double> rates;

    void report(const std::string& text) { out->report(opt.report_prefix, text); }

    std::chrono::milliseconds stop_timeout(const StageSpec& s) const {
        return s.stop_timeout.count() >= 0 ? s.stop_timeout : spec.stop_timeout;
    }

    Queue* queue_handle(const std::string& logical) {
        for (std::size_t i = 0; i < spec.queues.size(); ++i) {
            if (spec.queues[i].name == logical) return queues[i] ? &*queues[i] : nullptr;
        }
        return nullptr;
    }

    // Placement: the stages of this host run here; without [[host]] every stage does.
    bool runs_here(const StageSpec& s) const { return !spec.multi_host() || s.host == opt.host; }
    // A queue exists on this host when one of its ends is here.
    bool queue_here(const QueueEnds& e) const {
        return !spec.multi_host() || e.written_on(opt.host) || e.read_on(opt.host);
    }
    void check_host() const;

    // The run's shared-memory name of queue q; checked before anything is created.
    std::string object_name(const QueueSpec& q) const { return detail::run_object_name(spec.name, run, q.name); }
    void create_queues();
    QueueOptions queue_options(const QueueEnds& e) const;
    void start_guardian();
    void make_replicas();
    void spawn(Replica& r);
    ProcessOptions process_options(Replica& r, int stdin_read_fd);
    std::unique_ptr<Process> make_process(Replica& r, ProcessOptions po);
    void start_adapters(Replica& r, int stdin_write_fd);
    void cannot_start(Replica& r, const std::string& why);
    void settle_input(Replica& r, bool restarting);
    void count_lost(Replica& r, std::uint64_t n, const std::string& what);
    void settle_pipe_edge(Replica& r, const PipeEdge& e);
    void on_exit(Replica& r, int code);
    void stop_leftovers(Replica& r, Clock::time_point now);
    void finish_instance(Replica& r);
    void skip(Replica& r);
    bool all_done() const;
    bool supervise(std::optional<Clock::time_point> deadline);
    void record_failure(Replica& r, const std::string& what);
    void begin_drain();
    void begin_terminate(bool by_request);
    void begin_kill();
    void stop_running(int sig);
    void mark_all_broken();
    void tick();
    GraphStatus status() const;
    void stop_everything_now() noexcept;
    void cleanup() noexcept;
};

void Graph::Impl::check_host() const {
    if (!spec.multi_host()) {
        if (!opt.host.empty()) {
            throw Error(errc::spec_error, spec.source + ": host " + opt.host +
                                              " given, but the spec declares no [[host]] (run it without a host)");
        }
        return;
    }
    std::string names;
    for (const auto& h : spec.hosts) names += (names.empty() ? "" : ", ") + h.name;
    if (opt.host.empty()) {
        throw Error(errc::spec_error, spec.source + ": the spec places stages on hosts " + names +
                                          "; say which one this is (pipeline-launch --host NAME, GraphOptions::host)");
    }
    if (spec.find_host(opt.host) == nullptr) {
        throw Error(errc::spec_error, spec.source + ": unknown host \"" + opt.host + "\" (the spec declares " + names + ")");
    }
}

// The geometry and endpoint counts of queue e on this host. A bridged queue has the bridge as
// its other end: on the writing host one consumer (the net::Sender), on the reading host one
// producer per writing host (each net::Sender is a producer there, closed by its end frame).
QueueOptions Graph::Impl::queue_options(const QueueEnds& e) const {
    const QueueSpec& q = spec.queues[e.queue];
    unsigned writers = 0, readers = 0;
    bool writer_native_restart = false, reader_native_restart = false;
    unsigned restart_budget = 0;
    for (std::size_t si : e.writers) {
        const StageSpec& s = spec.stages[si];
        if (!runs_here(s)) continue;
        writers += s.replicas;
        if (s.restart == RestartPolicy::on_failure && q.name != s.stdout_queue) {
            writer_native_restart = true;
            restart_budget += s.replicas * s.max_restarts;
        }
    }
    for (std::size_t si : e.readers) {
        const StageSpec& s = spec.stages[si];
        if (!runs_here(s)) continue;
        readers += s.replicas;
        if (s.restart == RestartPolicy::on_failure && q.name != s.stdin_queue) {
            reader_native_restart = true;
            restart_budget += s.replicas * s.max_restarts;
        }
    }
    if (spec.multi_host() && e.crosses_hosts()) {
        if (e.written_on(opt.host)) readers = 1;  // validation: a bridged queue is never both here
        if (e.read_on(opt.host)) writers = static_cast<unsigned>(e.writer_hosts.size());
    }
    QueueOptions o;
    o.capacity = q.capacity;
    o.max_message = q.max_message;
    o.producers = writers == 1 && !writer_native_restart ? Endpoints::one : Endpoints::many;
    o.consumers = readers == 1 && !reader_native_restart ? Endpoints::one : Endpoints::many;
    o.expected_producers = writers;
    o.max_endpoints = std::min<std::uint32_t>(1024, 64 + writers + readers + restart_budget);
    if (const std::size_t batch = graph->line_batch_bytes(e); batch != 0) {
        o.max_message = batch;  // messages of whole lines; each line keeps the spec's limit
    }
    return o;
}

void Graph::Impl::create_queues() {
    for (const auto& e : graph->queues()) {
        const QueueSpec& q = spec.queues[e.queue];
        if (!queue_here(e)) {
            queues.emplace_back(std::nullopt);
            continue;
        }
        if (graph->is_pipe_edge(e)) {
            pipe_edges[q.name];
            line_limits[q.name] = q.max_message;
            queues.emplace_back(std::nullopt);
            continue;
        }
        std::string object = object_name(q);
        queues.push_back(Queue::create(object, queue_options(e)));
        if (graph->line_batch_bytes(e) != 0) line_limits[q.name] = q.max_message;  // batches of lines
        objects[q.name] = object;
    }
}

// The guardian removes this run's objects if the launcher dies without doing it (SIGKILL,
// SIGBUS, ...). It starts before the first queue is created: the names are known already.
void Graph::Impl::start_guardian() {
    std::vector<std::string> names;
    for (const auto& e : graph->queues()) {
        if (queue_here(e)) names.push_back(object_name(spec.queues[e.queue]));
    }
    guardian = detail::Guardian(spec.name + ".guardian", std::move(names));
}

// The replicas of this host's stages, consumers first, with their adapter endpoints and log files.
void Graph::Impl::make_replicas() {
    for (std::size_t si : graph->start_order()) {
        const StageSpec& s = spec.stages[si];
        if (!runs_here(s)) continue;
        for (unsigned i = 0; i < s.replicas; ++i) {
            auto r = std::make_unique<Replica>();
            r->stage = si;
            r->index = i;
            r->threads_running = std::make_shared<std::atomic<int>>(0);
            if (!s.stdin_queue.empty() && pipe_edges.count(s.stdin_queue) == 0) {
                r->consumer = std::make_unique<Consumer<>>(objects.at(s.stdin_queue));
            }
            if (!opt.log_dir.empty()) {
                const std::string path = opt.log_dir + "/" + r->label(spec) + ".log";
                r->log_fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (r->log_fd < 0) throw Error::from_errno(errno, "open log file \"" + path + "\"");
            }
            replicas.push_back(std::move(r));
        }
    }
    for (auto& r : replicas) {
        const StageSpec& s = spec.stages[r->stage];
        if (!s.stdout_queue.empty() && s.stdout_queue != kInheritStdout && pipe_edges.count(s.stdout_queue) == 0) {
            r->producer = std::make_unique<Producer<>>(objects.at(s.stdout_queue));
        }
    }
}

// The options of replica r's next process: its pipes, environment and working directory.
// `stdin_read_fd` is the read end of its stdin pipe (-1: /dev/null).
ProcessOptions Graph::Impl::process_options(Replica& r, int stdin_read_fd) {
    const StageSpec& s = spec.stages[r.stage];
    ProcessOptions po;
    po.name = r.label(spec);
    po.in = stdin_read_fd >= 0 ? Redirect::fd(stdin_read_fd) : Redirect::null();
    po.out = s.stdout_queue == kInheritStdout ? Redirect::fd(out->out_fd()) : Redirect::pipe();
    po.err = Redirect::pipe();
    po.parent_death_signal = SIGKILL;
    po.stop_grace = stop_timeout(s);
    po.daemon = true;  // the graph supervises, stops and reaps its stages; destroying never waits
    po.env.emplace_back("SHMPIPE_PIPELINE", spec.name);
    po.env.emplace_back("SHMPIPE_RUN", run);
    po.env.emplace_back("SHMPIPE_STAGE", s.name);
    po.env.emplace_back("SHMPIPE_REPLICA", std::to_string(r.index));
    po.env.emplace_back("SHMPIPE_REPLICAS", std::to_string(s.replicas));
    for (const auto& [logical, object] : objects) po.env.emplace_back(queue_env_name(logical), object);
    auto object_list = [&](const std::vector<std::string>& names) {
        std::string v;
        for (const auto& n : names) v += (v.empty() ? "" : ",") + objects.at(n);
        return v;
    };
    po.env.emplace_back("SHMPIPE_INPUTS", object_list(s.inputs));
    po.env.emplace_back("SHMPIPE_OUTPUTS", object_list(s.outputs));
    for (const auto& [k, v] : s.env) po.env.emplace_back(k, expand_placeholders(v, s, r.index, objects, spec.name, run));
    std::string cwd = expand_placeholders(s.cwd, s, r.index, objects, spec.name, run);
    if (!cwd.empty() && cwd.front() != '/' && !spec.base_dir.empty()) cwd = spec.base_dir + "/" + cwd;
    po.cwd = cwd;
    return po;
}

// A forked function or a program, not started yet.
std::unique_ptr<Process> Graph::Impl::make_process(Replica& r, ProcessOptions po) {
    const StageSpec& s = spec.stages[r.stage];
    if (s.is_function) {
        StageContext ctx;
        ctx.pipeline = spec.name;
        ctx.run = run;
        ctx.stage = s.name;
        ctx.replica = r.index;
        ctx.replicas = s.replicas;
        ctx.queues = objects;
        po.close_fds = true;
        StageFunction fn = functions.at(s.name);
        return std::make_unique<Process>(
            [fn, ctx] {
                const int rc = fn(ctx);
                if (rc != 0) {
                    std::fflush(nullptr);
                    ::_exit(rc);
                }
            },
            std::move(po));
    }
    Command c;
    c.program = s.program;
    for (std::size_t i = 1; i < s.cmd.size(); ++i) {
        c.args.push_back(expand_placeholders(s.cmd[i], s, r.index, objects, spec.name, run));
    }
    c.cwd = po.cwd;
    return std::make_unique<Process>(std::move(c), std::move(po));
}

void Graph::Impl::spawn(Replica& r) {
    const StageSpec& s = spec.stages[r.stage];
    // stdin: a pipe we make, so we keep a copy of its read end (see pump_stdin).
    int in_pipe[2] = {-1, -1};
    if (!s.stdin_queue.empty() && ::pipe2(in_pipe, O_CLOEXEC) != 0) {
        const int e = errno;
        cannot_start(r, Error::from_errno(e, "stage \"" + s.name + "\": stdin pipe").what());
        return;
    }
    r.proc = make_process(r, process_options(r, in_pipe[0]));
    r.exit_code.reset();
    r.stopped_by_us = false;
    r.restart_pending = false;
    r.instance_failed = false;
    r.kill_at.reset();
    r.started_at = Clock::now();
    try {
        r.proc->start();
    } catch (const Error& e) {
        if (in_pipe[0] >= 0) ::close(in_pipe[0]);
        if (in_pipe[1] >= 0) ::close(in_pipe[1]);
        cannot_start(r, e.what());
        return;
    }
    r.pid = r.proc->pid();
    r.phase = Replica::Phase::running;
    r.stdin_read_fd = in_pipe[0];
    start_adapters(r, in_pipe[1]);
}

// The threads of a started process: each owns one pipe end and counts itself out when done.
void Graph::Impl::start_adapters(Replica& r, int stdin_write_fd) {
    const StageSpec& s = spec.stages[r.stage];
    const std::string label = r.label(spec);
    r.threads_running = std::make_shared<std::atomic<int>>(0);
    r.stop_stdin = std::make_shared<std::atomic<bool>>(false);
    r.abandon_pipes = std::make_shared<std::atomic<bool>>(false);
    r.verdict = std::make_shared<std::atomic<int>>(static_cast<int>(detail::ExitVerdict::unknown));
    r.dropped_bytes = std::make_shared<std::atomic<std::size_t>>(0);
    r.leftover_step = 0;
    auto launch = [&r](auto body) {
        auto counter = r.threads_running;
        counter->fetch_add(1, std::memory_order_relaxed);  // joined by the same thread that reads it
        r.threads.emplace_back([counter, body]() mutable {
            detail::block_sigpipe_in_this_thread();
            body();
            counter->fetch_sub(1, std::memory_order_release);  // pairs with the acquire in tick()
        });
    };
    const std::string prefix = label + " | ";
    detail::Output* o = out.get();
    const int log_fd = r.log_fd;
    const auto abandon = r.abandon_pipes;  // shared: outlives a restart's new flag
    if (const int fd = r.proc->release_stderr(); fd >= 0) {
        const int dest = o->err_fd();
        launch([fd, o, dest, prefix, log_fd, abandon] { detail::pump_log(fd, *o, dest, prefix, log_fd, *abandon); });
    }
    if (const int fd = r.proc->release_stdout(); fd >= 0) {
        if (const auto e = pipe_edges.find(s.stdout_queue); e != pipe_edges.end()) {
            PipeEdge& edge = e->second;
            detail::AdapterErrors* errs = &r.errors;
            const std::size_t limit = line_limits.at(s.stdout_queue);
            auto verdict = r.verdict;
            auto dropped = r.dropped_bytes;
            auto counts = edge.counts;
            auto reader_stop = edge.reader_stop ? edge.reader_stop : std::make_shared<std::atomic<bool>>(true);
            auto reader_threads = std::exchange(edge.reader_threads, nullptr);
            const int out_fd = std::exchange(edge.reader_fd, -1);
            launch([fd, out_fd, limit, errs, abandon, verdict, dropped, reader_stop, counts, reader_threads] {
                detail::pump_pipe(fd, out_fd, limit, *errs, *abandon, *verdict, *dropped, *reader_stop, *counts);
                if (reader_threads) reader_threads->fetch_sub(1, std::memory_order_release);  // pairs with tick()
            });
        } else if (r.producer) {
            Producer<>* tx = r.producer.get();
            detail::AdapterErrors* errs = &r.errors;
            const StreamFormat f = s.stdout_format;
            const auto batched = line_limits.find(s.stdout_queue);
            const std::size_t limit = batched == line_limits.end() ? 0 : batched->second;
            auto verdict = r.verdict;
            auto dropped = r.dropped_bytes;
            launch([fd, tx, f, limit, errs, abandon, verdict, dropped] {
                detail::pump_stdout(fd, *tx, f, limit, *errs, *abandon, *verdict, *dropped);
            });
        } else {
            const int dest = o->out_fd();
            launch([fd, o, dest, prefix, log_fd, abandon] { detail::pump_log(fd, *o, dest, prefix, log_fd, *abandon); });
        }
    }
    if (const auto e = pipe_edges.find(s.stdin_queue); e != pipe_edges.end() && stdin_write_fd >= 0) {
        // A pipe edge: the writer's relay fills this pipe (spawned later: consumers first).
        e->second.reader_fd = stdin_write_fd;
        e->second.reader_stop = r.stop_stdin;
        e->second.reader_threads = r.threads_running;
        r.threads_running->fetch_add(1, std::memory_order_relaxed);
    } else if (const int fd = stdin_write_fd; fd >= 0) {
        Consumer<>* rx = r.consumer.get();
        const StreamFormat f = s.stdin_format;
        const bool batched = line_limits.count(s.stdin_queue) != 0;
        const std::atomic<bool>* stop = r.stop_stdin.get();
        auto keep = r.stop_stdin;
        r.ledger = std::make_unique<detail::StdinLedger>();
        detail::StdinLedger* ledger = r.ledger.get();  // read by us only after the thread is joined
        launch([fd, rx, f, batched, stop, keep, ledger, redeliver = std::exchange(r.redeliver, {})]() mutable {
            detail::pump_stdin(fd, *rx, f, batched, *stop, std::move(redeliver), *ledger);
        });
    }
}

// A process that could not be started counts as one that exited with 127 at once.
void Graph::Impl::cannot_start(Replica& r, const std::string& why) {
    const StageSpec& s = spec.stages[r.stage];
    r.pid = 0;
    r.phase = Replica::Phase::exited;
    r.threads_running = std::make_shared<std::atomic<int>>(0);
    r.error = why;
    if (const auto e = pipe_edges.find(s.stdout_queue); e != pipe_edges.end()) give_up_pipe_edge(e->second);
    report("stage \"" + s.name + "\" replica " + std::to_string(r.index) + " could not start: " + why);
    on_exit(r, 127);
}

void Graph::Impl::record_failure(Replica& r, const std::string& what) {
    const StageSpec& s = spec.stages[r.stage];
    r.failed = true;
    report(what);
    if (first_failure.empty()) {
        first_failure = what;
        first_failed_replica = r.label(spec);
    }
    if (s.critical && spec.failure == FailurePolicy::fail_fast && mode != Mode::terminating && mode != Mode::killing) {
        fail_fast_triggered = true;
        report("stopping the pipeline (fail-fast)");
        begin_terminate(false);
    }
}

void Graph::Impl::on_exit(Replica& r, int code) {
    const StageSpec& s = spec.stages[r.stage];
    r.exit_code = code;
    r.seconds += std::chrono::duration<double>(Clock::now() - r.started_at).count();
    r.phase = Replica::Phase::exited;
    if (r.stop_stdin) r.stop_stdin->store(true, std::memory_order_release);  // the stdin adapter may stop
    const bool ok = std::find(s.success_codes.begin(), s.success_codes.end(), code) != s.success_codes.end();
    r.instance_failed = !ok && !r.stopped_by_us;
    if (r.verdict) {
        r.verdict->store(static_cast<int>(ok ? detail::ExitVerdict::ended_well : detail::ExitVerdict::failed),
                         std::memory_order_release);
    }
    const std::string who = "stage \"" + s.name + "\" replica " + std::to_string(r.index);
    // A native consumer that failed had taken the message it claimed last (M3 in
    // queue_layout.hpp: kept until its next claim, cleared while it waits on an empty queue):
    // whether it finished it cannot be known, so it is counted as lost. Read now, before its
    // endpoints are closed and a replacement may recycle its records.
    if (r.instance_failed && r.pid > 0) {
        for (const auto& in : s.inputs) {
            if (const Queue* q = queue_handle(in)) {
                if (const auto pos = q->last_claim_of(static_cast<std::uint32_t>(r.pid))) {
                    count_lost(r, 1, who + " (pid " + std::to_string(r.pid) + ") failed holding message " +
                                         std::to_string(*pos) + " of queue \"" + in + "\"; whether it finished it cannot be known");
                }
            }
        }
    }
    // End of stream flows on: close whatever endpoints the program left open. A dead
    // producer's endpoints count as done whether a consumer reaped them first or we close
    // them now; nothing the run reports depends on which came first.
    if (r.pid > 0) {
        for (auto& q : queues) {
            if (q) q->close_endpoints_of(static_cast<std::uint32_t>(r.pid));
        }
    }
    if (!r.instance_failed) return;
    const std::string what =
        r.pid > 0 ? who + " (pid " + std::to_string(r.pid) + ") " + describe_exit(code) : who + " could not start";
    if (s.restart == RestartPolicy::on_failure && r.restarts < s.max_restarts &&
        (mode == Mode::running || (mode == Mode::draining && !s.is_source()))) {
        report(what + "; restarting (" + std::to_string(r.restarts + 1) + " of " + std::to_string(s.max_restarts) + ")");
        r.restart_pending = true;
        return;
    }
    record_failure(r, what + (s.restart == RestartPolicy::on_failure ? " (no restarts left)" : ""));
}

// The reader of a pipe edge is gone and the writer's relay has ended (it counts as one of the
// reader's threads). Pipe edges have no restarts, so nothing is re-delivered: a failed reader
// lost every line it was given (whether it finished them cannot be known), and lines the
// relay read but could not deliver (the reader ended first) are lost whatever the reader's end.
void Graph::Impl::settle_pipe_edge(Replica& r, const PipeEdge& e) {
    const StageSpec& s = spec.stages[r.stage];
    const std::uint64_t lines_in = e.counts->lines_in.load(std::memory_order_relaxed);
    const std::uint64_t lines_out = e.counts->lines_out.load(std::memory_order_relaxed);
    const std::string who = "stage \"" + s.name + "\" replica " + std::to_string(r.index);
    if (r.instance_failed && lines_out != 0) {
        count_lost(r, lines_out, who + " failed after reading from pipe edge \"" + s.stdin_queue +
                               "\", and what it did with its input cannot be known");
    }
    if (lines_in > lines_out) {
        count_lost(r, lines_in - lines_out, who + " ended before its input on pipe edge \"" + s.stdin_queue + "\" did");
    }
}

void Graph::Impl::count_lost(Replica& r, std::uint64_t n, const std::string& what) {
    r.lost += n;
    report(what + ": " + std::to_string(n) + (n == 1 ? " message" : " messages") + " counted as lost");
}

// The stdin side of a process that is gone (reaped, its adapter joined). If it failed, the
// messages still in its pipe or never written were not read: they go to its replacement, or
// are lost when there is none; the ones it read are lost, since what a program did with its
// input cannot be known. Decided here once, from the adapter's ledger and the pipe.
void Graph::Impl::settle_input(Replica& r, bool restarting) {
    std::string left;
    if (r.stdin_read_fd >= 0) {
        int avail = 0;
        if (r.instance_failed && ::ioctl(r.stdin_read_fd, FIONREAD, &avail) == 0 && avail > 0) {
            left.resize(static_cast<std::size_t>(avail));
            std::size_t got = 0;
            while (got < left.size()) {  // the writer is closed and the reader dead: it is all there
                const ssize_t n = ::read(r.stdin_read_fd, left.data() + got, left.size() - got);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) break;
                got += static_cast<std::size_t>(n);
            }
            left.resize(got);
        }
        ::close(r.stdin_read_fd);
        r.stdin_read_fd = -1;
    }
    const std::unique_ptr<detail::StdinLedger> ledger = std::move(r.ledger);
    if (!r.instance_failed || !ledger) return;
    const StageSpec& s = spec.stages[r.stage];
    const std::string who = "stage \"" + s.name + "\" replica " + std::to_string(r.index);
    detail::StdinSettlement st = detail::settle_stdin(*ledger, left);
    if (st.read != 0) {
        count_lost(r, st.read, who + " had read from queue \"" + s.stdin_queue + "\" before it failed, and what it did with it cannot be known");
    }
    if (st.unread.empty()) return;
    const std::uint64_t n = st.unread.size();
    if (restarting) {
        r.redelivered += n;
        r.redeliver = std::move(st.unread);
        report(who + ": " + std::to_string(n) + (n == 1 ? " message" : " messages") +
               " it never read go to its replacement first");
    } else {
        count_lost(r, n, who + " never read what was left in its input");
    }
}

// The process exited but its pipes are still being read. Usually the adapter is only
// catching up (a full queue), but a child it left behind (`sh -c 'sleep 100 & exec true'`)
// may hold them open, and then EOF never comes. The process is not reaped yet, so its
// group id is still reserved: stop the group with the ladder (harmless when the group is
// empty), and if the pipes still stay silent (a process that left the group holds them),
// let the readers give up so join() always ends.
void Graph::Impl::stop_leftovers(Replica& r, Clock::time_point now) {
    if (!r.proc || !r.proc->started()) return;
    const bool killing = mode == Mode::killing;
    if (r.leftover_step == 0) {
        r.proc->signal_group(killing ? SIGKILL : SIGTERM);
        r.leftover_step = killing ? 2 : 1;
        r.leftover_next = now + (killing ? std::chrono::milliseconds(2000) : stop_timeout(spec.stages[r.stage]));
    } else if (r.leftover_step == 1 && (killing || now >= r.leftover_next)) {
        r.proc->signal_group(SIGKILL);
        r.leftover_step = 2;
        r.leftover_next = now + std::chrono::milliseconds(2000);
    } else if (r.leftover_step == 2 && now >= r.leftover_next) {
        r.abandon_pipes->store(true, std::memory_order_release);
        r.leftover_step = 3;
    }
}

void Graph::Impl::finish_instance(Replica& r) {
    if (r.proc && r.proc->started()) (void)r.proc->join();  // exited already: reaps at once
    for (auto& t : r.threads) t.join();
    r.threads.clear();
    const StageSpec& s = spec.stages[r.stage];
    if (const std::size_t dropped = r.dropped_bytes ? r.dropped_bytes->exchange(0) : 0; dropped != 0) {
        report("stage \"" + s.name + "\" replica " + std::to_string(r.index) + ": dropped the cut-off last line (" +
               std::to_string(dropped) + " bytes) of a process that did not exit successfully");
    }
    const std::string err = r.errors.take();
    if (!err.empty()) {
        r.error = err;
        // A failed process's output ends anywhere: that is part of its failure, not another.
        if (!r.failed && !r.instance_failed && !r.stopped_by_us && mode != Mode::terminating && mode != Mode::killing) {
            record_failure(r, "stage \"" + s.name + "\" replica " + std::to_string(r.index) + ": " + err);
        }
    }
    const bool restarting = r.restart_pending && (mode == Mode::running || mode == Mode::draining);
    settle_input(r, restarting);
    if (const auto e = pipe_edges.find(s.stdin_queue); e != pipe_edges.end()) settle_pipe_edge(r, e->second);
    if (restarting) {
        ++r.restarts;
        r.proc.reset();
        // The failed replica's own producers were counted as done (closed on its behalf, or
        // dead); the replacement will attach new ones, so the end of stream must wait for them.
        for (const auto& w : s.writes()) {
            if (w == s.stdout_queue) continue;  // the adapter's producer lives on across restarts
            if (Queue* q = queue_handle(w)) q->expect_more_producers(1);
        }
        spawn(r);
        return;
    }
    r.restart_pending = false;
    if (r.producer) r.producer->close();  // the adapter's end of stream
    r.consumer.reset();
    r.phase = Replica::Phase::done;
}

// A replica that will never start. Its queues count it as an expected producer
// (expected_producers), so while draining its end of stream is given on its behalf: the
// stdout adapter's producer is closed, and each native output gets one producer that
// attaches and closes at once. (Terminating: the queues are broken anyway.)
void Graph::Impl::skip(Replica& r) {
    r.phase = Replica::Phase::done;
    r.stopped_by_us = true;
    const StageSpec& s = spec.stages[r.stage];
    if (const auto e = pipe_edges.find(s.stdout_queue); e != pipe_edges.end()) give_up_pipe_edge(e->second);
    if (mode != Mode::draining) return;
    if (r.producer) r.producer->close();
    for (const auto& w : s.outputs) {
        try {
            Producer<> stand_in(objects.at(w));
            stand_in.close();
        } catch (const std::exception& e) {
            report("stage \"" + s.name + "\" replica " + std::to_string(r.index) + ": could not end its output \"" + w +
                   "\" while draining: " + e.what());
        }
    }
}

bool Graph::Impl::all_done() const {
    return std::all_of(replicas.begin(), replicas.end(), [](const auto& r) { return r->phase == Replica::Phase::done; });
}

bool Graph::Impl::supervise(std::optional<Clock::time_point> deadline) {
    while (true) {
        tick();
        if (all_done()) return true;
        if (deadline && Clock::now() >= *deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

void Graph::Impl::mark_all_broken() {
    for (auto& q : queues) {
        if (q) q->mark_broken();
    }
}

void Graph::Impl::begin_drain() {
    if (mode != Mode::running) return;
    stop_requested = true;
    mode = Mode::draining;
    report("draining: stopping the sources, letting end of stream flow (Ctrl-C again to terminate)");
    drain_deadline = Clock::now() + spec.drain_timeout;
    for (auto& rp : replicas) {
        Replica& r = *rp;
        const StageSpec& s = spec.stages[r.stage];
        if (!s.is_source()) continue;
        r.restart_pending = false;
        if (r.phase != Replica::Phase::running) continue;
        r.stopped_by_us = true;
        r.proc->signal_group(spec.stop_signal);  // no SIGKILL here: drain_timeout escalates
    }
}

void Graph::Impl::begin_terminate(bool by_request) {
    if (by_request) stop_requested = true;
    if (mode == Mode::terminating || mode == Mode::killing) return;
    if (by_request) {
        terminate_requested = true;
        report("terminating: " + detail::signal_name(spec.stop_signal) + " to every stage, SIGKILL after the grace period");
    }
    mode = Mode::terminating;
    stop_running(spec.stop_signal);
}

// Both stop rungs: queues broken so nobody blocks, no restarts, the signal to every
// running replica's group, and when it is to be SIGKILLed (now, or after its stop_timeout).
void Graph::Impl::stop_running(int sig) {
    mark_all_broken();
    for (auto& rp : replicas) {
        Replica& r = *rp;
        r.restart_pending = false;
        if (r.phase != Replica::Phase::running) continue;
        r.stopped_by_us = true;
        r.proc->signal_group(sig);
        if (sig == SIGKILL) {
            r.proc->kill();
            r.kill_at = Clock::now();
        } else {
            const auto at = Clock::now() + stop_timeout(spec.stages[r.stage]);
            r.kill_at = r.kill_at ? std::min(*r.kill_at, at) : at;
        }
    }
}

void Graph::Impl::begin_kill() {
    if (mode == Mode::killing) return;
    stop_requested = true;
    report("killing every stage (SIGKILL)");
    mode = Mode::killing;
    stop_running(SIGKILL);
}

GraphStatus Graph::Impl::status() const {
    GraphStatus st;
    st.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    st.failure = first_failure;
    st.failed_replica = first_failed_replica;
    st.fail_fast = fail_fast_triggered;
    for (std::size_t i = 0; i < queues.size(); ++i) {
        if (!queues[i] && pipe_edges.count(spec.queues[i].name) == 0) continue;  // of other hosts only
        GraphStatus::Queue q;
        q.name = spec.queues[i].name;
        if (const auto e = pipe_edges.find(q.name); e != pipe_edges.end()) {
            q.pipe = true;
            q.messages_out = e->second.counts->lines_out.load(std::memory_order_relaxed);
        } else {
            try {
                const QueueStats qs = queues[i]->stats();
                q.depth = qs.depth;
                q.messages_out = qs.messages_out;
                q.ended = qs.ended;
                q.broken = qs.broken;
            } catch (const Error&) {
            }
        }
        q.messages_per_second = i < rates.size() ? rates[i] : 0;
        st.queues.push_back(q);
    }
    for (std::size_t si = 0; si < spec.stages.size(); ++si) {
        if (!runs_here(spec.stages[si])) continue;
        GraphStatus::Stage s;
        s.name = spec.stages[si].name;
        for (const auto& r : replicas) {
            if (r->stage != si) continue;
            ++s.replicas;
            if (r->phase == Replica::Phase::running) {
                ++s.alive;
            } else if (r->phase == Replica::Phase::done) {
                ++s.exited;
            }
            s.restarts += r->restarts;
            s.failed += r->failed ? 1 : 0;
            if (s.exit_codes.size() <= r->index) s.exit_codes.resize(r->index + 1);
            s.exit_codes[r->index] = r->exit_code;
        }
        st.stages.push_back(s);
    }
    return st;
}

void Graph::Impl::tick() {
    // Requests from signal handlers or other threads.
    const int n = interrupts.load(std::memory_order_relaxed);  // a counter, no data published with it
    while (interrupts_seen < n) {
        ++interrupts_seen;
        if (interrupts_seen == 1) {
            begin_drain();
        } else if (interrupts_seen == 2) {
            begin_terminate(true);
        } else {
            begin_kill();
        }
    }
    if (drain_req.exchange(false)) begin_drain();
    if (terminate_req.exchange(false)) begin_terminate(true);
    if (kill_req.exchange(false)) begin_kill();
    if (mode == Mode::draining && drain_deadline && Clock::now() >= *drain_deadline) {
        report("drain did not finish within " + std::to_string(spec.drain_timeout.count()) + " ms; terminating");
        begin_terminate(true);
    }

    const auto now = Clock::now();
    for (auto& rp : replicas) {
        Replica& r = *rp;
        if (r.phase == Replica::Phase::running) {
            // Not reaped yet (poll_exit): its group id stays reserved for stop_leftovers().
            if (const auto code = r.proc->poll_exit()) {
                on_exit(r, *code);
            } else if (r.kill_at && now >= *r.kill_at) {
                r.proc->signal_group(SIGKILL);
                r.proc->kill();
            }
        }
        if (r.phase == Replica::Phase::exited) {
            if (r.threads_running->load(std::memory_order_acquire) == 0) {
                finish_instance(r);
            } else {
                stop_leftovers(r, now);
            }
        }
    }

    if (opt.status_line && now - last_status >= opt.status_interval) {
        const double dt = std::chrono::duration<double>(now - last_status).count();
        last_status = now;
        rates.resize(queues.size(), 0);
        last_out.resize(queues.size(), 0);
        for (std::size_t i = 0; i < queues.size(); ++i) {
            const auto e = pipe_edges.find(spec.queues[i].name);
            if (e == pipe_edges.end() && !queues[i]) continue;  // of other hosts only
            try {
                const auto mo = e != pipe_edges.end() ? e->second.counts->lines_out.load(std::memory_order_relaxed)
                                                      : queues[i]->stats().messages_out;
                rates[i] = dt > 0 ? static_cast<double>(mo - last_out[i]) / dt : 0;
                last_out[i] = mo;
            } catch (const Error&) {
            }
        }
        out->set_status(status().to_line(120));
    }
}

void Graph::Impl::stop_everything_now() noexcept {
    for (auto& q : queues) {
        if (q) q->mark_broken();
    }
    for (auto& rp : replicas) {
        Replica& r = *rp;
        if (r.stop_stdin) r.stop_stdin->store(true);
        if (r.abandon_pipes) r.abandon_pipes->store(true);
        // Also an exited, unreaped process: stop() kills what it left in its group.
        if (r.proc && r.proc->started()) (void)r.proc->stop(std::chrono::milliseconds(0));
        for (auto& t : r.threads) {
            if (t.joinable()) t.join();
        }
        r.threads.clear();
        r.phase = Replica::Phase::done;
    }
}

void Graph::Impl::cleanup() noexcept {
    for (auto& rp : replicas) {
        rp->producer.reset();
        rp->consumer.reset();
        if (rp->log_fd >= 0) {
            ::close(rp->log_fd);
            rp->log_fd = -1;
        }
        if (rp->stdin_read_fd >= 0) {
            ::close(rp->stdin_read_fd);
            rp->stdin_read_fd = -1;
        }
    }
    for (auto& [name, edge] : pipe_edges) give_up_pipe_edge(edge);
    queues.clear();  // the owner handles unlink the objects
    guardian.release();
}

Graph::Graph(std::string name, GraphOptions options) : impl_(std::make_unique<Impl>()) {
    impl_->spec.name = std::move(name);
    impl_->spec.source = "graph \"" + impl_->spec.name + "\"";
    impl_->opt = std::move(options);
}

Graph::Graph(PipelineSpec spec, GraphOptions options) : impl_(std::make_unique<Impl>()) {
    impl_->spec = std::move(spec);
    impl_->opt = std::move(options);
}

Graph::~Graph() {
    if (impl_ && impl_->started && !impl_->joined) {
        impl_->stop_everything_now();
        impl_->cleanup();
    }
}

Graph& Graph::queue(QueueSpec q) {
    if (impl_->started) throw Error(errc::invalid_state, "graph \"" + impl_->spec.name + "\": queue() after start()");
    q.declared = true;
    impl_->spec.queues.push_back(std::move(q));
    return *this;
}

Graph& Graph::stage(StageSpec s) {
    if (impl_->started) throw Error(errc::invalid_state, "graph \"" + impl_->spec.name + "\": stage() after start()");
    if (s.cmd.empty()) {
        throw Error(errc::spec_error, "graph \"" + impl_->spec.name + "\": stage \"" + s.name + "\" has an empty cmd");
    }
    impl_->spec.stages.push_back(std::move(s));
    return *this;
}

Graph& Graph::host(HostSpec h) {
    if (impl_->started) throw Error(errc::invalid_state, "graph \"" + impl_->spec.name + "\": host() after start()");
    impl_->spec.hosts.push_back(std::move(h));
    return *this;
}

Graph& Graph::stage(std::string name, StageFunction fn, StageSpec options) {
    if (impl_->started) throw Error(errc::invalid_state, "graph \"" + impl_->spec.name + "\": stage() after start()");
    options.name = std::move(name);
    options.is_function = true;
    options.cmd = {"(function " + options.name + ")"};
    impl_->functions[options.name] = std::move(fn);
    impl_->spec.stages.push_back(std::move(options));
    return *this;
}

void Graph::start() {
    Impl& g = *impl_;
    if (g.started) throw Error(errc::invalid_state, "graph \"" + g.spec.name + "\": start() called twice");
    validate_spec(g.spec, g.opt.spec_options);
    g.check_host();
    g.graph.emplace(g.spec);
    g.run = g.opt.run_id.empty() ? make_run_id() : g.opt.run_id;
    // The launchers of one run share the run id; the host in it keeps their objects apart
    // when two "hosts" share a machine (a loopback trial, network namespaces).
    if (g.spec.multi_host()) g.run += "-" + g.opt.host;
    g.out = std::make_unique<detail::Output>(g.opt.out_fd, g.opt.err_fd, g.opt.status_line);
    g.started = true;
    g.t0 = Clock::now();
    g.last_status = g.t0;
    try {
        for (const auto& q : g.spec.queues) validate_name(g.object_name(q), "queue");
        g.start_guardian();  // first: a launcher killed from here on leaves nothing behind
        g.create_queues();
        g.make_replicas();
        for (auto& r : g.replicas) {
            g.tick();  // a stage that fails at once stops the rest before they start
            // While draining (Ctrl-C during start) everything but the sources still starts:
            // they are what lets end of stream flow. Once terminating, nothing starts.
            const bool source = g.spec.stages[r->stage].is_source();
            if (g.mode == Impl::Mode::running || (g.mode == Impl::Mode::draining && !source)) {
                g.spawn(*r);
            } else {
                g.skip(*r);
            }
        }
    } catch (...) {
        g.stop_everything_now();
        g.cleanup();
        g.joined = true;
        throw;
    }
}

GraphResult Graph::join() {
    Impl& g = *impl_;
    if (!g.started || g.joined) {
        throw Error(errc::invalid_state, "graph \"" + g.spec.name + "\": join() without a started, unjoined graph");
    }
    g.supervise(std::nullopt);
    g.out->end_status();

    GraphResult res;
    res.seconds = std::chrono::duration<double>(Clock::now() - g.t0).count();
    for (std::size_t i = 0; i < g.queues.size(); ++i) {
        QueueResult q;
        if (!g.queues[i] && g.pipe_edges.count(g.spec.queues[i].name) == 0) continue;  // of other hosts only
        q.name = g.spec.queues[i].name;
        if (const auto e = g.pipe_edges.find(q.name); e != g.pipe_edges.end()) {
            const detail::PipeEdgeCounts& c = *e->second.counts;  // exact: every relay is joined
            q.pipe = true;
            q.messages_in = c.lines_in.load(std::memory_order_relaxed);
            q.messages_out = c.lines_out.load(std::memory_order_relaxed);
            q.bytes_in = c.bytes_in.load(std::memory_order_relaxed);
            q.bytes_out = c.bytes_out.load(std::memory_order_relaxed);
            res.queues.push_back(q);
            continue;
        }
        q.object = g.queues[i]->name();
        try {
            const QueueStats st = g.queues[i]->stats();
            q.messages_in = st.messages_in;
            q.messages_out = st.messages_out;
            q.bytes_in = st.bytes_in;
            q.bytes_out = st.bytes_out;
            q.lost = st.lost;
            q.abandoned = st.abandoned;
            q.broken = st.broken;
        } catch (const Error&) {
        }
        res.queues.push_back(q);
    }
    bool any_failed = false;
    // Report stages in spec order.
    for (std::size_t si = 0; si < g.spec.stages.size(); ++si) {
        for (const auto& rp : g.replicas) {
            if (rp->stage != si) continue;
            ReplicaResult rr;
            rr.stage = g.spec.stages[si].name;
            rr.replica = rp->index;
            rr.pid = rp->pid;
            rr.exit_code = rp->exit_code;
            rr.stopped = rp->stopped_by_us;
            rr.failed = rp->failed;
            rr.restarts = rp->restarts;
            rr.seconds = rp->seconds;
            rr.error = rp->error;
            rr.lost = rp->lost;
            rr.redelivered = rp->redelivered;
            // A stage that is not critical dies alone: reported, but the run can still succeed.
            const bool counts = g.spec.stages[si].critical || g.spec.failure == FailurePolicy::keep_going;
            any_failed = any_failed || (rp->failed && counts);
            res.replicas.push_back(std::move(rr));
        }
    }
    if (g.mode == Impl::Mode::killing) {
        res.ending = GraphEnding::killed;
    } else if (g.terminate_requested) {
        res.ending = GraphEnding::terminated;
    } else if (g.fail_fast_triggered) {
        res.ending = GraphEnding::failed;
    } else if (g.mode == Impl::Mode::draining) {
        res.ending = GraphEnding::drained;
    } else {
        res.ending = GraphEnding::completed;
    }
    for (const auto& rr : res.replicas) res.lost += rr.lost;
    res.on_loss = g.spec.on_loss;
    res.stop_signal = g.stop_signal.load(std::memory_order_relaxed);
    res.stopped = g.stop_requested;
    res.failure = g.first_failure;
    res.host = g.opt.host;
    const bool loss_fails = res.lost != 0 && g.spec.on_loss == LossPolicy::fail;
    res.success = !any_failed && !loss_fails && (res.ending == GraphEnding::completed || res.ending == GraphEnding::drained);
    if (res.failure.empty() && loss_fails) {
        res.failure = std::to_string(res.lost) + (res.lost == 1 ? " message was" : " messages were") +
                      " lost by replicas that failed (on_loss = \"warn\" accepts that)";
    }
    if (!res.success && res.failure.empty()) res.failure = "the pipeline was " + std::string(to_string(res.ending));
    g.cleanup();
    g.joined = true;
    return res;
}

bool Graph::join_for(std::chrono::milliseconds timeout) {
    Impl& g = *impl_;
    if (!g.started || g.joined) {
        throw Error(errc::invalid_state, "graph \"" + g.spec.name + "\": join_for() without a started, unjoined graph");
    }
    return g.supervise(Clock::now() + timeout);
}

void Graph::interrupt(int signal) noexcept {
    impl_->note_signal(signal);
    impl_->interrupts.fetch_add(1, std::memory_order_relaxed);
}
void Graph::drain() noexcept { impl_->drain_req.store(true, std::memory_order_relaxed); }
void Graph::terminate(int signal) noexcept {
    impl_->note_signal(signal);
    impl_->terminate_req.store(true, std::memory_order_relaxed);
}
void Graph::kill() noexcept { impl_->kill_req.store(true, std::memory_order_relaxed); }

const PipelineSpec& Graph::spec() const noexcept { return impl_->spec; }
const std::string& Graph::run_id() const noexcept { return impl_->run; }

std::string Graph::queue_object(std::string_view logical) const {
    const auto it = impl_->objects.find(std::string(logical));
    if (it == impl_->objects.end()) {
        throw Error(errc::not_found, "graph \"" + impl_->spec.name + "\": no queue \"" + std::string(logical) +
                                         "\" (or the graph has not started)");
    }
    return it->second;
}

GraphStatus Graph::status() const { return impl_->status(); }

}  // namespace shmpipe
