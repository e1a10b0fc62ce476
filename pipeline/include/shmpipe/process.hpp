// Child processes: a function in a forked child, or a program (Boost.Process v2), with the
// supervision Python's multiprocessing.Process lacks.
//
//   shmpipe::Process p([] { work(); });                          // a function, forked
//   shmpipe::Process c(shmpipe::Command{"grep", {"-v", "x"}});   // a program, no shell
//   p.start();  p.is_alive();  p.join_for(1s);  p.exit_code();   // -N: killed by signal N
//
// Every child
//   - runs in its own process group (pgid == pid), so signal_group() reaches what it forks;
//   - gets a parent-death signal (SIGKILL by default) and checks getppid() right after
//     setting it, so a parent that dies during start still takes the child with it.
//     Linux sends it when the *thread* that forked the child exits: start children from a
//     thread that lives as long as they should;
//   - starts with an empty signal mask (a parent that blocks SIGTERM for a signalfd does not
//     make its children deaf to it); programs also get SIGPIPE/SIGINT/SIGTERM back at their
//     default dispositions, functions get every handler the parent installed reset to the
//     default (what the parent ignores stays ignored);
//   - inherits no descriptor except 0, 1, 2 and ProcessOptions::keep_fds. Programs: every
//     other descriptor is closed before exec (close_range). Functions keep the parent's
//     address space and descriptors (like Python's fork), except the parent's ends of the
//     pipes of other Process objects, which are closed so EOF still reaches their readers;
//     close_fds = true closes everything else too.
//
// Stopping is a ladder: stop(grace) sends SIGTERM to the child's process group, waits up
// to `grace` for the child, then SIGKILLs the group, and always reaps. The destructor of a
// started Process that was not joined calls stop(options.stop_grace): no zombies, no orphans.
//
// Thread safety: one Process may be used from several threads (the state is locked;
// join() waits without holding the lock). Reaping is by pid only, never waitpid(-1).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace shmpipe {

// A program to run: no shell. `program` is a path, or a name looked up on PATH.
struct Command {
    std::string program;
    std::vector<std::string> args;
    // Extra environment variables (added to, or replacing, the inherited environment).
    std::vector<std::pair<std::string, std::string>> env = {};
    // Working directory of the child; empty: the parent's.
    std::string cwd = {};
};

// Where a child's standard stream goes.
class Redirect {
public:
    enum class Kind { inherit, null, file, pipe, fd, to_stdout };

    static Redirect inherit() { return Redirect(Kind::inherit); }
    // /dev/null.
    static Redirect null() { return Redirect(Kind::null); }
    // A file: read for stdin; written (truncated, or appended) for stdout/stderr; created 0644.
    static Redirect file(std::string path, bool append = false) {
        Redirect r(Kind::file);
        r.path_ = std::move(path);
        r.append_ = append;
        return r;
    }
    // A pipe; the parent's end is Process::stdin_fd() / stdout_fd() / stderr_fd().
    static Redirect pipe() { return Redirect(Kind::pipe); }
    // A descriptor of the parent (dup'ed into the child; the parent keeps its copy).
    static Redirect fd(int fd) {
        Redirect r(Kind::fd);
        r.fd_ = fd;
        return r;
    }
    // stderr only: wherever stdout goes (2>&1).
    static Redirect to_stdout() { return Redirect(Kind::to_stdout); }

    Kind kind() const noexcept { return kind_; }
    const std::string& path() const noexcept { return path_; }
    bool append() const noexcept { return append_; }
    int descriptor() const noexcept { return fd_; }

private:
    explicit Redirect(Kind k) : kind_(k) {}
    Kind kind_ = Kind::inherit;
    std::string path_;
    bool append_ = false;
    int fd_ = -1;
};

