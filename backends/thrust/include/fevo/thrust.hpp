// fevo::thrust::par, the portable Thrust backend.
//
// Written once with Thrust: compiled by nvcc it runs on the CUDA device (views must then be
// fevo::device_space views of device memory); compiled by a host compiler with
// THRUST_DEVICE_SYSTEM set to THRUST_DEVICE_SYSTEM_OMP (or _CPP, _TBB) it runs on host threads
// with host views, which is how it is tested on machines without a GPU.
//
// Every filter of every layer of a call is one work item that folds its weights with the core's
// accumulator (fold / close_channel / merge); each filter's totals come back to the host and are
// merged per layer in filter order. Same semantics and the same counts as every other backend.
#pragma once

#include <fevo/config.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/system_error.h>

#include <fevo/fevo.hpp>

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
#include <cuda_runtime_api.h>
#endif

namespace fevo::thrust {

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
/// Views given to this backend must address CUDA device memory.
using memory_space = device_space;
inline constexpr const char* device_system = "cuda";
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
using memory_space = host_space;
inline constexpr const char* device_system = "omp";
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_TBB
using memory_space = host_space;
inline constexpr const char* device_system = "tbb";
#else
using memory_space = host_space;
inline constexpr const char* device_system = "cpp";
#endif

struct policy {
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
  cudaStream_t stream = nullptr;
  /// A copy of this policy whose work is ordered on `s`.
  policy on(cudaStream_t s) const { return policy{s}; }
#endif
};
inline constexpr policy par{};

namespace detail {

/// One layer as the device sees it.
template <class T>
struct layer_desc {
  const T* prev;
  const T* next;
  std::size_t ext[4];
  std::size_t sp[4];  ///< strides of prev, in elements
  std::size_t sn[4];  ///< strides of next
  compute_t<T> tau;
  std::size_t first_filter;  ///< global index of this layer's filter 0
  std::size_t r_offset;      ///< where this layer's R_ic start in the R buffer, or SIZE_MAX
};

/// Folds one filter (global index g) of one of the layers.
template <class T>
struct fold_filter_fn {
  const layer_desc<T>* layers;
  std::size_t n_layers;
  partial* out;
  std::uint32_t* r;

  FEVO_HOST_DEVICE void operator()(std::size_t g) const {
    std::size_t lo = 0, hi = n_layers;  // the last layer whose first_filter <= g
    while (hi - lo > 1) {
      const std::size_t mid = (lo + hi) / 2;
      if (layers[mid].first_filter <= g) lo = mid; else hi = mid;
    }
    const layer_desc<T>& L = layers[lo];
    const std::size_t i = g - L.first_filter;
    partial f;
    for (std::size_t c = 0; c < L.ext[1]; ++c) {
      partial ch;
      for (std::size_t h = 0; h < L.ext[2]; ++h)
        for (std::size_t w = 0; w < L.ext[3]; ++w)
          fold(ch, L.prev[i * L.sp[0] + c * L.sp[1] + h * L.sp[2] + w * L.sp[3]],
               L.next[i * L.sn[0] + c * L.sn[1] + h * L.sn[2] + w * L.sn[3]], L.tau);
      if (L.r_offset != static_cast<std::size_t>(-1))
        r[L.r_offset + i * L.ext[1] + c] = static_cast<std::uint32_t>(ch.changed);
      close_channel(ch, ch.changed);
      merge(f, ch);
    }
    out[g] = f;
  }
};

template <class F>
void run_guarded(F&& f) {
  try {
    f();
  } catch (const ::thrust::system_error& e) {
    ::fevo::detail::fail("thrust backend (", device_system, "): ", e.what());
  } catch (const std::bad_alloc&) {
    ::fevo::detail::fail("thrust backend (", device_system, "): out of memory");
  }
}

}  // namespace detail

template <class T>
void evaluate(const policy& pol, layer_task<T, memory_space>* tasks, std::size_t n_tasks) {
  std::vector<detail::layer_desc<T>> descs(n_tasks);
  std::size_t filters = 0, r_total = 0;
  for (std::size_t k = 0; k < n_tasks; ++k) {
    const auto& t = tasks[k];
    auto& d = descs[k];
    d.prev = t.prev.data_handle();
    d.next = t.next.data_handle();
    ::fevo::detail::fill_layer_desc(d, t, filters, r_total, static_cast<std::size_t>(-1));
  }

  std::vector<partial> per_filter(filters);
  std::vector<std::uint32_t> r_host(r_total);
  detail::run_guarded([&] {
    ::thrust::device_vector<detail::layer_desc<T>> d_descs(descs.begin(), descs.end());
    ::thrust::device_vector<partial> d_out(filters);
    ::thrust::device_vector<std::uint32_t> d_r(r_total);
    detail::fold_filter_fn<T> fn{::thrust::raw_pointer_cast(d_descs.data()), n_tasks,
                                 ::thrust::raw_pointer_cast(d_out.data()),
                                 ::thrust::raw_pointer_cast(d_r.data())};
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
    auto exec = ::thrust::cuda::par.on(pol.stream);
#else
    (void)pol;
    auto exec = ::thrust::device;
#endif
    ::thrust::for_each(exec, ::thrust::counting_iterator<std::size_t>(0),
                       ::thrust::counting_iterator<std::size_t>(filters), fn);
    ::thrust::copy(d_out.begin(), d_out.end(), per_filter.begin());
    if (r_total) ::thrust::copy(d_r.begin(), d_r.end(), r_host.begin());
  });

  for (std::size_t k = 0; k < n_tasks; ++k) {
    const std::size_t r_at = descs[k].r_offset;
    ::fevo::detail::finish_task(tasks[k], per_filter.data() + descs[k].first_filter,
                                r_at == static_cast<std::size_t>(-1) ? nullptr : r_host.data() + r_at);
  }
}

}  // namespace fevo::thrust
