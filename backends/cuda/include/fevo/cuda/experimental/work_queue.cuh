// Experimental schedules of fevo::cuda's fused pass (tuning constant `work`, tuning.hpp): a work
// queue (schedule::work_queue) and the work queue with asynchronous copies through shared memory
// (schedule::staged). Not yet timed on a GPU; bench/gpu_check.sh times them beside the default.
// Both serve passes of warp-mode filters only (tuning constant warp_only) and give the default
// kernel's bits: the same filters folded by the same agent, in another order of warps.
#pragma once

#include <fevo/config.hpp>

#include <cstddef>
#include <cstdint>

#include "../agent.cuh"

namespace fevo::cuda::detail {

/// The indices of the layers that hold work items a and b (two binary searches of the table in
/// one loop: their chains of loads overlap).
template <class T>
__device__ inline void find_layers(const layer_desc<T>* layers, int n_layers, std::size_t a, std::size_t b, int& ka,
                                   int& kb) {
  int lo_a = 0, hi_a = n_layers, lo_b = 0, hi_b = n_layers;
  for (int span = n_layers; span > 1; span = (span + 1) / 2) {
    const int mid_a = (lo_a + hi_a) / 2, mid_b = (lo_b + hi_b) / 2;
    const std::size_t first_a = layers[mid_a].first_item, first_b = layers[mid_b].first_item;
    if (hi_a - lo_a > 1) { if (first_a <= a) lo_a = mid_a; else hi_a = mid_a; }
    if (hi_b - lo_b > 1) { if (first_b <= b) lo_b = mid_b; else hi_b = mid_b; }
  }
  ka = lo_a;
  kb = lo_b;
}

/// A work-queue pass's rounds (fold_packed): in the last round of a unit, lane 0 takes the
/// warp's next unit from the queue into *drawn.
struct queue_rounds {
  unsigned long long* queue;
  unsigned long long* drawn;
  __device__ void last_round() const {
    if ((threadIdx.x & 31) == 0) *drawn = atomicAdd(queue, 1ull);
  }
};

/// Prefetches into L2 the first round of loads of unit `unit` of layer A of a work-queue pass
/// (fold_group's first fold_packed round, for each of its filters), if A is packed.
template <class Tuning, class T, bool Shared>
__device__ inline void prefetch_unit(const layer_desc<T>& A, std::size_t unit) {
  if (!A.packed) return;
  const int p = Shared ? A.group : 32, lane = int(threadIdx.x & 31);
  const std::size_t f = (unit - A.first_item) * std::size_t(32 / p) + std::size_t(lane / p);
  if (f >= A.ext[0]) return;  // a group past the layer's last filter
  const std::uint32_t nv = std::uint32_t(A.ext[1] * A.ext[2] * A.ext[3] / (16 / sizeof(T)));
  prefetch_round<Tuning>(reinterpret_cast<const vector16<T>*>(A.prev + f * A.sp[0]),
                         reinterpret_cast<const vector16<T>*>(A.next + f * A.sn[0]), 0, nv, lane % p, p);
}

/// schedule::work_queue: each warp takes units (the 32 / group filters a warp folds at once) from
/// a counter in device memory, zero at the launch, in the table's order (run_pass puts the layers
/// with the largest units first), until there are none left. The warps of a grid-stride schedule
/// take what falls to them, some several large filters and some a few small ones, and the pass
/// waits for the slowest; from a queue, a warp that is done takes the next unit, so they finish
/// together (bench/schedule.py models both). A warp's next unit is drawn in the last round of its
/// current one (queue_rounds), so the draw's latency hides behind loads. That is too late to
/// prefetch the next unit's first round; instead, a warp that takes unit u prefetches the first
/// round of unit u + (the grid's warps), which some warp takes about a unit's time later.
/// reduce_layers sets the counter back to zero.
template <class Tuning, class T, bool Advance, bool Shared>
__device__ inline void fold_queued(const layer_desc<T>* layers, int n_layers, std::size_t n_units, partial* out,
                                   std::uint32_t* r, unsigned long long* queue, std::uint32_t* bits) {
  constexpr unsigned long long none = ~0ull;  // lane 0 has not drawn for the next unit
  const bool leader = (threadIdx.x & 31) == 0;
  const std::size_t warps = std::size_t(gridDim.x) * warps_per_block;
  unsigned long long drawn = leader ? atomicAdd(queue, 1ull) : 0;
  for (std::size_t unit = __shfl_sync(0xffffffffu, drawn, 0); unit < n_units;
       unit = __shfl_sync(0xffffffffu, drawn, 0)) {
    const std::size_t ahead = unit + warps;
    int k, ka;
    find_layers(layers, n_layers, unit, ahead < n_units ? ahead : unit, k, ka);
    if (ahead < n_units) prefetch_unit<Tuning, T, Shared>(layers[ka], ahead);
    const layer_desc<T>& L = layers[k];
    const int p = Shared ? L.group : 32;
    drawn = none;
    fold_group<Tuning, T, Advance>(L, (unit - L.first_item) * std::size_t(32 / p), p, 0, bits, out, r,
                                   queue_rounds{queue, &drawn});
    if (leader && drawn == none) drawn = atomicAdd(queue, 1ull);  // the strided path, or no rounds
  }
}

/// A work-queue unit as one lane of a warp sees it (fold_staged): layer k, the group of p lanes
/// the lane is lane t of, its filter i and the filter's vectors in each snapshot, the vectors its
/// group reads (0 past the layer's last filter) and the unit's rounds of stage_vectors vectors
/// per lane.
template <class T>
struct staged_unit {
  int k, p, t;
  std::size_t i;
  vector16<T>* prev;  // mutable only for compare-and-advance
  const vector16<T>* next;
  std::uint32_t own, rounds;
};
template <class Tuning, class T, bool Shared>
__device__ inline staged_unit<T> unit_at(const layer_desc<T>* layers, int k, std::size_t unit) {
  const layer_desc<T>& L = layers[k];
  staged_unit<T> u;
  const int lane = int(threadIdx.x & 31);
  u.k = k;
  u.p = Shared ? L.group : 32;
  u.t = lane % u.p;
  u.i = (unit - L.first_item) * std::size_t(32 / u.p) + std::size_t(lane / u.p);
  const std::uint32_t nv = std::uint32_t(L.ext[1] * L.ext[2] * L.ext[3] / (16 / sizeof(T)));
  u.own = u.i < L.ext[0] ? nv : 0;
  const std::size_t f = u.own ? u.i : 0;
  u.prev = reinterpret_cast<vector16<T>*>(L.prev + f * L.sp[0]);
  u.next = reinterpret_cast<const vector16<T>*>(L.next + f * L.sn[0]);
  const std::uint32_t per_round = std::uint32_t(u.p) * Tuning::stage_vectors;
  u.rounds = (nv + per_round - 1) / per_round;
  return u;
}

/// schedule::staged: fold_queued's units, in the same order, with the same bits, whose loads are
/// asynchronous copies into a ring of `stages` rounds in shared memory (`ring`, the warp's
/// stage_bytes * stages), so that stages - 1 rounds of a warp's loads are in flight while it folds
/// one, across its units, and no register holds them. A producer (the copies) runs stages - 1
/// rounds ahead of a consumer (the folds) in the same warp; a unit's rounds are fold_packed's,
/// with stage_vectors vectors a lane. When the producer starts a unit it draws the warp's next one
/// from the queue, so the draw's latency hides behind the copies in flight, and it hands the
/// consumer the units it starts through a ring of unit numbers in registers, lane j holding the
/// j-th mod `stages`. Each lane reads only the slots it copied into, once their group is complete
/// (no barrier). Every layer is packed, with filters of at most warp_bits weights (run_pass).
template <class Tuning, class T, bool Advance, bool Shared>
__device__ inline void fold_staged(const layer_desc<T>* layers, int n_layers, std::size_t n_units, partial* out,
                                   std::uint32_t* r, unsigned long long* queue, std::uint32_t* bits,
                                   unsigned char* ring) {
  constexpr int V = 16 / sizeof(T);
  constexpr int U = Tuning::stage_vectors;
  constexpr int stages = Tuning::stages;
  using vec = vector16<T>;
  const int lane = int(threadIdx.x & 31);
  // Slot of (stage s, vector u, snapshot 0: prev, 1: next) of this lane: a stage's 16-byte slots
  // of one (u, snapshot) are the 32 lanes' side by side, so that a warp's accesses to them are
  // free of bank conflicts.
  vec* const slots = reinterpret_cast<vec*>(ring);
  const auto slot = [&](std::uint32_t s, int u, int snapshot) {
    return slots + ((s * U + std::uint32_t(u)) * 2 + std::uint32_t(snapshot)) * 32 + std::uint32_t(lane);
  };
  unsigned long long drawn = lane == 0 ? atomicAdd(queue, 1ull) : 0;  // lane 0: the producer's next unit
  std::size_t ring_unit = 0;  // lane j: the unit the producer started j-th (mod stages), and its layer
  int ring_layer = 0;
  std::uint32_t started = 0, taken = 0;      // units the producer started, the consumer took
  std::uint32_t produced = 0, consumed = 0;  // rounds
  staged_unit<T> pu{}, cu{};                 // the producer's unit and the consumer's
  std::uint32_t pr = 0, cr = 0;              // the round of it each does next
  // What the consumer's rounds read of its unit's layer, set once per unit: the threshold,
  // whether it keeps flags (fold_group) and its group's share of the bitset.
  compute_t<T> tau{};
  bool flat = false;
  std::uint32_t* own_bits = bits;
  bool producing = true;
  lane_totals<T> acc;

  // Copies the producer's next round into stage `produced % stages` (none once the queue is
  // empty), and commits a group of copies, empty or not: round n is group n.
  const auto produce = [&] {
    if (producing && pr == pu.rounds) {
      const std::size_t unit = __shfl_sync(0xffffffffu, drawn, 0);
      producing = unit < n_units;
      if (producing) {
        if (lane == 0) drawn = atomicAdd(queue, 1ull);
        int k, same;
        find_layers(layers, n_layers, unit, unit, k, same);
        pu = unit_at<Tuning, T, Shared>(layers, k, unit);
        if (std::uint32_t(lane) == started % stages) {
          ring_unit = unit;
          ring_layer = k;
        }
        ++started;
        pr = 0;
      }
    }
    if (producing) {
      const std::uint32_t s = produced % stages, base = pr * std::uint32_t(pu.p * U);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const std::uint32_t v = base + std::uint32_t(u * pu.p + pu.t);
        if (v < pu.own) {
          copy_async16(slot(s, u, 0), pu.prev + v);
          copy_async16(slot(s, u, 1), pu.next + v);
        }
      }
      ++pr;
      ++produced;
    }
    commit_copies();
  };
  // Folds the consumer's next round, from stage `consumed % stages`; after a unit's last round,
  // stores its filters' totals.
  const auto consume = [&] {
    if (cr == 0) {
      const int j = int(taken % stages);
      const std::size_t unit = __shfl_sync(0xffffffffu, ring_unit, j);
      cu = unit_at<Tuning, T, Shared>(layers, __shfl_sync(0xffffffffu, ring_layer, j), unit);
      ++taken;
      acc = lane_totals<T>{};
      const layer_desc<T>& L = layers[cu.k];
      tau = L.tau;
      flat = L.ext[2] * L.ext[3] == 1 && L.r_offset == no_r;  // no flags (fold_group)
      own_bits = bits + std::size_t(lane / cu.p) * (warp_bits / 32 / std::size_t(32 / cu.p));
    }
    const std::uint32_t s = consumed % stages, base = cr * std::uint32_t(cu.p * U);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::uint32_t v = base + std::uint32_t(u * cu.p + cu.t);
      std::uint32_t m = 0;
      if (v < cu.own) {
        const vec a = *slot(s, u, 0), b = *slot(s, u, 1);
        m = acc.add_vector(a.v, b.v, tau);
        if (Advance) {
          assume_global(cu.prev);
          cu.prev[v] = b;
        }
      }
      if (!flat) store_flags<V>(own_bits, m, v, cu.t, v < cu.own);
    }
    ++consumed;
    if (++cr == cu.rounds) {
      const layer_desc<T>& L = layers[cu.k];
      const std::size_t C = L.ext[1], HW = L.ext[2] * L.ext[3];
      store_group_totals(L, cu.i, cu.t, cu.p, cu.own != 0, flat, C, HW, acc, own_bits, out, r);
      cr = 0;
      __syncwarp();  // every lane is done with the bitset before the next unit's flags go in
    }
  };

  for (int k = 0; k < stages - 1; ++k) produce();
  // Groups committed at the top: stages - 1 + consumed; at most stages - 2 pending leaves group
  // (round) `consumed` complete. The round produced here goes to the stage consumed last.
  while (consumed < produced) {
    wait_copies<stages - 2>();
    produce();
    consume();
  }
}

}  // namespace fevo::cuda::detail
