// Link: launcher-to-launcher status and liveness (link.hpp). One ROUTER in, one DEALER per peer out.
#include "socket.hpp"

#include <shmpipe/error.hpp>
#include <shmpipe/net/frame.hpp>
#include <shmpipe/net/link.hpp>

#include <algorithm>
#include <cstdio>
#include <set>

namespace shmpipe::net {

const char* to_string(RunState s) noexcept {
    switch (s) {
    case RunState::running: return "running";
    case RunState::draining: return "draining";
    case RunState::stopping: return "stopping";
    case RunState::finished_ok: return "finished";
    case RunState::finished_failed: return "finished (failed)";
    }
    return "unknown";
}

bool is_finished(RunState s) noexcept { return s == RunState::finished_ok || s == RunState::finished_failed; }

namespace {

struct Peer {
    LinkPeerStatus status;
    zmq::socket_t out;
    std::uint64_t last_heard = 0;  // ns, 0: never
};

std::string seconds_text(std::uint64_t ns) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(ns) / 1e9);
    return buf;
}

}  // namespace

struct Link::Impl {
    LinkOptions opt;
    Logger log;
    std::string what;
    zmq::context_t context;
    std::unique_ptr<detail::ZapHandler> zap;
    zmq::socket_t in;
    std::vector<Peer> peers;
    std::set<std::string> banned, complained;  // routing ids
    RunState state = RunState::running;
    std::string reason;
    std::uint64_t started = 0, last_sent = 0;
    std::vector<std::byte> scratch;
    Frame frame;

    explicit Impl(LinkOptions o)
        : opt(std::move(o)), log(detail::logger_or_default(opt.log)),
          what("launcher link of host \"" + opt.host + "\""), in(context, zmq::socket_type::router) {
        in.set(zmq::sockopt::linger, 0);
        in.set(zmq::sockopt::maxmsgsize, std::int64_t{4096});  // a status frame is under 1 KiB
        if (opt.curve) {
            std::vector<std::string> allowed;
            for (const auto& p : opt.peers) allowed.push_back(p.public_key);
            detail::apply_curve(in, CurveOptions{*opt.curve, {}, allowed}, true, what);
            zap = std::make_unique<detail::ZapHandler>(context, allowed, log, what);
            in.set(zmq::sockopt::zap_domain, "shmpipe");
        }
        detail::bind_or_throw(in, opt.bind, what);
        for (const auto& p : opt.peers) {
            Peer peer{{}, zmq::socket_t(context, zmq::socket_type::dealer), 0};
            peer.status.host = p.host;
            peer.out.set(zmq::sockopt::linger, 1000);  // the last state still leaves after we are done
            peer.out.set(zmq::sockopt::sndhwm, 64);   // a dead peer holds a few heartbeats, not more
            peer.out.set(zmq::sockopt::reconnect_ivl, 100);
            // A launcher started later is heard within about a heartbeat.
            peer.out.set(zmq::sockopt::reconnect_ivl_max, static_cast<int>(std::max<std::int64_t>(100, opt.liveness.heartbeat.count())));
            if (opt.curve) detail::apply_curve(peer.out, CurveOptions{*opt.curve, p.public_key, {}}, false, what);
            try {
                peer.out.connect(p.address);
            } catch (const zmq::error_t& e) {
                throw Error(errc::invalid_argument, what + ": cannot connect to host \"" + p.host + "\" at \"" +
                                                        p.address + "\": " + e.what());
            }
            peers.push_back(std::move(peer));
        }
        started = detail::now_ns();
        send_all();
    }

    void send_all() {
        encode_status(scratch, opt.host, opt.run, static_cast<std::uint8_t>(state), reason);
        for (auto& p : peers) {
            if (p.status.dead) continue;
            (void)p.out.send(zmq::const_buffer(scratch.data(), scratch.size()), zmq::send_flags::dontwait);
        }
        last_sent = detail::now_ns();
    }

    void complain(const std::string& id, const std::string& text) {
        if (complained.size() < 4096 && complained.insert(id).second) log(what + ": " + text);
    }

