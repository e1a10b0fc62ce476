// The sending end of a bridged queue edge (bridge.hpp has the guarantees, docs/architecture.md
// the protocol). One DEALER socket per receiver; batches kept until acknowledged.
#include "socket.hpp"

#include <shmpipe/error.hpp>
#include <shmpipe/net/frame.hpp>
#include <shmpipe/queue.hpp>

#include <algorithm>
#include <deque>
#include <mutex>
#include <random>

namespace shmpipe::net {

namespace {

struct Batch {
    std::uint64_t seq = 0;
    std::vector<std::byte> frame;  // the encoded data frame, re-decoded if it must be re-sent
    std::uint64_t messages = 0, bytes = 0;
};

struct Remote {
    ReceiverAddress where;
    zmq::socket_t socket;
    PeerCounters counters;
    std::uint64_t next_seq = 1, acked_seq = 0, end_seq = 0;
    std::uint64_t credit_limit = 0, sent = 0;  // messages: may send while sent < credit_limit
    std::deque<Batch> unacked;
    std::uint64_t last_heard = 0, last_sent = 0;
    bool alive() const { return counters.state == PeerState::connecting || counters.state == PeerState::live; }
    std::uint64_t credit() const { return credit_limit > sent ? credit_limit - sent : 0; }
};

}  // namespace

struct Sender::Impl {
    SenderOptions opt;
    Logger log;
    std::string what;  // "bridge of queue \"q\" from host \"a\""
    Consumer<Bytes> local;
    zmq::context_t context;
    std::vector<Remote> remotes;
    std::deque<std::vector<std::byte>> resend;  // messages of dead receivers' unacked batches
    std::size_t next_remote = 0;
    bool local_ended = false, ends_sent = false, finished = false;
    std::uint64_t resent_total = 0, lost_total = 0;
    std::vector<std::byte> scratch;
    DataFrameBuilder builder;
    std::vector<std::vector<std::byte>> spare;  // buffers of acknowledged batches
    Frame frame;
    detail::Published published;

    explicit Impl(SenderOptions o)
        : opt(std::move(o)), log(detail::logger_or_default(opt.log)),
          what("bridge of queue \"" + opt.queue + "\" from host \"" + opt.host + "\""), local(opt.queue) {
        if (opt.edge.empty()) opt.edge = opt.queue;
        if (opt.max_batch_bytes == 0 || opt.max_batch_bytes > detail::kMaxBatchPayload)
            throw Error(errc::invalid_argument, what + ": max_batch_bytes must be 1.." + std::to_string(detail::kMaxBatchPayload));
        if (opt.receivers.empty()) throw Error(errc::invalid_argument, what + ": no receiver given (at least one host reads the queue)");
        std::random_device rd;
        const std::uint64_t sender_id = (std::uint64_t{rd()} << 32) | rd();
        const auto now = detail::now_ns();
        for (const auto& r : opt.receivers) {
            Remote rem{r, zmq::socket_t(context, zmq::socket_type::dealer), {}, 1, 0, 0, 0, 0, {}, now, now};
            rem.counters.host = r.host;
            rem.counters.address = r.address;
            rem.socket.set(zmq::sockopt::linger, 0);
            // No high-water mark: a frame ZeroMQ dropped at one would leave a gap in the
            // sequence. Credit bounds what is queued instead.
            rem.socket.set(zmq::sockopt::sndhwm, 0);
            rem.socket.set(zmq::sockopt::rcvhwm, 0);
            // A routing id of our own ('s', sender id, receiver index; never a leading zero
            // byte, which ZeroMQ reserves): after a TCP reconnect the receiver still knows us.
            std::string rid(1, 's');
            for (int i = 0; i < 8; ++i) rid.push_back(static_cast<char>((sender_id >> (8 * i)) & 0xff));
            rid.push_back(static_cast<char>(remotes.size() & 0xff));
            rem.socket.set(zmq::sockopt::routing_id, zmq::buffer(rid));
            if (opt.curve) detail::apply_curve(rem.socket, *opt.curve, false, what);
            try {
                rem.socket.connect(r.address);
            } catch (const zmq::error_t& e) {
                throw Error(errc::invalid_argument, what + ": cannot connect to host \"" + r.host + "\" at \"" + r.address +
                                                        "\": " + e.what() + " (expected tcp://ADDRESS:PORT)");
            }
            encode_hello(scratch, sender_id, opt.host, opt.edge);
            rem.socket.send(zmq::buffer(scratch), zmq::send_flags::dontwait);
            remotes.push_back(std::move(rem));
        }
    }

