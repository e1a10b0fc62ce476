// The receiving end of a bridged queue edge (bridge.hpp has the guarantees, docs/architecture.md
// the protocol). One ROUTER socket; one local Producer<> per sender.
#include "socket.hpp"

#include <shmpipe/error.hpp>
#include <shmpipe/net/frame.hpp>
#include <shmpipe/queue.hpp>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>

namespace shmpipe::net {

namespace {

struct Remote {
    std::string host;              // from hello
    std::unique_ptr<Producer<Bytes>> producer;  // not movable itself
    PeerCounters counters;
    std::uint64_t next_seq = 1, acked_seq = 0, acked_sent = 0;  // batches
    std::uint64_t received = 0, credit_limit = 0, limit_sent = 0;  // messages
    std::deque<std::pair<std::uint64_t, std::vector<std::byte>>> pending;  // (batch seq or 0, message) not yet pushed
    std::uint64_t pending_end = 0;  // seq of an end frame waiting behind `pending`
    std::uint64_t last_heard = 0, last_sent = 0;
    bool stream_failed = false;  // dropped before its end: reported once
    bool ended() const { return counters.state == PeerState::ended; }
};

}  // namespace

struct Receiver::Impl {
    ReceiverOptions opt;
    Logger log;
    std::string what;  // "bridge into queue \"q\" on host \"b\""
    Queue admin;       // stats() of the local queue: its free room sizes the credit
    std::size_t max_message;
    zmq::context_t context;
    std::unique_ptr<detail::ZapHandler> zap;
    zmq::socket_t router;
    std::string endpoint;
    std::map<std::string, Remote> remotes;  // by ZeroMQ routing id
    std::set<std::string> banned;           // routing ids dropped for malformed frames
    std::uint64_t dropped = 0, ended_count = 0;
    std::uint64_t payload_bytes = 0, payload_messages = 0;  // running mean message size, for the credit estimate
    std::vector<std::byte> scratch;
    Frame frame;
    detail::Published published;
    bool spsc;
    std::uint64_t cell_cost;  // MPMC: bytes per cell (a multiple of 64 at least max_message)
    std::uint64_t room_bytes = 0, room_read_at = 0, pushed_cost = 0;  // free_room()'s cache

    explicit Impl(ReceiverOptions o)
        : opt(std::move(o)), log(detail::logger_or_default(opt.log)),
          what("bridge into queue \"" + opt.queue + "\" on host \"" + opt.host + "\""), admin(Queue::open(opt.queue)),
          max_message(admin.max_message()), router(context, zmq::socket_type::router), spsc(admin.spsc()),
          cell_cost((max_message + 63) & ~std::uint64_t{63}) {
        if (opt.edge.empty()) opt.edge = opt.queue;
        if (opt.max_credit == 0) throw Error(errc::invalid_argument, what + ": max_credit must be at least 1");
        router.set(zmq::sockopt::linger, 500);  // the last acknowledgements still leave after run()
        router.set(zmq::sockopt::router_handover, 1);  // a sender reconnecting (same routing id) takes over
        // No high-water mark: ROUTER silently drops what passes it. Credit bounds the input,
        // and we send a sender at most one credit frame per frame it sent, plus heartbeats.
        router.set(zmq::sockopt::sndhwm, 0);
        router.set(zmq::sockopt::rcvhwm, 0);  // a sender reconnecting keeps its routing id
        // Bounds what one peer can make us allocate: a batch, or one message of max_message.
        router.set(zmq::sockopt::maxmsgsize,
                   static_cast<std::int64_t>(kDataFrameOverhead + detail::kMaxBatchPayload + max_message +
                                             kPerMessageOverhead * (opt.max_credit + 1)));
        if (opt.curve) {
            detail::apply_curve(router, *opt.curve, true, what);
            if (!opt.curve->allowed_clients.empty()) {
                zap = std::make_unique<detail::ZapHandler>(context, opt.curve->allowed_clients, log, what);
                router.set(zmq::sockopt::zap_domain, "shmpipe");
            }
        }
        detail::bind_or_throw(router, opt.bind, what);
        endpoint = router.get(zmq::sockopt::last_endpoint);
    }

