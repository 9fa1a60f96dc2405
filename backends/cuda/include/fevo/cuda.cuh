// fevo::cuda::par, the fused CUDA backend. Needs nvcc (.cu files); link fevo::cuda.
//
//   auto prev = fevo::oihw<fevo::device_space>(d_prev, N, C, H, W);   // device memory
//   auto next = fevo::oihw<fevo::device_space>(d_next, N, C, H, W);
//   fevo::layer_metrics m = fevo::compute(fevo::cuda::par.on(stream), prev, next, tau);
//   fevo::cuda::compare_and_advance(fevo::cuda::par, prev, next, tau);  // and prev := next
//
//   // A whole model, prev := next for every layer, in one pass:
//   std::vector<fevo::cuda::advance_pair<float>> model = {{"conv1", kept1, live1}, ...};
//   auto metrics = fevo::cuda::compare_and_advance_layers(fevo::cuda::par, model, tau);
//
// A whole model (compute_layers, compare_and_advance_layers) is two kernel launches: the fused
// pass and a per-layer merge. Filters of at least par.block_from weights (default 16384, e.g.
// 3x3x2048) are read by a whole block each, smaller ones by a warp each (on an H100 a warp per
// filter was as fast or faster for every VGG-16 and ResNet-50 layer: bench/bench_cuda.cu);
// par.block_per_filter_from(n) changes the switch (a tuning knob: results are identical either way).
// Host views do not compile with this backend; device pointers that turn out to be host memory,
// and every CUDA error, are reported as fevo::error. Each pointer is checked with
// cudaPointerGetAttributes the first time a host thread hands it to fevo::cuda, and trusted on
// later calls (a training loop passes the same buffers every time; memory freed in between is
// the caller's bug, reported as a CUDA error by the kernel). Calls are synchronous with respect
// to the host (they return results), ordered on the policy's stream.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_set>
#include <type_traits>
#include <vector>

#include <cuda_runtime_api.h>

#include <fevo/fevo.hpp>

#include "cuda/kernel.cuh"

namespace fevo::cuda {

struct policy {
  cudaStream_t stream = nullptr;
  /// Filters with at least this many weights are read by a block each, smaller ones by a warp.
  std::size_t block_from = 16384;
  /// A copy of this policy whose work is ordered on `s`.
  constexpr policy on(cudaStream_t s) const { return policy{s, block_from}; }
  /// A copy of this policy that gives a block to each filter of at least `weights` weights
  /// (SIZE_MAX: a warp per filter always). Results do not depend on it.
  constexpr policy block_per_filter_from(std::size_t weights) const { return policy{stream, weights}; }
};
inline constexpr policy par{};

namespace detail {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) ::fevo::detail::fail("CUDA error in ", what, ": ", cudaGetErrorString(e));
}

/// Pointers this host thread has checked already (bounded: forgotten all at once when full).
inline std::unordered_set<const void*>& checked_pointers() {
  static thread_local std::unordered_set<const void*> s;
  return s;
}
/// Forgets the checked pointers, so the next call checks every pointer again.
inline void forget_checked_pointers() { checked_pointers().clear(); }

/// Refuses pointers the device cannot read: plain host memory and unknown pointers.
inline void check_device_pointer(const void* p, const char* which, std::size_t layer) {
  auto& seen = checked_pointers();
  if (seen.count(p)) return;
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error state of this query
    ::fevo::detail::fail("layer #", layer, ": ", which, " is not a CUDA pointer (",
                         cudaGetErrorString(e), ")");
  }
  FEVO_EXPECTS(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged, "layer #",
               layer, ": ", which, " is host memory; fevo::cuda needs device (or managed) memory");
  if (seen.size() >= 4096) seen.clear();
  seen.insert(p);
}

/// Device scratch reused across calls of one host thread (grown, never shrunk), so that a call
/// costs its two launches and small copies, not cudaMalloc/cudaFree.
class scratch {
 public:
  ~scratch() {
    if (ptr_) cudaFree(ptr_);  // may fail harmlessly at process exit
  }
  /// At least `bytes` bytes of device memory on the current device, 256-byte aligned.
  void* get(std::size_t bytes) {
    int dev = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    if (ptr_ && (bytes > size_ || dev != device_)) {
      cudaFree(ptr_);
      ptr_ = nullptr;
    }
    if (!ptr_) {
      const std::size_t want = bytes > size_ ? bytes + bytes / 2 : size_;
      check(cudaMalloc(&ptr_, want), "cudaMalloc of fevo's scratch");
      size_ = want;
      device_ = dev;
    }
    return ptr_;
  }
  static scratch& for_this_thread() {
    static thread_local scratch s;
    return s;
  }

