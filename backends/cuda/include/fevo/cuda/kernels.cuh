// The two kernels of fevo::cuda's fused pass, launched by dispatch.hpp through a Device
// (runtime.cuh on a GPU). Needs nvcc (or the host emulator of tests/simt).
//
// fold_filters: one launch for every layer of a call. A table of per-layer descriptors
// (layer_desc, descriptor.hpp) lives in device memory. The work is cut into items, and each block
// takes items in a grid-stride loop, finding an item's layer by binary search in the table:
//   - warp mode (small filters): an item is warps_per_block consecutive filters, one per warp;
//   - block mode (filters of at least the tuning's block_from weights): an item is one filter,
//     read by the whole block, so a few hundred large filters still spread over every SM;
//   - shared warps (small packed filters, the tuning's share_from): each warp reads 2 or 4
//     filters at once, 16 or 8 lanes each (layer_desc::group), so a filter of a few hundred
//     weights still keeps every lane's loads in flight and the per-filter reductions are shared.
// Filters larger than the bitset of their mode are folded channel by channel by one warp. The
// agent (agent.cuh) folds each filter and stores its totals. The experimental schedules hand the
// filters out from a work queue instead (experimental/work_queue.cuh).
//
// reduce_layers: a second launch, one block per layer, merges each layer's per-filter totals in a
// fixed order, so results are deterministic.
#pragma once

#include <fevo/config.hpp>

#include <cstddef>
#include <cstdint>

#include "agent.cuh"
#include "experimental/work_queue.cuh"

namespace fevo::cuda::detail {

/// Shared: warp-mode layers have layer_desc::group lanes per filter; otherwise 32, a compile-time
/// constant (the loops of a run-time group size take more registers). `queue`: a work-queue
/// schedule's counter, zero at the launch (null otherwise); its items are then units.
template <class Tuning, class T, bool Advance, bool Shared>
__global__ void __launch_bounds__(block_threads, Tuning::min_blocks_per_sm)
fold_filters(const layer_desc<T>* __restrict__ layers, int n_layers, std::size_t n_items, partial* __restrict__ out,
             std::uint32_t* __restrict__ r, unsigned long long* __restrict__ queue) {
  alignas(16) __shared__ std::uint32_t bits[block_bits / 32];
  const int warp = threadIdx.x >> 5;
  if constexpr (Tuning::dependent_launch) allow_dependent_launch();
  if constexpr (Tuning::work == schedule::work_queue) {
    fold_queued<Tuning, T, Advance, Shared>(layers, n_layers, n_items, out, r, queue,
                                            bits + std::size_t(warp) * (warp_bits / 32));
  } else if constexpr (Tuning::work == schedule::staged) {
    fold_staged<Tuning, T, Advance, Shared>(
        layers, n_layers, n_items, out, r, queue, bits + std::size_t(warp) * (warp_bits / 32),
        dynamic_shared() + std::size_t(warp) * stage_bytes<Tuning> * std::size_t(Tuning::stages));
  } else {
    __shared__ block_totals red;
    constexpr bool warp_only = Tuning::warp_only;
    bool after_block = true;
    for (std::size_t item = blockIdx.x; item < n_items; item += gridDim.x) {
      const int k = find_layer(layers, n_layers, item);
      const layer_desc<T>& L = layers[k];
      // The previous item is done with the bitsets. Between two warp-mode items the warps share
      // nothing and go on without waiting for each other.
      const bool block_mode = !warp_only && L.block;
      if (after_block || block_mode) __syncthreads();
      after_block = block_mode;
      const std::size_t j = item - L.first_item;
      // The block's next item, if it is in this layer: its filters are gridDim.x items on.
      const bool same = item + gridDim.x < L.first_item + layer_items(layers, n_layers, n_items, k);
      if (block_mode) {
        fold_block<Tuning, T, Advance>(L, j, same ? gridDim.x : 0, bits, red, out, r);
      } else {
        const int p = Shared ? L.group : 32;
        const std::size_t per_item = std::size_t(warps_per_block) * std::size_t(32 / p);
        const std::size_t i = (j * warps_per_block + std::size_t(warp)) * std::size_t(32 / p);
        std::uint32_t* own = bits + std::size_t(warp) * (warp_bits / 32);
        if (i < L.ext[0]) {
          if (warp_only || L.ext[1] * L.ext[2] * L.ext[3] <= warp_bits)
            fold_group<Tuning, T, Advance>(L, i, p, same ? gridDim.x * per_item : 0, own, out, r);
          else
            fold_channels<T, Advance>(L, i, out, r);
        }
      }
    }
  }
}

/// A partial another launch wrote, read from L2 (never a stale L1 line).
__device__ inline partial load_cg(const partial* p) {
  using u64 = unsigned long long;
  partial v;
  v.sum_sq = __ldcg(&p->sum_sq);
  v.changed = __ldcg(reinterpret_cast<const u64*>(&p->changed));
  v.weights = __ldcg(reinterpret_cast<const u64*>(&p->weights));
  v.zero_channels = __ldcg(reinterpret_cast<const u64*>(&p->zero_channels));
  v.channels = __ldcg(reinterpret_cast<const u64*>(&p->channels));
  v.nonfinite = __ldcg(reinterpret_cast<const u64*>(&p->nonfinite));
  return v;
}

/// One block per layer k: merges the totals of filters [filter_start[k], filter_start[k + 1])
/// into totals[k] in a fixed order: thread t takes filters t, t + block_threads, ... (four loads
/// in flight, merged in the same order as one at a time), then a tree over the threads.
/// `queue`: the work queue of the fold_filters launch before, set back to zero for the next pass
/// (null: none). Dependent: launched as a programmatic dependent launch, while fold_filters may
/// still run (tuning constant dependent_launch), so it waits for it before it reads anything.
template <bool Dependent>
__global__ void __launch_bounds__(block_threads)
reduce_layers(const std::size_t* __restrict__ filter_start, const partial* __restrict__ filters,
              partial* __restrict__ totals, unsigned long long* __restrict__ queue) {
  // Raw storage: __shared__ variables cannot have constructors.
  alignas(partial) __shared__ unsigned char storage[sizeof(partial) * block_threads];
  partial* part = reinterpret_cast<partial*>(storage);
  if constexpr (Dependent) wait_for_prerequisite_grid();
  if (queue && blockIdx.x == 0 && threadIdx.x == 0) *queue = 0;
  const std::size_t first = filter_start[blockIdx.x], last = filter_start[blockIdx.x + 1];
  partial p;
  std::size_t g = first + threadIdx.x;
  for (; g + 3 * block_threads < last; g += 4 * block_threads) {
    const partial a = load_cg(filters + g), b = load_cg(filters + g + block_threads),
                  c = load_cg(filters + g + 2 * block_threads), d = load_cg(filters + g + 3 * block_threads);
    merge(p, a);
    merge(p, b);
    merge(p, c);
    merge(p, d);
  }
  for (; g < last; g += block_threads) merge(p, load_cg(filters + g));
  part[threadIdx.x] = p;
  __syncthreads();
  for (int s = block_threads / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) merge(part[threadIdx.x], part[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) totals[blockIdx.x] = part[0];
}

}  // namespace fevo::cuda::detail
