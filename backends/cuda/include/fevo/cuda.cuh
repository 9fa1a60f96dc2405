// fevo::cuda::par, the fused CUDA backend. Needs nvcc (.cu files); link fevo::cuda.
//
//   auto prev = fevo::oihw<fevo::device_space>(d_prev, N, C, H, W);   // device memory
//   auto next = fevo::oihw<fevo::device_space>(d_next, N, C, H, W);
//   fevo::layer_metrics m = fevo::compute(fevo::cuda::par.on(stream), prev, next, tau);
//   fevo::cuda::compare_and_advance(fevo::cuda::par, prev, next, tau);  // and prev := next
//
// A whole model (compute_layers) is two kernel launches: the fused pass and a per-layer merge.
// Host views do not compile with this backend; device pointers that turn out to be host memory,
// and every CUDA error, are reported as fevo::error. Calls are synchronous with respect to the
// host (they return results), ordered on the policy's stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_runtime_api.h>

#include <fevo/fevo.hpp>

#include "cuda/kernel.cuh"

namespace fevo::cuda {

struct policy {
  cudaStream_t stream = nullptr;
  /// A copy of this policy whose work is ordered on `s`.
  constexpr policy on(cudaStream_t s) const { return policy{s}; }
};
inline constexpr policy par{};

namespace detail {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) ::fevo::detail::fail("CUDA error in ", what, ": ", cudaGetErrorString(e));
}

/// Refuses pointers the device cannot read: plain host memory and unknown pointers.
inline void check_device_pointer(const void* p, const char* which, std::size_t layer) {
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error state of this query
    ::fevo::detail::fail("layer #", layer, ": ", which, " is not a CUDA pointer (",
                         cudaGetErrorString(e), ")");
  }
  FEVO_EXPECTS(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged, "layer #",
               layer, ": ", which, " is host memory; fevo::cuda needs device (or managed) memory");
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

template <class T, bool Advance>
void run(const policy& pol, layer_task<T, device_space>* tasks, std::size_t n_tasks, T* const* advance_prev) {
  using desc = detail::layer_desc<T>;
  std::vector<desc> descs(n_tasks);
  std::size_t filters = 0, r_total = 0;
  for (std::size_t k = 0; k < n_tasks; ++k) {
    const auto& t = tasks[k];
    check_device_pointer(t.prev.data_handle(), "prev", k);
    check_device_pointer(t.next.data_handle(), "next", k);
    desc& d = descs[k];
    d.prev = Advance ? advance_prev[k] : const_cast<T*>(t.prev.data_handle());  // read only unless Advance
    d.next = t.next.data_handle();
    for (int r = 0; r < 4; ++r) {
      d.ext[r] = t.prev.extent(r);
      d.sp[r] = t.prev.stride(r);
      d.sn[r] = t.next.stride(r);
    }
    d.tau = t.tau;
    d.first_filter = filters;
    filters += t.prev.filters();
    d.r_offset = detail::no_r;
    if (t.per_filter && (t.want & want_R)) {
      d.r_offset = r_total;
      r_total += t.prev.filters() * t.prev.channels();
    }
    d.packed = vector_friendly(t.prev) && vector_friendly(t.next) ? 1 : 0;
  }

  const bool want_filters = [&] {
    for (std::size_t k = 0; k < n_tasks; ++k)
      if (tasks[k].per_filter) return true;
    return false;
  }();

  // One scratch block: descriptors | per-filter totals | layer totals | R_ic.
  const std::size_t o_filters = round_up(n_tasks * sizeof(desc));
  const std::size_t o_totals = o_filters + round_up(filters * sizeof(partial));
  const std::size_t o_r = o_totals + round_up(n_tasks * sizeof(partial));
  char* base = static_cast<char*>(scratch::for_this_thread().get(o_r + round_up(r_total * sizeof(std::uint32_t))));
  desc* d_descs = reinterpret_cast<desc*>(base);
  partial* d_filters = reinterpret_cast<partial*>(base + o_filters);
  partial* d_totals = reinterpret_cast<partial*>(base + o_totals);
  std::uint32_t* d_r = reinterpret_cast<std::uint32_t*>(base + o_r);
  cudaStream_t s = pol.stream;
  check(cudaMemcpyAsync(d_descs, descs.data(), n_tasks * sizeof(desc), cudaMemcpyHostToDevice, s),
        "copying layer descriptors");

  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  const std::size_t blocks_needed = (filters + warps_per_block - 1) / warps_per_block;
  const std::size_t max_blocks = std::size_t(sms) * 8;
  const unsigned grid = static_cast<unsigned>(blocks_needed < max_blocks ? blocks_needed : max_blocks);
  detail::fold_filters<T, Advance><<<grid, block_threads, 0, s>>>(d_descs, int(n_tasks), filters,
                                                                 d_filters, d_r);
  check(cudaGetLastError(), "launching fold_filters");
  ++launch_count();
  detail::reduce_layers<T><<<unsigned(n_tasks), block_threads, 0, s>>>(d_descs, int(n_tasks), filters,
                                                                      d_filters, d_totals);
  check(cudaGetLastError(), "launching reduce_layers");
  ++launch_count();

  std::vector<partial> totals(n_tasks), per(want_filters ? filters : 0);
  std::vector<std::uint32_t> r_host(r_total);
  check(cudaMemcpyAsync(totals.data(), d_totals, n_tasks * sizeof(partial), cudaMemcpyDeviceToHost, s),
        "copying layer totals");
  if (want_filters)
    check(cudaMemcpyAsync(per.data(), d_filters, filters * sizeof(partial), cudaMemcpyDeviceToHost, s),
          "copying per-filter totals");
  if (r_total)
    check(cudaMemcpyAsync(r_host.data(), d_r, r_total * sizeof(std::uint32_t), cudaMemcpyDeviceToHost, s),
          "copying channel counts");
  check(cudaStreamSynchronize(s), "the fused pass");

  for (std::size_t k = 0; k < n_tasks; ++k) {
    const auto& t = tasks[k];
    *t.total = totals[k];
    if (!t.per_filter) continue;
    for (std::size_t i = 0; i < t.prev.filters(); ++i) t.per_filter->store(i, per[descs[k].first_filter + i]);
    if (descs[k].r_offset != detail::no_r)
      std::copy(r_host.begin() + std::ptrdiff_t(descs[k].r_offset),
                r_host.begin() + std::ptrdiff_t(descs[k].r_offset + t.prev.filters() * t.prev.channels()),
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

/// Computes the metrics of (prev, next) and overwrites prev with next in the same pass, for
/// training loops that keep one device copy of the previous snapshot.
template <class T>
layer_metrics compare_and_advance(const policy& pol, basic_filter_view<T, device_space> prev,
                                  basic_filter_view<const T, device_space> next, double tau,
                                  filter_results* per_filter = nullptr) {
  static_assert(!std::is_const_v<T>, "compare_and_advance writes prev: pass a view of mutable memory");
  layer_task<T, device_space> task;
  task.prev = prev;
  task.next = next;
  task.tau = ::fevo::detail::check_pair(task.prev, task.next, tau, want_all, std::string());
  partial total;
  task.total = &total;
  if (per_filter) per_filter->resize(prev.filters(), prev.channels(), prev.filter_size(), false);
  task.per_filter = per_filter;
  T* raw = prev.data_handle();
  detail::run<T, true>(pol, &task, 1, &raw);
  return finalize(total, prev.filters());
}

}  // namespace fevo::cuda
