// The fevo command's CUDA path; see cuda_backend.hpp.
#include "cuda_backend.hpp"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include <fevo/cuda.cuh>

namespace fevo_cli {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fevo::detail::fail("--backend cuda: ", what, ": ", cudaGetErrorString(e));
}

std::size_t round_up(std::size_t n) { return (n + 255) / 256 * 256; }

template <class T>
fevo::basic_filter_view<const T, fevo::device_space> on_device(const fevo::filter_view<const T>& v, char* dst,
                                                               cudaStream_t s) {
  check(cudaMemcpyAsync(dst, v.data_handle(), v.required_span_size() * sizeof(T), cudaMemcpyHostToDevice, s),
        "copying a snapshot to the device");
  return fevo::strided<fevo::device_space>(reinterpret_cast<const T*>(dst),
                                           {v.extent(0), v.extent(1), v.extent(2), v.extent(3)},
                                           {v.stride(0), v.stride(1), v.stride(2), v.stride(3)});
}

template <class T>
std::vector<fevo::layer_metrics> run(const std::vector<fevo::layer_pair<T>>& pairs, double tau,
                                     std::vector<fevo::filter_results>& per) {
  // The uploaded snapshots' own device buffer, grown as needed and kept for the next pair (not
  // the backend's per-thread scratch, which the pass itself uses).
  static fevo::cuda::detail::scratch arena;
  std::size_t bytes = 0;
  for (const auto& p : pairs)
    bytes += round_up(p.prev.required_span_size() * sizeof(T)) + round_up(p.next.required_span_size() * sizeof(T));
  char* base = static_cast<char*>(arena.get(bytes ? bytes : 256));
  std::vector<fevo::layer_pair<T, fevo::device_space>> dev;
  dev.reserve(pairs.size());
  for (const auto& p : pairs) {
    auto a = on_device<T>(p.prev, base, nullptr);
    base += round_up(p.prev.required_span_size() * sizeof(T));
    auto b = on_device<T>(p.next, base, nullptr);
    base += round_up(p.next.required_span_size() * sizeof(T));
    dev.push_back({p.name, a, b});
  }
  return fevo::compute_layers(fevo::cuda::par, dev, tau, &per);
}

}  // namespace

void require_cuda_device() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0)
    fevo::detail::fail("--backend cuda: no usable CUDA device (",
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices", "); use --backend cpu");
}

std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<float>>& p, double tau,
                                                 std::vector<fevo::filter_results>& per) {
  return run(p, tau, per);
}
std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<double>>& p, double tau,
                                                 std::vector<fevo::filter_results>& per) {
  return run(p, tau, per);
}
std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<fevo::half>>& p, double tau,
                                                 std::vector<fevo::filter_results>& per) {
  return run(p, tau, per);
}
std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<fevo::bfloat16>>& p,
                                                 double tau, std::vector<fevo::filter_results>& per) {
  return run(p, tau, per);
}

}  // namespace fevo_cli
