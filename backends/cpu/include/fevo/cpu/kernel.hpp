// The CPU backend's fused pass over one filter. Host only; vectorised with the vector
// extensions of simd.hpp where the compiler has them, and with `omp simd` otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <fevo/accumulator.hpp>
#include <fevo/compute.hpp>

#include "simd.hpp"

namespace fevo::cpu::detail {

/// Elements per vectorised run: flags for one run fit in L1 next to the data.
inline constexpr std::size_t run_length = 4096;

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

/// Number of set flags among len bytes of 0/1: the popcount of 8 such bytes is their sum.
template <std::size_t Len>
inline std::uint32_t count_flags(const std::uint8_t* f, std::size_t len = Len) {
  if constexpr (Len != 0) len = Len;  // a compile-time length unrolls the loops below
  std::uint32_t s = 0;
  std::size_t j = 0;
  for (; j + 8 <= len; j += 8) {
    std::uint64_t x;
    std::memcpy(&x, f + j, 8);
    s += static_cast<std::uint32_t>(__builtin_popcountll(x));
  }
  for (; j < len; ++j) s += f[j];
  return s;
}

struct channel_counts {
  std::uint64_t changed;  ///< sum of R_ic
  std::uint64_t zeros;    ///< channels with R_ic == 0
};

/// R_ic of `nc` consecutive channels of `hw` flags each (into r when not null), their sum and
/// how many are zero.
template <std::size_t HW>
inline channel_counts count_channels(const std::uint8_t* flags, std::size_t nc, std::size_t hw,
                                     std::uint32_t* r) {
  channel_counts t{0, 0};
  for (std::size_t c = 0; c < nc; ++c) {
    const std::uint32_t rc = count_flags<HW>(flags + c * hw, hw);
    t.changed += rc;
    t.zeros += (rc == 0);
    if (r) r[c] = rc;
  }
  return t;
}
inline channel_counts count_channels(const std::uint8_t* flags, std::size_t nc, std::size_t hw,
                                    std::uint32_t* r) {
  switch (hw) {  // the kernel sizes of real conv layers get unrolled loops
    case 1: return count_channels<1>(flags, nc, hw, r);
    case 9: return count_channels<9>(flags, nc, hw, r);
    case 25: return count_channels<25>(flags, nc, hw, r);
    case 49: return count_channels<49>(flags, nc, hw, r);
    default: return count_channels<0>(flags, nc, hw, r);
  }
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
                        std::uint32_t* r_row, std::uint8_t* flags) {
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
          const channel_counts cc = count_channels(flags, nc, HW, r_row ? r_row + c0 : nullptr);
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
