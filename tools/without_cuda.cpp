// The fevo command's CUDA path in a build without CUDA (no nvcc, or FEVO_ENABLE_CUDA=OFF):
// --backend cuda is refused with the reason, before any snapshot is read (analyze.cpp's setup).
#include "cuda_backend.hpp"

namespace fevo_cli {
namespace {
[[noreturn]] void refuse() {
  fevo::detail::fail("--backend cuda: this fevo command was built without CUDA (configure with nvcc found, "
                     "FEVO_ENABLE_CUDA=ON); use --backend cpu");
}
}  // namespace

void require_cuda_device() { refuse(); }

std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<float>>&, double,
                                                 std::vector<fevo::filter_results>&) {
  refuse();
}
std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<double>>&, double,
                                                 std::vector<fevo::filter_results>&) {
  refuse();
}
std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<fevo::half>>&, double,
                                                 std::vector<fevo::filter_results>&) {
  refuse();
}
std::vector<fevo::layer_metrics> compute_on_cuda(const std::vector<fevo::layer_pair<fevo::bfloat16>>&, double,
                                                 std::vector<fevo::filter_results>&) {
  refuse();
}

}  // namespace fevo_cli
