// inspect-queues show NAME: everything about one object, including per-endpoint counters
// and, for synchronisation objects, value/owner/waiters.
#include "commands.hpp"

#include <shmpipe/error.hpp>
#include <shmpipe/object.hpp>

#include <cstdio>
#include <ctime>
#include <iostream>

namespace inspect_queues {
namespace {

std::string wall_time(std::uint64_t ns) {
    if (ns == 0) return "-";
    const std::time_t t = static_cast<std::time_t>(ns / 1'000'000'000ull);
    std::tm tm{};
    ::localtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

std::string octal(std::uint32_t mode) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0%03o", mode & 0777u);
    return buf;
}

}  // namespace

int run_show(const ShowOptions& options) {
    try {
        shmpipe::validate_name(options.name, "object");
    } catch (const shmpipe::Error& e) {
        throw UsageError(e.what());
    }
    shmpipe::InspectOptions io;
    io.catch_sigbus = true;
    const auto found = shmpipe::inspect_object(options.name, io);
    if (!found) {
        throw shmpipe::Error(shmpipe::errc::not_found,
                             "show object \"" + options.name + "\": shared memory \"" +
                                 shmpipe::segment_name(options.name) +
                                 "\" does not exist (`inspect-queues` lists what exists)");
    }
    const auto& o = *found;
    // A bridged queue whose status record is refused: shown, and the exit code says so.
    const auto remote = remote_side(o);
    const int code = remote && !remote->status ? shmpipe::cli::kExitFailure : shmpipe::cli::kExitOk;
    if (options.json) {
        std::cout << to_json(o) << '\n';
        if (code != 0) shmpipe::cli::print_error("inspect-queues", remote->error);
        return code;
    }
    using shmpipe::ObjectState;
    std::vector<std::vector<std::string>> kv;
    kv.push_back({"name:", o.name});
    kv.push_back({"kind:", o.kind});
    kv.push_back({"state:", shmpipe::to_string(o.state)});
    if (!o.problem.empty()) kv.push_back({"problem:", o.problem});
    kv.push_back({"size:", human_bytes(o.file_size) + " (" + std::to_string(o.file_size) + " bytes)"});
    const bool valid = o.state != ObjectState::corrupt && o.state != ObjectState::unreadable;
    if (o.creator_pid != 0) {
        kv.push_back({"creator:", "pid " + std::to_string(o.creator_pid) + (o.creator_alive ? " (alive)" : " (dead)")});
    }
    if (o.created_ns != 0) kv.push_back({"created:", wall_time(o.created_ns) + " (" + human_age(o.created_ns) + " ago)"});
    if (valid) {
        kv.push_back({"permissions:", octal(o.permissions)});
        std::string flags;
        if ((o.state_bits & 1u) != 0) flags += " closed";
        if ((o.state_bits & 2u) != 0) flags += " broken";
        if ((o.state_bits & 4u) != 0) flags += " peer-died";
        kv.push_back({"state bits:", flags.empty() ? "none" : flags.substr(1)});
        if (o.died_pid != 0) kv.push_back({"died pid:", std::to_string(o.died_pid)});
    }
    if (o.is_queue && valid) {
        kv.push_back({"capacity:", human_bytes(o.capacity) + " (" + std::to_string(o.capacity) +
                                       " bytes), max message " + human_bytes(o.max_message)});
        if (o.slot_bytes != 0) {
            kv.push_back({"mode:", "typed fixed slots of " + std::to_string(o.slot_bytes) + " bytes, " +
                                       std::to_string(o.capacity / o.slot_bytes) + " slots (Queue::create<T>)"});
        }
        kv.push_back({"depth:", std::to_string(o.depth) + " messages, " + std::to_string(o.bytes_used) +
                                    " bytes used (" + percent(o.fill) + " full)"});
        kv.push_back({"in:", std::to_string(o.messages_in) + " messages, " + std::to_string(o.bytes_in) + " bytes"});
        kv.push_back({"out:", std::to_string(o.messages_out) + " messages, " + std::to_string(o.bytes_out) + " bytes"});
        kv.push_back({"waiting:", std::to_string(o.producers_waiting) + " producers (full), " +
                                      std::to_string(o.consumers_waiting) + " consumers (empty); " +
                                      std::to_string(o.sleepers) + " endpoints asleep"});
        if (o.expected_producers != 0) kv.push_back({"expected:", std::to_string(o.expected_producers) + " producers"});
        if (o.kind == "mpmc-queue") {
            kv.push_back({"recovered:", std::to_string(o.abandoned) + " abandoned, " + std::to_string(o.lost) + " lost"});
        }
    }
    if (o.sync && valid) {
        const auto& s = *o.sync;
        std::string v = std::to_string(s.value);
        if (s.limit) v += " of " + std::to_string(*s.limit);
        kv.push_back({s.value_name + ":", v});
        if (s.owner) {
            kv.push_back({"owner:", "tid " + std::to_string(*s.owner) + (s.owner_alive.value_or(false) ? " (alive)" : " (dead)")});
        }
        kv.push_back({"waiters:", std::to_string(s.waiters)});
        if (s.broken) kv.push_back({"broken:", o.kind == "barrier" ? "yes" : "recovered from a dead owner, not marked consistent"});
        for (const auto& [k, val] : s.details) kv.push_back({k + ":", std::to_string(val)});
    } else if (valid) {
        kv.push_back({"waiters:", std::to_string(o.waiters)});
    }
    print_table(std::cout, kv, {false, false});

    if (!o.endpoints.empty()) {
        std::cout << "\nendpoints:\n";
        std::vector<std::vector<std::string>> rows{
            {"  #", "ROLE", "PID", "STATE", "ALIVE", "MESSAGES", "BYTES", "ASLEEP", "ATTACHED"}};
        for (const auto& e : o.endpoints) {
            std::string state = e.state;
            if (e.held_units) state += " (holds " + std::to_string(*e.held_units) + ")";
            rows.push_back({"  " + std::to_string(e.index), e.role, std::to_string(e.pid), state, e.alive ? "yes" : "no",
                            std::to_string(e.messages), std::to_string(e.bytes), e.sleeping ? "yes" : "no",
                            e.attached_ns != 0 ? human_age(e.attached_ns) + " ago" : "-"});
        }
        print_table(std::cout, rows, {true, false, true, false, false, true, true, false, true});
    } else if (valid) {
        std::cout << "\nendpoints: none attached\n";
    }
    if (remote) {
        if (!remote->status) {
            std::cout << "\nremote side: refused\n";
            shmpipe::cli::print_error("inspect-queues", remote->error);
        } else {
            const auto& st = *remote->status;
            std::cout << "\nremote side (" << st.object << ", updated " << human_age(st.updated_ns) << " ago), "
                      << (st.outgoing ? "sent to:" : "received from:") << '\n';
            std::vector<std::vector<std::string>> rows{{"  HOST", "UP", "CREDITS", "IN FLIGHT", "MESSAGES", "BYTES",
                                                        "RESENT", "LOST", "LAST HEARD"}};
            for (const auto& p : st.peers) {
                char heard[32];
                std::snprintf(heard, sizeof heard, "%.1fs ago", static_cast<double>(p.last_heard_ms) / 1000.0);
                rows.push_back({"  " + p.host, p.up ? "yes" : "no", std::to_string(p.credits), std::to_string(p.in_flight),
                                std::to_string(p.messages), std::to_string(p.bytes), std::to_string(p.resent),
                                std::to_string(p.lost), heard});
            }
            print_table(std::cout, rows, {false, false, true, true, true, true, true, true, true});
            if (st.peers_total > st.peers.size()) {
                std::cout << "  and " << st.peers_total - st.peers.size() << " more peers (not recorded)\n";
            }
        }
    }
    return code;
}

}  // namespace inspect_queues
