// The Eigen and xtensor adapters: every view they make addresses the same elements as a view
// written by hand with fevo::strided (or a layout factory), and gives the same metrics.
#include "support.hpp"

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#if defined(FEVO_TEST_HAVE_EIGEN)
#include <fevo/eigen.hpp>
#endif
#if defined(FEVO_TEST_HAVE_XTENSOR)
#include <fevo/xtensor.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor/xstrided_view.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>
#endif

using namespace fevo_test;

namespace {

/// got and want address the same elements at every index. Strides are compared only on axes of
/// extent > 1 (xtensor gives axes of extent 1 the stride 0; either is right).
template <class A, class B>
void check_same_view(const fevo::filter_view<A>& got, const fevo::filter_view<B>& want) {
  REQUIRE(got.extents() == want.extents());
  CHECK(got.data_handle() == want.data_handle());
  for (std::size_t r = 0; r < 4; ++r) {
    INFO("axis " << r);
    if (got.extent(r) > 1) CHECK(got.stride(r) == want.stride(r));
  }
  long long bad = -1;
  long long k = 0;
  for_each_index(want, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
    if (bad < 0 && static_cast<const void*>(&got(i, c, h, w)) != static_cast<const void*>(&want(i, c, h, w)))
      bad = k;
    ++k;
  });
  INFO("first index (in logical order) with a different address: " << bad);
  CHECK(bad == -1);
}

/// The metrics of two pairs of views are bitwise equal (fevo::seq walks the logical order, so
/// the same elements give the same sums).
template <class A, class B, class C, class D>
void check_same_metrics(const fevo::filter_view<A>& p1, const fevo::filter_view<B>& n1,
                        const fevo::filter_view<C>& p2, const fevo::filter_view<D>& n2, double tau) {
  fevo::filter_results r1, r2;
  const auto m1 = fevo::compute(fevo::seq, p1, n1, tau, r1, fevo::with_channel_counts);
  const auto m2 = fevo::compute(fevo::seq, p2, n2, tau, r2, fevo::with_channel_counts);
  CHECK(m1.D == m2.D);
  CHECK(m1.S == m2.S);
  CHECK(m1.Z == m2.Z);
  CHECK(r1.D == r2.D);
  CHECK(r1.channel_changed == r2.channel_changed);
  CHECK(m1.totals.weights == m2.totals.weights);
}

constexpr long long O = 5, I = 3, H = 4, W = 2;

}  // namespace

#if defined(FEVO_TEST_HAVE_EIGEN)

namespace {
template <class Tensor>
void fill(Tensor& t, rng& g) {
  for (Eigen::Index k = 0; k < t.size(); ++k) t.data()[k] = typename Tensor::Scalar(g.normal());
}
}  // namespace

