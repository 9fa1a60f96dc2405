// VGG-16 and ResNet-50 as in Tables I-III. See models.hpp.
#include "models.hpp"

#include <cmath>
#include <sstream>

namespace fevo_paper {

namespace nn = torch::nn;

int scaled_channels(int count, double width) {
  return std::max(8, int(std::lround(double(count) * width)));
}

nn::Conv2d paper_net::conv(const std::string& name) const {
  for (const auto& c : convs_)
    if (c.name == name) return c.conv;
  throw model_error("no conv layer named '" + name + "' in " + cfg_.arch);
}

nn::Conv2d paper_net::add_conv(const std::string& name, int in, int out, int k, int stride, int pad,
                               bool bias) {
  auto c = register_module(name, nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(bias)));
  // He initialisation (fan_out, ReLU), as torchvision's VGG and ResNet.
  nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
  if (bias) nn::init::zeros_(c->bias);
  convs_.push_back({name, c});
  return c;
}

namespace {

class vgg16 final : public paper_net {
 public:
  explicit vgg16(const model_config& cfg) : paper_net(cfg) {
    static const int filters[5] = {64, 128, 256, 512, 512};
    static const int layers[5] = {2, 2, 3, 3, 3};
    int in = cfg.in_channels;
    for (int b = 1; b <= 5; ++b) {
      const int out = scaled_channels(filters[b - 1], cfg.width);
      for (int k = 1; k <= layers[b - 1]; ++k) {
        add_conv("block" + std::to_string(b) + "/conv" + std::to_string(b) + "_" + std::to_string(k), in, out, 3, 1, 1,
                 true);
        in = out;
      }
    }
    fc_ = register_module("head/fc", nn::Linear(in, cfg.classes));
    table3_ = {"block1/conv1_1", "block2/conv2_2", "block3/conv3_3", "block4/conv4_3", "block5/conv5_3"};
  }

  torch::Tensor forward(torch::Tensor x) override {
    static const int layers[5] = {2, 2, 3, 3, 3};
    std::size_t i = 0;
    for (int b = 0; b < 5; ++b) {
      for (int k = 0; k < layers[b]; ++k) x = torch::relu(convs_[i++].conv->forward(x));
      x = torch::max_pool2d(x, 2, 2);
    }
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    return fc_->forward(x);
  }

 private:
  nn::Linear fc_{nullptr};
};

class resnet50 final : public paper_net {
 public:
  explicit resnet50(const model_config& cfg) : paper_net(cfg) {
    small_ = cfg.input_size < 64;
    const int stem = scaled_channels(64, cfg.width);
    add_conv("block1/conv1", cfg.in_channels, stem, 7, small_ ? 1 : 2, 3, false);
    static const int bottleneck[4] = {64, 128, 256, 512};
    static const int units[4] = {3, 4, 6, 3};
    int in = stem;
    for (int b = 2; b <= 5; ++b) {
      const int mid = scaled_channels(bottleneck[b - 2], cfg.width);
      const int out = scaled_channels(4 * bottleneck[b - 2], cfg.width);
      for (int u = 1; u <= units[b - 2]; ++u) {
        const std::string p = "block" + std::to_string(b) + "/unit_" + std::to_string(u) + "/";
        const int stride = (u == 1 && b > 2) ? 2 : 1;
        unit un;
        un.bn1 = register_module(p + "bn1", nn::BatchNorm2d(in));
        if (u == 1) un.shortcut = add_conv(p + "shortcut", in, out, 1, stride, 0, false);
        un.conv1 = add_conv(p + "conv1", in, mid, 1, 1, 0, false);
        un.bn2 = register_module(p + "bn2", nn::BatchNorm2d(mid));
        un.conv2 = add_conv(p + "conv2", mid, mid, 3, stride, 1, false);
        un.bn3 = register_module(p + "bn3", nn::BatchNorm2d(mid));
        un.conv3 = add_conv(p + "conv3", mid, out, 1, 1, 0, false);
        units_.push_back(un);
        in = out;
      }
    }
    post_ = register_module("postnorm", nn::BatchNorm2d(in));
    fc_ = register_module("head/fc", nn::Linear(in, cfg.classes));
    table3_ = {"block1/conv1", "block2/unit_3/conv2", "block3/unit_4/conv2", "block4/unit_6/conv2",
               "block5/unit_3/conv2"};
  }

  torch::Tensor forward(torch::Tensor x) override {
    x = convs_.front().conv->forward(x);
    if (!small_) x = torch::max_pool2d(x, 3, 2, 1);
    for (auto& u : units_) {
      const torch::Tensor pre = torch::relu(u.bn1->forward(x));
      const torch::Tensor sc = u.shortcut ? u.shortcut->forward(pre) : x;
      torch::Tensor r = u.conv1->forward(pre);
      r = u.conv2->forward(torch::relu(u.bn2->forward(r)));
      r = u.conv3->forward(torch::relu(u.bn3->forward(r)));
      x = sc + r;
    }
    x = torch::relu(post_->forward(x));
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    return fc_->forward(x);
  }

 private:
  struct unit {
    nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
    nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr}, shortcut{nullptr};
  };
  bool small_ = false;
  std::vector<unit> units_;
  nn::BatchNorm2d post_{nullptr};
  nn::Linear fc_{nullptr};
};

}  // namespace

std::shared_ptr<paper_net> make_model(const model_config& cfg) {
  std::ostringstream why;
  if (cfg.arch != "vgg16" && cfg.arch != "resnet50")
    why << "unknown model '" << cfg.arch << "' (vgg16 or resnet50)";
  else if (!(cfg.width > 0 && cfg.width <= 4))
    why << cfg.arch << ": width " << cfg.width << " is not in (0, 4]";
  else if (cfg.input_size < 32 || cfg.input_size > 1024)
    why << cfg.arch << ": input size " << cfg.input_size
        << " is not in [32, 1024] (the five 2x downsamplings of the architecture need at least 32 pixels)";
  else if (cfg.in_channels < 1 || cfg.in_channels > 4)
    why << cfg.arch << ": " << cfg.in_channels << " input channels (1 to 4 supported)";
  else if (cfg.classes < 2)
    why << cfg.arch << ": " << cfg.classes << " classes (at least 2)";
  if (!why.str().empty()) throw model_error(why.str());
  if (cfg.arch == "vgg16") return std::make_shared<vgg16>(cfg);
  return std::make_shared<resnet50>(cfg);
}

std::vector<std::pair<std::string, torch::Tensor>> named_tensors(const paper_net& net) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto file_name = [&](const std::string& torch_name) {
    // "block1/conv1_1.weight" -> "block1/conv1_1" for a conv weight, else '.' -> '/'.
    const auto dot = torch_name.rfind('.');
    const std::string module = torch_name.substr(0, dot), leaf = torch_name.substr(dot + 1);
    if (leaf == "weight")
      for (const auto& c : net.convs())
        if (c.name == module) return module;
    std::string s = torch_name;
    for (char& ch : s)
      if (ch == '.') ch = '/';
    return s;
  };
  for (const auto& p : net.named_parameters()) out.emplace_back(file_name(p.key()), p.value());
  for (const auto& b : net.named_buffers()) out.emplace_back(file_name(b.key()), b.value());
  return out;
}

}  // namespace fevo_paper
