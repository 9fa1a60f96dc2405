// The descriptor table of fevo::cuda's fused pass: what the host (dispatch.hpp) writes for each
// layer and the kernels (kernels.cuh) read, and the arithmetic both sides share. No CUDA here.
#pragma once

#include <fevo/config.hpp>

#include <cstddef>
#include <cstdint>

#include <fevo/element.hpp>

#include "tuning.hpp"

namespace fevo::cuda::detail {

inline constexpr int warps_per_block = 8;
inline constexpr int block_threads = 32 * warps_per_block;
/// Bits of one warp's bitset: filters up to this many weights take the warp bitset path (4 KiB).
inline constexpr std::size_t warp_bits = 32768;
/// Bits of a block's bitset (all the warps' bitsets together): the limit of block mode.
inline constexpr std::size_t block_bits = warp_bits * warps_per_block;
/// layer_desc::r_offset of a layer whose R_ic are not wanted.
inline constexpr std::size_t no_r = static_cast<std::size_t>(-1);

/// One layer of a pass. ext, sp, sn, tau, first_filter and r_offset are filled by the core's
/// fill_layer_desc (fevo/compute.hpp), the rest by run_pass (dispatch.hpp).
template <class T>
struct layer_desc {
  T* prev;  // mutable only for compare-and-advance
  const T* next;
  std::size_t ext[4];        ///< filters, channels, rows, cols
  std::size_t sp[4];         ///< prev's strides, in elements
  std::size_t sn[4];         ///< next's strides, in elements
  compute_t<T> tau;
  std::size_t first_filter;  ///< global index of this layer's filter 0 (in the table's order)
  std::size_t first_item;    ///< global index of this layer's first work item
  std::size_t r_offset;      ///< start of this layer's R_ic in the R buffer, or no_r
  int packed;                ///< 1: each filter contiguous and 16-byte aligned (vector loads)
  int block;                 ///< 1: block mode, an item per filter; 0: warp mode
  int group;                 ///< warp mode: lanes per filter, 32 or (packed only) 16 or 8
};

/// Work items of a layer (`group`: lanes per filter in warp mode): in block mode one per filter;
/// in warp mode 8 warps' filters each, or with `units` (a work queue) one warp's, 32 / group.
inline std::size_t items_of(std::size_t filters, bool block, int group = 32, bool units = false) {
  const std::size_t per_item = std::size_t(units ? 1 : warps_per_block) * std::size_t(32 / group);
  return block ? filters : (filters + per_item - 1) / per_item;
}

/// The fewest lanes a filter of T may have in a shared warp: a bitset word is assembled by the
/// 32 / (16 / sizeof(T)) lanes that hold its vectors, which must be in the same group.
template <class T>
inline constexpr int min_group = 32 / int(16 / sizeof(T)) > 8 ? 32 / int(16 / sizeof(T)) : 8;

/// Lanes per filter of a packed layer in a shared warp: the fewest (at least min_group) with
/// which each lane takes at most two rounds of vectors_per_thread vectors of a filter of `size`
/// weights.
template <class Tuning, class T>
int group_for(std::size_t size) {
  const std::size_t V = 16 / sizeof(T);
  int g = min_group<T>;
  while (g < 32 && size > std::size_t(g) * V * std::size_t(Tuning::vectors_per_thread) * 2) g *= 2;
  return g;
}

/// schedule::staged: the bytes of one round of a warp's loads in its ring (stage_vectors 16-byte
/// vectors of each snapshot per lane), and a block's dynamic shared memory, its warps' rings (the
/// 32 KiB of bitsets come on top). Other schedules take no dynamic shared memory.
template <class Tuning>
inline constexpr std::size_t stage_bytes = std::size_t(32) * Tuning::stage_vectors * 2 * 16;
template <class Tuning>
constexpr std::size_t dynamic_shared_bytes() {
  return Tuning::work == schedule::staged ? stage_bytes<Tuning> * Tuning::stages * warps_per_block : 0;
}

/// Whether a pass launches the shared-warp kernel: `shared_weights` of its `weights` are in layers
/// whose filters would share a warp (tuning constant share_from). f64 passes never do: one kernel
/// fewer, for an element type rarely trained in.
template <class Tuning, class T>
bool use_shared_warps(std::size_t shared_weights, std::size_t weights) {
  if (sizeof(T) == 8 || shared_weights == 0) return false;
  return double(shared_weights) >= Tuning::share_from * double(weights);
}

}  // namespace fevo::cuda::detail
