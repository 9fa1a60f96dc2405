// fevo::cpu::par, the parallel CPU backend (OpenMP threads, vectorised fused pass).
//
//   fevo::layer_metrics m = fevo::compute(fevo::cpu::par, prev, next, tau);
//   fevo::compute(fevo::cpu::par.threads(2), prev, next, tau);
//
// Work is split into blocks of whole filters across all layers of a call (large HWIO layers also
// into two ranges of input channels, summed in order: lane_segments); each filter's totals are
// kept and summed per layer in filter order afterwards, so the results do not depend on the
// number of threads. Layers that share a buffer (consecutive snapshot pairs of a series, or pairs
// against one reference, passed in one compute_layers call) have their blocks at the same
// filters processed together, so that the shared snapshot is read from memory once. A call with
// little work runs on the calling thread alone.
//
// The kernels are compiled for several instruction sets and one is chosen at run time from the
// CPU's features (cpu/isa.hpp); fevo::cpu::instruction_set() names it.
#pragma once

#include <fevo/config.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include <fevo/fevo.hpp>

#include "cpu/isa.hpp"
#include "cpu/walk.hpp"

#if defined(_OPENMP)
#include <omp.h>
#elif !defined(FEVO_CPU_SERIAL)
// Without OpenMP (no -fopenmp, or a target that does not link fevo::cpu / OpenMP::OpenMP_CXX),
// fevo::cpu::par still gives the same results, on one thread, whatever .threads(n) asks.
// Define FEVO_CPU_SERIAL to say that this is meant.
#warning "fevo::cpu is compiled without OpenMP: fevo::cpu::par will run on one thread. Link the CMake target fevo::cpu (or compile with -fopenmp), or define FEVO_CPU_SERIAL if one thread is meant."
#endif

// The kernels, once per instruction set (see cpu/isa.hpp). Every header they need is included
// above, outside the target regions.
#define FEVO_CPU_KERNEL_NS generic
#define FEVO_CPU_KERNEL_ISA 0
#include "cpu/simd.hpp"
#include "cpu/kernel.hpp"
#undef FEVO_CPU_KERNEL_NS
#undef FEVO_CPU_KERNEL_ISA
#if FEVO_CPU_X86_DISPATCH
FEVO_CPU_TARGET_BEGIN(FEVO_CPU_AVX2_FEATURES)
#define FEVO_CPU_KERNEL_NS avx2
#define FEVO_CPU_KERNEL_ISA 1
#include "cpu/simd.hpp"
#include "cpu/kernel.hpp"
#undef FEVO_CPU_KERNEL_NS
#undef FEVO_CPU_KERNEL_ISA
FEVO_CPU_TARGET_END
FEVO_CPU_TARGET_BEGIN(FEVO_CPU_AVX512_FEATURES)
#define FEVO_CPU_KERNEL_NS avx512
#define FEVO_CPU_KERNEL_ISA 2
#include "cpu/simd.hpp"
#include "cpu/kernel.hpp"
#undef FEVO_CPU_KERNEL_NS
#undef FEVO_CPU_KERNEL_ISA
FEVO_CPU_TARGET_END
#endif

