// Formatting shared by the inspect-queues subcommands: JSON, units, aligned tables.
#include "commands.hpp"

#include <shmpipe/detail/process_id.hpp>
#include <shmpipe/error.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <cinttypes>
#include <cstdio>
#include <sstream>

namespace inspect_queues {

namespace {

std::string fixed(double v, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

// A double rounded to `decimals` places (the figures are estimates; more digits are noise).
double rounded(double v, int decimals) {
    const double scale = std::pow(10.0, decimals);
    return std::round(v * scale) / scale;
}

}  // namespace

std::optional<RemoteSide> remote_side(const shmpipe::ObjectInfo& o) {
    using shmpipe::ObjectState;
    if (!o.is_queue || o.state == ObjectState::corrupt || o.state == ObjectState::unreadable) return std::nullopt;
    RemoteSide r;
    try {
        r.status = shmpipe::bridge_status::read(o.name);
        if (!r.status) return std::nullopt;
    } catch (const shmpipe::Error& e) {
        r.error = e.what();
    }
    return r;
}

std::string remote_summary(const RemoteSide& r) {
    if (!r.status) return "bridge: refused (`inspect-queues show` says why)";
    const auto& s = *r.status;
    std::string out = std::string("bridge ") + (s.outgoing ? "out to " : "in from ");
    for (std::size_t i = 0; i < s.peers.size(); ++i) {
        const auto& p = s.peers[i];
        out += (i == 0 ? "" : ", ") + p.host + " (" + (p.up ? "up" : "down") + ", " + std::to_string(p.in_flight) +
               " in flight)";
    }
    if (s.peers_total > s.peers.size()) out += " and " + std::to_string(s.peers_total - s.peers.size()) + " more";
    return out;
}

std::string to_json(const shmpipe::ObjectInfo& o, const Rates* rates) {
    using shmpipe::ObjectState;
    namespace json = boost::json;
    json::object j;
    j["name"] = o.name;
    j["kind"] = o.kind;
    j["state"] = std::string(shmpipe::to_string(o.state));
    const bool valid = o.state != ObjectState::corrupt && o.state != ObjectState::unreadable;
    if (!o.problem.empty()) j["problem"] = o.problem;
    if (o.is_queue && valid) {
        j["capacity"] = o.capacity;
        j["depth"] = o.depth;
        j["max_message"] = o.max_message;
        j["typed"] = o.slot_bytes != 0;  // typed fixed-slot SPSC (Queue::create<T>)
        if (o.slot_bytes != 0) j["slot_bytes"] = o.slot_bytes;
        j["bytes_used"] = o.bytes_used;
        j["fill_percent"] = rounded(o.fill * 100.0, 1);
        j["messages_in"] = o.messages_in;
        j["messages_out"] = o.messages_out;
        j["bytes_in"] = o.bytes_in;
        j["bytes_out"] = o.bytes_out;
        j["producers_waiting"] = o.producers_waiting;
        j["consumers_waiting"] = o.consumers_waiting;
        j["expected_producers"] = o.expected_producers;
        j["abandoned"] = o.abandoned;
        j["lost"] = o.lost;
    } else {
        j["capacity"] = nullptr;
        j["depth"] = nullptr;
    }
    j["sleepers"] = o.sleepers;
    j["waiters"] = o.waiters;
    j["creator"] = json::object{{"pid", o.creator_pid}, {"alive", o.creator_alive}};
    if (o.created_ns != 0) {
        const std::uint64_t now = shmpipe::detail::realtime_ns();
        j["created_ns"] = o.created_ns;
        j["age_s"] = rounded(now > o.created_ns ? static_cast<double>(now - o.created_ns) / 1e9 : 0.0, 3);
    }
    if (o.died_pid != 0) j["died_pid"] = o.died_pid;
    j["size"] = o.file_size;
    json::array eps;
    for (const auto& e : o.endpoints) {
        json::object je;
        je["pid"] = e.pid;
        je["role"] = e.role;
        je["alive"] = e.alive;
        je["state"] = e.state;
        je["index"] = e.index;
        je["messages"] = e.messages;
        je["bytes"] = e.bytes;
        je["sleeping"] = e.sleeping;
        if (e.attached_ns != 0) je["attached_ns"] = e.attached_ns;
        if (e.held_units) je["held"] = *e.held_units;
        eps.push_back(std::move(je));
    }
    j["endpoints"] = std::move(eps);
    if (o.sync) {
        const auto& s = *o.sync;
        json::object js;
        js["value_name"] = s.value_name;
        js["value"] = s.value;
        if (s.limit) js["limit"] = *s.limit;
        if (s.owner) {
            js["owner"] = *s.owner;
            js["owner_alive"] = s.owner_alive.value_or(false);
        }
        js["waiters"] = s.waiters;
        js["broken"] = s.broken;
        for (const auto& [k, v] : s.details) js[k] = v;
        j["sync"] = std::move(js);
    }
    if (const auto remote = remote_side(o)) {
        json::object jr;
        if (remote->status) {
            const auto& st = *remote->status;
            jr["object"] = st.object;
            jr["direction"] = st.outgoing ? "out" : "in";
            const std::uint64_t now = shmpipe::detail::realtime_ns();
            jr["updated_ns"] = st.updated_ns;
            jr["updated_age_s"] = rounded(now > st.updated_ns ? static_cast<double>(now - st.updated_ns) / 1e9 : 0.0, 3);
            jr["peers_total"] = st.peers_total;
            json::array peers;
            for (const auto& p : st.peers) {
                peers.push_back(json::object{{"host", p.host},
                                             {"credits", p.credits},
                                             {"in_flight", p.in_flight},
                                             {"messages", p.messages},
                                             {"bytes", p.bytes},
                                             {"resent", p.resent},
                                             {"lost", p.lost},
                                             {"last_heard_s", rounded(static_cast<double>(p.last_heard_ms) / 1000.0, 3)},
                                             {"up", p.up}});
            }
            jr["peers"] = std::move(peers);
        } else {
            jr["error"] = remote->error;
        }
        j["remote"] = std::move(jr);
    }
    if (rates != nullptr) {
        j["msgs_in_per_s"] = rounded(rates->msgs_in_per_s, 1);
        j["msgs_out_per_s"] = rounded(rates->msgs_out_per_s, 1);
        j["mb_in_per_s"] = rounded(rates->mb_in_per_s, 3);
        j["mb_out_per_s"] = rounded(rates->mb_out_per_s, 3);
        j["mark"] = rates->mark;
    }
    return json::serialize(j);
}

std::string to_json_array(const std::vector<shmpipe::ObjectInfo>& infos) {
    // One object per line, so `grep NAME` still finds an object's whole record.
    std::string out = "[";
    for (std::size_t i = 0; i < infos.size(); ++i) out += (i == 0 ? "\n  " : ",\n  ") + to_json(infos[i]);
    out += infos.empty() ? "]" : "\n]";
    return out;
}

std::string human_bytes(std::uint64_t bytes) {
    static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        ++u;
    }
    if (u == 0) return std::to_string(bytes) + "B";
    const bool whole = v == static_cast<double>(static_cast<std::uint64_t>(v));
    return fixed(v, whole ? 0 : 1) + units[u];
}

std::string human_count(std::uint64_t n) {
    if (n < 10000) return std::to_string(n);
    static const char* const units[] = {"", "k", "M", "G", "T", "P"};
    double v = static_cast<double>(n);
    int u = 0;
    while (v >= 1000.0 && u < 5) {
        v /= 1000.0;
        ++u;
    }
    return fixed(v, v < 100 ? 1 : 0) + units[u];
}

std::string human_age(std::uint64_t since_ns) {
    const std::uint64_t now = shmpipe::detail::realtime_ns();
    if (since_ns == 0 || since_ns > now) return "-";
    const std::uint64_t s = (now - since_ns) / 1'000'000'000ull;
    if (s < 120) return std::to_string(s) + "s";
    if (s < 7200) return std::to_string(s / 60) + "m";
    if (s < 172800) return std::to_string(s / 3600) + "h";
    return std::to_string(s / 86400) + "d";
}

std::string percent(double fraction) { return fixed(fraction * 100.0, 1) + "%"; }

std::string endpoints_summary(const shmpipe::ObjectInfo& o) {
    std::string out;
    for (const auto& e : o.endpoints) {
        if (e.state == "closed") continue;  // detached cleanly: `show` lists them
        if (!out.empty()) out += ", ";
        out += e.role + " " + std::to_string(e.pid);
        if (e.state == "dead" || !e.alive) {
            out += " (dead)";
        } else if (e.sleeping) {
            out += " (asleep)";
        }
    }
    return out.empty() ? "-" : out;
}

void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows,
                 const std::vector<bool>& right) {
    std::vector<std::size_t> width;
    for (const auto& row : rows) {
        if (width.size() < row.size()) width.resize(row.size(), 0);
        for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    }
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            const bool last = i + 1 == row.size();
            const std::size_t pad = width[i] - row[i].size();
            const bool r = i < right.size() && right[i];
            if (r) line.append(pad, ' ');
            line += row[i];
            if (!r && !last) line.append(pad, ' ');
            if (!last) line += "  ";
        }
        out << line << '\n';
    }
}

