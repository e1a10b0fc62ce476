#include "socket.hpp"

#include <shmpipe/error.hpp>

#include <iostream>
#include <time.h>

namespace shmpipe::net {

bool curve_available() noexcept { return zmq_has("curve") != 0; }

CurveKeyPair make_curve_keypair() {
    if (!curve_available())
        throw Error(errc::invalid_argument, "make Curve key pair: this libzmq has no CurveZMQ (zmq_has(\"curve\") is false)");
    char pub[41] = {};
    char sec[41] = {};
    if (zmq_curve_keypair(pub, sec) != 0) throw Error::from_errno(zmq_errno(), "make Curve key pair");
    return {pub, sec};
}

const char* to_string(PeerState s) noexcept {
    switch (s) {
    case PeerState::connecting: return "connecting";
    case PeerState::live: return "live";
    case PeerState::ended: return "ended";
    case PeerState::dead: return "dead";
    case PeerState::dropped: return "dropped";
    }
    return "unknown";
}

namespace detail {

std::uint64_t now_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

void add_peer(BridgeCounters& c, const PeerCounters& p) {
    c.messages += p.messages;
    c.bytes += p.bytes;
    c.credits += p.credits;
    c.in_flight += p.in_flight;
    c.peers.push_back(p);
}

Logger logger_or_default(Logger log) {
    if (log) return log;
    return [](const std::string& line) { std::cerr << "shmpipe::net: " << line << std::endl; };
}

namespace {
std::string decode_key(const std::string& z85, const std::string& what, const char* which) {
    if (z85.size() != 40)
        throw Error(errc::invalid_argument, what + ": Curve " + which + " must be 40 Z85 characters, got " +
                                                std::to_string(z85.size()) + " (make one with make_curve_keypair)");
    std::string bin(32, '\0');
    if (zmq_z85_decode(reinterpret_cast<std::uint8_t*>(bin.data()), z85.c_str()) == nullptr)
        throw Error(errc::invalid_argument, what + ": Curve " + which + " is not valid Z85");
    return bin;
}
}  // namespace

void bind_or_throw(zmq::socket_t& socket, const std::string& address, const std::string& what) {
    try {
        socket.bind(address);
    } catch (const zmq::error_t& e) {
        throw Error(errc::invalid_argument, what + ": cannot bind \"" + address + "\": " + e.what() +
                                                " (is the address local to this host and the port free?)");
    }
}

void apply_curve(zmq::socket_t& socket, const CurveOptions& curve, bool server, const std::string& what) {
    if (!curve_available())
        throw Error(errc::invalid_argument, what + ": Curve keys given but this libzmq has no CurveZMQ");
    decode_key(curve.own.secret_key, what, "secret key");
    if (server) {
        socket.set(zmq::sockopt::curve_server, 1);
        socket.set(zmq::sockopt::curve_secretkey, curve.own.secret_key);
    } else {
        decode_key(curve.own.public_key, what, "public key");
        decode_key(curve.server_public_key, what, "server public key");
        socket.set(zmq::sockopt::curve_serverkey, curve.server_public_key);
        socket.set(zmq::sockopt::curve_publickey, curve.own.public_key);
        socket.set(zmq::sockopt::curve_secretkey, curve.own.secret_key);
    }
}

ZapHandler::ZapHandler(zmq::context_t& context, const std::vector<std::string>& allowed, Logger log, std::string what)
    : socket_(context, zmq::socket_type::rep), log_(std::move(log)), what_(std::move(what)) {
    for (const auto& k : allowed) allowed_.push_back(decode_key(k, what_, "allowed client key"));
    socket_.bind("inproc://zeromq.zap.01");
    thread_ = std::thread([this] { serve(); });
}

ZapHandler::~ZapHandler() {
    stop_.store(true, std::memory_order_relaxed);  // read by serve() at its next poll timeout
    if (thread_.joinable()) thread_.join();
}

// ZAP 1.0 (ZeroMQ RFC 27): request = version, request id, domain, address, identity,
// mechanism, credentials...; reply = version, request id, status code, status text,
// user id, metadata.
void ZapHandler::serve() {
    while (!stop_.load(std::memory_order_relaxed)) {
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) <= 0) continue;
        std::vector<zmq::message_t> req;
        while (true) {
            zmq::message_t part;
            if (!socket_.recv(part, zmq::recv_flags::none)) break;
            const bool more = part.more();
            req.push_back(std::move(part));
            if (!more) break;
        }
        bool ok = false;
        std::string address = req.size() > 3 ? req[3].to_string() : "?";
        if (req.size() >= 7 && req[5].to_string() == "CURVE" && req[6].size() == 32) {
            const std::string key = req[6].to_string();
            for (const auto& a : allowed_) ok = ok || a == key;
        }
        if (!ok) log_(what_ + ": refused a client from " + address + ": its Curve key is not among the allowed keys");
        const std::string id = req.size() > 1 ? req[1].to_string() : "";
        socket_.send(zmq::buffer(std::string("1.0")), zmq::send_flags::sndmore);
        socket_.send(zmq::buffer(id), zmq::send_flags::sndmore);
        socket_.send(zmq::buffer(std::string(ok ? "200" : "400")), zmq::send_flags::sndmore);
        socket_.send(zmq::buffer(std::string(ok ? "OK" : "key not allowed")), zmq::send_flags::sndmore);
        socket_.send(zmq::buffer(std::string()), zmq::send_flags::sndmore);
        socket_.send(zmq::buffer(std::string()), zmq::send_flags::none);
    }
}

}  // namespace detail
}  // namespace shmpipe::net
