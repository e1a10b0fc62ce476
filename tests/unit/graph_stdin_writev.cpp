// The stdin adapter's writes: several messages per writev (the waiting ones gathered, the last
// written in place from the queue), resumed exactly after partial writes, IOV_MAX respected,
// and a write cut by `stop` accounted to the byte.
#include <shmpipe/detail/graph_adapter.hpp>
#include <shmpipe/queue.hpp>

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <string>
#include <thread>
#include <utility>
#include <unistd.h>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

// A pipe whose write end is non-blocking and holds `size` bytes (the adapter's setting).
struct SmallPipe {
    int read_end = -1, write_end = -1;
    explicit SmallPipe(int size) {
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        read_end = fds[0];
        write_end = fds[1];
        REQUIRE(::fcntl(write_end, F_SETPIPE_SZ, size) >= size);
        REQUIRE(::fcntl(write_end, F_SETFL, ::fcntl(write_end, F_GETFL) | O_NONBLOCK) == 0);
    }
    ~SmallPipe() {
        if (read_end >= 0) ::close(read_end);
        if (write_end >= 0) ::close(write_end);
    }
};

// Everything in a pipe now (its write end may still be open).
std::string drain(int fd) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    return out;
}

// A reader that takes `piece` bytes at a time with a pause between reads, until EOF.
std::thread slow_reader(int fd, std::string& out, std::size_t piece) {
    return std::thread([fd, &out, piece] {
        std::vector<char> buf(piece);
        ssize_t n;
        while ((n = ::read(fd, buf.data(), buf.size())) > 0) {
            out.append(buf.data(), static_cast<std::size_t>(n));
            std::this_thread::sleep_for(100us);
        }
    });
}

// Buffers of 1..97 bytes, each with its own content.
std::vector<std::string> numbered_buffers(std::size_t count) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < count; ++i) {
        std::string s = std::to_string(i) + ':';
        s.resize(1 + (i * 31) % 97, static_cast<char>('a' + i % 26));
        out.push_back(std::move(s));
    }
    return out;
}

std::vector<iovec> iovecs_of(const std::vector<std::string>& bufs) {
    std::vector<iovec> iov;
    for (const auto& b : bufs) iov.push_back(iovec{const_cast<char*>(b.data()), b.size()});
    return iov;
}

std::string joined(const std::vector<std::string>& bufs) {
    std::string s;
    for (const auto& b : bufs) s += b;
    return s;
}

// A queue as the launcher makes one for a stdin adapter (consumers: many, as with replicas),
// with its producer and the adapter's consumer.
struct AdapterQueue {
    test::ShmGuard guard;
    std::string name = guard.add(test::unique_name("writev"));
    Queue queue = Queue::create(name, options());
    Producer<> tx{name};
    Consumer<> rx{name};

    static QueueOptions options() {
        QueueOptions o;
        o.capacity = 8 << 20;  // room for every message of a test: they are pushed before the adapter starts
        o.max_message = 4096;
        o.producers = Endpoints::one;
        o.consumers = Endpoints::many;
        o.expected_producers = 1;
        return o;
    }
};

}  // namespace

TEST_CASE("writev_until_stopped writes more buffers than IOV_MAX through a slowly read small pipe, byte for byte",
          "[unit]") {
    const std::vector<std::string> bufs = numbered_buffers(3 * IOV_MAX + 7);
    const std::string expected = joined(bufs);
    SmallPipe pipe(4096);  // far less than the total: most writes are partial
    std::string got;
    std::thread reader = slow_reader(pipe.read_end, got, 1000);
    std::vector<iovec> iov = iovecs_of(bufs);
    std::atomic<bool> stop{false};
    std::uint64_t calls = 0;

    const std::size_t sut = detail::writev_until_stopped(pipe.write_end, iov, stop, &calls);
    ::close(std::exchange(pipe.write_end, -1));
    reader.join();

    CHECK(sut == expected.size());
    CHECK(got == expected);  // every cut buffer resumed exactly where the write stopped
    CHECK(calls > expected.size() / 4096);  // the pipe never took it all at once
}