namespace fevo::cpu {
inline namespace FEVO_CPU_BASELINE_NS {

/// Relative error of D beyond an exact double sum of exact squares, for float, half and bfloat16
/// input on the vector paths: at most 8 float squares per lane are summed before widening
/// (8 * 2^-24 first order; cpu/kernel.hpp). Within the library's bound of 1e-6 for f32 input.
/// Double input and the other paths sum exact squares in double.
inline constexpr double D_relative_error = 8 * 5.9604644775390625e-08 * (1 + 0x1p-20);

struct parallel_policy {
  int num_threads = 0;  ///< 0: OpenMP's default (OMP_NUM_THREADS or the core count)
  /// A copy of this policy that uses n threads.
  constexpr parallel_policy threads(int n) const { return parallel_policy{n}; }
  /// The threads a call with this policy runs on: num_threads, else OpenMP's default; 1 where
  /// fevo::cpu was compiled without OpenMP.
  int thread_count() const {
#if defined(_OPENMP)
    return num_threads > 0 ? num_threads : omp_get_max_threads();
#else
    return 1;
#endif
  }
};
inline constexpr parallel_policy par{};

namespace detail {

/// Below this many weights in a call, the pass runs on the calling thread: waking the other
/// threads would cost more than they save. Calls that come seldom (a recorder every N steps, or
/// OMP_WAIT_POLICY=passive) find OpenMP's threads asleep, and waking them cost 5-21 us a call on
/// a 2-core Zen 4 VM: layers of 16k-37k weights took 8-26 us on two sleeping threads, 2.6-5.6 us
/// on one. With spinning threads, one thread costs those layers 0-0.9 us more (3x3x64x64 f32
/// 3.7 -> 4.3 us). From 2^16 weights on, two threads win or tie either way (3x3x64x128 f32 5.8
/// against 8.2 us spinning, 11 against 8 asleep; 1x1x256x512 10.8 against 17.6 spinning, 13.5
/// against 18.4 asleep); docs/benchmarks-log.md.
inline constexpr std::size_t serial_weights = std::size_t{1} << 16;
/// Weights per block of work handed to a thread, at most (whole filters, so a block may be
/// larger when one filter is); fewer when the call has less than 4 blocks per thread. Long blocks
/// keep each thread's reads in long sequential runs: raising this from 2^16 to 2^18 made
/// bench_cpu's OIHW compute_layers 6-15% faster, and 2^20 VGG-16's 3-8% more (ResNet-50 in cache
/// 1-3% slower); 2^22 did no better. A series of pairs (fevo analyze) ran its pass 6% faster.
inline constexpr std::size_t block_weights = std::size_t{1} << 20;

/// Folds filters [first, first + count) of task t, channels [c0, c1) on a lanes walk, into
/// out[0 .. count) with the given kernel.
template <class T>
inline void fold_block(isa kernel, const layer_task<T, host_space>& t, walk how, std::size_t first,
                       std::size_t count, std::size_t c0, std::size_t c1, partial* out,
                       std::uint64_t* scratch) {
  switch (kernel) {
#if FEVO_CPU_X86_DISPATCH
    case isa::avx512: avx512::fold_block(t, how, first, count, c0, c1, out, scratch); return;
    case isa::avx2: avx2::fold_block(t, how, first, count, c0, c1, out, scratch); return;
#endif
    default: generic::fold_block(t, how, first, count, c0, c1, out, scratch); return;
  }
}

/// Weights per segment of a lanes-walk layer, at least (lane_segments).
inline constexpr std::size_t lane_segment_weights = std::size_t{1} << 19;
/// Segments of a lanes-walk layer, at most.
inline constexpr std::size_t max_lane_segments = 2;

/// The segments a lanes walk (HWIO) splits a layer into: ranges of input channels, each of which
/// is H * W contiguous runs of whole positions (every filter) in memory, where blocks of filters
/// read a part of every position. Two threads splitting a layer by filters each read one half
/// of every position, at 0.45 of a plain read on VGG-16's 3x3x512x512 layers from DRAM; split
/// by positions, 0.77-0.87. bench_cpu, against blocks of filters only (median rates, two rounds
/// in turn): VGG-16 HWIO f32 compute_layers 1.44x in cache, 1.25x from DRAM, per-layer calls
/// 1.41x and 1.23x, bf16/f16 1.01-1.16x; ResNet-50 (few layers of 2^20 weights) 0.98-1.06x.
/// More segments did worse: up to 16 of at least 2^16 weights, VGG-16 f32 1.0-1.1x and ResNet-50
/// bf16 per-layer calls 0.6-0.8x (each segment ends in a fold of every filter's totals); up to 4
/// of 2^19 3-6% below two; two of at least 2^17 weights, ResNet-50 bf16 per-layer calls 0.89x.
/// Layers of more than max_lane_block filters keep blocks of filters (ResNet-50 f32 layers 2-8%
/// faster so). One cost: VGG-16 bf16/f16 with R_ic 0.84-0.88x in cache (f32 with R_ic
/// 1.15-1.18x); keeping those in blocks of filters would make D depend on whether R_ic was asked
/// for, and counters laid out [C][groups][G] did worse everywhere (0.75-0.9x). From the layer's
/// shape alone, never the thread count or what else is computed: the segments' totals are summed
/// in order, so the results do not depend on the number of threads.
template <class Task>
inline std::size_t lane_segments(const Task& t) {
  const std::size_t weights = t.prev.size(), C = t.prev.channels();
  if (t.prev.filters() > max_lane_block) return 1;
  std::size_t k = 1;
  while (k < max_lane_segments && 2 * k * lane_segment_weights <= weights && 2 * k <= C) k *= 2;
  return k;
}

/// Orders `blocks` so that tasks which read a common buffer (consecutive snapshot pairs share one
/// snapshot; pairs against one reference share it) are processed block by block together: the
/// blocks at the same filters of every such task are adjacent, so the shared bytes come from
/// cache rather than memory the second time. Other tasks keep their order. The order of blocks
/// does not change any result.
template <class Task, class Block>
void interleave_shared(const Task* tasks, std::size_t n_tasks, std::vector<Block>& blocks) {
  if (n_tasks < 2) return;
  // group[k]: the first task connected to task k through shared prev/next buffers.
  std::vector<std::size_t> group(n_tasks);
  for (std::size_t k = 0; k < n_tasks; ++k) group[k] = k;
  const auto root = [&](std::size_t k) {
    while (group[k] != k) k = group[k] = group[group[k]];
    return k;
  };
  std::vector<std::pair<const void*, std::size_t>> by_buffer;
  by_buffer.reserve(2 * n_tasks);
  for (std::size_t k = 0; k < n_tasks; ++k) {
    by_buffer.emplace_back(static_cast<const void*>(tasks[k].prev.data_handle()), k);
    by_buffer.emplace_back(static_cast<const void*>(tasks[k].next.data_handle()), k);
  }
  std::sort(by_buffer.begin(), by_buffer.end());
  bool shared = false;
  for (std::size_t j = 1; j < by_buffer.size(); ++j)
    if (by_buffer[j].first == by_buffer[j - 1].first) {
      const std::size_t a = root(by_buffer[j].second), b = root(by_buffer[j - 1].second);
      if (a != b) {
        group[std::max(a, b)] = std::min(a, b);  // the root is the group's first task
        shared = true;
      }
    }
  if (!shared) return;
  for (std::size_t k = 0; k < n_tasks; ++k) group[k] = root(k);
  std::stable_sort(blocks.begin(), blocks.end(), [&](const Block& x, const Block& y) {
    const std::size_t gx = group[x.task], gy = group[y.task];
    if (gx != gy) return gx < gy;
    if (x.first != y.first) return x.first < y.first;
    return x.segment < y.segment;  // stable: same filters and channels keep task order
  });
}

}  // namespace detail

template <class T>
void evaluate(const parallel_policy& policy, layer_task<T, host_space>* tasks, std::size_t n_tasks) {
  struct block {
    std::size_t task, first, count;
    std::size_t segment;  ///< of a lanes walk's layer (lane_segments); 0 otherwise
  };
  const detail::isa kernel = detail::active_isa();
  int threads = policy.thread_count();
  std::size_t total = 0;
  for (std::size_t k = 0; k < n_tasks; ++k) total += tasks[k].prev.size();
  if (total < detail::serial_weights) threads = 1;

  // Blocks of at most block_weights, but small enough that every thread gets a few.
  const std::size_t per_block = std::max<std::size_t>(
      1024, std::min(detail::block_weights, total / (4 * static_cast<std::size_t>(threads))));
  std::vector<block> blocks;
  std::vector<std::size_t> first_filter(n_tasks + 1, 0);  // of each task in `filters`
  std::vector<detail::walk> walks(n_tasks);
  // Lanes-walk layers of several segments: each segment's filter totals at
  // segment_totals[first_segmented[k] + s * filters + i], summed in segment order afterwards.
  std::vector<std::size_t> segments(n_tasks, 1), first_segmented(n_tasks, 0);
  std::size_t n_segmented = 0;
  // Scratch per thread, not cleared: each walk sets what it reads (a cleared scratch cost an HWIO
  // 1x1 layer of 1024 x 256 with R_ic a seventh of its time, one thread).
  std::size_t words = 0;
  for (std::size_t k = 0; k < n_tasks; ++k) {
    const auto& t = tasks[k];
    const std::size_t n = t.prev.filters(), fs = t.prev.filter_size();
    walks[k] = detail::choose_walk<T>(t.prev, t.next);
    first_filter[k + 1] = first_filter[k] + n;
    std::size_t step = threads == 1 ? n : std::max<std::size_t>(1, per_block / fs);
    if (walks[k] == detail::walk::lanes) {
      segments[k] = detail::lane_segments(t);
      if (segments[k] > 1) {
        first_segmented[k] = n_segmented;
        n_segmented += segments[k] * n;
      }
      // Each segment in blocks of filters, one per thread that the segments leave, wide ones (up
      // to max_lane_block filters) of whole cache lines: the wider a block, the longer its
      // contiguous run in each position. (Two per thread, half as wide, ran 4-26% slower.)
      // A layer that is a small part of a call of many layers (at most 1/(8 * threads) of its
      // weights) goes to one thread whole, so that each thread reads whole positions of its
      // layers in order instead of every other stretch of each position; the call's other layers
      // keep the threads busy. bench_cpu compute_layers, HWIO, two threads, the two builds in turn
      // twice (Zen 2, AVX2): ResNet-50 0.885-0.922 of the time, VGG-16 0.94-0.99, the read rows
      // 1.00-1.04. Which thread folds a filter never changes its totals.
      const bool whole = t.prev.size() * 8 * static_cast<std::size_t>(threads) <= total;
      const std::size_t per_segment =
          whole ? 1 : (static_cast<std::size_t>(threads) + segments[k] - 1) / segments[k];
      const std::size_t unit = detail::lane_unit<T>, want = (n + per_segment - 1) / per_segment;
      step = per_segment == 1 ? n : std::max<std::size_t>((want + unit - 1) / unit * unit, detail::lane_group_width(kernel));
      step = std::min(step, detail::max_lane_block);
    }
    words = std::max(words, detail::scratch_words(t, walks[k], std::min(step, n), kernel));
    for (std::size_t first = 0; first < n; first += step)
      for (std::size_t s = 0; s < segments[k]; ++s)
        blocks.push_back({k, first, n - first < step ? n - first : step, s});
  }
  detail::interleave_shared(tasks, n_tasks, blocks);
  std::vector<partial> filters(first_filter[n_tasks]);
  std::vector<partial> segment_totals(n_segmented);
  const auto run = [&](const block& blk, std::uint64_t* scratch) {
    const std::size_t k = blk.task, n = tasks[k].prev.filters(), C = tasks[k].prev.channels();
    partial* out = segments[k] > 1 ? segment_totals.data() + first_segmented[k] + blk.segment * n + blk.first
                                   : filters.data() + first_filter[k] + blk.first;
    detail::fold_block(kernel, tasks[k], walks[k], blk.first, blk.count, blk.segment * C / segments[k],
                       (blk.segment + 1) * C / segments[k], out, scratch);
  };
  // The segments of a filter, summed in segment order, for filters [first, first + count) of task k.
  const auto sum_segments = [&](std::size_t k, std::size_t first, std::size_t count) {
    const std::size_t n = tasks[k].prev.filters();
    const partial* seg = segment_totals.data() + first_segmented[k];
    for (std::size_t i = first; i < first + count; ++i) {
      partial f = seg[i];
      for (std::size_t s = 1; s < segments[k]; ++s) merge(f, seg[s * n + i]);
      filters[first_filter[k] + i] = f;
    }
  };

  const long long n_blocks = static_cast<long long>(blocks.size());
  if (threads == 1 || n_blocks == 1) {
    const std::unique_ptr<std::uint64_t[]> scratch(new std::uint64_t[words]);
    for (const block& blk : blocks) run(blk, scratch.get());
    for (std::size_t k = 0; k < n_tasks; ++k)
      if (segments[k] > 1) sum_segments(k, 0, tasks[k].prev.filters());
  } else {
    // Scratch for every thread, and the pieces of the segments' sums (256 filters each),
    // allocated here so nothing inside the parallel region can throw.
    const std::unique_ptr<std::uint64_t[]> scratch(new std::uint64_t[static_cast<std::size_t>(threads) * words]);
    struct piece {
      std::size_t task, first, count;
    };
    std::vector<piece> sums;
    for (std::size_t k = 0; k < n_tasks; ++k)
      if (segments[k] > 1)
        for (std::size_t first = 0, n = tasks[k].prev.filters(); first < n; first += 256)
          sums.push_back({k, first, n - first < 256 ? n - first : 256});
    const long long n_sums = static_cast<long long>(sums.size());
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
    {
      int me = 0;
#if defined(_OPENMP)
      me = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1) nowait
#endif
      for (long long b = 0; b < n_blocks; ++b)
        run(blocks[static_cast<std::size_t>(b)], scratch.get() + static_cast<std::size_t>(me) * words);
      // Segments to sum, once every block is done: a barrier only in calls that have them (one
      // on every call cost ResNet-50 bf16 per-layer calls a fifth of their speed).
      if (n_sums > 0) {
#if defined(_OPENMP)
#pragma omp barrier
#pragma omp for schedule(static) nowait
#endif
        for (long long m = 0; m < n_sums; ++m) {
          const piece& p = sums[static_cast<std::size_t>(m)];
          sum_segments(p.task, p.first, p.count);
        }
      }
    }
  }
  // R_ic were written in place by the kernels.
  for (std::size_t k = 0; k < n_tasks; ++k)
    ::fevo::detail::finish_task(tasks[k], filters.data() + first_filter[k], nullptr);
}

#if defined(FEVO_CPU_EXTERN_KERNELS) && FEVO_CPU_VECTOR_EXTENSIONS
// fevo's own programs (tests, tools, examples, benchmarks: CMake's fevo_cpu_kernels) compile the
// kernels of the four element types once, in backends/cpu/src/kernels.cpp, instead of in every
// file that computes (35 s against 5 s of a 2 GHz core for a file that computes all four); a
// file compiled for another baseline than that one names another inline namespace and fails to
// link, never mixes. Users include fevo::cpu as it is: header-only, nothing to link.
extern template void evaluate<float>(const parallel_policy&, layer_task<float, host_space>*, std::size_t);
extern template void evaluate<double>(const parallel_policy&, layer_task<double, host_space>*, std::size_t);
extern template void evaluate<bfloat16>(const parallel_policy&, layer_task<bfloat16, host_space>*, std::size_t);
extern template void evaluate<half>(const parallel_policy&, layer_task<half, host_space>*, std::size_t);
#endif

}  // namespace FEVO_CPU_BASELINE_NS
}  // namespace fevo::cpu
