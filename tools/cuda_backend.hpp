// The fevo command's CUDA path (cuda_backend.cu, built by nvcc when fevo::cuda is): host views
// of two snapshots are copied to the device with their strides and measured by fevo::cuda::par.
// A build without CUDA links without_cuda.cpp instead, which refuses --backend cuda.
#pragma once

#include <vector>

#include <fevo/fevo.hpp>

namespace fevo_cli {

/// Throws fevo::error when no usable CUDA device is present.
void require_cuda_device();

std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<float>>& pairs, double tau,
                                                 std::vector<fevo::filter_results>& per);
std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<double>>& pairs, double tau,
                                                 std::vector<fevo::filter_results>& per);
std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<fevo::half>>& pairs,
                                                 double tau, std::vector<fevo::filter_results>& per);
std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<fevo::bfloat16>>& pairs,
                                                 double tau, std::vector<fevo::filter_results>& per);

}  // namespace fevo_cli
