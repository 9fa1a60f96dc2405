// fevo::cpu::par, the parallel CPU backend (OpenMP threads, vectorised fused pass).
//
//   fevo::layer_metrics m = fevo::compute(fevo::cpu::par, prev, next, tau);
//   fevo::compute(fevo::cpu::par.threads(2), prev, next, tau);
//
// Work is split into blocks of whole filters across all layers of a call; each filter's totals
// are kept and summed per layer in filter order afterwards, so the results do not depend on the
// number of threads. Layers that share a buffer (consecutive snapshot pairs of a series, or pairs
// against one reference, passed in one compute_layers call) have their blocks at the same
// filters processed together, so that the shared snapshot is read from memory once.
#pragma once

#include <fevo/config.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include <fevo/fevo.hpp>

#include "cpu/kernel.hpp"

#if defined(_OPENMP)
#include <omp.h>
#elif !defined(FEVO_CPU_SERIAL)
// Without OpenMP (no -fopenmp, or a target that does not link fevo::cpu / OpenMP::OpenMP_CXX),
// fevo::cpu::par still gives the same results, on one thread, whatever .threads(n) asks.
// Define FEVO_CPU_SERIAL to say that this is meant.
#warning "fevo::cpu is compiled without OpenMP: fevo::cpu::par will run on one thread. Link the CMake target fevo::cpu (or compile with -fopenmp), or define FEVO_CPU_SERIAL if one thread is meant."
#endif

namespace fevo::cpu {

/// Relative error of D beyond an exact double sum of exact squares, for float, half and bfloat16
/// input on the vector path: at most 8 float squares per lane are summed before widening
/// (8 * 2^-24 first order; cpu/simd.hpp). Within the library's bound of 1e-6 for f32 input.
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
    return x.first < y.first;  // stable: same filters keep task order
  });
}

}  // namespace detail

template <class T>
void evaluate(const parallel_policy& policy, layer_task<T, host_space>* tasks, std::size_t n_tasks) {
  struct block {
    std::size_t task, first, count;
  };
  // Blocks of about 64K weights: enough work per block, enough blocks to balance.
  constexpr std::size_t block_weights = std::size_t{1} << 16;
  std::vector<block> blocks;
  std::vector<std::vector<partial>> filters(n_tasks);
  std::vector<detail::walk> walks(n_tasks);
  for (std::size_t k = 0; k < n_tasks; ++k) {
    const auto& t = tasks[k];
    const std::size_t n = t.prev.filters(), per = t.prev.filter_size();
    const std::size_t step = per >= block_weights ? 1 : block_weights / per;
    for (std::size_t first = 0; first < n; first += step)
      blocks.push_back({k, first, n - first < step ? n - first : step});
    filters[k].resize(n);
    walks[k] = detail::choose_walk(t.prev, t.next);
  }
  detail::interleave_shared(tasks, n_tasks, blocks);

  const long long n_blocks = static_cast<long long>(blocks.size());
  const int threads = policy.thread_count();
  // Scratch for each thread's run flags, allocated here so nothing inside the parallel region
  // can throw.
  std::vector<std::uint64_t> scratch(static_cast<std::size_t>(threads) * detail::scratch_bytes / 8);
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
#endif
  for (long long b = 0; b < n_blocks; ++b) {
    int me = 0;
#if defined(_OPENMP)
    me = omp_get_thread_num();
#endif
    std::uint64_t* mine = scratch.data() + static_cast<std::size_t>(me) * detail::scratch_bytes / 8;
    std::uint8_t* my_flags = reinterpret_cast<std::uint8_t*>(mine);
    std::uint64_t* my_bits = mine + detail::run_length / 8;
    const block& blk = blocks[static_cast<std::size_t>(b)];
    const auto& t = tasks[blk.task];
    const bool with_r = t.per_filter && (t.want & want_R);
    for (std::size_t i = blk.first; i < blk.first + blk.count; ++i) {
      std::uint32_t* r_row =
          with_r ? t.per_filter->channel_changed.data() + i * t.prev.channels() : nullptr;
      detail::fold_filter(t, walks[blk.task], i, filters[blk.task][i], r_row, my_flags, my_bits);
    }
  }

  // R_ic were written in place by fold_filter.
  for (std::size_t k = 0; k < n_tasks; ++k) ::fevo::detail::finish_task(tasks[k], filters[k].data(), nullptr);
}

}  // namespace fevo::cpu
