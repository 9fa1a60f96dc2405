// The recorder for layers in CUDA device memory (nvcc; link fevo::cuda):
//
//   #include <fevo/record/cuda.cuh>
//   fevo::record::cuda_recorder<float> rec(options, fevo::cuda::par.on(stream));
//   rec.add_layer("conv1.weight", fevo::oihw<fevo::device_space>(d_w1, 64, 3, 7, 7));
//   rec.start(step);  ...  rec.record(step);  ...  rec.close();
//
// Same files, steps and crash safety as the host recorder (<fevo/record/recorder.hpp>,
// run_writer.hpp). The previous snapshot is kept on the device, packed [O, I, H, W]: one extra
// device copy of the recorded layers (copy_bytes()). record() runs
// fevo::cuda::compare_and_advance_layers on all layers at once: the metrics and the advance of the
// kept copy in one pass of two kernel launches (12 bytes of traffic per f32 weight). Only the
// per-filter results come to the host.
//
// Difference from the host recorder: the kept copy has advanced when the results are written, so
// a record whose write failed (fevo::error; its rows are rolled back) is not retried: the next
// record's step_prev is the failed record's step, which shows as a gap in metrics.csv.
#pragma once

#include "../config.hpp"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <fevo/cuda.cuh>

#include "recorder.hpp"

namespace fevo::record {

/// The device recorder, with any fevo::cuda tuning (fevo/cuda/tuning.hpp).
template <class T, class Tuning>
class recorder<T, ::fevo::cuda::policy<Tuning>> : public detail::recorder_base {
  static_assert(is_element<T>::value && !std::is_const_v<T>,
                "fevo::record::recorder<T>: T is float, double, fevo::half or fevo::bfloat16");

 public:
  using value_type = T;
  using policy_type = ::fevo::cuda::policy<Tuning>;

  explicit recorder(recorder_options options, policy_type policy = policy_type{})
      : recorder_base(std::move(options), compute_t<T>{}), policy_(policy) {}

  ~recorder() {
    for (auto& l : layers_)
      if (l.copy) cudaFree(l.copy);
  }

  /// Registers a layer: a name and a view of its live weights in device memory.
  void add_layer(const std::string& name, basic_filter_view<const T, device_space> live) {
    check_new_layer(name, live.extents(), live.data_handle());
    layers_.push_back(layer{name, live, nullptr, {}});
  }

  /// Opens the run and copies the live weights (on the device) as the snapshot of `step`.
  void start(std::int64_t step) {
    std::size_t bytes = 0;
    for (const auto& l : layers_) bytes += l.live.size() * sizeof(T);
    start_run(step, element_traits<T>::name, bytes, [&] {
      for (auto& l : layers_) {
        if (!l.copy) {
          void* p = nullptr;
          check(cudaMalloc(&p, l.live.size() * sizeof(T)), "cudaMalloc of the kept copy");
          l.copy = static_cast<T*>(p);
        }
        check(cudaMemsetAsync(l.copy, 0, l.live.size() * sizeof(T), policy_.stream), "cudaMemsetAsync");
        l.kept = oihw<device_space>(l.copy, l.live.filters(), l.live.channels(), l.live.rows(), l.live.cols());
      }
      advance(nullptr);
    });
  }

  /// As the host recorder's record(), with one compare-and-advance pass over all layers.
  std::vector<layer_metrics> record(std::int64_t step) {
    bool advanced = false;
    auto compute = [&](std::vector<filter_results>& per) {
      std::vector<layer_metrics> m;
      advance(&per, &m);
      advanced = true;
      return m;
    };
    try {
      return record_run(step, compute, [&] {
        if (!advanced) advance(nullptr);
      });
    } catch (...) {
      if (advanced) snapshot_step_ = step;  // the kept copy is at `step` now
      throw;
    }
  }

 private:
  struct layer {
    std::string name;
    basic_filter_view<const T, device_space> live;
    T* copy;
    basic_filter_view<T, device_space> kept;
  };

  static void check(cudaError_t e, const char* what) {
    FEVO_EXPECTS(e == cudaSuccess, "recorder: ", what, " failed: ", cudaGetErrorString(e));
  }

  /// kept := live, and the metrics of (kept, live) on the way when `m` is given.
  void advance(std::vector<filter_results>* per, std::vector<layer_metrics>* m = nullptr) {
    std::vector<::fevo::cuda::advance_pair<T>> pairs;
    pairs.reserve(layers_.size());
    for (auto& l : layers_) pairs.push_back({l.name, l.kept, l.live});
    auto r = ::fevo::cuda::compare_and_advance_layers(policy_, pairs, opts_.tau, per);
    if (m) *m = std::move(r);
  }

  policy_type policy_;
  std::vector<layer> layers_;
};

/// The device recorder by its own name (fevo::cuda::par's tuning unless another is given).
template <class T, class Tuning = ::fevo::cuda::default_tuning>
using cuda_recorder = recorder<T, ::fevo::cuda::policy<Tuning>>;

}  // namespace fevo::record
