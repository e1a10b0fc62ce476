// The adapters that let ordinary programs be stages, and the prefixed line copier. They run
// as threads inside the launcher (see graph.hpp); each owns one pipe end and closes it.
#include <shmpipe/detail/graph_adapter.hpp>

#include <shmpipe/detail/sys_util.hpp>
#include <shmpipe/error.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <sys/uio.h>
#include <vector>
#include <pthread.h>
#include <unistd.h>

namespace shmpipe::detail {

namespace {

constexpr int kPollMs = 100;  // how often a waiting adapter looks at its stop flag
// The pipes of a line-batched edge hold a few batches (the default 64 KiB is one): a program
// and its adapter then wake each other per few batches, not per batch. Best effort: a user
// over the pipe-size limits keeps the default.
constexpr int kBatchedPipeBytes = 256 * 1024;

// Waits until fd has data (POLLIN) or EOF (POLLHUP alone: a pipe's writers are gone and
// it is empty) and returns poll's revents; 0 when `abandon` is set while none comes, or
// poll fails.
short wait_readable(int fd, const std::atomic<bool>& abandon) noexcept {
    while (true) {
        pollfd p{fd, POLLIN, 0};
        const int r = ::poll(&p, 1, kPollMs);
        if (r < 0 && errno != EINTR) return 0;
        if (r > 0) return p.revents;
        if (abandon.load(std::memory_order_acquire)) return 0;
    }
}

// read(2) that gives up when `abandon` is set while no data comes: -1 error, 0 EOF,
// -2 abandoned, else the byte count.
ssize_t read_or_abandon(int fd, char* buf, std::size_t n, const std::atomic<bool>& abandon) noexcept {
    while (true) {
        if (wait_readable(fd, abandon) == 0) return abandon.load(std::memory_order_acquire) ? -2 : -1;
        const ssize_t got = ::read(fd, buf, n);
        if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        return got;
    }
}

// Where the first line longer than `limit` starts in [p, p + n), whole lines each ending
// with '\n'; npos when there is none. A line of at most `limit` bytes has its '\n' within
// the limit + 1 bytes from its start, so one memrchr per window jumps over every short line
// in it.
std::size_t overlong_line_at(const char* p, std::size_t n, std::size_t limit) noexcept {
    std::size_t pos = 0;
    while (n - pos > limit) {
        const void* nl = ::memrchr(p + pos, '\n', limit + 1);
        if (nl == nullptr) return pos;
        pos = static_cast<std::size_t>(static_cast<const char*>(nl) - p) + 1;
    }
    return std::string::npos;
}

// The stdout adapter for a line-batched queue (see SpecGraph::line_batch_bytes). Once the pipe has
// data, it reserves a message of the queue's max_message bytes, copies in the line the
// previous read left unfinished, reads straight into the message and publishes its whole
// lines. It reserves only when data is waiting, so a quiet program never holds a
// reservation (an MPMC consumer waits for a reserved cell); the exception is a read that
// brings no '\n' at all: the message is kept and filled by the next reads, since giving it
// up would count as an abandoned message.
void pump_stdout_batched(int fd, Producer<>& tx, std::size_t limit, AdapterErrors& errors,
                         const std::atomic<bool>& abandon, const std::atomic<int>& verdict,
                         std::atomic<std::size_t>& dropped_bytes) {
    const std::size_t cap = tx.max_message();  // >= limit + 1: a longest line and its '\n'
    (void)::fcntl(fd, F_SETPIPE_SZ, kBatchedPipeBytes);
    bool pushing = true;
    auto fail = [&](const std::string& what) {
        pushing = false;  // keep reading (and discarding) so the program is never stuck
        errors.set("stdout adapter: " + what);
    };
    auto too_long = [&](std::size_t at_least, bool exact) {
        fail("a line of " + std::string(exact ? "" : "more than ") + std::to_string(at_least) +
             " bytes does not fit queue \"" + tx.name() + "\", whose lines may be " + std::to_string(limit) +
             " bytes long (raise max_message in its [[queue]])");
    };
    std::string carry;              // the start of a line that the last read cut
    std::optional<WriteSlot> slot;  // held only while it holds a line without its '\n'
    std::size_t filled = 0;         // bytes of *slot in use
    char discard[16384];
    while (true) {
        if (!pushing) {
            const ssize_t n = read_or_abandon(fd, discard, sizeof discard, abandon);
            if (n <= 0) break;
            continue;
        }
        // Reserve only when the read will bring data: a message reserved for nothing would
        // have to be given up, which MPMC counts as abandoned.
        if ((wait_readable(fd, abandon) & POLLIN) == 0) break;  // EOF, abandoned or an error
        if (!slot) {
            try {
                slot.emplace(tx.reserve(cap));
            } catch (const Error& e) {
                pushing = false;
                if (e.code() != make_error_code(errc::broken) && e.code() != make_error_code(errc::closed) &&
                    e.code() != make_error_code(errc::consumer_died)) {
                    errors.set(std::string("stdout adapter: ") + e.what());
                }
                continue;
            }
            std::memcpy(slot->span().data(), carry.data(), carry.size());
            filled = carry.size();
            carry.clear();
        }
        char* base = reinterpret_cast<char*>(slot->span().data());
        ssize_t n;
        do {
            n = ::read(fd, base + filled, cap - filled);
        } while (n < 0 && errno == EINTR);
        if (n <= 0) break;  // EOF (or a broken pipe): the line in `slot`, if any, is settled below
        const std::size_t before = filled;
        filled += static_cast<std::size_t>(n);
        const void* last = ::memrchr(base + before, '\n', filled - before);
        if (last == nullptr) {
            if (filled > limit) {
                too_long(limit, false);
                slot.reset();
            }
            continue;  // keep the message: the line goes on in the next read
        }
        const std::size_t whole = static_cast<std::size_t>(static_cast<const char*>(last) - base) + 1;
        if (const std::size_t bad = overlong_line_at(base, whole, limit); bad != std::string::npos) {
            const void* end = std::memchr(base + bad, '\n', whole - bad);
            const std::size_t len = static_cast<std::size_t>(static_cast<const char*>(end) - base) - bad;
            if (bad != 0) slot->commit(bad);  // the lines before it go on, as one message each did
            slot.reset();
            too_long(len, true);
            continue;
        }
        if (filled - whole > limit) {
            slot->commit(whole);
            slot.reset();
            too_long(limit, false);
            continue;
        }
        carry.assign(base + whole, filled - whole);  // before commit: the space is the queue's then
        slot->commit(whole);
        slot.reset();
    }
    const std::size_t len = slot ? filled : carry.size();
    if (pushing && len != 0) {
        // A last line without '\n': whole only if the program ended well.
        int v = static_cast<int>(ExitVerdict::unknown);
        while ((v = verdict.load(std::memory_order_acquire)) == static_cast<int>(ExitVerdict::unknown) &&
               !abandon.load(std::memory_order_acquire)) {
            ::poll(nullptr, 0, 10);
        }
        if (v != static_cast<int>(ExitVerdict::ended_well)) {
            dropped_bytes.fetch_add(len, std::memory_order_relaxed);
            return;  // a held message is given up: MPMC counts it abandoned, the cut line is
                     // reported as dropped by the supervisor
        }
        try {
            if (!slot) {
                slot.emplace(tx.reserve(cap));
                std::memcpy(slot->span().data(), carry.data(), carry.size());
            }
            slot->span()[len] = std::byte{'\n'};  // len <= limit < cap
            slot->commit(len + 1);
        } catch (const Error& e) {
            if (e.code() != make_error_code(errc::broken) && e.code() != make_error_code(errc::closed) &&
                e.code() != make_error_code(errc::consumer_died)) {
                errors.set(std::string("stdout adapter: ") + e.what());
            }
        }
    }
}

// Writes everything to a non-blocking fd, waiting for room in slices so `stop` is seen.
// Returns the bytes written: all of them, or fewer on `stop` or an error.
std::size_t write_until_stopped(int fd, const char* p, std::size_t n, const std::atomic<bool>& stop) noexcept {
    iovec one{const_cast<char*>(p), n};
    return writev_until_stopped(fd, std::span<iovec>(&one, 1), stop);
}

}  // namespace

std::size_t writev_until_stopped(int fd, std::span<iovec> iov, const std::atomic<bool>& stop,
                                 std::uint64_t* calls) noexcept {
    std::size_t done = 0, first = 0;
    while (first < iov.size()) {
        if (iov[first].iov_len == 0) {
            ++first;
            continue;
        }
        const std::size_t count = std::min<std::size_t>(iov.size() - first, IOV_MAX);
        const ssize_t w = ::writev(fd, iov.data() + first, static_cast<int>(count));
        if (calls != nullptr) ++*calls;
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) return done;  // EPIPE (the reader closed its end) or another error
            if (stop.load(std::memory_order_acquire)) return done;
            pollfd pf{fd, POLLOUT, 0};
            ::poll(&pf, 1, kPollMs);
            continue;
        }
        // A partial write: skip the buffers written whole, resume the cut one where it stopped.
        auto left = static_cast<std::size_t>(w);
        done += left;
        while (left != 0 && left >= iov[first].iov_len) left -= iov[first++].iov_len;
        if (left != 0) {
            iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
            iov[first].iov_len -= left;
        }
    }
    return done;
}