TEST_CASE("eigen: Tensor and TensorMap views equal hand-written strided views", "[adapters][eigen]") {
  rng g = rng_for("eigen");
  INFO("seed=" << seed());

  SECTION("RowMajor Tensor (O, I, H, W): OIHW strides") {
    Eigen::Tensor<float, 4, Eigen::RowMajor> t(O, I, H, W), u(O, I, H, W);
    fill(t, g);
    fill(u, g);
    const auto v = fevo::from_eigen(t);
    STATIC_REQUIRE(std::is_same_v<decltype(v), const fevo::filter_view<float>>);
    const auto want = fevo::strided(t.data(), {O, I, H, W}, {I * H * W, H * W, W, 1LL});
    check_same_view(v, want);
    bool values = true;
    for_each_index(v, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
      values = values && v(i, c, h, w) == t(Eigen::Index(i), Eigen::Index(c), Eigen::Index(h), Eigen::Index(w));
    });
    CHECK(values);
    check_same_metrics(v, fevo::from_eigen(u), want, fevo::oihw(u.data(), O, I, H, W), 0.5);
  }
  SECTION("ColMajor Tensor (O, I, H, W): the first dimension is contiguous") {
    Eigen::Tensor<double, 4> t(O, I, H, W), u(O, I, H, W);  // ColMajor is Eigen's default
    fill(t, g);
    fill(u, g);
    const auto v = fevo::from_eigen(t);
    const auto want = fevo::strided(t.data(), {O, I, H, W}, {1LL, O, O * I, O * I * H});
    check_same_view(v, want);
    bool values = true;
    for_each_index(v, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
      values = values && v(i, c, h, w) == t(Eigen::Index(i), Eigen::Index(c), Eigen::Index(h), Eigen::Index(w));
    });
    CHECK(values);
    check_same_metrics(v, fevo::from_eigen(u), want,
                       fevo::strided(u.data(), {O, I, H, W}, {1LL, O, O * I, O * I * H}), 0.5);
  }
  SECTION("RowMajor Tensor (H, W, I, O) with dims::hwio: a Keras kernel") {
    Eigen::Tensor<float, 4, Eigen::RowMajor> k(H, W, I, O);
    fill(k, g);
    const auto v = fevo::from_eigen(k, fevo::dims::hwio);
    check_same_view(v, fevo::hwio(k.data(), H, W, I, O));
    bool values = true;
    for_each_index(v, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
      values = values && v(i, c, h, w) == k(Eigen::Index(h), Eigen::Index(w), Eigen::Index(c), Eigen::Index(i));
    });
    CHECK(values);
  }
  SECTION("ColMajor Tensor (O, H, W, I) with dims::ohwi") {
    Eigen::Tensor<float, 4> k(O, H, W, I);
    fill(k, g);
    const auto v = fevo::from_eigen(k, fevo::dims::ohwi);
    // ColMajor strides of (O, H, W, I): 1, O, O*H, O*H*W; as (filter, channel, row, col):
    check_same_view(v, fevo::strided(k.data(), {O, I, H, W}, {1LL, O * H * W, O, O * H}));
    bool values = true;
    for_each_index(v, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
      values = values && v(i, c, h, w) == k(Eigen::Index(i), Eigen::Index(h), Eigen::Index(w), Eigen::Index(c));
    });
    CHECK(values);
  }
  SECTION("TensorMap, mutable and const, over raw buffers") {
    std::vector<float> a(std::size_t(O * I * H * W)), b(a.size());
    for (auto& x : a) x = float(g.normal());
    for (auto& x : b) x = float(g.normal());
    Eigen::TensorMap<Eigen::Tensor<float, 4, Eigen::RowMajor>> ma(a.data(), O, I, H, W);
    const std::vector<float>& cb = b;
    Eigen::TensorMap<const Eigen::Tensor<float, 4, Eigen::RowMajor>> mb(cb.data(), O, I, H, W);
    const auto va = fevo::from_eigen(ma);
    const auto vb = fevo::from_eigen(mb);
    STATIC_REQUIRE(std::is_same_v<decltype(va), const fevo::filter_view<float>>);
    STATIC_REQUIRE(std::is_same_v<decltype(vb), const fevo::filter_view<const float>>);
    check_same_view(va, fevo::oihw(a.data(), O, I, H, W));
    check_same_view(vb, fevo::oihw(cb.data(), O, I, H, W));
    check_same_metrics(va, vb, fevo::oihw(a.data(), O, I, H, W), fevo::oihw(cb.data(), O, I, H, W), 0.25);
    // a ColMajor map with dims::hwio: dimensions (H, W, I, O), H contiguous
    Eigen::TensorMap<Eigen::Tensor<float, 4>> mc(a.data(), H, W, I, O);
    check_same_view(fevo::from_eigen(mc, fevo::dims::hwio),
                    fevo::strided(a.data(), {O, I, H, W}, {H * W * I, H * W, 1LL, H}));
  }
  SECTION("const Tensor gives a view of const elements; int indices; Eigen::half") {
    Eigen::Tensor<float, 4, Eigen::RowMajor> t(O, I, H, W);
    fill(t, g);
    const auto& ct = t;
    const auto v = fevo::from_eigen(ct);
    STATIC_REQUIRE(std::is_same_v<decltype(v), const fevo::filter_view<const float>>);
    check_same_view(v, fevo::oihw(t.data(), O, I, H, W));

    Eigen::Tensor<float, 4, Eigen::RowMajor, int> ti(static_cast<int>(O), static_cast<int>(I), static_cast<int>(H), static_cast<int>(W));
    check_same_view(fevo::from_eigen(ti), fevo::oihw(ti.data(), O, I, H, W));

    Eigen::Tensor<Eigen::half, 4, Eigen::RowMajor> th(O, I, H, W);
    for (Eigen::Index k = 0; k < th.size(); ++k) th.data()[k] = Eigen::half(float(g.normal()));
    const auto vh = fevo::from_eigen(th);
    STATIC_REQUIRE(std::is_same_v<decltype(vh), const fevo::filter_view<fevo::half>>);
    CHECK(static_cast<const void*>(vh.data_handle()) == static_cast<const void*>(th.data()));
    bool values = true;
    for_each_index(vh, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
      values = values && vh(i, c, h, w).to_float() ==
                             float(th(Eigen::Index(i), Eigen::Index(c), Eigen::Index(h), Eigen::Index(w)));
    });
    CHECK(values);
  }
}

