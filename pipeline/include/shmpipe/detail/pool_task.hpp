// How a pool task crosses the fork: a function pointer sent as an integer (a forked worker
// has the parent's address space layout, so the address means the same function there), a
// typed trampoline per (function type, arguments) instantiation that decodes the
// arguments, calls and encodes the result, and the message framing. Not API.
#pragma once

#include <shmpipe/codec.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace shmpipe::detail {

// Runs one task in a worker: decodes `args`, calls the function at `fn`, encodes the result
// into `out` (resized). Throws what the function throws, or a decode error.
using Trampoline = void (*)(std::uintptr_t fn, std::span<const std::byte> args, Bytes& out);

// Parent -> worker: header, then the encoded arguments.
struct TaskHeader {
    std::uint64_t id;
    std::uint64_t trampoline;  // a Trampoline, as an integer
    std::uint64_t fn;          // the user's function pointer, as an integer
};
// Worker -> parent: header, then the encoded result (ok) or the error.
struct ResultHeader {
    std::uint64_t id;      // 0: a wake-up from the parent itself, no task
    std::uint32_t status;  // ResultStatus
    std::uint32_t reserved;
};
enum ResultStatus : std::uint32_t { kResultOk = 0, kResultException = 1, kResultTooLarge = 2, kResultCancelled = 3 };
static_assert(std::is_trivially_copyable_v<TaskHeader> && sizeof(TaskHeader) == 24);
static_assert(std::is_trivially_copyable_v<ResultHeader> && sizeof(ResultHeader) == 16);

// What a callable's function pointer says: result and (decayed) parameter types.
template <class Fp>
struct FnTraits;
template <class R, class... P>
struct FnTraits<R (*)(P...)> {
    using result = R;
    using args = std::tuple<std::decay_t<P>...>;
    using pointer = R (*)(P...);
    static constexpr std::size_t arity = sizeof...(P);
    static constexpr bool no_mutable_refs =
        (... && (!std::is_lvalue_reference_v<P> || std::is_const_v<std::remove_reference_t<P>>));
};
template <class R, class... P>
struct FnTraits<R (*)(P...) noexcept> : FnTraits<R (*)(P...)> {
    using pointer = R (*)(P...) noexcept;
};

// A plain function or a captureless lambda, as a function pointer (unary + converts the lambda).
template <class F>
using fn_ptr_t = decltype(+std::declval<F>());

template <class F>
concept TaskFunction = requires(F f) { +f; } && std::is_pointer_v<fn_ptr_t<F>> &&
                       std::is_function_v<std::remove_pointer_t<fn_ptr_t<F>>>;

template <class R>
void encode_into(const R& r, Bytes& out) {
    out.resize(Codec<R>::size(r));
    Codec<R>::encode(r, std::span<std::byte>(out));
}

template <class Args>
Args decode_args(std::span<const std::byte> in) {
    if constexpr (std::tuple_size_v<Args> == 0) {
        return {};
    } else {
        return Codec<Args>::decode(in);
    }
}

template <class Args>
void encode_args(const Args& a, Bytes& out) {
    if constexpr (std::tuple_size_v<Args> == 0) {
        out.clear();
    } else {
        encode_into(a, out);
    }
}

// One call: arguments are a tuple of the decayed parameters.
template <class Fp>
void call_one(std::uintptr_t fn, std::span<const std::byte> in, Bytes& out) {
    using T = FnTraits<Fp>;
    auto f = reinterpret_cast<typename T::pointer>(fn);
    auto args = decode_args<typename T::args>(in);
    if constexpr (std::is_void_v<typename T::result>) {
        std::apply(f, std::move(args));
        out.clear();
    } else {
        encode_into(std::apply(f, std::move(args)), out);
    }
}

// A chunk of a map: a vector of the single argument in, a vector of results out (nothing
// for a void task).
template <class Fp>
void call_chunk(std::uintptr_t fn, std::span<const std::byte> in, Bytes& out) {
    using T = FnTraits<Fp>;
    using A = std::tuple_element_t<0, typename T::args>;
    auto f = reinterpret_cast<typename T::pointer>(fn);
    auto xs = Codec<std::vector<A>>::decode(in);
    if constexpr (std::is_void_v<typename T::result>) {
        for (auto& x : xs) f(std::move(x));
        out.clear();
    } else {
        std::vector<typename T::result> rs;
        rs.reserve(xs.size());
        for (auto& x : xs) rs.push_back(f(std::move(x)));
        encode_into(rs, out);
    }
}

// A chunk of a starmap: a vector of argument tuples in, a vector of results out.
template <class Fp>
void call_star_chunk(std::uintptr_t fn, std::span<const std::byte> in, Bytes& out) {
    using T = FnTraits<Fp>;
    auto f = reinterpret_cast<typename T::pointer>(fn);
    auto xs = Codec<std::vector<typename T::args>>::decode(in);
    if constexpr (std::is_void_v<typename T::result>) {
        for (auto& x : xs) std::apply(f, std::move(x));
        out.clear();
    } else {
        std::vector<typename T::result> rs;
        rs.reserve(xs.size());
        for (auto& x : xs) rs.push_back(std::apply(f, std::move(x)));
        encode_into(rs, out);
    }
}

template <class Fp>
std::uint64_t fn_bits(Fp f) noexcept {
    return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(f));
}

}  // namespace shmpipe::detail
