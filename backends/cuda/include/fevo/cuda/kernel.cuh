// The fused CUDA kernels of fevo::cuda. Needs nvcc; nothing here needs more than sm_60 (the
// staged kernel's asynchronous copies, sm_80, are plain loads and stores below that).
//
// fold_filters: one launch for every layer of a call. A table of per-layer descriptors
// (layer_desc) lives in device memory. The work is cut into items, and each block takes items
// in a grid-stride loop (or, in a work-queue pass of the lean kernel, each warp takes its next
// unit from a queue: fold_queued; or the staged kernel's, fold_staged, whose loads are
// asynchronous copies through shared memory, sm_80 and newer), finding an item's layer by
// binary search in the table:
//   - warp mode (small filters): an item is warps_per_block consecutive filters, one per warp;
//   - block mode (filters of at least policy::block_from weights): an item is one filter, read by
//     the whole block, so a few hundred large filters still spread over every SM;
//   - shared warps (policy::warp_sharing, small packed filters): each warp reads 2 or 4 filters at
//     once, 16 or 8 lanes each (layer_desc::group), so a filter of a few hundred weights still
//     keeps every lane's loads in flight and the per-filter reductions are shared.
// Either way the filter's weights are folded with the core's element rules:
//   - packed layers (each filter's C*H*W weights contiguous in both snapshots, 16-byte aligned
//     filters) are read with 16-byte vector loads, several in flight per thread, the next round's
//     lines (or the next filter's first) prefetched into L2 meanwhile; any other strides use
//     element loads, which are still coalesced when consecutive weights are adjacent;
//   - each weight's "changed" flag goes into a bitset in shared memory (one per warp, or the
//     whole block's in block mode), assembled a word at a time with warp shuffles or ballots, from
//     which the per-(filter, channel) counts R_ic, the zero channels (Z) and the changed count (S)
//     come after the pass, in the same read of memory (a packed 1x1 layer without R_ic needs no
//     bitset: its zero channels are its unchanged weights);
//   - D is summed per thread in double (exact squares) and reduced in a fixed order.
// Filters larger than the bitset of their mode are folded channel by channel by one warp.
// With Advance, the kernel also stores each next weight over the prev weight it just read
// (compare-and-advance: 12 bytes of traffic per f32 weight instead of 16).
//
// Each layer's per-filter totals are then merged in a fixed order (merge_filters), so results are
// deterministic, either
//   - by reduce_layers, a second launch with one block per layer, or
//   - in the same launch (one_launch), by the block that finishes the layer's last item: after
//     each item, thread 0 takes a ticket from the layer's counter (after a fence, so the item's
//     totals are visible to the block that draws the last ticket). A ticket is looked at only
//     after the block's next item, so its latency is hidden behind that item's loads. The merging
//     block zeroes the counter again, so that the next pass on the same table needs no upload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <fevo/accumulator.hpp>
#include <fevo/element.hpp>