void block_sigpipe_in_this_thread() noexcept {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void Output::clear_status_locked() noexcept {
    if (status_shown_) {
        static constexpr char kClear[] = "\r\033[K";
        write_all(err_fd_, kClear, sizeof kClear - 1);
        status_shown_ = false;
    }
}

void Output::show_status_locked() noexcept {
    if (status_enabled_ && !status_.empty()) {
        write_all(err_fd_, status_.data(), status_.size());
        status_shown_ = true;
    }
}

void Output::write(int fd, std::string_view text) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    clear_status_locked();
    write_all(fd, text.data(), text.size());
    show_status_locked();
}

void Output::report(std::string_view prefix, std::string_view text) noexcept {
    std::string line;
    try {
        line.reserve(prefix.size() + text.size() + 3);
        line.append(prefix).append(": ").append(text).append("\n");
    } catch (...) {
        return;
    }
    write(err_fd_, line);
}

void Output::set_status(std::string status) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    clear_status_locked();
    status_ = std::move(status);
    show_status_locked();
}

void Output::end_status() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    clear_status_locked();
    status_enabled_ = false;
}

void pump_log(int fd, Output& out, int dest_fd, std::string prefix, int file_fd,
              const std::atomic<bool>& abandon) noexcept {
    try {
        char chunk[16384];
        std::string pending, batch, plain;
        bool open = true;
        while (open) {
            const ssize_t n = read_or_abandon(fd, chunk, sizeof chunk, abandon);
            if (n <= 0) {
                open = false;
                if (!pending.empty()) pending += '\n';  // a last line without '\n' is still whole
            } else {
                pending.append(chunk, static_cast<std::size_t>(n));
            }
            std::size_t start = 0, nl;
            batch.clear();
            plain.clear();
            while ((nl = pending.find('\n', start)) != std::string::npos) {
                batch.append(prefix).append(pending, start, nl + 1 - start);
                if (file_fd >= 0) plain.append(pending, start, nl + 1 - start);
                start = nl + 1;
            }
            pending.erase(0, start);
            if (!batch.empty()) out.write(dest_fd, batch);
            if (!plain.empty()) write_all(file_fd, plain.data(), plain.size());
        }
    } catch (...) {
        // Out of memory copying logs: stop copying, the stage still runs.
    }
    ::close(fd);
}

