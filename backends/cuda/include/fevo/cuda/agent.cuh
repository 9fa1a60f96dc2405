// The agent of fevo::cuda's fused pass: the reduction of one filter (or a few small ones) by a
// warp, part of a warp, or a block, written once against a tuning (tuning.hpp). kernels.cuh and
// the experimental schedules (experimental/work_queue.cuh) hand it filters. Needs nvcc (or the
// host emulator of tests/simt, which declares the device operations of device_ops.cuh first).
//
// A filter's weights are folded with the core's element rules (fevo/element.hpp):
//   - packed layers (each filter's C*H*W weights contiguous in both snapshots, 16-byte aligned
//     filters) are read with 16-byte vector loads, vectors_per_thread in flight per thread, the
//     next round's lines (or the next filter's first) prefetched into L2 meanwhile; any other
//     strides use element loads, which are still coalesced when consecutive weights are adjacent;
//   - each weight's "changed" flag goes into a bitset in shared memory (one per warp, or the
//     whole block's in block mode), assembled a word at a time with warp shuffles or ballots, from
//     which the per-(filter, channel) counts R_ic, the zero channels (Z) and the changed count (S)
//     come after the pass, in the same read of memory (a packed 1x1 layer without R_ic needs no
//     bitset: its zero channels are its unchanged weights);
//   - D is summed per thread in double (exact squares) and reduced in a fixed order.
// With Advance, each next weight is also stored over the prev weight it was read with
// (compare-and-advance: 12 bytes of traffic per f32 weight instead of 16).
#pragma once

#include <fevo/config.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <fevo/accumulator.hpp>
#include <fevo/element.hpp>

#include "descriptor.hpp"

#ifdef __CUDACC__
#include "device_ops.cuh"
#endif