#endif  // FEVO_TEST_HAVE_EIGEN

#if defined(FEVO_TEST_HAVE_XTENSOR)

namespace {
template <class E>
void fill_x(E& e, rng& g) {
  for (auto& x : e) x = typename E::value_type(g.normal());
}
}  // namespace

TEST_CASE("xtensor: containers and strided views equal hand-written strided views", "[adapters][xtensor]") {
  rng g = rng_for("xtensor");
  INFO("seed=" << seed());
  using shape4 = std::vector<std::size_t>;
  const std::size_t o = std::size_t(O), i = std::size_t(I), h = std::size_t(H), w = std::size_t(W);

  xt::xtensor<float, 4> a = xt::zeros<float>({o, i, h, w});
  xt::xtensor<float, 4> b = xt::zeros<float>({o, i, h, w});
  fill_x(a, g);
  fill_x(b, g);

  SECTION("xtensor and xarray (row-major)") {
    const auto va = fevo::from_xtensor(a);
    STATIC_REQUIRE(std::is_same_v<decltype(va), const fevo::filter_view<float>>);
    check_same_view(va, fevo::oihw(a.data(), O, I, H, W));
    check_same_metrics(va, fevo::from_xtensor(b), fevo::oihw(a.data(), O, I, H, W),
                       fevo::oihw(b.data(), O, I, H, W), 0.5);

    xt::xarray<double> x = xt::zeros<double>(shape4{o, i, h, w});
    fill_x(x, g);
    check_same_view(fevo::from_xtensor(x), fevo::oihw(x.data(), O, I, H, W));

    const xt::xtensor<float, 4>& ca = a;
    const auto vc = fevo::from_xtensor(ca);
    STATIC_REQUIRE(std::is_same_v<decltype(vc), const fevo::filter_view<const float>>);
    check_same_view(vc, fevo::oihw(a.data(), O, I, H, W));

    // Axes of extent 1 (xtensor gives them stride 0).
    xt::xtensor<float, 4> k1 = xt::zeros<float>({std::size_t(6), std::size_t(3), std::size_t(1), std::size_t(1)});
    check_same_view(fevo::from_xtensor(k1), fevo::oihw(k1.data(), 6, 3, 1, 1));
  }
  SECTION("dims::hwio on a (H, W, I, O) xtensor") {
    xt::xtensor<float, 4> k = xt::zeros<float>({h, w, i, o});
    fill_x(k, g);
    const auto v = fevo::from_xtensor(k, fevo::dims::hwio);
    check_same_view(v, fevo::hwio(k.data(), H, W, I, O));
    bool values = true;
    for_each_index(v, [&](std::size_t f, std::size_t c, std::size_t r, std::size_t s) {
      values = values && v(f, c, r, s) == k(r, s, c, f);
    });
    CHECK(values);
  }
  SECTION("xt::view sub-views") {
    // filters 1..2, all channels, rows 1..2, all columns
    auto sub = xt::view(a, xt::range(1, 3), xt::all(), xt::range(1, 3), xt::all());
    const auto v = fevo::from_xtensor(sub);
    check_same_view(v, fevo::strided(a.data() + I * H * W + W, {2LL, I, 2LL, W}, {I * H * W, H * W, W, 1LL}));
    bool values = true;
    for_each_index(v, [&](std::size_t f, std::size_t c, std::size_t r, std::size_t s) {
      values = values && v(f, c, r, s) == sub(f, c, r, s);
    });
    CHECK(values);
    // every other filter, channels 1..2
    auto stepped = xt::view(a, xt::range(0, o, 2), xt::range(1, 3), xt::all(), xt::all());
    check_same_view(fevo::from_xtensor(stepped),
                    fevo::strided(a.data() + H * W, {3LL, 2LL, H, W}, {2 * I * H * W, H * W, W, 1LL}));
    auto stepped_b = xt::view(b, xt::range(0, o, 2), xt::range(1, 3), xt::all(), xt::all());
    check_same_metrics(fevo::from_xtensor(stepped), fevo::from_xtensor(stepped_b),
                       fevo::strided(a.data() + H * W, {3LL, 2LL, H, W}, {2 * I * H * W, H * W, W, 1LL}),
                       fevo::strided(b.data() + H * W, {3LL, 2LL, H, W}, {2 * I * H * W, H * W, W, 1LL}), 0.5);
  }
  SECTION("xt::strided_view") {
    auto sv = xt::strided_view(a, {xt::range(0, 4, 2), xt::all(), xt::all(), xt::range(1, 2)});
    check_same_view(fevo::from_xtensor(sv),
                    fevo::strided(a.data() + 1, {2LL, I, H, 1LL}, {2 * I * H * W, H * W, W, 1LL}));
  }
  SECTION("transposed views") {
    // (O, I, H, W) -> (H, W, I, O): read with dims::hwio it is the original layer again.
    auto t = xt::transpose(a, {2, 3, 1, 0});
    check_same_view(fevo::from_xtensor(t, fevo::dims::hwio), fevo::oihw(a.data(), O, I, H, W));
    // The full reversal (W, H, I, O), read as (filter, channel, row, col) = (W, H, I, O).
    auto r = xt::transpose(a);
    check_same_view(fevo::from_xtensor(r), fevo::strided(a.data(), {W, H, I, O}, {1LL, W, H * W, I * H * W}));
  }
  SECTION("tensors of another dimension, and reversed views, throw") {
    xt::xtensor<float, 3> three = xt::zeros<float>({o, i, h});
    CHECK_THROWS_AS(fevo::from_xtensor(three), fevo::error);
    CHECK_THROWS_WITH(fevo::from_xtensor(three), Catch::Contains("expected a 4-D tensor") && Catch::Contains("3"));
    xt::xarray<float> x3 = xt::zeros<float>(shape4{o, i, h});
    CHECK_THROWS_WITH(fevo::from_xtensor(x3), Catch::Contains("4-D"));
    xt::xarray<float> x5 = xt::zeros<float>(shape4{o, i, h, w, 2});
    CHECK_THROWS_WITH(fevo::from_xtensor(x5), Catch::Contains("4-D"));
    auto reversed = xt::view(a, xt::range(xt::placeholders::_, xt::placeholders::_, -1), xt::all(),
                             xt::all(), xt::all());
    CHECK_THROWS_WITH(fevo::from_xtensor(reversed), Catch::Contains("negative stride"));
  }
}

#endif  // FEVO_TEST_HAVE_XTENSOR
