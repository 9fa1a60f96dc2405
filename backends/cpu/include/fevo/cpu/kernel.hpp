// The CPU backend's fused pass over one filter. Host only; vectorised with the vector
// extensions of simd.hpp where the compiler has them, and with `omp simd` otherwise.
#pragma once

#include <fevo/config.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX2__) || defined(__AVX512BW__)
#include <immintrin.h>
#endif

#include <fevo/accumulator.hpp>
#include <fevo/compute.hpp>

#include "simd.hpp"

namespace fevo::cpu::detail {

/// Elements per vectorised run: flags for one run fit in L1 next to the data.
inline constexpr std::size_t run_length = 4096;
/// Scratch one thread needs: run_length flag bytes, then their bits (+ a padding word).
inline constexpr std::size_t scratch_bytes = run_length + (run_length / 64 + 1) * 8;

struct run_totals {
  double sum_sq;
  std::uint32_t changed;    ///< only when counted (Flags == false)
  std::uint32_t nonfinite;
};

/// The accumulator's fold() over a contiguous run of weights [from, len), in plain loops that
/// the compiler vectorises. Exact: d^2 in double as in fold().
template <bool Flags, class T>
inline run_totals fold_run_exact(const T* prev, const T* next, std::size_t from, std::size_t len,
                                 compute_t<T> tau, std::uint8_t* __restrict flags) {
  double sum_sq = 0;
  std::uint32_t changed = 0;
  if constexpr (Flags) {
#pragma omp simd reduction(+ : sum_sq)
    for (std::size_t j = from; j < len; ++j) {
      const compute_t<T> d = load(next[j]) - load(prev[j]);
      flags[j] = rule::changed(rule::magnitude(d), tau);
      sum_sq += rule::square(d);
    }
  } else {
#pragma omp simd reduction(+ : sum_sq, changed)
    for (std::size_t j = from; j < len; ++j) {
      const compute_t<T> d = load(next[j]) - load(prev[j]);
      changed += rule::changed(rule::magnitude(d), tau);
      sum_sq += rule::square(d);
    }
  }
  return {sum_sq, changed, 0};
}

/// Counts the non-finite changes of a run, and its exact sum of squares.
template <class T>
inline run_totals recount_run(const T* prev, const T* next, std::size_t len) {
  double sum_sq = 0;
  std::uint32_t nonfinite = 0;
  for (std::size_t j = 0; j < len; ++j) {
    const compute_t<T> d = load(next[j]) - load(prev[j]);
    nonfinite += rule::nonfinite(rule::magnitude(d));
    sum_sq += rule::square(d);
  }
  return {sum_sq, 0, nonfinite};
}

/// The accumulator's fold() over a contiguous run of at most run_length weights, vectorised.
/// With Flags, flags[j] = 1 where weight j changed and the caller counts them (R_ic, S);
/// without, the changed weights are counted here. Non-finite changes are not tested per element:
/// any of them makes the run's sum of squares non-finite, and only then is the run recounted.
template <bool Flags, class T>
inline run_totals fold_run(const T* prev, const T* next, std::size_t len, compute_t<T> tau,
                           std::uint8_t* __restrict flags) {
  run_totals r{0, 0, 0};
  bool exact_needed = false;
  std::size_t done = 0;
#if FEVO_CPU_VECTOR_EXTENSIONS
  if constexpr (std::is_same_v<compute_t<T>, float>) {
    const simd::run_result v = simd::fold_steps<Flags>(prev, next, len, tau, flags);
    r.sum_sq = v.sum_sq;
    r.changed = v.changed;
    exact_needed = v.exact_needed;
    done = v.done;
  }
#endif
  const run_totals tail = fold_run_exact<Flags>(prev, next, done, len, tau, flags);
  r.sum_sq += tail.sum_sq;
  r.changed += tail.changed;
  // Rare: some d is NaN or Inf, a square overflowed, or float squares underflowed.
  if (exact_needed || !(r.sum_sq <= rule::max_finite<double>())) {
    const run_totals exact = recount_run(prev, next, len);
    r.sum_sq = exact.sum_sq;
    r.nonfinite = exact.nonfinite;
  }
  return r;
}

/// Packs len flag bytes (0 or 1) into bits: bit j of words[j / 64] is flags[j]. Writes
/// ceil(len / 64) words and one zero word after them (read by window()).
inline void pack_flags(const std::uint8_t* flags, std::size_t len, std::uint64_t* words) {
  const std::size_t full = len / 64;
  for (std::size_t w = 0; w < full; ++w) {
    const std::uint8_t* f = flags + 64 * w;
    std::uint64_t bits;
#if defined(__AVX512BW__)
    bits = _mm512_test_epi8_mask(_mm512_loadu_si512(f), _mm512_set1_epi8(1));
#elif defined(__AVX2__)
    const auto lo = static_cast<std::uint32_t>(_mm256_movemask_epi8(
        _mm256_slli_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(f)), 7)));
    const auto hi = static_cast<std::uint32_t>(_mm256_movemask_epi8(
        _mm256_slli_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(f + 32)), 7)));
    bits = std::uint64_t(lo) | (std::uint64_t(hi) << 32);