void pump_pipe(int in_fd, int out_fd, std::size_t line_limit, AdapterErrors& errors, const std::atomic<bool>& abandon,
               const std::atomic<int>& verdict, std::atomic<std::size_t>& dropped_bytes,
               const std::atomic<bool>& reader_stop, PipeEdgeCounts& counts) noexcept {
    (void)::fcntl(in_fd, F_SETPIPE_SZ, kBatchedPipeBytes);
    if (out_fd >= 0) {
        (void)::fcntl(out_fd, F_SETPIPE_SZ, kBatchedPipeBytes);
        if (const int fl = ::fcntl(out_fd, F_GETFL); fl >= 0) ::fcntl(out_fd, F_SETFL, fl | O_NONBLOCK);
    }
    bool delivering = out_fd >= 0;
    // Writes whole lines [p, p + n) to the reader; false once it is gone.
    auto deliver = [&](const char* p, std::size_t n) {
        const std::size_t lines = count_lines(p, n);
        counts.lines_in.fetch_add(lines, std::memory_order_relaxed);
        counts.bytes_in.fetch_add(n, std::memory_order_relaxed);
        if (!delivering) return false;
        const std::size_t w = write_until_stopped(out_fd, p, n, reader_stop);
        // A cut line has no '\n' written yet.
        counts.lines_out.fetch_add(w == n ? lines : count_lines(p, w), std::memory_order_relaxed);
        counts.bytes_out.fetch_add(w, std::memory_order_relaxed);
        delivering = w == n;
        return delivering;
    };
    try {
        const std::size_t cap = std::max<std::size_t>(line_limit + 1, kBatchedPipeBytes);  // a pipe's worth per read
        std::vector<char> buf(cap);
        std::size_t have = 0;  // bytes in buf: at most one unfinished line
        bool open = delivering;
        while (open) {
            const ssize_t n = read_or_abandon(in_fd, buf.data() + have, cap - have, abandon);
            if (n <= 0) break;
            const std::size_t before = have;
            have += static_cast<std::size_t>(n);
            const void* last = ::memrchr(buf.data() + before, '\n', have - before);
            const std::size_t whole =
                last == nullptr ? 0 : static_cast<std::size_t>(static_cast<const char*>(last) - buf.data()) + 1;
            const std::size_t bad = overlong_line_at(buf.data(), whole, line_limit);
            if (bad != std::string::npos || have - whole > line_limit) {
                const std::size_t ok = bad != std::string::npos ? bad : whole;
                if (ok != 0) deliver(buf.data(), ok);
                errors.set("pipe edge: a line longer than " + std::to_string(line_limit) +
                           " bytes (raise max_message in its [[queue]])");
                open = false;
                have = 0;
                break;
            }
            if (whole != 0 && !deliver(buf.data(), whole)) open = false;  // the reader is gone
            std::memmove(buf.data(), buf.data() + whole, have - whole);
            have -= whole;
        }
        if (open && have != 0) {
            // A last line without '\n': whole only if the program ended well.
            int v = static_cast<int>(ExitVerdict::unknown);
            while ((v = verdict.load(std::memory_order_acquire)) == static_cast<int>(ExitVerdict::unknown) &&
                   !abandon.load(std::memory_order_acquire)) {
                ::poll(nullptr, 0, 10);
            }
            if (v == static_cast<int>(ExitVerdict::ended_well)) {
                buf[have] = '\n';  // have <= line_limit < cap
                deliver(buf.data(), have + 1);
            } else {
                dropped_bytes.fetch_add(have, std::memory_order_relaxed);
            }
        }
    } catch (const std::exception& e) {
        errors.set(std::string("pipe edge: ") + e.what());
    }
    if (out_fd >= 0) ::close(out_fd);  // the reader's end of input
    ::close(in_fd);                    // a writer still writing gets EPIPE
}

