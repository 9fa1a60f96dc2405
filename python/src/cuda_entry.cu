// The CUDA entry points of the extension: fevo::cuda::par on views of CUDA memory (cuda_entry.hpp).
#include "cuda_entry.hpp"

#include <cuda_runtime_api.h>

#include <chrono>
#include <string>
#include <utility>

#include <fevo/cuda.cuh>
#include <fevo/record/cuda.cuh>

namespace fevo_py::cuda {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fevo::detail::fail(what, ": ", cudaGetErrorString(e));
}

/// Makes `device` current for the guard's lifetime.
class device_guard {
 public:
  explicit device_guard(int device) {
    check(cudaGetDevice(&old_), "cudaGetDevice");
    if (old_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~device_guard() {
    int now = -1;
    if (cudaGetDevice(&now) == cudaSuccess && now != old_) cudaSetDevice(old_);
  }
  device_guard(const device_guard&) = delete;
  device_guard& operator=(const device_guard&) = delete;

 private:
  int old_ = 0;
};

fevo::cuda::policy<> policy_on(std::uintptr_t stream) {
  return fevo::cuda::par.on(reinterpret_cast<cudaStream_t>(stream));
}

template <class T>
using device_view = fevo::basic_filter_view<const T, fevo::device_space>;

template <class T>
std::vector<fevo::layer_pair<T, fevo::device_space>> device_pairs(const std::vector<named_pair>& pairs) {
  std::vector<fevo::layer_pair<T, fevo::device_space>> out;
  out.reserve(pairs.size());
  for (const auto& p : pairs)
    out.push_back({p.name, view_of<T, fevo::device_space>(p.prev, role_prefix(p.name, "prev")),
                   view_of<T, fevo::device_space>(p.next, role_prefix(p.name, "next"))});
  return out;
}

template <class T>
class device_recorder final : public recorder_iface {
 public:
  device_recorder(const fevo::record::recorder_options& o, int device, std::uintptr_t stream)
      : device_(device), rec_(o, policy_on(stream)) {}
  ~device_recorder() override {
    // The recorder frees its kept copies on the device they were allocated on.
    cudaSetDevice(device_);
  }
  void add_layer(const std::string& name, const array_ref& live) override {
    rec_.add_layer(name, view_of<T, fevo::device_space>(live, role_prefix(name, "weights")));
  }
  void start(std::int64_t step) override {
    device_guard g(device_);
    rec_.start(step);
  }
  std::vector<fevo::layer_metrics> record(std::int64_t step) override {
    device_guard g(device_);
    return rec_.record(step);
  }
  void close() override { rec_.close(); }
  const fevo::record::detail::recorder_base& state() const override { return rec_; }

 private:
  int device_;
  fevo::record::cuda_recorder<T> rec_;
};

}  // namespace

bool available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

fevo::layer_metrics compute(const array_ref& prev, const array_ref& next, double tau, fevo::filter_results* per,
                            bool with_r, std::uintptr_t stream) {
  device_guard g(prev.device);
  return dispatch(prev.type, [&](auto tag) {
    using T = decltype(tag);
    const auto p = view_of<T, fevo::device_space>(prev, "prev: ");
    const auto n = view_of<T, fevo::device_space>(next, "next: ");
    const auto pol = policy_on(stream);
    if (!per) return fevo::compute(pol, p, n, tau);
    if (with_r) return fevo::compute(pol, p, n, tau, *per, fevo::with_channel_counts);
    return fevo::compute(pol, p, n, tau, *per);
  });
}

fevo::partial compute_partial(const array_ref& prev, const array_ref& next, double tau, std::uintptr_t stream) {
  device_guard g(prev.device);
  return dispatch(prev.type, [&](auto tag) {
    using T = decltype(tag);
    return fevo::compute_partial(policy_on(stream), view_of<T, fevo::device_space>(prev, "prev: "),
                                 view_of<T, fevo::device_space>(next, "next: "), tau);
  });
}

std::vector<fevo::layer_metrics> compute_layers(const std::vector<named_pair>& pairs, double tau,
                                                std::uintptr_t stream) {
  if (pairs.empty()) return {};
  device_guard g(pairs.front().prev.device);
  return dispatch(pairs.front().prev.type, [&](auto tag) {
    using T = decltype(tag);
    return fevo::compute_layers(policy_on(stream), device_pairs<T>(pairs), tau);
  });
}

std::vector<double> time_compute_layers(const std::vector<named_pair>& pairs, double tau, std::uintptr_t stream,
                                        int repeat) {
  std::vector<double> seconds;
  if (pairs.empty()) return seconds;
  device_guard g(pairs.front().prev.device);
  dispatch(pairs.front().prev.type, [&](auto tag) {
    using T = decltype(tag);
    const auto dev = device_pairs<T>(pairs);
    const auto pol = policy_on(stream);
    for (int r = 0; r < repeat; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      fevo::compute_layers(pol, dev, tau);  // synchronous: returns the results on the host
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return 0;
  });
  return seconds;
}

std::unique_ptr<recorder_iface> make_recorder(dtype type, const fevo::record::recorder_options& o, int device,
                                              std::uintptr_t stream) {
  device_guard g(device);
  return dispatch(type, [&](auto tag) -> std::unique_ptr<recorder_iface> {
    using T = decltype(tag);
    return std::make_unique<device_recorder<T>>(o, device, stream);
  });
}

}  // namespace fevo_py::cuda
