// The fused CUDA kernels of fevo::cuda. Needs nvcc.
//
// fold_filters: one launch for every layer of a call. A table of per-layer descriptors
// (layer_desc) lives in device memory; each warp takes whole filters in a grid-stride loop, finds
// the filter's layer by binary search in the table, and folds the filter's weights with the
// core's element rules:
//   - packed layers (each filter's C*H*W weights contiguous in both snapshots, 16-byte aligned
//     filters) are read with 16-byte vector loads; any other strides use element loads, which
//     are still coalesced when consecutive weights are adjacent in memory;
//   - each weight's "changed" flag goes into a per-warp bitset in shared memory, from which the
//     per-(filter, channel) counts R_ic, the zero channels (Z) and the changed count (S) come
//     after the pass, in the same read of memory;
//   - D is summed per lane in double (exact squares) and reduced with warp shuffles.
// Filters with more than bitset_bits weights are folded channel by channel instead.
// With Advance, the kernel also stores each next weight over the prev weight it just read
// (compare-and-advance: 12 bytes of traffic per f32 weight instead of 16).
//
// reduce_layers: the second (and last) launch, one block per layer, merges the per-filter totals
// in a fixed tree order, so results are deterministic.
#pragma once

#include <cstddef>
#include <cstdint>

#include <fevo/accumulator.hpp>
#include <fevo/element.hpp>

namespace fevo::cuda::detail {

inline constexpr int warps_per_block = 8;
inline constexpr int block_threads = 32 * warps_per_block;
/// Bits of one warp's bitset: filters up to this many weights take the bitset path (4 KiB).
inline constexpr std::size_t bitset_bits = 32768;
inline constexpr std::size_t no_r = static_cast<std::size_t>(-1);

template <class T>
struct layer_desc {
  T* prev;  // mutable only for compare-and-advance
  const T* next;
  std::size_t ext[4];
  std::size_t sp[4];
  std::size_t sn[4];
  compute_t<T> tau;
  std::size_t first_filter;  ///< global index of this layer's filter 0
  std::size_t r_offset;      ///< start of this layer's R_ic in the R buffer, or no_r
  int packed;                ///< 1: vector path (see above)
};

__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline unsigned long long warp_sum(unsigned long long v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

/// Number of set bits in [from, from + len) of a bitset of 32-bit words.
__device__ inline std::uint32_t count_bits(const std::uint32_t* bits, std::size_t from, std::size_t len) {
  std::uint32_t n = 0;
  while (len > 0) {
    const std::size_t word = from >> 5, bit = from & 31;
    const std::size_t take = (32 - bit < len) ? 32 - bit : len;
    const std::uint32_t mask = take == 32 ? 0xffffffffu : (((1u << take) - 1u) << bit);
    n += __popc(bits[word] & mask);
    from += take;
    len -= take;
  }
  return n;
}

/// Per-lane accumulation of one weight pair (the accumulator's fold, minus the channel logic).
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
};

template <class T>
__device__ inline const layer_desc<T>& find_layer(const layer_desc<T>* layers, int n_layers,
                                                  std::size_t g) {
  int lo = 0, hi = n_layers;  // the last layer whose first_filter <= g
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (layers[mid].first_filter <= g) lo = mid; else hi = mid;
  }
  return layers[lo];
}