    void send(const std::string& id, Remote* r, std::span<const std::byte> bytes) {
        router.send(zmq::buffer(id), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
        (void)router.send(zmq::const_buffer(bytes.data(), bytes.size()), zmq::send_flags::dontwait);
        if (r != nullptr) r->last_sent = detail::now_ns();
    }

    void drop(const std::string& id, const std::string& reason) {
        ++dropped;
        banned.insert(id);
        if (banned.size() > 4096) banned.erase(banned.begin());  // bounded: a reconnect gets a new id anyway
        auto it = remotes.find(id);
        if (it == remotes.end()) {
            log(what + ": dropped a peer before its hello: " + reason);
            return;
        }
        auto& r = it->second;
        r.counters.state = PeerState::dropped;
        r.counters.reason = reason;
        log(what + ": dropped the sender on host \"" + r.host + "\": " + reason);
        encode_refuse(scratch, reason.substr(0, 255));
        send(id, nullptr, scratch);
    }

    // Ring bytes one message of `n` bytes takes in the local queue.
    std::uint64_t ring_cost(std::uint64_t n) const {
        return spsc ? 8 + ((n + 7) & ~std::uint64_t{7}) : cell_cost;  // SPSC record header + payload; MPMC one cell
    }
    void count_push(std::size_t n) {
        pushed_cost += ring_cost(n);
    }

    // Messages the local queue has room for, less what we hold waiting for room. Queue::stats() looks at every endpoint (and /proc),
    // so it is read at most once a millisecond, or every 50 us when the queue is nearly
    // full; in between, our own pushes are subtracted from the last reading (consumers
    // only ever add room, so this errs on the safe side).
    std::uint64_t free_room() {
        const auto now = detail::now_ns();
        const bool tight = room_bytes < pushed_cost + opt.max_credit * ring_cost(max_message / 2);
        if (now - room_read_at > (tight ? 50'000u : 1'000'000u)) {  // near full: accuracy is throughput
            const auto st = admin.stats();
            room_bytes = st.capacity > st.bytes_used ? st.capacity - st.bytes_used : 0;
            pushed_cost = 0;
            room_read_at = now;
        }
        const std::uint64_t free_bytes = room_bytes > pushed_cost ? room_bytes - pushed_cost : 0;
        const std::uint64_t mean = payload_messages == 0 ? 64 : payload_bytes / payload_messages;
        std::uint64_t room = free_bytes / ring_cost(mean);
        for (const auto& [id, r] : remotes) room = room > r.pending.size() ? room - r.pending.size() : 0;
        return room;
    }

    // Grants credit and acknowledges: one credit frame per sender that has news.
    void grant() {
        std::uint64_t live = 0;
        for (const auto& [id, r] : remotes) live += r.counters.state == PeerState::live ? 1 : 0;
        live = std::max<std::uint64_t>(live, 1);
        // Each live sender may have its share of the free room outstanding. Shares are not
        // taken back: a sender that stops using its credit keeps it, so when another joins,
        // up to one share per sender more than the room can arrive; it waits in `pending`
        // (bounded by the credit given) instead of starving the newcomer.
        const std::uint64_t room = free_room();
        const std::uint64_t share = std::min<std::uint64_t>(opt.max_credit, room / live + (room % live != 0 ? 1 : 0));
        for (auto& [id, r] : remotes) {
            if (r.counters.state == PeerState::live) {
                if (share > r.credit_limit - r.received) r.credit_limit = r.received + share;
            } else if (r.counters.state != PeerState::ended) {
                continue;  // dead or dropped: nothing more to say
            }
            const bool starved = r.limit_sent == r.received;
            const bool grown = r.credit_limit >= r.limit_sent + std::max<std::uint64_t>(1, opt.max_credit / 4) ||
                               (starved && r.credit_limit > r.limit_sent);
            if (r.acked_seq != r.acked_sent || grown) {  // an ended sender still needs the ack of its end
                encode_credit(scratch, r.acked_seq, r.credit_limit);
                send(id, &r, scratch);
                r.acked_sent = r.acked_seq;
                r.limit_sent = r.credit_limit;
            }
        }
    }

    void close_stream(Remote& r) {
        r.producer->close();
        r.counters.state = PeerState::ended;
        ++ended_count;
    }

    // Pushes what waits for room; acknowledges each batch once all of it is in the queue.
    bool push_pending(Remote& r, std::chrono::milliseconds wait) {
        bool progressed = false;
        while (!r.pending.empty()) {
            auto& [seq, m] = r.pending.front();
            auto slot = wait.count() > 0 && !progressed ? r.producer->reserve_for(m.size(), wait) : r.producer->try_reserve(m.size());
            if (!slot) return progressed;
            if (!m.empty()) std::memcpy(slot->span().data(), m.data(), m.size());
            slot->commit();
            r.counters.messages += 1;
            r.counters.bytes += m.size();
            count_push(m.size());
            if (seq != 0) r.acked_seq = seq;  // the last message of a batch carries its seq
            r.pending.pop_front();
            progressed = true;
        }
        if (r.pending_end != 0) {
            r.acked_seq = r.pending_end;
            r.pending_end = 0;
            close_stream(r);
        }
        return progressed;
    }

    void on_hello(const std::string& id) {
        if (remotes.count(id) != 0) return;  // a repeated hello changes nothing
        const std::string host(frame.host);
        if (frame.queue != opt.edge) {
            encode_refuse(scratch, "this bridge carries edge \"" + opt.edge + "\", not \"" + std::string(frame.queue) + "\"");
            send(id, nullptr, scratch);
            log(what + ": refused host \"" + host + "\": it sends edge \"" + std::string(frame.queue) + "\"");
            return;
        }
        Remote r;
        r.host = host;
        r.counters.host = host;
        r.counters.state = PeerState::live;
        r.last_heard = r.last_sent = detail::now_ns();
        try {
            r.producer = std::make_unique<Producer<Bytes>>(opt.queue);
        } catch (const Error& e) {
            encode_refuse(scratch, std::string(e.what()).substr(0, 255));
            send(id, nullptr, scratch);
            log(what + ": refused host \"" + host + "\": " + e.what());
            return;
        }
        remotes.emplace(id, std::move(r));
        log(what + ": sender on host \"" + host + "\" connected");
    }

    void on_data(const std::string& id, Remote& r) {
        if (frame.seq != r.next_seq) {
            drop(id, "data batch " + std::to_string(frame.seq) + " where " + std::to_string(r.next_seq) + " was due");
            return;
        }
        if (r.received + frame.messages.size() > r.credit_limit) {
            drop(id, "sent " + std::to_string(frame.messages.size()) + " messages with " +
                         std::to_string(r.credit_limit - r.received) + " credits");
            return;
        }
        ++r.next_seq;
        r.received += frame.messages.size();
        for (auto m : frame.messages) {
            payload_bytes += m.size();
            ++payload_messages;
        }
        std::size_t i = 0;
        if (r.pending.empty()) {  // straight into the queue while it has room
            for (; i < frame.messages.size(); ++i) {
                const auto m = frame.messages[i];
                auto slot = r.producer->try_reserve(m.size());
                if (!slot) break;
                if (!m.empty()) std::memcpy(slot->span().data(), m.data(), m.size());
                slot->commit();
                r.counters.messages += 1;
                r.counters.bytes += m.size();
                count_push(m.size());
            }
            if (i == frame.messages.size()) r.acked_seq = frame.seq;
        }
        for (; i < frame.messages.size(); ++i)
            r.pending.emplace_back(i + 1 == frame.messages.size() ? frame.seq : 0,
                                   std::vector<std::byte>(frame.messages[i].begin(), frame.messages[i].end()));
    }

    void handle(const std::string& id, std::span<const std::byte> bytes) {
        if (banned.count(id) != 0) return;
        const auto d = decode_frame(bytes, frame, max_message, opt.max_credit);
        if (!d.ok) {
            drop(id, "malformed frame: " + d.reason);
            return;
        }
        auto it = remotes.find(id);
        if (frame.type == FrameType::hello) {
            on_hello(id);
            return;
        }
        if (it == remotes.end()) {
            drop(id, "sent a " + std::string(to_string(frame.type)) + " frame before its hello");
            return;
        }
        auto& r = it->second;
        if (r.counters.state != PeerState::live) return;  // ended: late heartbeats are harmless
        r.last_heard = detail::now_ns();
        switch (frame.type) {
        case FrameType::data: on_data(id, r); break;
        case FrameType::end:
            if (frame.seq != r.next_seq) {
                drop(id, "end at batch " + std::to_string(frame.seq) + " where " + std::to_string(r.next_seq) + " was due");
                return;
            }
            ++r.next_seq;
            r.pending_end = frame.seq;
            push_pending(r, std::chrono::milliseconds(0));
            break;
        case FrameType::heartbeat: break;
        default: drop(id, "sent a " + std::string(to_string(frame.type)) + " frame, which only receivers send");
        }
    }

    void receive(std::chrono::milliseconds wait) {
        zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
        if (zmq::poll(&item, 1, wait) <= 0) return;
        for (int k = 0; k < 1024; ++k) {
            zmq::message_t id;
            if (!router.recv(id, zmq::recv_flags::dontwait)) return;
            std::vector<zmq::message_t> parts;
            for (bool more = id.more(); more;) {  // a DEALER sends one part; read whatever came
                zmq::message_t part;
                if (!router.recv(part, zmq::recv_flags::none)) break;
                more = part.more();
                parts.push_back(std::move(part));
            }
            const std::string rid = id.to_string();
            if (parts.size() != 1) {
                drop(rid, std::to_string(parts.size()) + "-part message (a bridge frame is one part)");
                continue;
            }
            handle(rid, {static_cast<const std::byte*>(parts[0].data()), parts[0].size()});
        }
    }

    void liveness() {
        const auto now = detail::now_ns();
        for (auto& [id, r] : remotes) {
            if (r.counters.state == PeerState::dropped && !r.stream_failed) {
                r.stream_failed = true;  // its stream can no longer end: as if it had died
                admin.mark_broken();
                publish(true);
                throw Error(errc::producer_died, what + ": producer died: the sender on host \"" + r.host + "\" was dropped (" +
                                                     r.counters.reason + ") before its end of stream; queue \"" + opt.queue +
                                                     "\" marked broken");
            }
            if (r.counters.state != PeerState::live) continue;
            if (now - r.last_heard > detail::to_ns(opt.liveness.dead_after)) {
                r.counters.state = PeerState::dead;
                r.counters.reason = "went silent for " + std::to_string(opt.liveness.dead_after.count()) + " ms";
                admin.mark_broken();
                publish(true);
                throw Error(errc::producer_died, what + ": producer died: the sender on host \"" + r.host + "\" " +
                                                     r.counters.reason + " before its end of stream (host down or unreachable?); queue \"" +
                                                     opt.queue + "\" marked broken");
            }
            if (now - r.last_sent > detail::to_ns(opt.liveness.heartbeat)) {
                encode_heartbeat(scratch);
                send(id, &r, scratch);
            }
        }
    }

    void publish(bool force) {
        const auto now = detail::now_ns();
        if (!published.due(now, force)) return;
        BridgeCounters c;
        c.queue = opt.queue;
        c.dropped_peers = dropped;
        for (auto& [id, r] : remotes) {
            r.counters.credits = r.credit_limit - r.received;
            r.counters.in_flight = r.pending.size();
            r.counters.last_heard_ms = (now - r.last_heard) / 1'000'000u;
            detail::add_peer(c, r.counters);
        }
        published.set(std::move(c));
    }

    bool done() const {
        return opt.expected_senders != 0 && ended_count >= opt.expected_senders;
    }

    bool step(std::chrono::milliseconds max_wait) {
        if (done()) return true;
        if (published.stop_requested()) {
            publish(true);
            throw Error(errc::cancelled, what + ": stopped with " + std::to_string(ended_count) + " of " +
                                             std::to_string(opt.expected_senders) + " senders ended");
        }
        Remote* blocked = nullptr;  // a sender whose messages wait for room in the queue
        for (auto& [id, r] : remotes)
            if (r.counters.state == PeerState::live) {
                push_pending(r, std::chrono::milliseconds(0));
                if (!r.pending.empty()) blocked = &r;
            }
        bool starved = false;  // a sender waits for credit, i.e. for room our consumers free silently
        for (const auto& [id, r] : remotes) starved = starved || (r.counters.state == PeerState::live && r.credit_limit == r.received);
        if (blocked != nullptr) {
            // Sleep on the queue itself (woken as soon as a consumer frees room), briefly,
            // then look at the socket without waiting.
            push_pending(*blocked, std::chrono::milliseconds(1));
            receive(std::chrono::milliseconds(0));
        } else {
            receive(starved ? std::chrono::milliseconds(1) : std::min(max_wait, opt.liveness.heartbeat / 2));
        }
        grant();
        liveness();
        publish(done());
        return done();
    }
};

Receiver::Receiver(ReceiverOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Receiver::~Receiver() = default;

const std::string& Receiver::endpoint() const noexcept { return impl_->endpoint; }

BridgeCounters Receiver::run() {
    while (!impl_->step(std::chrono::milliseconds(100))) {
    }
    return counters();
}

bool Receiver::step(std::chrono::milliseconds max_wait) { return impl_->step(max_wait); }

BridgeCounters Receiver::counters() const { return impl_->published.get(); }
void Receiver::request_stop() noexcept { impl_->published.request_stop(); }

}  // namespace shmpipe::net
