// How typed values become message bytes and back.
//
// Codec<T> has three static functions:
//   std::size_t size(const T&)                       bytes the encoding needs
//   void encode(const T&, std::span<std::byte> out)  out.size() == size(v)
//   T decode(std::span<const std::byte> in)          throws Error(type_mismatch) on bad input
// Built in: trivially copyable types (raw bytes of exactly sizeof(T)), std::string,
// std::vector<U>, std::pair, std::tuple, std::optional of codable types, and raw bytes
// (std::vector<std::byte>). Message bytes come from shared memory, so decode treats them
// as untrusted: every length is checked against what is left, never trusted.
//
// A user type gets a codec by specialising shmpipe::Codec:
//   template <> struct shmpipe::Codec<Point> { static std::size_t size(const Point&); ... };
#pragma once

#include <shmpipe/detail/copy.hpp>
#include <shmpipe/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace shmpipe {

using Bytes = std::vector<std::byte>;

template <class T, class Enable = void>
struct Codec;  // no codec: a compile error names the type

namespace detail {

[[noreturn]] void throw_decode_error(const char* type, const char* what, std::size_t have, std::size_t need);

template <class T, class = void>
struct has_codec : std::false_type {};
template <class T>
struct has_codec<T, std::void_t<decltype(Codec<T>::size(std::declval<const T&>()))>> : std::true_type {};

// Length-prefixed piece inside a composite encoding: u32 length, then the bytes.
template <class T>
std::size_t framed_size(const T& v) {
    return sizeof(std::uint32_t) + Codec<T>::size(v);
}
template <class T>
std::span<std::byte> framed_encode(const T& v, std::span<std::byte> out) {
    const auto n = static_cast<std::uint32_t>(Codec<T>::size(v));
    std::memcpy(out.data(), &n, sizeof n);
    Codec<T>::encode(v, out.subspan(sizeof n, n));
    return out.subspan(sizeof n + n);
}
template <class T>
T framed_decode(std::span<const std::byte>& in) {
    std::uint32_t n = 0;
    if (in.size() < sizeof n) throw_decode_error(typeid(T).name(), "length prefix", in.size(), sizeof n);
    std::memcpy(&n, in.data(), sizeof n);
    if (in.size() - sizeof n < n) throw_decode_error(typeid(T).name(), "element", in.size() - sizeof n, n);
    T v = Codec<T>::decode(in.subspan(sizeof n, n));
    in = in.subspan(sizeof n + n);
    return v;
}

}  // namespace detail

template <class T>
inline constexpr bool is_codable_v = detail::has_codec<T>::value;

namespace detail {
// True when Codec<T> is the built-in object-bytes codec (not a user specialisation).
template <class T>
concept object_bytes_codec = requires { requires Codec<T>::object_bytes; };
}  // namespace detail

// Trivially copyable: the object representation, exactly sizeof(T) bytes.
template <class T>
struct Codec<T, std::enable_if_t<std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>>> {
    static constexpr bool object_bytes = true;  // the encoding is the object: a consumer may copy it in place
    static constexpr std::size_t size(const T&) noexcept { return sizeof(T); }
    static void encode(const T& v, std::span<std::byte> out) noexcept { detail::copy_in<sizeof(T)>(out.data(), &v); }
    static T decode(std::span<const std::byte> in) {
        if (in.size() != sizeof(T)) detail::throw_decode_error(typeid(T).name(), "value", in.size(), sizeof(T));
        T v;
        detail::copy_fixed<sizeof(T)>(&v, in.data());
        return v;
    }
};

template <>
struct Codec<std::string> {
    static std::size_t size(const std::string& s) noexcept { return s.size(); }
    static void encode(const std::string& s, std::span<std::byte> out) noexcept {
        if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
    }
    static std::string decode(std::span<const std::byte> in) {
        return std::string(reinterpret_cast<const char*>(in.data()), in.size());
    }
};