namespace fevo::cuda::detail {

/// Sum over each aligned group of p lanes, p a power of two up to 32 (every lane of the warp calls
/// it; each lane gets its group's sum, the same in every lane of the group: the butterfly adds
/// the same pairs). warp_sum: the whole warp's.
template <class V>
__device__ inline V group_sum(V v, int p) {
  for (int o = p / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class V>
__device__ inline V warp_sum(V v) {
  return group_sum(v, 32);
}

/// The three counts of a filter of at most warp_bits weights (so each fits 21 bits), summed over
/// groups of p lanes in one exchange of a packed 64-bit word.
struct filter_counts {
  unsigned long long changed, nonfinite, zeros;
};
__device__ inline filter_counts group_counts(unsigned long long changed, unsigned long long nonfinite,
                                             unsigned long long zeros, int p) {
  static_assert(warp_bits < (1u << 21), "a filter's counts must fit 21 bits");
  constexpr unsigned long long mask = (1ull << 21) - 1;
  const unsigned long long s = group_sum(changed | (nonfinite << 21) | (zeros << 42), p);
  return {s & mask, (s >> 21) & mask, s >> 42};
}

/// Number of set bits in [from, from + len) of a bitset of 32-bit words.
__device__ inline std::uint32_t count_bits(const std::uint32_t* bits, std::uint32_t from, std::uint32_t len) {
  std::uint32_t n = 0;
  while (len > 0) {
    const std::uint32_t word = from >> 5, bit = from & 31;
    const std::uint32_t take = (32 - bit < len) ? 32 - bit : len;
    const std::uint32_t mask = take == 32 ? 0xffffffffu : (((1u << take) - 1u) << bit);
    n += __popc(bits[word] & mask);
    from += take;
    len -= take;
  }
  return n;
}

/// 16 bytes of a packed filter: the unit of its vector loads.
template <class T>
struct alignas(16) vector16 {
  T v[16 / sizeof(T)];
};

/// The same 16 bytes as four 32-bit words (tuning constant word_loads): loaded and stored as
/// words, a vector of 16-bit elements is taken apart only to be folded, so nvcc issues every load
/// of a round before the first is used. may_alias: the words are read from and written over the
/// snapshots' elements, which a compiler may otherwise assume they never alias.
struct alignas(16) [[gnu::may_alias]] words16 {
  std::uint32_t w[4];
};
template <class T>
__device__ inline const vector16<T>& as_vector(const vector16<T>& x) {
  return x;
}
template <class T>
__device__ inline vector16<T> as_vector(const words16& x) {
  static_assert(sizeof(vector16<T>) == sizeof(words16), "16 bytes either way");
  vector16<T> v;
  std::memcpy(&v, &x, sizeof v);
  return v;
}

/// Prefetches vectors [from, from + p * vectors_per_thread) ∩ [0, nv) of a packed filter in both
/// snapshots (the next round of fold_packed): thread t of p takes one line, the first half of the
/// threads prev's lines, the second half next's.
template <class Tuning, class Vec>
__device__ inline void prefetch_round(const Vec* vp, const Vec* vn, std::uint32_t from, std::uint32_t nv, int t,
                                      int p) {
  constexpr std::uint32_t per_line = 128 / sizeof(Vec);
  const std::uint32_t lines = std::uint32_t(p) * Tuning::vectors_per_thread / per_line;  // per snapshot
  for (std::uint32_t l = std::uint32_t(t); l < 2 * lines; l += std::uint32_t(p)) {
    const std::uint32_t v = from + (l % lines) * per_line;
    if (v < nv) prefetch_l2((l < lines ? vp : vn) + v);
  }
}

/// Per-thread accumulation of weight pairs (the accumulator's fold, minus the channel logic).
template <class T>
struct lane_totals {
  double sum_sq = 0;
  unsigned long long changed = 0, nonfinite = 0;

  __device__ bool add(const T& p, const T& n, compute_t<T> tau) {
    const compute_t<T> d = load(n) - load(p);
    const compute_t<T> a = rule::magnitude(d);
    const bool c = rule::changed(a, tau);
    sum_sq += rule::square(d);
    changed += c;
    nonfinite += rule::nonfinite(a);
    return c;
  }

  /// The V weight pairs of a vector: their squares summed as a tree and added once, the counts
  /// added once by popcount (short dependency chains: a chain of V double adds per vector kept
  /// each warp waiting on its own arithmetic). Returns the changed flags, bit k for pair k.
  template <int V>
  __device__ std::uint32_t add_vector(const T (&p)[V], const T (&n)[V], compute_t<T> tau) {
    static_assert(V > 0 && V <= 32 && (V & (V - 1)) == 0, "a power of two up to 32 pairs");
    double sq[V];
    std::uint32_t c = 0, nf = 0;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const compute_t<T> d = load(n[k]) - load(p[k]);
      const compute_t<T> a = rule::magnitude(d);
      c |= std::uint32_t(rule::changed(a, tau)) << k;
      nf |= std::uint32_t(rule::nonfinite(a)) << k;
      sq[k] = rule::square(d);
    }
#pragma unroll
    for (int w = V / 2; w > 0; w /= 2) {
#pragma unroll
      for (int k = 0; k < w; ++k) sq[k] += sq[k + w];
    }
    sum_sq += sq[0];
    changed += unsigned(__popc(c));
    nonfinite += unsigned(__popc(nf));
    return c;
  }
};

/// Index of the layer that holds work item `item` (the last whose first_item <= item).
template <class T>
__device__ inline int find_layer(const layer_desc<T>* layers, int n_layers, std::size_t item) {
  int lo = 0, hi = n_layers;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (layers[mid].first_item <= item) lo = mid; else hi = mid;
  }
  return lo;
}

/// Work items of layer k.
template <class T>
__device__ inline std::size_t layer_items(const layer_desc<T>* layers, int n_layers, std::size_t n_items, int k) {
  return (k + 1 < n_layers ? layers[k + 1].first_item : n_items) - layers[k].first_item;
}

/// What a warp does besides folding while a filter's last round of loads is in flight
/// (fold_packed): nothing, but in a work-queue pass (experimental/work_queue.cuh).
struct plain_rounds {
  __device__ void last_round() const {}
};

/// Stores the changed flags `m` of vector v (bit k: its weight k) in the bitset `bits`, if `in`
/// (v is one of the filter's vectors that this lane read). Vector v holds bits [v*V, v*V + V):
/// word v / G, shift (v % G) * V, where G = 32 / V lanes, consecutive, hold a word's vectors
/// (v % G == t % G); they assemble it with shuffles and the first of them writes it. Every lane
/// of the warp calls it.
template <int V>
__device__ inline void store_flags(std::uint32_t* bits, std::uint32_t m, std::uint32_t v, int t, bool in) {
  constexpr int G = 32 / V;
  static_assert(32 % V == 0, "the vector width must tile bitset words");
  std::uint32_t w = m << ((t % G) * V);
#pragma unroll
  for (int o = 1; o < G; o <<= 1) w |= __shfl_xor_sync(0xffffffffu, w, o);
  if (t % G == 0 && in) bits[v / G] = w;
}

/// Folds a packed filter of `size` weights (a multiple of the vector width) with p threads
/// (thread t), 16-byte loads, vectors_per_thread in flight per thread, flags into `bits`.
/// Every bitset word that covers [0, size) is written (bits past size as 0). All 32 lanes of
/// each participating warp must call it (warp shuffles), with the same size; p is a multiple of
/// 32 (a warp or a block) or, in a shared warp, 16 or 8 (at least min_group<T>): aligned groups
/// of lanes, where a group with no filter calls it with `valid` false. p is an argument, not a
/// template parameter: a constant once inlined where the caller's is, the layer's group in the
/// shared-warp kernel, where one copy of this loop serves every group size (each copy of it
/// costs the kernel registers).
/// While a round's loads are in flight, the next round's lines are prefetched into L2: this
/// filter's next round or, in its last, the first round of `after_p` / `after_n` (the next filter
/// of the same size this group folds; null if none). `bits` null: no flags kept (every lane of the
/// warp passes null or not alike). `rounds`: what else the warp does while the loads of the
/// filter's last round are in flight; every lane calls it once.
template <class Tuning, class T, bool Advance, class Rounds = plain_rounds>
__device__ inline void fold_packed(T* pp, const T* pn, std::uint32_t size, int t, int p, compute_t<T> tau,
                                   lane_totals<T>& acc, std::uint32_t* bits, bool valid = true,
                                   const T* after_p = nullptr, const T* after_n = nullptr,
                                   const Rounds& rounds = Rounds{}) {
  constexpr int V = 16 / sizeof(T);  // elements per vector
  constexpr int U = Tuning::vectors_per_thread;
  using vec = vector16<T>;
  using held = std::conditional_t<Tuning::word_loads, words16, vec>;  // what a load brings
  if constexpr (Tuning::word_loads) {
    assume_global(pp);
    assume_global(pn);
  }
  const vec* vp = reinterpret_cast<const vec*>(pp);
  const vec* vn = reinterpret_cast<const vec*>(pn);
  const std::uint32_t nv = size / V;  // 32-bit: a filter on this path has at most block_bits weights
  const std::uint32_t own = valid ? nv : 0;  // vectors this thread's group reads
  for (std::uint32_t base = 0; base < nv; base += std::uint32_t(p) * U) {
    held a[U], b[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::uint32_t v = base + std::uint32_t(u * p + t);
      if (v < own) {
        a[u] = reinterpret_cast<const held*>(pp)[v];
        b[u] = reinterpret_cast<const held*>(pn)[v];
      }
    }
    const std::uint32_t round = std::uint32_t(p) * U;
    if (base + round < own) prefetch_round<Tuning>(vp, vn, base + round, own, t, p);
    else if (after_p && valid)
      prefetch_round<Tuning>(reinterpret_cast<const vec*>(after_p), reinterpret_cast<const vec*>(after_n), 0, nv, t, p);
    if (base + round >= nv) rounds.last_round();
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::uint32_t v = base + std::uint32_t(u * p + t);
      std::uint32_t m = 0;
      if (v < own) {
        m = acc.add_vector(as_vector<T>(a[u]).v, as_vector<T>(b[u]).v, tau);
        if (Advance) reinterpret_cast<held*>(pp)[v] = b[u];
      }
      if (bits) store_flags<V>(bits, m, v, t, v < own);
    }
  }
}

