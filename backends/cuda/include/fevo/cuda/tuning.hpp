// fevo::cuda's tuning: the shape of the fused pass, as compile-time constants (the policy style
// of CUB). This is the one place where fevo::cuda is tuned; docs/gpu.md gives the figures behind
// each default. Host compiler only: no CUDA here.
//
//   fevo::cuda::par                          the default tuning: the kernel measured on an H200
//   struct mine : fevo::cuda::default_tuning {
//     static constexpr std::size_t block_from = 4096;   // override any constant
//   };
//   fevo::cuda::policy<mine>{}.on(stream)    a policy with that tuning
//
// A tuning is a struct of the constants below, derived from default_tuning; detail::check_tuning
// refuses, at compile time, values the kernels cannot take. The tuning decides how the work is
// spread and read, never what is computed: every tuning gives the same counts (S, Z, R_ic,
// nonfinite) and D equal to the default's but for its last bits where it groups D's double sums
// differently (vectors_per_thread, block_from, share_from). Each tuning is its own
// instantiation of the fused kernel: a program that uses fevo::cuda::par alone builds 15
// kernels (fold_filters for f32, f16, bf16 with and without compare-and-advance, each with and
// without shared warps; f64 with and without compare-and-advance; and the merge, reduce_layers).
//
// fevo::cuda::experimental holds tunings that have not been timed on a GPU. They are built and
// run by the emulated CUDA tests in every test run (tests/test_cuda_emulated.cpp), run by
// fevo_test_cuda and timed side by side with the default by bench/gpu_check.sh on a GPU. One that
// is measured faster there becomes the default; until then none is.
#pragma once

#include <fevo/config.hpp>

#include <cstddef>
#include <cstdint>

