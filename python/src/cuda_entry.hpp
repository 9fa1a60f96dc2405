// The CUDA part of the extension (cuda_entry.cu, built by nvcc when CMake finds a CUDA compiler;
// FEVO_PY_HAVE_CUDA is then defined for module.cpp). Views of CUDA memory are measured by
// fevo::cuda::par on the stream given (a cudaStream_t as an integer; 0 is the legacy default
// stream), on the device that holds them.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <fevo/fevo.hpp>
#include <fevo/record/run_writer.hpp>

#include "arrays.hpp"
#include "recorders.hpp"

namespace fevo_py::cuda {

/// A usable CUDA device is present (the driver answers and reports at least one device).
bool available();

/// fevo::compute on the device of `prev` (with per-filter results when `per` is given, and R_ic
/// with `with_r`).
fevo::layer_metrics compute(const array_ref& prev, const array_ref& next, double tau, fevo::filter_results* per,
                            bool with_r, std::uintptr_t stream);

/// fevo::compute_partial on the device of `prev`.
fevo::partial compute_partial(const array_ref& prev, const array_ref& next, double tau, std::uintptr_t stream);

/// fevo::compute_layers for pairs of one element type on one device, in one call.
std::vector<fevo::layer_metrics> compute_layers(const std::vector<named_pair>& pairs, double tau,
                                                std::uintptr_t stream);

/// Seconds of each of `repeat` fevo::compute_layers calls on the pairs (the benchmark's C++
/// reference on the same memory).
std::vector<double> time_compute_layers(const std::vector<named_pair>& pairs, double tau, std::uintptr_t stream,
                                        int repeat);

/// fevo::record::cuda_recorder<T> for layers of element type `type` on CUDA device `device`; its
/// kept copy lives there and its passes are ordered on `stream`.
std::unique_ptr<recorder_iface> make_recorder(dtype type, const fevo::record::recorder_options& o, int device,
                                              std::uintptr_t stream);

}  // namespace fevo_py::cuda
