// What the Sender and the Receiver share: clocks, logging, Curve set-up and the ZAP
// handler that lets a receiver refuse clients whose key it does not know.
#pragma once

#include <shmpipe/net/bridge.hpp>

#include <zmq.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace shmpipe::net::detail {

std::uint64_t now_ns() noexcept;
inline std::uint64_t to_ns(std::chrono::milliseconds d) noexcept {
    return static_cast<std::uint64_t>(d.count()) * 1'000'000u;
}
// The logger to use: the given one, or one writing to stderr.
Logger logger_or_default(Logger log);

// Binds exactly `address`; throws Error(invalid_argument) naming `what` and a hint.
void bind_or_throw(zmq::socket_t& socket, const std::string& address, const std::string& what);

// Validates Curve options for one role and applies them to `socket` (server: receiver).
void apply_curve(zmq::socket_t& socket, const CurveOptions& curve, bool server, const std::string& what);

// Answers ZAP requests for `context` (inproc://zeromq.zap.01) on its own thread: a CURVE
// client is accepted when its public key is in `allowed` (Z85). Refusals are logged.
class ZapHandler {
public:
    ZapHandler(zmq::context_t& context, const std::vector<std::string>& allowed, Logger log, std::string what);
    ~ZapHandler();
    ZapHandler(const ZapHandler&) = delete;
    ZapHandler& operator=(const ZapHandler&) = delete;

private:
    void serve();
    zmq::socket_t socket_;
    std::vector<std::string> allowed_;  // 32-byte binary keys
    Logger log_;
    std::string what_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// What a bridge shows other threads: a counters snapshot (refreshed at most every 10 ms
// unless forced) and the stop request.
class Published {
public:
    // True when a new snapshot is due; then the caller builds one and calls set().
    bool due(std::uint64_t now_ns, bool force) noexcept {
        if (!force && now_ns - last_ < 10'000'000u) return false;
        last_ = now_ns;
        return true;
    }
    void set(BridgeCounters c) {
        std::lock_guard lock(mutex_);
        snapshot_ = std::move(c);
    }
    BridgeCounters get() const {
        std::lock_guard lock(mutex_);
        return snapshot_;
    }
    void request_stop() noexcept { stop_.store(true, std::memory_order_relaxed); }  // only a flag: no ordering
    bool stop_requested() const noexcept { return stop_.load(std::memory_order_relaxed); }

private:
    mutable std::mutex mutex_;
    BridgeCounters snapshot_;
    std::atomic<bool> stop_{false};
    std::uint64_t last_ = 0;  // owner thread only
};

// Adds one peer to the totals of `c` and to its list.
void add_peer(BridgeCounters& c, const PeerCounters& p);

// Largest payload a data frame carries unless a single message is larger.
inline constexpr std::size_t kMaxBatchPayload = std::size_t{256} << 10;

}  // namespace shmpipe::net::detail