template <class T, bool Advance>
__global__ void __launch_bounds__(block_threads)
fold_filters(const layer_desc<T>* __restrict__ layers, int n_layers, std::size_t n_filters,
             partial* __restrict__ out, std::uint32_t* __restrict__ r) {
  __shared__ std::uint32_t bitsets[warps_per_block][bitset_bits / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  std::uint32_t* bits = bitsets[warp];
  for (std::size_t k = lane; k < bitset_bits / 32; k += 32) bits[k] = 0;
  __syncwarp();

  const std::size_t warps = std::size_t(gridDim.x) * warps_per_block;
  for (std::size_t g = std::size_t(blockIdx.x) * warps_per_block + warp; g < n_filters; g += warps) {
    const layer_desc<T>& L = find_layer(layers, n_layers, g);
    const std::size_t i = g - L.first_filter;
    const std::size_t C = L.ext[1], H = L.ext[2], W = L.ext[3], HW = H * W, size = C * HW;
    const compute_t<T> tau = L.tau;
    lane_totals<T> acc;
    partial f;

    if (size <= bitset_bits) {
      if (L.packed) {
        // 16-byte vector loads over the filter's contiguous weights.
        constexpr int V = 16 / sizeof(T);
        struct alignas(16) vec { T v[V]; };
        T* pp = L.prev + i * L.sp[0];
        const T* pn = L.next + i * L.sn[0];
        const vec* vp = reinterpret_cast<const vec*>(pp);
        const vec* vn = reinterpret_cast<const vec*>(pn);
        for (std::size_t e = std::size_t(lane) * V; e < size; e += 32 * V) {
          const vec a = vp[e / V], b = vn[e / V];
          std::uint32_t m = 0;
#pragma unroll
          for (int k = 0; k < V; ++k) m |= std::uint32_t(acc.add(a.v[k], b.v[k], tau)) << k;
          if (Advance) reinterpret_cast<vec*>(pp)[e / V] = b;
          if (m) {  // V consecutive bits starting at e; they may straddle two words
            const std::size_t w0 = e >> 5, sh = e & 31;
            atomicOr(&bits[w0], m << sh);
            if (sh + V > 32) atomicOr(&bits[w0 + 1], m >> (32 - sh));
          }
        }
      } else {
        // Any strides: element e of the filter is (c, h, w) = (e / HW, e / W % H, e % W).
        for (std::size_t base = 0; base < size; base += 32) {
          const std::size_t e = base + lane;
          bool c = false;
          if (e < size) {
            const std::size_t ch = e / HW, h = (e / W) % H, w = e % W;
            const std::size_t op = i * L.sp[0] + ch * L.sp[1] + h * L.sp[2] + w * L.sp[3];
            const std::size_t on = i * L.sn[0] + ch * L.sn[1] + h * L.sn[2] + w * L.sn[3];
            const T b = L.next[on];
            c = acc.add(L.prev[op], b, tau);
            if (Advance) L.prev[op] = b;
          }
          const std::uint32_t word = __ballot_sync(0xffffffffu, c);
          if (lane == 0) bits[base >> 5] = word;
        }
      }
      __syncwarp();
      // Channel counts from the bitset, a channel per lane; then clear the bits used.
      unsigned long long zeros = 0;
      for (std::size_t c = lane; c < C; c += 32) {
        const std::uint32_t rc = count_bits(bits, c * HW, HW);
        zeros += (rc == 0);
        if (L.r_offset != no_r) r[L.r_offset + i * C + c] = rc;
      }
      __syncwarp();
      for (std::size_t k = lane; k < (size + 31) / 32; k += 32) bits[k] = 0;
      __syncwarp();
      f.zero_channels = warp_sum(zeros);
    } else {
      // Large filters: channel by channel, R_ic from ballots.
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
            c = acc.add(L.prev[op], b, tau);
            if (Advance) L.prev[op] = b;
          }
          rc += __popc(__ballot_sync(0xffffffffu, c));
        }
        zeros += (rc == 0);
        if (lane == 0 && L.r_offset != no_r) r[L.r_offset + i * C + ch] = rc;
      }
      f.zero_channels = zeros;  // the same value in every lane
    }

    f.sum_sq = warp_sum(acc.sum_sq);
    f.changed = warp_sum(acc.changed);
    f.nonfinite = warp_sum(acc.nonfinite);
    f.weights = size;
    f.channels = C;
    if (lane == 0) out[g] = f;
  }
}

/// One block per layer: merges the layer's per-filter totals in a fixed order.
template <class T>
__global__ void __launch_bounds__(block_threads)
reduce_layers(const layer_desc<T>* __restrict__ layers, int n_layers, std::size_t n_filters,
              const partial* __restrict__ filters, partial* __restrict__ totals) {
  // Raw storage: __shared__ variables cannot have constructors.
  __shared__ alignas(partial) unsigned char storage[sizeof(partial) * block_threads];
  partial* part = reinterpret_cast<partial*>(storage);
  const int k = blockIdx.x;
  const std::size_t first = layers[k].first_filter;
  const std::size_t last = k + 1 < n_layers ? layers[k + 1].first_filter : n_filters;
  partial p;
  for (std::size_t g = first + threadIdx.x; g < last; g += block_threads) merge(p, filters[g]);
  part[threadIdx.x] = p;
  __syncthreads();
  for (int s = block_threads / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) merge(part[threadIdx.x], part[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) totals[k] = part[0];
}

}  // namespace fevo::cuda::detail
