// queue_peer: the other process of the queue tests. Never uses Catch2; reports through
// exit codes, a report file (--out) and a SharedLog (--log) that survives SIGKILL.
//
//   queue_peer produce <queue> <id> <count> <size|var:max> [--log F] [--hold] [--no-close]
//                      [--reserve] [--delay-us N] [--typed]
//       Pushes messages 0..count-1 of producer <id>; after each commit appends its sequence
//       number to the log. --hold: then sleep until killed, without closing. --no-close:
//       leave with _exit(0) without closing. --reserve: reserve/commit instead of push.
//   queue_peer produce-forever <queue> <id> <size|var:max> [--log F] [--typed]
//   queue_peer consume <queue> [--log F] [--out F] [--expect N] [--peek] [--tolerate-deaths]
//                      [--allow-redelivery] [--delay-us N] [--typed]
//       Pops until the end of stream, checks every message's content and each producer's
//       order, logs each message (with --peek: logged before it is released). Report:
//       "messages=N checksum=X producer_died=K died_ns=T error=..." (died_ns: CLOCK_MONOTONIC
//       when the first producer_died was caught).
//   --typed: the endpoint is Producer<TypedMessage> / Consumer<TypedMessage> (a typed queue
//       made by Queue::create<TypedMessage>); the size argument is then ignored.
//   queue_peer peek-hold <queue> [--log F]         peek one message, log it, sleep until killed
//   queue_peer reserve-hold <queue> <size> [--log F]  reserve, half-fill, log 1, sleep until killed
//   queue_peer hold <queue> producer|consumer [--log F]  attach, log 1, sleep until killed
//   queue_peer attach <queue> producer|consumer [--out F]  attach once; report the error text
//   queue_peer push-size <queue> <size> [--fill] [--out F]  push one message of <size> bytes
//       (after filling the queue with --fill); reports elapsed_ms and the error text
//   queue_peer pop-for <queue> <ms> [--out F]      pop_for on a queue; reports elapsed_ms
//   queue_peer work <queue> [--log F] [--undone N] [--delay-us N]  a JoinableQueue worker:
//       pops until the end of stream, appends 1 to the log per message and then marks it
//       done (task_done). --undone N: after taking N messages without marking
//       them done, append N + 1000000 to the log and sleep until killed.
//
// Exit codes: 0 success; 2 other shmpipe::Error; 3 consumer_died; 4 attach failed;
// 5 producer_died (without --tolerate-deaths); 6 bad message content; 7 order violation;
// 8 count differs from --expect; 9 message_too_large; 10 + errc for `attach`; 64 usage.
#include "queue_testing.hpp"

#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/queue.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

using shmpipe::test::SharedLog;

struct Args {
    std::vector<std::string> pos;
    std::string log, out;
    bool hold = false, no_close = false, reserve = false, peek = false, tolerate_deaths = false;
    bool allow_redelivery = false, fill = false, typed = false;
    long expect = -1;
    long delay_us = 0;
    long undone = 0;
};

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "queue_peer: usage error: " << why << "\n";
    std::_Exit(64);
}

Args parse(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string s = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(s + " needs a value");
            return argv[++i];
        };
        if (s == "--log") {
            a.log = value();
        } else if (s == "--out") {
            a.out = value();
        } else if (s == "--expect") {
            a.expect = std::stol(value());
        } else if (s == "--undone") {
            a.undone = std::stol(value());
        } else if (s == "--delay-us") {
            a.delay_us = std::stol(value());
        } else if (s == "--hold") {
            a.hold = true;
        } else if (s == "--no-close") {
            a.no_close = true;
        } else if (s == "--reserve") {
            a.reserve = true;
        } else if (s == "--peek") {
            a.peek = true;
        } else if (s == "--tolerate-deaths") {
            a.tolerate_deaths = true;
        } else if (s == "--allow-redelivery") {
            a.allow_redelivery = true;
        } else if (s == "--fill") {
            a.fill = true;
        } else if (s == "--typed") {
            a.typed = true;
        } else if (s.rfind("--", 0) == 0) {
            usage("unknown option " + s);
        } else {
            a.pos.push_back(s);
        }
    }
    if (a.pos.size() < 2) usage("need <role> <queue>");
    return a;
}

