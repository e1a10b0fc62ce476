// Process: fork for functions, Boost.Process v2 (1.81) for programs, and the gaps of 1.81
// filled here: process groups, parent-death signal, signal mask, descriptor hygiene for
// forked functions, reaping (by pid, with negative codes for signals), a zombie-free and
// _exit-based failed exec, and a stop ladder.
#include <shmpipe/detail/demangle.hpp>
#include <shmpipe/detail/sys_util.hpp>
#include <shmpipe/error.hpp>
#include <shmpipe/process.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/process/v2/posix/default_launcher.hpp>
#include <boost/process/v2/process.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <exception>
#include <fcntl.h>
#include <mutex>
#include <poll.h>
#include <pthread.h>
#include <span>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace bp = boost::process::v2;

namespace shmpipe {
namespace {

// Per-process spawning state. A forked child must not reuse the parent's mutexes or its
// io_context (another thread may have held them at fork time), so the state is keyed on
// getpid() and a child builds its own (the parent's copy is leaked in the child, on purpose).
struct SpawnState {
    explicit SpawnState(pid_t p) : owner(p) {}
    pid_t owner;
    std::mutex launch_mutex;      // Boost launches: one at a time (asio's fork notification)
    boost::asio::io_context ctx;  // never run: Boost.Process only needs an executor
    std::mutex fds_mutex;
    std::vector<int> parent_pipe_ends;  // ours, to close in forked function children
    std::mutex children_mutex;          // before any Process::Impl::m
    std::vector<const void*> children;  // Process::Impl of started Processes, until destroyed
};

SpawnState& spawn_state() {
    static std::atomic<SpawnState*> current{nullptr};
    const pid_t self = ::getpid();
    SpawnState* s = current.load(std::memory_order_acquire);
    while (s == nullptr || s->owner != self) {
        auto* fresh = new SpawnState(self);
        if (current.compare_exchange_strong(s, fresh, std::memory_order_acq_rel)) return *fresh;
        delete fresh;  // another thread won; s now holds its state (re-checked by the loop)
    }
    return *s;
}

void register_pipe_end(int fd) {
    auto& st = spawn_state();
    std::lock_guard lock(st.fds_mutex);
    st.parent_pipe_ends.push_back(fd);
}

void close_pipe_end(int& fd) noexcept {
    if (fd < 0) return;
    try {
        auto& st = spawn_state();
        std::lock_guard lock(st.fds_mutex);
        std::erase(st.parent_pipe_ends, fd);
    } catch (...) {
    }
    ::close(fd);
    fd = -1;
}

int release_pipe_end(int& fd) noexcept {
    if (fd < 0) return -1;
    try {
        auto& st = spawn_state();
        std::lock_guard lock(st.fds_mutex);
        std::erase(st.parent_pipe_ends, fd);
    } catch (...) {
    }
    return std::exchange(fd, -1);
}

int decode_status(int status) noexcept {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    return -1;
}

int decode_siginfo(const siginfo_t& info) noexcept {
    if (info.si_code == CLD_EXITED) return info.si_status;
    if (info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED) return -info.si_status;
    return -1;
}

// Decimal digits of v into buf (no allocation: for a forked child). Returns the length.
std::size_t format_uint(char* buf, std::size_t size, unsigned long v) noexcept {
    char tmp[24];
    std::size_t n = 0;
    do {
        tmp[n++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0 && n < sizeof tmp);
    std::size_t len = 0;
    while (n > 0 && len < size) buf[len++] = tmp[--n];
    return len;
}

// The environment of a child: the inherited one, then `overrides` in order (later wins).
std::vector<std::string> build_environment(
    std::initializer_list<const std::vector<std::pair<std::string, std::string>>*> overrides) {
    std::vector<std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) env.emplace_back(*e);
    for (const auto* list : overrides) {
        for (const auto& [k, v] : *list) {
            const std::string prefix = k + "=";
            std::erase_if(env, [&](const std::string& e) { return e.compare(0, prefix.size(), prefix) == 0; });
            env.push_back(prefix + v);
        }
    }
    return env;
}

std::vector<char*> envp_of(std::vector<std::string>& env) {
    std::vector<char*> envp;
    envp.reserve(env.size() + 1);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    return envp;
}

// The stdio plan of one child: which parent descriptor becomes 0, 1 and 2 (-1: inherit).
struct StdioPlan {
    int src[3] = {-1, -1, -1};
    bool err_to_stdout = false;
    std::vector<int> to_close_in_parent;  // the child's ends and opened files, closed after fork
};

// In the child, right after fork. Only async-signal-safe calls up to the user's code
// (the parent may have had other threads). Returns 0 or an errno.
int child_setup(const ProcessOptions& opt, pid_t parent, const StdioPlan& plan, bool for_exec) noexcept {
    if (opt.new_process_group) ::setpgid(0, 0);
    if (for_exec) {
        // exec resets handlers but keeps what was ignored.
        ::signal(SIGPIPE, SIG_DFL);
        ::signal(SIGINT, SIG_DFL);
        ::signal(SIGTERM, SIG_DFL);
    } else if (opt.reset_signal_handlers) {
        // The parent's handlers (a test framework's crash reporter, a launcher's Ctrl-C
        // handler) mean nothing in the child; what the parent ignores stays ignored.
        for (int sig = 1; sig < 32; ++sig) {
            if (sig == SIGKILL || sig == SIGSTOP) continue;
            struct sigaction old {};
            if (::sigaction(sig, nullptr, &old) == 0 && (old.sa_flags & SA_SIGINFO) != 0) {
                ::signal(sig, SIG_DFL);
            } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
                ::signal(sig, SIG_DFL);
            }
        }
    }
    // The parent blocked every signal around fork, so a signal sent right after start()
    // waits until the handlers above are reset; now it is delivered.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (opt.parent_death_signal > 0) {
        ::prctl(PR_SET_PDEATHSIG, static_cast<unsigned long>(opt.parent_death_signal));
        // The parent may have died before prctl: then we were re-parented already.
        if (::getppid() != parent) ::_exit(128 + opt.parent_death_signal);
    }
    // Move sources out of 0..2 first so one dup2 cannot clobber another's source.
    int src[3];
    for (int i = 0; i < 3; ++i) {
        src[i] = plan.src[i];
        if (src[i] >= 0 && src[i] < 3 && src[i] != i) {
            src[i] = ::fcntl(src[i], F_DUPFD_CLOEXEC, 3);
            if (src[i] < 0) return errno;
        }
    }
    for (int i = 0; i < 3; ++i) {
        if (src[i] >= 0 && src[i] != i && ::dup2(src[i], i) < 0) return errno;
        if (src[i] == i) {
            const int flags = ::fcntl(i, F_GETFD);
            if (flags >= 0) ::fcntl(i, F_SETFD, flags & ~FD_CLOEXEC);
        }
    }
    if (plan.err_to_stdout && ::dup2(1, 2) < 0) return errno;
    for (int fd : opt.keep_fds) {
        const int flags = ::fcntl(fd, F_GETFD);
        if (flags >= 0) ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
    }
    return 0;
}

