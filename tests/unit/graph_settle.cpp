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
