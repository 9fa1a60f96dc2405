// Conv weight shapes of the two models the CPU benchmark uses: VGG-16 (13 convs) and ResNet-50
// (53 convs). Only the shapes matter here; the weights are random (see bench_cpu.cpp).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace fevo_bench {

/// One conv layer, [O, I, H, W] contiguous, at `offset` elements into the model's buffer.
struct layer_shape {
  std::string name;
  long long o = 0, i = 0, h = 0, w = 0;
  std::size_t offset = 0;
  std::size_t size() const { return static_cast<std::size_t>(o * i * h * w); }
  std::size_t filter_size() const { return static_cast<std::size_t>(i * h * w); }
};

struct model_shape {
  std::string name;
  std::vector<layer_shape> layers;
  std::size_t total = 0;  ///< weights in all layers

  void add(std::string n, long long o, long long i, long long k) {
    layer_shape l{std::move(n), o, i, k, k, total};
    total += l.size();
    layers.push_back(std::move(l));
  }
};

/// Channel counts are divided by `shrink` (1 = the real model); the RGB input stays 3.
inline long long shrunk(long long c, long long shrink) { return c / shrink > 0 ? c / shrink : 1; }

/// VGG-16's 13 convs, all 3x3 (14,710,464 weights at shrink 1).
inline model_shape vgg16(long long shrink = 1) {
  model_shape m;
  m.name = "vgg16";
  const long long cfg[][2] = {{3, 64},    {64, 64},   {64, 128},  {128, 128}, {128, 256},
                              {256, 256}, {256, 256}, {256, 512}, {512, 512}, {512, 512},
                              {512, 512}, {512, 512}, {512, 512}};
  const char* names[] = {"conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                         "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"};
  for (int k = 0; k < 13; ++k) {
    const long long in = cfg[k][0] == 3 ? 3 : shrunk(cfg[k][0], shrink);
    m.add(names[k], shrunk(cfg[k][1], shrink), in, 3);
  }
  return m;
}

/// ResNet-50's 53 convs: the 7x7 stem, 16 bottleneck units (3-4-6-3) of 1x1, 3x3, 1x1 convs, and
/// the 4 projection shortcuts (23,454,912 weights at shrink 1).
inline model_shape resnet50(long long shrink = 1) {
  model_shape m;
  m.name = "resnet50";
  m.add("conv1", shrunk(64, shrink), 3, 7);
  const int units[4] = {3, 4, 6, 3};
  long long in = shrunk(64, shrink);
  for (int s = 0; s < 4; ++s) {
    const long long mid = shrunk(64LL << s, shrink), out = shrunk(256LL << s, shrink);
    for (int u = 0; u < units[s]; ++u) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(u) + ".";
      m.add(p + "conv1", mid, in, 1);
      m.add(p + "conv2", mid, mid, 3);
      m.add(p + "conv3", out, mid, 1);
      if (u == 0) m.add(p + "downsample", out, in, 1);
      in = out;
    }
  }
  return m;
}

}  // namespace fevo_bench