template <class U>
struct Codec<std::vector<U>> {
    static constexpr bool flat = std::is_trivially_copyable_v<U>;
    static std::size_t size(const std::vector<U>& v) {
        if constexpr (flat) {
            return v.size() * sizeof(U);
        } else {
            std::size_t n = 0;
            for (const auto& e : v) n += detail::framed_size(e);
            return n;
        }
    }
    static void encode(const std::vector<U>& v, std::span<std::byte> out) {
        if constexpr (flat) {
            if (!v.empty()) std::memcpy(out.data(), v.data(), v.size() * sizeof(U));
        } else {
            for (const auto& e : v) out = detail::framed_encode(e, out);
        }
    }
    static std::vector<U> decode(std::span<const std::byte> in) {
        std::vector<U> v;
        if constexpr (flat) {
            if (in.size() % sizeof(U) != 0) {
                detail::throw_decode_error(typeid(std::vector<U>).name(), "array", in.size(),
                                           in.size() / sizeof(U) * sizeof(U) + sizeof(U));
            }
            v.resize(in.size() / sizeof(U));
            if (!in.empty()) std::memcpy(v.data(), in.data(), in.size());
        } else {
            while (!in.empty()) v.push_back(detail::framed_decode<U>(in));
        }
        return v;
    }
};

template <class... Ts>
struct Codec<std::tuple<Ts...>, std::enable_if_t<!std::is_trivially_copyable_v<std::tuple<Ts...>>>> {
    static std::size_t size(const std::tuple<Ts...>& t) {
        return std::apply([](const auto&... e) { return (std::size_t{0} + ... + detail::framed_size(e)); }, t);
    }
    static void encode(const std::tuple<Ts...>& t, std::span<std::byte> out) {
        std::apply([&](const auto&... e) { ((out = detail::framed_encode(e, out)), ...); }, t);
    }
    static std::tuple<Ts...> decode(std::span<const std::byte> in) {
        // Braced initialisation evaluates left to right.
        std::tuple<Ts...> t{detail::framed_decode<Ts>(in)...};
        if (!in.empty()) detail::throw_decode_error(typeid(std::tuple<Ts...>).name(), "trailing bytes", in.size(), 0);
        return t;
    }
};

template <class A, class B>
struct Codec<std::pair<A, B>, std::enable_if_t<!std::is_trivially_copyable_v<std::pair<A, B>>>> {
    static std::size_t size(const std::pair<A, B>& p) { return detail::framed_size(p.first) + detail::framed_size(p.second); }
    static void encode(const std::pair<A, B>& p, std::span<std::byte> out) {
        out = detail::framed_encode(p.first, out);
        detail::framed_encode(p.second, out);
    }
    static std::pair<A, B> decode(std::span<const std::byte> in) {
        A a = detail::framed_decode<A>(in);
        B b = detail::framed_decode<B>(in);
        if (!in.empty()) detail::throw_decode_error(typeid(std::pair<A, B>).name(), "trailing bytes", in.size(), 0);
        return {std::move(a), std::move(b)};
    }
};

template <class U>
struct Codec<std::optional<U>, std::enable_if_t<!std::is_trivially_copyable_v<std::optional<U>>>> {
    static std::size_t size(const std::optional<U>& o) { return 1 + (o ? Codec<U>::size(*o) : 0); }
    static void encode(const std::optional<U>& o, std::span<std::byte> out) {
        out[0] = std::byte{o ? std::uint8_t{1} : std::uint8_t{0}};
        if (o) Codec<U>::encode(*o, out.subspan(1));
    }
    static std::optional<U> decode(std::span<const std::byte> in) {
        if (in.empty()) detail::throw_decode_error(typeid(std::optional<U>).name(), "flag", 0, 1);
        if (in[0] == std::byte{0}) {
            if (in.size() != 1) detail::throw_decode_error(typeid(std::optional<U>).name(), "empty optional", in.size(), 1);
            return std::nullopt;
        }
        return Codec<U>::decode(in.subspan(1));
    }
};

// The type tag of a mangled type name (typeid(T).name()): an FNV-1a hash of the name.
// Bindings in other languages use it to attach with the tag a C++ Producer<T> uses.
constexpr std::uint64_t type_tag_of_name(std::string_view mangled) noexcept {
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (const char c : mangled) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ull;
    }
    return h | 1;  // never 0 (0 = untyped)
}

// A stable tag of T for the queue's and the shared array's type check: the hash of T's
// mangled name, identical across processes built by one compiler. Only the name is hashed;
// the shared array checks sizeof(T) separately.
template <class T>
std::uint64_t type_tag() noexcept {
    return type_tag_of_name(typeid(T).name());
}

}  // namespace shmpipe
