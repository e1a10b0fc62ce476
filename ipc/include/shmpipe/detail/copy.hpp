// copy_fixed<N>: the copy of a message whose size is known at compile time (a trivially
// copyable T into or out of its slot); copy_in<N> (below): the same copy into a queue,
// reading the caller's value 8 bytes at a time. Not API.
//
// GCC 12 at -O2 (generic tuning) writes a memcpy of a constant 512 bytes to 16 KiB as
// `rep movsq`. On the project's test VM that string move was the slowest way to copy a
// slot. queue_bench at 1 KiB, 5 runs alternated with a build that used `rep movsq`, medians:
// a typed try_push/try_pop round trip 1.31 -> 0.99 us and 6.2 -> 8.1 M msgs/s; the
// reference ring, whose payload fill uses this copy too, 1.09 -> 0.95 us and 5.4 -> 9.2 M.
// Smaller copies are already unrolled into vector moves, and from 16 KiB on GCC calls the
// C library's memcpy, which picks its own method; only the range in between is copied here
// by a loop of 64-byte blocks (four 16-byte loads, then four stores). The empty asm keeps
// the compiler from recognising the loop as a memcpy and emitting the string move again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace shmpipe::detail {

inline constexpr std::size_t kVectorCopyMin = 257;     // below: GCC unrolls vector moves itself
inline constexpr std::size_t kVectorCopyEnd = 16384;  // from here: GCC calls memcpy

#if defined(__x86_64__) && defined(__SSE2__)
// The loop both copies share: the first `end` bytes (a multiple of 64) in blocks of 64, four
// 16-byte pieces loaded with `load` (a 16-byte load, or two 8-byte ones), then stored.
template <class Load>
[[gnu::always_inline]] inline void copy_blocks(char* d, const char* s, std::size_t end, Load load) noexcept {
    for (std::size_t i = 0; i < end; i += 64) {
        __m128i a = load(s + i), b = load(s + i + 16), c = load(s + i + 32), e = load(s + i + 48);
        asm("" : "+x"(a), "+x"(b), "+x"(c), "+x"(e));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), a);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
    }
}
#endif

template <std::size_t N>
[[gnu::always_inline]] inline void copy_fixed(void* dst, const void* src) noexcept {
#if defined(__x86_64__) && defined(__SSE2__)
    if constexpr (N >= kVectorCopyMin && N < kVectorCopyEnd) {
        auto* d = static_cast<char*>(dst);
        const auto* s = static_cast<const char*>(src);
        copy_blocks(d, s, N / 64 * 64, [](const char* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); });
        if constexpr (N % 64 != 0) std::memcpy(d + N / 64 * 64, s + N / 64 * 64, N % 64);
        return;
    }
#endif
    std::memcpy(dst, src, N);
}

// copy_in's (below) copy of a multiple of 8 bytes from 72 to below kVectorCopyEnd: per 16
// bytes two 8-byte loads into one vector register (movq, movhpd), then one 16-byte store;
// copy_blocks' blocks of 64, then the last 16-byte pieces, then a last word. Else copy_fixed.
template <std::size_t N>
[[gnu::always_inline]] inline void copy_in_pairs(void* dst, const void* src) noexcept {
#if defined(__x86_64__) && defined(__SSE2__)
    if constexpr (N % 8 == 0 && N < kVectorCopyEnd) {
        auto* d = static_cast<char*>(dst);
        const auto* s = static_cast<const char*>(src);
        const auto pair = [](const char* p) {
            __m128i lo = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
            asm("" : "+x"(lo));
            return _mm_castpd_si128(_mm_loadh_pd(_mm_castsi128_pd(lo), reinterpret_cast<const double*>(p + 8)));
        };
        copy_blocks(d, s, N / 64 * 64, pair);
        for (std::size_t i = N / 64 * 64; i + 16 <= N; i += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), pair(s + i));
        if constexpr (N % 16 == 8) {
            std::uint64_t w;
            std::memcpy(&w, s + N - 8, 8);
            std::memcpy(d + N - 8, &w, 8);
        }
        return;
    }
#endif
    copy_fixed<N>(dst, src);
}

// copy_in<N>: the copy of a caller's value into a queue (a typed slot, or a record of the
// byte ring or an MPMC cell through the codec). The caller has usually just written the
// value field by field, and a load wider than one of those stores, or spanning two, cannot
// be forwarded from the store buffer: it waits until they reach the cache, behind the
// queue's previous stores to lines the other CPU reads. An 8-byte load is forwarded from
// any store of 8 bytes or more that covers it. So a value whose size is a multiple of 8 is
// read 8 bytes at a time: up to a line word by word (queue_bench, typed 64 B round trip:
// 553-619 ns with memcpy, 437-498 ns word by word; reference ring 424-473), and below
// kVectorCopyEnd two words into each 16-byte store (copy_in_pairs; queue_bench streaming
// try_push/try_pop against the reference ring, 5 runs alternated with 16-byte loads,
// medians: typed 128 B 0.64x -> 1.16x, 1 KiB 0.89x -> 1.02x; byte ring 0.59x -> 0.77x,
// 0.74x -> 0.89x). The empty asm keeps the compiler from merging the loads back into wider
// ones. Other sizes, and from kVectorCopyEnd on: copy_fixed.
template <std::size_t N>
[[gnu::always_inline]] inline void copy_in(void* dst, const void* src) noexcept {
    if constexpr (N % 8 == 0 && N <= 64) {
        auto* d = static_cast<char*>(dst);
        const auto* s = static_cast<const char*>(src);
        for (std::size_t i = 0; i < N; i += 8) {
            std::uint64_t w;
            std::memcpy(&w, s + i, 8);
            asm("" : "+r"(w));
            std::memcpy(d + i, &w, 8);
        }
    } else {
        copy_in_pairs<N>(dst, src);
    }
}

}  // namespace shmpipe::detail
