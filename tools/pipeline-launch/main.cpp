// pipeline-launch SPEC.toml: run a producer/consumer process graph from a TOML spec.
// Parses arguments, calls shmpipe::Graph, turns the outcome into an exit code.
#include "cli_util.hpp"
#include "host_run.hpp"
#include "run_metrics.hpp"

#include <shmpipe/graph.hpp>
#include <shmpipe/spec.hpp>
#include <shmpipe/version.hpp>

#include <atomic>
#include <climits>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

constexpr std::string_view kTool = "pipeline-launch";

std::atomic<shmpipe::Graph*> g_graph{nullptr};
std::atomic<pipeline_launch::HostRun*> g_host_run{nullptr};  // set only with --host
static_assert(std::atomic<shmpipe::Graph*>::is_always_lock_free);
static_assert(std::atomic<pipeline_launch::HostRun*>::is_always_lock_free);

extern "C" void on_signal(int sig) {
    shmpipe::Graph* g = g_graph.load();
    if (g == nullptr) return;
    pipeline_launch::HostRun* h = g_host_run.load();
    if (sig == SIGINT) {
        g->interrupt(sig);  // 1 drain, 2 terminate, 3 kill
        if (h != nullptr) h->note_interrupt();
    } else {
        g->terminate(sig);
        if (h != nullptr) h->note_terminate();
    }
}

void install_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGHUP, &sa, nullptr);
    // A stage that stops reading its stdin must not kill the launcher.
    std::signal(SIGPIPE, SIG_IGN);
}

