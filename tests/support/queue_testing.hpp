// Helpers shared by the queue tests and their peer program (tests/support/peers/queue_peer.cpp).
// Header-only and free of Catch2, so a peer can use it too.
//
// Test messages: bytes [0, 4) producer id, [4, 12) sequence number, then filler bytes that
// depend on both, so a torn, mixed-up or misrouted message is detected by its content.
// SharedLog: a file-backed array of u64 that survives SIGKILL of its (single) writer, so a
// test can read what a killed peer had committed or received.
#pragma once

#include <shmpipe/queue.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <mutex>
#include <future>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <fcntl.h>
#include <array>
#include <span>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace shmpipe::test {

// Options for a queue whose both sides are `kind` (one: SPSC, many: MPMC). Its stream ends
// once `producers` producers have closed (a `many` queue with no expected count and no
// seal never ends by itself).
inline QueueOptions queue_options(Endpoints kind, std::size_t capacity = 4096, std::size_t max_message = 256,
                                  std::uint32_t producers = 1) {
    QueueOptions o;
    o.producers = kind;
    o.consumers = kind;
    o.capacity = capacity;
    o.max_message = max_message;
    o.expected_producers = producers;
    return o;
}

inline const char* kind_label(Endpoints k) noexcept { return k == Endpoints::one ? "SPSC" : "MPMC"; }

inline constexpr std::size_t kMessageHeader = 12;  // producer id + sequence number

inline std::byte filler_byte(std::uint32_t producer, std::uint64_t seq, std::size_t i) noexcept {
    return static_cast<std::byte>((seq * 131u + producer * 17u + i) & 0xffu);
}

// Size of message `seq` of `producer` for a size spec: fixed (variable == false) or
// varying in [kMessageHeader, max_size].
inline std::size_t message_size(std::uint32_t producer, std::uint64_t seq, std::size_t max_size,
                                bool variable) noexcept {
    if (!variable || max_size <= kMessageHeader) return max_size < kMessageHeader ? kMessageHeader : max_size;
    const std::uint64_t h = (seq * 2654435761u + producer * 40503u) % (max_size - kMessageHeader + 1);
    return kMessageHeader + static_cast<std::size_t>(h);
}

inline void fill_message(std::span<std::byte> out, std::uint32_t producer, std::uint64_t seq) noexcept {
    std::memcpy(out.data(), &producer, 4);
    std::memcpy(out.data() + 4, &seq, 8);
    for (std::size_t i = kMessageHeader; i < out.size(); ++i) out[i] = filler_byte(producer, seq, i);
}

inline std::vector<std::byte> make_message(std::uint32_t producer, std::uint64_t seq, std::size_t size) {
    std::vector<std::byte> m(size < kMessageHeader ? kMessageHeader : size);
    fill_message(m, producer, seq);
    return m;
}

// False when the message is too short or its filler does not match its header.
inline bool parse_message(std::span<const std::byte> in, std::uint32_t& producer, std::uint64_t& seq) noexcept {
    if (in.size() < kMessageHeader) return false;
    std::memcpy(&producer, in.data(), 4);
    std::memcpy(&seq, in.data() + 4, 8);
    for (std::size_t i = kMessageHeader; i < in.size(); ++i) {
        if (in[i] != filler_byte(producer, seq, i)) return false;
    }
    return true;
}

// The element of typed queues in tests (Queue::create<TypedMessage>: fixed 40-byte slots),
// in the verified format of fill_message / parse_message.
struct TypedMessage {
    std::array<std::byte, 40> bytes;
};
inline TypedMessage make_typed_message(std::uint32_t producer, std::uint64_t seq) noexcept {
    TypedMessage m;
    fill_message(m.bytes, producer, seq);
    return m;
}

// One u64 per message for logs: producer id in the top 24 bits, sequence in the low 40.
inline std::uint64_t log_entry(std::uint32_t producer, std::uint64_t seq) noexcept {
    return (std::uint64_t{producer} << 40) | (seq & ((std::uint64_t{1} << 40) - 1));
}
inline std::uint32_t entry_producer(std::uint64_t e) noexcept { return static_cast<std::uint32_t>(e >> 40); }
inline std::uint64_t entry_seq(std::uint64_t e) noexcept { return e & ((std::uint64_t{1} << 40) - 1); }

