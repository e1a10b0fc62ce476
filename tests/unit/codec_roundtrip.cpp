// Codec<T>: values survive encode/decode, and malformed bytes (shared memory is untrusted)
// are refused with Error(type_mismatch), never a crash or an out-of-bounds read.
#include <shmpipe/codec.hpp>
#include <shmpipe/error.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

using namespace shmpipe;

namespace {

template <class T>
std::vector<std::byte> encode(const T& v) {
    std::vector<std::byte> out(Codec<T>::size(v));
    Codec<T>::encode(v, out);
    return out;
}

template <class T>
T round_trip(const T& v) {
    const auto bytes = encode(v);
    return Codec<T>::decode(bytes);
}

std::vector<std::byte> bytes_of(std::initializer_list<int> xs) {
    std::vector<std::byte> v;
    for (int x : xs) v.push_back(static_cast<std::byte>(x));
    return v;
}

template <class T>
bool decode_refused(std::span<const std::byte> in) {
    try {
        (void)Codec<T>::decode(in);
        return false;
    } catch (const Error& e) {
        return e.code() == errc::type_mismatch;
    }
}

struct Pod {
    std::int32_t a;
    double b;
    std::array<char, 5> c;
    bool operator==(const Pod&) const = default;
};

// A user type with its own codec, counting live instances.
struct Label {
    static inline int live = 0;
    std::string text;
    int weight = 0;
    Label(std::string t, int w) : text(std::move(t)), weight(w) { ++live; }
    Label(const Label& o) : text(o.text), weight(o.weight) { ++live; }
    Label(Label&& o) noexcept : text(std::move(o.text)), weight(o.weight) { ++live; }
    Label& operator=(const Label&) = default;
    ~Label() { --live; }
    bool operator==(const Label& o) const { return text == o.text && weight == o.weight; }
};

}  // namespace

template <>
struct shmpipe::Codec<Label> {
    static std::size_t size(const Label& l) { return 4 + l.text.size(); }
    static void encode(const Label& l, std::span<std::byte> out) {
        std::memcpy(out.data(), &l.weight, 4);
        if (!l.text.empty()) std::memcpy(out.data() + 4, l.text.data(), l.text.size());
    }
    static Label decode(std::span<const std::byte> in) {
        if (in.size() < 4) throw Error(errc::type_mismatch, "Label: need 4 bytes");
        int w = 0;
        std::memcpy(&w, in.data(), 4);
        return Label(std::string(reinterpret_cast<const char*>(in.data() + 4), in.size() - 4), w);
    }
};

TEST_CASE("Trivially copyable values round-trip as exactly sizeof(T) bytes", "[unit]") {
    CHECK(round_trip(42) == 42);
    CHECK(round_trip(-1.5) == -1.5);
    CHECK(round_trip(std::uint64_t{0xdeadbeefcafef00dull}) == 0xdeadbeefcafef00dull);
    const Pod p{7, 2.25, {'a', 'b', 'c', 'd', 'e'}};
    CHECK(encode(p).size() == sizeof(Pod));
    CHECK(round_trip(p) == p);
}

TEST_CASE("Strings round-trip, including empty and binary content", "[unit]") {
    CHECK(round_trip(std::string()).empty());
    CHECK(round_trip(std::string("hello")) == "hello");
    const std::string binary("a\0b\xff", 4);
    CHECK(round_trip(binary) == binary);
    CHECK(round_trip(std::string(100000, 'x')) == std::string(100000, 'x'));
}

TEST_CASE("Vectors of flat and of nested elements round-trip", "[unit]") {
    CHECK(round_trip(std::vector<int>{}).empty());
    CHECK(round_trip(std::vector<int>{1, 2, 3}) == std::vector<int>{1, 2, 3});
    const std::vector<std::string> strings{"", "one", std::string(300, 'z')};
    CHECK(round_trip(strings) == strings);
    const std::vector<std::vector<int>> nested{{}, {1}, {2, 3, 4}};
    CHECK(round_trip(nested) == nested);
    const Bytes raw{std::byte{0}, std::byte{0xff}, std::byte{7}};
    CHECK(round_trip(raw) == raw);
}

TEST_CASE("Pairs, tuples and optionals round-trip when nested", "[unit]") {
    using Nested = std::tuple<int, std::string, std::vector<std::string>, std::optional<std::pair<std::string, double>>>;
    const Nested full{5, "five", {"a", "bc"}, std::make_pair(std::string("pi"), 3.14)};
    CHECK(round_trip(full) == full);
    const Nested empty_opt{0, "", {}, std::nullopt};
    CHECK(round_trip(empty_opt) == empty_opt);

    const std::pair<std::string, std::optional<std::vector<int>>> p{"k", std::vector<int>{9, 8}};
    CHECK(round_trip(p) == p);
    const std::optional<std::string> none;
    CHECK(round_trip(none) == none);
    const std::optional<std::string> some("x");
    CHECK(round_trip(some) == some);
    const std::optional<std::string> some_empty("");
    CHECK(round_trip(some_empty) == some_empty);
}

