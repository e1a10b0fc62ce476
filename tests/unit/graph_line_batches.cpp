// Line batching between the stdout and stdin adapters: a program's lines go through a real
// queue and real pipes (adapter threads in this process) and come out byte for byte, however
// the reads cut them, with the limits and the cut last line handled as one line per message
// handled them.
#include <shmpipe/detail/graph_adapter.hpp>
#include <shmpipe/detail/sys_util.hpp>
#include <shmpipe/queue.hpp>
#include <shmpipe/spec_graph.hpp>

#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>

using namespace shmpipe;
using detail::ExitVerdict;

namespace {

struct Outcome {
    std::string out;          // what the reading program got on its stdin
    std::string error;        // the stdout adapter's error
    std::size_t dropped = 0;  // bytes of a cut last line that was dropped
    QueueStats stats;
    detail::StdinLedger ledger;
};

// A spec where stage "a" prints lines into queue "q" and stage "b" reads them.
PipelineSpec two_line_stages(std::size_t capacity, std::size_t max_message) {
    PipelineSpec spec;
    spec.queues.push_back(QueueSpec{.name = "q", .capacity = capacity, .max_message = max_message});
    spec.stages.push_back(StageSpec{.name = "a", .cmd = {"a"}, .stdout_queue = "q"});
    spec.stages.push_back(StageSpec{.name = "b", .cmd = {"b"}, .stdin_queue = "q"});
    return spec;
}

// What SpecGraph makes of the spec's first queue.
std::size_t batch_bytes(const PipelineSpec& spec) {
    const SpecGraph graph(spec);
    return graph.line_batch_bytes(graph.queues()[0]);
}
bool pipe_edge(const PipelineSpec& spec) {
    const SpecGraph graph(spec);
    return graph.is_pipe_edge(graph.queues()[0]);
}

// Writes `input` in pieces of `piece` bytes into the program side of a stdout adapter for a
// line-batched queue (one or many endpoints), and reads what the stdin adapter gives out.
Outcome through_adapters(const std::string& input, std::size_t piece, ExitVerdict verdict, Endpoints kind,
                         std::size_t line_limit = 100, std::size_t capacity = 4096) {
    const PipelineSpec spec = two_line_stages(capacity, line_limit);
    const std::size_t batch = batch_bytes(spec);
    REQUIRE(batch > line_limit);
    test::ShmGuard guard;
    const std::string& name = guard.add(test::unique_name("batch"));
    QueueOptions o;
    o.capacity = capacity;
    o.max_message = batch;
    o.producers = kind;
    o.consumers = kind;
    o.expected_producers = 1;
    auto q = Queue::create(name, o);
    Producer<> tx(name);
    Consumer<> rx(name);

    int program_out[2], program_in[2];
    REQUIRE(::pipe(program_out) == 0);
    REQUIRE(::pipe(program_in) == 0);
    Outcome r;
    detail::AdapterErrors errors;
    std::atomic<bool> abandon{false}, stop{false};
    std::atomic<int> verdict_flag{static_cast<int>(verdict)};
    std::atomic<std::size_t> dropped{0};
    bool written = true;
    std::thread program([&] {  // the printing program, in pieces (Catch2 asserts stay on the test's thread)
        for (std::size_t at = 0; at < input.size() && written; at += piece) {
            written = detail::write_all(program_out[1], input.data() + at, std::min(piece, input.size() - at));
        }
        ::close(program_out[1]);
    });
    std::thread out_adapter([&] {
        detail::pump_stdout(program_out[0], tx, StreamFormat::lines, line_limit, errors, abandon, verdict_flag, dropped);
        tx.close();  // what the supervisor does once the process is gone
    });
    std::thread in_adapter(
        [&] { detail::pump_stdin(program_in[1], rx, StreamFormat::lines, true, stop, {}, r.ledger); });
    char buf[4096];
    ssize_t n;
    while ((n = ::read(program_in[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<std::size_t>(n));
    ::close(program_in[0]);
    program.join();
    out_adapter.join();
    in_adapter.join();
    REQUIRE(written);
    r.error = errors.take();
    r.dropped = dropped.load();
    r.stats = q.stats();
    return r;
}

std::string numbered_lines(unsigned n) {
    std::string s;
    for (unsigned i = 0; i < n; ++i) s += (i % 7 == 3 ? std::string() : std::to_string(i * 7919u)) + "\n";  // some empty
    return s;
}

}  // namespace

TEST_CASE("lines cut anywhere by the reads arrive whole, in order, many to a message", "[unit]") {
    const Endpoints kind = GENERATE(Endpoints::one, Endpoints::many);
    const std::size_t piece = GENERATE(std::size_t{1}, std::size_t{7}, std::size_t{4096});
    const std::string input = numbered_lines(20000);
    const Outcome sut = through_adapters(input, piece, ExitVerdict::ended_well, kind);
    CHECK(sut.error.empty());
    CHECK(sut.out == input);
    CHECK(sut.ledger.taken == 20000);  // counted in lines
    CHECK(sut.stats.bytes_out == input.size());
    CHECK(sut.stats.abandoned == 0);
    // Batches, not one message per line. Only pieces of a pipe's atomic write size make that
    // certain whatever the scheduling: a read then finds a whole message's worth waiting (the
    // messages here hold 512 bytes, so at least 411 of whole lines of at most 100), but for
    // the last bytes of each 4096-byte write; whereas an adapter scheduled after every 7-byte
    // write may publish a message per line or two (seen under load: 5 000-6 000 of them).
    if (piece == 4096) CHECK(sut.stats.messages_out <= input.size() / (512 - 101) + input.size() / 4096 + 1);
}

TEST_CASE("a last line without a newline gets one when the program ended well", "[unit]") {
    const Endpoints kind = GENERATE(Endpoints::one, Endpoints::many);
    const std::size_t piece = GENERATE(std::size_t{1}, std::size_t{64});
    const Outcome sut = through_adapters("first\n\nlast", piece, ExitVerdict::ended_well, kind);
    CHECK(sut.error.empty());
    CHECK(sut.out == "first\n\nlast\n");
    CHECK(sut.dropped == 0);
}

TEST_CASE("a last line without a newline is dropped and counted when the program failed", "[unit]") {
    const Endpoints kind = GENERATE(Endpoints::one, Endpoints::many);
    const std::size_t piece = GENERATE(std::size_t{1}, std::size_t{64});
    const Outcome sut = through_adapters("first\nsecond\ncut", piece, ExitVerdict::failed, kind);
    CHECK(sut.out == "first\nsecond\n");
    CHECK(sut.dropped == 3);
}

TEST_CASE("every byte value but the newline passes through unchanged", "[unit]") {
    std::string input;
    std::mt19937 rng(7);
    for (int line = 0; line < 3000; ++line) {
        const int len = static_cast<int>(rng() % 90);
        for (int i = 0; i < len; ++i) {
            char c = static_cast<char>(rng() & 0xff);
            if (c == '\n') c = '\0';
            input += c;
        }
        input += line % 5 == 0 ? "\r\n" : "\n";
    }
    const Outcome sut = through_adapters(input, 333, ExitVerdict::ended_well, Endpoints::one);
    CHECK(sut.error.empty());
    CHECK(sut.out == input);
}

TEST_CASE("a line of the limit passes and a longer one fails the adapter after the lines before it", "[unit]") {
    const Endpoints kind = GENERATE(Endpoints::one, Endpoints::many);
    const std::string ok_line(100, 'x');
    const std::string input = "a\n" + ok_line + "\nb\n" + std::string(101, 'y') + "\nnever\n";
    const Outcome sut = through_adapters(input, 4096, ExitVerdict::ended_well, kind);
    CHECK(sut.out == "a\n" + ok_line + "\nb\n");
    CHECK(sut.error.find("a line of 101 bytes does not fit queue") != std::string::npos);
    CHECK(sut.error.find("raise max_message") != std::string::npos);
}

TEST_CASE("a line longer than a whole message fails the adapter and the program is still read to its end", "[unit]") {
    const Endpoints kind = GENERATE(Endpoints::one, Endpoints::many);
    // The batch here is 512 bytes: this line fills messages without a newline.
    const std::string input = "a\nb\n" + std::string(200000, 'z') + "\nc\n";
    const Outcome sut = through_adapters(input, 1000, ExitVerdict::ended_well, kind);
    CHECK(sut.out == "a\nb\n");
    CHECK(sut.error.find("a line of more than 100 bytes does not fit queue") != std::string::npos);
}

TEST_CASE("a queue is line-batched only when every endpoint is a line adapter and batches fit", "[unit]") {
    PipelineSpec sut = two_line_stages(std::size_t{4} << 20, 256);
    CHECK(batch_bytes(sut) == 64 * 1024);
    sut.queues[0].max_message = std::size_t{1} << 20;  // a line may be 1 MiB: batches hold one and its '\n'
    CHECK(batch_bytes(sut) == 0);  // ... but four of them do not fit in 4 MiB
    sut.queues[0].capacity = std::size_t{16} << 20;
    CHECK(batch_bytes(sut) == (std::size_t{1} << 20) + 1);
    sut.queues[0].capacity = std::size_t{4} << 20;
    sut.queues[0].max_message = 256;
    sut.stages[1].stdin_format = StreamFormat::records;
    CHECK(batch_bytes(sut) == 0);
    sut.stages[1].stdin_format = StreamFormat::lines;
    sut.stages.push_back(StageSpec{.name = "native", .cmd = {"n"}, .inputs = {"q"}});
    CHECK(batch_bytes(sut) == 0);
    PipelineSpec tiny = two_line_stages(1024, 512);  // no room for two batches
    CHECK(batch_bytes(tiny) == 0);
}

TEST_CASE("a line-batched queue between one program and one other on one host, no replicas or restarts, is a pipe edge",
          "[unit]") {
    PipelineSpec sut = two_line_stages(std::size_t{4} << 20, 256);
    CHECK(pipe_edge(sut));
    sut.stages[1].replicas = 2;
    CHECK_FALSE(pipe_edge(sut));
    sut.stages[1].replicas = 1;
    sut.stages[0].restart = RestartPolicy::on_failure;
    CHECK_FALSE(pipe_edge(sut));
    sut.stages[0].restart = RestartPolicy::never;
    sut.stages[1].host = "b";  // the queue crosses hosts: bridged, never a pipe
    CHECK_FALSE(pipe_edge(sut));
    sut.stages[1].host.clear();
    sut.stages[1].stdin_format = StreamFormat::records;  // not line-batched
    CHECK_FALSE(pipe_edge(sut));
}

TEST_CASE("count_lines counts every newline, at any alignment and length", "[unit]") {
    std::mt19937 rng(11);
    std::string buf(1000, '\0');
    for (auto& c : buf) c = static_cast<char>(rng() % 4 == 0 ? '\n' : rng() & 0xff);
    for (std::size_t from = 0; from < 9; ++from) {
        for (std::size_t len : {0u, 1u, 7u, 8u, 9u, 63u, 500u}) {
            const auto expected = static_cast<std::size_t>(std::count(buf.begin() + static_cast<long>(from),
                                                                      buf.begin() + static_cast<long>(from + len), '\n'));
            CHECK(detail::count_lines(buf.data() + from, len) == expected);
        }
    }
}
