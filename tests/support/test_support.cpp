#include "test_support.hpp"

#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/object.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <random>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace bp = boost::process::v2;

namespace shmpipe::test {

std::string unique_name(std::string_view stem) {
    static std::atomic<unsigned> counter{0};
    static const unsigned salt = std::random_device{}();
    return "t-" + std::string(stem) + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
           std::to_string(salt % 100000);
}

ShmGuard::ShmGuard(std::initializer_list<std::string> names) {
    for (const auto& n : names) add(n);
}

const std::string& ShmGuard::add(std::string name) {
    shmpipe::remove(name);
    names_.push_back(std::move(name));
    return names_.back();
}

ShmGuard::~ShmGuard() {
    for (const auto& n : names_) shmpipe::remove(n);
}

std::vector<std::string> shm_objects_with_prefix(std::string_view prefix) {
    std::vector<std::string> found;
    DIR* dir = ::opendir("/dev/shm");
    if (dir == nullptr) return found;
    const std::string full = std::string(kSegmentPrefix) + std::string(prefix);
    while (const dirent* e = ::readdir(dir)) {
        const std::string_view n = e->d_name;
        if (n.substr(0, full.size()) == full) found.emplace_back(n.substr(kSegmentPrefix.size()));
    }
    ::closedir(dir);
    return found;
}

std::string peer_path(std::string_view name) { return std::string(SHMPIPE_PEER_DIR) + "/" + std::string(name); }
std::string bin_path(std::string_view name) { return std::string(SHMPIPE_BIN_DIR) + "/" + std::string(name); }
std::string source_path(std::string_view relative) {
    return std::string(SHMPIPE_SOURCE_DIR) + "/" + std::string(relative);
}

namespace {

int decode_status(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    return -1;
}

}  // namespace

// We reap with waitpid ourselves (Boost.Process 1.81 does not report signals as negative
// codes); Boost.Process only launches.
struct Peer::Impl {
    boost::asio::io_context ctx;
    int pid = -1;
    std::optional<int> exit_code;
};

Peer::Peer(const std::string& program, const std::vector<std::string>& args) : impl_(std::make_unique<Impl>()) {
    bp::process child(impl_->ctx, program, args);
    impl_->pid = child.id();
    child.detach();
}

Peer::~Peer() {
    if (impl_ && impl_->pid > 0 && !impl_->exit_code) {
        ::kill(impl_->pid, SIGKILL);
        int status = 0;
        while (::waitpid(impl_->pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
}

Peer::Peer(Peer&&) noexcept = default;
Peer& Peer::operator=(Peer&&) noexcept = default;

int Peer::pid() const noexcept { return impl_->pid; }

bool Peer::running() {
    if (impl_->exit_code) return false;
    int status = 0;
    const pid_t r = ::waitpid(impl_->pid, &status, WNOHANG);
    if (r == impl_->pid) {
        impl_->exit_code = decode_status(status);
        return false;
    }
    return true;
}

std::optional<int> Peer::wait_for(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (running()) {
        if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(2ms);
    }
    return impl_->exit_code;
}

int Peer::wait_or_throw(std::chrono::milliseconds timeout, std::string_view what) {
    if (auto code = wait_for(timeout)) return *code;
    signal(SIGKILL);
    wait_for(5s);
    throw std::runtime_error("timed out after " + std::to_string(timeout.count()) + " ms waiting for " +
                             std::string(what) + " (pid " + std::to_string(impl_->pid) + ", killed)");
}

void Peer::signal(int sig) {
    if (!impl_->exit_code) ::kill(impl_->pid, sig);
}

bool process_gone(int pid) { return shmpipe::detail::process_start_time(pid) == 0; }

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(2ms);
    }
    return true;
}

RunResult run_program(const std::string& program, const std::vector<std::string>& args,
                      std::chrono::milliseconds timeout, const std::string& input) {
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
        throw std::runtime_error("run_program: pipe failed");
    }
    boost::asio::io_context ctx;
    int pid = -1;
    {
        bp::process child(ctx, program, args, bp::process_stdio{in[0], out[1], err[1]});
        pid = child.id();
        child.detach();
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    ::fcntl(in[1], F_SETFL, O_NONBLOCK);
    std::size_t written = 0;
    if (input.empty()) {
        ::close(in[1]);
        in[1] = -1;
    }
    RunResult result;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    bool out_open = true, err_open = true;
    char buf[65536];
    while (out_open || err_open || in[1] >= 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            ::kill(pid, SIGKILL);
            int status = 0;
            ::waitpid(pid, &status, 0);
            if (in[1] >= 0) ::close(in[1]);
            ::close(out[0]);
            ::close(err[0]);
            throw std::runtime_error("timed out after " + std::to_string(timeout.count()) + " ms waiting for " +
                                     program + " to finish (killed); output so far: " + result.out + result.err);
        }
        pollfd fds[3] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0},
                         {in[1], POLLOUT, 0}};
        const int n = ::poll(fds, 3, static_cast<int>(std::min<long>(left.count(), 100)));
        if (n < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                const ssize_t r = ::read(fds[i].fd, buf, sizeof buf);
                if (r > 0) {
                    (i == 0 ? result.out : result.err).append(buf, static_cast<std::size_t>(r));
                } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
                    (i == 0 ? out_open : err_open) = false;
                }
            }
        }
        if (in[1] >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
            const ssize_t w = ::write(in[1], input.data() + written, input.size() - written);
            if (w > 0) written += static_cast<std::size_t>(w);
            if (w < 0 && errno != EAGAIN && errno != EINTR) written = input.size();
            if (written >= input.size()) {
                ::close(in[1]);
                in[1] = -1;
            }
        }
    }
    ::close(out[0]);
    ::close(err[0]);
    int status = 0;
    while (true) {
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        if (std::chrono::steady_clock::now() >= deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            throw std::runtime_error("timed out waiting for " + program + " to exit after closing its output");
        }
        std::this_thread::sleep_for(1ms);
    }
    result.exit_code = decode_status(status);
    return result;
}

}  // namespace shmpipe::test