/// Folds filter i of a layer with any strides with P threads (thread t); element e of the
/// filter is (c, h, w) = (e / HW, e / W % H, e % W). Flags into `bits` by warp ballots.
template <class T, bool Advance, int P>
__device__ inline void fold_strided(const layer_desc<T>& L, std::size_t i, std::uint32_t size, int t,
                                    lane_totals<T>& acc, std::uint32_t* bits) {
  // 32-bit element indices: a filter on this path has at most block_bits weights.
  const std::uint32_t H = std::uint32_t(L.ext[2]), W = std::uint32_t(L.ext[3]), HW = H * W;
  const int lane = t & 31;
  for (std::uint32_t base = 0; base < size; base += P) {
    const std::uint32_t e = base + std::uint32_t(t);
    bool c = false;
    if (e < size) {
      const std::size_t ch = e / HW, h = (e / W) % H, w = e % W;
      const std::size_t op = i * L.sp[0] + ch * L.sp[1] + h * L.sp[2] + w * L.sp[3];
      const std::size_t on = i * L.sn[0] + ch * L.sn[1] + h * L.sn[2] + w * L.sn[3];
      const T b = L.next[on];
      c = acc.add(L.prev[op], b, L.tau);
      if (Advance) L.prev[op] = b;
    }
    const std::uint32_t word = __ballot_sync(0xffffffffu, c);
    if (lane == 0) bits[(base + std::uint32_t(t - lane)) >> 5] = word;
  }
}