// Closes every descriptor >= 3 except `keep`, which must be sorted. Async-signal-safe
// (close_range, close, sysconf): called in a forked child.
void close_all_except(const int* keep_begin, const int* keep_end) noexcept {
    const std::span<const int> keep(keep_begin, keep_end);
    unsigned lo = 3;
    for (int k : keep) {
        if (k < 3) continue;
        const auto uk = static_cast<unsigned>(k);
        if (uk > lo) ::syscall(SYS_close_range, lo, uk - 1, 0u);
        lo = uk + 1;
    }
    if (::syscall(SYS_close_range, lo, ~0u, 0u) == 0) return;
    // Kernels before 5.9: walk the descriptor table up to the limit.
    const long max = ::sysconf(_SC_OPEN_MAX);
    for (long fd = lo; fd < (max > 0 ? max : 1024); ++fd) {
        if (!std::binary_search(keep.begin(), keep.end(), static_cast<int>(fd))) ::close(static_cast<int>(fd));
    }
}

// Blocks every signal in the calling thread for its lifetime (around fork: the child
// starts with them blocked, resets its handlers, then unblocks).
class BlockAllSignals {
public:
    BlockAllSignals() noexcept {
        sigset_t all;
        sigfillset(&all);
        ::pthread_sigmask(SIG_SETMASK, &all, &saved_);
    }
    ~BlockAllSignals() { ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
    BlockAllSignals(const BlockAllSignals&) = delete;
    BlockAllSignals& operator=(const BlockAllSignals&) = delete;

private:
    sigset_t saved_{};
};

std::string find_on_path(const std::string& program, const std::string& path_var) {
    if (program.find('/') != std::string::npos) return program;
    return detail::find_executable(program, detail::split_path(path_var));
}

// Runs in the child of a Boost launch (on_exec_setup), and replaces Boost 1.81's
// ::exit(EXIT_FAILURE) after a failed exec (which would run the parent's atexit handlers
// and static destructors in the child) with _exit(127).
struct ChildInit {
    const ProcessOptions* opt;
    const StdioPlan* plan;
    const std::string* cwd;
    pid_t parent;

