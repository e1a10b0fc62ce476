// SpecGraph: the ends of every queue, stage edges, start order, cycles, crossing edges.
#include <shmpipe/spec_graph.hpp>

#include <algorithm>
#include <functional>

namespace shmpipe {

namespace {

void add_distinct(std::vector<std::string>& v, const std::string& s) {
    if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
}

bool contains(const std::vector<std::string>& v, std::string_view s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

bool QueueEnds::crosses_hosts() const {
    for (const auto& w : writer_hosts) {
        for (const auto& r : reader_hosts) {
            if (w != r) return true;
        }
    }
    return false;
}

bool QueueEnds::written_on(std::string_view host) const { return contains(writer_hosts, host); }
bool QueueEnds::read_on(std::string_view host) const { return contains(reader_hosts, host); }

SpecGraph::SpecGraph(const PipelineSpec& spec) : spec_(&spec) {
    const std::size_t n = spec.stages.size();
    queues_.resize(spec.queues.size());
    for (std::size_t qi = 0; qi < spec.queues.size(); ++qi) queues_[qi].queue = qi;
    auto index_of = [&](const std::string& name) -> QueueEnds* {
        for (std::size_t qi = 0; qi < spec.queues.size(); ++qi) {
            if (spec.queues[qi].name == name) return &queues_[qi];
        }
        return nullptr;  // not declared: validate_spec adds it before building the graph
    };
    for (std::size_t si = 0; si < n; ++si) {
        const StageSpec& s = spec.stages[si];
        for (const auto& w : s.writes()) {
            if (QueueEnds* q = index_of(w)) {
                q->writers.push_back(si);
                q->producers += s.replicas;
                add_distinct(q->writer_hosts, s.host);
            }
        }
        for (const auto& r : s.reads()) {
            if (QueueEnds* q = index_of(r)) {
                q->readers.push_back(si);
                q->consumers += s.replicas;
                add_distinct(q->reader_hosts, s.host);
            }
        }
    }
    next_.resize(n);
    for (const auto& q : queues_) {
        for (std::size_t a : q.writers) {
            for (std::size_t b : q.readers) {
                if (std::find(next_[a].begin(), next_[a].end(), b) == next_[a].end()) next_[a].push_back(b);
            }
        }
    }
}

const QueueEnds* SpecGraph::find(std::string_view queue) const {
    for (const auto& q : queues_) {
        if (spec_->queues[q.queue].name == queue) return &q;
    }
    return nullptr;
}

std::vector<std::size_t> SpecGraph::start_order() const {
    const std::size_t n = next_.size();
    std::vector<unsigned> indegree(n, 0);
    for (const auto& targets : next_) {
        for (std::size_t b : targets) ++indegree[b];
    }
    std::vector<std::size_t> order, ready;
    for (std::size_t a = 0; a < n; ++a) {
        if (indegree[a] == 0) ready.push_back(a);
    }
    while (!ready.empty()) {
        const std::size_t a = ready.front();
        ready.erase(ready.begin());
        order.push_back(a);
        for (std::size_t b : next_[a]) {
            if (--indegree[b] == 0) ready.push_back(b);
        }
    }
    std::reverse(order.begin(), order.end());
    return order;
}

std::vector<std::size_t> SpecGraph::find_cycle() const {
    const std::size_t n = next_.size();
    std::vector<int> color(n, 0);  // 0 new, 1 on the stack, 2 done
    std::vector<std::size_t> stack, cycle;
    std::function<bool(std::size_t)> visit = [&](std::size_t a) {
        color[a] = 1;
        stack.push_back(a);
        for (std::size_t b : next_[a]) {
            if (color[b] == 1) {
                cycle.assign(std::find(stack.begin(), stack.end(), b), stack.end());
                return true;
            }
            if (color[b] == 0 && visit(b)) return true;
        }
        stack.pop_back();
        color[a] = 2;
        return false;
    };
    for (std::size_t a = 0; a < n; ++a) {
        if (color[a] == 0 && visit(a)) return cycle;
    }
    return {};
}

std::vector<const QueueEnds*> SpecGraph::crossing() const {
    std::vector<const QueueEnds*> out;
    for (const auto& q : queues_) {
        if (q.crosses_hosts()) out.push_back(&q);
    }
    return out;
}

const std::string& SpecGraph::host_of(std::size_t stage) const { return spec_->stages[stage].host; }

std::size_t SpecGraph::line_batch_bytes(const QueueEnds& q) const {
    constexpr std::size_t kLineBatch = 64 * 1024;
    if (q.writers.empty() || q.readers.empty()) return 0;
    const QueueSpec& qs = spec_->queues[q.queue];
    for (std::size_t si : q.writers) {
        const StageSpec& s = spec_->stages[si];
        if (s.stdout_queue != qs.name || s.stdout_format != StreamFormat::lines) return 0;
    }
    for (std::size_t si : q.readers) {
        const StageSpec& s = spec_->stages[si];
        if (s.stdin_queue != qs.name || s.stdin_format != StreamFormat::lines) return 0;
    }
    const std::size_t batch = std::max(qs.max_message + 1, std::min(kLineBatch, qs.capacity / 8));
    return batch <= qs.capacity / 4 ? batch : 0;  // room for a few batches in either kind of ring
}

bool SpecGraph::is_pipe_edge(const QueueEnds& q) const {
    if (line_batch_bytes(q) == 0) return false;
    // Line-batched: every writer writes it as its stdout, every reader reads it as its stdin.
    if (q.writers.size() != 1 || q.readers.size() != 1 || q.writers[0] == q.readers[0]) return false;
    for (std::size_t si : {q.writers[0], q.readers[0]}) {
        const StageSpec& s = spec_->stages[si];
        if (s.is_function || s.replicas != 1 || s.restart != RestartPolicy::never) return false;
    }
    // A pipe joins two processes of one host; a queue between hosts is bridged instead.
    return host_of(q.writers[0]) == host_of(q.readers[0]);
}

}  // namespace shmpipe
