// Cases of fevo::cuda that go beyond the shared backend body (compare-and-advance, launches per
// call), written once for two environments: a real GPU (test_cuda.cu) and the host SIMT emulator
// (test_cuda_emulated.cpp). An Env provides
//   template <class T> struct buffer;   device memory holding a copy of a host vector: .p, .get(n)
//   template <class T> static std::vector<fevo::layer_metrics> advance(const Config&,
//       const std::vector<fevo::cuda::advance_pair<T>>&, double tau,
//       std::vector<fevo::filter_results>* per, std::size_t& launches);
//   static std::size_t uploads();       descriptor tables uploaded so far by this thread
//   static void forget_table();         makes the next call upload its table
#pragma once

#include <array>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <fevo/cuda/dispatch.hpp>

#include "support.hpp"

namespace fevo_test {

template <class T>
T from_double(double v) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) return T(v);
  else return T::from_float(float(v));
}

/// An OIHW layer shape; `offset`: the view starts one element into its buffer (unaligned).
struct model_shape {
  std::size_t o, i, h, w;
  bool offset;
};

/// Layers of every kind: warp and block modes, packed and strided (offset views), a filter larger
/// than a block's bitset (the channel-by-channel path), and small packed filters for shared warps.
inline std::vector<model_shape> mixed_shapes() {
  return {{8, 3, 3, 3, false}, {37, 19, 3, 3, false}, {16, 64, 1, 1, false}, {5, 512, 3, 3, false},
          {3, 7, 7, 7, true},  {2, 30000, 3, 3, false}, {4, 100, 5, 5, true}, {37, 64, 2, 2, false},
          {11, 96, 1, 1, false}};
}

/// A whole "model" of layers of the given shapes (by default mixed_shapes()) through
/// compare_and_advance_layers, against fevo::seq layer by layer. prev must equal next afterwards,
/// bit for bit, and nothing outside the views may change.
template <class Env, class T, class Config>
void check_advance_model(const Config& cfg, const std::vector<model_shape>& shapes = mixed_shapes()) {
  rng g = rng_for("compare_and_advance_layers");
  std::vector<std::vector<T>> a(shapes.size()), b(shapes.size());
  std::vector<std::unique_ptr<typename Env::template buffer<T>>> da, db;
  std::vector<fevo::cuda::advance_pair<T>> pairs;
  std::vector<fevo::layer_metrics> want;
  std::vector<fevo::filter_results> want_per(shapes.size());
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    const auto& s = shapes[k];
    const std::size_t n = s.o * s.i * s.h * s.w, off = s.offset ? 1 : 0;  // offset: unaligned
    a[k].resize(n + off);
    b[k].resize(n + off);
    for (std::size_t e = 0; e < n + off; ++e) {
      const double x = g.uniform() - 0.5;
      a[k][e] = from_double<T>(x);
      b[k][e] = (e % 3 == 0) ? a[k][e] : from_double<T>(x + (g.uniform() - 0.5) * 1e-2);
    }
    want.push_back(fevo::compute(fevo::seq, fevo::oihw(a[k].data() + off, s.o, s.i, s.h, s.w),
                                 fevo::oihw(b[k].data() + off, s.o, s.i, s.h, s.w), 1e-3, want_per[k]));
    da.push_back(std::make_unique<typename Env::template buffer<T>>(a[k]));
    db.push_back(std::make_unique<typename Env::template buffer<T>>(b[k]));
    pairs.push_back({"layer" + std::to_string(k), fevo::oihw<fevo::device_space>(da[k]->p + off, s.o, s.i, s.h, s.w),
                     fevo::oihw<fevo::device_space>(static_cast<const T*>(db[k]->p + off), s.o, s.i, s.h, s.w)});
  }
  std::vector<fevo::filter_results> per;
  std::size_t launches = 0;
  const auto got = Env::advance(cfg, pairs, 1e-3, &per, launches);
  CHECK(launches == 2);  // the fused pass and the merge
  REQUIRE(got.size() == shapes.size());
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    INFO("layer " << k);
    CHECK(got[k].totals.changed == want[k].totals.changed);
    CHECK(got[k].totals.zero_channels == want[k].totals.zero_channels);
    CHECK(got[k].totals.nonfinite == want[k].totals.nonfinite);
    CHECK(got[k].D == Approx(want[k].D).epsilon(1e-12));
    for (std::size_t i = 0; i < shapes[k].o; ++i) {
      CHECK(per[k].S[i] == want_per[k].S[i]);
      CHECK(per[k].Z[i] == want_per[k].Z[i]);
    }
    const auto after = da[k]->get(a[k].size());
    const std::size_t off = shapes[k].offset ? 1 : 0;
    bool same = true;
    for (std::size_t e = off; e < after.size(); ++e) same = same && std::memcmp(&after[e], &b[k][e], sizeof(T)) == 0;
    CHECK(same);  // prev := next, bit for bit
    if (off) CHECK(std::memcmp(&after[0], &a[k][0], sizeof(T)) == 0);  // nothing outside the view
  }
}