struct ProcessOptions {
    std::string name = {};                      // empty: "Process-N" or the program's file name
    Redirect in = Redirect::inherit();          // stdin
    Redirect out = Redirect::inherit();         // stdout
    Redirect err = Redirect::inherit();         // stderr
    std::vector<int> keep_fds = {};             // descriptors (>= 3) the child keeps, same numbers
    std::vector<std::pair<std::string, std::string>> env = {};  // extra environment (functions too)
    std::string cwd = {};                       // working directory (functions too); Command::cwd wins
    bool new_process_group = true;              // setpgid(0, 0) in the child
    int parent_death_signal = 9;                // SIGKILL; 0: none
    bool close_fds = false;                     // functions: also close every fd >= 3 not kept
    bool reset_signal_handlers = true;          // functions: parent's handlers back to SIG_DFL
    std::chrono::milliseconds stop_grace{2000}; // the destructor's ladder
};

// A child process. Not copyable; movable.
class Process {
public:
    // A function run in a forked child. The child leaves with _exit(0) when it returns, or
    // prints the exception to stderr and leaves with _exit(1) when it throws.
    explicit Process(std::function<void()> fn, ProcessOptions options = {});
    // A program, started through Boost.Process v2.
    explicit Process(Command command, ProcessOptions options = {});

    Process(Process&&) noexcept;
    Process& operator=(Process&&) noexcept;
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;
    // Stops a started, unreaped child with the ladder (stop(options.stop_grace)).
    ~Process();

    // Starts the child. Throws Error(errc::spawn_failed) naming the program (missing, not
    // executable, bad cwd, fork failure), Error(errc::invalid_state) when already started,
    // Error from errno naming a redirect file that cannot be opened.
    void start();

    bool started() const noexcept;
    // The child's pid (0 before start).
    int pid() const noexcept;
    const std::string& name() const noexcept;
    // The child's process group (its pid when new_process_group, else the parent's group).
    int pgid() const noexcept;

    // Never blocks; reaps the child when it has exited. False for a moved-from Process.
    bool is_alive();
    // Never blocks and never reaps: the exit status once the child has exited (-N: signal N),
    // nullopt while it runs. An exited, unreaped child keeps its pid and process group id
    // reserved, so signal_group() still reaches what it left behind (a supervisor cleans up
    // the group, then reaps with join()).
    std::optional<int> poll_exit();
    // Blocks until the child exits; returns its exit code. Throws invalid_state before start
    // (or on a moved-from Process, as join_for and start do).
    int join();
    // Waits up to `timeout`; true when the child has exited (and is reaped).
    bool join_for(std::chrono::milliseconds timeout);
    // Exit status once reaped: the code, or -N when killed by signal N; nullopt while running.
    std::optional<int> exit_code();

    // SIGTERM / SIGKILL / any signal to the child (not its group). No-op once reaped (its pid
    // may belong to another process by then) and on a moved-from Process.
    void terminate();
    void kill();
    void signal(int sig);
    // A signal to the child's process group (to the child alone without its own group).
    // No-op once the child is reaped: the group id may have been recycled by then.
    void signal_group(int sig);
    // The ladder: SIGTERM to the group, up to `grace` for the child to exit, SIGKILL to the
    // group (again once the child exited, before reaping it: leftover grandchildren), reap.
    // Returns the exit code (nullopt when never started). Already reaped: only returns the
    // code, it signals nothing. Never throws.
    std::optional<int> stop(std::chrono::milliseconds grace) noexcept;

    // A descriptor that becomes readable when the child has exited (Python's
    // Process.sentinel), for poll/epoll, shmpipe::wait and shmpipe::asio::async_wait. It
    // never reaps: join() (or is_alive()) does. A pidfd where the kernel has pidfd_open,
    // else a pipe a watcher thread closes at exit. Made on the first call, owned by the
    // Process, valid until it is destroyed. Throws invalid_state before start().
    int sentinel();

    // Parent's ends of Redirect::pipe() streams (-1 otherwise). Still owned by the Process.
    int stdin_fd() const noexcept;
    int stdout_fd() const noexcept;
    int stderr_fd() const noexcept;
    // Closes the parent's end of the stdin pipe (the child sees EOF).
    void close_stdin() noexcept;
    // Hands over ownership of a parent's pipe end (the caller closes it); -1 if none.
    int release_stdin() noexcept;
    int release_stdout() noexcept;
    int release_stderr() noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace shmpipe
