// Prometheus text of ObjectInfo snapshots. The families, in the order they are written:
//
//   shmpipe_object_state{state}              1 for the object's state, 0 for the other five
//   shmpipe_object_endpoints{role,status}    endpoints not closed, by role, alive or dead
//   shmpipe_object_sleepers                  live endpoints blocked in a futex wait
//   shmpipe_queue_capacity_bytes, _max_message_bytes, _depth_messages, _used_bytes,
//   shmpipe_queue_fill_ratio, _expected_producers, _producers_waiting, _consumers_waiting
//   shmpipe_queue_messages_in_total, _messages_out_total, _bytes_in_total, _bytes_out_total
//   shmpipe_queue_lost_messages_total, _abandoned_messages_total
//   shmpipe_sync_value{value}, shmpipe_sync_waiters
//
// Queue families cover queues that passed validation only; a corrupt or unreadable object has
// only its state.
#include "metrics_text.hpp"

#include <shmpipe/detail/run_names.hpp>
#include <shmpipe/version.hpp>

#include <array>
#include <cmath>
#include <cstdio>
#include <functional>

namespace shmpipe::metrics {

namespace {

std::string number_text(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    // Integral values (counters up to 2^53) print exactly, without an exponent.
    if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.0f", v);
        return buf;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
}

bool valid(const ObjectInfo& o) noexcept {
    return o.state != ObjectState::corrupt && o.state != ObjectState::unreadable;
}

constexpr std::array kStates{ObjectState::open,  ObjectState::closed,  ObjectState::broken,
                             ObjectState::stale, ObjectState::corrupt, ObjectState::unreadable};

struct QueueFamily {
    const char* name;
    const char* type;
    const char* help;
    std::function<double(const ObjectInfo&)> value;
};

template <class T>
double d(T v) {
    return static_cast<double>(v);
}

const std::vector<QueueFamily>& queue_families() {
    static const std::vector<QueueFamily> families{
        {"shmpipe_queue_capacity_bytes", "gauge", "Bytes of message storage.", [](const ObjectInfo& o) { return d(o.capacity); }},
        {"shmpipe_queue_max_message_bytes", "gauge", "Largest message the queue takes, in bytes.",
         [](const ObjectInfo& o) { return d(o.max_message); }},
        {"shmpipe_queue_depth_messages", "gauge", "Messages waiting in the queue.", [](const ObjectInfo& o) { return d(o.depth); }},
        {"shmpipe_queue_used_bytes", "gauge", "Ring bytes in use (SPSC with record headers, MPMC whole cells).",
         [](const ObjectInfo& o) { return d(o.bytes_used); }},
        {"shmpipe_queue_fill_ratio", "gauge", "Used bytes over capacity, 0 to 1.", [](const ObjectInfo& o) { return o.fill; }},
        {"shmpipe_queue_expected_producers", "gauge", "Producer closes the end of stream waits for (0: any).",
         [](const ObjectInfo& o) { return d(o.expected_producers); }},
        {"shmpipe_queue_producers_waiting", "gauge", "Producers blocked on a full queue.",
         [](const ObjectInfo& o) { return d(o.producers_waiting); }},
        {"shmpipe_queue_consumers_waiting", "gauge", "Consumers blocked on an empty queue.",
         [](const ObjectInfo& o) { return d(o.consumers_waiting); }},
        {"shmpipe_queue_messages_in_total", "counter", "Messages pushed (published by producers in batches).",
         [](const ObjectInfo& o) { return d(o.messages_in); }},
        {"shmpipe_queue_messages_out_total", "counter", "Messages popped (published by consumers in batches).",
         [](const ObjectInfo& o) { return d(o.messages_out); }},
        {"shmpipe_queue_bytes_in_total", "counter", "Payload bytes pushed.", [](const ObjectInfo& o) { return d(o.bytes_in); }},
        {"shmpipe_queue_bytes_out_total", "counter", "Payload bytes popped.", [](const ObjectInfo& o) { return d(o.bytes_out); }},
        {"shmpipe_queue_lost_messages_total", "counter", "Messages lost with a consumer that died holding them (MPMC).",
         [](const ObjectInfo& o) { return d(o.lost); }},
        {"shmpipe_queue_abandoned_messages_total", "counter",
         "Cells a producer claimed and died before writing, skipped by consumers (MPMC).",
         [](const ObjectInfo& o) { return d(o.abandoned); }},
    };
    return families;
}

Labels with(Labels labels, std::string key, std::string value) {
    labels.emplace_back(std::move(key), std::move(value));
    return labels;
}

}  // namespace

void TextWriter::family(std::string_view name, std::string_view type, std::string_view help) {
    out_.append("# HELP ").append(name).append(1, ' ');
    for (const char c : help) {  // HELP text escapes backslash and newline
        if (c == '\\') {
            out_ += "\\\\";
        } else if (c == '\n') {
            out_ += "\\n";
        } else {
            out_ += c;
        }
    }
    out_.append("\n# TYPE ").append(name).append(1, ' ').append(type).append(1, '\n');
}

void TextWriter::sample(std::string_view name, const Labels& labels, double value) {
    out_.append(name);
    if (!labels.empty()) {
        out_ += '{';
        for (std::size_t i = 0; i < labels.size(); ++i) {
            if (i != 0) out_ += ',';
            out_.append(labels[i].first).append("=\"").append(escape_label_value(labels[i].second)).append(1, '"');
        }
        out_ += '}';
    }
    out_.append(1, ' ').append(number_text(value)).append(1, '\n');
}

std::string escape_label_value(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (const char c : value) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

bool endpoint_dead(const EndpointInfo& e) noexcept {
    if (e.state == "closed") return false;
    return e.state == "dead" || !e.alive;
}

Labels object_labels(const ObjectInfo& info, std::string_view pipeline) {
    std::string p(pipeline);
    if (p.empty()) {
        if (const auto parts = detail::split_run_object_name(info.name)) p = parts->pipeline;
    }
    return {{"queue", info.name}, {"pipeline", p}, {"kind", info.kind}};
}

void write_objects(TextWriter& out, const std::vector<ObjectInfo>& infos, const std::vector<std::string>& pipelines) {
    std::vector<Labels> labels;
    labels.reserve(infos.size());
    for (std::size_t i = 0; i < infos.size(); ++i) {
        labels.push_back(object_labels(infos[i], i < pipelines.size() ? pipelines[i] : std::string_view{}));
    }

    out.family("shmpipe_object_state", "gauge",
               "1 for the object's state (open, closed, broken, stale, corrupt, unreadable), 0 for the others.");
    for (std::size_t i = 0; i < infos.size(); ++i) {
        for (const auto s : kStates) {
            out.sample("shmpipe_object_state", with(labels[i], "state", to_string(s)), infos[i].state == s ? 1 : 0);
        }
    }

    out.family("shmpipe_object_endpoints", "gauge",
               "Endpoints attached and not closed, by role, alive or dead (gone without closing).");
    for (std::size_t i = 0; i < infos.size(); ++i) {
        const auto& o = infos[i];
        if (!valid(o)) continue;
        const std::vector<std::string> roles =
            o.is_queue ? std::vector<std::string>{"producer", "consumer"} : std::vector<std::string>{"user"};
        for (const auto& role : roles) {
            unsigned alive = 0, dead = 0;
            for (const auto& e : o.endpoints) {
                if (e.role != role || e.state == "closed") continue;
                (endpoint_dead(e) ? dead : alive) += 1;
            }
            const Labels l = with(labels[i], "role", role);
            out.sample("shmpipe_object_endpoints", with(l, "status", "alive"), alive);
            out.sample("shmpipe_object_endpoints", with(l, "status", "dead"), dead);
        }
    }

    out.family("shmpipe_object_sleepers", "gauge", "Live endpoints blocked in a futex wait.");
    for (std::size_t i = 0; i < infos.size(); ++i) {
        if (valid(infos[i])) out.sample("shmpipe_object_sleepers", labels[i], infos[i].sleepers);
    }

    for (const auto& f : queue_families()) {
        out.family(f.name, f.type, f.help);
        for (std::size_t i = 0; i < infos.size(); ++i) {
            if (infos[i].is_queue && valid(infos[i])) out.sample(f.name, labels[i], f.value(infos[i]));
        }
    }

    out.family("shmpipe_sync_value", "gauge",
               "The value of a synchronisation object; the value label names it (count, locked, set, arrived, ...).");
    for (std::size_t i = 0; i < infos.size(); ++i) {
        if (infos[i].sync && valid(infos[i])) {
            out.sample("shmpipe_sync_value", with(labels[i], "value", infos[i].sync->value_name), d(infos[i].sync->value));
        }
    }
    out.family("shmpipe_sync_waiters", "gauge", "Processes waiting on a synchronisation object.");
    for (std::size_t i = 0; i < infos.size(); ++i) {
        if (infos[i].sync && valid(infos[i])) out.sample("shmpipe_sync_waiters", labels[i], infos[i].sync->waiters);
    }
}

void write_build_info(TextWriter& out, std::string_view tool) {
    out.family("shmpipe_build_info", "gauge", "Always 1; the labels name the exporting tool and shmpipe's version.");
    out.sample("shmpipe_build_info", {{"tool", std::string(tool)}, {"version", SHMPIPE_VERSION_STRING}}, 1);
}

}  // namespace shmpipe::metrics