 private:
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
  int device_ = -1;
};

/// Pinned host memory reused across calls of one host thread (grown, never shrunk): the staging
/// area of the descriptors and the results.
class pinned {
 public:
  ~pinned() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  void* get(std::size_t bytes) {
    if (bytes > size_) {
      if (ptr_) cudaFreeHost(ptr_);
      ptr_ = nullptr;
      size_ = 0;
      const std::size_t want = bytes + bytes / 2;
      check(cudaMallocHost(&ptr_, want), "cudaMallocHost of fevo's staging area");
      size_ = want;
    }
    return ptr_;
  }
  static pinned& for_this_thread() {
    static thread_local pinned p;
    return p;
  }

 private:
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
};

/// For benchmarks: when `on`, each call records CUDA events around its two kernels, and `last_ms`
/// holds their time on the device (the fused pass without the host's part of the call).
struct kernel_timer {
  bool on = false;
  float last_ms = 0;
  cudaEvent_t a = nullptr, b = nullptr;
  void start(cudaStream_t s) {
    if (!a) {
      check(cudaEventCreate(&a), "cudaEventCreate");
      check(cudaEventCreate(&b), "cudaEventCreate");
    }
    check(cudaEventRecord(a, s), "cudaEventRecord");
  }
  void stop(cudaStream_t s) { check(cudaEventRecord(b, s), "cudaEventRecord"); }
  void read() { check(cudaEventElapsedTime(&last_ms, a, b), "cudaEventElapsedTime"); }
  static kernel_timer& for_this_thread() {
    static thread_local kernel_timer t;
    return t;
  }
};

inline std::size_t round_up(std::size_t n) { return (n + 255) / 256 * 256; }

/// Kernel launches made by this backend (for benchmarks that report launches per call).
inline std::size_t& launch_count() {
  static thread_local std::size_t n = 0;
  return n;
}

/// Whether a view's filters can be read with 16-byte loads: packed filters, aligned.
template <class View>
bool vector_friendly(const View& v) {
  using T = typename View::value_type;
  const std::size_t C = v.channels(), H = v.rows(), W = v.cols();
  const bool packed = (W == 1 || v.stride(3) == 1) && (H == 1 || v.stride(2) == W) &&
                      (C == 1 || v.stride(1) == H * W);
  constexpr std::size_t V = 16 / sizeof(T);
  return packed && v.filter_size() % V == 0 &&
         (v.filters() == 1 || (v.stride(0) * sizeof(T)) % 16 == 0) &&
         reinterpret_cast<std::uintptr_t>(v.data_handle()) % 16 == 0;
}

/// Blocks of fold_filters that fit on the current device at once (the grid of one pass).
template <class T, bool Advance>
std::size_t resident_blocks() {
  static thread_local int cached_device = -1;
  static thread_local std::size_t cached = 0;
  int device = 0, sms = 0, per_sm = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (device == cached_device) return cached;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  // Ask for the largest shared-memory carveout: each block holds 32 KiB of bitsets.
  check(cudaFuncSetAttribute(fold_filters<T, Advance>, cudaFuncAttributePreferredSharedMemoryCarveout,
                             int(cudaSharedmemCarveoutMaxShared)),
        "cudaFuncSetAttribute");
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fold_filters<T, Advance>, block_threads, 0),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  cached = std::size_t(sms) * std::size_t(per_sm > 0 ? per_sm : 1);
  cached_device = device;
  return cached;
}