/// Zero channels of a filter from its bitset, channels spread over p threads; R_ic to `r` if given.
__device__ inline unsigned int channel_zeros(const std::uint32_t* bits, std::uint32_t C, std::uint32_t HW, int t,
                                             int p, std::uint32_t* r) {
  unsigned int zeros = 0;
  for (std::uint32_t c = t; c < C; c += std::uint32_t(p)) {
    const std::uint32_t rc = count_bits(bits, c * HW, HW);
    zeros += (rc == 0);
    if (r) r[c] = rc;
  }
  return zeros;
}

/// The end of a warp-mode filter's fold: filter i of layer L (past the layer's last filter:
/// nothing), folded by the p lanes of its group (lane t of them) into `acc`, its flags in the
/// group's bitset `own` (none where `flat`: a packed 1x1 layer without R_ic, whose zero channels
/// are its unchanged weights, C - changed). Counts the zero channels (and R_ic, if the layer wants
/// them) and stores the filter's totals. Every lane of the warp calls it. (`valid`: i < L.ext[0];
/// C, HW: the layer's channels and kernel size, passed as the caller has them, which saves
/// registers.)
template <class T>
__device__ inline void store_group_totals(const layer_desc<T>& L, std::size_t i, int t, int p, bool valid, bool flat,
                                          std::size_t C, std::size_t HW, const lane_totals<T>& acc,
                                          const std::uint32_t* own, partial* out, std::uint32_t* r) {
  __syncwarp();
  std::uint32_t* r_filter = valid && L.r_offset != no_r ? r + L.r_offset + i * C : nullptr;
  const unsigned zeros = valid && !flat ? channel_zeros(own, std::uint32_t(C), std::uint32_t(HW), t, p, r_filter) : 0;
  const filter_counts n = group_counts(acc.changed, acc.nonfinite, zeros, p);
  partial f;
  f.sum_sq = group_sum(acc.sum_sq, p);
  f.changed = n.changed;
  f.nonfinite = n.nonfinite;
  f.zero_channels = flat ? C - n.changed : n.zeros;
  f.weights = C * HW;
  f.channels = C;
  if (t == 0 && valid) out[L.first_filter + i] = f;
}

/// Warp mode, filters of at most warp_bits weights: filters i0, i0 + 1, ... of layer L, p lanes
/// each (fewer than 32: a shared warp, packed layers only), each group with its share of the
/// warp's bitset; groups past the layer's last filter idle along. `ahead`: how many filters on
/// the group's next filter is (its next item; 0: none), whose first round is prefetched.
/// `rounds`: as in fold_packed (packed layers).
template <class Tuning, class T, bool Advance, class Rounds = plain_rounds>
__device__ inline void fold_group(const layer_desc<T>& L, std::size_t i0, int p, std::size_t ahead,
                                  std::uint32_t* bits, partial* out, std::uint32_t* r,
                                  const Rounds& rounds = Rounds{}) {
  const int lane = threadIdx.x & 31, g = lane / p, t = lane % p;
  const std::size_t i = i0 + std::size_t(g), C = L.ext[1], HW = L.ext[2] * L.ext[3], size = C * HW;
  const bool valid = i < L.ext[0];  // always, with a warp per filter
  const bool flat = L.packed && HW == 1 && L.r_offset == no_r;  // the same in every lane
  std::uint32_t* own = bits + std::size_t(g) * (warp_bits / 32 / std::size_t(32 / p));
  lane_totals<T> acc;
  if (L.packed) {
    const std::size_t f = valid ? i : 0, after = i + ahead;
    const bool more = ahead != 0 && after < L.ext[0];
    fold_packed<Tuning, T, Advance>(L.prev + f * L.sp[0], L.next + f * L.sn[0], std::uint32_t(size), t, p, L.tau,
                                    acc, flat ? nullptr : own, valid, more ? L.prev + after * L.sp[0] : nullptr,
                                    more ? L.next + after * L.sn[0] : nullptr, rounds);
  } else {
    fold_strided<T, Advance, 32>(L, i, std::uint32_t(size), lane, acc, own);
  }
  store_group_totals(L, i, t, p, valid, flat, C, HW, acc, own, out, r);
}