namespace fevo::cuda::detail {

inline constexpr int warps_per_block = 8;
inline constexpr int block_threads = 32 * warps_per_block;
/// Bits of one warp's bitset: filters up to this many weights take the warp bitset path (4 KiB).
inline constexpr std::size_t warp_bits = 32768;
/// Bits of a block's bitset (all the warps' bitsets together): the limit of block mode.
inline constexpr std::size_t block_bits = warp_bits * warps_per_block;
/// 16-byte vectors in flight per thread in the packed path, and blocks per SM fold_filters is
/// compiled for (it caps registers at 128 per thread). On an H100, 2 vectors with 3 or 4 blocks
/// per SM (80 or 64 registers, a few spills) measured 5-10% slower on VGG-16 and no faster on
/// ResNet-50 (bench/bench_cuda.cu).
/// FEVO_CUDA_UNROLL and FEVO_CUDA_LEAN_BLOCKS_PER_SM are for timing other shapes of the kernels
/// (fevo_bench_cuda_deep: 8 vectors, the lean kernel at 2 blocks); results do not depend on them
/// but for D's last bits.
#ifndef FEVO_CUDA_UNROLL
#define FEVO_CUDA_UNROLL 4
#endif
#ifndef FEVO_CUDA_LEAN_BLOCKS_PER_SM
#define FEVO_CUDA_LEAN_BLOCKS_PER_SM 3
#endif
inline constexpr int unroll = FEVO_CUDA_UNROLL;
static_assert(unroll == 2 || unroll == 4 || unroll == 8, "FEVO_CUDA_UNROLL: 2, 4 or 8 vectors per thread");
inline constexpr int min_blocks_per_sm = 2;
/// Blocks per SM the lean kernels (fold_filters<..., kernel_kind::lean or queued>) are compiled
/// for: they have no block mode, no channel-by-channel path and no in-launch merge, and at 3
/// blocks (80 registers, sm_90: lean f32 20-22 bytes of spills, bf16 36-38; queued none, 4 with
/// shared warps) keep half as many bytes more in flight per SM, with the same `unroll` (with 8
/// vectors at 2 blocks: 128 registers, no spills). Not yet timed on a GPU: policy::lean_kernel()
/// and policy::work_queue() are off by default.
inline constexpr int lean_blocks_per_sm = FEVO_CUDA_LEAN_BLOCKS_PER_SM;
static_assert(lean_blocks_per_sm >= 1 && lean_blocks_per_sm <= 8, "FEVO_CUDA_LEAN_BLOCKS_PER_SM: 1 to 8");
inline constexpr std::size_t no_r = static_cast<std::size_t>(-1);
/// The staged kernel (kernel_kind::staged, fold_staged): each warp keeps `stages` rounds of its
/// loads in a ring in shared memory, each round `stage_vectors` 16-byte vectors of each snapshot
/// per lane, stages - 1 rounds in flight while it folds one. By default 4 rounds of 2 vectors:
/// 8 KiB a warp, 64 KiB a block of dynamic shared memory besides the 32 KiB of bitsets, two
/// blocks per SM on an H100 or H200 (228 KiB), one on an A100; devices that cannot give a block
/// what it needs take the queued kernel. FEVO_CUDA_STAGES and FEVO_CUDA_STAGE_VECTORS are for
/// timing other shapes (fevo_bench_cuda_deep: 8 rounds of 1 vector, the same bytes in finer
/// rounds); results do not depend on them.
#ifndef FEVO_CUDA_STAGES
#define FEVO_CUDA_STAGES 4
#endif
#ifndef FEVO_CUDA_STAGE_VECTORS
#define FEVO_CUDA_STAGE_VECTORS 2
#endif
inline constexpr int stages = FEVO_CUDA_STAGES;
inline constexpr int stage_vectors = FEVO_CUDA_STAGE_VECTORS;
static_assert(stages >= 2 && stages <= 8, "FEVO_CUDA_STAGES: a ring of 2 to 8 rounds");
static_assert(stage_vectors == 1 || stage_vectors == 2 || stage_vectors == 4,
              "FEVO_CUDA_STAGE_VECTORS: 1, 2 or 4 vectors a lane a round");
inline constexpr std::size_t stage_bytes = std::size_t(32) * stage_vectors * 2 * 16;  // one round of a warp
inline constexpr std::size_t staged_shared_bytes = stage_bytes * stages * warps_per_block;

/// The instantiations of fold_filters: every path (full), or the lean kernel, which serves passes
/// of warp-mode filters only (lean_allowed), each block taking items in a grid-stride loop (lean)
/// or each warp taking units from a work queue (queued), or the staged kernel, a work queue whose
/// loads go through shared memory by asynchronous copies (staged_allowed: packed layers only;
/// fold_staged). One kernel each: a kernel holding two loops would spill more in both.
enum class kernel_kind { full, lean, queued, staged };

template <class T>
struct layer_desc {
  T* prev;  // mutable only for compare-and-advance
  const T* next;
  std::size_t ext[4];
  std::size_t sp[4];
  std::size_t sn[4];
  compute_t<T> tau;
  std::size_t first_filter;  ///< global index of this layer's filter 0
  std::size_t first_item;    ///< global index of this layer's first work item
  std::size_t r_offset;      ///< start of this layer's R_ic in the R buffer, or no_r
  int packed;                ///< 1: vector path (see above)
  int block;                 ///< 1: block mode, an item per filter; 0: warp mode
  int group;                 ///< warp mode: lanes per filter, 32 or (packed only) 16 or 8
};

/// Dynamic shared memory of a launch of fold_filters<..., Kind>: the staged kernel's rings.
constexpr std::size_t dynamic_shared_bytes(kernel_kind kind) {
  return kind == kernel_kind::staged ? staged_shared_bytes : 0;
}

/// Items of a layer in each mode (`group`: lanes per filter in warp mode); with `units`, the
/// items of a work-queue pass: a warp's share, 32 / group filters (fold_queued).
inline std::size_t items_of(std::size_t filters, bool block, int group = 32, bool units = false) {
  const std::size_t per_item = std::size_t(units ? 1 : warps_per_block) * std::size_t(32 / group);
  return block ? filters : (filters + per_item - 1) / per_item;
}

/// The fewest lanes a filter of T may have in a shared warp: a bitset word is assembled by the
/// 32 / (16 / sizeof(T)) lanes that hold its vectors, which must be in the same group.
template <class T>
inline constexpr int min_group = 32 / int(16 / sizeof(T)) > 8 ? 32 / int(16 / sizeof(T)) : 8;

/// Lanes per filter of a packed layer in a shared warp: the fewest (at least min_group) with
/// which each lane takes at most two rounds of `unroll` vectors of a filter of `size` weights.
template <class T>
int group_for(std::size_t size) {
  const std::size_t V = 16 / sizeof(T);
  int g = min_group<T>;
  while (g < 32 && size > std::size_t(g) * V * unroll * 2) g *= 2;
  return g;
}

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

/// A hint that the 128-byte line holding p will be read soon: it is fetched into L2 and nothing
/// waits for it (no register, no stall), so it adds bytes in flight that loads alone, capped by
/// registers, cannot. p is always inside a buffer of the call (the emulator checks this).
/// FEVO_CUDA_PREFETCH=0 leaves the hints out (the benchmark times the kernels both ways).
#ifndef FEVO_CUDA_PREFETCH
#define FEVO_CUDA_PREFETCH 1
#endif
#ifdef __CUDACC__
__device__ inline void prefetch_l2(const void* p) {
#if defined(__CUDA_ARCH__) && FEVO_CUDA_PREFETCH
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
  (void)p;
#endif
}
#else
inline void prefetch_l2(const void* p) { ::simt_prefetch_l2(p); }
#endif

/// Asynchronous copies of 16 bytes from global into shared memory (cp.async.cg, sm_80 and newer:
/// through L2, no register holds the bytes in flight), committed in groups, each thread waiting
/// until at most N of its own groups are still pending. A thread may read what it copied once the
/// group is complete, and nothing else (no thread reads another's copies, so no barrier is
/// needed). Below sm_80 the copy is a plain load and store, and the waits are no-ops; on the
/// emulator, copies land only when waited for, so a read too early finds stale bytes.
/// The staged kernel's dynamic shared memory: staged_shared_bytes, 16-byte aligned.
#ifdef __CUDACC__
__device__ inline void copy_async16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(src) : "memory");
#else
  *static_cast<uint4*>(dst) = *static_cast<const uint4*>(src);