std::vector<std::string> list_header() {
    return {"NAME", "KIND", "STATE", "CAPACITY", "DEPTH", "FILL", "IN", "OUT", "SLEEP", "AGE", "ENDPOINTS / PROBLEM"};
}

std::vector<bool> list_alignment() { return {false, false, false, true, true, true, true, true, true, true, false}; }

std::vector<std::string> list_row(const shmpipe::ObjectInfo& o) {
    using shmpipe::ObjectState;
    const bool valid = o.state != ObjectState::corrupt && o.state != ObjectState::unreadable;
    std::vector<std::string> row{o.name, o.slot_bytes != 0 ? o.kind + " typed" : o.kind, shmpipe::to_string(o.state)};
    if (o.is_queue && valid) {
        row.insert(row.end(), {human_bytes(o.capacity), human_count(o.depth), percent(o.fill),
                               human_count(o.messages_in), human_count(o.messages_out)});
    } else if (o.sync && valid) {
        std::string v = o.sync->value_name + "=" + std::to_string(o.sync->value);
        if (o.sync->limit) v += "/" + std::to_string(*o.sync->limit);
        row.insert(row.end(), {"-", v, "-", "-", "-"});
    } else {
        row.insert(row.end(), {"-", "-", "-", "-", "-"});
    }
    const std::uint32_t sleep = o.sync ? std::max(o.sleepers, o.sync->waiters) : o.sleepers;
    row.push_back(valid ? std::to_string(sleep) : "-");
    row.push_back(human_age(o.created_ns != 0 ? o.created_ns : o.file_mtime_ns));
    std::string last = valid ? endpoints_summary(o) : o.problem;
    if (const auto remote = remote_side(o)) last += "; " + remote_summary(*remote);
    row.push_back(std::move(last));
    return row;
}

}  // namespace inspect_queues
