// What the Sender and the Receiver share: clocks, logging, Curve set-up and the ZAP
// handler that lets a receiver refuse clients whose key it does not know.
#pragma once

#include <shmpipe/net/bridge.hpp>

#include <zmq.hpp>

#include <atomic>
#include <cstdint>
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

// Largest payload a data frame carries unless a single message is larger.
inline constexpr std::size_t kMaxBatchPayload = std::size_t{256} << 10;

}  // namespace shmpipe::net::detail