std::size_t count_lines(const char* p, std::size_t n) noexcept {
    // Eight bytes at a time: a byte of w ^ "\n\n..." is zero exactly where w has a '\n'; the
    // sum below sets bit 7 of every non-zero byte without carrying into the next byte.
    constexpr std::uint64_t kOnes = 0x0101010101010101ULL, kLow7 = kOnes * 0x7f, kHigh = kOnes * 0x80;
    std::size_t c = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t w;
        std::memcpy(&w, p + i, 8);
        const std::uint64_t x = w ^ (kOnes * '\n');
        const std::uint64_t nonzero = ((x & kLow7) + kLow7) | x;
        c += static_cast<std::size_t>(std::popcount(~nonzero & kHigh));
    }
    for (; i < n; ++i) c += p[i] == '\n' ? 1 : 0;
    return c;
}

void pump_stdout(int fd, Producer<>& tx, StreamFormat format, std::size_t line_limit, AdapterErrors& errors,
                 const std::atomic<bool>& abandon, const std::atomic<int>& verdict,
                 std::atomic<std::size_t>& dropped_bytes) noexcept {
    if (line_limit != 0) {
        try {
            pump_stdout_batched(fd, tx, line_limit, errors, abandon, verdict, dropped_bytes);
        } catch (const std::exception& e) {
            errors.set(std::string("stdout adapter: ") + e.what());
        }
        ::close(fd);
        return;
    }
    bool pushing = true;
    auto push = [&](const char* p, std::size_t n) {
        if (!pushing) return;
        try {
            tx.push(std::span<const std::byte>(reinterpret_cast<const std::byte*>(p), n));
        } catch (const Error& e) {
            pushing = false;  // keep reading (and discarding) so the program is never stuck
            if (e.code() != make_error_code(errc::broken) && e.code() != make_error_code(errc::closed) &&
                e.code() != make_error_code(errc::consumer_died)) {
                errors.set(std::string("stdout adapter: ") + e.what());
            }
        }
    };
    try {
        std::string pending;
        char chunk[65536];
        bool open = true;
        while (open) {
            const ssize_t n = read_or_abandon(fd, chunk, sizeof chunk, abandon);
            if (n <= 0) {
                open = false;
            } else if (pushing) {
                pending.append(chunk, static_cast<std::size_t>(n));
            }
            std::size_t start = 0;
            if (format == StreamFormat::lines) {
                std::size_t nl;
                while ((nl = pending.find('\n', start)) != std::string::npos) {
                    push(pending.data() + start, nl - start);
                    start = nl + 1;
                }
                if (!open && start < pending.size()) {
                    // A last line without '\n': whole only if the program ended well.
                    int v = static_cast<int>(ExitVerdict::unknown);
                    while ((v = verdict.load(std::memory_order_acquire)) == static_cast<int>(ExitVerdict::unknown) &&
                           !abandon.load(std::memory_order_acquire)) {
                        ::poll(nullptr, 0, 10);
                    }
                    if (v == static_cast<int>(ExitVerdict::ended_well)) {
                        push(pending.data() + start, pending.size() - start);
                    } else if (pushing) {
                        dropped_bytes.fetch_add(pending.size() - start, std::memory_order_relaxed);
                    }
                    start = pending.size();
                }
            } else {
                while (pending.size() - start >= 4) {
                    std::uint32_t len = 0;
                    std::memcpy(&len, pending.data() + start, 4);  // little-endian on every Linux we build for
                    if (len > tx.max_message()) {
                        errors.set("stdout adapter: record of " + std::to_string(len) + " bytes is larger than queue \"" +
                                   tx.name() + "\" max_message (" + std::to_string(tx.max_message()) + ")");
                        pushing = false;
                        pending.clear();
                        start = 0;
                        break;
                    }
                    if (pending.size() - start - 4 < len) break;
                    push(pending.data() + start + 4, len);
                    start += 4 + static_cast<std::size_t>(len);
                }
                if (!open && start < pending.size() && pushing) {
                    errors.set("stdout adapter: the program ended inside a record (" +
                               std::to_string(pending.size() - start) + " bytes left over)");
                }
            }
            pending.erase(0, start);
            if (!pushing) pending.clear();
        }
    } catch (const std::exception& e) {
        errors.set(std::string("stdout adapter: ") + e.what());
    }
    ::close(fd);
}

