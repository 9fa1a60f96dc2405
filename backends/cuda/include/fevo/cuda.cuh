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
// A call on a whole model (compute_layers, compare_and_advance_layers) is two kernel launches:
// the fused pass over every filter of every layer, driven by a table of per-layer descriptors, and
// a per-layer merge in a fixed order. The pass's shape is its tuning (fevo/cuda/tuning.hpp):
// fevo::cuda::par has default_tuning, policy<Tuning> another (fevo::cuda::experimental holds
// tunings not yet timed on a GPU). Host views do not compile with this backend; device pointers
// that turn out to be host memory, and every CUDA error, are reported as fevo::error. Each
// pointer is checked with cudaPointerGetAttributes the first time a host thread hands it to
// fevo::cuda, and trusted on later calls (a training loop passes the same buffers every time;
// memory freed in between is the caller's bug, reported as a CUDA error by the kernel). Calls are
// synchronous with respect to the host (they return results), ordered on the policy's stream.
#pragma once

#include <fevo/config.hpp>

#include <string>
#include <type_traits>
#include <vector>

#include <cuda_runtime_api.h>

#include <fevo/fevo.hpp>

#include "cuda/dispatch.hpp"
#include "cuda/runtime.cuh"
#include "cuda/tuning.hpp"

namespace fevo::cuda {

/// The execution policy of fevo::cuda: a stream, and the tuning as its type.
template <class Tuning = default_tuning>
struct policy {
  static_assert(detail::check_tuning<Tuning>());
  using tuning = Tuning;
  cudaStream_t stream = nullptr;
  /// A copy of this policy whose work is ordered on `s`.
  constexpr policy on(cudaStream_t s) const {
    policy p = *this;
    p.stream = s;
    return p;
  }
};
inline constexpr policy<> par{};

namespace detail {
template <class T>
inline constexpr bool always_false = false;
}  // namespace detail

template <class Tuning, class T>
void evaluate(const policy<Tuning>& pol, layer_task<T, device_space>* tasks, std::size_t n_tasks) {
  detail::runtime_device dev{pol.stream};
  detail::run_pass<Tuning, T, false>(dev, tasks, n_tasks, nullptr);
}

/// Host views reach here only by mistake: say so at compile time.
template <class Tuning, class T>
void evaluate(const policy<Tuning>&, layer_task<T, host_space>*, std::size_t) {
  static_assert(detail::always_false<T>,
                "fevo::cuda::par needs views of device memory: make them with "
                "fevo::oihw<fevo::device_space>(...) or fevo::strided<fevo::device_space>(...)");
}

/// compare-and-advance for a whole model in one fused pass: the metrics of every (prev, next)
/// pair, and prev := next, for training loops that keep one device copy of the previous snapshot
/// (12 bytes of traffic per f32 weight instead of 16 for compute plus a copy). Results follow the
/// order of `layers`; with `per_filter`, one filter_results per layer. The prev spans must not
/// overlap each other or any next (checked).
template <class Tuning, class T>
std::vector<layer_metrics> compare_and_advance_layers(const policy<Tuning>& pol,
                                                      const std::vector<advance_pair<T>>& layers, double tau,
                                                      std::vector<filter_results>* per_filter = nullptr) {
  detail::runtime_device dev{pol.stream};
  return detail::advance_layers<Tuning>(dev, layers, tau, per_filter);
}

/// Computes the metrics of (prev, next) and overwrites prev with next in the same pass (one
/// layer; see compare_and_advance_layers for a whole model in one pass).
template <class Tuning, class T>
layer_metrics compare_and_advance(const policy<Tuning>& pol, basic_filter_view<T, device_space> prev,
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
