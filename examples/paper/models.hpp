// The paper's two networks in LibTorch: VGG-16 (Table I) and ResNet-50 (Table II), with layer
// names that follow Table III.
//
// VGG-16: 13 conv 3x3 layers (padding 1, bias, ReLU) in 5 blocks of 64-128-256-512-512 filters,
// 2x2 max pooling after each block, named block<b>/conv<b>_<k>. The classifier head is global
// average pooling and one linear layer (head/fc) to the data's classes (the paper's three 4096-wide
// fully connected layers are not convolutions and are left out to keep small runs small).
//
// ResNet-50: a 7x7 stem conv block1/conv1 (64 filters), then bottleneck units 3-4-6-3 in
// block2..block5 with 1x1 / 3x3 / 1x1 convs of (64, 64, 256), (128, 128, 512), (256, 256, 1024),
// (512, 512, 2048) filters, named block<b>/unit_<u>/conv1..conv3. Units are pre-activation
// (BN-ReLU before each conv, identity shortcut; He et al., "Identity Mappings in Deep Residual
// Networks"), the first unit of each block has a 1x1 projection block<b>/unit_1/shortcut, and the
// first unit of block3..block5 has stride 2 (in its 3x3 conv and shortcut). After the last unit:
// BN-ReLU (postnorm), global average pooling, head/fc.
//
// Width multiplier: every conv's filter count is round(count * width), at least 8; kernel sizes
// never change. Input size: at least 32. VGG-16 keeps its five poolings (32 -> 1). ResNet-50 on
// inputs under 64 pixels uses stride 1 in the stem conv and no stem max pooling (total stride 8
// instead of 32), so block5 still sees 4x4 maps at 32 pixels; from 64 pixels on the stem is the
// original (stride 2, then 3x3 max pooling with stride 2).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "errors.hpp"

namespace fevo_paper {

/// A model that cannot be built (unknown name, a width or size the architecture cannot take).
class model_error : public input_error {
 public:
  using input_error::input_error;
};

struct model_config {
  std::string arch = "vgg16";  ///< "vgg16" or "resnet50"
  double width = 1.0;          ///< channel multiplier, (0, 4]
  int input_size = 224;        ///< square inputs, [32, 1024]
  int in_channels = 3;
  int classes = 1000;
};

/// Filter count of a Table I/II layer at a width: round(count * width), at least 8.
int scaled_channels(int count, double width);

/// A conv layer of the model, in depth order, with its Table-III-style name.
struct named_conv {
  std::string name;
  torch::nn::Conv2d conv{nullptr};
};

/// Both networks: forward() gives logits; convs() lists every conv layer in depth order.
class paper_net : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;
  /// The first conv layer's output after ReLU (the feature maps of Fig. 3).
  torch::Tensor first_feature_maps(const torch::Tensor& x) { return torch::relu(convs_.front().conv->forward(x)); }
  const std::vector<named_conv>& convs() const { return convs_; }
  /// The conv layer called `name`; throws model_error when there is none.
  torch::nn::Conv2d conv(const std::string& name) const;
  /// The five layers of Table III (conv1..conv5), in order.
  const std::vector<std::string>& table3() const { return table3_; }
  const model_config& config() const { return cfg_; }

 protected:
  explicit paper_net(model_config cfg) : cfg_(std::move(cfg)) {}
  torch::nn::Conv2d add_conv(const std::string& name, int in, int out, int k, int stride, int pad, bool bias);
  model_config cfg_;
  std::vector<named_conv> convs_;
  std::vector<std::string> table3_;
};

/// Builds "vgg16" or "resnet50"; checks the configuration (model_error with the reason).
std::shared_ptr<paper_net> make_model(const model_config& cfg);

/// Every parameter and buffer with the file names fevo_paper uses: a conv weight is named by its
/// layer ("block1/conv1_1"); any other tensor by its module path with '/' ("block1/conv1_1/bias",
/// "block2/unit_1/bn1/running_mean", "head/fc/weight").
std::vector<std::pair<std::string, torch::Tensor>> named_tensors(const paper_net& net);

}  // namespace fevo_paper
