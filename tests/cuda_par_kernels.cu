// Every call of fevo::cuda::par, for every element type: compiled so that tools/sass_report.py can
// count the kernels a program that uses fevo::cuda::par alone holds (ctest cuda.par_kernels: at
// most 16, fevo/cuda/tuning.hpp). It runs nothing: a device is not needed.
#include <fevo/cuda.cuh>

#include <vector>

namespace {

template <class T>
void every_call() {
  std::vector<fevo::layer_pair<T, fevo::device_space>> layers;
  (void)fevo::compute_layers(fevo::cuda::par, layers, 0.1);
  std::vector<fevo::cuda::advance_pair<T>> pairs;
  (void)fevo::cuda::compare_and_advance_layers(fevo::cuda::par, pairs, 0.1);
}

}  // namespace

int main(int argc, char**) {
  if (argc > 1) {  // never taken in the test: only the kernels' code matters
    every_call<float>();
    every_call<double>();
    every_call<fevo::half>();
    every_call<fevo::bfloat16>();
  }
  return 0;
}