/// Warp mode, filters larger than a warp's bitset: filter i of layer L by one warp, channel by
/// channel, R_ic from ballots.
template <class T, bool Advance>
__device__ inline void fold_channels(const layer_desc<T>& L, std::size_t i, partial* out, std::uint32_t* r) {
  const int lane = threadIdx.x & 31;
  const std::size_t C = L.ext[1], H = L.ext[2], W = L.ext[3], HW = H * W;
  std::uint32_t* r_filter = L.r_offset != no_r ? r + L.r_offset + i * C : nullptr;
  lane_totals<T> acc;
  unsigned long long zeros = 0;
  for (std::size_t ch = 0; ch < C; ++ch) {
    std::uint32_t rc = 0;
    for (std::size_t base = 0; base < HW; base += 32) {
      const std::size_t e = base + lane;
      bool c = false;
      if (e < HW) {
        const std::size_t h = e / W, w = e % W;
        const std::size_t op = i * L.sp[0] + ch * L.sp[1] + h * L.sp[2] + w * L.sp[3];
        const std::size_t on = i * L.sn[0] + ch * L.sn[1] + h * L.sn[2] + w * L.sn[3];
        const T b = L.next[on];
        c = acc.add(L.prev[op], b, L.tau);
        if (Advance) L.prev[op] = b;
      }
      rc += __popc(__ballot_sync(0xffffffffu, c));
    }
    zeros += (rc == 0);
    if (lane == 0 && r_filter) r_filter[ch] = rc;
  }
  partial f;
  f.sum_sq = warp_sum(acc.sum_sq);
  f.changed = warp_sum(acc.changed);
  f.nonfinite = warp_sum(acc.nonfinite);
  f.zero_channels = zeros;
  f.weights = C * HW;
  f.channels = C;
  if (lane == 0) out[L.first_filter + i] = f;
}

/// Per-warp totals of block mode, summed by thread 0 in warp order.
struct block_totals {
  double sum_sq[warps_per_block];
  unsigned long long changed[warps_per_block], nonfinite[warps_per_block], zeros[warps_per_block];
};

/// Block mode: filter i of layer L by the whole block, with the block's whole bitset.
/// `ahead`: as in fold_group (the block's next filter).
template <class Tuning, class T, bool Advance>
__device__ inline void fold_block(const layer_desc<T>& L, std::size_t i, std::size_t ahead, std::uint32_t* bits,
                                  block_totals& red, partial* out, std::uint32_t* r) {
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const std::size_t C = L.ext[1], HW = L.ext[2] * L.ext[3], size = C * HW;
  lane_totals<T> acc;
  if (L.packed) {
    const std::size_t after = i + ahead;
    const bool more = ahead != 0 && after < L.ext[0];
    fold_packed<Tuning, T, Advance>(L.prev + i * L.sp[0], L.next + i * L.sn[0], std::uint32_t(size), t,
                                    block_threads, L.tau, acc, bits, true,
                                    more ? L.prev + after * L.sp[0] : nullptr,
                                    more ? L.next + after * L.sn[0] : nullptr);
  } else
    fold_strided<T, Advance, block_threads>(L, i, std::uint32_t(size), t, acc, bits);
  __syncthreads();
  std::uint32_t* r_filter = L.r_offset != no_r ? r + L.r_offset + i * C : nullptr;
  const unsigned long long zeros =
      warp_sum((unsigned long long)channel_zeros(bits, std::uint32_t(C), std::uint32_t(HW), t, block_threads, r_filter));
  const double s = warp_sum(acc.sum_sq);
  const unsigned long long ch = warp_sum(acc.changed), nf = warp_sum(acc.nonfinite);
  if (lane == 0) {
    red.sum_sq[warp] = s;
    red.changed[warp] = ch;
    red.nonfinite[warp] = nf;
    red.zeros[warp] = zeros;
  }
  __syncthreads();
  if (t == 0) {
    partial f;
    for (int w = 0; w < warps_per_block; ++w) {
      f.sum_sq += red.sum_sq[w];
      f.changed += red.changed[w];
      f.nonfinite += red.nonfinite[w];
      f.zero_channels += red.zeros[w];
    }
    f.weights = size;
    f.channels = C;
    out[L.first_filter + i] = f;
  }
}

}  // namespace fevo::cuda::detail
