// The bridge's one frame decoder (shmpipe/net/frame.hpp): every frame type round-trips, and
// random, truncated and bit-flipped input is refused with a reason, never read out of bounds
// (run it under the asan preset to have that checked, not just hoped for).
#include <shmpipe/net/frame.hpp>

#include <catch2/catch.hpp>

#include <cstddef>
#include <random>
#include <string>
#include <vector>

using namespace shmpipe::net;

namespace {

std::vector<std::byte> bytes_of(const std::string& s) {
    std::vector<std::byte> v(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) v[i] = static_cast<std::byte>(s[i]);
    return v;
}

std::vector<std::byte> data_frame(std::uint64_t seq, const std::vector<std::string>& messages) {
    DataFrameBuilder b;
    b.begin(seq);
    for (const auto& m : messages) b.add(bytes_of(m));
    const auto f = b.finish();
    return {f.begin(), f.end()};
}

std::vector<std::vector<std::byte>> valid_frames() {
    std::vector<std::vector<std::byte>> all;
    std::vector<std::byte> f;
    encode_hello(f, 42, "host-a", "edge.one");
    all.push_back(f);
    encode_credit(f, 7, 4096);
    all.push_back(f);
    encode_end(f, 9);
    all.push_back(f);
    encode_heartbeat(f);
    all.push_back(f);
    encode_refuse(f, "not this edge");
    all.push_back(f);
    encode_status(f, "host-b", "run-7", 3, "worker.0@b: exited with code 3");
    all.push_back(f);
    all.push_back(data_frame(3, {"a", "", "hello world", std::string(300, 'x')}));
    return all;
}

}  // namespace

TEST_CASE("Every frame type decodes to what was encoded", "[unit][net]") {
    Frame sut;
    std::vector<std::byte> f;

    encode_status(f, "host-b", "run-7", 3, "worker.0@b: exited with code 3");
    REQUIRE(decode_frame(f, sut, 1024, 16).ok);
    CHECK(sut.type == FrameType::status);
    CHECK(sut.host == "host-b");
    CHECK(sut.run == "run-7");
    CHECK(sut.state == 3);
    CHECK(sut.reason == "worker.0@b: exited with code 3");

    encode_hello(f, 42, "host-a", "edge.one");
    REQUIRE(decode_frame(f, sut, 1024, 16).ok);
    CHECK(sut.type == FrameType::hello);
    CHECK(sut.sender_id == 42);
    CHECK(sut.host == "host-a");
    CHECK(sut.queue == "edge.one");

    encode_credit(f, 7, 4096);
    REQUIRE(decode_frame(f, sut, 1024, 16).ok);
    CHECK(sut.type == FrameType::credit);
    CHECK(sut.acked_seq == 7);
    CHECK(sut.credit_limit == 4096);

    encode_end(f, 9);
    REQUIRE(decode_frame(f, sut, 1024, 16).ok);
    CHECK(sut.type == FrameType::end);
    CHECK(sut.seq == 9);

    const auto d = data_frame(3, {"a", "", "hello world"});
    REQUIRE(decode_frame(d, sut, 1024, 16).ok);
    CHECK(sut.type == FrameType::data);
    CHECK(sut.seq == 3);
    REQUIRE(sut.messages.size() == 3);
    CHECK(sut.messages[0].size() == 1);
    CHECK(sut.messages[1].empty());
    CHECK(std::string(reinterpret_cast<const char*>(sut.messages[2].data()), sut.messages[2].size()) == "hello world");
}

TEST_CASE("A frame breaking a limit is refused with a reason naming the limit", "[unit][net]") {
    Frame sut;
    const auto big = data_frame(1, {std::string(300, 'x')});
    const auto r1 = decode_frame(big, sut, 100, 16);
    CHECK_FALSE(r1.ok);
    CHECK_THAT(r1.reason, Catch::Contains("max_message 100"));

    const auto many = data_frame(1, {"a", "b", "c"});
    const auto r2 = decode_frame(many, sut, 100, 2);
    CHECK_FALSE(r2.ok);
    CHECK_THAT(r2.reason, Catch::Contains("more than the 2 allowed"));

    auto f = many;
    f[0] = std::byte{0};  // magic
    CHECK_THAT(decode_frame(f, sut, 100, 16).reason, Catch::Contains("bad magic"));
    f = many;
    f[2] = std::byte{99};  // version
    CHECK_THAT(decode_frame(f, sut, 100, 16).reason, Catch::Contains("protocol version 99"));
    f = many;
    f.push_back(std::byte{0});
    CHECK_THAT(decode_frame(f, sut, 100, 16).reason, Catch::Contains("trailing"));
}

TEST_CASE("Every truncation of every valid frame is refused, never read past its end", "[unit][net]") {
    Frame sut;
    for (const auto& f : valid_frames()) {
        REQUIRE(decode_frame(f, sut, 1024, 16).ok);
        for (std::size_t n = 0; n < f.size(); ++n) {
            // A copy of exactly n bytes: anything read past it is a heap overflow under asan.
            const std::vector<std::byte> cut(f.begin(), f.begin() + static_cast<std::ptrdiff_t>(n));
            const auto r = decode_frame(cut, sut, 1024, 16);
            INFO("frame type " << static_cast<int>(f[3]) << " cut to " << n << " of " << f.size() << " bytes");
            CHECK_FALSE(r.ok);
            CHECK_FALSE(r.reason.empty());
        }
    }
}

TEST_CASE("Random and bit-flipped frames never crash the decoder, and what it accepts is within bounds",
          "[unit][net]") {
    std::mt19937_64 rng(12345);
    Frame sut;
    const auto frames = valid_frames();
    std::uint64_t accepted = 0, refused = 0;
    for (int i = 0; i < 200000; ++i) {
        std::vector<std::byte> f;
        if (i % 2 == 0) {  // pure noise, sometimes behind a valid header so the body is exercised
            f.resize(rng() % 64);
            for (auto& b : f) b = static_cast<std::byte>(rng());
            if (i % 4 == 0 && f.size() >= 4) {
                f[0] = std::byte{0x50};
                f[1] = std::byte{0x53};
                f[2] = std::byte{kProtocolVersion};
                f[3] = static_cast<std::byte>(1 + rng() % 6);
            }
        } else {  // a valid frame with a few bytes flipped
            f = frames[rng() % frames.size()];
            for (int k = 0, n = 1 + static_cast<int>(rng() % 3); k < n; ++k)
                f[rng() % f.size()] ^= static_cast<std::byte>(1u << (rng() % 8));
        }
        const auto r = decode_frame(f, sut, 512, 64);
        if (!r.ok) {
            ++refused;
            CHECK_FALSE(r.reason.empty());
            continue;
        }
        ++accepted;
        REQUIRE(sut.messages.size() <= 64);
        for (const auto m : sut.messages) {  // every view lies inside the input
            REQUIRE(m.size() <= 512);
            REQUIRE(m.data() >= f.data());
            REQUIRE(m.data() + m.size() <= f.data() + f.size());
        }
    }
    CHECK(refused > 0);
    CHECK(accepted > 0);  // some flips land in payload bytes and stay valid
}
