// The adapters that let ordinary programs be stages, and the prefixed line copier. They run
// as threads inside the launcher (see graph.hpp); each owns one pipe end and closes it.
#include <shmpipe/detail/graph_adapter.hpp>

#include <shmpipe/detail/sys_util.hpp>
#include <shmpipe/error.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

namespace shmpipe::detail {

namespace {

constexpr int kPollMs = 100;  // how often a waiting adapter looks at its stop flag

// read(2) that gives up when `abandon` is set while no data comes: -1 error, 0 EOF,
// -2 abandoned, else the byte count.
ssize_t read_or_abandon(int fd, char* buf, std::size_t n, const std::atomic<bool>& abandon) noexcept {
    while (true) {
        pollfd p{fd, POLLIN, 0};
        const int r = ::poll(&p, 1, kPollMs);
        if (r < 0 && errno != EINTR) return -1;
        if (r > 0) {
            const ssize_t got = ::read(fd, buf, n);
            if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            return got;
        }
        if (abandon.load(std::memory_order_acquire)) return -2;
    }
}

// Writes everything to a non-blocking fd, waiting for room in slices so `stop` is seen.
// Returns the bytes written: all of them, or fewer on `stop` or an error.
std::size_t write_until_stopped(int fd, const char* p, std::size_t n, const std::atomic<bool>& stop) noexcept {
    std::size_t done = 0;
    while (done < n) {
        const ssize_t w = ::write(fd, p + done, n - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) return done;
            if (stop.load(std::memory_order_acquire)) return done;
            pollfd pf{fd, POLLOUT, 0};
            ::poll(&pf, 1, kPollMs);
            continue;
        }
        done += static_cast<std::size_t>(w);
    }
    return done;
}

}  // namespace

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

void pump_stdout(int fd, Producer<>& tx, StreamFormat format, AdapterErrors& errors, const std::atomic<bool>& abandon,
                 const std::atomic<int>& verdict, std::atomic<std::size_t>& dropped_bytes) noexcept {
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
    cuts.push_back(ledger.taken_bytes);
    for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
        out.unread.emplace_back(suffix, static_cast<std::size_t>(cuts[i] - from), static_cast<std::size_t>(cuts[i + 1] - cuts[i]));
    }
    out.read = ledger.taken - std::min<std::uint64_t>(ledger.taken, out.unread.size());
    return out;
}

void pump_stdin(int fd, Consumer<>& rx, StreamFormat format, const std::atomic<bool>& stop,
                std::vector<std::string> redeliver, StdinLedger& ledger) noexcept {
    using namespace std::chrono_literals;
    // Messages are gathered into one buffer (up to kBatch bytes, or until the queue is
    // momentarily empty) and written with one system call: a write per line would cost more
    // than the queue itself.
    constexpr std::size_t kBatch = 64 * 1024;
    std::string batch;
    // The unread suffix is at most a pipe and a batch (which ends with at most one message
    // past kBatch): keep message starts that far back.
    const int pipe_size = ::fcntl(fd, F_GETPIPE_SZ);
    const std::uint64_t base_window = static_cast<std::uint64_t>(pipe_size > 0 ? pipe_size : 1 << 20) + 2 * kBatch;
    ledger.window = base_window;
    auto mark_start = [&] {
        ledger.starts.push_back(ledger.taken_bytes + batch.size());
        ++ledger.taken;
    };
    auto append = [&](std::span<const std::byte> sp) {
        mark_start();
        if (format == StreamFormat::records) {
            const auto len = static_cast<std::uint32_t>(sp.size());
            batch.append(reinterpret_cast<const char*>(&len), sizeof len);
        }
        batch.append(reinterpret_cast<const char*>(sp.data()), sp.size());
        if (format == StreamFormat::lines) batch += '\n';
        ledger.window = std::max<std::uint64_t>(ledger.window, base_window + sp.size() + 8);
    };
    // Writes the batch; false when stopped first (what was not written is kept in the ledger).
    auto flush = [&] {
        const std::size_t written = write_until_stopped(fd, batch.data(), batch.size(), stop);
        ledger.taken_bytes += batch.size();
        while (!ledger.starts.empty() && ledger.starts.front() + ledger.window < ledger.taken_bytes) {
            ledger.starts.pop_front();
        }
        const bool all = written == batch.size();
        if (!all) ledger.unwritten.assign(batch, written);
        batch.clear();
        return all;
    };
    // Non-blocking, so a write to a program that stopped reading (or to a pipe a leftover
    // child of the program still holds) gives way to `stop`.
    if (const int fl = ::fcntl(fd, F_GETFL); fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    try {
        batch.reserve(kBatch + 4096);
        for (const auto& m : redeliver) {  // already framed; at most a pipe and a batch of them
            mark_start();
            batch += m;
        }
        ledger.window = std::max<std::uint64_t>(ledger.window, base_window + batch.size());
        bool going = batch.empty() || flush();
        while (going && !stop.load(std::memory_order_acquire)) {  // set by the supervisor once the program exited
            try {
                auto slot = rx.peek_for(100ms);
                if (!slot) {
                    if (rx.ended()) break;  // end of stream: the program sees EOF
                    continue;
                }
                append(slot->span());
                slot.reset();
                while (batch.size() < kBatch) {
                    auto more = rx.try_peek();
                    if (!more) break;
                    append(more->span());
                }
            } catch (const Error& e) {
                // A producer's death is the supervisor's to report (it sees every replica
                // end, whoever notices first): keep reading the others' messages.
                if (e.code() != make_error_code(errc::producer_died)) break;  // broken (stopping) or corrupt
            }
            if (!batch.empty()) going = flush();
        }
    } catch (...) {
        // Out of memory: end this program's input.
    }
    ::close(fd);
}

}  // namespace shmpipe::detail
