// HostRun: one host's part of a multi-host run (host_run.hpp): bridges, link, run-wide ending.
#include "host_run.hpp"

#include "bridge_status.hpp"
#include "cli_util.hpp"

#include <shmpipe/detail/guardian.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/net/bridge.hpp>
#include <shmpipe/net/link.hpp>
#include <shmpipe/spec_graph.hpp>

#include <chrono>
#include <csignal>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>
#include <vector>

namespace pipeline_launch {

namespace net = shmpipe::net;
using shmpipe::Error;
using shmpipe::errc;

namespace {

constexpr std::string_view kTool = "pipeline-launch";

void log_line(const std::string& line) { std::cerr << kTool << ": " << line << std::endl; }

bool loopback(const std::string& address) {
    return address.rfind("tcp://127.", 0) == 0 || address.rfind("tcp://localhost:", 0) == 0 ||
           address.rfind("tcp://[::1]:", 0) == 0;
}

// This host's Curve keys from [pipeline] curve_secret_file ("{host}" expanded, relative to the
// spec's folder) and curve_public_keys; nullopt when the spec has no curve_secret_file.
std::optional<net::CurveKeyPair> own_keys(const shmpipe::PipelineSpec& spec, const std::string& host) {
    if (spec.curve_secret_file.empty()) return std::nullopt;
    std::string path = spec.curve_secret_file;
    for (auto at = path.find("{host}"); at != std::string::npos; at = path.find("{host}")) path.replace(at, 6, host);
    if (!path.empty() && path.front() != '/' && !spec.base_dir.empty()) path = spec.base_dir + "/" + path;
    std::ifstream in(path);
    std::string secret;
    if (!(in >> secret)) {
        throw Error(errc::invalid_argument, "read the Curve secret key of host \"" + host + "\" from \"" + path +
                                                "\": missing or empty ([pipeline] curve_secret_file)");
    }
    if (secret.size() != 40) {
        throw Error(errc::invalid_argument, "Curve secret key in \"" + path + "\" must be 40 Z85 characters, not " +
                                                std::to_string(secret.size()));
    }
    return net::CurveKeyPair{spec.curve_public_keys.at(host), secret};
}

std::string stages_on(const shmpipe::PipelineSpec& spec, const std::string& host) {
    std::string out;
    for (const auto& s : spec.stages) {
        if (s.host != host) continue;
        for (unsigned i = 0; i < s.replicas; ++i) out += (out.empty() ? "" : ", ") + s.name + "." + std::to_string(i) + "@" + host;
    }
    return out.empty() ? "no stage" : out;
}

}  // namespace

// One bridged queue with an end on this host, run by its own thread.
struct Bridge {
    shmpipe::BridgeResult result;
    std::unique_ptr<net::Sender> sender;
    std::unique_ptr<net::Receiver> receiver;
    std::thread thread;
    std::atomic<bool> done{false};  // release by the thread after `error`, `cancelled` and `final_counters`
    std::string error;
    bool cancelled = false;
    net::BridgeCounters final_counters;
    std::unique_ptr<shmpipe::bridge_status::BridgeStatusWriter> status;  // what inspect-queues shows

    net::BridgeCounters counters() const { return sender ? sender->counters() : receiver->counters(); }
    void request_stop() noexcept {
        if (sender) sender->request_stop();
        if (receiver) receiver->request_stop();
    }
};

struct HostRun::Impl {
    shmpipe::PipelineSpec spec;  // a copy: the caller moves its spec into the Graph
    std::string host;
    std::string run;
    std::optional<net::CurveKeyPair> keys;
    net::Liveness liveness;
    std::unique_ptr<net::Link> link;
    std::vector<std::unique_ptr<Bridge>> bridges;
    // Removes the bridges' status objects if this launcher dies before it does so itself.
    shmpipe::detail::Guardian status_guardian;
    std::chrono::steady_clock::time_point status_published{};