StdinSettlement settle_stdin(const StdinLedger& ledger, const std::string& pipe_bytes) {
    StdinSettlement out;
    // The unread bytes are the suffix of the stream: what stayed in the pipe, then what was
    // never written. Its whole messages start at recorded offsets at or after its start.
    const std::string suffix = pipe_bytes + ledger.unwritten;
    const std::uint64_t from = ledger.taken_bytes - std::min<std::uint64_t>(suffix.size(), ledger.taken_bytes);
    std::vector<std::uint64_t> cuts;
    for (const std::uint64_t st : ledger.starts) {
        if (st >= from && st < ledger.taken_bytes) cuts.push_back(st);
    }
    if (ledger.batched) {
        // Every message is whole lines, so the unread whole lines are those after the first
        // '\n' of a partly read message, and every line of the messages after it.
        std::size_t pos = 0;
        if (const std::uint64_t first = cuts.empty() ? ledger.taken_bytes : cuts.front(); first > from) {
            const std::size_t partial = static_cast<std::size_t>(first - from);
            const std::size_t nl = suffix.find('\n');
            pos = nl < partial ? nl + 1 : partial;
        }
        while (pos < suffix.size()) {
            const std::size_t nl = suffix.find('\n', pos);
            const std::size_t end = nl == std::string::npos ? suffix.size() : nl + 1;
            out.unread.emplace_back(suffix, pos, end - pos);
            pos = end;
        }
        out.read = ledger.taken - std::min<std::uint64_t>(ledger.taken, out.unread.size());
        return out;
    }
    cuts.push_back(ledger.taken_bytes);
    for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
        out.unread.emplace_back(suffix, static_cast<std::size_t>(cuts[i] - from), static_cast<std::size_t>(cuts[i + 1] - cuts[i]));
    }
    out.read = ledger.taken - std::min<std::uint64_t>(ledger.taken, out.unread.size());
    return out;
}

