// Helpers every shmpipe test uses: unique object names, a guard that removes them, peers
// (helper executables) spawned with deadlines, and leak checks.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shmpipe::test {

using namespace std::chrono_literals;

// "t-<stem>-<pid>-<counter>-<random>": unique across parallel ctest runs and crashed runs.
// Every test object name starts with "t-", so the leak check finds "shmpipe.t-*".
std::string unique_name(std::string_view stem);

// Removes the given names on construction (stale leftovers) and on destruction.
class ShmGuard {
public:
    ShmGuard() = default;
    ShmGuard(std::initializer_list<std::string> names);
    ~ShmGuard();
    ShmGuard(const ShmGuard&) = delete;
    ShmGuard& operator=(const ShmGuard&) = delete;
    // The reference stays valid for the guard's life (a deque never moves its elements).
    const std::string& add(std::string name);

private:
    std::deque<std::string> names_;
};

// Names under /dev/shm (without the "shmpipe." prefix) that start with `prefix`.
std::vector<std::string> shm_objects_with_prefix(std::string_view prefix);

// Full path of a peer program built from tests/support/peers/<name>.cpp.
std::string peer_path(std::string_view name);
// Full path of a program in the build's bin/ (tools, examples, benchmarks).
std::string bin_path(std::string_view name);
// Path of a file in the source tree, e.g. "examples/demo.toml".
std::string source_path(std::string_view relative);

// A spawned child program. The destructor SIGKILLs and reaps a child that still runs.
class Peer {
public:
    Peer(const std::string& program, const std::vector<std::string>& args);
    ~Peer();
    Peer(Peer&&) noexcept;
    Peer& operator=(Peer&&) noexcept;

    int pid() const noexcept;
    bool running();
    // Exit code (negative signal number when killed by a signal), or nullopt at the deadline.
    std::optional<int> wait_for(std::chrono::milliseconds timeout);
    // Like wait_for, but on timeout kills the child and throws std::runtime_error naming `what`.
    int wait_or_throw(std::chrono::milliseconds timeout, std::string_view what);
    void signal(int sig);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// True when no process with this pid exists (a reaped child, or one that never was).
bool process_gone(int pid);

// Polls pred every few milliseconds until it is true (returns true) or the timeout passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

// Runs a shell-free command line, capturing stdout and stderr (merged or not), with a deadline.
struct RunResult {
    int exit_code = -1;      // negative: killed by that signal; 124-style timeouts throw
    std::string out;
    std::string err;
};
RunResult run_program(const std::string& program, const std::vector<std::string>& args,
                      std::chrono::milliseconds timeout, const std::string& input = {});

}  // namespace shmpipe::test