    // Each bridge's counters into its status object, at most every 100 ms unless `now`.
    void publish_status(bool now) {
        const auto t = std::chrono::steady_clock::now();
        if (!now && t - status_published < std::chrono::milliseconds(100)) return;
        status_published = t;
        for (const auto& b : bridges) {
            const net::BridgeCounters c = b->done.load(std::memory_order_acquire) ? b->final_counters : b->counters();
            std::vector<shmpipe::bridge_status::PeerStatus> peers;
            for (const auto& p : c.peers) {
                peers.push_back({p.host, p.credits, p.in_flight, p.messages, p.bytes, p.resent, p.lost, p.last_heard_ms,
                                 p.state == net::PeerState::live});
            }
            b->status->update(peers);
        }
    }
    void remove_status() noexcept {
        for (auto& b : bridges) b->status.reset();
        status_guardian.release();
    }

    void stop_bridges() {
        for (auto& b : bridges) b->request_stop();
    }
    bool bridges_done() const {
        for (const auto& b : bridges) {
            if (!b->done.load(std::memory_order_acquire)) return false;
        }
        return true;
    }
    void join_bridges() {
        stop_bridges();
        for (auto& b : bridges) {
            if (b->thread.joinable()) b->thread.join();
        }
    }
};

HostRun::HostRun(const shmpipe::PipelineSpec& spec, std::string host, std::string run_token)
    : impl_(std::make_unique<Impl>(Impl{spec, std::move(host), std::move(run_token), {}, {}, {}, {}, {}, {}})) {
    Impl& h = *impl_;
    const shmpipe::HostSpec* me = h.spec.find_host(h.host);
    if (me == nullptr) throw Error(errc::spec_error, "unknown host \"" + h.host + "\"");
    h.keys = own_keys(spec, h.host);
    // The bridges give up a little after the link: a dead host is reported once, by the link,
    // naming the host, and the bridges are stopped then (what they had in flight counted lost).
    h.liveness = {spec.heartbeat, spec.dead_after + 2 * spec.heartbeat};
    if (!h.keys) {
        for (const auto& other : spec.hosts) {
            if (!loopback(other.address)) {
                shmpipe::cli::print_warning(kTool, "host \"" + other.name + "\" at " + other.address +
                                                       " is not a loopback address and the spec has no Curve keys: "
                                                       "bridged messages cross the network unauthenticated and in clear "
                                                       "(set [pipeline] curve_secret_file and curve_public_keys)");
                break;
            }
        }
    }
    net::LinkOptions lo;
    lo.host = h.host;
    lo.bind = me->address;
    lo.run = h.run;
    for (const auto& other : spec.hosts) {
        if (other.name == h.host) continue;
        const auto key = spec.curve_public_keys.find(other.name);
        lo.peers.push_back({other.name, other.address, key == spec.curve_public_keys.end() ? std::string() : key->second});
    }
    lo.liveness = {spec.heartbeat, spec.dead_after};
    lo.connect_timeout = spec.connect_timeout;
    lo.curve = h.keys;
    lo.log = log_line;
    h.link = std::make_unique<net::Link>(std::move(lo));
}

HostRun::~HostRun() {
    impl_->join_bridges();
    impl_->remove_status();
}

void HostRun::start_bridges(const shmpipe::Graph& graph) {
    Impl& h = *impl_;
    const shmpipe::SpecGraph g(h.spec);
    const auto crossing = g.crossing();
    // The guardian first: it knows every status object before any exists.
    std::vector<std::string> status_names;
    for (const auto* e : crossing) {
        if (e->written_on(h.host) || e->read_on(h.host)) {
            status_names.push_back(shmpipe::bridge_status::object_name(graph.queue_object(h.spec.queues[e->queue].name)));
        }
    }
    if (!status_names.empty()) h.status_guardian = shmpipe::detail::Guardian(h.spec.name + ".bridge-guardian", status_names);
    for (std::size_t k = 0; k < crossing.size(); ++k) {
        const shmpipe::QueueEnds& e = *crossing[k];
        const std::string& queue = h.spec.queues[e.queue].name;
        auto b = std::make_unique<Bridge>();
        b->result.queue = queue;
        if (e.written_on(h.host)) {
            b->result.outgoing = true;
            b->result.peers = e.reader_hosts;
            net::SenderOptions so;
            so.queue = graph.queue_object(queue);
            so.edge = queue;
            so.host = h.host;
            for (const auto& r : e.reader_hosts) {
                so.receivers.push_back({r, shmpipe::host_edge_address(*h.spec.find_host(r), k)});
            }
            so.liveness = h.liveness;
            so.log = log_line;
            if (h.keys) {
                // One server key per sender: every receiving host of one edge shares the sender's
                // view only through its own key, so a queue read on several hosts needs them all.
                if (e.reader_hosts.size() != 1) {
                    throw Error(errc::invalid_argument, "queue \"" + queue +
                                                            "\": CurveZMQ on an edge read on several hosts is not supported");
                }
                so.curve = net::CurveOptions{*h.keys, h.spec.curve_public_keys.at(e.reader_hosts.front()), {}};
            }
            b->sender = std::make_unique<net::Sender>(std::move(so));
        } else if (e.read_on(h.host)) {
            b->result.peers = e.writer_hosts;
            net::ReceiverOptions ro;
            ro.queue = graph.queue_object(queue);
            ro.edge = queue;
            ro.host = h.host;
            ro.bind = shmpipe::host_edge_address(*h.spec.find_host(h.host), k);
            ro.expected_senders = static_cast<std::uint32_t>(e.writer_hosts.size());
            ro.liveness = h.liveness;
            ro.log = log_line;
            if (h.keys) {
                std::vector<std::string> allowed;
                for (const auto& w : e.writer_hosts) allowed.push_back(h.spec.curve_public_keys.at(w));
                ro.curve = net::CurveOptions{*h.keys, {}, allowed};
            }
            b->receiver = std::make_unique<net::Receiver>(std::move(ro));
        } else {
            continue;  // an edge between two other hosts
        }
        b->status = std::make_unique<shmpipe::bridge_status::BridgeStatusWriter>(graph.queue_object(queue), b->result.outgoing,
                                                                                  b->result.peers);
        Bridge* raw = b.get();
        h.bridges.push_back(std::move(b));
        raw->thread = std::thread([raw] {
            // Signals go to the main thread, whose loop handles them; here they would only
            // interrupt ZeroMQ's polls.
            sigset_t block;
            sigemptyset(&block);
            for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaddset(&block, sig);
            pthread_sigmask(SIG_BLOCK, &block, nullptr);
            try {
                raw->final_counters = raw->sender ? raw->sender->run() : raw->receiver->run();
            } catch (const Error& err) {
                raw->error = err.what();
                raw->cancelled = err.code() == errc::cancelled;
                raw->final_counters = raw->counters();
            } catch (const std::exception& err) {
                raw->error = err.what();
                raw->final_counters = raw->counters();
            }
            raw->done.store(true, std::memory_order_release);  // pairs with the acquire in bridges_done()
        });
    }
}

void HostRun::write_metrics(shmpipe::metrics::TextWriter& out) const {
    const Impl& h = *impl_;
    struct Row {
        shmpipe::metrics::Labels labels;
        net::PeerCounters peer;
    };
    std::vector<Row> rows;
    for (const auto& b : h.bridges) {
        const net::BridgeCounters c = b->done.load(std::memory_order_acquire) ? b->final_counters : b->counters();
        for (const auto& p : c.peers) {
            rows.push_back({{{"pipeline", h.spec.name},
                             {"queue", b->result.queue},
                             {"direction", b->result.outgoing ? "out" : "in"},
                             {"peer", p.host}},
                            p});
        }
    }
    auto family = [&](const char* name, const char* type, const char* help, auto value) {
        out.family(name, type, help);
        for (const auto& r : rows) out.sample(name, r.labels, static_cast<double>(value(r.peer)));
    };
    using P = const net::PeerCounters&;
    family("shmpipe_bridge_messages_total", "counter",
           "Messages of a bridged queue: acknowledged by the peer (out) or pushed into the local queue (in).",
           [](P p) { return p.messages; });
    family("shmpipe_bridge_bytes_total", "counter", "Payload bytes of those messages.", [](P p) { return p.bytes; });
    family("shmpipe_bridge_resent_total", "counter", "Messages re-sent to this peer after another receiving host died.",
           [](P p) { return p.resent; });
    family("shmpipe_bridge_lost_total", "counter", "Messages sent to this peer and never acknowledged (counted lost).",
           [](P p) { return p.lost; });
    family("shmpipe_bridge_credits", "gauge", "Messages the sender may still send to this peer (out) or was granted (in).",
           [](P p) { return p.credits; });
    family("shmpipe_bridge_in_flight", "gauge", "Messages sent and not yet acknowledged (in: received, not yet pushed).",
           [](P p) { return p.in_flight; });
    family("shmpipe_bridge_last_heard_seconds", "gauge", "Seconds since anything came from the peer on this bridge.",
           [](P p) { return static_cast<double>(p.last_heard_ms) / 1000.0; });
    family("shmpipe_bridge_peer_up", "gauge", "1 while the peer is connected and live on this bridge.",
           [](P p) { return p.state == net::PeerState::live ? 1 : 0; });
    const auto peers = h.link->peers();
    out.family("shmpipe_host_up", "gauge", "1 while the launcher of another host of the run is heard from.");
    for (const auto& p : peers) out.sample("shmpipe_host_up", {{"pipeline", h.spec.name}, {"host", p.host}}, p.state && !p.dead ? 1 : 0);
    out.family("shmpipe_host_last_heard_seconds", "gauge", "Seconds since the launcher of another host was last heard.");
    for (const auto& p : peers) {
        out.sample("shmpipe_host_last_heard_seconds", {{"pipeline", h.spec.name}, {"host", p.host}},
                   static_cast<double>(p.last_heard_ms) / 1000.0);
    }
}

shmpipe::GraphResult HostRun::join(shmpipe::Graph& graph, const std::function<void()>& between) {
    Impl& h = *impl_;
    net::Link& link = *h.link;
    std::string run_failure;  // the first run-wide reason this run is not a success
    bool stopping = false, drained_by_peer = false, finished = false;
    int interrupts_seen = 0, terminates_seen = 0;
    std::optional<shmpipe::GraphResult> result;
    std::vector<bool> bridge_reported(h.bridges.size(), false);
    auto dead_host = [&](const net::LinkPeerStatus& p) {
        return "host \"" + p.host + "\" is dead: " + p.dead_reason + " (its stages: " + stages_on(h.spec, p.host) + ")";
    };

    // Stops this host's part: the graph (unless it stops itself), the bridges, and tells the others.
    auto stop = [&](const std::string& why, bool terminate_graph) {
        if (run_failure.empty()) run_failure = why;
        if (stopping) return;
        stopping = true;
        if (terminate_graph && !result) graph.terminate();
        h.stop_bridges();
        if (!finished) link.set_state(net::RunState::stopping, why);
    };

    while (true) {
        between();
        h.publish_status(false);
        link.step(std::chrono::milliseconds(10));
        const bool graph_done = result.has_value() || graph.join_for(std::chrono::milliseconds(20));

        // Requests made here (signal handlers).
        const int n_int = interrupts_.load(std::memory_order_relaxed);
        for (; interrupts_seen < n_int; ++interrupts_seen) {
            if (interrupts_seen == 0) {
                if (!finished && !stopping) link.set_state(net::RunState::draining, "Ctrl-C on host \"" + h.host + "\"");
            } else {
                stop("interrupted again on host \"" + h.host + "\"", false);
            }
        }
        const int n_term = terminates_.load(std::memory_order_relaxed);
        if (terminates_seen < n_term) {
            terminates_seen = n_term;
            stop("terminated on host \"" + h.host + "\"", false);
        }

        // A failure here: fail-fast stops the graph; the other hosts stop too.
        if (!result && !stopping) {
            const shmpipe::GraphStatus st = graph.status();
            if (st.fail_fast) stop(st.failed_replica + "@" + h.host + ": " + st.failure, false);
        }
        for (std::size_t i = 0; i < h.bridges.size(); ++i) {
            Bridge& b = *h.bridges[i];
            if (bridge_reported[i] || !b.done.load(std::memory_order_acquire)) continue;
            bridge_reported[i] = true;
            if (!b.error.empty() && !b.cancelled) stop(b.error, true);
        }

        // What the other hosts say.
        bool peers_finished = true;
        for (const auto& p : link.peers()) {
            if (p.dead) {
                stop(dead_host(p), true);
                continue;
            }
            if (!p.state || !net::is_finished(*p.state)) peers_finished = false;
            if (!p.state) continue;
            if (p.drained && !drained_by_peer) {  // even when this part is over: the run was stopped
                drained_by_peer = true;
                if (!result) {
                    log_line("host \"" + p.host + "\" drains the run (" + p.drain_reason + "); draining here");
                    graph.drain();
                }
            }
            if (*p.state == net::RunState::stopping) {
                stop(p.reason, true);
            } else if (*p.state == net::RunState::finished_failed && run_failure.empty()) {
                run_failure = p.reason;
            }
        }

        // This host's part is over when its graph and its bridges are; then wait for the others.
        if (!result && graph_done && h.bridges_done()) {
            result = graph.join();
            std::string why = run_failure;
            if (why.empty() && !result->success) why = result->failure + " (on host \"" + h.host + "\")";
            link.set_state(why.empty() ? net::RunState::finished_ok : net::RunState::finished_failed, why);
            finished = true;
        }
        if (finished && peers_finished) break;
        if (finished && stopping) {
            // Stopping: wait for every other host to finish or be declared dead, not longer.
            bool all = true;
            for (const auto& p : link.peers()) all = all && (p.dead || (p.state && net::is_finished(*p.state)));
            if (all) break;
        }
    }
    // The last status frames leave with the Link's linger when it is destroyed.
    h.join_bridges();
    h.publish_status(true);  // the final figures, shown until the launcher exits
    // A dead host explains what failed here after it (a broken queue, a bridge that gave up,
    // whichever noticed first): it is the reason the run reports.
    for (const auto& p : link.peers()) {
        if (p.dead) {
            run_failure = dead_host(p);
            break;
        }
    }

    shmpipe::GraphResult res = std::move(*result);
    std::uint64_t bridge_lost = 0;
    for (const auto& b : h.bridges) {
        shmpipe::BridgeResult br = b->result;
        const net::BridgeCounters& c = b->final_counters;
        br.messages = c.messages;
        br.bytes = c.bytes;
        br.resent = c.resent;
        br.lost = c.lost;
        br.error = b->error;
        bridge_lost += br.lost;
        res.bridges.push_back(std::move(br));
    }
    if (bridge_lost != 0 && run_failure.empty() && res.on_loss == shmpipe::LossPolicy::fail) {
        run_failure = std::to_string(bridge_lost) + " messages were lost on bridged queues";
    }
    if (drained_by_peer && run_failure.empty() && res.stop_signal == 0) {
        run_failure = "the run was drained from another host; the output may be partial";
    }
    if (!run_failure.empty()) {
        res.success = false;
        res.failure = "run stopped: " + run_failure;
    }
    return res;
}

}  // namespace pipeline_launch