template <class T, bool Advance>
void run(const policy& pol, layer_task<T, device_space>* tasks, std::size_t n_tasks, T* const* advance_prev) {
  using desc = detail::layer_desc<T>;
  std::vector<desc> descs(n_tasks);
  std::size_t filters = 0, r_total = 0, items = 0;
  for (std::size_t k = 0; k < n_tasks; ++k) {
    const auto& t = tasks[k];
    check_device_pointer(t.prev.data_handle(), "prev", k);
    check_device_pointer(t.next.data_handle(), "next", k);
    desc& d = descs[k];
    d.prev = Advance ? advance_prev[k] : const_cast<T*>(t.prev.data_handle());  // read only unless Advance
    d.next = t.next.data_handle();
    ::fevo::detail::fill_layer_desc(d, t, filters, r_total, detail::no_r);
    d.packed = vector_friendly(t.prev) && vector_friendly(t.next) ? 1 : 0;
    const std::size_t size = t.prev.filter_size();
    d.block = size >= pol.block_from && size <= detail::block_bits ? 1 : 0;
    d.first_item = items;
    items += items_of(t.prev.filters(), d.block != 0);
  }

  const bool want_filters = [&] {
    for (std::size_t k = 0; k < n_tasks; ++k)
      if (tasks[k].per_filter) return true;
    return false;
  }();

  // One scratch block on the device and its mirror in pinned host memory:
  //   descriptors | layer totals | per-filter totals | R_ic
  // The descriptors go up in one copy, and the results come back in one copy of the range the
  // call needs (pinned memory: no staging copies, one DMA each way).
  const std::size_t o_totals = round_up(n_tasks * sizeof(desc));
  const std::size_t o_filters = o_totals + round_up(n_tasks * sizeof(partial));
  const std::size_t o_r = o_filters + round_up(filters * sizeof(partial));
  const std::size_t o_end = o_r + round_up(r_total * sizeof(std::uint32_t));
  const std::size_t back_end = r_total ? o_end : want_filters ? o_r : o_filters;
  char* base = static_cast<char*>(scratch::for_this_thread().get(o_end));
  char* host = static_cast<char*>(pinned::for_this_thread().get(o_end));
  std::memcpy(host, descs.data(), n_tasks * sizeof(desc));
  desc* d_descs = reinterpret_cast<desc*>(base);
  partial* d_filters = reinterpret_cast<partial*>(base + o_filters);
  partial* d_totals = reinterpret_cast<partial*>(base + o_totals);
  std::uint32_t* d_r = reinterpret_cast<std::uint32_t*>(base + o_r);
  cudaStream_t s = pol.stream;
  check(cudaMemcpyAsync(d_descs, host, n_tasks * sizeof(desc), cudaMemcpyHostToDevice, s),
        "copying layer descriptors");

  kernel_timer& timer = kernel_timer::for_this_thread();
  if (timer.on) timer.start(s);
  const std::size_t max_blocks = resident_blocks<T, Advance>();
  const unsigned grid = static_cast<unsigned>(items < max_blocks ? items : max_blocks);
  detail::fold_filters<T, Advance><<<grid, block_threads, 0, s>>>(d_descs, int(n_tasks), items,
                                                                 d_filters, d_r);
  check(cudaGetLastError(), "launching fold_filters");
  ++launch_count();
  detail::reduce_layers<T><<<unsigned(n_tasks), block_threads, 0, s>>>(d_descs, int(n_tasks), filters,
                                                                      d_filters, d_totals);
  check(cudaGetLastError(), "launching reduce_layers");
  ++launch_count();
  if (timer.on) timer.stop(s);

  check(cudaMemcpyAsync(host + o_totals, base + o_totals, back_end - o_totals, cudaMemcpyDeviceToHost, s),
        "copying the results");
  check(cudaStreamSynchronize(s), "the fused pass");
  if (timer.on) timer.read();

  const partial* totals = reinterpret_cast<const partial*>(host + o_totals);
  const partial* per = reinterpret_cast<const partial*>(host + o_filters);
  const std::uint32_t* r_host = reinterpret_cast<const std::uint32_t*>(host + o_r);
  for (std::size_t k = 0; k < n_tasks; ++k) {
    const auto& t = tasks[k];
    *t.total = totals[k];
    if (!t.per_filter) continue;
    for (std::size_t i = 0; i < t.prev.filters(); ++i) t.per_filter->store(i, per[descs[k].first_filter + i]);
    if (descs[k].r_offset != detail::no_r)
      std::copy(r_host + descs[k].r_offset, r_host + descs[k].r_offset + t.prev.filters() * t.prev.channels(),
                t.per_filter->channel_changed.begin());
  }
}

template <class T>
inline constexpr bool always_false = false;

}  // namespace detail

template <class T>
void evaluate(const policy& pol, layer_task<T, device_space>* tasks, std::size_t n_tasks) {
  detail::run<T, false>(pol, tasks, n_tasks, nullptr);
}

/// Host views reach here only by mistake: say so at compile time.
template <class T>
void evaluate(const policy&, layer_task<T, host_space>*, std::size_t) {
  static_assert(detail::always_false<T>,
                "fevo::cuda::par needs views of device memory: make them with "
                "fevo::oihw<fevo::device_space>(...) or fevo::strided<fevo::device_space>(...)");
}