    template <class Launcher>
    bp::error_code on_exec_setup(Launcher&, const bp::filesystem::path&, const char* const*&) {
        int err = child_setup(*opt, parent, *plan, true);
        if (err == 0 && !cwd->empty() && ::chdir(cwd->c_str()) != 0) err = errno;
        if (err != 0) {
            errno = err;  // Boost reports errno to the parent
            return bp::error_code(err, bp::system_category());
        }
        return {};
    }
    // Boost 1.81 detects this hook with five arguments and calls it with four.
    template <class Launcher>
    void on_exec_error(Launcher&, const bp::error_code&, const bp::filesystem::path&, const char* const*&,
                       const bp::error_code&);
    template <class Launcher>
    void on_exec_error(Launcher&, const bp::filesystem::path&, const char* const*&, const bp::error_code&) {
        ::_exit(127);
    }
};

std::atomic<unsigned> g_process_counter{0};

// What current_process() reports in this process. Set in a forked function child before
// the user's function runs, from data the parent prepared (no allocation after fork).
struct CurrentProcess {
    const std::string* name = nullptr;  // nullptr: MainProcess
    bool daemon = false;
    int worker_index = -1;
};
CurrentProcess g_current;

}  // namespace

struct Process::Impl {
    detail::ProcessTarget fn;
    std::optional<Command> command;
    ProcessOptions opt;
    std::string name;

    mutable std::mutex m;
    pid_t pid = 0;
    pid_t pgid = 0;
    bool reaped = false;
    std::optional<int> code;         // once reaped
    std::optional<int> exited_code;  // once seen exited (a zombie, not yet reaped)
    int in_fd = -1, out_fd = -1, err_fd = -1;  // parent's pipe ends
    int sentinel_fd = -1;            // sentinel(): a pidfd, or the read end of the fallback pipe
    std::thread sentinel_watch;      // fallback only: closes the pipe's write end at exit

    // Reaps without blocking; caller holds m. True when reaped (now or before).
    bool try_reap_locked() noexcept {
        if (pid <= 0) return false;
        if (reaped) return true;
        int status = 0;
        pid_t r;
        do {
            r = ::waitpid(pid, &status, WNOHANG);
        } while (r < 0 && errno == EINTR);
        if (r == pid) {
            reaped = true;
            code = decode_status(status);
            return true;
        }
        if (r < 0 && errno == ECHILD) {  // someone else reaped it (waitpid(-1) elsewhere)
            reaped = true;
            code = exited_code.value_or(-1);
            return true;
        }
        return false;
    }

    // Caller holds m. True once the child has exited: a zombie (not reaped: its pid and its
    // process group id stay reserved, so signals still reach the right processes) or reaped.
    // Never touches the pid after the reap.
    bool exited_locked() noexcept {
        if (pid <= 0) return false;
        if (reaped || exited_code) return true;
        siginfo_t info{};
        int r;
        do {
            r = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
        } while (r < 0 && errno == EINTR);
        if (r < 0) return try_reap_locked();  // ECHILD: reaped elsewhere (waitpid(-1))
        if (info.si_pid != pid) return false;
        exited_code = decode_siginfo(info);
        return true;
    }