#else
    bits = 0;
    for (int k = 0; k < 8; ++k) {  // 8 bytes of 0/1 times this constant gather into the top byte
      std::uint64_t x;
      std::memcpy(&x, f + 8 * k, 8);
      bits |= ((x * 0x0102040810204080ULL) >> 56) << (8 * k);
    }
#endif
    words[w] = bits;
  }
  std::size_t nw = full;
  if (len % 64) {
    std::uint64_t bits = 0;
    for (std::size_t j = 64 * full; j < len; ++j) bits |= std::uint64_t(flags[j]) << (j - 64 * full);
    words[nw++] = bits;
  }
  words[nw] = 0;
}

/// The 64 bits starting at bit `at` (the padding word keeps the read in bounds).
inline std::uint64_t window(const std::uint64_t* words, std::size_t at) {
  const std::size_t w = at / 64, sh = at % 64;
  return sh ? (words[w] >> sh) | (words[w + 1] << (64 - sh)) : words[w];
}

struct channel_counts {
  std::uint64_t changed;  ///< sum of R_ic
  std::uint64_t zeros;    ///< channels with R_ic == 0
};

/// R_ic of `nc` consecutive channels of `hw` flags each (into r when not null), their sum and
/// how many are zero. Without r, k = 64 / hw channels are tested at once: with L the low hw-1
/// bits and H the top bit of each hw-bit group, ((x & L) + L | x) & H has a group's top bit set
/// exactly when the group is not all zero, and no carry crosses into the next group.
inline channel_counts count_channels(const std::uint8_t* flags, std::size_t nc, std::size_t hw,
                                     std::uint32_t* r, std::uint64_t* words) {
  const std::size_t len = nc * hw;
  pack_flags(flags, len, words);
  channel_counts t{0, 0};
  for (std::size_t w = 0; w < (len + 63) / 64; ++w)
    t.changed += static_cast<std::uint64_t>(__builtin_popcountll(words[w]));
  if (r || hw > 64) {
    for (std::size_t c = 0; c < nc; ++c) {
      std::uint32_t rc = 0;
      for (std::size_t o = 0; o < hw; o += 64) {
        const std::size_t take = hw - o < 64 ? hw - o : 64;
        const std::uint64_t x = window(words, c * hw + o);
        rc += static_cast<std::uint32_t>(__builtin_popcountll(take == 64 ? x : x & ((1ULL << take) - 1)));
      }
      t.zeros += (rc == 0);
      if (r) r[c] = rc;
    }
    return t;
  }
  if (hw == 1) {
    t.zeros = nc - t.changed;
    return t;
  }
  const std::size_t k = 64 / hw;
  std::uint64_t group = (hw == 64) ? ~0ULL : (1ULL << hw) - 1, low = 0, top = 0;
  for (std::size_t g = 0; g < k; ++g) {
    low |= (group >> 1) << (g * hw);
    top |= (1ULL << (hw - 1)) << (g * hw);
  }
  std::size_t c = 0;
  for (; c + k <= nc; c += k) {
    const std::uint64_t x = window(words, c * hw);
    t.zeros += k - static_cast<std::uint64_t>(__builtin_popcountll((((x & low) + low) | x) & top));
  }
  for (; c < nc; ++c) t.zeros += (window(words, c * hw) & group) == 0;
  return t;
}

/// How a task's memory is walked, decided once per layer.
enum class walk {
  packed,   ///< each filter's C*H*W weights are contiguous in both snapshots
  rows,     ///< each row of W weights is contiguous in both snapshots
  general,  ///< any strides: element by element
};