// Order-independent checksum of a set of messages (sum of mixed entries).
inline std::uint64_t entry_hash(std::uint64_t e) noexcept {
    std::uint64_t x = e + 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// The checksum a consumer reports after receiving messages 0..count-1 of `producer`.
inline std::uint64_t expected_checksum(std::uint32_t producer, std::uint64_t count) noexcept {
    std::uint64_t sum = 0;
    for (std::uint64_t s = 0; s < count; ++s) sum += entry_hash(log_entry(producer, s));
    return sum;
}

// SHMPIPE_STRESS_SCALE (default 1): how much longer the stress tests run (the soak label).
inline std::uint64_t stress_scale() noexcept {
    const char* s = std::getenv("SHMPIPE_STRESS_SCALE");
    const long v = s != nullptr ? std::atol(s) : 1;
    return v > 0 ? static_cast<std::uint64_t>(v) : 1;
}

// File-backed log: [count][entries...]. One writer appends; readers see a prefix. The
// pages live in the page cache, so they survive the writer's SIGKILL.
class SharedLog {
public:
    static constexpr std::uint64_t kDefaultCapacity = std::uint64_t{1} << 20;

    SharedLog() = default;
    static SharedLog create(const std::string& path, std::uint64_t capacity = kDefaultCapacity) {
        return SharedLog(path, capacity, true);
    }
    static SharedLog open(const std::string& path) { return SharedLog(path, 0, false); }
    SharedLog(SharedLog&& o) noexcept
        : base_(std::exchange(o.base_, nullptr)), bytes_(std::exchange(o.bytes_, 0)), capacity_(o.capacity_) {}
    SharedLog& operator=(SharedLog&& o) noexcept {
        if (this != &o) {
            unmap();
            base_ = std::exchange(o.base_, nullptr);
            bytes_ = std::exchange(o.bytes_, 0);
            capacity_ = o.capacity_;
        }
        return *this;
    }
    SharedLog(const SharedLog&) = delete;
    SharedLog& operator=(const SharedLog&) = delete;
    ~SharedLog() { unmap(); }

    explicit operator bool() const noexcept { return base_ != nullptr; }
    // Single writer. Returns false when the log is full.
    bool append(std::uint64_t v) noexcept {
        const std::uint64_t n = count().load(std::memory_order_relaxed);
        if (n >= capacity_) return false;
        entries()[n] = v;
        count().store(n + 1, std::memory_order_release);  // a reader that sees n + 1 sees the entry
        return true;
    }
    std::uint64_t size() const noexcept { return count().load(std::memory_order_acquire); }
    std::vector<std::uint64_t> snapshot() const {
        const std::uint64_t n = size();
        return std::vector<std::uint64_t>(entries(), entries() + n);
    }

private:
    SharedLog(const std::string& path, std::uint64_t capacity, bool create) {
        const int fd = ::open(path.c_str(), create ? (O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC) : (O_RDWR | O_CLOEXEC),
                              0600);
        if (fd < 0) throw std::runtime_error("SharedLog: cannot open " + path + ": " + std::strerror(errno));
        if (create) {
            if (::ftruncate(fd, static_cast<off_t>((capacity + 1) * 8)) != 0) {
                ::close(fd);
                throw std::runtime_error("SharedLog: cannot size " + path);
            }
        }
        struct stat st {};
        ::fstat(fd, &st);
        bytes_ = static_cast<std::size_t>(st.st_size);
        if (bytes_ < 16) {
            ::close(fd);
            throw std::runtime_error("SharedLog: " + path + " is too small");
        }
        capacity_ = bytes_ / 8 - 1;
        void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) throw std::runtime_error("SharedLog: cannot map " + path);
        base_ = static_cast<std::uint64_t*>(p);
    }
    void unmap() noexcept {
        if (base_ != nullptr) ::munmap(base_, bytes_);
        base_ = nullptr;
    }
    std::atomic<std::uint64_t>& count() const noexcept { return *reinterpret_cast<std::atomic<std::uint64_t>*>(base_); }
    std::uint64_t* entries() const noexcept { return base_ + 1; }

    std::uint64_t* base_ = nullptr;
    std::size_t bytes_ = 0;
    std::uint64_t capacity_ = 0;
};

// A private temporary directory for logs and reports, removed with its contents.
class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/shmpipe-test-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    std::string file(const std::string& name) const { return path_ + "/" + name; }
    const std::string& path() const noexcept { return path_; }

private:
    std::string path_;
};

// Runs f() on a thread and waits up to `timeout`. If it has not returned by then, marks
// queue `name` broken (every blocked push/pop then throws Error(broken)), waits for f to
// give up, and returns false: a test that would hang fails instead. Exceptions from f
// are rethrown when it finished in time.
template <class F>
bool finishes_within(const std::string& name, std::chrono::milliseconds timeout, F&& f) {
    std::packaged_task<void()> task(std::forward<F>(f));
    auto done = task.get_future();
    std::thread t(std::move(task));
    if (done.wait_for(timeout) == std::future_status::ready) {
        t.join();
        done.get();
        return true;
    }
    try {
        shmpipe::Queue::open(name).mark_broken();
    } catch (...) {
    }
    t.join();  // a blocked push/pop throws broken; one that never checks hangs the ctest timeout
    return false;
}