template <class Env, class Config>
void check_advance_model_every_dtype(const Config& cfg, const std::vector<model_shape>& shapes = mixed_shapes()) {
  check_advance_model<Env, float>(cfg, shapes);
  check_advance_model<Env, double>(cfg, shapes);
  check_advance_model<Env, fevo::half>(cfg, shapes);
  check_advance_model<Env, fevo::bfloat16>(cfg, shapes);
}

/// Layers a warp_only tuning (fevo::cuda::experimental::lean and the work queues) can serve:
/// mixed_shapes() with its filter larger than a block's bitset replaced by the largest packed
/// filter a warp's bitset holds (32760 weights).
inline std::vector<model_shape> warp_mode_shapes() {
  std::vector<model_shape> shapes = mixed_shapes();
  for (model_shape& s : shapes)
    if (s.i * s.h * s.w > fevo::cuda::detail::warp_bits) s = {2, 3640, 3, 3, false};
  return shapes;
}

/// Layers the staged kernel can serve: warp mode and packed in every dtype (filters of a multiple
/// of 8 weights, 16-byte aligned): 1x1, 2x2, 3x3 and 7x7, from 72 weights to the largest a warp's
/// bitset holds.
inline std::vector<model_shape> packed_warp_mode_shapes() {
  return {{8, 8, 3, 3, false},  {37, 24, 3, 3, false}, {16, 64, 1, 1, false}, {5, 512, 3, 3, false},
          {3, 16, 7, 7, false}, {2, 3640, 3, 3, false}, {37, 64, 2, 2, false}, {11, 96, 1, 1, false}};
}

/// Float layers of the given OIHW shapes, named l0, l1, ...: prev uniform in [-0.5, 0.5), next
/// equal to prev at every `keep`-th weight and moved by less than 5e-3 elsewhere; on the Env's
/// device (`device`) and on the host (`host`, for fevo::seq).
template <class Env>
struct float_model {
  std::vector<std::vector<float>> prev, next;
  std::vector<std::unique_ptr<typename Env::template buffer<float>>> dprev, dnext;
  std::vector<fevo::layer_pair<float, fevo::device_space>> device;
  std::vector<fevo::layer_pair<float>> host;

  float_model(rng& g, const std::vector<std::array<std::size_t, 4>>& shapes, std::size_t keep)
      : prev(shapes.size()), next(shapes.size()) {
    for (std::size_t k = 0; k < shapes.size(); ++k) {
      const auto& s = shapes[k];
      const std::size_t n = s[0] * s[1] * s[2] * s[3];
      for (std::size_t e = 0; e < n; ++e) {
        prev[k].push_back(float(g.uniform() - 0.5));
        next[k].push_back(e % keep == 0 ? prev[k].back() : prev[k].back() + float((g.uniform() - 0.5) * 1e-2));
      }
      dprev.push_back(std::make_unique<typename Env::template buffer<float>>(prev[k]));
      dnext.push_back(std::make_unique<typename Env::template buffer<float>>(next[k]));
      const std::string name = "l" + std::to_string(k);
      device.push_back(
          {name, fevo::oihw<fevo::device_space>(static_cast<const float*>(dprev[k]->p), s[0], s[1], s[2], s[3]),
           fevo::oihw<fevo::device_space>(static_cast<const float*>(dnext[k]->p), s[0], s[1], s[2], s[3])});
      host.push_back({name, fevo::oihw(static_cast<const float*>(prev[k].data()), s[0], s[1], s[2], s[3]),
                      fevo::oihw(static_cast<const float*>(next[k].data()), s[0], s[1], s[2], s[3])});
    }
  }
};

/// Each layer's S and Z counts as the reference's, D within the core's bound.
inline void check_like(const std::vector<fevo::layer_metrics>& got, const std::vector<fevo::layer_metrics>& ref) {
  REQUIRE(got.size() == ref.size());
  for (std::size_t k = 0; k < ref.size(); ++k) {
    INFO("layer " << k);
    CHECK(got[k].totals.changed == ref[k].totals.changed);
    CHECK(got[k].totals.zero_channels == ref[k].totals.zero_channels);
    CHECK(got[k].D == Approx(ref[k].D).epsilon(1e-12));
  }
}

