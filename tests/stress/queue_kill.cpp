// Kill stress with real processes: producers and consumers (queue_peer) are SIGKILLed at
// random moments, again and again, and replaced. At the end we prove:
//   - no hang: every phase has a deadline, every consumer sees the end of stream;
//   - no loss: every message a producer committed (its SharedLog, written after each
//     commit) was received, except the documented MPMC case: a dead consumer's in-flight
//     message (at most one per consumer kill);
//   - no duplicate: MPMC never; SPSC only a dead consumer's in-flight message, redelivered
//     to its replacement (at most one per consumer kill);
//   - nothing half-written: consumers check every message's content (exit 6 otherwise);
//   - per-producer order within each consumer.
// The SPSC case runs on the byte ring and on a typed fixed-slot queue (Queue::create<T>).
// SHMPIPE_STRESS_SCALE (default 1) multiplies the number of rounds. The seed is printed;
// SHMPIPE_STRESS_SEED replays a run.
#include "queue_catch.hpp"
#include "queue_testing.hpp"
#include "test_catch.hpp"
#include "test_support.hpp"

#include <shmpipe/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace shmpipe;
using namespace std::chrono_literals;

namespace {

std::uint64_t env_number(const char* var, std::uint64_t fallback) {
    const char* s = std::getenv(var);
    return s != nullptr && std::atoll(s) > 0 ? static_cast<std::uint64_t>(std::atoll(s)) : fallback;
}

struct Params {
    const char* label;
    bool spsc;
    int producers_at_once, consumers_at_once;
    std::uint32_t incarnations;  // producer processes over the whole run
    std::uint64_t per_producer;
    std::size_t capacity, max_message;
    bool typed = false;  // SPSC only: Queue::create<TypedMessage>, peers with --typed (fixed slots)
};

struct Running {
    test::Peer peer;
    std::uint32_t id;  // producer id, or consumer log index
    bool killed = false;
};

struct Outcome {
    std::vector<std::uint32_t> producer_ids;
    std::vector<std::uint64_t> committed;  // per producer id (index = id - 1)
    std::vector<std::vector<std::uint64_t>> consumer_logs;
    std::uint64_t producer_kills = 0, consumer_kills = 0;
    std::vector<std::string> failures;  // unexpected exit codes, with context
    std::vector<std::string> kill_notes;
};

Outcome run(const Params& p, const std::string& name, const test::TempDir& dir, std::mt19937_64& rng) {
    Outcome out;
    QueueOptions o;
    o.producers = o.consumers = p.spsc ? Endpoints::one : Endpoints::many;
    o.capacity = p.capacity;
    o.max_message = p.max_message;
    // SPSC: the end comes after every incarnation (closed or dead); producers are killed
    // only once attached, so each one counts. MPMC: an anchor producer of ours stays
    // attached until the end, so producers may be killed at any moment, even mid-attach;
    // then the queue is sealed and the anchor closes.
    if (p.spsc) o.expected_producers = p.incarnations;
    auto q = p.typed ? Queue::create<test::TypedMessage>(name, o) : Queue::create(name, o);
    std::optional<Producer<>> anchor;
    if (!p.spsc) anchor.emplace(name);

    std::vector<Running> producers, consumers;
    std::uint32_t spawned = 0, consumer_logs = 0;
    const std::string size = "var:" + std::to_string(p.max_message);
    auto spawn_consumer = [&] {
        const std::string log = dir.file("c" + std::to_string(consumer_logs));
        test::SharedLog::create(log);
        std::vector<std::string> args{"consume", name, "--peek", "--tolerate-deaths", "--log", log,
                                      "--out", log + ".report"};
        if (p.spsc) args.push_back("--allow-redelivery");
        if (p.typed) args.push_back("--typed");
        consumers.push_back(Running{test::spawn_queue_peer(args), consumer_logs++});
    };
    auto finish_producer = [&](Running& r, int code) {
        // 0: done; 3: consumer_died (every consumer was dead for a second while it waited).
        if (!(code == 0 || code == 3 || (r.killed && code == -SIGKILL))) {
            out.failures.push_back("producer " + std::to_string(r.id) + " exited with " + std::to_string(code));
        }
    };

    const auto deadline = std::chrono::steady_clock::now() + 240s;
    while (spawned < p.incarnations || !producers.empty()) {
        if (std::chrono::steady_clock::now() > deadline) {
            out.failures.push_back("the kill loop did not finish within 240 s (" + std::to_string(spawned) +
                                   " producers spawned, " + std::to_string(producers.size()) + " running)");
            break;
        }
        for (auto it = producers.begin(); it != producers.end();) {
            if (auto code = it->peer.wait_for(0ms)) {
                finish_producer(*it, *code);
                it = producers.erase(it);
            } else {
                ++it;
            }
        }
        for (auto it = consumers.begin(); it != consumers.end();) {
            if (auto code = it->peer.wait_for(0ms)) {
                const bool at_end = *code == 0 && q.stats().ended;  // the last producer just closed
                if (!(it->killed && *code == -SIGKILL) && !at_end) {
                    const auto st = q.stats();
                    out.failures.push_back("consumer " + std::to_string(it->id) + " exited early with " +
                                           std::to_string(*code) + " after " + std::to_string(spawned) +
                                           " producers were spawned; producers closed " +
                                           std::to_string(st.producers_closed) + ", dead " +
                                           std::to_string(st.producers_dead) + ", live " +
                                           std::to_string(st.producers));
                }
                it = consumers.erase(it);
            } else {
                ++it;
            }
        }
        while (static_cast<int>(consumers.size()) < p.consumers_at_once && !q.stats().ended) spawn_consumer();
        while (static_cast<int>(producers.size()) < p.producers_at_once && spawned < p.incarnations) {
            const std::uint32_t id = ++spawned;
            const std::string log = dir.file("p" + std::to_string(id));
            test::SharedLog::create(log);
            std::vector<std::string> args{"produce", name, std::to_string(id), std::to_string(p.per_producer), size, "--log", log};
            if (p.typed) args.push_back("--typed");
            producers.push_back(Running{test::spawn_queue_peer(args), id});
            out.producer_ids.push_back(id);
            if (p.spsc) {
                auto& r = producers.back();
                if (!test::wait_until([&] { return q.stats().producers == 1 || !r.peer.running(); }, 10s)) {
                    out.failures.push_back("producer " + std::to_string(id) + " did not attach within 10 s");
                }
            }
        }
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 8000));
        const auto action = rng() % 10;
        if (action < 3 && !producers.empty()) {
            auto& victim = producers[rng() % producers.size()];
            if (victim.peer.running()) {
                victim.peer.signal(SIGKILL);
                victim.killed = true;
                victim.peer.wait_for(5s);
                ++out.producer_kills;
                out.kill_notes.push_back("producer " + std::to_string(victim.id) + " killed after committing " +
                                         std::to_string(test::SharedLog::open(dir.file("p" + std::to_string(victim.id))).size()) +
                                         " of " + std::to_string(p.per_producer));
            }
        } else if (action < 5 && !consumers.empty()) {
            auto& victim = consumers[rng() % consumers.size()];
            if (victim.peer.running()) {
                victim.peer.signal(SIGKILL);
                victim.killed = true;
                victim.peer.wait_for(5s);
                ++out.consumer_kills;
            }
        }
    }
    if (anchor) {
        q.seal();  // every producer came: with the anchor's close the stream ends
        anchor->close();
    }
    std::erase_if(consumers, [](const Running& c) { return c.killed; });
    if (consumers.empty()) spawn_consumer();
    for (auto& c : consumers) {
        const auto code = c.peer.wait_for(20s);  // all producers are done: the end is near
        if (!code) {
            std::ostringstream s;
            const auto st = q.stats();
            s << "consumer " << c.id << " did not see the end of stream within 20 s (depth " << st.depth
              << ", producers closed " << st.producers_closed << ", dead " << st.producers_dead << ", live "
              << st.producers << ")";
            out.failures.push_back(s.str());
        } else if (*code != 0) {
            const auto r = test::read_report(dir.file("c" + std::to_string(c.id)) + ".report");
            out.failures.push_back("consumer " + std::to_string(c.id) + " exited with " + std::to_string(*code) + ": " +
                                   (r ? r->error : std::string("no report")));
        }
    }
    for (std::uint32_t id : out.producer_ids) {
        out.committed.push_back(test::SharedLog::open(dir.file("p" + std::to_string(id))).size());
    }
    for (std::uint32_t c = 0; c < consumer_logs; ++c) {
        out.consumer_logs.push_back(test::SharedLog::open(dir.file("c" + std::to_string(c))).snapshot());
    }
    return out;
}

}  // namespace

