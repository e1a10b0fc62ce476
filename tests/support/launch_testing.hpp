// Helpers for tests that run pipeline-launch: a temporary directory for specs and outputs,
// files of pids that stages append to, the launcher and peer paths.
#pragma once

#include "test_support.hpp"

#include <shmpipe/detail/process_id.hpp>

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace shmpipe::test {

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "launch-test-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string file(const std::string& name) const { return (path / name).string(); }
    std::string write(const std::string& name, const std::string& text) const {
        std::ofstream(file(name)) << text;
        return file(name);
    }
};

inline std::string launcher() { return bin_path("pipeline-launch"); }
inline std::string behave() { return peer_path("stage_behave"); }

inline std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The pids a stage appended to `path`, one per line.
inline std::vector<int> pids_in(const std::string& path) {
    std::vector<int> pids;
    std::ifstream in(path);
    int p;
    while (in >> p) pids.push_back(p);
    return pids;
}

inline bool all_dead(const std::vector<int>& pids) {
    for (int p : pids) {
        if (shmpipe::detail::process_alive(static_cast<std::uint32_t>(p), 0)) return false;
    }
    return true;
}

// Runs the launcher on `spec` with objects named after `name` (a test name: "t-...").
inline RunResult launch(const std::string& spec, const std::string& name, std::vector<std::string> extra = {},
                        std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    std::vector<std::string> args = {"--name", name, "--no-status"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(spec);
    return run_program(launcher(), args, timeout);
}

// A native fan-out pool spec in `dir`: `header` (e.g. a [pipeline] table), then source COUNT
// (0: until stopped) -> worker x `replicas` -> collector, through 64 KiB queues of 64-byte
// messages. `worker_cmd` is the worker's cmd (a TOML array), `worker_extra` more of its keys.
inline std::string native_pool_spec(const TempDir& dir, const std::string& file, const std::string& header,
                                    unsigned long long count, const std::string& worker_cmd, unsigned replicas,
                                    const std::string& worker_extra = {}) {
    return dir.write(file, header + R"([[queue]]
name = "tasks"
max_message = 64
capacity = "64KiB"
[[queue]]
name = "results"
max_message = 64
capacity = "64KiB"
[[stage]]
name = "source"
cmd = [")" + bin_path("source") + R"(", ")" + std::to_string(count) + R"("]
outputs = ["tasks"]
[[stage]]
name = "worker"
cmd = )" + worker_cmd + R"(
inputs = ["tasks"]
outputs = ["results"]
replicas = )" + std::to_string(replicas) + "\n" + worker_extra + R"([[stage]]
name = "collector"
cmd = [")" + bin_path("collector") + R"("]
inputs = ["results"]
)");
}

// The launcher through `sh -c 'exec ... >out 2>err'` (same pid, outputs kept in dir's files
// "out" and "err"), run id "r" (objects "<name>.r.<queue>"), summary JSON in "s.json".
inline Peer start_launcher(const TempDir& dir, const std::string& name, const std::string& spec) {
    return Peer("/bin/sh", {"-c", "exec \"$0\" \"$@\" >" + dir.file("out") + " 2>" + dir.file("err"), launcher(),
                            "--name", name, "--run-id", "r", "--no-status", "--summary-json", dir.file("s.json"), spec});
}

// The summary JSON a start_launcher() run wrote.
inline boost::json::object summary_of(const TempDir& dir) {
    const std::string text = read_file(dir.file("s.json"));
    INFO(text);
    boost::system::error_code ec;
    auto v = boost::json::parse(text, ec);
    REQUIRE_FALSE(ec);
    return v.as_object();
}

inline void require_no_objects(const std::string& name) {
    INFO("objects of run " << name);
    CHECK(shm_objects_with_prefix(name).empty());
}

}  // namespace shmpipe::test
