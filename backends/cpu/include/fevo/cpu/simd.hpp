// Explicitly vectorised runs for float compute types (f32, bf16, f16 storage), written with the
// GCC/Clang vector extensions so they compile to AVX-512, AVX2, SSE or NEON from the same code.
//
// Each step handles 32 weights as two 16-lane halves. The squares are summed in float for at most
// 8 terms per lane (4 steps) and then added to double accumulators, so for any instruction set
//   relative error of D <= 8 * 2^-24 (squares rounded, at most 7 float additions per lane)
//                          + the double stage's ~2^-44, i.e. below 5e-7 (the bound is 1e-6).
// Two cases would break that bound and are recomputed with the exact double path of the
// accumulator: a float square that overflows (|d| > ~1.8e19; D must stay finite), and a run
// whose changes are all below 2^-57 but not all zero (float squares would underflow). Both are
// detected from the run's sum, which is why non-finite changes are also recounted only then.
#pragma once

#include <fevo/config.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <fevo/accumulator.hpp>
#include <fevo/element.hpp>

#if (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && \
    !defined(FEVO_CPU_NO_VECTOR_EXTENSIONS)
#define FEVO_CPU_VECTOR_EXTENSIONS 1
#else
#define FEVO_CPU_VECTOR_EXTENSIONS 0
#endif

#if FEVO_CPU_VECTOR_EXTENSIONS
namespace fevo::cpu::detail::simd {

typedef float f32x16 __attribute__((vector_size(64)));
typedef double f64x8 __attribute__((vector_size(64)));
typedef std::int32_t i32x16 __attribute__((vector_size(64)));
typedef std::uint32_t u32x16 __attribute__((vector_size(64)));
typedef std::uint16_t u16x16 __attribute__((vector_size(32)));
typedef std::uint8_t u8x16 __attribute__((vector_size(16)));

/// 32 weights as two halves of 16 lanes, and where each lane's weight sits in the run.
struct step {
  f32x16 a, b;
};

template <class T>
struct loader;

// f32: a = weights 0..15, b = weights 16..31.
template <>
struct loader<float> {
  static void load(const float* p, step& s) {
    std::memcpy(&s.a, p, 64);
    std::memcpy(&s.b, p + 16, 64);
  }
  static void store_flags(std::uint8_t* f, const i32x16& ca, const i32x16& cb) {
    const u8x16 fa = __builtin_convertvector(ca & 1, u8x16);
    const u8x16 fb = __builtin_convertvector(cb & 1, u8x16);
    std::memcpy(f, &fa, 16);
    std::memcpy(f + 16, &fb, 16);
  }
};

// 16-bit storage: 32 weights are 16 words; a = even weights (low halves), b = odd (high halves).
inline void store_interleaved(std::uint8_t* f, const i32x16& ca, const i32x16& cb) {
  const u16x16 w = __builtin_convertvector((u32x16)(ca & 1) | ((u32x16)(cb & 1) << 8), u16x16);
  std::memcpy(f, &w, 32);  // little-endian: byte 2k = even weight k, byte 2k+1 = odd weight k
}

template <>
struct loader<bfloat16> {
  static void load(const bfloat16* p, step& s) {
    u32x16 w;
    std::memcpy(&w, p, 64);
    s.a = (f32x16)(w << 16);
    s.b = (f32x16)(w & 0xffff0000u);
  }
  static void store_flags(std::uint8_t* f, const i32x16& ca, const i32x16& cb) {
    store_interleaved(f, ca, cb);
  }
};

template <>
struct loader<half> {
  // The same exact conversion as half::to_float, on 16 lanes of low 16 bits.
  static void widen(const u32x16& h, f32x16& out) {
    const u32x16 sign = (h & 0x8000u) << 16;
    const u32x16 mag = (h & 0x7fffu) << 13;
    const u32x16 scaled = (u32x16)((f32x16)mag * 5.192296858534828e33f);  // * 2^112
    const u32x16 special = (u32x16)((h & 0x7c00u) == 0x7c00u);          // Inf or NaN
    out = (f32x16)(((mag | 0x7f800000u) & special) | (scaled & ~special) | sign);
  }
  static void load(const half* p, step& s) {
    u32x16 w;
    std::memcpy(&w, p, 64);
    widen(w & 0xffffu, s.a);
    widen(w >> 16, s.b);
  }
  static void store_flags(std::uint8_t* f, const i32x16& ca, const i32x16& cb) {
    store_interleaved(f, ca, cb);
  }
};

struct run_result {
  double sum_sq;
  std::uint32_t changed;  ///< counted only without flags
  bool exact_needed;      ///< the caller must recompute sum_sq (and non-finite) exactly
  std::size_t done;       ///< weights handled; the caller folds the rest
};

/// Vectorised fold of the first floor(len / 32) * 32 weights of a run.
template <bool Flags, class T>
inline run_result fold_steps(const T* prev, const T* next, std::size_t len, float tau,
                             std::uint8_t* __restrict flags) {
  const std::size_t steps = len / 32;
  const f32x16 tv = f32x16{} + tau;
  const u32x16 abs_mask = u32x16{} + 0x7fffffffu;
  f64x8 acc_lo{}, acc_hi{};
  i32x16 count{};
  u32x16 any{};
  for (std::size_t s = 0; s < steps;) {
    const std::size_t block_end = s + 4 < steps ? s + 4 : steps;  // <= 8 float squares per lane
    f32x16 sq{};
    for (; s < block_end; ++s) {
      step p, n;
      loader<T>::load(prev + 32 * s, p);
      loader<T>::load(next + 32 * s, n);
      const f32x16 da = n.a - p.a, db = n.b - p.b;
      const u32x16 aa = (u32x16)da & abs_mask, ab = (u32x16)db & abs_mask;
      // rule::changed: not (|d| <= tau), so NaN counts as changed.
      const i32x16 ca = ~((f32x16)aa <= tv), cb = ~((f32x16)ab <= tv);
      if constexpr (Flags)
        loader<T>::store_flags(flags + 32 * s, ca, cb);
      else
        count -= ca + cb;
      any |= aa | ab;
      sq += da * da;
      sq += db * db;
    }
    acc_lo += __builtin_convertvector(__builtin_shufflevector(sq, sq, 0, 1, 2, 3, 4, 5, 6, 7), f64x8);
    acc_hi += __builtin_convertvector(__builtin_shufflevector(sq, sq, 8, 9, 10, 11, 12, 13, 14, 15), f64x8);
  }
  const f64x8 acc = acc_lo + acc_hi;
  double sum = 0;
  for (int k = 0; k < 8; ++k) sum += acc[k];
  std::uint32_t changed = 0, nonzero = 0;
  for (int k = 0; k < 16; ++k) {
    changed += static_cast<std::uint32_t>(count[k]);
    nonzero |= any[k];
  }
  const bool overflow_or_nan = !(sum <= rule::max_finite<double>());
  const bool underflow = nonzero != 0 && sum < 4.81482486096808e-35;  // 2^-114
  return {sum, changed, overflow_or_nan || underflow, steps * 32};
}

}  // namespace fevo::cpu::detail::simd
#endif