    void send(Remote& r, std::span<const std::byte> bytes) {
        // DEALER queues up to its high-water mark; credit keeps us far below it.
        (void)r.socket.send(zmq::const_buffer(bytes.data(), bytes.size()), zmq::send_flags::dontwait);
        r.last_sent = detail::now_ns();
    }

    // The receiver `r` is dead: its unacknowledged messages go to another receiver or are lost.
    void declare_dead(Remote& r, PeerState state, const std::string& reason) {
        r.counters.state = state;
        r.counters.reason = reason;
        r.socket.close();
        std::uint64_t n = 0;
        for (auto& b : r.unacked) {
            const auto d = decode_frame(b.frame, frame, SIZE_MAX, SIZE_MAX);
            if (!d.ok) continue;  // our own encoding: cannot happen
            for (auto m : frame.messages) resend.emplace_back(m.begin(), m.end());  // kept in order
            n += frame.messages.size();
        }
        r.unacked.clear();
        const bool others = std::any_of(remotes.begin(), remotes.end(), [](const Remote& x) { return x.alive(); });
        if (!others) {  // nobody to re-send to: these are lost, and step() throws
            r.counters.lost += n;
            lost_total += n;
            resend.resize(resend.size() - n);
        }
        log(what + ": receiver on host \"" + r.where.host + "\" (" + r.where.address + ") is " + to_string(state) + ": " + reason +
            (n == 0 ? std::string() : "; " + std::to_string(n) + " unacknowledged messages " + (others ? "will be re-sent" : "are lost")));
    }

    [[noreturn]] void fail_no_receiver() {
        lost_total += resend.size();  // waiting to be re-sent when the last receiver died
        resend.clear();
        std::string hosts;
        for (const auto& r : remotes) {
            if (!hosts.empty()) hosts += "; ";
            hosts += "host \"" + r.where.host + "\" (" + r.where.address + ") " + to_string(r.counters.state) +
                     (r.counters.reason.empty() ? "" : ": " + r.counters.reason);
        }
        publish(true);
        throw Error(errc::consumer_died, what + ": no receiving host left alive (" + hosts + "); " + std::to_string(lost_total) +
                                             " messages sent but not acknowledged are lost");
    }

    void handle(Remote& r, std::span<const std::byte> bytes) {
        r.last_heard = detail::now_ns();
        const auto d = decode_frame(bytes, frame, 0, 0);
        if (!d.ok) {
            declare_dead(r, PeerState::dropped, "malformed frame: " + d.reason);
            return;
        }
        switch (frame.type) {
        case FrameType::credit: {
            if (frame.acked_seq >= r.next_seq || frame.acked_seq < r.acked_seq) {
                declare_dead(r, PeerState::dropped, "acknowledged batch " + std::to_string(frame.acked_seq) +
                                                        " outside what was sent (" + std::to_string(r.acked_seq) + ".." +
                                                        std::to_string(r.next_seq - 1) + ")");
                return;
            }
            if (r.counters.state == PeerState::connecting) r.counters.state = PeerState::live;
            r.acked_seq = frame.acked_seq;
            while (!r.unacked.empty() && r.unacked.front().seq <= r.acked_seq) {
                r.counters.messages += r.unacked.front().messages;
                r.counters.bytes += r.unacked.front().bytes;
                if (spare.size() < 16) spare.push_back(std::move(r.unacked.front().frame));
                r.unacked.pop_front();
            }
            r.credit_limit = std::max(r.credit_limit, frame.credit_limit);
            if (r.end_seq != 0 && r.acked_seq >= r.end_seq) r.counters.state = PeerState::ended;
            break;
        }
        case FrameType::heartbeat: break;
        case FrameType::refuse:
            declare_dead(r, PeerState::dead, "refused us: " + std::string(frame.reason));
            break;
        default:
            declare_dead(r, PeerState::dropped, "sent a " + std::string(to_string(frame.type)) + " frame, which only senders send");
        }
    }