TEST_CASE("writev_until_stopped gives way to stop with the pipe full and reports exactly what it wrote", "[unit]") {
    const std::vector<std::string> bufs = numbered_buffers(500);  // ~24 KiB
    const std::string expected = joined(bufs);
    SmallPipe pipe(4096);  // nobody reads: it fills
    std::vector<iovec> iov = iovecs_of(bufs);
    std::atomic<bool> stop{true};

    const std::size_t sut = detail::writev_until_stopped(pipe.write_end, iov, stop);

    const std::string in_pipe = drain(pipe.read_end);
    REQUIRE(sut < expected.size());
    CHECK(in_pipe.size() == sut);
    CHECK(in_pipe == expected.substr(0, sut));
}

TEST_CASE("writev_until_stopped to a closed reader returns what it wrote, without SIGPIPE", "[unit]") {
    const std::vector<std::string> bufs = numbered_buffers(10);
    SmallPipe pipe(4096);
    ::close(std::exchange(pipe.read_end, -1));
    std::vector<iovec> iov = iovecs_of(bufs);
    std::atomic<bool> stop{false};
    std::size_t sut = 1;

    std::thread writer([&] {  // as an adapter thread does
        detail::block_sigpipe_in_this_thread();
        sut = detail::writev_until_stopped(pipe.write_end, iov, stop);
    });
    writer.join();

    CHECK(sut == 0);  // EPIPE at once: nothing was written
}

namespace {

struct Framing {
    StreamFormat format;
    bool batched;
};

// Pushes `count` messages of varied sizes (batched: 3 whole lines each) and ends the stream;
// returns the framed bytes the program must get, and counts the lines.
std::string push_messages(Producer<>& tx, Framing f, unsigned count, std::size_t spread, std::uint64_t& lines) {
    std::string expected;
    for (unsigned i = 0; i < count; ++i) {
        std::string m;
        if (f.batched) {
            for (int l = 0; l < 3; ++l) m += std::to_string(i) + "." + std::to_string(l) + std::string(i % spread, 'x') + "\n";
            lines += 3;
            expected += m;
        } else if (f.format == StreamFormat::lines) {
            m = std::to_string(i) + std::string(i % spread, 'y');
            expected += m + "\n";
            ++lines;
        } else {
            m = std::to_string(i) + std::string(i % spread, '\0');
            const auto len = static_cast<std::uint32_t>(m.size());
            expected.append(reinterpret_cast<const char*>(&len), sizeof len);
            expected += m;
            ++lines;
        }
        tx.push(std::span<const std::byte>(reinterpret_cast<const std::byte*>(m.data()), m.size()));
    }
    tx.close();
    return expected;
}

}  // namespace

TEST_CASE("the stdin adapter writes the messages waiting in the queue many to a writev, framed, byte for byte",
          "[unit]") {
    const Framing f = GENERATE(Framing{StreamFormat::lines, true}, Framing{StreamFormat::lines, false},
                               Framing{StreamFormat::records, false});
    AdapterQueue q;
    std::uint64_t lines = 0;
    const std::string expected = push_messages(q.tx, f, 200, 600, lines);  // ~60-180 KiB: the pipe holds it all
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    REQUIRE(::fcntl(fds[1], F_SETPIPE_SZ, 256 * 1024) >= 256 * 1024);
    std::atomic<bool> stop{false};
    detail::StdinLedger ledger;

    detail::pump_stdin(fds[1], q.rx, f.format, f.batched, stop, {}, ledger);  // closes fds[1]; nobody read yet

    const std::string got = drain(fds[0]);
    ::close(fds[0]);
    CHECK(got == expected);
    CHECK(ledger.taken == lines);
    CHECK(ledger.taken_bytes == expected.size());
    // A gather is at most 64 KiB and one message: every write took the messages waiting.
    CHECK(ledger.writes <= expected.size() / (64 * 1024) + 1);
    CHECK(q.queue.stats().messages_out == 200);
}