    // Waits until the child has exited, without reaping it, up to `deadline` (nullopt:
    // forever). Sleeps without the lock; every look at the pid (pidfd_open included) is made
    // under it after checking it was not reaped, so none can reach a recycled pid.
    bool wait_exited_until(std::optional<std::chrono::steady_clock::time_point> deadline) noexcept {
        int pidfd = -1;
        {
            std::lock_guard lock(m);
            if (exited_locked()) return true;
            pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        }
        auto sleep = std::chrono::microseconds(200);
        bool done = false;
        while (!done) {
            std::chrono::milliseconds slice(1000);  // re-check at least this often
            if (deadline) {
                const auto now = std::chrono::steady_clock::now();
                if (now >= *deadline) break;
                slice = std::min(slice, std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - now) +
                                            std::chrono::milliseconds(1));
            }
            if (pidfd >= 0) {
                pollfd p{pidfd, POLLIN, 0};
                ::poll(&p, 1, static_cast<int>(slice.count()));
            } else {
                std::this_thread::sleep_for(std::min<std::chrono::microseconds>(sleep, slice));
                sleep = std::min(sleep * 2, std::chrono::microseconds(10'000));
            }
            std::lock_guard lock(m);
            done = exited_locked();
        }
        if (pidfd >= 0) ::close(pidfd);
        return done;
    }

    // Blocks until the child exits, then reaps it.
    void wait_exit() noexcept {
        wait_exited_until(std::nullopt);
        std::lock_guard lock(m);
        try_reap_locked();  // a zombie: WNOHANG succeeds at once
    }

    bool wait_exit_for(std::chrono::nanoseconds timeout) noexcept {
        if (!wait_exited_until(detail::deadline_in(timeout))) return false;
        std::lock_guard lock(m);
        return try_reap_locked();
    }

    // Only while the child is unreaped: its pid (and, as group leader, its group id) cannot
    // have been reused. Callers hold m, under which reaping happens.
    void signal_locked(int sig) noexcept {
        if (pid > 0 && !reaped) ::kill(pid, sig);
    }
    void signal_group_locked(int sig) noexcept {
        if (pid <= 0 || reaped) return;
        if (opt.new_process_group && pgid > 0) {
            ::killpg(pgid, sig);
        } else {
            ::kill(pid, sig);
        }
    }

    // Once the child is reaped the parent's copy of the callable has no use: destroy it (and
    // what it captured: a moved Producer closes, a moved Pipe end shuts) outside the lock.
    void drop_target_if_reaped() noexcept {
        detail::ProcessTarget old;
        {
            std::lock_guard lock(m);
            if (!reaped) return;
            old = std::move(fn);
        }
    }

    void close_fds() noexcept {
        // The fallback watcher returns once the child has exited (the callers stopped it).
        if (sentinel_watch.joinable()) sentinel_watch.join();
        close_pipe_end(sentinel_fd);
        close_pipe_end(in_fd);
        close_pipe_end(out_fd);
        close_pipe_end(err_fd);
    }

    StdioPlan plan_stdio();
    void start_function(StdioPlan& plan);
    void start_command(StdioPlan& plan);
};

StdioPlan Process::Impl::plan_stdio() {
    StdioPlan plan;
    const Redirect* r[3] = {&opt.in, &opt.out, &opt.err};
    int* parent_end[3] = {&in_fd, &out_fd, &err_fd};
    try {
        for (int i = 0; i < 3; ++i) {
            switch (r[i]->kind()) {
                case Redirect::Kind::inherit: break;
                case Redirect::Kind::null: {
                    const int fd = ::open("/dev/null", (i == 0 ? O_RDONLY : O_WRONLY) | O_CLOEXEC);
                    if (fd < 0) throw Error::from_errno(errno, "start process \"" + name + "\": open /dev/null");
                    plan.to_close_in_parent.push_back(fd);
                    plan.src[i] = fd;
                    break;
                }
                case Redirect::Kind::file: {
                    const int flags = i == 0 ? O_RDONLY : (O_WRONLY | O_CREAT | (r[i]->append() ? O_APPEND : O_TRUNC));
                    const int fd = ::open(r[i]->path().c_str(), flags | O_CLOEXEC, 0644);
                    if (fd < 0) {
                        static const char* const stream[3] = {"stdin", "stdout", "stderr"};
                        throw Error::from_errno(errno, "start process \"" + name + "\": open " + stream[i] +
                                                           " file \"" + r[i]->path() + "\"");
                    }
                    plan.to_close_in_parent.push_back(fd);
                    plan.src[i] = fd;
                    break;
                }
                case Redirect::Kind::pipe: {
                    int p[2];
                    if (::pipe2(p, O_CLOEXEC) != 0) {
                        throw Error::from_errno(errno, "start process \"" + name + "\": pipe");
                    }
                    const int child = i == 0 ? p[0] : p[1];
                    *parent_end[i] = i == 0 ? p[1] : p[0];
                    register_pipe_end(*parent_end[i]);
                    plan.to_close_in_parent.push_back(child);
                    plan.src[i] = child;
                    break;
                }
                case Redirect::Kind::fd:
                    if (r[i]->descriptor() < 0) {
                        throw Error(errc::invalid_argument, "start process \"" + name + "\": Redirect::fd(" +
                                                                std::to_string(r[i]->descriptor()) + ") is not a descriptor");
                    }
                    plan.src[i] = r[i]->descriptor();
                    break;
                case Redirect::Kind::to_stdout:
                    if (i != 2) {
                        throw Error(errc::invalid_argument,
                                    "start process \"" + name + "\": Redirect::to_stdout() is for stderr only");
                    }
                    plan.err_to_stdout = true;
                    break;
            }
        }
    } catch (...) {
        for (int fd : plan.to_close_in_parent) ::close(fd);
        close_fds();
        throw;
    }
    return plan;
}

void Process::Impl::start_function(StdioPlan& plan) {
    // Snapshot before fork: the child must not take the registry's mutex.
    std::vector<int> close_in_child;
    {
        auto& st = spawn_state();
        std::lock_guard lock(st.fds_mutex);
        close_in_child = st.parent_pipe_ends;
    }
    std::erase_if(close_in_child, [&](int fd) {
        return std::find(opt.keep_fds.begin(), opt.keep_fds.end(), fd) != opt.keep_fds.end();
    });
    // Everything the child needs is built here: between fork and the user's function it
    // makes only async-signal-safe calls (no allocation, no locks: another thread of the
    // parent may have held malloc's or the environment's lock at fork time).
    std::vector<int> keep = opt.keep_fds;
    std::sort(keep.begin(), keep.end());
    std::vector<std::string> env_strings;
    std::vector<char*> envp;
    if (!opt.env.empty()) {
        env_strings = build_environment({&opt.env});
        envp = envp_of(env_strings);
    }
    const std::string setup_failed = "shmpipe: process \"" + name + "\": child setup failed: ";
    std::fflush(nullptr);  // buffered output would otherwise be written twice
    const pid_t parent = ::getpid();
    BlockAllSignals blocked;
    const pid_t child = ::fork();
    if (child < 0) throw Error(errc::spawn_failed, "start process \"" + name + "\": fork: " + std::strerror(errno));
    if (child == 0) {
        int err = child_setup(opt, parent, plan, false);
        for (int fd : close_in_child) ::close(fd);
        for (int fd : plan.to_close_in_parent) ::close(fd);
        if (opt.close_fds) close_all_except(keep.data(), keep.data() + keep.size());
        if (err == 0 && !opt.cwd.empty() && ::chdir(opt.cwd.c_str()) != 0) err = errno;
        if (err != 0) {
            char num[24];
            const char* err_name = ::strerrorname_np(err);  // a static table: no locale, no allocation
            detail::write_all(2, setup_failed);
            if (err_name != nullptr) detail::write_all(2, err_name, std::strlen(err_name));
            detail::write_all(2, " (errno ", 8);
            detail::write_all(2, num, format_uint(num, sizeof num, static_cast<unsigned long>(err)));
            detail::write_all(2, ")\n", 2);
            ::_exit(127);
        }
        if (!envp.empty()) environ = envp.data();  // a plain store; setenv would take glibc's lock
        g_current = CurrentProcess{&name, opt.daemon, -1};
        int status = 0;
        try {
            fn();
        } catch (const std::exception& e) {
            const auto* type = abi::__cxa_current_exception_type();
            detail::write_all(2, "shmpipe: process \"" + name + "\" (pid " + std::to_string(::getpid()) +
                             "): uncaught exception " + (type ? detail::demangle(type->name()) : "std::exception") + ": " +
                             e.what() + "\n");
            status = 1;
        } catch (...) {
            const auto* type = abi::__cxa_current_exception_type();
            detail::write_all(2, "shmpipe: process \"" + name + "\" (pid " + std::to_string(::getpid()) +
                             "): uncaught exception of type " + (type ? detail::demangle(type->name()) : "unknown") + "\n");
            status = 1;
        }
        std::fflush(nullptr);
        ::_exit(status);
    }
    pid = child;
    // Also in the parent: signals sent right after start() must reach the group.
    if (opt.new_process_group) ::setpgid(child, child);
    pgid = opt.new_process_group ? child : ::getpgrp();
}

void Process::Impl::start_command(StdioPlan& plan) {
    const Command& cmd = *command;
    const std::string& cwd = cmd.cwd.empty() ? opt.cwd : cmd.cwd;
    const std::string who = "start program \"" + cmd.program + "\" (process \"" + name + "\")";
    if (cmd.program.empty()) throw Error(errc::spawn_failed, who + ": empty program name");
    if (!cwd.empty()) {
        struct stat st {};
        if (::stat(cwd.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
            throw Error(errc::spawn_failed, who + ": working directory \"" + cwd + "\" does not exist");
        }
    }

    // The environment: inherited, then the Command's and the options' variables.
    std::vector<std::string> env_strings = build_environment({&opt.env, &cmd.env});
    std::string path_var = "/usr/local/bin:/usr/bin:/bin";
    for (const auto& e : env_strings) {
        if (e.compare(0, 5, "PATH=") == 0) path_var = e.substr(5);
    }
    std::vector<char*> envp = envp_of(env_strings);

    const std::string exe = find_on_path(cmd.program, path_var);
    if (exe.empty()) {
        throw Error(errc::spawn_failed, who + ": not found on PATH (is it installed? PATH=" + path_var + ")");
    }

    auto& st = spawn_state();
    std::lock_guard launch_lock(st.launch_mutex);
    bp::posix::default_launcher launcher;
    launcher.env = envp.data();
    for (int fd : opt.keep_fds) {
        if (fd >= 3) launcher.fd_whitelist.push_back(fd);
    }
    ChildInit init{&opt, &plan, &cwd, ::getpid()};
    bp::error_code ec;
    std::fflush(nullptr);
    try {
        BlockAllSignals blocked;
        auto proc = launcher(st.ctx.get_executor(), ec, bp::filesystem::path(exe), cmd.args, init);
        if (!ec) {
            pid = proc.id();
            proc.detach();  // we reap by pid ourselves; the returned handle only closes its pidfd
        }
    } catch (const std::exception& e) {
        if (launcher.pid > 0) ::waitpid(launcher.pid, nullptr, 0);
        throw Error(errc::spawn_failed, who + ": " + e.what());
    }
    if (ec) {
        // Boost 1.81 leaves the failed child unreaped; it has exited (or is about to).
        if (launcher.pid > 0) ::waitpid(launcher.pid, nullptr, 0);
        std::string hint;
        if (ec.value() == ENOENT) hint = " (no such file: check the path)";
        if (ec.value() == EACCES) hint = " (permission denied: is it executable?)";
        if (ec.value() == ENOEXEC) hint = " (not an executable format: a script without #! line?)";
        throw Error(errc::spawn_failed, who + ": " + ec.message() + hint);
    }
    if (opt.new_process_group) ::setpgid(pid, pid);  // EACCES after exec is fine: the child did it
    pgid = opt.new_process_group ? pid : ::getpgrp();
}

Process::Process(detail::ProcessTarget fn, ProcessOptions options) : impl_(std::make_unique<Impl>()) {
    if (!fn) throw Error(errc::invalid_argument, "Process: empty function");
    impl_->fn = std::move(fn);
    impl_->opt = std::move(options);
    impl_->name = impl_->opt.name.empty() ? "Process-" + std::to_string(++g_process_counter) : impl_->opt.name;
}

Process::Process(Command command, ProcessOptions options) : impl_(std::make_unique<Impl>()) {
    impl_->opt = std::move(options);
    if (impl_->opt.name.empty()) {
        const auto slash = command.program.rfind('/');
        impl_->name = slash == std::string::npos ? command.program : command.program.substr(slash + 1);
    } else {
        impl_->name = impl_->opt.name;
    }
    impl_->command = std::move(command);
}

Process::Process(Process&&) noexcept = default;

Process& Process::operator=(Process&& other) noexcept {
    if (this != &other) {
        release();
        impl_ = std::move(other.impl_);
    }
    return *this;
}

Process::~Process() { release(); }

void Process::release() noexcept {
    if (!impl_) return;
    auto& d = *impl_;
    if (d.pid > 0) {
        try {
            auto& st = spawn_state();
            std::lock_guard lock(st.children_mutex);
            std::erase(st.children, static_cast<const void*>(&d));
        } catch (...) {
        }
    }
    // First the pipe ends: a non-daemon child blocked on its stdin or stdout must not hang
    // the wait below.
    d.close_fds();
    if (d.pid > 0) {
        if (d.opt.daemon) {
            stop(d.opt.stop_grace);
        } else {
            d.wait_exit();  // Python joins non-daemon children; so does std::jthread
        }
    }
}

namespace {
[[noreturn]] void moved_from(const char* op) {
    throw Error(errc::invalid_state, std::string(op) + " process: this Process was moved from");
}
}  // namespace

void Process::start() {
    if (!impl_) moved_from("start");
    auto& d = *impl_;
    {
        std::lock_guard lock(d.m);
        if (d.pid != 0) {
            throw Error(errc::invalid_state, "start process \"" + d.name + "\": already started (pid " +
                                                 std::to_string(d.pid) + "); a Process runs once");
        }
    }
    for (int fd : d.opt.keep_fds) {
        if (::fcntl(fd, F_GETFD) < 0) {
            throw Error(errc::invalid_argument,
                        "start process \"" + d.name + "\": keep_fds has " + std::to_string(fd) + ", which is not open");
        }
    }
    StdioPlan plan = d.plan_stdio();
    struct CloseChildEnds {
        StdioPlan& p;
        ~CloseChildEnds() {
            for (int fd : p.to_close_in_parent) ::close(fd);
        }
    } close_child_ends{plan};
    {
        std::lock_guard lock(d.m);
        try {
            if (d.command) {
                d.start_command(plan);
            } else {
                d.start_function(plan);
            }
        } catch (...) {
            d.close_fds();
            throw;
        }
    }
    auto& st = spawn_state();
    std::lock_guard lock(st.children_mutex);
    st.children.push_back(&d);
}

bool Process::started() const noexcept { return impl_ && impl_->pid > 0; }
int Process::pid() const noexcept { return impl_ ? impl_->pid : 0; }
const std::string& Process::name() const noexcept {
    static const std::string kNone;
    return impl_ ? impl_->name : kNone;
}
int Process::pgid() const noexcept { return impl_ ? impl_->pgid : 0; }
bool Process::daemon() const noexcept { return impl_ && impl_->opt.daemon; }

bool Process::is_alive() {
    if (!impl_) return false;
    auto& d = *impl_;
    {
        std::lock_guard lock(d.m);
        if (d.pid <= 0) return false;
        if (!d.try_reap_locked()) return true;
    }
    d.drop_target_if_reaped();
    return false;
}

std::optional<int> Process::poll_exit() {
    if (!impl_) return std::nullopt;
    auto& d = *impl_;
    std::lock_guard lock(d.m);
    if (d.pid <= 0 || !d.exited_locked()) return std::nullopt;
    return d.reaped ? d.code : d.exited_code;
}

int Process::join() {
    if (!impl_) moved_from("join");
    auto& d = *impl_;
    {
        std::lock_guard lock(d.m);
        if (d.pid <= 0) throw Error(errc::invalid_state, "join process \"" + d.name + "\": not started");
        if (d.reaped) return *d.code;
    }
    d.wait_exit();
    d.drop_target_if_reaped();
    std::lock_guard lock(d.m);
    return *d.code;
}

bool Process::join_for_ns(std::chrono::nanoseconds timeout) {
    if (!impl_) moved_from("join");
    auto& d = *impl_;
    {
        std::lock_guard lock(d.m);
        if (d.pid <= 0) throw Error(errc::invalid_state, "join process \"" + d.name + "\": not started");
    }
    const bool exited = d.wait_exit_for(timeout);
    d.drop_target_if_reaped();
    return exited;
}

std::optional<int> Process::exit_code() {
    if (!impl_) return std::nullopt;
    auto& d = *impl_;
    std::optional<int> code;
    {
        std::lock_guard lock(d.m);
        d.try_reap_locked();
        code = d.code;
    }
    d.drop_target_if_reaped();
    return code;
}

void Process::terminate() { signal(SIGTERM); }
void Process::kill() { signal(SIGKILL); }

void Process::signal(int sig) {
    if (!impl_) return;
    auto& d = *impl_;
    std::lock_guard lock(d.m);
    d.signal_locked(sig);  // under the lock: the pid cannot be reaped (and reused) meanwhile
}

void Process::signal_group(int sig) {
    if (!impl_) return;
    auto& d = *impl_;
    std::lock_guard lock(d.m);
    d.signal_group_locked(sig);
}

std::optional<int> Process::stop(std::chrono::milliseconds grace) noexcept {
    if (!impl_) return std::nullopt;
    auto& d = *impl_;
    {
        std::lock_guard lock(d.m);
        if (d.pid <= 0) return std::nullopt;
        if (d.reaped) return d.code;  // its pid and group id may belong to others by now
        if (!d.exited_locked()) d.signal_group_locked(SIGTERM);
    }
    if (grace.count() <= 0 || !d.wait_exited_until(std::chrono::steady_clock::now() + grace)) {
        std::lock_guard lock(d.m);
        d.signal_group_locked(SIGKILL);
    }
    // Exited but not reaped (WNOWAIT): the zombie keeps the group id reserved, so members of
    // the group that outlived the child (grandchildren) can be killed safely: no orphans.
    d.wait_exited_until(std::nullopt);
    std::optional<int> code;
    {
        std::lock_guard lock(d.m);
        d.signal_group_locked(SIGKILL);
        d.try_reap_locked();
        code = d.code;
    }
    d.drop_target_if_reaped();
    return code;
}

int Process::sentinel() {
    if (!impl_) moved_from("sentinel of");
    auto& d = *impl_;
    std::lock_guard lock(d.m);
    if (d.pid <= 0) {
        throw Error(errc::invalid_state, "sentinel of process \"" + d.name + "\": it was not started (call start() first)");
    }
    if (d.sentinel_fd >= 0) return d.sentinel_fd;
    // Unreaped (we reap under m), so the pid is still this child's, a zombie at worst.
    const char* force = std::getenv("SHMPIPE_SENTINEL_FALLBACK");  // tests exercise the fallback
    if (!d.reaped && (force == nullptr || *force == '\0')) {
        const int fd = static_cast<int>(::syscall(SYS_pidfd_open, d.pid, 0));  // close-on-exec
        if (fd >= 0) return d.sentinel_fd = fd;
    }
    // No pidfd (Linux < 5.3): a pipe whose write end a watcher thread closes once the child
    // has exited, so the read end reports end of file. It waits without reaping.
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
        throw Error::from_errno(errno, "sentinel of process \"" + d.name + "\": cannot create a pipe");
    }
    if (d.reaped) {
        ::close(p[1]);
    } else {
        try {
            d.sentinel_watch = std::thread([&d, w = p[1]] {
                d.wait_exited_until(std::nullopt);
                ::close(w);
            });
        } catch (...) {
            ::close(p[0]);
            ::close(p[1]);
            throw;
        }
    }
    return d.sentinel_fd = p[0];
}

int Process::stdin_fd() const noexcept { return impl_ ? impl_->in_fd : -1; }
int Process::stdout_fd() const noexcept { return impl_ ? impl_->out_fd : -1; }
int Process::stderr_fd() const noexcept { return impl_ ? impl_->err_fd : -1; }
void Process::close_stdin() noexcept {
    if (impl_) close_pipe_end(impl_->in_fd);
}
ProcessInfo current_process() {
    ProcessInfo info;
    info.name = g_current.name != nullptr ? *g_current.name : "MainProcess";
    info.pid = static_cast<int>(::getpid());
    info.daemon = g_current.daemon;
    if (g_current.worker_index >= 0) info.worker_index = static_cast<unsigned>(g_current.worker_index);
    return info;
}

std::vector<ProcessInfo> active_children() {
    std::vector<ProcessInfo> out;
    auto& st = spawn_state();  // this process's own: a forked child lists none of its parent's
    std::lock_guard lock(st.children_mutex);
    for (const void* p : st.children) {
        auto& d = *static_cast<Process::Impl*>(const_cast<void*>(p));
        std::lock_guard dlock(d.m);
        if (d.try_reap_locked()) continue;
        out.push_back(ProcessInfo{d.name, d.pid, d.opt.daemon, std::nullopt});
    }
    return out;
}

unsigned cpu_count() noexcept {
    const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<unsigned>(n) : 1u;
}

namespace detail {
void set_current_worker_index(unsigned index) noexcept { g_current.worker_index = static_cast<int>(index); }
}  // namespace detail

int Process::release_stdin() noexcept { return impl_ ? release_pipe_end(impl_->in_fd) : -1; }
int Process::release_stdout() noexcept { return impl_ ? release_pipe_end(impl_->out_fd) : -1; }
int Process::release_stderr() noexcept { return impl_ ? release_pipe_end(impl_->err_fd) : -1; }

}  // namespace shmpipe