/// One layer of a compare-and-advance pass: the kept snapshot (overwritten) and the live weights.
template <class T>
struct advance_pair {
  std::string name;  ///< used in error messages; may be empty
  basic_filter_view<T, device_space> prev;
  basic_filter_view<const T, device_space> next;
};

namespace detail {

/// compare-and-advance writes every prev while it reads every next: refuses any overlap of a
/// prev's span with another prev's or any next's span.
template <class T>
void check_disjoint(const std::vector<advance_pair<T>>& layers) {
  struct span {
    std::uintptr_t begin, end;
    std::size_t layer;
    bool prev;
  };
  std::vector<span> spans;
  for (std::size_t k = 0; k < layers.size(); ++k) {
    const auto add = [&](const void* p, std::size_t n, bool prev) {
      const auto b = reinterpret_cast<std::uintptr_t>(p);
      spans.push_back({b, b + n * sizeof(T), k, prev});
    };
    add(layers[k].prev.data_handle(), layers[k].prev.required_span_size(), true);
    add(layers[k].next.data_handle(), layers[k].next.required_span_size(), false);
  }
  std::sort(spans.begin(), spans.end(), [](const span& a, const span& b) { return a.begin < b.begin; });
  // Any overlap involving a prev span is an error; next spans may overlap each other.
  std::size_t reach = 0;  // index of the span reaching furthest so far among those overlapping
  bool have = false;
  for (std::size_t k = 0; k < spans.size(); ++k) {
    if (have && spans[k].begin < spans[reach].end && (spans[k].prev || spans[reach].prev)) {
      const auto& a = spans[reach];
      const auto& b = spans[k];
      const auto name = [&](const span& x) {
        const std::string& n = layers[x.layer].name;
        return (n.empty() ? "#" + std::to_string(x.layer) : "'" + n + "'") + (x.prev ? " prev" : " next");
      };
      ::fevo::detail::fail("compare_and_advance: layer ", name(a), " and layer ", name(b),
                           " overlap in memory; prev is overwritten while next is read, so each "
                           "prev must be disjoint from every other prev and next");
    }
    // Keep the span that ends last (ties: prefer a prev span, so prev/next overlaps are caught).
    if (!have || spans[k].end > spans[reach].end || (spans[k].end == spans[reach].end && spans[k].prev))
      reach = k;
    have = true;
  }
}

}  // namespace detail

/// compare-and-advance for a whole model in one fused pass (two launches): the metrics of every
/// (prev, next) pair, and prev := next, for training loops that keep one device copy of the
/// previous snapshot. Results follow the order of `layers`; with `per_filter`, one
/// filter_results per layer. The prev spans must not overlap each other or any next (checked).
template <class T>
std::vector<layer_metrics> compare_and_advance_layers(const policy& pol,
                                                      const std::vector<advance_pair<T>>& layers, double tau,
                                                      std::vector<filter_results>* per_filter = nullptr) {
  static_assert(!std::is_const_v<T>, "compare_and_advance writes prev: pass views of mutable memory");
  std::vector<partial> totals;
  std::vector<layer_task<T, device_space>> tasks =
      ::fevo::detail::make_tasks<T, device_space>(layers, tau, totals, per_filter);
  std::vector<T*> raw(layers.size());
  for (std::size_t k = 0; k < layers.size(); ++k) raw[k] = layers[k].prev.data_handle();
  detail::check_disjoint(layers);
  if (!tasks.empty()) detail::run<T, true>(pol, tasks.data(), tasks.size(), raw.data());
  std::vector<layer_metrics> out(layers.size());
  for (std::size_t k = 0; k < layers.size(); ++k) out[k] = finalize(totals[k], layers[k].prev.filters());
  return out;
}

/// Computes the metrics of (prev, next) and overwrites prev with next in the same pass (one
/// layer; see compare_and_advance_layers for a whole model in one pass).
template <class T>
layer_metrics compare_and_advance(const policy& pol, basic_filter_view<T, device_space> prev,
                                  basic_filter_view<const T, device_space> next, double tau,
                                  filter_results* per_filter = nullptr) {
  static_assert(!std::is_const_v<T>, "compare_and_advance writes prev: pass a view of mutable memory");
  std::vector<advance_pair<T>> one{{std::string(), prev, next}};
  if (!per_filter) return compare_and_advance_layers(pol, one, tau)[0];
  std::vector<filter_results> per;
  const layer_metrics m = compare_and_advance_layers(pol, one, tau, &per)[0];
  *per_filter = std::move(per[0]);
  return m;
}

}  // namespace fevo::cuda