/// Warp-mode layers of check_same_bits: strided, packed 1x1 and 3x3, up to 32760 weights.
inline std::vector<std::array<std::size_t, 4>> same_bits_shapes() {
  return {{8, 3, 3, 3}, {37, 19, 3, 3}, {16, 64, 1, 1}, {5, 512, 3, 3}, {11, 96, 1, 1}, {2, 3640, 3, 3}};
}
/// The same with packed layers only (float: a multiple of 4 weights a filter): 1x1, 3x3 and 7x7.
inline std::vector<std::array<std::size_t, 4>> packed_bits_shapes() {
  return {{8, 4, 3, 3}, {37, 20, 3, 3}, {16, 64, 1, 1}, {5, 512, 3, 3}, {11, 96, 1, 1}, {3, 4, 7, 7}, {2, 3640, 3, 3}};
}

/// Each layer's totals and D the same bits in `x` as in `y`.
inline void same_bits(const std::vector<fevo::layer_metrics>& x, const std::vector<fevo::layer_metrics>& y) {
  REQUIRE(x.size() == y.size());
  for (std::size_t k = 0; k < x.size(); ++k) {
    INFO("layer " << k);
    CHECK(std::memcmp(&x[k].totals, &y[k].totals, sizeof(fevo::partial)) == 0);
    CHECK(x[k].D == y[k].D);
  }
}

/// Two policies whose tunings differ only in how the kernels run (`a` and `b`) give the same bits on a
/// float model of warp-mode layers of the given shapes: the whole model in one call, and each
/// layer alone with every filter's results and R_ic. Returns the calls made with each policy.
template <class Env, class PolicyA, class PolicyB>
std::size_t check_same_bits(const PolicyA& a, const PolicyB& b,
                            const std::vector<std::array<std::size_t, 4>>& shapes = same_bits_shapes()) {
  rng g = rng_for("same bits");
  const float_model<Env> model(g, shapes, 3);
  const auto same = [](const fevo::layer_metrics& x, const fevo::layer_metrics& y) {
    CHECK(std::memcmp(&x.totals, &y.totals, sizeof(fevo::partial)) == 0);
    CHECK(x.D == y.D);
  };
  const auto got = fevo::compute_layers(a, model.device, 1e-3);
  const auto want = fevo::compute_layers(b, model.device, 1e-3);
  check_like(want, fevo::compute_layers(fevo::seq, model.host, 1e-3));
  REQUIRE(got.size() == want.size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    INFO("layer " << k);
    same(got[k], want[k]);
    fevo::filter_results pa, pb;
    const auto& l = model.device[k];
    same(fevo::compute(a, l.prev, l.next, 1e-3, pa, fevo::with_channel_counts),
         fevo::compute(b, l.prev, l.next, 1e-3, pb, fevo::with_channel_counts));
    CHECK(pa.D == pb.D);
    CHECK(pa.changed == pb.changed);
    CHECK(pa.zero_channels == pb.zero_channels);
    CHECK(pa.nonfinite == pb.nonfinite);
    CHECK(pa.channel_changed == pb.channel_changed);
  }
  return 1 + got.size();
}

/// Repeated compute_layers calls with `pol` on the same layers find their descriptor table on
/// the device (no upload) and give the same bits (a work-queue pass must leave its counter at zero
/// again); another table is uploaded. `shapes`: the model's layers (at least two; by default a 7x7
/// one is not packed).
template <class Env, class Policy>
void check_repeated_calls(const Policy& pol, const std::vector<std::array<std::size_t, 4>>& shapes = {
                                                 {8, 16, 3, 3}, {40, 64, 1, 1}, {3, 5, 7, 7}}) {
  REQUIRE(shapes.size() >= 2);
  rng g = rng_for("repeated calls");
  const float_model<Env> model(g, shapes, 4);
  const auto& layers = model.device;
  const auto ref = fevo::compute_layers(fevo::seq, model.host, 1e-3);
  Env::forget_table();
  const std::size_t before = Env::uploads();
  const auto first = fevo::compute_layers(pol, layers, 1e-3);
  CHECK(Env::uploads() == before + 1);
  check_like(first, ref);
  // The same table: no upload, the same bits.
  for (int rep = 0; rep < 3; ++rep) same_bits(fevo::compute_layers(pol, layers, 1e-3), first);
  CHECK(Env::uploads() == before + 1);
  // Another tau is another table; and back again.
  const auto other = fevo::compute_layers(pol, layers, 1e-2);
  CHECK(Env::uploads() == before + 2);
  CHECK(other[1].totals.changed < first[1].totals.changed);
  same_bits(fevo::compute_layers(pol, layers, 1e-3), first);
  CHECK(Env::uploads() == before + 3);
}

}  // namespace fevo_test