#endif
}
__device__ inline void commit_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N>
__device__ inline void wait_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
__device__ inline unsigned char* dynamic_shared() {
  extern __shared__ uint4 fevo_dynamic_shared[];
  return reinterpret_cast<unsigned char*>(fevo_dynamic_shared);
}
#else
inline void copy_async16(void* dst, const void* src) { ::simt_copy_async(dst, src, 16); }
inline void commit_copies() { ::simt_commit_copies(); }
template <int N>
inline void wait_copies() {
  ::simt_wait_copies(N);
}
inline unsigned char* dynamic_shared() { return ::simt_dynamic_shared(); }
#endif

/// 16 bytes of a packed filter: the unit of its vector loads.
template <class T>
struct alignas(16) vector16 {
  T v[16 / sizeof(T)];
};

/// The same 16 bytes as four 32-bit words: what the packed path's loads and stores hold. Loaded
/// into vector16's elements under fold_packed's `v < own` condition, a vector of 16-bit elements
/// (f16, bf16) was split into a register per element as soon as its load arrived, and in the
/// default kernel's SASS (nvcc 13, sm_90 and sm_75) that split came before the rest of the
/// round's loads were issued: the warp waited for the first snapshot's vectors before asking for
/// the second's, two memory latencies a round instead of one, and it spilled 16 to 94 bytes. As
/// words, every load of a round is issued before the first is used, for every element type, with
/// no spills in the default kernel (tools/sass_report.py; cuda.sass_loads holds the first); the
/// elements are taken apart only to be folded. may_alias: the words are read from and written
/// over the snapshots' elements (float, half, ...), which a compiler may otherwise assume they
/// never alias.
struct alignas(16) [[gnu::may_alias]] words16 {
  std::uint32_t w[4];
};
template <class T>
__device__ inline vector16<T> as_vector(const words16& x) {
  static_assert(sizeof(vector16<T>) == sizeof(words16), "16 bytes either way");
  vector16<T> v;
  std::memcpy(&v, &x, sizeof v);
  return v;
}