    void receive_all(std::chrono::milliseconds wait) {
        std::vector<zmq::pollitem_t> items;
        std::vector<Remote*> who;
        for (auto& r : remotes)
            if (r.alive() || r.counters.state == PeerState::ended) {
                if (!r.socket) continue;
                items.push_back({r.socket.handle(), 0, ZMQ_POLLIN, 0});
                who.push_back(&r);
            }
        if (items.empty()) return;
        if (zmq::poll(items.data(), items.size(), wait) <= 0) return;
        for (std::size_t i = 0; i < items.size(); ++i) {
            if (!(items[i].revents & ZMQ_POLLIN)) continue;
            for (int k = 0; k < 256 && who[i]->socket; ++k) {
                zmq::message_t m;
                if (!who[i]->socket.recv(m, zmq::recv_flags::dontwait)) break;
                handle(*who[i], {static_cast<const std::byte*>(m.data()), m.size()});
            }
        }
    }

    // The live receiver with credit, round robin; nullptr when none has any.
    Remote* pick() {
        for (std::size_t k = 0; k < remotes.size(); ++k) {
            auto& r = remotes[(next_remote + k) % remotes.size()];
            if (r.counters.state == PeerState::live && r.credit() > 0) {
                next_remote = (next_remote + k + 1) % remotes.size();
                return &r;
            }
        }
        return nullptr;
    }

    void flush(Remote& r, std::uint64_t bytes, bool resending) {
        Batch b;
        b.seq = r.next_seq++;
        b.messages = builder.count();
        b.bytes = bytes;
        send(r, builder.finish());
        r.sent += b.messages;
        if (resending) {
            r.counters.resent += b.messages;
            resent_total += b.messages;
        }
        b.frame = std::move(builder.buffer());
        builder.buffer() = {};
        if (!spare.empty()) {  // reuse an acknowledged batch's buffer: no allocation per batch
            builder.buffer() = std::move(spare.back());
            spare.pop_back();
        }
        r.unacked.push_back(std::move(b));
    }

    // Sends what is waiting (re-sends first) against credit; true when something was sent.
    bool send_some(std::chrono::milliseconds wait) {
        bool sent_any = false;
        while (!resend.empty()) {
            Remote* r = pick();
            if (r == nullptr) return sent_any;
            builder.begin(r->next_seq);
            std::uint64_t bytes = 0;
            while (!resend.empty() && builder.count() < r->credit() && bytes < opt.max_batch_bytes) {
                builder.add(resend.front());
                bytes += resend.front().size();
                resend.pop_front();
            }
            flush(*r, bytes, true);
            sent_any = true;
        }
        if (local_ended) return sent_any;
        Remote* r = pick();
        if (r == nullptr) return sent_any;
        // Block on the local queue only for the first message: later ones join the batch
        // only if already waiting, so a lone message leaves at once.
        auto slot = sent_any ? local.try_peek() : local.peek_for(wait);
        if (!slot) {
            if (local.ended()) local_ended = true;
            return sent_any;
        }
        builder.begin(r->next_seq);
        std::uint64_t bytes = 0;
        const auto limit = std::min<std::uint64_t>(r->credit(), std::uint64_t{1} << 20);
        while (true) {  // a batch may pass max_batch_bytes by its last message, never more
            builder.add(slot->span());
            bytes += slot->span().size();
            slot.reset();  // consumed: the copy in the batch is kept until acknowledged
            if (builder.count() >= limit || bytes >= opt.max_batch_bytes) break;
            slot = local.try_peek();
            if (!slot) {
                if (local.ended()) local_ended = true;
                break;
            }
        }
        flush(*r, bytes, false);
        return true;
    }