TEST_CASE("the stdin adapter's writes to a slowly reading program resume exactly after partial writes", "[unit]") {
    const Framing f = GENERATE(Framing{StreamFormat::lines, true}, Framing{StreamFormat::lines, false},
                               Framing{StreamFormat::records, false});
    AdapterQueue q;
    std::uint64_t lines = 0;
    const std::string expected = push_messages(q.tx, f, 600, 600, lines);  // ~0.2-0.55 MiB: far more than the pipe
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    std::string got;
    std::thread reader = slow_reader(fds[0], got, 16384);
    std::atomic<bool> stop{false};
    detail::StdinLedger ledger;

    detail::pump_stdin(fds[1], q.rx, f.format, f.batched, stop, {}, ledger);  // closes fds[1]
    reader.join();
    ::close(fds[0]);

    CHECK(got == expected);
    CHECK(ledger.taken == lines);
    CHECK(ledger.taken_bytes == expected.size());
    CHECK(ledger.unwritten.empty());
    // Fewer calls than messages, cut writes included: each call but one per wait for room
    // writes at least a page (at most ~140 pages here).
    CHECK(ledger.writes < 600);
    CHECK(q.queue.stats().messages_out == 600);
}

TEST_CASE("a stdin adapter stopped with the pipe full accounts every taken message: read, in the pipe or unwritten",
          "[unit]") {
    AdapterQueue q;
    std::string expected;             // framed, one line per message
    std::vector<std::size_t> starts;  // where each message starts in it
    for (unsigned i = 0; i < 300; ++i) {
        const std::string m = std::to_string(i) + std::string(1000 + i, 'z');
        starts.push_back(expected.size());
        expected += m + "\n";
        q.tx.push(std::span<const std::byte>(reinterpret_cast<const std::byte*>(m.data()), m.size()));
    }
    q.tx.close();
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    std::atomic<bool> stop{false};
    detail::StdinLedger ledger;
    std::thread adapter([&] { detail::pump_stdin(fds[1], q.rx, StreamFormat::lines, false, stop, {}, ledger); });
    // The program reads 10 000 bytes and stops reading; the adapter fills the pipe (its pages
    // partly: writes are cut anywhere) and waits for room, in the middle of a gather.
    std::string read_part;
    while (read_part.size() < 10000) {
        char buf[10000];
        const ssize_t n = ::read(fds[0], buf, 10000 - read_part.size());
        REQUIRE(n > 0);
        read_part.append(buf, static_cast<std::size_t>(n));
    }
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    int queued = 0;
    while (::ioctl(fds[0], FIONREAD, &queued) == 0 && queued < ::fcntl(fds[0], F_GETPIPE_SZ) / 2) {
        if (std::chrono::steady_clock::now() > deadline) {
            stop = true;
            adapter.join();
            FAIL("the stdin adapter to fill half the pipe of the program that stopped reading");
        }
        std::this_thread::sleep_for(1ms);
    }

    stop = true;  // what the supervisor does once the program exited
    adapter.join();

    const std::string in_pipe = drain(fds[0]);
    ::close(fds[0]);
    const std::string taken = read_part + in_pipe + ledger.unwritten;
    REQUIRE(taken.size() < expected.size());  // stopped before the end
    CHECK(ledger.taken_bytes == taken.size());
    CHECK(expected.compare(0, taken.size(), taken) == 0);  // a prefix of the stream: nothing lost or doubled
    // Unread: the messages that start at or after what the program read; the one it was in counts as read.
    std::size_t first_unread = 0;
    while (starts[first_unread] < read_part.size()) ++first_unread;
    const detail::StdinSettlement settled = detail::settle_stdin(ledger, in_pipe);
    std::string unread;
    for (const auto& m : settled.unread) unread += m;
    CHECK(unread == expected.substr(starts[first_unread], taken.size() - starts[first_unread]));
    CHECK(settled.read == first_unread);
    CHECK(settled.read + settled.unread.size() == ledger.taken);
}
