// How the CPU backend walks a layer's memory, decided once per layer, and the scratch each thread
// needs for it. Independent of the instruction set (kernel.hpp has the walks themselves).
#pragma once

#include <fevo/config.hpp>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <fevo/compute.hpp>

#include "isa.hpp"

namespace fevo::cpu {
inline namespace FEVO_CPU_BASELINE_NS {
namespace detail {

/// Weights per vectorised run of a packed filter: its changed bits (64 words) stay in L1.
inline constexpr std::size_t run_length = 4096;

/// Filters of a lanes walk (below) per block of work, at most. (1024 rather than 512: ResNet-50's
/// 1024- and 2048-filter layers in HWIO ran 3-13% faster in bench_cpu with the wider blocks.)
inline constexpr std::size_t max_lane_block = 1024;

/// Filters a lanes walk keeps in registers at once: 4 vectors of 16 floats (AVX-512), 2 of 8
/// (AVX2), 2 of 4 (generic).
constexpr std::size_t lane_group_width(isa i) { return i == isa::avx512 ? 64 : i == isa::avx2 ? 16 : 8; }

enum class walk {
  packed,   ///< each filter's C*H*W weights are contiguous in both snapshots (OIHW)
  lanes,    ///< the filter axis is contiguous in both (stride(0) == 1: HWIO); lanes are filters
  interleaved,  ///< each filter's H*W*C weights are contiguous in both, channel fastest (OHWI)
  rows,     ///< each row of W weights is contiguous in both snapshots
  general,  ///< any strides: element by element
};

template <class V>
inline bool packed_filter(const V& v) {
  const std::size_t H = v.rows(), W = v.cols(), C = v.channels();
  return (W == 1 || v.stride(3) == 1) && (H == 1 || v.stride(2) == W) && (C == 1 || v.stride(1) == H * W);
}
template <class V>
inline bool interleaved_filter(const V& v) {
  const std::size_t H = v.rows(), W = v.cols(), C = v.channels();
  return (C == 1 || v.stride(1) == 1) && (W == 1 || v.stride(3) == C) && (H == 1 || v.stride(2) == W * C);
}
template <class V>
inline bool packed_rows(const V& v) {
  return v.cols() == 1 || v.stride(3) == 1;
}
template <class T, class V>
inline walk choose_walk(const V& a, const V& b) {
  // The lanes walk keeps a float accumulator per filter: float compute types only.
  if (std::is_same_v<compute_t<T>, float> && a.filters() > 1 && a.stride(0) == 1 && b.stride(0) == 1)
    return walk::lanes;
  if (packed_filter(a) && packed_filter(b)) return walk::packed;
  if (interleaved_filter(a) && interleaved_filter(b)) return walk::interleaved;
  if (packed_rows(a) && packed_rows(b) && a.cols() >= 8) return walk::rows;
  return walk::general;
}

/// 64-bit words of scratch one thread needs for a block of `filters` filters of task t with the
/// given kernel: a run's changed bits and a zero word after them (and for an interleaved walk a bit
/// per channel); or for a lanes walk, per group of lanes its totals (2.5 words a lane), per channel
/// a word of "any changed" bits, and with R_ic a counter per channel and lane, of a byte where no
/// channel has more than 255 weights, else of 32 bits, or where every channel has one weight, a
/// copy of one group's words (fold_lanes).
template <class Task>
inline std::size_t scratch_words(const Task& t, walk how, std::size_t filters, isa kernel) {
  if (how == walk::interleaved) return run_length / 64 + 2 + (t.prev.channels() + 63) / 64;
  if (how != walk::lanes) return run_length / 64 + 2;
  const std::size_t G = lane_group_width(kernel), groups = (filters + G - 1) / G + 1;
  const std::size_t C = t.prev.channels(), HW = t.prev.rows() * t.prev.cols();
  const bool with_r = t.per_filter && (t.want & want_R);
  const std::size_t counters = !with_r ? 0 : HW == 1 ? C : groups * C * (HW <= 255 ? G / 8 : G / 2);
  return groups * (2 * G + G / 2 + C) + counters;
}

/// Filters of a lanes-walk task that fill one cache line of its elements: blocks of filters
/// given to threads are multiples of this, so that no two threads share a line.
template <class T>
inline constexpr std::size_t lane_unit = 64 / sizeof(T) > 0 ? 64 / sizeof(T) : 1;

}  // namespace detail
}  // namespace FEVO_CPU_BASELINE_NS
}  // namespace fevo::cpu