TEST_CASE("Producers and consumers SIGKILLed at random moments: no hang, no loss, no duplicate", "[stress]") {
    const std::uint64_t scale = env_number("SHMPIPE_STRESS_SCALE", 1);
    const auto p = GENERATE(Params{"SPSC", true, 1, 1, 40, 3000, 4096, 256},
                            Params{"typed SPSC", true, 1, 1, 40, 3000, 4096, 40, true},
                            Params{"MPMC 2 -> 3", false, 2, 3, 40, 3000, 32 * 64, 64});
    const std::uint64_t seed = env_number("SHMPIPE_STRESS_SEED", std::random_device{}());
    INFO(p.label << ", seed " << seed << " (SHMPIPE_STRESS_SEED replays it)");
    Params params = p;
    params.incarnations = static_cast<std::uint32_t>(p.incarnations * scale);
    const std::string name = test::unique_name("kill");
    test::ShmGuard guard{name};
    test::TempDir dir;
    std::mt19937_64 rng(seed);
    const Outcome out = run(params, name, dir, rng);
    INFO("killed " << out.producer_kills << " producers and " << out.consumer_kills << " consumers");
    std::string notes;
    for (const auto& n : out.kill_notes) notes += n + "; ";
    INFO("kills: " << notes);
    for (const auto& f : out.failures) FAIL_CHECK(f);

    const auto d = test::collect(out.consumer_logs);
    std::uint64_t committed_total = 0, missing_total = 0;
    for (std::size_t i = 0; i < out.producer_ids.size(); ++i) {
        const auto id = out.producer_ids[i];
        const auto committed = out.committed[i];
        committed_total += committed;
        const auto missing = d.missing(id, committed);
        missing_total += missing.size();
        INFO("producer " << id << " committed " << committed << ", first missing "
                         << (missing.empty() ? std::string("none") : std::to_string(missing.front())));
        if (params.spsc) CHECK(missing.empty());             // SPSC loses nothing committed
        CHECK(d.beyond(id, committed) <= 1);                  // only the one committed as it was killed
    }
    INFO("committed " << committed_total << ", received " << d.total << ", duplicates " << d.duplicates()
                      << ", missing " << missing_total);
    CHECK(committed_total > 0);
    if (params.spsc) {
        CHECK(d.duplicates() <= out.consumer_kills);  // a dead consumer's in-flight message, redelivered
    } else {
        CHECK(d.duplicates() == 0);
        CHECK(missing_total <= out.consumer_kills);  // a dead consumer's in-flight message, lost
    }
    for (const auto& log : out.consumer_logs) {
        std::string why;
        const bool ordered = test::per_producer_order(log, params.spsc, &why);
        INFO(why);
        CHECK(ordered);
    }
    test::require_gone(name);
}
