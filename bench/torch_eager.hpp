// The LibTorch eager formulation of D, S and Z, behind an interface free of torch headers so the
// rest of the benchmark compiles without them. Built only when FEVO_BENCH_HAVE_TORCH is 1.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models.hpp"

namespace fevo_bench {

struct torch_layer_result {
  double D = 0, S = 0, Z = 0;       ///< the eager formulation's float results
  std::int64_t changed = -1;        ///< #(|d| > tau), exact (verify() only)
  std::int64_t zero_channels = -1;  ///< #(channels with no changed weight), exact (verify() only)
};

class torch_eager {
 public:
  virtual ~torch_eager() = default;
  /// The timed formulation over every layer: D, S, Z per layer as the eager code computes them.
  virtual void run(std::vector<torch_layer_result>& out) = 0;
  /// As run(), plus exact integer counts of changed weights and zero channels (for checking).
  virtual std::vector<torch_layer_result> verify() = 0;
};

/// Wraps the model's two snapshots (one contiguous buffer each, layers at their offsets) as
/// tensors with torch::from_blob; no copy. bf16 = false: float data; true: bfloat16 bit patterns.
std::unique_ptr<torch_eager> make_torch_eager(const model_shape& m, const void* prev,
                                              const void* next, bool bf16, double tau);
void torch_set_threads(int n);
std::string torch_version();

}  // namespace fevo_bench
