// The CPU backend's fused pass over one filter. Host only; vectorised with `omp simd`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <fevo/accumulator.hpp>
#include <fevo/compute.hpp>

namespace fevo::cpu::detail {

/// Elements per vectorised run: flags for one run fit in L1 next to the data.
inline constexpr std::size_t run_length = 4096;

struct run_totals {
  double sum_sq;
  std::uint32_t changed;
  std::uint32_t nonfinite;
};

/// The accumulator's fold() over a contiguous run of at most run_length weights, vectorised.
/// With Flags, flags[j] = 1 where weight j changed (used for R_ic and Z).
template <bool Flags, class T>
inline run_totals fold_run(const T* prev, const T* next, std::size_t len, compute_t<T> tau,
                           std::uint8_t* __restrict flags) {
  double sum_sq = 0;
  std::uint32_t changed = 0, nonfinite = 0;
#pragma omp simd reduction(+ : sum_sq, changed, nonfinite)
  for (std::size_t j = 0; j < len; ++j) {
    const compute_t<T> d = load(next[j]) - load(prev[j]);
    const compute_t<T> a = rule::magnitude(d);
    const bool c = rule::changed(a, tau);
    changed += c;
    nonfinite += rule::nonfinite(a);
    sum_sq += rule::square(d);
    if constexpr (Flags) flags[j] = c;
  }
  return {sum_sq, changed, nonfinite};
}

/// Number of set flags among len bytes of 0/1.
template <std::size_t Len>
inline std::uint32_t count_fixed(const std::uint8_t* f) {
  std::uint32_t s = 0;
  for (std::size_t j = 0; j < Len; ++j) s += f[j];
  return s;
}
inline std::uint32_t count_flags(const std::uint8_t* f, std::size_t len) {
  switch (len) {  // the kernel sizes of real conv layers, unrolled
    case 9: return count_fixed<9>(f);
    case 25: return count_fixed<25>(f);
    case 49: return count_fixed<49>(f);
    default: break;
  }
  std::uint32_t s = 0;
#pragma omp simd reduction(+ : s)
  for (std::size_t j = 0; j < len; ++j) s += f[j];
  return s;
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
        const run_totals r = need_channels ? fold_run<true>(pa + off, pb + off, len, t.tau, flags)
                                           : fold_run<false>(pa + off, pb + off, len, t.tau, flags);
        f.sum_sq += r.sum_sq;
        f.changed += r.changed;
        f.nonfinite += r.nonfinite;
        f.weights += len;
        if (!need_channels) {
          f.channels += nc;
        } else if (HW == 1 && !r_row) {
          f.channels += nc;
          f.zero_channels += nc - r.changed;  // one weight per channel
        } else {
          for (std::size_t c = 0; c < nc; ++c) {
            const std::uint32_t rc = count_flags(flags + c * HW, HW);
            if (r_row) r_row[c0 + c] = rc;
            close_channel(f, rc);
          }
        }
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
