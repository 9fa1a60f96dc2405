// The paper driver's models (Tables I-III), the torch adapter <fevo/torch.hpp>, and the Table IV
// zeroing experiment (exactly the chosen filters are zeroed; the model is restored after each trial).
#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <fevo/torch.hpp>

#include "../support.hpp"
#include "driver.hpp"

using namespace fevo_paper;

namespace {

std::shared_ptr<paper_net> build(const std::string& arch, double width, int size = 32, int classes = 10,
                                 int in = 3) {
  model_config c;
  c.arch = arch;
  c.width = width;
  c.input_size = size;
  c.in_channels = in;
  c.classes = classes;
  return make_model(c);
}

std::vector<std::int64_t> shape_of(const paper_net& n, const std::string& layer) {
  return n.conv(layer)->weight.sizes().vec();
}

template <class F>
std::string model_error_of(F&& f) {
  try {
    f();
  } catch (const model_error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("VGG-16: Table I shapes and Table III names at width 1 and 0.25", "[paper][models]") {
  for (double width : {1.0, 0.25}) {
    INFO("width " << width);
    const auto n = build("vgg16", width);
    const int k[5] = {2, 2, 3, 3, 3}, f[5] = {64, 128, 256, 512, 512};
    std::vector<std::string> names;
    int in = 3;
    for (int b = 1; b <= 5; ++b)
      for (int j = 1; j <= k[b - 1]; ++j) {
        const std::string name = "block" + std::to_string(b) + "/conv" + std::to_string(b) + "_" + std::to_string(j);
        const int out = std::max(8, int(std::lround(f[b - 1] * width)));
        CHECK(shape_of(*n, name) == std::vector<std::int64_t>{out, in, 3, 3});
        names.push_back(name);
        in = out;
      }
    REQUIRE(n->convs().size() == 13);
    for (std::size_t i = 0; i < 13; ++i) CHECK(n->convs()[i].name == names[i]);
    CHECK(n->table3() ==
          std::vector<std::string>{"block1/conv1_1", "block2/conv2_2", "block3/conv3_3", "block4/conv4_3", "block5/conv5_3"});
  }
  CHECK(scaled_channels(64, 0.125) == 8);
  CHECK(scaled_channels(64, 0.01) == 8);  // at least 8
  CHECK(scaled_channels(512, 0.125) == 64);
}

TEST_CASE("ResNet-50: Table II shapes and Table III names at width 1 and 0.25", "[paper][models]") {
  for (double width : {1.0, 0.25}) {
    INFO("width " << width);
    const auto n = build("resnet50", width);
    auto s = [&](int c) { return std::int64_t(std::max(8, int(std::lround(c * width)))); };
    CHECK(shape_of(*n, "block1/conv1") == std::vector<std::int64_t>{s(64), 3, 7, 7});
    const int units[4] = {3, 4, 6, 3}, mid[4] = {64, 128, 256, 512};
    std::int64_t in = s(64);
    std::size_t convs = 1;
    for (int b = 2; b <= 5; ++b)
      for (int u = 1; u <= units[b - 2]; ++u) {
        const std::string p = "block" + std::to_string(b) + "/unit_" + std::to_string(u) + "/";
        const std::int64_t m = s(mid[b - 2]), out = s(4 * mid[b - 2]);
        CHECK(shape_of(*n, p + "conv1") == std::vector<std::int64_t>{m, in, 1, 1});
        CHECK(shape_of(*n, p + "conv2") == std::vector<std::int64_t>{m, m, 3, 3});
        CHECK(shape_of(*n, p + "conv3") == std::vector<std::int64_t>{out, m, 1, 1});
        convs += 3;
        if (u == 1) {
          CHECK(shape_of(*n, p + "shortcut") == std::vector<std::int64_t>{out, in, 1, 1});
          ++convs;
        }
        in = out;
      }
    CHECK(n->convs().size() == convs);
    CHECK(convs == 1 + 16 * 3 + 4);
    CHECK(n->table3() == std::vector<std::string>{"block1/conv1", "block2/unit_3/conv2", "block3/unit_4/conv2",
                                                  "block4/unit_6/conv2", "block5/unit_3/conv2"});
  }
}

TEST_CASE("both models run forward at a reduced width and size", "[paper][models]") {
  torch::manual_seed(fevo_test::seed());
  for (const char* arch : {"vgg16", "resnet50"})
    for (int size : {32, 64}) {
      INFO(arch << " at " << size);
      const auto n = build(arch, 0.125, size, 7, 1);
      n->eval();
      torch::NoGradGuard ng;
      const auto y = n->forward(torch::randn({2, 1, size, size}));
      CHECK(y.sizes().vec() == std::vector<std::int64_t>{2, 7});
      CHECK(n->first_feature_maps(torch::randn({1, 1, size, size})).size(1) == n->convs()[0].conv->weight.size(0));
    }
}

TEST_CASE("bad model settings are refused with the reason", "[paper][models]") {
  CHECK_THAT(model_error_of([] { build("alexnet", 1); }), Catch::Contains("unknown model 'alexnet'"));
  CHECK_THAT(model_error_of([] { build("vgg16", 0); }), Catch::Contains("width 0"));
  CHECK_THAT(model_error_of([] { build("resnet50", -1); }), Catch::Contains("width -1"));
  CHECK_THAT(model_error_of([] { build("resnet50", 0.5, 16); }), Catch::Contains("input size 16"));
  CHECK_THAT(model_error_of([] { build("vgg16", 0.5, 4096); }), Catch::Contains("input size 4096"));
  CHECK_THAT(model_error_of([] { build("vgg16", 0.5, 32, 1); }), Catch::Contains("1 classes"));
  const auto n = build("vgg16", 0.125);
  CHECK_THAT(model_error_of([&] { n->conv("block9/conv9_1"); }), Catch::Contains("block9/conv9_1"));
  CHECK_THAT(model_error_of([&] { zero_filters(*n, "block1/conv1_1", {8}); }), Catch::Contains("filter 8"));
}

TEST_CASE("from_torch: zero-copy views of any strides; wrong dtype, rank or device refused", "[paper][torch]") {
  torch::Tensor t = torch::randn({4, 3, 2, 5});
  const auto v = fevo::from_torch<float>(t);
  CHECK(v.data_handle() == t.data_ptr<float>());
  CHECK(v.extents() == std::array<std::size_t, 4>{4, 3, 2, 5});
  CHECK(v.strides() == std::array<std::size_t, 4>{30, 10, 5, 1});
  t[1][2][1][3] = 42.0f;  // the view sees updates of the tensor
  CHECK(v(1, 2, 1, 3) == 42.0f);

  const torch::Tensor cl = t.contiguous(torch::MemoryFormat::ChannelsLast);
  const auto vc = fevo::from_torch<const float>(cl);
  CHECK(vc.stride(1) == 1);
  CHECK(vc(1, 2, 1, 3) == 42.0f);
  const torch::Tensor hwio = t.permute({2, 3, 1, 0});  // (H, W, I, O) indices
  const auto vh = fevo::from_torch<const float>(hwio, fevo::dims::hwio);
  CHECK(vh.extents() == std::array<std::size_t, 4>{4, 3, 2, 5});
  CHECK(vh(1, 2, 1, 3) == 42.0f);
  const auto sl = t.slice(1, 1, 3);  // a non-contiguous slice of channels
  CHECK(fevo::from_torch<const float>(sl)(1, 1, 1, 3) == 42.0f);

  const torch::Tensor h = torch::ones({2, 2, 1, 1}, torch::kHalf);
  CHECK(fevo::from_torch<const fevo::half>(h)(1, 1, 0, 0).to_float() == 1.0f);
  const torch::Tensor b = torch::ones({2, 2, 1, 1}, torch::kBFloat16);
  CHECK(fevo::from_torch<fevo::bfloat16>(b)(0, 1, 0, 0).to_float() == 1.0f);
  CHECK(fevo::from_torch<double>(torch::zeros({1, 1, 1, 1}, torch::kDouble)).size() == 1);

  CHECK_THROWS_WITH(fevo::from_torch<float>(torch::zeros({2, 2, 1, 1}, torch::kDouble)),
                    Catch::Contains("dtype is Double") && Catch::Contains("f32"));
  CHECK_THROWS_WITH(fevo::from_torch<float>(torch::zeros({3, 3})), Catch::Contains("2 dimensions"));
  CHECK_THROWS_WITH(fevo::from_torch<float>(torch::Tensor()), Catch::Contains("undefined"));
  CHECK_THROWS_AS(fevo::from_torch<float>(torch::zeros({2, 2, 1, 1}, torch::kInt32)), fevo::error);
}

TEST_CASE("Table IV: the chosen filters are zeroed exactly, the model is restored after each trial",
          "[paper][table4]") {
  torch::manual_seed(fevo_test::seed());
  for (const char* arch : {"vgg16", "resnet50"}) {
    INFO(arch);
    const auto n = build(arch, 0.125, 32, 4, 1);
    // A small test set of random images.
    image_set test;
    test.channels = 1;
    test.size = 32;
    test.pixels.resize(12 * 32 * 32);
    for (auto& p : test.pixels) p = std::uint8_t(torch::randint(0, 256, {1}).item<int>());
    for (int i = 0; i < 12; ++i) test.labels.push_back(i % 4);

    // Statistics with a known order: filter i of every layer has mean D = (i * 7919) % 101, and
    // the three filters with the largest index are Z == 1 in every record.
    std::map<std::string, filter_stats> stats;
    for (const auto& c : n->convs()) {
      const auto f = std::size_t(c.conv->weight.size(0));
      filter_stats s;
      s.records = 2;
      for (std::size_t i = 0; i < f; ++i) {
        s.D_sum.push_back(2.0 * double((i * 7919) % 101));
        s.Z_one.push_back(i + 3 >= f ? 2 : 0);
      }
      stats[c.name] = s;
    }
    const model_state before(*n);
    std::vector<std::pair<std::string, torch::Tensor>> original;
    for (const auto& [name, t] : named_tensors(*n)) original.emplace_back(name, t.detach().clone());
    const auto device = torch::Device(torch::kCPU);
    const double baseline = evaluate(*n, test, device);
    std::map<std::string, std::vector<std::vector<int>>> seen;
    const auto rows = run_table4(
        *n, test, device, stats, 5, fevo_test::seed(), 64, baseline,
        [&](const std::string& layer, const std::string& criterion, const std::vector<int>& zeroed) {
          seen[layer + "/" + criterion].push_back(zeroed);
          // Exactly the chosen filters are zero; every other tensor is as before.
          const auto conv = n->conv(layer);
          const std::set<int> z(zeroed.begin(), zeroed.end());
          for (int i = 0; i < conv->weight.size(0); ++i) {
            const bool all_zero = conv->weight[i].eq(0).all().item<bool>();
            CHECK(all_zero == (z.count(i) == 1));
          }
          // Every other tensor is as before the trial (the previous trial was undone).
          const auto now = named_tensors(*n);
          REQUIRE(now.size() == original.size());
          for (std::size_t t = 0; t < now.size(); ++t) {
            if (now[t].first == layer || now[t].first == layer + "/bias") {
              for (std::int64_t i = 0; i < now[t].second.size(0); ++i)
                if (!z.count(int(i))) CHECK(torch::equal(now[t].second[i], original[t].second[i]));
              continue;
            }
            CHECK(torch::equal(now[t].second, original[t].second));
          }
        });
    CHECK(before.equals(*n));  // restored after the last trial
    REQUIRE(rows.size() == 15);
    for (std::size_t k = 0; k < 5; ++k) {
      const std::string& layer = n->table3()[k];
      const auto f = std::size_t(n->conv(layer)->weight.size(0));
      const std::size_t z = zero_count(k, f);
      for (std::size_t r = 0; r < 3; ++r) {
        const auto& row = rows[3 * k + r];
        CHECK(row.layer == layer);
        CHECK(row.filters == f);
        CHECK(row.zeroed == z);
        CHECK(row.baseline == baseline);
        // drop_mean is the mean of the draws' drops, baseline - acc_mean the drop of their mean:
        // equal up to rounding, and both can be 0, where a relative bound alone fails.
        CHECK(row.drop_mean == Approx(baseline - row.acc_mean).margin(1e-12));
      }
      CHECK(rows[3 * k].criterion == "least_D");
      CHECK(rows[3 * k + 1].criterion == "most_Z");
      CHECK(rows[3 * k + 2].criterion == "random");
      CHECK(rows[3 * k + 2].draws == 5);
      CHECK(rows[3 * k].acc_std == 0);
      // least_D: the z filters with the smallest (i * 7919) % 101.
      std::vector<int> want(f);
      std::iota(want.begin(), want.end(), 0);
      std::stable_sort(want.begin(), want.end(),
                       [](int a, int b) { return (a * 7919) % 101 < (b * 7919) % 101; });
      want.resize(z);
      std::sort(want.begin(), want.end());
      REQUIRE(seen[layer + "/least_D"].size() == 1);
      CHECK(seen[layer + "/least_D"][0] == want);
      // most_Z: the filters with Z == 1 in every record come first.
      const auto& mz = seen[layer + "/most_Z"][0];
      CHECK(mz.size() == z);
      const auto z_one = std::count_if(mz.begin(), mz.end(), [&](int i) { return std::size_t(i) + 3 >= f; });
      CHECK(std::size_t(z_one) == std::min<std::size_t>(z, 3));
      REQUIRE(seen[layer + "/random"].size() == 5);
      for (const auto& draw : seen[layer + "/random"]) CHECK(draw.size() == z);
    }
  }
}

TEST_CASE("zero_filters and model_state: zero, restore, compare", "[paper][table4]") {
  torch::manual_seed(fevo_test::seed());
  const auto n = build("vgg16", 0.125, 32, 10, 1);
  const model_state s(*n);
  CHECK(s.equals(*n));
  zero_filters(*n, "block2/conv2_2", {0, 5, 15});
  const auto c = n->conv("block2/conv2_2");
  CHECK(c->weight[0].abs().sum().item<float>() == 0);
  CHECK(c->weight[5].abs().sum().item<float>() == 0);
  CHECK(c->weight[15].abs().sum().item<float>() == 0);
  CHECK(c->weight[1].abs().sum().item<float>() > 0);
  CHECK_FALSE(s.equals(*n));
  s.restore(*n);
  CHECK(s.equals(*n));
  CHECK(zero_count(0, 64) == 7);
  CHECK(zero_count(1, 128) == 15);
  CHECK(zero_count(2, 256) == 68);
  CHECK(zero_count(3, 512) == 45);
  CHECK(zero_count(4, 512) == 272);
  CHECK(zero_count(0, 8) == 1);    // 7/64 of 8 filters, at least one
  CHECK(zero_count(4, 64) == 34);  // 272/512 of 64
}

TEST_CASE("weight_change_log: Agrawal et al.'s sums per layer and record, in metrics.csv's order",
          "[paper][weight_change]") {
  // Values exact in binary, so the expected sums are exact: |1 - 0.5| + |-2 + 2| + |0.25 - 0.75| = 1.
  torch::Tensor a = torch::tensor({0.5f, -2.0f, 0.75f}).reshape({3, 1, 1, 1});
  torch::Tensor b = torch::zeros({2, 1, 1, 1});
  torch::Tensor c = torch::tensor({1.0f, 3.0f}).reshape({2, 1, 1, 1});
  weight_change_log log({{"block1/conv1", a}, {"odd,\"name\"", b}, {"c", c}}, 0);
  {
    torch::NoGradGuard ng;
    a.copy_(torch::tensor({1.0f, -2.0f, 0.25f}).reshape({3, 1, 1, 1}));
    b[0].fill_(0.5f);  // moved from all-zero weights: L1_prev 0, relative inf
  }
  log.record(10);
  {
    torch::NoGradGuard ng;
    a.mul_(2.0f);  // the previous record is now step 10: change |a_10| = 3.25, prev 3.25
  }
  log.record(20);
  CHECK(log.rows() == 6);
  CHECK(log.text() ==
        "0,10,block1/conv1,1,3.25,0.3076923076923077\n"
        "0,10,\"odd,\"\"name\"\"\",0.5,0,inf\n"
        "0,10,c,0,4,0\n"
        "10,20,block1/conv1,3.25,3.25,1\n"
        "10,20,\"odd,\"\"name\"\"\",0,0.5,0\n"
        "10,20,c,0,4,0\n");
  // A layer that stays all zero: 0 / 0.
  torch::Tensor z = torch::zeros({1, 1, 1, 1});
  weight_change_log still({{"z", z}}, 5);
  still.record(6);
  CHECK(still.text() == "5,6,z,0,0,nan\n");
  // The difference is taken in float64: 2^25 - 1 needs 25 significant bits, which a float32
  // difference would round to 2^25.
  torch::Tensor m = torch::tensor({1.0f}).reshape({1, 1, 1, 1});
  weight_change_log big({{"m", m}}, 0);
  {
    torch::NoGradGuard ng;
    m.fill_(33554432.0f);
  }
  big.record(1);
  CHECK(big.text() == "0,1,m,33554431,1,33554431\n");
}
