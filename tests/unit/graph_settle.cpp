// settle_stdin: from what the stdin adapter wrote and what a dead program left in its pipe,
// which whole messages it never read (re-deliverable) and how many it read.
#include <shmpipe/detail/graph_adapter.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using shmpipe::detail::settle_stdin;
using shmpipe::detail::StdinLedger;

namespace {

// A ledger for lines "a\n", "bb\n", "ccc\n", "dddd\n" all written (offsets 0, 2, 5, 9; 14 bytes).
StdinLedger four_lines() {
    StdinLedger sut;
    sut.taken = 4;
    sut.taken_bytes = 14;
    sut.starts = {0, 2, 5, 9};
    sut.window = 1 << 20;
    return sut;
}

}  // namespace

TEST_CASE("messages whole in the pipe are unread, the rest were read", "[unit]") {
    const auto sut = settle_stdin(four_lines(), "ccc\ndddd\n");
    CHECK(sut.unread == std::vector<std::string>{"ccc\n", "dddd\n"});
    CHECK(sut.read == 2);
}

TEST_CASE("a message read in part counts as read, not re-delivered", "[unit]") {
    const auto sut = settle_stdin(four_lines(), "c\ndddd\n");
    CHECK(sut.unread == std::vector<std::string>{"dddd\n"});
    CHECK(sut.read == 3);
}

TEST_CASE("bytes never written follow what is in the pipe", "[unit]") {
    StdinLedger ledger = four_lines();
    ledger.unwritten = "dddd\n";
    const auto sut = settle_stdin(ledger, "ccc\n");
    CHECK(sut.unread == std::vector<std::string>{"ccc\n", "dddd\n"});
    CHECK(sut.read == 2);
}

TEST_CASE("an empty pipe means every message was read", "[unit]") {
    const auto sut = settle_stdin(four_lines(), "");
    CHECK(sut.unread.empty());
    CHECK(sut.read == 4);
}

namespace {

// A batched ledger: messages "a\nbb\n" (offset 0) and "ccc\ndddd\n" (offset 5), 4 lines, 14 bytes.
StdinLedger two_batches() {
    StdinLedger sut;
    sut.batched = true;
    sut.taken = 4;
    sut.taken_bytes = 14;
    sut.starts = {0, 5};
    sut.window = 1 << 20;
    return sut;
}

}  // namespace

TEST_CASE("batched: the whole lines after the point the program stopped are unread, one by one", "[unit]") {
    const auto sut = settle_stdin(two_batches(), "ccc\ndddd\n");
    CHECK(sut.unread == std::vector<std::string>{"ccc\n", "dddd\n"});
    CHECK(sut.read == 2);
}

TEST_CASE("batched: inside a message, the cut line counts as read and the lines after it are unread", "[unit]") {
    const auto sut = settle_stdin(two_batches(), "b\nccc\ndddd\n");
    CHECK(sut.unread == std::vector<std::string>{"ccc\n", "dddd\n"});
    CHECK(sut.read == 2);
    const auto later = settle_stdin(two_batches(), "cc\ndddd\n");
    CHECK(later.unread == std::vector<std::string>{"dddd\n"});
    CHECK(later.read == 3);
}

TEST_CASE("batched: a line that starts exactly where the program stopped inside a message counts as read", "[unit]") {
    // The byte before it is gone, so whether "bb" was whole cannot be told: read, never doubled.
    const auto sut = settle_stdin(two_batches(), "bb\nccc\ndddd\n");
    CHECK(sut.unread == std::vector<std::string>{"ccc\n", "dddd\n"});
    CHECK(sut.read == 2);
}
