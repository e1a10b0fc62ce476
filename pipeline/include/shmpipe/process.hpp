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
// to `grace` for the child, then SIGKILLs the group, and always reaps.
//
// Destroying a started, unreaped Process follows Python's daemon flag: a non-daemon child
// (the default, ProcessOptions::daemon = false) is waited for, as Python joins its
// non-daemon children at exit and std::jthread joins its thread; a daemon child is stopped
// with the ladder (stop(options.stop_grace)). Either way it is reaped: no zombies. Before
// waiting, the parent's ends of the child's Redirect::pipe() streams are closed, so a child
// reading its stdin sees EOF and one writing to a pipe nobody reads gets EPIPE, not a hang.
// The parent-death signal stays for both: a parent that dies abruptly takes them along.
//
// The function (any callable, move-only ones included: a lambda that captured a moved
// Consumer, Producer or Pipe end) runs in the child as its own copy (made by fork), which
// it leaves with _exit, without destroying it. The parent's copy is destroyed once the child
// is reaped (join, a join_for that saw the exit, is_alive/exit_code finding it exited, stop)
// or with the Process: then what it captured is released in the parent too (a moved Producer
// closes, so consumers see the end of the stream; a moved Pipe end closes, so the other end's
// recv() reports errc::closed). Until then the parent's copy keeps those ends open.
//
// Thread safety: one Process may be used from several threads (the state is locked;
// join() waits without holding the lock). Reaping is by pid only, never waitpid(-1).
#pragma once

#include <shmpipe/detail/timeout.hpp>

#include <chrono>
#include <concepts>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
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
    std::chrono::milliseconds stop_grace{2000}; // the ladder of a daemon's destructor
    // Python's daemon flag. false: destroying the started Process waits for the child.
    // true: destroying it stops the child with the ladder.
    bool daemon = false;
};

namespace detail {

// A move-only void() callable (std::move_only_function is C++23): what a Process runs.
class ProcessTarget {
public:
    ProcessTarget() = default;
    template <class F>
        requires(!std::same_as<std::remove_cvref_t<F>, ProcessTarget>) && std::invocable<std::decay_t<F>&>
    ProcessTarget(F&& f) {  // NOLINT(google-explicit-constructor): a lambda converts, as to std::function
        using D = std::decay_t<F>;
        if constexpr (std::is_pointer_v<D> || std::is_member_pointer_v<D> ||
                      std::is_same_v<D, std::function<void()>>) {
            if (!f) return;  // empty: Process refuses it
        }
        fn_ = std::make_unique<Holder<D>>(std::forward<F>(f));
    }
    explicit operator bool() const noexcept { return fn_ != nullptr; }
    void operator()() { fn_->call(); }

private:
    struct Base {
        virtual ~Base() = default;
        virtual void call() = 0;
    };
    template <class D>
    struct Holder final : Base {
        template <class F>
        explicit Holder(F&& f) : fn(std::forward<F>(f)) {}
        void call() override { std::invoke(fn); }
        D fn;
    };
    std::unique_ptr<Base> fn_;
};

// Pool workers record their index for current_process(). Called in the worker only.
void set_current_worker_index(unsigned index) noexcept;

}  // namespace detail

// multiprocessing.current_process() for the calling process: "MainProcess" in a process
// that no Process started; in a Process child, its name; in a pool worker, the worker's name
// and its index in the pool (worker_index; nullopt elsewhere).
struct ProcessInfo {
    std::string name;
    int pid = 0;
    bool daemon = false;
    std::optional<unsigned> worker_index;
};
ProcessInfo current_process();
std::vector<ProcessInfo> active_children();

// A child process. Not copyable; movable.
class Process {
public:
    // A function (any callable taking no argument, move-only included) run in a forked
    // child. The child leaves with _exit(0) when it returns, or prints the exception to
    // stderr and leaves with _exit(1) when it throws. Throws invalid_argument when empty.
    explicit Process(detail::ProcessTarget fn, ProcessOptions options = {});
    // A program, started through Boost.Process v2.
    explicit Process(Command command, ProcessOptions options = {});

    Process(Process&&) noexcept;
    Process& operator=(Process&&) noexcept;
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;
    // A started, unreaped child: waits for it (non-daemon, the default) or stops it with the
    // ladder (daemon). See the file comment. Move assignment does the same to the old child.
    ~Process();

    // Starts the child. Throws Error(errc::spawn_failed) naming the program (missing, not
    // executable, bad cwd, fork failure), Error(errc::invalid_state) when already started,
    // Error from errno naming a redirect file that cannot be opened.
    void start();

    bool started() const noexcept;
    // The child's pid (0 before start).
    int pid() const noexcept;
    const std::string& name() const noexcept;
    // ProcessOptions::daemon: whether destroying the Process stops the child (true) or
    // waits for it (false).
    bool daemon() const noexcept;
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
    // Waits up to `timeout` (any duration, 2.1s as duration<double> included: rounded up to
    // the next nanosecond); true when the child has exited (and is reaped).
    template <class Rep, class Period>
    bool join_for(std::chrono::duration<Rep, Period> timeout) {
        return join_for_ns(detail::timeout_ns(timeout));
    }
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
    bool join_for_ns(std::chrono::nanoseconds timeout);
    void release() noexcept;  // the destructor's wait or ladder, then the pipe ends
    friend std::vector<ProcessInfo> active_children();

    struct Impl;
    std::unique_ptr<Impl> impl_;
};


// The started, unreaped Process objects of this process (multiprocessing.active_children();
// pool workers included). As in Python, it reaps the children that have exited, which then
// are not listed. Declared above Process (its friend).

// The number of CPUs online (os.cpu_count()); at least 1. Pool's default size.
unsigned cpu_count() noexcept;

}  // namespace shmpipe
