// Internals of shmpipe::Graph: the output writer and the adapter/log threads' bodies.
// Not API.
#pragma once

#include <shmpipe/queue.hpp>
#include <shmpipe/spec.hpp>

#include <atomic>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace shmpipe::detail {

// Whole lines to the launcher's descriptors, one writer at a time, with an optional status
// line on err_fd that is cleared before and redrawn after every write.
class Output {
public:
    Output(int out_fd, int err_fd, bool status) : out_fd_(out_fd), err_fd_(err_fd), status_enabled_(status) {}
    int out_fd() const noexcept { return out_fd_; }
    int err_fd() const noexcept { return err_fd_; }
    void write(int fd, std::string_view text) noexcept;
    // "<prefix>: <text>\n" on err_fd.
    void report(std::string_view prefix, std::string_view text) noexcept;
    void set_status(std::string status) noexcept;
    void end_status() noexcept;

private:
    void clear_status_locked() noexcept;
    void show_status_locked() noexcept;
    std::mutex mu_;
    int out_fd_, err_fd_;
    bool status_enabled_;
    bool status_shown_ = false;
    std::string status_;
};

// The first error an adapter thread met, for the supervisor.
class AdapterErrors {
public:
    void set(std::string msg) {
        std::lock_guard<std::mutex> lock(mu_);
        if (first_.empty()) first_ = std::move(msg);
    }
    std::string take() {
        std::lock_guard<std::mutex> lock(mu_);
        return std::exchange(first_, {});
    }

private:
    std::mutex mu_;
    std::string first_;
};

// Every adapter thread calls this first: a write to a program that stopped reading then
// fails with EPIPE instead of raising SIGPIPE, which would kill a process that uses Graph as
// a library (only pipeline-launch ignores SIGPIPE process-wide).
void block_sigpipe_in_this_thread() noexcept;

// The readers below wait in poll() slices of 100 ms: once `abandon` is set and no data is
// waiting, they stop (a pipe that a stray process outside the stage's group holds open
// would otherwise never reach EOF). Data already in the pipe is still read.

// Copies lines read from fd to dest_fd, each prefixed, whole lines only; also plain to
// file_fd (>= 0). Closes fd at EOF or when abandoned.
void pump_log(int fd, Output& out, int dest_fd, std::string prefix, int file_fd,
              const std::atomic<bool>& abandon) noexcept;
// Stage stdout -> messages. Closes fd at EOF or when abandoned; never closes the producer.
void pump_stdout(int fd, Producer<>& tx, StreamFormat format, AdapterErrors& errors,
                 const std::atomic<bool>& abandon) noexcept;
// Messages -> stage stdin, until end of stream, `stop` (also while waiting for room in the
// pipe), or EPIPE. Closes fd.
void pump_stdin(int fd, Consumer<>& rx, StreamFormat format, const std::atomic<bool>& stop, Output& out,
                const std::string& report_prefix, const std::string& who) noexcept;

}  // namespace shmpipe::detail