    void handle(const std::string& id, std::span<const std::byte> bytes) {
        if (banned.count(id) != 0) return;
        const auto d = decode_frame(bytes, frame, 0, 0);
        if (!d.ok || frame.type != FrameType::status) {
            if (banned.size() < 4096) banned.insert(id);
            log(what + ": ignoring a peer that sent " +
                (d.ok ? "a " + std::string(to_string(frame.type)) + " frame, not a launcher status" : "a malformed frame: " + d.reason));
            return;
        }
        if (frame.run != opt.run) {
            complain(id, "ignoring host \"" + std::string(frame.host) + "\" of another run (\"" + std::string(frame.run) +
                             "\", this is \"" + opt.run + "\"; give every launcher the same --run-id)");
            return;
        }
        if (frame.state < static_cast<std::uint8_t>(RunState::running) ||
            frame.state > static_cast<std::uint8_t>(RunState::finished_failed)) {
            complain(id, "ignoring host \"" + std::string(frame.host) + "\": unknown state " + std::to_string(frame.state));
            return;
        }
        for (auto& p : peers) {
            if (p.status.host != frame.host) continue;
            if (p.status.dead) return;  // dead is final: the run is stopping already
            p.last_heard = detail::now_ns();
            const auto s = static_cast<RunState>(frame.state);
            if (s == RunState::draining && !p.status.drained) {
                p.status.drained = true;
                p.status.drain_reason = std::string(frame.reason);
            }
            if (!p.status.state || !is_finished(*p.status.state)) {  // finished is final
                p.status.state = s;
                p.status.reason = std::string(frame.reason);
            }
            return;
        }
        complain(id, "ignoring unknown host \"" + std::string(frame.host) + "\" (not a host of this spec)");
    }

    void receive(std::chrono::milliseconds wait) {
        zmq::pollitem_t item{in.handle(), 0, ZMQ_POLLIN, 0};
        try {
            if (zmq::poll(&item, 1, wait) <= 0) return;
        } catch (const zmq::error_t& e) {
            if (e.num() == EINTR) return;  // a signal (Ctrl-C): the caller's loop looks at it
            throw;
        }
        for (int k = 0; k < 256; ++k) {
            zmq::message_t id;
            if (!in.recv(id, zmq::recv_flags::dontwait)) return;
            zmq::message_t body;
            if (!id.more() || !in.recv(body, zmq::recv_flags::dontwait)) continue;
            while (body.more()) {  // a peer sending multipart frames: take the rest, ignore it
                zmq::message_t extra;
                if (!in.recv(extra, zmq::recv_flags::dontwait)) break;
                body = std::move(extra);
            }
            handle(id.to_string(), {static_cast<const std::byte*>(body.data()), body.size()});
        }
    }

    void check_liveness() {
        const std::uint64_t now = detail::now_ns();
        for (auto& p : peers) {
            if (p.status.dead) continue;
            if (p.status.state && is_finished(*p.status.state)) continue;  // may have exited
            if (p.last_heard == 0) {
                if (now - started > detail::to_ns(opt.connect_timeout)) {
                    p.status.dead = true;
                    p.status.dead_reason = "unreachable: never heard from its launcher at " + address_of(p) + " in " +
                                           seconds_text(now - started);
                }
            } else if (now - p.last_heard > detail::to_ns(opt.liveness.dead_after)) {
                p.status.dead = true;
                p.status.dead_reason = "no heartbeat for " + seconds_text(now - p.last_heard) + " (dead after " +
                                       seconds_text(detail::to_ns(opt.liveness.dead_after)) + ")";
            }
            if (p.status.dead) log(what + ": host \"" + p.status.host + "\" is dead: " + p.status.dead_reason);
        }
    }

    std::string address_of(const Peer& p) const {
        for (const auto& lp : opt.peers) {
            if (lp.host == p.status.host) return lp.address;
        }
        return {};
    }
};

Link::Link(LinkOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Link::~Link() = default;

void Link::set_state(RunState state, std::string reason) {
    Impl& l = *impl_;
    if (is_finished(l.state) || (l.state == state && l.reason == reason)) return;
    l.state = state;
    l.reason = std::move(reason);
    l.send_all();
}

RunState Link::state() const noexcept { return impl_->state; }

void Link::step(std::chrono::milliseconds max_wait) {
    Impl& l = *impl_;
    l.receive(max_wait);
    if (detail::now_ns() - l.last_sent >= detail::to_ns(l.opt.liveness.heartbeat)) l.send_all();
    l.check_liveness();
}

std::vector<LinkPeerStatus> Link::peers() const {
    std::vector<LinkPeerStatus> out;
    const std::uint64_t now = detail::now_ns();
    for (const auto& p : impl_->peers) {
        LinkPeerStatus s = p.status;
        s.last_heard_ms = p.last_heard == 0 ? 0 : (now - p.last_heard) / 1'000'000u;
        out.push_back(std::move(s));
    }
    return out;
}

}  // namespace shmpipe::net