namespace fevo::cuda {

/// How a pass hands out its work to the fused kernel's warps (tuning constant `work`).
enum class schedule {
  /// Each block takes work items (8 warps' filters, or one block-mode filter) in a grid-stride
  /// loop. The default.
  grid_stride,
  /// Experimental: each warp takes its next filters from a counter in device memory, the layers
  /// with the largest filters first, so that warps finish together instead of some holding
  /// several large filters. Needs warp_only.
  work_queue,
  /// Experimental: the work queue, with each warp's loads made asynchronous copies into a ring of
  /// shared memory (cp.async, compute capability 8.0 and newer) several rounds ahead, so that more
  /// bytes are in flight than registers hold. Needs warp_only; serves passes whose layers are all
  /// packed, on devices that give a block its 96 KiB of shared memory.
  staged,
};

/// The tuning of fevo::cuda::par: the fused kernel whose figures docs/gpu.md gives (an NVIDIA
/// H200, VGG-16 and ResNet-50).
struct default_tuning {
  /// 16-byte vectors of each snapshot in flight per thread in the packed path: 2, 4 or 8. (On an
  /// H100, 2 with 3 or 4 blocks per SM was 5-10% slower on VGG-16 and no faster on ResNet-50.)
  static constexpr int vectors_per_thread = 4;
  /// Blocks of 256 threads per SM that the fused kernel is compiled for (__launch_bounds__):
  /// 2 allows 128 registers per thread.
  static constexpr int min_blocks_per_sm = 2;
  /// Filters of at least this many weights (and at most 262144, a block's bitset) are read by a
  /// whole block each, smaller ones by a warp each (SIZE_MAX: a warp always). On an H100 a warp
  /// per filter was as fast or faster for every VGG-16 and ResNet-50 layer; a block from 1024
  /// weights was slower on an H200.
  static constexpr std::size_t block_from = 16384;
  /// Small packed filters share a warp, 8 or 16 lanes each (2 or 4 filters at once), where the
  /// layers whose filters would share hold at least this share of a call's weights: 0 whenever
  /// any would, above 1 never. That kernel helps small filters (H200: ResNet-50's 1x1 layers,
  /// 26% of its f32 weights, 43% in bf16: kernels 9% and 30% faster) and costs the others a
  /// little (VGG-16 bf16, 0.25% in shared layers: 6% slower). f64 passes never share.
  static constexpr double share_from = 0.125;
  /// How the work is handed out (schedule).
  static constexpr schedule work = schedule::grid_stride;
  /// Experimental: block mode and the channel-by-channel path of filters over 32768 weights
  /// compiled out (fewer registers, so more blocks per SM). Needs block_from == SIZE_MAX; a pass
  /// with a filter over 32768 weights runs with default_tuning instead.
  static constexpr bool warp_only = false;
  /// Experimental: the packed path loads and stores four 32-bit words per vector as global
  /// (LDG/STG) instructions, so that nvcc issues every load of a round before it uses the first
  /// (in the default's SASS, a round of 16-bit elements waits for its first snapshot's vectors
  /// before it issues the second's: tools/sass_report.py).
  static constexpr bool word_loads = false;
  /// Experimental: on compute capability 9.0 and newer, the per-layer merge is a programmatic
  /// dependent launch, launched while the fused kernel still runs.
  static constexpr bool dependent_launch = false;
  /// schedule::staged only: rounds in each warp's ring (2 to 8), and 16-byte vectors of each
  /// snapshot per lane in a round (1, 2 or 4).
  static constexpr int stages = 4;
  static constexpr int stage_vectors = 2;
};

/// Tunings not yet timed on a GPU (see the top of this file).
namespace experimental {

/// The fused kernel with block mode and the channel-by-channel path compiled out: 80 registers
/// and 3 blocks per SM instead of 128 and 2 (at sm_90, with 20-40 spilled bytes).
struct lean : default_tuning {
  static constexpr bool warp_only = true;
  static constexpr std::size_t block_from = SIZE_MAX;
  static constexpr int min_blocks_per_sm = 3;
};
/// lean, its warps taking filters from a work queue (schedule::work_queue).
struct work_queue : lean {
  static constexpr schedule work = schedule::work_queue;
};
/// The work queue with asynchronous copies into shared memory (schedule::staged): 61-67
/// registers at sm_90, two blocks per SM on an H100 or H200 (bounded by shared memory).
struct staged : lean {
  static constexpr schedule work = schedule::staged;
  static constexpr int min_blocks_per_sm = 2;
};
/// The default kernel with word_loads.
struct global_words : default_tuning {
  static constexpr bool word_loads = true;
};
/// The default kernel with its merge as a dependent launch.
struct overlapped_merge : default_tuning {
  static constexpr bool dependent_launch = true;
};
/// The default kernel with 8 vectors in flight per thread (128 registers at sm_90, no spills in f32).
struct deep : default_tuning {
  static constexpr int vectors_per_thread = 8;
};

}  // namespace experimental

namespace detail {

/// Refuses, at compile time, a tuning the kernels cannot take.
template <class Tuning>
constexpr bool check_tuning() {
  static_assert(Tuning::vectors_per_thread == 2 || Tuning::vectors_per_thread == 4 || Tuning::vectors_per_thread == 8,
                "fevo::cuda tuning: vectors_per_thread must be 2, 4 or 8");
  static_assert(Tuning::min_blocks_per_sm >= 1 && Tuning::min_blocks_per_sm <= 8,
                "fevo::cuda tuning: min_blocks_per_sm must be 1 to 8");
  static_assert(Tuning::block_from >= 1, "fevo::cuda tuning: block_from must be at least 1");
  static_assert(Tuning::share_from >= 0, "fevo::cuda tuning: share_from must not be negative");
  static_assert(!Tuning::warp_only || Tuning::block_from == SIZE_MAX,
                "fevo::cuda tuning: warp_only needs block_from == SIZE_MAX (no block mode)");
  static_assert(Tuning::work == schedule::grid_stride || Tuning::warp_only,
                "fevo::cuda tuning: a work queue (work_queue, staged) needs warp_only");
  static_assert(Tuning::stages >= 2 && Tuning::stages <= 8, "fevo::cuda tuning: stages must be 2 to 8");
  static_assert(Tuning::stage_vectors == 1 || Tuning::stage_vectors == 2 || Tuning::stage_vectors == 4,
                "fevo::cuda tuning: stage_vectors must be 1, 2 or 4");
  return true;
}

}  // namespace detail
}  // namespace fevo::cuda