std::string self_dir() {
    char buf[PATH_MAX];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return {};
    std::string p(buf, static_cast<std::size_t>(n));
    const auto slash = p.rfind('/');
    return slash == std::string::npos ? std::string() : p.substr(0, slash);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "Run a producer/consumer process graph from a TOML spec: creates its shared-memory queues, "
        "starts and supervises every stage, stops them cleanly and names the stage that failed.\n"
        "Ctrl-C once drains (stops the sources, lets end of stream flow), twice terminates, three "
        "times kills; SIGTERM and SIGHUP terminate.\n"
        "Exit status: 0 every stage succeeded and no message was lost; 1 a stage failed, messages "
        "were lost (unless the spec says on_loss = \"warn\") or the spec is invalid; 2 bad arguments; "
        "128+N a signal N stopped the run (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), even when it drained "
        "cleanly: its output may be partial.",
        std::string(kTool)};
    app.set_version_flag("--version", std::string(kTool) + " " + SHMPIPE_VERSION_STRING);
    std::string spec_path;
    bool check = false;
    std::string name, run_id, log_dir, summary_json;
    std::vector<std::string> bin_dirs;
    bool no_status = false, force_status = false, quiet = false;

    app.add_option("spec", spec_path, "Pipeline spec (TOML)")->required()->check(CLI::ExistingFile);
    app.add_flag("--check", check, "Validate the spec and print the graph; run nothing")->group("Spec");
    app.add_option("--bin-dir", bin_dirs,
                   "Also look for bare program names here (after PATH; the launcher's own folder comes last)")
        ->group("Spec");
    app.add_option("--name", name, "Override [pipeline] name (the prefix of every object the run creates)")
        ->group("Spec");
    app.add_option("--run-id", run_id,
                   "Run id in object names (default: <pid>-<random>); with hosts, every launcher of one run "
                   "gives the same one")
        ->group("Spec");
    std::string host;
    app.add_option("--host", host,
                   "Run the part of a spec with [[host]] tables placed on host NAME (required then); the "
                   "launchers of the other hosts run theirs")
        ->group("Spec");
    app.add_option("--log-dir", log_dir, "Also write each stage's output to DIR/<stage>.<replica>.log")
        ->check(CLI::ExistingDirectory)
        ->group("Output");
    app.add_option("--summary-json", summary_json, "Write the end summary as JSON to FILE")->group("Output");
    app.add_flag("--no-status", no_status, "No live status line, even on a terminal")->group("Output");
    app.add_flag("--status", force_status, "A live status line even when stderr is not a terminal")->group("Output");
    app.add_flag("-q,--quiet", quiet, "No end summary on stderr")->group("Output");
    std::string metrics_listen;
    app.add_option("--metrics-listen", metrics_listen,
                   "Serve the run's metrics (stages and queues, Prometheus text) at http://ADDR/metrics while it "
                   "runs; ADDR is HOST:PORT, e.g. 127.0.0.1:9465")
        ->group("Output");

    if (const int rc = shmpipe::cli::parse(app, kTool, argc, argv); rc >= 0) return rc;

    return shmpipe::cli::run_guarded(kTool, [&]() -> int {
        shmpipe::SpecOptions so;
        so.bin_dirs = bin_dirs;
        so.self_dir = self_dir();
        shmpipe::PipelineSpec spec = shmpipe::load_spec(spec_path, so);
        if (!name.empty()) {
            spec.name = name;
            shmpipe::validate_spec(spec, so);
        }
        if (!host.empty() && !spec.multi_host()) {
            throw shmpipe::cli::UsageError("--host " + host + " given, but " + spec_path +
                                           " declares no [[host]] (run it without --host)");
        }
        if (!host.empty() && spec.find_host(host) == nullptr) {
            std::string names;
            for (const auto& h : spec.hosts) names += (names.empty() ? "" : ", ") + h.name;
            throw shmpipe::cli::UsageError("unknown host \"" + host + "\" (" + spec_path + " declares " + names + ")");
        }
        if (check) {
            std::cout << shmpipe::describe_spec(spec) << "spec OK" << std::endl;
            return shmpipe::cli::kExitOk;
        }
        if (spec.multi_host() && host.empty()) {
            std::string names;
            for (const auto& h : spec.hosts) names += (names.empty() ? "" : ", ") + h.name;
            throw shmpipe::cli::UsageError(spec_path + " places stages on hosts " + names +
                                           ": say which one this is with --host NAME");
        }

        shmpipe::GraphOptions go;
        go.run_id = run_id;
        go.log_dir = log_dir;
        go.status_line = !no_status && (force_status || ::isatty(2) == 1);
        go.report_prefix = std::string(kTool);
        go.spec_options = so;
        go.host = host;
        std::optional<pipeline_launch::RunMetrics> metrics;  // bound before anything starts
        if (!metrics_listen.empty()) metrics.emplace(metrics_listen);
        // With hosts: the link to the other launchers binds before anything starts, too.
        std::optional<pipeline_launch::HostRun> host_run;
        if (spec.multi_host()) host_run.emplace(spec, host, run_id.empty() ? spec.name : run_id);
        shmpipe::Graph graph(std::move(spec), go);
        struct Registered {
            Registered(shmpipe::Graph* g, pipeline_launch::HostRun* h) {
                g_host_run.store(h);
                g_graph.store(g);
            }
            ~Registered() {
                g_graph.store(nullptr);
                g_host_run.store(nullptr);
            }
        } registered(&graph, host_run ? &*host_run : nullptr);
        install_handlers();
        graph.start();
        shmpipe::GraphResult result;
        if (host_run) {
            host_run->start_bridges(graph);
            if (metrics) metrics->set_extra([&](shmpipe::metrics::TextWriter& out) { host_run->write_metrics(out); });
            result = host_run->join(graph, [&] {
                if (metrics) metrics->serve(graph);
            });
        } else {
            result = metrics ? metrics->join(graph) : graph.join();
        }

        if (!quiet) std::cerr << kTool << ": " << result.summary() << std::flush;
        if (!summary_json.empty()) {
            std::ofstream f(summary_json, std::ios::trunc);
            f << result.to_json();
            if (!f) shmpipe::cli::print_error(kTool, "could not write the summary to \"" + summary_json + "\"");
        }
        if (result.stop_signal != 0) {
            // Like a shell: a run a signal stopped is never a success, however clean the drain.
            shmpipe::cli::print_error(kTool, "stopped by " + shmpipe::signal_name(result.stop_signal) +
                                                 (result.success ? " (drained cleanly; the output may be partial)"
                                                                 : ": " + result.failure));
            return 128 + result.stop_signal;
        }
        if (result.success) return shmpipe::cli::kExitOk;
        shmpipe::cli::print_error(kTool, result.failure);
        return shmpipe::cli::kExitFailure;
    });
}