TEST_CASE("A user codec round-trips and builds exactly one object per decode", "[unit]") {
    {
        const Label sut("label", 3);
        const auto bytes = encode(sut);
        CHECK(bytes.size() == 9);
        const int before = Label::live;
        {
            const Label back = Codec<Label>::decode(bytes);
            CHECK(back == sut);
            CHECK(Label::live == before + 1);
        }
        CHECK(Label::live == before);
        const std::vector<Label> many{Label("a", 1), Label("bb", 2)};
        CHECK(round_trip(many) == many);
    }
    CHECK(Label::live == 0);
    CHECK(decode_refused<Label>(bytes_of({1, 2})));
    CHECK(Label::live == 0);
}

TEST_CASE("Malformed bytes are refused with type_mismatch naming the problem", "[unit]") {
    SECTION("a trivially copyable value of the wrong size") {
        CHECK(decode_refused<int>(bytes_of({1, 2, 3})));
        CHECK(decode_refused<int>(bytes_of({1, 2, 3, 4, 5})));
        CHECK(decode_refused<double>({}));
        try {
            (void)Codec<std::uint64_t>::decode(bytes_of({1, 2, 3}));
            FAIL("decode of 3 bytes as uint64_t did not throw");
        } catch (const Error& e) {
            CHECK(e.code() == errc::type_mismatch);
            CHECK_THAT(e.what(), Catch::Contains("3") && Catch::Contains("8"));
        }
    }
    SECTION("a flat vector whose size is not a multiple of the element") {
        CHECK(decode_refused<std::vector<std::uint32_t>>(bytes_of({1, 2, 3, 4, 5})));
    }
    SECTION("a length prefix larger than what is left") {
        // vector<string>: u32 length 100, then only 2 bytes.
        CHECK(decode_refused<std::vector<std::string>>(bytes_of({100, 0, 0, 0, 'a', 'b'})));
        CHECK(decode_refused<std::vector<std::string>>(bytes_of({0xff, 0xff, 0xff, 0xff})));
        CHECK(decode_refused<std::vector<std::string>>(bytes_of({1, 0})));
    }
    SECTION("tuples and pairs with missing or trailing bytes") {
        const auto good = encode(std::make_tuple(1, std::string("ab")));
        auto truncated = good;
        truncated.pop_back();
        CHECK(decode_refused<std::tuple<int, std::string>>(truncated));
        auto trailing = good;
        trailing.push_back(std::byte{0});
        CHECK(decode_refused<std::tuple<int, std::string>>(trailing));
        const auto pair_good = encode(std::make_pair(std::string("k"), 2));
        auto pair_trailing = pair_good;
        pair_trailing.push_back(std::byte{9});
        CHECK(decode_refused<std::pair<std::string, int>>(pair_trailing));
        CHECK(decode_refused<std::pair<std::string, int>>({}));
    }
    SECTION("optionals without a flag or with bytes after an empty flag") {
        CHECK(decode_refused<std::optional<std::string>>({}));
        CHECK(decode_refused<std::optional<std::string>>(bytes_of({0, 1})));
    }
}

TEST_CASE("Random bytes decode as nested types to a value or type_mismatch, never a crash", "[unit]") {
    using Nested = std::tuple<std::vector<std::string>, std::optional<std::pair<int, std::string>>, std::uint16_t>;
    std::mt19937_64 rng(12345);
    int refused = 0, decoded = 0;
    for (int i = 0; i < 20000; ++i) {
        std::vector<std::byte> in(rng() % 64);
        for (auto& b : in) {
            // Small values make plausible length prefixes, so both paths are exercised.
            b = static_cast<std::byte>(rng() % 4 == 0 ? rng() % 256 : rng() % 8);
        }
        try {
            (void)Codec<Nested>::decode(in);
            (void)Codec<std::vector<std::vector<std::uint32_t>>>::decode(in);
            ++decoded;
        } catch (const Error& e) {
            REQUIRE(e.code() == errc::type_mismatch);
            ++refused;
        }
    }
    CHECK(refused > 0);
    CHECK(refused + decoded == 20000);
}

TEST_CASE("type_tag tells element types apart and is never zero", "[unit]") {
    CHECK(type_tag<int>() != type_tag<double>());
    CHECK(type_tag<int>() != type_tag<float>());
    CHECK(type_tag<std::string>() != type_tag<std::vector<char>>());
    CHECK(type_tag<int>() == type_tag<int>());
    CHECK(type_tag<int>() != 0);
}
