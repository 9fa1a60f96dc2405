// fevo::cpu::par, the parallel CPU backend (OpenMP threads, vectorised fused pass).
//
//   fevo::layer_metrics m = fevo::compute(fevo::cpu::par, prev, next, tau);
//   fevo::compute(fevo::cpu::par.threads(2), prev, next, tau);
//
// Work is split into blocks of whole filters across all layers of a call; each filter's totals
// are kept and summed per layer in filter order afterwards, so the results do not depend on the
// number of threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <fevo/fevo.hpp>

#include "cpu/kernel.hpp"

#if defined(_OPENMP)
#include <omp.h>
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
};
inline constexpr parallel_policy par{};

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

  const long long n_blocks = static_cast<long long>(blocks.size());
  int threads = 1;
#if defined(_OPENMP)
  threads = policy.num_threads > 0 ? policy.num_threads : omp_get_max_threads();
#else
  (void)policy;
#endif
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