void pump_stdin(int fd, Consumer<>& rx, StreamFormat format, bool batched, const std::atomic<bool>& stop,
                std::vector<std::string> redeliver, StdinLedger& ledger) noexcept {
    using namespace std::chrono_literals;
    // One writev per gather: the messages waiting now, up to about kBatch bytes (a write per
    // line, or per message, would cost more than the queue itself). The queue lends one
    // message at a time (an MPMC consumer's claim names one cell: M3 in queue_layout.hpp), so
    // the messages of a gather but its last are copied into `gather` as they are released,
    // and the last is written in place from the queue, its framing beside it. A message is
    // copied only when another one is waiting behind it: a quiet queue's message, and every
    // message that would overflow the gather, goes out without a copy.
    constexpr std::size_t kBatch = 64 * 1024;
    std::string gather;                // framed copies of the gather's released messages
    std::vector<iovec> iov, sent;      // the write being made, and its copy (writev consumes iov)
    std::uint64_t queued = 0;          // framed bytes of the write being made
    ledger.batched = batched;
    // The unread suffix is at most a pipe and a gather (which ends with at most one message
    // past kBatch): keep message starts that far back.
    if (batched) (void)::fcntl(fd, F_SETPIPE_SZ, kBatchedPipeBytes);
    const int pipe_size = ::fcntl(fd, F_GETPIPE_SZ);
    const std::uint64_t base_window = static_cast<std::uint64_t>(pipe_size > 0 ? pipe_size : 1 << 20) + 2 * kBatch;
    ledger.window = base_window;
    const std::size_t framing = batched ? 0 : format == StreamFormat::records ? sizeof(std::uint32_t) : 1;
    // A message of `framed` bytes and `lines` lines joins the write being made.
    auto mark_start = [&](std::uint64_t lines, std::size_t framed) {
        ledger.starts.push_back(ledger.taken_bytes + queued);
        ledger.taken += lines;
        ledger.window = std::max<std::uint64_t>(ledger.window, base_window + framed);
        queued += framed;
    };
    auto lines_in = [&](std::span<const std::byte> sp) -> std::uint64_t {
        return batched ? count_lines(reinterpret_cast<const char*>(sp.data()), sp.size()) : 1;
    };
    auto as_chars = [](std::span<const std::byte> sp) { return reinterpret_cast<const char*>(sp.data()); };
    std::uint32_t length_prefix = 0;  // the in-place record's (little-endian on every Linux we build for)
    static constexpr char kNewline = '\n';
    auto add = [&](const void* p, std::size_t n) { iov.push_back(iovec{const_cast<void*>(p), n}); };
    // Copies a message, framed (batched: lines with their '\n', as they are), into the gather.
    auto copy = [&](std::span<const std::byte> sp) {
        mark_start(lines_in(sp), sp.size() + framing);
        if (!batched && format == StreamFormat::records) {
            length_prefix = static_cast<std::uint32_t>(sp.size());
            gather.append(reinterpret_cast<const char*>(&length_prefix), sizeof length_prefix);
        }
        gather.append(as_chars(sp), sp.size());
        if (!batched && format == StreamFormat::lines) gather += kNewline;
    };
    // The message held in the queue, framed, last in the write.
    auto in_place = [&](std::span<const std::byte> sp) {
        mark_start(lines_in(sp), sp.size() + framing);
        if (!batched && format == StreamFormat::records) {
            length_prefix = static_cast<std::uint32_t>(sp.size());
            add(&length_prefix, sizeof length_prefix);
        }
        add(sp.data(), sp.size());
        if (!batched && format == StreamFormat::lines) add(&kNewline, 1);
    };
    // Makes the write; false when stopped first (what was not written is kept in the ledger).
    auto write_out = [&] {
        sent = iov;
        const std::size_t written = writev_until_stopped(fd, iov, stop, &ledger.writes);
        ledger.taken_bytes += queued;
        while (!ledger.starts.empty() && ledger.starts.front() + ledger.window < ledger.taken_bytes) {
            ledger.starts.pop_front();
        }
        const bool all = written == queued;
        std::size_t skip = written;
        for (const iovec& v : sent) {
            if (all) break;
            if (skip >= v.iov_len) {
                skip -= v.iov_len;
                continue;
            }
            ledger.unwritten.append(static_cast<const char*>(v.iov_base) + skip, v.iov_len - skip);
            skip = 0;
        }
        iov.clear();
        gather.clear();
        queued = 0;
        return all;
    };
    // Non-blocking, so a write to a program that stopped reading (or to a pipe a leftover
    // child of the program still holds) gives way to `stop`.
    if (const int fl = ::fcntl(fd, F_GETFL); fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    try {
        gather.reserve(kBatch + 4096);
        for (const auto& m : redeliver) {  // already framed (batched: one line each); at most a pipe and a gather of them
            mark_start(1, m.size());
            add(m.data(), m.size());
        }
        bool going = redeliver.empty() || write_out();
        while (going && !stop.load(std::memory_order_acquire)) {  // set by the supervisor once the program exited
            std::optional<ReadSlot> slot;
            bool last = false;
            try {
                slot = rx.peek_for(100ms);
                if (!slot) {
                    if (rx.ended()) break;  // end of stream: the program sees EOF
                    continue;
                }
                while (gather.size() + slot->span().size() + framing <= kBatch && rx.qsize() != 0) {
                    copy(slot->span());
                    slot.reset();  // consumed: its copy is in the gather
                    slot = rx.try_peek();
                    if (!slot) break;
                }
            } catch (const Error& e) {
                // A producer's death is the supervisor's to report (it sees every replica
                // end, whoever notices first): keep reading the others' messages. Otherwise
                // (broken: stopping; or corrupt) write what was taken, then stop.
                last = e.code() != make_error_code(errc::producer_died);
            }
            if (!gather.empty()) add(gather.data(), gather.size());
            if (slot) in_place(slot->span());
            if (!iov.empty()) going = write_out();
            slot.reset();  // consumed, written or (stopped) kept in ledger.unwritten
            if (last) break;
        }
    } catch (...) {
        // Out of memory: end this program's input.
    }
    ::close(fd);
}

}  // namespace shmpipe::detail
