// inspect-queues: see inside running shmpipe pipelines, and clean up after crashed ones.
// Parses the command line, runs one subcommand; cli_util.hpp (shared with pipeline-launch)
// maps errors to exit codes: 0 ok, 1 runtime failure, 2 usage error, on stderr as
// "inspect-queues: error: ...".
#include "cli_util.hpp"
#include "commands.hpp"
#include "metrics_commands.hpp"

#include <shmpipe/version.hpp>

#include <CLI/CLI.hpp>

namespace {

constexpr std::string_view kTool = "inspect-queues";

constexpr const char* kFooter = R"(
States: open, closed (ended cleanly), broken, stale (no live process attached),
corrupt (fails validation), unreadable (permission denied).

Examples:
  inspect-queues                       list every shmpipe object
  inspect-queues show frames           everything about "frames"
  inspect-queues watch --interval 0.5  live view; q or Ctrl-C quits
  inspect-queues clean --dry-run       what clean would remove
  inspect-queues serve                 Prometheus metrics at 127.0.0.1:9464/metrics
  inspect-queues --json | jq '.[] | select(.state == "stale") | .name'

Inspecting only reads: it never attaches to a queue, takes a lock or changes a counter.
Only `clean` removes, and never an object a live process uses.
)";

}  // namespace

int main(int argc, char** argv) {
    using namespace inspect_queues;
    CLI::App app{"inspect-queues: list, show, watch, export (Prometheus) and clean the shared-memory objects of shmpipe "
                 "(queues, semaphores, mutexes, events, barriers, shared arrays)",
                 "inspect-queues"};
    app.footer(kFooter);
    app.require_subcommand(0, 1);
    app.set_version_flag("--version", std::string(kTool) + " " + SHMPIPE_VERSION_STRING);
    bool json = false;
    app.add_flag("--json", json, "Machine-readable output: a JSON array (show: one object; watch: one array per line)")
        ->group("For scripts");

    ListOptions list;
    auto* list_cmd = app.add_subcommand("list", "List every object with kind, capacity, depth, state (the default)");
    list_cmd->add_option("patterns", list.patterns, "Only names matching these glob patterns");
    list_cmd->fallthrough();

    ShowOptions show;
    auto* show_cmd = app.add_subcommand("show", "Everything about one object: counters, endpoints, sync state");
    show_cmd->add_option("name", show.name, "Object name (without the shmpipe. prefix)")->required();
    show_cmd->fallthrough();

    WatchOptions watch;
    auto* watch_cmd = app.add_subcommand("watch", "Live view with msgs/s and MB/s per queue; q or Ctrl-C quits");
    watch_cmd->add_option("patterns", watch.patterns, "Only names matching these glob patterns");
    watch_cmd->add_option("--interval", watch.interval_s, "Seconds between refreshes (default 1)")
        ->check(CLI::Range(0.01, 3600.0));
    watch_cmd->add_option("--count", watch.count, "Stop after N refreshes (default: until quit)")
        ->check(CLI::Range(1u, 1000000000u));
    watch_cmd->fallthrough();

    CleanOptions clean;
    auto* clean_cmd = app.add_subcommand("clean", "Remove stale objects (no live process attached)");
    clean_cmd->add_option("patterns", clean.patterns, "Only names matching these glob patterns");
    clean_cmd->add_flag("--dry-run", clean.dry_run, "Only say what would be removed")->group("Repair");
    clean_cmd->add_flag("--corrupt", clean.corrupt, "Also remove corrupt objects (older than 2 s, no live creator)")
        ->group("Repair");
    clean_cmd->fallthrough();

    MetricsOptions metrics;
    auto* metrics_cmd = app.add_subcommand("metrics", "Every object's gauges and counters in the Prometheus text format");
    metrics_cmd->add_option("patterns", metrics.patterns, "Only names matching these glob patterns");
    metrics_cmd->group("Monitoring");

    ServeOptions serve;
    auto* serve_cmd = app.add_subcommand("serve", "Serve the metrics over HTTP at /metrics until Ctrl-C or SIGTERM");
    serve_cmd->add_option("patterns", serve.patterns, "Only names matching these glob patterns");
    serve_cmd->add_option("--listen", serve.listen,
                          "Address to listen on, HOST:PORT (default 127.0.0.1:9464; a non-loopback address "
                          "exposes the metrics to other machines)");
    serve_cmd->group("Monitoring");

    if (const int rc = shmpipe::cli::parse(app, kTool, argc, argv); rc >= 0) return rc;

    return shmpipe::cli::run_guarded(kTool, [&]() -> int {
        if (*show_cmd) {
            show.json = json;
            return run_show(show);
        }
        if (*watch_cmd) {
            watch.json = json;
            return run_watch(watch);
        }
        if (*metrics_cmd) return run_metrics(metrics);
        if (*serve_cmd) return run_serve(serve);
        if (*clean_cmd) {
            clean.json = json;
            return run_clean(clean);
        }
        list.json = json;
        return run_list(list);
    });
}