void write_out(const Args& a, const std::string& text) {
    if (a.out.empty()) {
        std::cout << text << std::flush;
        return;
    }
    const std::string tmp = a.out + ".tmp";
    {
        std::ofstream f(tmp);
        f << text;
    }
    std::rename(tmp.c_str(), a.out.c_str());  // the test never reads a half-written report
}

SharedLog open_log(const Args& a) { return a.log.empty() ? SharedLog{} : SharedLog::open(a.log); }

[[noreturn]] void sleep_forever() {
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

void pause_us(long us) {
    if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
}

struct SizeSpec {
    std::size_t max = shmpipe::test::kMessageHeader;
    bool variable = false;
};
SizeSpec parse_size(const std::string& s) {
    SizeSpec spec;
    if (s.rfind("var:", 0) == 0) {
        spec.variable = true;
        spec.max = std::stoul(s.substr(4));
    } else {
        spec.max = std::stoul(s);
    }
    return spec;
}

int exit_code_for(const shmpipe::Error& e) {
    if (e.code() == shmpipe::errc::consumer_died) return 3;
    if (e.code() == shmpipe::errc::producer_died) return 5;
    if (e.code() == shmpipe::errc::message_too_large) return 9;
    return 2;
}

// Attaches endpoint E (a Producer<T> or Consumer<T>) to the queue; false (reported) when refused.
template <class E>
bool attach_endpoint(const Args& a, std::optional<E>& out) {
    try {
        out.emplace(a.pos[1]);
        return true;
    } catch (const shmpipe::Error& e) {
        std::cerr << "queue_peer: attach failed: " << e.what() << "\n";
        return false;
    }
}

// produce --typed: push (or reserve/commit) TypedMessage values.
int produce_typed(const Args& a, std::uint32_t id, std::uint64_t count, SharedLog& log) {
    std::optional<shmpipe::Producer<shmpipe::test::TypedMessage>> tx;
    if (!attach_endpoint(a, tx)) return 4;
    for (std::uint64_t seq = 0; seq < count; ++seq) {
        const auto m = shmpipe::test::make_typed_message(id, seq);
        if (a.reserve) {
            auto slot = tx->reserve(sizeof m);
            std::memcpy(slot.span().data(), &m, sizeof m);
            slot.commit();
        } else {
            tx->push(m);
        }
        if (log) log.append(seq);
        pause_us(a.delay_us);
    }
    if (a.hold) sleep_forever();
    if (a.no_close) std::_Exit(0);
    tx->close();
    return 0;
}

int produce(const Args& a, bool forever) {
    if (a.pos.size() < (forever ? 4u : 5u)) usage("produce <queue> <id> <count> <size>");
    const auto id = static_cast<std::uint32_t>(std::stoul(a.pos[2]));
    const std::uint64_t count = forever ? ~std::uint64_t{0} : std::stoull(a.pos[3]);
    const SizeSpec size = parse_size(a.pos[forever ? 3 : 4]);
    SharedLog log = open_log(a);
    if (a.typed) return produce_typed(a, id, count, log);
    std::optional<shmpipe::Producer<>> tx;
    if (!attach_endpoint(a, tx)) return 4;
    std::vector<std::byte> buf;
    for (std::uint64_t seq = 0; seq < count; ++seq) {
        const std::size_t n = shmpipe::test::message_size(id, seq, size.max, size.variable);
        if (a.reserve) {
            auto slot = tx->reserve(n);
            shmpipe::test::fill_message(slot.span(), id, seq);
            slot.commit();
        } else {
            buf.resize(n);
            shmpipe::test::fill_message(buf, id, seq);
            tx->push(std::span<const std::byte>(buf));
        }
        if (log) log.append(seq);
        pause_us(a.delay_us);
    }
    if (a.hold) sleep_forever();
    if (a.no_close) std::_Exit(0);
    tx->close();
    return 0;
}

// Pops (or peeks) until the end of stream; T: Bytes, or TypedMessage (--typed).
template <class T>
int consume_as(const Args& a) {
    SharedLog log = open_log(a);
    std::optional<shmpipe::Consumer<T>> rx;
    if (!attach_endpoint(a, rx)) return 4;
    std::map<std::uint32_t, std::uint64_t> next;  // per producer: smallest acceptable next sequence
    std::map<std::uint32_t, std::uint64_t> last;
    std::uint64_t messages = 0, checksum = 0, died = 0, died_ns = 0;
    std::string error;
    int code = 0;
    auto handle = [&](std::span<const std::byte> m) -> int {
        std::uint32_t producer = 0;
        std::uint64_t seq = 0;
        if (!shmpipe::test::parse_message(m, producer, seq)) {
            error = "bad message content (" + std::to_string(m.size()) + " bytes)";
            return 6;
        }
        auto it = next.find(producer);
        if (it != next.end()) {
            const bool redelivered = a.allow_redelivery && seq == last[producer];
            if (seq < it->second && !redelivered) {
                error = "producer " + std::to_string(producer) + ": sequence " + std::to_string(seq) +
                        " after " + std::to_string(last[producer]);
                return 7;
            }
        }
        next[producer] = seq + 1;
        last[producer] = seq;
        ++messages;
        checksum += shmpipe::test::entry_hash(shmpipe::test::log_entry(producer, seq));
        if (log) log.append(shmpipe::test::log_entry(producer, seq));
        return 0;
    };
    for (;;) {
        try {
            if (a.peek) {
                auto slot = rx->peek();
                if (!slot) break;
                code = handle(slot->span());
            } else {
                auto m = rx->pop();
                if (!m) break;
                if constexpr (std::is_same_v<T, shmpipe::test::TypedMessage>) {
                    code = handle(m->bytes);
                } else {
                    code = handle(*m);
                }
            }
            if (code != 0) break;
            pause_us(a.delay_us);
        } catch (const shmpipe::Error& e) {
            if (e.code() == shmpipe::errc::producer_died) {
                if (died++ == 0) {
                    died_ns = shmpipe::detail::monotonic_ns();
                    error = e.what();
                }
                if (a.tolerate_deaths) continue;
                code = 5;
            } else {
                error = e.what();
                code = exit_code_for(e);
            }
            break;
        }
    }
    if (code == 0 && a.expect >= 0 && messages != static_cast<std::uint64_t>(a.expect)) {
        error = "expected " + std::to_string(a.expect) + " messages, got " + std::to_string(messages);
        code = 8;
    }
    std::ostringstream report;
    report << "messages=" << messages << " checksum=" << checksum << " producer_died=" << died
           << " died_ns=" << died_ns << " ended=" << (rx->ended() ? 1 : 0) << " error=" << error << "\n";
    write_out(a, report.str());
    return code;
}

int consume(const Args& a) {
    return a.typed ? consume_as<shmpipe::test::TypedMessage>(a) : consume_as<shmpipe::Bytes>(a);
}

int peek_hold(const Args& a) {
    SharedLog log = open_log(a);
    shmpipe::Consumer<> rx(a.pos[1]);
    auto slot = rx.peek();
    if (!slot) return 8;
    std::uint32_t producer = 0;
    std::uint64_t seq = 0;
    if (!shmpipe::test::parse_message(slot->span(), producer, seq)) return 6;
    if (log) log.append(shmpipe::test::log_entry(producer, seq));
    sleep_forever();
}

int reserve_hold(const Args& a) {
    if (a.pos.size() < 3) usage("reserve-hold <queue> <size>");
    SharedLog log = open_log(a);
    shmpipe::Producer<> tx(a.pos[1]);
    auto slot = tx.reserve(std::stoul(a.pos[2]));
    auto s = slot.span();
    for (std::size_t i = 0; i < s.size() / 2; ++i) s[i] = std::byte{0xee};  // half-written
    if (log) log.append(1);
    sleep_forever();
}

int hold(const Args& a) {
    if (a.pos.size() < 3) usage("hold <queue> producer|consumer");
    SharedLog log = open_log(a);
    std::optional<shmpipe::Producer<>> tx;
    std::optional<shmpipe::Consumer<>> rx;
    if (a.pos[2] == "producer") {
        tx.emplace(a.pos[1]);
    } else {
        rx.emplace(a.pos[1]);
    }
    if (log) log.append(1);
    sleep_forever();
}

int attach(const Args& a) {
    if (a.pos.size() < 3) usage("attach <queue> producer|consumer");
    try {
        if (a.pos[2] == "producer") {
            shmpipe::Producer<> tx(a.pos[1]);
        } else {
            shmpipe::Consumer<> rx(a.pos[1]);
        }
    } catch (const shmpipe::Error& e) {
        write_out(a, std::string(e.what()) + "\n");
        return e.code().category() == shmpipe::category() ? 10 + e.code().value() : 2;
    }
    write_out(a, "attached\n");
    return 0;
}

int push_size(const Args& a) {
    if (a.pos.size() < 3) usage("push-size <queue> <size>");
    shmpipe::Producer<> tx(a.pos[1]);
    if (a.fill) {
        const auto small = shmpipe::test::make_message(0, 0, 16);
        while (tx.try_push(std::span<const std::byte>(small))) {
        }
    }
    const std::vector<std::byte> big(std::stoul(a.pos[2]), std::byte{1});
    const auto t0 = std::chrono::steady_clock::now();
    int code = 0;
    std::string what = "pushed";
    try {
        tx.push(std::span<const std::byte>(big));
    } catch (const shmpipe::Error& e) {
        what = e.what();
        code = exit_code_for(e);
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    write_out(a, "elapsed_ms=" + std::to_string(ms.count()) + " error=" + what + "\n");
    return code;
}

int pop_for(const Args& a) {
    if (a.pos.size() < 3) usage("pop-for <queue> <ms>");
    shmpipe::Consumer<> rx(a.pos[1]);
    const auto t0 = std::chrono::steady_clock::now();
    const auto m = rx.pop_for(std::chrono::milliseconds(std::stol(a.pos[2])));
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    write_out(a, "elapsed_ms=" + std::to_string(ms.count()) + " got=" + (m ? "1" : "0") +
                     " ended=" + (rx.ended() ? "1" : "0") + "\n");
    return m ? 1 : (rx.ended() ? 2 : 0);
}

int work(const Args& a) {
    SharedLog log = open_log(a);
    shmpipe::Consumer<> rx(a.pos[1]);
    long held = 0;
    while (auto m = rx.pop()) {
        pause_us(a.delay_us);
        if (a.undone > 0) {
            if (++held == a.undone) {
                if (log) log.append(static_cast<std::uint64_t>(held) + 1000000);
                sleep_forever();
            }
            continue;
        }
        if (log) log.append(1);  // before task_done: once join() returns, every message is logged
        rx.task_done();
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const Args a = parse(argc, argv);
    const std::string& role = a.pos[0];
    try {
        if (role == "produce") return produce(a, false);
        if (role == "produce-forever") return produce(a, true);
        if (role == "consume") return consume(a);
        if (role == "peek-hold") return peek_hold(a);
        if (role == "reserve-hold") return reserve_hold(a);
        if (role == "hold") return hold(a);
        if (role == "attach") return attach(a);
        if (role == "push-size") return push_size(a);
        if (role == "pop-for") return pop_for(a);
        if (role == "work") return work(a);
    } catch (const shmpipe::Error& e) {
        std::cerr << "queue_peer " << role << ": " << e.what() << "\n";
        return exit_code_for(e);
    } catch (const std::exception& e) {
        std::cerr << "queue_peer " << role << ": " << e.what() << "\n";
        return 2;
    }
    usage("unknown role " + role);
}