// For calls that must never block (try_push, try_pop, ...): if the scope is not left within
// `timeout`, prints what hung to stderr, removes queue `name` and ends the process with
// exit code 70, so a livelock fails fast and names itself instead of hitting ctest's timeout.
class HangGuard {
public:
    HangGuard(std::string name, std::chrono::milliseconds timeout, std::string what)
        : name_(std::move(name)), what_(std::move(what)), thread_([this, timeout] {
              std::unique_lock lock(mutex_);
              if (!cv_.wait_for(lock, timeout, [this] { return done_; })) {
                  std::fprintf(stderr, "HANG: %s did not return within %lld ms (queue \"%s\"); exiting\n",
                               what_.c_str(), static_cast<long long>(timeout.count()), name_.c_str());
                  std::fflush(stderr);
                  shmpipe::remove(name_);
                  std::_Exit(70);
              }
          }) {}
    ~HangGuard() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    HangGuard(const HangGuard&) = delete;
    HangGuard& operator=(const HangGuard&) = delete;

private:
    std::string name_, what_;
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread thread_;
};

// A peer's report file: "key=value key=value ... error=<rest of line>".
struct PeerReport {
    std::map<std::string, std::string> values;
    std::string error;
    std::uint64_t number(const std::string& key) const {
        auto it = values.find(key);
        return it == values.end() ? ~std::uint64_t{0} : std::stoull(it->second);
    }
};
inline std::optional<PeerReport> read_report(const std::string& path) {
    std::ifstream f(path);
    if (!f) return std::nullopt;
    std::string line;
    std::getline(f, line);
    PeerReport r;
    const auto err = line.find(" error=");
    if (err != std::string::npos) {
        r.error = line.substr(err + 7);
        line.resize(err);
    }
    std::istringstream in(line);
    std::string token;
    while (in >> token) {
        const auto eq = token.find('=');
        if (eq != std::string::npos) r.values[token.substr(0, eq)] = token.substr(eq + 1);
    }
    return r;
}

// Where each (producer, seq) ended up across consumer logs.
struct Delivery {
    std::map<std::uint64_t, int> times;  // log entry -> how often it was received
    std::uint64_t total = 0;
    std::uint64_t duplicates() const {
        std::uint64_t d = 0;
        for (const auto& [e, n] : times) d += static_cast<std::uint64_t>(n - 1);
        return d;
    }
    // Sequences of `producer` below `count` that nobody received.
    std::vector<std::uint64_t> missing(std::uint32_t producer, std::uint64_t count) const {
        std::vector<std::uint64_t> m;
        for (std::uint64_t s = 0; s < count; ++s) {
            if (times.find(log_entry(producer, s)) == times.end()) m.push_back(s);
        }
        return m;
    }
    // Received entries of `producer` with sequence >= `limit` (never committed).
    std::uint64_t beyond(std::uint32_t producer, std::uint64_t limit) const {
        std::uint64_t n = 0;
        for (auto it = times.lower_bound(log_entry(producer, limit)); it != times.end(); ++it) {
            if (entry_producer(it->first) != producer) break;
            ++n;
        }
        return n;
    }
};
inline Delivery collect(const std::vector<std::vector<std::uint64_t>>& logs) {
    Delivery d;
    for (const auto& log : logs) {
        for (const auto e : log) {
            ++d.times[e];
            ++d.total;
        }
    }
    return d;
}
// True when, within one log, each producer's sequence numbers increase (strictly, or
// non-decreasing when a redelivered message may repeat).
inline bool per_producer_order(const std::vector<std::uint64_t>& log, bool allow_repeat, std::string* why = nullptr) {
    std::map<std::uint32_t, std::uint64_t> last;
    for (const auto e : log) {
        const auto p = entry_producer(e);
        const auto s = entry_seq(e);
        auto it = last.find(p);
        if (it != last.end() && (s < it->second || (s == it->second && !allow_repeat))) {
            if (why != nullptr) {
                *why = "producer " + std::to_string(p) + ": " + std::to_string(s) + " after " + std::to_string(it->second);
            }
            return false;
        }
        last[p] = s;
    }
    return true;
}

// CPU time (user + system, clock ticks) a process has used, from /proc/<pid>/stat.
inline std::optional<std::uint64_t> cpu_ticks(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    if (!std::getline(f, stat)) return std::nullopt;
    const auto close = stat.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream in(stat.substr(close + 2));
    std::string field;
    std::uint64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && (in >> field); ++i) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) stime = std::stoull(field);
    }
    return utime + stime;
}

}  // namespace shmpipe::test
