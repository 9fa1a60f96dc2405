// Must not compile: a host view handed to the CUDA backend (tests/CMakeLists.txt checks the error).
#include <fevo/cuda.cuh>

int main() {
  float w[2 * 3 * 3 * 3] = {};
  auto host = fevo::oihw(static_cast<const float*>(w), 2, 3, 3, 3);
  return fevo::compute(fevo::cuda::par, host, host, 0.1).D > 0;
}
