// inspect-queues: the subcommands (one .cpp each) and the formatting they share.
// main.cpp parses the command line and maps errors to exit codes through cli_util.hpp:
// 0 ok, 1 runtime failure, 2 usage (UsageError).
#pragma once

#include "bridge_status.hpp"
#include "cli_util.hpp"

#include <shmpipe/inspect.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace inspect_queues {

using shmpipe::cli::UsageError;  // a bad argument value found after parsing (exit code 2)

struct ListOptions {
    std::vector<std::string> patterns;  // glob patterns on names; empty = all
    bool json = false;
};
struct ShowOptions {
    std::string name;
    bool json = false;
};
struct WatchOptions {
    std::vector<std::string> patterns;
    double interval_s = 1.0;
    unsigned count = 0;  // refreshes before quitting; 0 = until Ctrl-C or q
    bool json = false;
};
struct CleanOptions {
    std::vector<std::string> patterns;
    bool dry_run = false;
    bool corrupt = false;
    bool json = false;
};

int run_list(const ListOptions& options);
int run_show(const ShowOptions& options);
int run_watch(const WatchOptions& options);
int run_clean(const CleanOptions& options);

// Per-queue rates between two refreshes of `watch` (0 on the first).
struct Rates {
    double msgs_in_per_s = 0, msgs_out_per_s = 0;
    double mb_in_per_s = 0, mb_out_per_s = 0;
    std::string mark;  // "FULL", "STALLED", "DEAD" or "" (several joined by ',')
};

// A bridged queue's remote side (pipeline-launch --host publishes it next to the queue): the
// validated status, or why its record was refused.
struct RemoteSide {
    std::optional<shmpipe::bridge_status::BridgeStatus> status;
    std::string error;  // the refusal, naming the status object ("" when status is set)
};
// nullopt: not a queue, or a queue that is not bridged (no status object).
std::optional<RemoteSide> remote_side(const shmpipe::ObjectInfo& info);

// --- formatting (format.cpp) -----------------------------------------------------------------

// One object as JSON (single line, Boost.JSON); rates are added when given, and a bridged
// queue's remote side as "remote" (looked up with remote_side).
std::string to_json(const shmpipe::ObjectInfo& info, const Rates* rates = nullptr);
std::string to_json_array(const std::vector<shmpipe::ObjectInfo>& infos);

std::string human_bytes(std::uint64_t bytes);   // "64KiB", "1.5MiB"
std::string human_count(std::uint64_t n);       // "999", "12.3k", "4.5M"
std::string human_age(std::uint64_t since_ns);  // "42s", "5m", "3h", "2d" ("-" when unknown)
std::string percent(double fraction);           // "12.5%"
std::string endpoints_summary(const shmpipe::ObjectInfo& info);  // "producer 12 (dead), consumer 13"
std::string remote_summary(const RemoteSide& remote);  // "bridge out to b (up, 3 in flight)"

// Aligned text table: first row is the header. `right[i]` right-aligns column i.
void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows,
                 const std::vector<bool>& right);

// The rows `list` and `watch` share.
std::vector<std::string> list_header();
std::vector<bool> list_alignment();
std::vector<std::string> list_row(const shmpipe::ObjectInfo& info);

}  // namespace inspect_queues