/// The snapshots' pointers come from the descriptor table, so nvcc cannot tell that they point to
/// global memory, and the packed path's 16-byte loads and stores were generic ones (LD.E.128,
/// ST.E.128 in the SASS of nvcc 13), which first resolve which memory an address is in. Told, it
/// emits the global loads and stores cub::DeviceReduce's are (LDG.E.128, STG.E.128), with the same
/// registers and spills (tools/sass_report.py; the cuda.sass_loads test holds the loads to it).
/// Every pointer handed to these kernels is device global memory (fevo::cuda checks each with
/// cudaPointerGetAttributes). Not in the strided paths: there it made the work-queue kernels
/// spill 50-60 bytes more.
template <class U>
__device__ inline void assume_global(const U* p) {
#if defined(__CUDA_ARCH__)
  __builtin_assume(__isGlobal(p));
#else
  (void)p;
#endif
}

/// Programmatic dependent launch (compute capability 9.0 and newer; nothing on older GPUs, where
/// the host launches reduce_layers plainly, and on the emulator): fold_filters lets the launch of
/// the reduce_layers after it begin as soon as all its blocks are running, so that launch
/// overlaps the pass instead of following it; reduce_layers waits, before it reads anything,
/// until fold_filters has finished and its writes are visible, as a plain launch would.
__device__ inline void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}
__device__ inline void wait_for_prerequisite_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/// Prefetches vectors [from, from + p * unroll) ∩ [0, nv) of a packed filter in both snapshots
/// (the next round of fold_packed): thread t of p takes one line, the first half of the threads
/// prev's lines, the second half next's.
template <class Vec>
__device__ inline void prefetch_round(const Vec* vp, const Vec* vn, std::uint32_t from, std::uint32_t nv, int t,
                                      int p) {
  constexpr std::uint32_t per_line = 128 / sizeof(Vec);
  const std::uint32_t lines = std::uint32_t(p) * unroll / per_line;  // per snapshot
  for (std::uint32_t l = std::uint32_t(t); l < 2 * lines; l += std::uint32_t(p)) {
    const std::uint32_t v = from + (l % lines) * per_line;
    if (v < nv) prefetch_l2((l < lines ? vp : vn) + v);
  }
}

/// Per-thread accumulation of one weight pair (the accumulator's fold, minus the channel logic).
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

/// Index of the layer that holds work item `item`.
template <class T>
__device__ inline int find_layer(const layer_desc<T>* layers, int n_layers, std::size_t item) {
  int k, same;
  find_layers(layers, n_layers, item, item, k, same);
  return k;
}

/// Work items of layer k.
template <class T>
__device__ inline std::size_t layer_items(const layer_desc<T>* layers, int n_layers, std::size_t n_items, int k) {
  return (k + 1 < n_layers ? layers[k + 1].first_item : n_items) - layers[k].first_item;
}

/// A partial another block wrote during this launch, read from L2 (never a stale L1 line).
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