    void heartbeats_and_deadlines() {
        const auto now = detail::now_ns();
        for (auto& r : remotes) {
            if (!r.alive()) continue;
            if (now - r.last_heard > detail::to_ns(opt.liveness.dead_after)) {
                declare_dead(r, PeerState::dead, std::string(r.counters.state == PeerState::connecting ? "never answered" : "went silent") +
                                                     " for " + std::to_string(opt.liveness.dead_after.count()) +
                                                     " ms (host down, unreachable, or a Curve key mismatch?)");
                continue;
            }
            if (now - r.last_sent > detail::to_ns(opt.liveness.heartbeat)) {
                encode_heartbeat(scratch);
                send(r, scratch);
            }
        }
    }

    void publish(bool force) {
        const auto now = detail::now_ns();
        if (!published.due(now, force)) return;
        BridgeCounters c;
        c.queue = opt.queue;
        c.resent = resent_total;
        c.lost = lost_total;
        for (auto& r : remotes) {
            r.counters.credits = r.alive() ? r.credit() : 0;
            r.counters.in_flight = 0;
            for (const auto& b : r.unacked) r.counters.in_flight += b.messages;
            r.counters.last_heard_ms = (now - r.last_heard) / 1'000'000u;
            detail::add_peer(c, r.counters);
        }
        published.set(std::move(c));
    }

    bool step(std::chrono::milliseconds max_wait) {
        if (finished) return true;
        if (published.stop_requested()) {
            // What was sent and not acknowledged, or waits to be re-sent, will not arrive through
            // this bridge any more: counted lost, never dropped silently.
            const std::uint64_t n = snapshot_in_flight() + resend.size();
            for (auto& r : remotes) {
                for (const auto& b : r.unacked) r.counters.lost += b.messages;
                r.unacked.clear();
            }
            lost_total += n;
            resend.clear();
            publish(true);
            throw Error(errc::cancelled, what + ": stopped with " + std::to_string(n) + " messages sent but not acknowledged (counted lost)");
        }
        receive_all(std::chrono::milliseconds(0));
        heartbeats_and_deadlines();
        if (std::none_of(remotes.begin(), remotes.end(), [](const Remote& r) { return r.alive(); })) {
            // Done only if everything was acknowledged before the last receiver went away.
            if (!(local_ended && ends_sent && resend.empty() && lost_total == 0)) fail_no_receiver();
            finished = true;
            publish(true);
            return true;
        }
        const bool have_credit = std::any_of(remotes.begin(), remotes.end(), [](const Remote& r) {
            return r.counters.state == PeerState::live && r.credit() > 0;
        });
        const auto wait = std::min(max_wait, opt.liveness.heartbeat / 2);
        bool progressed = false;
        if (have_credit && !(local_ended && resend.empty())) progressed = send_some(std::min(wait, std::chrono::milliseconds(1)));
        if (local_ended && resend.empty()) {
            const bool all_acked = std::all_of(remotes.begin(), remotes.end(), [](const Remote& r) { return !r.alive() || r.unacked.empty(); });
            if (all_acked && !ends_sent) {
                for (auto& r : remotes)
                    if (r.alive()) {
                        r.end_seq = r.next_seq++;
                        encode_end(scratch, r.end_seq);
                        send(r, scratch);
                    }
                ends_sent = true;
            }
            if (ends_sent && std::all_of(remotes.begin(), remotes.end(), [](const Remote& r) {
                    return r.counters.state == PeerState::ended || r.counters.state == PeerState::dead ||
                           r.counters.state == PeerState::dropped;
                })) {
                finished = true;
                publish(true);
                return true;
            }
        }
        if (!progressed) receive_all(have_credit && !local_ended ? std::chrono::milliseconds(0) : wait);
        publish(false);
        return false;
    }

    std::uint64_t snapshot_in_flight() {
        std::uint64_t n = 0;
        for (const auto& r : remotes)
            for (const auto& b : r.unacked) n += b.messages;
        return n;
    }
};

Sender::Sender(SenderOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Sender::~Sender() = default;

BridgeCounters Sender::run() {
    while (!impl_->step(std::chrono::milliseconds(100))) {
    }
    return counters();
}

bool Sender::step(std::chrono::milliseconds max_wait) { return impl_->step(max_wait); }

BridgeCounters Sender::counters() const { return impl_->published.get(); }
void Sender::request_stop() noexcept { impl_->published.request_stop(); }

}  // namespace shmpipe::net
