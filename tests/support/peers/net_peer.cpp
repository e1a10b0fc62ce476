// net_peer: one end of a bridged queue edge, in its own process, for the net tests.
// Never uses Catch2; reports through exit codes and a report file (--out).
//
//   net_peer receive <queue> <host> <bind> --endpoint-file F --out F [--senders N]
//                    [--dead-after MS] [--max-credit N]
//       Runs a Receiver into local queue <queue>; writes the bound endpoint to F (atomically)
//       once listening.
//   net_peer send <queue> <host> <rhost>=<address> [<rhost>=<address>...] --out F
//                 [--dead-after MS]
//       Runs a Sender from local queue <queue> to the receivers.
// Both: --edge NAME, the edge name both ends agree on (default: the local queue's name).
// Report (one line): "messages=N bytes=N resent=N lost=N in_flight=N dropped=N error=<text>".
// Exit codes: 0 success; 3 producer_died (receive) or consumer_died (send); 2 other
// shmpipe::Error; 64 usage.
#include <shmpipe/error.hpp>
#include <shmpipe/net/bridge.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {

using namespace shmpipe;

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "net_peer: usage error: " << why << "\n";
    std::_Exit(64);
}

struct Args {
    std::vector<std::string> pos;
    std::string out, endpoint_file, edge;
    std::uint32_t senders = 1;
    long dead_after_ms = 3000;
    std::size_t max_credit = 4096;
};

Args parse(int argc, char** argv) {
    Args a;
    for (int i = 2; i < argc; ++i) {
        const std::string s = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(s + " needs a value");
            return argv[++i];
        };
        if (s == "--out") a.out = value();
        else if (s == "--edge") a.edge = value();
        else if (s == "--endpoint-file") a.endpoint_file = value();
        else if (s == "--senders") a.senders = static_cast<std::uint32_t>(std::stoul(value()));
        else if (s == "--dead-after") a.dead_after_ms = std::stol(value());
        else if (s == "--max-credit") a.max_credit = std::stoul(value());
        else if (s.rfind("--", 0) == 0) usage("unknown option " + s);
        else a.pos.push_back(s);
    }
    if (a.out.empty()) usage("--out is required");
    return a;
}

void write_atomically(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp);
        f << text << "\n";
    }
    std::rename(tmp.c_str(), path.c_str());
}

void report(const Args& a, const net::BridgeCounters& c, const std::string& error) {
    write_atomically(a.out, "messages=" + std::to_string(c.messages) + " bytes=" + std::to_string(c.bytes) +
                                " resent=" + std::to_string(c.resent) + " lost=" + std::to_string(c.lost) +
                                " in_flight=" + std::to_string(c.in_flight) + " dropped=" + std::to_string(c.dropped_peers) +
                                " error=" + error);
}

net::Liveness liveness(const Args& a) {
    net::Liveness l;
    l.dead_after = std::chrono::milliseconds(a.dead_after_ms);
    l.heartbeat = std::chrono::milliseconds(a.dead_after_ms / 6 + 1);
    return l;
}

int receive(const Args& a) {
    if (a.pos.size() != 3 || a.endpoint_file.empty()) usage("receive <queue> <host> <bind> --endpoint-file F --out F");
    net::ReceiverOptions o;
    o.queue = a.pos[0];
    o.host = a.pos[1];
    o.bind = a.pos[2];
    o.edge = a.edge;
    o.expected_senders = a.senders;
    o.max_credit = a.max_credit;
    o.liveness = liveness(a);
    std::optional<net::Receiver> rx;
    try {
        rx.emplace(o);
    } catch (const Error& e) {
        report(a, {}, e.what());
        return 2;
    }
    write_atomically(a.endpoint_file, rx->endpoint());
    try {
        report(a, rx->run(), "");
        return 0;
    } catch (const Error& e) {
        std::cerr << "net_peer: " << e.what() << "\n";
        report(a, rx->counters(), e.what());
        return e.code() == errc::producer_died ? 3 : 2;
    }
}

int send(const Args& a) {
    if (a.pos.size() < 3) usage("send <queue> <host> <rhost>=<address>... --out F");
    net::SenderOptions o;
    o.queue = a.pos[0];
    o.host = a.pos[1];
    o.edge = a.edge;
    o.liveness = liveness(a);
    for (std::size_t i = 2; i < a.pos.size(); ++i) {
        const auto eq = a.pos[i].find('=');
        if (eq == std::string::npos) usage("receiver must be <host>=<address>: " + a.pos[i]);
        o.receivers.push_back({a.pos[i].substr(0, eq), a.pos[i].substr(eq + 1)});
    }
    std::optional<net::Sender> tx;
    try {
        tx.emplace(o);
        report(a, tx->run(), "");
        return 0;
    } catch (const Error& e) {
        std::cerr << "net_peer: " << e.what() << "\n";
        report(a, tx ? tx->counters() : net::BridgeCounters{}, e.what());
        return e.code() == errc::consumer_died ? 3 : 2;
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) usage("net_peer receive|send ...");
    const std::string role = argv[1];
    const Args a = parse(argc, argv);
    if (role == "receive") return receive(a);
    if (role == "send") return send(a);
    usage("unknown role " + role);
}