template <class V>
inline bool packed_filter(const V& v) {
  const std::size_t H = v.rows(), W = v.cols(), C = v.channels();
  return (W == 1 || v.stride(3) == 1) && (H == 1 || v.stride(2) == W) && (C == 1 || v.stride(1) == H * W);
}
template <class V>
inline bool packed_rows(const V& v) {
  return v.cols() == 1 || v.stride(3) == 1;
}
template <class V>
inline walk choose_walk(const V& a, const V& b) {
  if (packed_filter(a) && packed_filter(b)) return walk::packed;
  if (packed_rows(a) && packed_rows(b) && a.cols() >= 8) return walk::rows;
  return walk::general;
}

/// Folds filter i of the task into `out`; writes R_ic into r_row when it is not null.
template <class T>
inline void fold_filter(const layer_task<T, host_space>& t, walk how, std::size_t i, partial& out,
                        std::uint32_t* r_row, std::uint8_t* flags, std::uint64_t* bits) {
  const auto& a = t.prev;
  const auto& b = t.next;
  const std::size_t C = a.channels(), H = a.rows(), W = a.cols(), HW = H * W;
  const bool need_channels = (t.want & (want_Z | want_R)) != 0;
  partial f;
  if (how == walk::packed) {
    const T* pa = a.data_handle() + i * a.stride(0);
    const T* pb = b.data_handle() + i * b.stride(0);
    if (HW <= run_length) {
      // Runs of whole channels; flags give each channel's count.
      const std::size_t per_run = run_length / HW;
      for (std::size_t c0 = 0; c0 < C; c0 += per_run) {
        const std::size_t nc = (C - c0 < per_run) ? C - c0 : per_run;
        const std::size_t off = c0 * HW, len = nc * HW;
        run_totals r;
        if (need_channels && HW == 1 && !r_row) {
          // One weight per channel: the zero channels are the unchanged weights.
          r = fold_run<false>(pa + off, pb + off, len, t.tau, flags);
          f.changed += r.changed;
          f.zero_channels += nc - r.changed;
        } else if (need_channels) {
          r = fold_run<true>(pa + off, pb + off, len, t.tau, flags);
          const channel_counts cc =
              count_channels(flags, nc, HW, r_row ? r_row + c0 : nullptr, bits);
          f.changed += cc.changed;
          f.zero_channels += cc.zeros;
        } else {
          r = fold_run<false>(pa + off, pb + off, len, t.tau, flags);
          f.changed += r.changed;
        }
        f.sum_sq += r.sum_sq;
        f.nonfinite += r.nonfinite;
        f.weights += len;
        f.channels += nc;
      }
    } else {
      // Channels larger than one run: sum the runs of each channel.
      for (std::size_t c = 0; c < C; ++c) {
        std::uint64_t rc = 0;
        for (std::size_t o = 0; o < HW; o += run_length) {
          const std::size_t len = (HW - o < run_length) ? HW - o : run_length;
          const run_totals r = fold_run<false>(pa + c * HW + o, pb + c * HW + o, len, t.tau, flags);
          f.sum_sq += r.sum_sq;
          rc += r.changed;
          f.nonfinite += r.nonfinite;
        }
        f.changed += rc;
        f.weights += HW;
        if (r_row) r_row[c] = static_cast<std::uint32_t>(rc);
        close_channel(f, rc);
      }
    }
  } else {
    for (std::size_t c = 0; c < C; ++c) {
      partial ch;
      for (std::size_t h = 0; h < H; ++h) {
        const T* pa = &a(i, c, h, 0);
        const T* pb = &b(i, c, h, 0);
        if (how == walk::rows) {
          for (std::size_t o = 0; o < W; o += run_length) {
            const std::size_t len = (W - o < run_length) ? W - o : run_length;
            const run_totals r = fold_run<false>(pa + o, pb + o, len, t.tau, flags);
            ch.sum_sq += r.sum_sq;
            ch.changed += r.changed;
            ch.nonfinite += r.nonfinite;
            ch.weights += len;
          }
        } else {
          const std::size_t sa = a.stride(3), sb = b.stride(3);
          for (std::size_t w = 0; w < W; ++w) fold(ch, pa[w * sa], pb[w * sb], t.tau);
        }
      }
      if (r_row) r_row[c] = static_cast<std::uint32_t>(ch.changed);
      close_channel(ch, ch.changed);
      merge(f, ch);
    }
  }
  out = f;
}

}  // namespace fevo::cpu::detail