/// Merges the totals of layer k's filters into totals[k] in a fixed order: thread t takes filters
/// t, t + block_threads, ...; then a tree over the threads. Every thread of the block calls it;
/// `part` is shared memory for block_threads partials (free again when it returns). Wide: four
/// loads in flight (reduce_layers; fold_filters keeps its registers for its own loads).
template <bool Wide, class T>
__device__ inline void merge_filters(const layer_desc<T>* layers, int n_layers, std::size_t n_filters, int k,
                                     const partial* filters, partial* totals, partial* part) {
  // The table's layers are in the order of their filters (run_pass), so a layer's end is the next
  // one's start. (Computing it as first + ext[0] costs the fold_filters that inline this more spills.)
  const std::size_t first = layers[k].first_filter;
  const std::size_t last = k + 1 < n_layers ? layers[k + 1].first_filter : n_filters;
  partial p;
  std::size_t g = first + threadIdx.x;
  // Four loads in flight, merged in the same order as one at a time.
  for (; Wide && g + 3 * block_threads < last; g += 4 * block_threads) {
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
  if (threadIdx.x == 0) totals[k] = part[0];
  __syncthreads();
}

/// What a warp does besides folding while a filter's last round of loads is in flight
/// (fold_packed): nothing, but in a work-queue pass (queue_rounds).
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
/// (thread t), 16-byte loads, `unroll` vectors in flight per thread, flags into `bits`.
/// Every bitset word that covers [0, size) is written (bits past size as 0). All 32 lanes of
/// each participating warp must call it (warp shuffles), with the same size; p is a multiple of
/// 32 (a warp or a block) or, in a shared warp, 16 or 8 (at least min_group<T>): aligned groups
/// of lanes, where a group with no filter calls it with `valid` false. p is an argument, not a
/// template parameter: a constant once inlined where the caller's is, the layer's group in the
/// shared-warp kernel, where one copy of this loop serves every group size (each copy of it
/// costs fold_filters registers).
/// While a round's loads are in flight, the next round's lines are prefetched into L2: this
/// filter's next round or, in its last, the first round of `after_p` / `after_n` (the next filter
/// of the same size this group folds; null if none). `bits` null: no flags kept (every lane of the
/// warp passes null or not alike). `rounds`: what else the warp does while the loads of the
/// filter's last round are in flight (plain_rounds: nothing; queue_rounds in a work-queue pass);
/// every lane calls it once.
template <class T, bool Advance, class Rounds = plain_rounds>
__device__ inline void fold_packed(T* pp, const T* pn, std::uint32_t size, int t, int p, compute_t<T> tau,
                                   lane_totals<T>& acc, std::uint32_t* bits, bool valid = true,
                                   const T* after_p = nullptr, const T* after_n = nullptr,
                                   const Rounds& rounds = Rounds{}) {
  constexpr int V = 16 / sizeof(T);  // elements per vector
  using vec = vector16<T>;
  assume_global(pp);
  assume_global(pn);
  const vec* vp = reinterpret_cast<const vec*>(pp);
  const vec* vn = reinterpret_cast<const vec*>(pn);
  const std::uint32_t nv = size / V;  // 32-bit: a filter on this path has at most block_bits weights
  const std::uint32_t own = valid ? nv : 0;  // vectors this thread's group reads
  for (std::uint32_t base = 0; base < nv; base += std::uint32_t(p) * unroll) {
    words16 a[unroll], b[unroll];
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      const std::uint32_t v = base + std::uint32_t(u * p + t);
      if (v < own) {
        a[u] = reinterpret_cast<const words16*>(pp)[v];
        b[u] = reinterpret_cast<const words16*>(pn)[v];
      }
    }
    const std::uint32_t round = std::uint32_t(p) * unroll;
    if (base + round < own) prefetch_round(vp, vn, base + round, own, t, p);
    else if (after_p && valid)
      prefetch_round(reinterpret_cast<const vec*>(after_p), reinterpret_cast<const vec*>(after_n), 0, nv, t, p);
    if (base + round >= nv) rounds.last_round();
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      const std::uint32_t v = base + std::uint32_t(u * p + t);
      std::uint32_t m = 0;
      if (v < own) {
        m = acc.add_vector(as_vector<T>(a[u]).v, as_vector<T>(b[u]).v, tau);
        if (Advance) reinterpret_cast<words16*>(pp)[v] = b[u];
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

/// The end of a warp-mode filter's fold (fold_group, fold_staged): filter i of layer L (past the
/// layer's last filter: nothing), folded by the p lanes of its group (lane t of them) into `acc`,
/// its flags in the group's bitset `own` (none in a packed 1x1 layer without R_ic: each weight is a
/// channel, so its zero channels are its unchanged weights, C - changed). Counts the zero
/// channels (and R_ic, if the layer wants them) and stores the filter's totals. Every lane of the
/// warp calls it.
/// (`valid`: i < L.ext[0]; `flat`: no flags kept; C, HW: the layer's channels and kernel size,
/// passed as the caller has them, which saves fold_filters registers.)
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
/// A packed 1x1 layer without R_ic keeps no flags: each weight is a channel, so its zero
/// channels are its unchanged weights, C - changed. `rounds`: as in fold_packed (packed layers).
template <class T, bool Advance, class Rounds = plain_rounds>
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
    fold_packed<T, Advance>(L.prev + f * L.sp[0], L.next + f * L.sn[0], std::uint32_t(size), t, p, L.tau, acc,
                            flat ? nullptr : own, valid, more ? L.prev + after * L.sp[0] : nullptr,
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
template <class T, bool Advance>
__device__ inline void fold_block(const layer_desc<T>& L, std::size_t i, std::size_t ahead, std::uint32_t* bits,
                                  block_totals& red, partial* out, std::uint32_t* r) {
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const std::size_t C = L.ext[1], HW = L.ext[2] * L.ext[3], size = C * HW;
  lane_totals<T> acc;
  if (L.packed) {
    const std::size_t after = i + ahead;
    const bool more = ahead != 0 && after < L.ext[0];
    fold_packed<T, Advance>(L.prev + i * L.sp[0], L.next + i * L.sn[0], std::uint32_t(size), t, block_threads,
                            L.tau, acc, bits, true, more ? L.prev + after * L.sp[0] : nullptr,
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
template <class T, bool Shared>
__device__ inline void prefetch_unit(const layer_desc<T>& A, std::size_t unit) {
  if (!A.packed) return;
  const int p = Shared ? A.group : 32, lane = int(threadIdx.x & 31);
  const std::size_t f = (unit - A.first_item) * std::size_t(32 / p) + std::size_t(lane / p);
  if (f >= A.ext[0]) return;  // a group past the layer's last filter
  const std::uint32_t nv = std::uint32_t(A.ext[1] * A.ext[2] * A.ext[3] / (16 / sizeof(T)));
  prefetch_round(reinterpret_cast<const vector16<T>*>(A.prev + f * A.sp[0]),
                 reinterpret_cast<const vector16<T>*>(A.next + f * A.sn[0]), 0, nv, lane % p, p);
}

/// The lean kernel's work queue: each warp takes units (the 32 / group filters a warp folds at
/// once) from a counter in device memory, zero at the launch, in the table's order (run_pass
/// puts the layers with the largest units first), until there are none left. The warps of a
/// static schedule take what falls to them, some several large filters and some a few small
/// ones, and the pass waits for the slowest; from a queue, a warp that is done takes the next
/// unit, so they finish together. A warp's next unit is drawn in the last round of its current
/// one (queue_rounds), so the draw's latency hides behind loads. That is too late to prefetch
/// the next unit's first round, as a static schedule does for its next item; instead, a warp
/// that takes unit u prefetches the first round of unit u + (the grid's warps). The units are
/// taken in order, each warp its next when it is done with its current one, so that unit is
/// taken about a unit's time later, by whichever warp, and finds its first lines in L2.
/// reduce_layers sets the counter back to zero.
template <class T, bool Advance, bool Shared>
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
    if (ahead < n_units) prefetch_unit<T, Shared>(layers[ka], ahead);
    const layer_desc<T>& L = layers[k];
    const int p = Shared ? L.group : 32;
    drawn = none;
    fold_group<T, Advance>(L, (unit - L.first_item) * std::size_t(32 / p), p, 0, bits, out, r,
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
template <class T, bool Shared>
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
  const std::uint32_t per_round = std::uint32_t(u.p) * stage_vectors;
  u.rounds = (nv + per_round - 1) / per_round;
  return u;
}

/// The staged kernel's loop (kernel_kind::staged): a work-queue pass (fold_queued's units, in the
/// same order, with the same bits) whose loads are asynchronous copies into a ring of `stages`
/// rounds in shared memory (`ring`, the warp's stage_bytes * stages), so that stages - 1 rounds of
/// a warp's loads are in flight while it folds one, across its units, and no register holds them.
/// A producer (the copies) runs stages - 1 rounds ahead of a consumer (the folds) in the same
/// warp; a unit's rounds are fold_packed's, with stage_vectors vectors a lane. When the producer
/// starts a unit it draws the warp's next one from the queue, so the draw's latency hides behind
/// the copies in flight, and it hands the consumer the units it starts through a ring of unit
/// numbers in registers, lane j holding the j-th mod `stages`. Each lane reads only the slots it
/// copied into, once their group is complete (no barrier). Every layer is packed, with filters of
/// at most warp_bits weights (staged_allowed).
template <class T, bool Advance, bool Shared>
__device__ inline void fold_staged(const layer_desc<T>* layers, int n_layers, std::size_t n_units, partial* out,
                                   std::uint32_t* r, unsigned long long* queue, std::uint32_t* bits,
                                   unsigned char* ring) {
  constexpr int V = 16 / sizeof(T);
  constexpr int U = stage_vectors;
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
  // whether it keeps flags (fold_group) and its group's share of the bitset. (The blocks per SM
  // are bounded by the shared memory, not by registers: keeping these costs no occupancy.)
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
        const int k = find_layer(layers, n_layers, unit);
        pu = unit_at<T, Shared>(layers, k, unit);
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
      cu = unit_at<T, Shared>(layers, __shfl_sync(0xffffffffu, ring_layer, j), unit);
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

/// With `done` (one counter per layer, zero at the launch), each layer's totals are merged into
/// `totals` by the block that finishes its last item; without, reduce_layers does it. Shared:
/// warp-mode layers have layer_desc::group lanes per filter; otherwise 32, a compile-time
/// constant (the loops of a run-time group size take more registers). The lean kinds (lean,
/// queued): a pass in which every layer is in warp mode with filters of at most warp_bits
/// weights, and `done` is null (lean_allowed); the paths they cannot take are compiled out, for
/// fewer registers and more blocks per SM (lean_blocks_per_sm). `queue` (queued and staged; else
/// null): the items are units, which the warps take from it (fold_queued, fold_staged). The
/// staged kind also needs every layer packed (staged_allowed) and is launched with
/// staged_shared_bytes of dynamic shared memory; its blocks per SM are bounded by that (2 on an
/// H100). A pass gives the same bits with any Kind.
template <class T, bool Advance, bool Shared = false, kernel_kind Kind = kernel_kind::full>
__global__ void __launch_bounds__(block_threads, Kind == kernel_kind::lean || Kind == kernel_kind::queued
                                                     ? lean_blocks_per_sm
                                                     : min_blocks_per_sm)
fold_filters(const layer_desc<T>* __restrict__ layers, int n_layers, std::size_t n_items, std::size_t n_filters,
             partial* __restrict__ out, std::uint32_t* __restrict__ r, partial* __restrict__ totals,
             unsigned long long* __restrict__ done, unsigned long long* __restrict__ queue) {
  alignas(16) __shared__ std::uint32_t bits[block_bits / 32];
  __shared__ block_totals red;
  __shared__ int merge_next;  // a layer whose last item this block finished, or -1
  static_assert(sizeof(partial) * block_threads <= sizeof(std::uint32_t) * (block_bits / 32),
                "merge_filters borrows the bitsets");
  partial* part = reinterpret_cast<partial*>(bits);
  const int warp = threadIdx.x >> 5;
  allow_dependent_launch();
  if constexpr (Kind == kernel_kind::queued) {
    fold_queued<T, Advance, Shared>(layers, n_layers, n_items, out, r, queue,
                                    bits + std::size_t(warp) * (warp_bits / 32));
    return;
  }
  if constexpr (Kind == kernel_kind::staged) {
    fold_staged<T, Advance, Shared>(layers, n_layers, n_items, out, r, queue,
                                    bits + std::size_t(warp) * (warp_bits / 32),
                                    dynamic_shared() + std::size_t(warp) * stage_bytes * stages);
    return;
  }
  constexpr bool Lean = Kind != kernel_kind::full;  // (the code below is dead in the queued kernel)
  // Thread 0: the layer of this block's last item and the ticket it drew there (-1: none).
  int ticket_layer = -1;
  unsigned long long ticket = 0;
  const auto finished_layer = [&]() -> int {
    return ticket_layer >= 0 && ticket + 1 == layer_items(layers, n_layers, n_items, ticket_layer) ? ticket_layer
                                                                                                   : -1;
  };
  // Merges layer k, whose last ticket this block drew, and zeroes its counter for the next pass
  // (no other block touches it again in this launch).
  const auto merge_layer = [&](int k) {
    merge_filters<false>(layers, n_layers, n_filters, k, out, totals, part);
    if (threadIdx.x == 0) done[k] = 0;
  };
  if (threadIdx.x == 0) merge_next = -1;
  bool after_block = true;  // the first item waits for merge_next
  for (std::size_t item = blockIdx.x; item < n_items; item += gridDim.x) {
    const int k = find_layer(layers, n_layers, item);
    const layer_desc<T>& L = layers[k];
    // The previous item is done with the bitsets and the totals. Between two warp-mode items
    // (without `done`) the warps share nothing and go on without waiting for each other.
    const bool block_mode = !Lean && L.block;
    if ((!Lean && done) || after_block || block_mode) __syncthreads();
    after_block = block_mode;
    if (!Lean && merge_next >= 0) merge_layer(merge_next);
    const std::size_t j = item - L.first_item;
    // The block's next item, if it is in this layer: its filters are gridDim.x items on.
    const bool same = item + gridDim.x < L.first_item + layer_items(layers, n_layers, n_items, k);
    if (block_mode) {
      fold_block<T, Advance>(L, j, same ? gridDim.x : 0, bits, red, out, r);
    } else {
      const int p = Shared ? L.group : 32;
      const std::size_t per_item = std::size_t(warps_per_block) * std::size_t(32 / p);
      const std::size_t i = (j * warps_per_block + std::size_t(warp)) * std::size_t(32 / p);
      std::uint32_t* own = bits + std::size_t(warp) * (warp_bits / 32);
      if (i < L.ext[0]) {
        if (Lean || L.ext[1] * L.ext[2] * L.ext[3] <= warp_bits)
          fold_group<T, Advance>(L, i, p, same ? gridDim.x * per_item : 0, own, out, r);
        else
          fold_channels<T, Advance>(L, i, out, r);
      }
    }
    if (!Lean && done) {
      __syncthreads();  // every warp has stored its filter's totals
      if (threadIdx.x == 0) {
        merge_next = finished_layer();  // the previous ticket: it has long arrived
        __threadfence();  // this item's totals before its ticket (and, for merge_next, the others')
        ticket = atomicAdd(done + k, 1ull);
        ticket_layer = k;
      }
    }
  }
  if (Lean || !done) return;
  __syncthreads();
  if (merge_next >= 0) merge_layer(merge_next);
  __syncthreads();  // every thread has read merge_next before thread 0 sets it again
  if (threadIdx.x == 0) {
    merge_next = finished_layer();
    __threadfence();  // the other blocks' totals are read after the ticket that says they are done
  }
  __syncthreads();
  if (merge_next >= 0) merge_layer(merge_next);
}

/// One block per layer: merges the layer's per-filter totals in a fixed order. `queue`: the work
/// queue of the fold_filters launch before, set back to zero for the next pass (null: none).
/// It may be launched while that fold_filters runs (see allow_dependent_launch).
template <class T>
__global__ void __launch_bounds__(block_threads)
reduce_layers(const layer_desc<T>* __restrict__ layers, int n_layers, std::size_t n_filters,
              const partial* __restrict__ filters, partial* __restrict__ totals,
              unsigned long long* __restrict__ queue) {
  // Raw storage: __shared__ variables cannot have constructors.
  alignas(partial) __shared__ unsigned char storage[sizeof(partial) * block_threads];
  wait_for_prerequisite_grid();
  if (queue && blockIdx.x == 0 && threadIdx.x == 0) *queue = 0;
  merge_filters<true>(layers, n_layers, n_filters, int(blockIdx.x), filters, totals, reinterpret_cast<partial*>(storage));
}

}  // namespace fevo::cuda::detail
