// Internals of shmpipe::Graph: the output writer and the adapter/log threads' bodies.
// Not API.
#pragma once

#include <shmpipe/queue.hpp>
#include <shmpipe/spec.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/uio.h>

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

// Writes every byte of `iov` to a non-blocking fd with as few writev calls as it takes (at
// most IOV_MAX buffers each; a partial write resumes inside the buffer it cut, so `iov` is
// consumed as it goes), waiting for room in poll() slices of 100 ms. Returns the bytes
// written: all of them, or fewer once `stop` is set while the fd has no room, or on an error
// (EPIPE: the reader closed its end; the caller blocks SIGPIPE). `calls` (optional) counts
// the writev calls made.
std::size_t writev_until_stopped(int fd, std::span<iovec> iov, const std::atomic<bool>& stop,
                                 std::uint64_t* calls = nullptr) noexcept;

// The readers below wait in poll() slices of 100 ms: once `abandon` is set and no data is
// waiting, they stop (a pipe that a stray process outside the stage's group holds open
// would otherwise never reach EOF). Data already in the pipe is still read.

// Copies lines read from fd to dest_fd, each prefixed, whole lines only; also plain to
// file_fd (>= 0). Closes fd at EOF or when abandoned.
void pump_log(int fd, Output& out, int dest_fd, std::string prefix, int file_fd,
              const std::atomic<bool>& abandon) noexcept;
// Line batching (SpecGraph::line_batch_bytes): the stdout adapter reads straight into a
// reserved message and the stdin adapter writes the waiting messages with one writev (see
// pump_stdin). A pipe edge (SpecGraph::is_pipe_edge) is relayed by pump_pipe.

// The number of '\n' in [p, p + n).
std::size_t count_lines(const char* p, std::size_t n) noexcept;

// How the process behind a stdout adapter ended, set by the supervisor: a last line
// without '\n' is a whole message only if the program ended well; a killed program's is a
// fragment of a line (its output buffer cut anywhere) and is dropped.
enum class ExitVerdict : int { unknown = 0, ended_well = 1, failed = 2 };

// Stage stdout -> messages. Closes fd at EOF or when abandoned; never closes the producer.
// A last line without '\n' waits for `verdict` (or `abandon`), and counts its bytes in
// `dropped_bytes` when it is dropped; kept, it gets its '\n' downstream, as every line
// does. `line_limit` > 0: lines batched (see SpecGraph::line_batch_bytes), each at most that long.
void pump_stdout(int fd, Producer<>& tx, StreamFormat format, std::size_t line_limit, AdapterErrors& errors,
                 const std::atomic<bool>& abandon, const std::atomic<int>& verdict,
                 std::atomic<std::size_t>& dropped_bytes) noexcept;
// What a pipe edge's relay moved: lines and bytes read from the writer, and written whole to
// the reader. Written by the relay, read by the supervisor (relaxed counters, exact once the
// relay thread is joined).
struct PipeEdgeCounts {
    std::atomic<std::uint64_t> lines_in{0}, bytes_in{0}, lines_out{0}, bytes_out{0};
};

// Writer's stdout (in_fd) -> reader's stdin (out_fd, -1: the reader never started): whole
// lines, the same as a stdout adapter and a stdin adapter of a line-batched queue give (a
// last line without '\n' per `verdict`, a line longer than `line_limit` stops the relay with an
// error). Once `reader_stop` is set (the reader exited) or out_fd is -1, it stops and closes
// in_fd, so the writer gets EPIPE as in a shell pipeline; lines read but not written are then
// in_lines - out_lines. Closes both descriptors.
void pump_pipe(int in_fd, int out_fd, std::size_t line_limit, AdapterErrors& errors, const std::atomic<bool>& abandon,
               const std::atomic<int>& verdict, std::atomic<std::size_t>& dropped_bytes,
               const std::atomic<bool>& reader_stop, PipeEdgeCounts& counts) noexcept;

// What the stdin adapter gave one process of a replica, so the supervisor can settle, once
// the process is gone, which messages it never saw. Written by the adapter thread, read by
// the supervisor after joining it. Offsets count bytes of the framed stream written to the
// pipe (lines with their '\n', records with their length prefix).
struct StdinLedger {
    bool batched = false;              // messages are batches of whole lines: count and settle lines
    std::uint64_t taken = 0;           // messages (batched: lines) given to this process (from the queue or re-delivered)
    std::uint64_t taken_bytes = 0;     // their framed bytes
    std::deque<std::uint64_t> starts;  // where the most recent messages start (the window that may be unread)
    std::uint64_t window = 0;          // how far back `starts` reaches: pipe size + a batch
    std::string unwritten;             // framed bytes taken but never written (stopped mid-batch)
    std::uint64_t writes = 0;          // writev calls made: several messages go out per call
};

// The messages of a dead process's input, settled: `unread` (framed, whole) were never read
// and may be given to a replacement; `read` messages (a partly read one included) were
// read, and whether the program finished them cannot be known. Batched, both count lines:
// the whole lines after the point the program stopped reading are unread (the line it was
// in counts as read, even when it stopped right at its start: the byte before is gone).
struct StdinSettlement {
    std::vector<std::string> unread;
    std::uint64_t read = 0;
};
// `pipe_bytes`: what was still in the pipe after the process died.
StdinSettlement settle_stdin(const StdinLedger& ledger, const std::string& pipe_bytes);

// Messages -> stage stdin, until end of stream or `stop` (also while waiting for room in the
// pipe). Each write is one writev of the messages waiting (up to about 64 KiB): the last one in
// place from the queue, those before it copied, since a consumer holds one message at a time.
// `redeliver` (framed messages a dead predecessor never read) goes first. `batched`:
// messages are batches of lines (see SpecGraph::line_batch_bytes), written as they are. The caller
// holds a copy of the pipe's read end, so a write never fails with EPIPE: the supervisor
// sets `stop` once the program exited, and reads what it left in the pipe. Closes fd.
void pump_stdin(int fd, Consumer<>& rx, StreamFormat format, bool batched, const std::atomic<bool>& stop,
                std::vector<std::string> redeliver, StdinLedger& ledger) noexcept;

}  // namespace shmpipe::detail
