// fevo::cuda alone, compiled by nvcc: fevo::cuda::par on device memory. Exit status 77 (reported
// skipped by ctest) where no CUDA device can be used.
#include <cuda_runtime_api.h>

#include <fevo/cuda.cuh>
#include <fevo/fevo.hpp>

#include "check.hpp"

int main() {
  using namespace consumer;
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("no usable CUDA device (%s): skipped\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  float* d = nullptr;
  if (cudaMalloc(&d, 8 * sizeof(float)) != cudaSuccess ||
      cudaMemcpy(d, a.data(), 4 * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess ||
      cudaMemcpy(d + 4, b.data(), 4 * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess) {
    std::fprintf(stderr, "FAIL: cudaMalloc or cudaMemcpy\n");
    return 1;
  }
  try {
    const auto m = fevo::compute(fevo::cuda::par, fevo::oihw<fevo::device_space>(static_cast<const float*>(d), 2, 1, 1, 2),
                                 fevo::oihw<fevo::device_space>(static_cast<const float*>(d + 4), 2, 1, 1, 2), tau);
    std::printf("D=%g S=%g Z=%g\n", m.D, m.S, m.Z);
    check(expected(m), "fevo::cuda::par");
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "FAIL: %s\n", ex.what());
    failures += 1;
  }
  cudaFree(d);
  return failures == 0 ? 0 : 1;
}
