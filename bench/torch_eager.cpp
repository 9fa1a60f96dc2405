// LibTorch eager baseline: the formulation a PyTorch user would write, op by op.
#include "torch_eager.hpp"

#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

namespace fevo_bench {
namespace {

class torch_eager_impl final : public torch_eager {
 public:
  torch_eager_impl(const model_shape& m, const void* prev, const void* next, bool bf16,
                   double tau)
      : tau_(tau) {
    const auto opts = torch::TensorOptions().dtype(bf16 ? torch::kBFloat16 : torch::kFloat32);
    const std::size_t elem = bf16 ? 2 : 4;
    for (const layer_shape& l : m.layers) {
      auto* pa = const_cast<char*>(static_cast<const char*>(prev)) + l.offset * elem;
      auto* pb = const_cast<char*>(static_cast<const char*>(next)) + l.offset * elem;
      a_.push_back(torch::from_blob(pa, {l.o, l.i, l.h, l.w}, opts));
      b_.push_back(torch::from_blob(pb, {l.o, l.i, l.h, l.w}, opts));
    }
  }

  void run(std::vector<torch_layer_result>& out) override {
    c10::InferenceMode guard;
    out.resize(a_.size());
    for (std::size_t k = 0; k < a_.size(); ++k) {
      const torch::Tensor& a = a_[k];
      const torch::Tensor& b = b_[k];
      auto d = b - a;
      auto D = d.pow(2).sum({1, 2, 3}).mean();
      auto changed = d.abs() > tau_;
      auto S = changed.to(torch::kFloat).mean({1, 2, 3}).mean();
      auto Z = (changed.sum({2, 3}) == 0).to(torch::kFloat).mean({1}).mean();
      out[k].D = D.item<double>();
      out[k].S = S.item<double>();
      out[k].Z = Z.item<double>();
    }
  }

  std::vector<torch_layer_result> verify() override {
    std::vector<torch_layer_result> out;
    run(out);
    c10::InferenceMode guard;
    for (std::size_t k = 0; k < a_.size(); ++k) {
      auto d = b_[k] - a_[k];
      auto changed = d.abs() > tau_;
      out[k].changed = changed.sum().item<std::int64_t>();
      out[k].zero_channels = (changed.sum({2, 3}) == 0).sum().item<std::int64_t>();
    }
    return out;
  }

 private:
  double tau_;
  std::vector<torch::Tensor> a_, b_;
};

}  // namespace

std::unique_ptr<torch_eager> make_torch_eager(const model_shape& m, const void* prev,
                                              const void* next, bool bf16, double tau) {
  return std::make_unique<torch_eager_impl>(m, prev, next, bf16, tau);
}

void torch_set_threads(int n) { torch::set_num_threads(n); }

std::string torch_version() { return TORCH_VERSION; }

}  // namespace fevo_bench
