// The test body every backend runs. Include it from exactly one .cpp per test executable; it runs
// the backends of FEVO_TEST_BACKENDS, a std::tuple of backend types (see backends.hpp) that the
// .cpp may define before including this header (default: fevo_test::host_backends). Each
// TEMPLATE_LIST_TEST_CASE below is instantiated once per backend of the list.
//
// Every result is compared with the plainly written reference of support.hpp: integer counts
// (changed, zero channels, non-finite, R_ic) exactly, S and Z exactly (ratios of exact counts),
// sums of squares within sum_bound() (derived in support.hpp).
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "backends.hpp"
#include "support.hpp"

/// The type list the body is instantiated with: every host backend of this build unless the
/// including .cpp defined its own list first (it may include backends.hpp before doing so).
#ifndef FEVO_TEST_BACKENDS
#define FEVO_TEST_BACKENDS ::fevo_test::host_backends
#endif

namespace fevo_test {

/// The view type backend B computes on for element type T.
template <class B, class T>
using backend_view_t =
    decltype(B::template upload<T>(std::declval<fevo::filter_view<const T>>()).view());

// ---- checks against the reference ---------------------------------------------------------------

inline void check_metrics(const fevo::layer_metrics& m, const reference& ref) {
  CHECK(m.n_filters == ref.N);
  CHECK(m.totals.weights == ref.weights);
  CHECK(m.totals.channels == ref.channels);
  CHECK(m.totals.changed == ref.changed);
  CHECK(m.totals.zero_channels == ref.zero_channels);
  CHECK(m.totals.nonfinite == ref.nonfinite);
  CHECK(m.nonfinite == ref.nonfinite);
  CHECK(m.S == ref.S());
  CHECK(m.Z == ref.Z());
  FEVO_CHECK_SUM(m.totals.sum_sq, ref.sum_sq, ref.weights);
  FEVO_CHECK_SUM(m.D, ref.D_layer(), ref.weights);
  FEVO_CHECK_SUM(m.D_per_weight, ref.D_per_weight(), ref.weights);
}

inline void check_per_filter(const fevo::filter_results& per, const reference& ref, bool with_r) {
  REQUIRE(per.size() == ref.N);
  CHECK(per.channels == ref.C);
  CHECK(per.weights_per_filter == ref.C * ref.HW);
  FEVO_CHECK_SAME(per.changed, ref.changed_i);
  FEVO_CHECK_SAME(per.zero_channels, ref.zero_channels_i);
  FEVO_CHECK_SAME(per.nonfinite, ref.nonfinite_i);
  // D_i is a sum of C*H*W squares (no division); S_i and Z_i are ratios of exact counts.
  const double per_filter = double(ref.C * ref.HW);
  long long bad_D = -1, bad_SZ = -1;
  for (std::size_t i = 0; i < ref.N; ++i) {
    if (bad_D < 0 && !sum_close(per.D[i], ref.D[i], ref.C * ref.HW)) bad_D = (long long)i;
    if (bad_SZ < 0 && (per.S[i] != double(ref.changed_i[i]) / per_filter ||
                       per.Z[i] != double(ref.zero_channels_i[i]) / double(ref.C)))
      bad_SZ = (long long)i;
  }
  std::ostringstream why;
  if (bad_D >= 0)
    why << "first bad D[" << bad_D << "] = " << per.D[std::size_t(bad_D)] << ", reference "
        << double(ref.D[std::size_t(bad_D)]) << ", relative bound " << sum_bound(ref.C * ref.HW);
  INFO(why.str());
  CHECK(bad_D == -1);
  CHECK(bad_SZ == -1);
  if (with_r) {
    FEVO_CHECK_SAME(per.channel_changed, ref.R);
    CHECK(per.R(0, 0) == ref.R[0]);
    CHECK(per.R(ref.N - 1, ref.C - 1) == ref.R[ref.N * ref.C - 1]);
  } else {
    CHECK(per.channel_changed.empty());
    CHECK_THROWS_AS(per.R(0, 0), fevo::error);
  }
}

/// Runs every entry point of backend B on one layer and compares each with the reference:
/// compute() alone, with per-filter results, with channel counts, and the D / S / Z functors.
template <class B, class T>
fevo::layer_metrics check_backend(const fevo::filter_view<const T>& prev_host,
                                  const fevo::filter_view<const T>& next_host, double tau) {
  const reference ref = reference_of(prev_host, next_host, tau);
  const auto prev_up = B::template upload<T>(prev_host);
  const auto next_up = B::template upload<T>(next_host);
  const auto p = prev_up.view();
  const auto n = next_up.view();
  const auto policy = B::policy();

  const fevo::layer_metrics m = fevo::compute(policy, p, n, tau);
  {
    INFO("fevo::compute(policy, prev, next, tau)");
    check_metrics(m, ref);
  }
  {
    INFO("fevo::compute(policy, prev, next, tau, per_filter)");
    fevo::filter_results per;
    check_metrics(fevo::compute(policy, p, n, tau, per), ref);
    check_per_filter(per, ref, false);
  }
  {
    INFO("fevo::compute(policy, prev, next, tau, per_filter, fevo::with_channel_counts), the counts "
         "filled with garbage before (compute does not clear them: it writes each one)");
    fevo::filter_results per;
    per.channel_changed.assign(ref.N * ref.C, 0xdeadbeefu);
    check_metrics(fevo::compute(policy, p, n, tau, per, fevo::with_channel_counts), ref);
    check_per_filter(per, ref, true);
  }
  {
    INFO("the fevo::D, fevo::S and fevo::Z functors");
    FEVO_CHECK_SUM(fevo::D(policy, p, n), ref.D_layer(), ref.weights);
    CHECK(fevo::S(policy, p, n, tau) == m.S);
    CHECK(fevo::Z(policy, p, n, tau) == m.Z);
  }
  return m;
}

// ---- data ------------------------------------------------------------------------------------

/// Builds a layer from values listed in logical (filter, channel, row, col) order.
template <class T>
layer<T> layer_from(const shape& s, layout l, const std::vector<double>& values) {
  REQUIRE(values.size() == s.size());
  layer<T> out = make_layer<T>(s, l);
  std::size_t k = 0;
  for_each_index(out.view, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
    out(i, c, h, w) = make<T>(values[k++]);
  });
  return out;
}

/// Fills two snapshots with changes around tau: whole filters (15%) and channels (30%) that
/// stay within tau (mostly d = 0, also d = +-tau exactly), elsewhere d = 0, +-tau, +-(tau + 1/32)
/// and normal changes over 12 octaves. Half of the weights lie on a grid of 1/32 so that d = tau
/// is exact in every element type when tau = 0.25.
template <class T>
void fill_changes(layer<T>& prev, layer<T>& next, double tau, rng& g) {
  const auto& v = prev.view;
  for (std::size_t i = 0; i < v.extent(0); ++i) {
    const bool frozen_filter = g.chance(0.15);
    for (std::size_t c = 0; c < v.extent(1); ++c) {
      const bool frozen = frozen_filter || g.chance(0.3);
      for (std::size_t h = 0; h < v.extent(2); ++h)
        for (std::size_t w = 0; w < v.extent(3); ++w) {
          const double p = g.chance(0.5) ? double(int(g.below(201)) - 100) / 32
                                         : g.normal() * std::ldexp(1.0, int(g.below(10)) - 6);
          const double u = g.uniform();
          double d;
          if (frozen)
            d = u < 0.6 ? 0.0 : u < 0.8 ? g.sign() * tau : g.sign() * g.uniform() * tau;
          else
            d = u < 0.2   ? 0.0
                : u < 0.3 ? g.sign() * tau
                : u < 0.4 ? g.sign() * (tau + 1.0 / 32)
                          : g.normal() * std::ldexp(1.0, int(g.below(13)) - 10);
          prev(i, c, h, w) = make<T>(p);
          next(i, c, h, w) = make<T>(p + d);
        }
    }
  }
}

inline double pick_tau(rng& g) {
  const double u = g.uniform();
  return u < 0.6 ? 0.25 : u < 0.7 ? 0.0 : u < 0.85 ? 1e-3 : 0.1;
}

/// Shapes with 1s, 1x1, 3x3, 5x5, 7x7 kernels, N and C in {1, 2^k-1, 2^k, 2^k+1}; C = 64;
/// C*H*W > 4096 with 3x3 (several runs per filter); H*W = 4096 (one channel per run) and
/// H*W > 4096 (channels longer than a run); long rows (W >= 8, W > 4096).
inline std::vector<shape> property_shapes() {
  return {{1, 1, 1, 1},   {1, 1, 3, 3},   {2, 3, 1, 1},    {7, 9, 1, 1},    {8, 16, 1, 1},
          {9, 33, 1, 1},  {33, 17, 1, 1}, {1, 64, 1, 1},   {9, 7, 3, 3},    {16, 8, 3, 3},
          {17, 33, 3, 3}, {31, 32, 3, 3}, {8, 64, 3, 3},   {65, 3, 3, 3},   {3, 4, 5, 5},
          {32, 31, 1, 1}, {15, 65, 1, 1}, {4, 63, 3, 3},
          {5, 15, 7, 7},  {4, 1, 7, 7},   {2, 3, 1, 9},    {3, 2, 5, 1},    {3, 520, 3, 3},
          {2, 2, 64, 64}, {2, 2, 70, 70}, {1, 2, 1, 4097}, {2, 1, 1, 4500}, {3, 21, 2, 2},
          {3, 5, 8, 8},   {5, 11, 2, 4},  {4, 13, 4, 4},   {6, 10, 2, 5},   {3, 12, 3, 4},
          {3, 9, 3, 7},   {2, 130, 2, 1}, {3, 128, 2, 2}, {1, 4100, 1, 2}, {1, 4160, 2, 1},
          {5, 16, 2, 2},  {7, 2, 4, 8},   {2100, 2, 1, 1}};  // the last: HWIO blocks of max_lane_block filters
  // (The 2x4 to 3x7 ones: channels of 8 to 21 weights, 3 to 8 of them in each 64-bit window of
  // changed bits that the packed walk takes Z and R_ic out of. From 2x130x2x1 to 1x4160x2x1: OHWI
  // positions of the interleaved walk that end inside a 64-bit word or on one, of one word or
  // several, and positions longer than a run, of whole words or not. 9x7x3x3, 65x3x3x3, 2x3x1x9,
  // 3x2x5x1, 5x16x2x2 and 7x2x4x8: OHWI filters of at most 64 weights, one word each, fold_small.)
}

struct layout_pair {
  layout prev, next;
};
/// Same layouts, and prev and next in different layouts.
inline const std::vector<layout_pair>& layout_pairs() {
  using L = layout;
  static const std::vector<layout_pair> pairs{
      {L::oihw, L::oihw},         {L::hwio, L::hwio},          {L::ohwi, L::ohwi},
      {L::iohw, L::iohw},         {L::padded, L::padded},      {L::oihw, L::hwio},
      {L::ohwi, L::padded},       {L::gapped, L::oihw},        {L::sliced_oihw, L::sliced_hwio},
      {L::padded, L::gapped},     {L::sliced_hwio, L::ohwi},   {L::hwio, L::sliced_oihw},
  };
  return pairs;
}

}  // namespace fevo_test

// ---- hand-computed fixtures ----------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("backend: hand-computed layers", "[backend][fixture]", FEVO_TEST_BACKENDS) {
  using namespace fevo_test;
  using B = TestType;
  const backend_scope<B> scope_;
  INFO("backend " << B::name << ", seed=" << seed() << " (the fixtures do not depend on it)");
  const auto policy = B::policy();
  using L = layout;
  const layout_pair pairs[] = {{L::oihw, L::oihw}, {L::hwio, L::ohwi}, {L::gapped, L::sliced_oihw}};

  for_each_element_type([&](auto tg) {
    using T = typename decltype(tg)::type;
    for (const layout_pair lp : pairs) {
      INFO("element type " << type_name<T>() << ", layouts " << name(lp.prev) << " / " << name(lp.next));
      {
        // N=2 filters, C=2 channels, H=1, W=2, tau = 0.5; values in (i, c, h, w) order, all exact
        // in every element type.
        const shape s{2, 2, 1, 2};
        const auto prev = layer_from<T>(s, lp.prev, {1.0, -2.0, 0.25, 3.0, -1.0, 0.5, 2.0, -0.5});
        const auto next = layer_from<T>(s, lp.next, {1.5, -2.0, 1.25, 2.25, -1.0, 0.5, 1.5, -0.25});
        // d = next - prev:  filter 0: channel 0 {0.5, 0}   channel 1 {1, -0.75}
        //                   filter 1: channel 0 {0, 0}     channel 1 {-0.5, 0.25}
        // |d| > 0.5 (0.5 itself is not): R_00 = 0, R_01 = 2, R_10 = 0, R_11 = 0
        // D_0 = 0.25 + 0 + 1 + 0.5625 = 1.8125    D_1 = 0 + 0 + 0.25 + 0.0625 = 0.3125
        // D   = (1.8125 + 0.3125) / 2 = 1.0625    (dyadic: exact in any summation order)
        // S   = (2 + 0) / (2 * 4) = 0.25          S_0 = 2/4 = 0.5,  S_1 = 0
        // Z   = (1 + 2) / (2 * 2) = 0.75          Z_0 = 1/2 = 0.5,  Z_1 = 2/2 = 1
        const double tau = 0.5;
        const reference ref = reference_of(prev.cview(), next.cview(), tau);
        CHECK(ref.D_layer() == 1.0625);  // the reference agrees with the hand computation
        CHECK(ref.R == std::vector<std::uint32_t>{0, 2, 0, 0});

        fevo::filter_results per;
        const auto m = fevo::compute(policy, B::template upload<T>(prev.cview()).view(),
                                     B::template upload<T>(next.cview()).view(), tau, per,
                                     fevo::with_channel_counts);
        CHECK(m.D == 1.0625);
        CHECK(m.S == 0.25);
        CHECK(m.Z == 0.75);
        CHECK(m.nonfinite == 0);
        CHECK(m.n_filters == 2);
        CHECK(per.D == std::vector<double>{1.8125, 0.3125});
        CHECK(per.changed == std::vector<std::uint64_t>{2, 0});
        CHECK(per.zero_channels == std::vector<std::uint64_t>{1, 2});
        CHECK(per.channel_changed == std::vector<std::uint32_t>{0, 2, 0, 0});
        CHECK(per.S[0] == 0.5);
        CHECK(per.S[1] == 0.0);
        CHECK(per.Z[0] == 0.5);
        CHECK(per.Z[1] == 1.0);
        check_backend<B, T>(prev.cview(), next.cview(), tau);
      }
      {
        // One 3x3 filter: prev(h, w) = h - w, and
        //   d = [ 0.5  -0.5  0.75 ]
        //       [ 0     1   -2    ]
        //       [ 0.25  0.5  3    ]
        // D = 0.25 + 0.25 + 0.5625 + 0 + 1 + 4 + 0.0625 + 0.25 + 9 = 15.375 for every tau (N = 1).
        // tau = 0.5:  |d| > 0.5 for 0.75, 1, -2, 3           -> S = 4/9, Z = 0 (R = 4)
        // tau = 0.75: 1, -2, 3 (0.75 itself is not)           -> S = 3/9, Z = 0
        // tau = 2.5:  3                                       -> S = 1/9, Z = 0
        // tau = 3:    none (3 itself is not)                  -> S = 0,   Z = 1
        // tau = 0:    all but the one d = 0                   -> S = 8/9, Z = 0
        const shape s{1, 1, 3, 3};
        const std::vector<double> p{0, -1, -2, 1, 0, -1, 2, 1, 0};
        const std::vector<double> d{0.5, -0.5, 0.75, 0, 1, -2, 0.25, 0.5, 3};
        std::vector<double> nx(9);
        for (std::size_t k = 0; k < 9; ++k) nx[k] = p[k] + d[k];
        const auto prev = layer_from<T>(s, lp.prev, p);
        const auto next = layer_from<T>(s, lp.next, nx);
        const struct {
          double tau, S, Z;
          std::uint32_t R;
        } cases[] = {{0.5, 4.0 / 9, 0, 4}, {0.75, 3.0 / 9, 0, 3}, {2.5, 1.0 / 9, 0, 1},
                     {3.0, 0, 1, 0},       {0.0, 8.0 / 9, 0, 8}};
        for (const auto& k : cases) {
          INFO("tau = " << k.tau);
          fevo::filter_results per;
          const auto m = fevo::compute(policy, B::template upload<T>(prev.cview()).view(),
                                       B::template upload<T>(next.cview()).view(), k.tau, per,
                                       fevo::with_channel_counts);
          CHECK(m.D == 15.375);
          CHECK(m.S == k.S);
          CHECK(m.Z == k.Z);
          CHECK(per.R(0, 0) == k.R);
          check_backend<B, T>(prev.cview(), next.cview(), k.tau);
        }
      }
      {
        // Non-finite changes: N=4, C=2, 1x1, tau = 0.5.
        //   filter 0: d = {NaN, 1}          changed 2, zero channels 0, non-finite 1, D_0 = NaN
        //   filter 1: d = {0, +Inf}         changed 1, zero channels 1, non-finite 1, D_1 = +Inf
        //   filter 2: d = {0, -Inf}         changed 1, zero channels 1, non-finite 1, D_2 = +Inf
        //   filter 3: d = {Inf - Inf, 0}    changed 1, zero channels 1, non-finite 1, D_3 = NaN
        // S = 5/8, Z = 3/8, 4 non-finite, D = NaN.
        const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
        const shape s{4, 2, 1, 1};
        const auto prev = layer_from<T>(s, lp.prev, {0, 0, 0, 0, 0, 0, inf, 2});
        const auto next = layer_from<T>(s, lp.next, {nan, 1, 0, inf, 0, -inf, inf, 2});
        fevo::filter_results per;
        const auto m = fevo::compute(policy, B::template upload<T>(prev.cview()).view(),
                                     B::template upload<T>(next.cview()).view(), 0.5, per);
        CHECK(std::isnan(m.D));
        CHECK(m.S == 5.0 / 8);
        CHECK(m.Z == 3.0 / 8);
        CHECK(m.nonfinite == 4);
        CHECK(per.changed == std::vector<std::uint64_t>{2, 1, 1, 1});
        CHECK(per.zero_channels == std::vector<std::uint64_t>{0, 1, 1, 1});
        CHECK(per.nonfinite == std::vector<std::uint64_t>{1, 1, 1, 1});
        CHECK(std::isnan(per.D[0]));
        CHECK(per.D[1] == inf);
        CHECK(per.D[2] == inf);
        CHECK(std::isnan(per.D[3]));
        check_backend<B, T>(prev.cview(), next.cview(), 0.5);
      }
      {
        // Large finite changes: prev = {0, 0}, next = {b, -b}, tau = 1, with b the largest value
        // each type stores here (1e30 for float and bfloat16, whose squares overflow float;
        // 65504 for half; 1e150 for double). d^2 is accumulated in double, so
        // D = 2 * b^2 exactly (b^2 is exact for a float b; for double both terms round alike).
        const double big = std::is_same_v<T, fevo::half> ? 65504.0 : std::is_same_v<T, double> ? 1e150 : 1e30;
        const double b = double(value(make<T>(big)));
        const auto prev = layer_from<T>({1, 1, 1, 2}, lp.prev, {0, 0});
        const auto next = layer_from<T>({1, 1, 1, 2}, lp.next, {big, -big});
        const auto m = fevo::compute(policy, B::template upload<T>(prev.cview()).view(),
                                     B::template upload<T>(next.cview()).view(), 1.0);
        CHECK(m.D == 2 * (b * b));
        CHECK(std::isfinite(m.D));
        CHECK(m.nonfinite == 0);
        CHECK(m.S == 1.0);
        check_backend<B, T>(prev.cview(), next.cview(), 1.0);
      }
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
        // Squares summed exactly in double (README, "Exact semantics"): N=2 filters of 2 channels
        // of 4x8, prev = 0, every d = 1 + 2^-12. d^2 = 1 + 2^-11 + 2^-24 needs 25 bits: exact in
        // double, not in float (where it rounds to 1 + 2^-11).
        //   D = (2 * 64 * (1 + 2^-11 + 2^-24)) / 2 = 64 + 2^-5 + 2^-18 = 64.031253814697265625,
        // exact in double, in any summation order. A backend that documents float squares on a
        // vector path (fevo::cpu, D_relative_error) gives 64 + 2^-5 = 64.03125 here: within its
        // bound, and that is what is checked for it.
        // (Not for half and bfloat16: their d has at most 11 bits, so d^2 is exact in float.)
        const shape s{2, 2, 4, 8};
        const auto prev = layer_from<T>(s, lp.prev, std::vector<double>(s.size(), 0.0));
        const auto next = layer_from<T>(s, lp.next, std::vector<double>(s.size(), 1.0 + 0x1p-12));
        fevo::filter_results per;
        const auto m = fevo::compute(policy, B::template upload<T>(prev.cview()).view(),
                                     B::template upload<T>(next.cview()).view(), 0.5, per);
        const double D_alone = fevo::D(policy, B::template upload<T>(prev.cview()).view(),
                                       B::template upload<T>(next.cview()).view());
        const double exact = 64.031253814697265625;
        if (B::d_relative_slack == 0 || std::is_same_v<T, double>) {
          CHECK(m.D == exact);
          CHECK(per.D == std::vector<double>{exact, exact});
          CHECK(D_alone == exact);
        } else {
          const double tol = B::d_relative_slack * exact;
          CHECK(std::fabs(m.D - exact) <= tol);
          CHECK(std::fabs(per.D[0] - exact) <= tol);
          CHECK(std::fabs(per.D[1] - exact) <= tol);
          CHECK(std::fabs(D_alone - exact) <= tol);
        }
        CHECK(m.S == 1.0);
      }
      if constexpr (!std::is_same_v<T, fevo::half>) {
        // Changes that overflow the compute type: prev = {-b, b}, next = {b, -b} with
        // b = 3e38 (float, bfloat16) or 1e308 (double): d = +-2b = +-Inf, both non-finite and
        // changed; D = +Inf. (Not possible for half: 2 * 65504 is finite in float.)
        const double big = std::is_same_v<T, double> ? 1e308 : 3e38;
        const auto prev = layer_from<T>({1, 2, 1, 1}, lp.prev, {-big, big});
        const auto next = layer_from<T>({1, 2, 1, 1}, lp.next, {big, -big});
        const auto m = fevo::compute(policy, B::template upload<T>(prev.cview()).view(),
                                     B::template upload<T>(next.cview()).view(), 1.0);
        CHECK(m.D == std::numeric_limits<double>::infinity());
        CHECK(m.nonfinite == 2);
        CHECK(m.S == 1.0);
        CHECK(m.Z == 0.0);
        check_backend<B, T>(prev.cview(), next.cview(), 1.0);
      }
    }
  });
}

// ---- random layers ------------------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("backend: random layers in every layout against the reference",
                        "[backend][random]", FEVO_TEST_BACKENDS) {
  using namespace fevo_test;
  using B = TestType;
  const backend_scope<B> scope_;
  rng g = rng_for("random layers");
  INFO("backend " << B::name << ", seed=" << seed());
  const auto shapes = property_shapes();
  const auto& pairs = layout_pairs();
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    const shape s = shapes[k];
    // Small layers in every layout pair; the large ones in four pairs, rotating.
    const std::size_t n_pairs = s.size() <= 4096 ? pairs.size() : 4;
    for (std::size_t j = 0; j < n_pairs; ++j) {
      const layout_pair lp = pairs[(k + j) % pairs.size()];
      for_each_element_type([&](auto tg) {
        using T = typename decltype(tg)::type;
        const double tau = pick_tau(g);
        auto prev = make_layer<T>(s, lp.prev);
        auto next = make_layer<T>(s, lp.next);
        fill_changes(prev, next, tau, g);
        INFO(s << ", " << type_name<T>() << ", layouts " << name(lp.prev) << " / " << name(lp.next)
               << ", tau = " << tau);
        check_backend<B, T>(prev.cview(), next.cview(), tau);
      });
    }
  }
}

TEMPLATE_LIST_TEST_CASE("backend: unchanged weights give D = 0, S = 0, Z = 1",
                        "[backend][constant]", FEVO_TEST_BACKENDS) {
  using namespace fevo_test;
  using B = TestType;
  const backend_scope<B> scope_;
  rng g = rng_for("unchanged weights");
  INFO("backend " << B::name << ", seed=" << seed());
  using L = layout;
  const shape shapes[] = {{1, 1, 1, 1}, {9, 7, 3, 3}, {33, 17, 1, 1}, {3, 520, 3, 3}, {2, 2, 70, 70}, {2, 1, 1, 4500}};
  const layout_pair pairs[] = {{L::oihw, L::hwio}, {L::padded, L::gapped}, {L::sliced_oihw, L::iohw}};
  for (const shape& s : shapes)
    for (const layout_pair lp : pairs)
      for_each_element_type([&](auto tg) {
        using T = typename decltype(tg)::type;
        for (const bool one_value : {true, false})
          for (const double tau : {0.0, 0.25}) {
            INFO(s << ", " << type_name<T>() << ", layouts " << name(lp.prev) << " / "
                   << name(lp.next) << ", tau = " << tau
                   << (one_value ? ", one value everywhere" : ", random values, next = prev"));
            auto prev = make_layer<T>(s, lp.prev);
            auto next = make_layer<T>(s, lp.next);
            const double c = g.normal();
            for_each_index(prev.view, [&](std::size_t i, std::size_t ch, std::size_t h, std::size_t w) {
              prev(i, ch, h, w) = next(i, ch, h, w) = make<T>(one_value ? c : g.normal());
            });
            fevo::filter_results per;
            const auto m = fevo::compute(B::policy(), B::template upload<T>(prev.cview()).view(),
                                         B::template upload<T>(next.cview()).view(), tau, per);
            CHECK(m.D == 0.0);
            CHECK(m.S == 0.0);
            CHECK(m.Z == 1.0);
            CHECK(m.nonfinite == 0);
            CHECK(per.D == std::vector<double>(s.N, 0.0));
            CHECK(per.zero_channels == std::vector<std::uint64_t>(s.N, s.C));
            check_backend<B, T>(prev.cview(), next.cview(), tau);
          }
      });

  // A view with all strides 0 (one value seen at every index) as prev.
  for_each_element_type([&](auto tg) {
    using T = typename decltype(tg)::type;
    const shape s{5, 6, 3, 3};
    const T one = make<T>(0.75);
    const auto prev = fevo::strided(&one, {s.N, s.C, s.H, s.W}, {0, 0, 0, 0});
    auto same = make_layer<T>(s, L::oihw);
    auto moved = make_layer<T>(s, L::hwio);
    for_each_index(same.view, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
      same(i, c, h, w) = one;
      moved(i, c, h, w) = make<T>(g.chance(0.5) ? 0.75 : g.normal());
    });
    INFO(type_name<T>() << ", prev with strides {0, 0, 0, 0}");
    const auto m = check_backend<B, T>(prev, same.cview(), 0.0);
    CHECK(m.D == 0.0);
    CHECK(m.Z == 1.0);
    check_backend<B, T>(prev, moved.cview(), 0.25);
  });
}

TEMPLATE_LIST_TEST_CASE("backend: NaN and Inf at the first, last and a random weight",
                        "[backend][nonfinite]", FEVO_TEST_BACKENDS) {
  using namespace fevo_test;
  using B = TestType;
  const backend_scope<B> scope_;
  rng g = rng_for("NaN and Inf");
  INFO("backend " << B::name << ", seed=" << seed());
  using L = layout;
  const shape shapes[] = {{4, 3, 1, 1}, {5, 7, 3, 3}, {17, 33, 3, 3}, {3, 520, 3, 3}, {2, 2, 70, 70}, {2, 1, 1, 4500}};
  const layout_pair pairs[] = {{L::oihw, L::oihw}, {L::hwio, L::padded}, {L::gapped, L::sliced_hwio}};
  const double inf = std::numeric_limits<double>::infinity();
  for (const shape& s : shapes)
    for (const layout_pair lp : pairs)
      for_each_element_type([&](auto tg) {
        using T = typename decltype(tg)::type;
        struct at {
          std::size_t i, c, h, w;
        };
        const at first{0, 0, 0, 0}, last{s.N - 1, s.C - 1, s.H - 1, s.W - 1};
        at mid;
        do {  // a random weight other than the first and the last (every shape here has >= 12)
          mid = {g.below(s.N), g.below(s.C), g.below(s.H), g.below(s.W)};
        } while ((mid.i == 0 && mid.c == 0 && mid.h == 0 && mid.w == 0) ||
                 (mid.i == last.i && mid.c == last.c && mid.h == last.h && mid.w == last.w));
        for (const bool with_nan : {true, false}) {
          auto prev = make_layer<T>(s, lp.prev);
          auto next = make_layer<T>(s, lp.next);
          const double tau = 0.25;
          fill_changes(prev, next, tau, g);
          // With NaN: NaN, +Inf, -Inf, each in prev or next at random. Without: +Inf, -Inf, +Inf
          // in next only, so that every non-finite d is an infinity and D = +Inf.
          const double bad[3] = {with_nan ? std::nan("") : inf, with_nan ? inf : -inf, with_nan ? -inf : inf};
          const at where[3] = {first, last, mid};
          for (int k = 0; k < 3; ++k) {
            auto& target = (with_nan && g.chance(0.5)) ? prev : next;
            target(where[k].i, where[k].c, where[k].h, where[k].w) = make<T>(bad[k]);
          }
          INFO(s << ", " << type_name<T>() << ", layouts " << name(lp.prev) << " / " << name(lp.next)
                 << (with_nan ? ", NaN and infinities" : ", infinities only") << ", random weight at ("
                 << mid.i << ", " << mid.c << ", " << mid.h << ", " << mid.w << ")");
          const auto m = check_backend<B, T>(prev.cview(), next.cview(), tau);
          CHECK(m.nonfinite == 3);
          CHECK(m.totals.changed >= 3);
          if (with_nan)
            CHECK(std::isnan(m.D));
          else
            CHECK(m.D == inf);
        }
      });
}

TEMPLATE_LIST_TEST_CASE("backend: huge finite changes stay finite in D", "[backend][huge]",
                        FEVO_TEST_BACKENDS) {
  using namespace fevo_test;
  using B = TestType;
  const backend_scope<B> scope_;
  rng g = rng_for("huge changes");
  INFO("backend " << B::name << ", seed=" << seed());
  using L = layout;
  const shape shapes[] = {{5, 7, 3, 3}, {3, 520, 3, 3}, {2, 2, 70, 70}, {2, 3, 1, 9}};
  const layout_pair pairs[] = {{L::oihw, L::oihw}, {L::padded, L::hwio}, {L::gapped, L::gapped}};
  for (const shape& s : shapes)
    for (const layout_pair lp : pairs)
      for_each_element_type([&](auto tg) {
        using T = typename decltype(tg)::type;
        // 1% of the weights move by +-big, whose square overflows float (not half: 65504).
        const double big = std::is_same_v<T, fevo::half> ? 65504.0 : std::is_same_v<T, double> ? 1e150 : 1e30;
        auto prev = make_layer<T>(s, lp.prev);
        auto next = make_layer<T>(s, lp.next);
        fill_changes(prev, next, 0.25, g);
        for_each_index(prev.view, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
          if (g.chance(0.01)) {
            prev(i, c, h, w) = make<T>(0.0);
            next(i, c, h, w) = make<T>(g.sign() * big);
          }
        });
        next(0, 0, 0, 0) = make<T>(big);  // at least one
        prev(0, 0, 0, 0) = make<T>(0.0);
        INFO(s << ", " << type_name<T>() << ", layouts " << name(lp.prev) << " / " << name(lp.next));
        const auto m = check_backend<B, T>(prev.cview(), next.cview(), 0.25);
        CHECK(std::isfinite(m.D));
        CHECK(m.D >= big * big / double(s.N));
        CHECK(m.nonfinite == 0);
      });
}

TEMPLATE_LIST_TEST_CASE("backend: tiny changes whose squares underflow float are still summed",
                        "[backend][tiny]", FEVO_TEST_BACKENDS) {
  using namespace fevo_test;
  using B = TestType;
  const backend_scope<B> scope_;
  rng g = rng_for("tiny changes");
  INFO("backend " << B::name << ", seed=" << seed());
  using L = layout;
  const shape shapes[] = {{5, 7, 3, 3}, {3, 520, 3, 3}, {2, 2, 70, 70}, {4, 3, 1, 1}};
  const layout_pair pairs[] = {{L::oihw, L::oihw}, {L::hwio, L::padded}};
  for (const shape& s : shapes)
    for (const layout_pair lp : pairs)
      for_each_element_type([&](auto tg) {
        using T = typename decltype(tg)::type;
        // Changes of 2^-80 .. 2^-60 (float, bfloat16: squares 2^-160 .. 2^-120 underflow or are
        // subnormal in float), subnormal halves 2^-24 .. 2^-15, and 2^-520 .. 2^-500 for double
        // (squares still normal in double). prev = 0 so that next holds the change exactly.
        const int top = std::is_same_v<T, fevo::half> ? -15 : std::is_same_v<T, double> ? -500 : -60;
        const int span = std::is_same_v<T, fevo::half> ? 9 : 20;
        for (const bool with_one_larger : {false, true}) {
          auto prev = make_layer<T>(s, lp.prev);
          auto next = make_layer<T>(s, lp.next);
          for_each_index(prev.view, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
            prev(i, c, h, w) = make<T>(0.0);
            next(i, c, h, w) =
                make<T>(g.chance(0.2) ? 0.0 : g.sign() * std::ldexp(1.0, top - int(g.below(std::size_t(span) + 1))));
          });
          // One change per filter 2^10 larger than the largest tiny one.
          if (with_one_larger)
            for (std::size_t i = 0; i < s.N; ++i) next(i, 0, 0, 0) = make<T>(std::ldexp(1.0, top + 10));
          INFO(s << ", " << type_name<T>() << ", layouts " << name(lp.prev) << " / " << name(lp.next)
                 << (with_one_larger ? ", one larger change per filter" : ", only tiny changes"));
          const auto m = check_backend<B, T>(prev.cview(), next.cview(), 0.0);
          CHECK(m.D > 0.0);
        }
      });
}

// ---- several layers, shards ----------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("backend: compute_layers equals compute on each layer", "[backend][layers]",
                        FEVO_TEST_BACKENDS) {
  using namespace fevo_test;
  using B = TestType;
  const backend_scope<B> scope_;
  rng g = rng_for("compute_layers");
  INFO("backend " << B::name << ", seed=" << seed());
  using L = layout;
  const struct {
    shape s;
    layout prev, next;
    const char* name;
  } specs[] = {{{4, 3, 3, 3}, L::oihw, L::oihw, "conv1"},      {{8, 4, 1, 1}, L::hwio, L::ohwi, "conv2"},
               {{2, 5, 7, 7}, L::padded, L::gapped, "conv3"},  {{3, 2, 70, 70}, L::sliced_oihw, L::oihw, ""},
               {{1, 1, 1, 1}, L::oihw, L::oihw, "tiny"},        {{17, 33, 3, 3}, L::iohw, L::sliced_hwio, "conv6"},
               {{3, 520, 3, 3}, L::oihw, L::ohwi, "wide"}};
  const auto policy = B::policy();
  for_each_element_type([&](auto tg) {
    using T = typename decltype(tg)::type;
    using view_t = backend_view_t<B, T>;
    using pair_t = fevo::layer_pair<T, typename view_t::memory_space>;
    INFO(type_name<T>());
    const double tau = 0.25;
    std::vector<layer<T>> prevs, nexts;
    std::vector<decltype(B::template upload<T>(std::declval<fevo::filter_view<const T>>()))> ups;
    std::vector<pair_t> pairs;
    for (const auto& sp : specs) {
      prevs.push_back(make_layer<T>(sp.s, sp.prev));
      nexts.push_back(make_layer<T>(sp.s, sp.next));
      fill_changes(prevs.back(), nexts.back(), tau, g);
    }
    ups.reserve(2 * prevs.size());
    for (std::size_t k = 0; k < prevs.size(); ++k) {
      ups.push_back(B::template upload<T>(prevs[k].cview()));
      ups.push_back(B::template upload<T>(nexts[k].cview()));
      pairs.push_back(pair_t{specs[k].name, ups[2 * k].view(), ups[2 * k + 1].view()});
    }
    const std::vector<fevo::layer_metrics> all = fevo::compute_layers(policy, pairs, tau);
    std::vector<fevo::filter_results> per;
    const std::vector<fevo::layer_metrics> all_per = fevo::compute_layers(policy, pairs, tau, &per);
    REQUIRE(all.size() == pairs.size());
    REQUIRE(all_per.size() == pairs.size());
    REQUIRE(per.size() == pairs.size());
    for (std::size_t k = 0; k < pairs.size(); ++k) {
      INFO("layer " << k << " " << specs[k].s);
      const reference ref = reference_of(prevs[k].cview(), nexts[k].cview(), tau);
      check_metrics(all[k], ref);
      check_metrics(all_per[k], ref);
      check_per_filter(per[k], ref, false);
      const fevo::layer_metrics one = fevo::compute(policy, pairs[k].prev, pairs[k].next, tau);
      CHECK(one.totals.changed == all[k].totals.changed);
      CHECK(one.totals.zero_channels == all[k].totals.zero_channels);
      CHECK(one.totals.nonfinite == all[k].totals.nonfinite);
      CHECK(one.S == all[k].S);
      CHECK(one.Z == all[k].Z);
    }
    CHECK(fevo::compute_layers(policy, std::vector<pair_t>{}, tau).empty());
  });
}

// A series of snapshots as a training run or `fevo analyze` passes it: one compute_layers call
// over consecutive pairs (each snapshot is next of one pair and prev of the following) and pairs
// against a fixed reference, so that tasks share buffers, next to a layer that shares nothing.
TEMPLATE_LIST_TEST_CASE("backend: compute_layers over a snapshot series whose pairs share snapshots",
                        "[backend][layers][series]", FEVO_TEST_BACKENDS) {
  using namespace fevo_test;
  using B = TestType;
  const backend_scope<B> scope_;
  rng g = rng_for("snapshot series");
  INFO("backend " << B::name << ", seed=" << seed());
  const shape shapes[] = {{300, 64, 3, 3}, {130, 40, 1, 1}};  // several blocks per task; one
  constexpr std::size_t snapshots = 4;
  const double tau = 0.25;
  const auto policy = B::policy();
  for_each_element_type([&](auto tg) {
    using T = typename decltype(tg)::type;
    using view_t = backend_view_t<B, T>;
    using pair_t = fevo::layer_pair<T, typename view_t::memory_space>;
    INFO(type_name<T>());
    // series[l][k]: snapshot k of layer l, each the one before plus changes around tau.
    std::vector<std::vector<layer<T>>> series(std::size(shapes));
    for (std::size_t l = 0; l < std::size(shapes); ++l) {
      layer<T> from = make_layer<T>(shapes[l], layout::oihw);
      series[l].push_back(make_layer<T>(shapes[l], layout::oihw));
      fill_changes(from, series[l][0], tau, g);
      for (std::size_t k = 1; k < snapshots; ++k) {
        layer<T> a = make_layer<T>(shapes[l], layout::oihw), b = make_layer<T>(shapes[l], layout::oihw);
        fill_changes(a, b, tau, g);
        layer<T> next = make_layer<T>(shapes[l], layout::oihw);
        for_each_index(next.view, [&](std::size_t i, std::size_t c, std::size_t h, std::size_t w) {
          next(i, c, h, w) = make<T>(double(value(series[l][k - 1](i, c, h, w))) +
                                     (double(value(b(i, c, h, w))) - double(value(a(i, c, h, w)))));
        });
        series[l].push_back(std::move(next));
      }
    }
    layer<T> lone_prev = make_layer<T>({17, 33, 3, 3}, layout::hwio);
    layer<T> lone_next = make_layer<T>({17, 33, 3, 3}, layout::oihw);
    fill_changes(lone_prev, lone_next, tau, g);

    std::vector<decltype(B::template upload<T>(std::declval<fevo::filter_view<const T>>()))> ups;
    ups.reserve(std::size(shapes) * snapshots + 2);
    for (const auto& layer_series : series)
      for (const auto& snap : layer_series) ups.push_back(B::template upload<T>(snap.cview()));
    ups.push_back(B::template upload<T>(lone_prev.cview()));
    ups.push_back(B::template upload<T>(lone_next.cview()));
    const auto up = [&](std::size_t l, std::size_t k) { return ups[l * snapshots + k].view(); };

    std::vector<pair_t> pairs;
    std::vector<std::pair<const layer<T>*, const layer<T>*>> host;  // the same pairs on the host
    for (std::size_t k = 1; k < snapshots; ++k)      // consecutive pairs, pair by pair
      for (std::size_t l = 0; l < std::size(shapes); ++l) {
        pairs.push_back(pair_t{"", up(l, k - 1), up(l, k)});
        host.emplace_back(&series[l][k - 1], &series[l][k]);
      }
    pairs.push_back(pair_t{"lone", ups[ups.size() - 2].view(), ups.back().view()});
    host.emplace_back(&lone_prev, &lone_next);
    for (std::size_t k = 1; k < snapshots; ++k)      // against the reference, snapshot 0
      for (std::size_t l = 0; l < std::size(shapes); ++l) {
        pairs.push_back(pair_t{"", up(l, 0), up(l, k)});
        host.emplace_back(&series[l][0], &series[l][k]);
      }

    std::vector<fevo::filter_results> per;
    const std::vector<fevo::layer_metrics> all = fevo::compute_layers(policy, pairs, tau, &per);
    REQUIRE(all.size() == pairs.size());
    REQUIRE(per.size() == pairs.size());
    for (std::size_t q = 0; q < pairs.size(); ++q) {
      INFO("pair " << q << " of " << pairs.size());
      const reference ref = reference_of(host[q].first->cview(), host[q].second->cview(), tau);
      check_metrics(all[q], ref);
      check_per_filter(per[q], ref, false);
    }
  });
}

TEMPLATE_LIST_TEST_CASE("backend: shards merged with fevo::merge equal the whole layer",
                        "[backend][merge]", FEVO_TEST_BACKENDS) {
  using namespace fevo_test;
  using B = TestType;
  const backend_scope<B> scope_;
  rng g = rng_for("merge shards");
  INFO("backend " << B::name << ", seed=" << seed());
  using L = layout;
  const shape shapes[] = {{13, 11, 3, 3}, {6, 9, 1, 1}, {3, 4, 70, 70}, {5, 3, 1, 4500}, {7, 520, 3, 3}};
  const layout_pair pairs[] = {{L::oihw, L::hwio}, {L::padded, L::padded}, {L::ohwi, L::gapped}};
  const auto policy = B::policy();

  /// Cut points 0 = x_0 < x_1 < ... < x_k = n: one to three non-empty shards.
  auto cuts = [&](std::size_t n) {
    std::vector<std::size_t> x{0};
    const std::size_t parts = 1 + g.below(std::min<std::size_t>(n, 3));
    while (x.size() < parts) {
      const std::size_t c = 1 + g.below(n - 1);
      if (std::find(x.begin(), x.end(), c) == x.end()) x.push_back(c);
    }
    x.push_back(n);
    std::sort(x.begin(), x.end());
    return x;
  };

  for (const shape& s : shapes)
    for (const layout_pair lp : pairs)
      for_each_element_type([&](auto tg) {
        using T = typename decltype(tg)::type;
        const double tau = pick_tau(g);
        auto prev_l = make_layer<T>(s, lp.prev);
        auto next_l = make_layer<T>(s, lp.next);
        fill_changes(prev_l, next_l, tau, g);
        const auto prev_h = prev_l.cview();
        const auto next_h = next_l.cview();
        const auto pu = B::template upload<T>(prev_h);
        const auto nu = B::template upload<T>(next_h);
        const auto p = pu.view();
        const auto n = nu.view();
        const reference ref = reference_of(prev_h, next_h, tau);
        const std::vector<std::size_t> fc = cuts(s.N), cc = cuts(s.C);
        INFO(s << ", " << type_name<T>() << ", layouts " << name(lp.prev) << " / " << name(lp.next)
               << ", tau = " << tau << ", " << fc.size() - 1 << " filter shards, " << cc.size() - 1
               << " channel shards");

        /// Merges the partials of every shard [f0, f1) x [c0, c1) of the grid of cut points.
        auto merged = [&](const std::vector<std::size_t>& fx, const std::vector<std::size_t>& cx) {
          fevo::partial total;
          for (std::size_t a = 0; a + 1 < fx.size(); ++a)
            for (std::size_t b = 0; b + 1 < cx.size(); ++b) {
              const std::size_t f0 = fx[a], nf = fx[a + 1] - fx[a], c0 = cx[b], nc = cx[b + 1] - cx[b];
              const fevo::partial part =
                  fevo::compute_partial(policy, p.filter_slice(f0, nf).channel_slice(c0, nc),
                                        n.filter_slice(f0, nf).channel_slice(c0, nc), tau);
              // each shard on its own against the reference of the same shard
              const reference shard = reference_of(prev_h.filter_slice(f0, nf).channel_slice(c0, nc),
                                                   next_h.filter_slice(f0, nf).channel_slice(c0, nc), tau);
              INFO("shard filters [" << f0 << ", " << f0 + nf << "), channels [" << c0 << ", " << c0 + nc << ")");
              CHECK(part.changed == shard.changed);
              CHECK(part.weights == shard.weights);
              CHECK(part.zero_channels == shard.zero_channels);
              CHECK(part.channels == shard.channels);
              CHECK(part.nonfinite == shard.nonfinite);
              FEVO_CHECK_SUM(part.sum_sq, shard.sum_sq, shard.weights);
              fevo::merge(total, part);
            }
          return total;
        };
        const std::vector<std::size_t> whole_f{0, s.N}, whole_c{0, s.C};
        {
          INFO("split by filters");
          check_metrics(fevo::finalize(merged(fc, whole_c), s.N), ref);
        }
        {
          INFO("split by channels");
          check_metrics(fevo::finalize(merged(whole_f, cc), s.N), ref);
        }
        {
          INFO("split by filters and channels");
          check_metrics(fevo::finalize(merged(fc, cc), s.N), ref);
        }
        {
          INFO("split with empty shards (a rank without filters, or without channels)");
          std::vector<std::size_t> fe = fc, ce = cc;
          fe.insert(fe.begin() + 1, fe[1]);  // shard [cut, cut): no filters
          ce.insert(ce.end() - 1, ce[ce.size() - 2]);
          check_metrics(fevo::finalize(merged(fe, ce), s.N), ref);
        }
        {
          INFO("the per-filter partials (filter_results::filter_partial) merged");
          fevo::filter_results per;
          fevo::compute(policy, p, n, tau, per);
          fevo::partial total;
          for (std::size_t i = 0; i < per.size(); ++i) fevo::merge(total, per.filter_partial(i));
          check_metrics(fevo::finalize(total, s.N), ref);
        }
      });
}

// ---- accuracy ------------------------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("backend: D of a 10^7-weight fp32 layer is accurate", "[backend][accuracy]",
                        FEVO_TEST_BACKENDS) {
  using namespace fevo_test;
  using B = TestType;
  const backend_scope<B> scope_;
  INFO("backend " << B::name << ", seed=" << seed());
  // 1000 filters of 10000 1x1 channels = 10^7 weights (10^6 under the sanitizers). The changes
  // span 2^-40 .. 2^9, so their squares span 2^-80 .. 2^18: a float accumulator, or a double one
  // fed rounded float squares, errs far beyond the bound below.
  struct data {
    shape s;
    std::vector<float> prev, next;
    long double sum_sq = 0;  // sum of (long double)d * d over the stored floats' differences
  };
  static const data d = [] {
    rng g = rng_for("accuracy 1e7");
    data out;
    out.s = {sanitized ? 100u : 1000u, 10000, 1, 1};
    const std::size_t n = out.s.size();
    out.prev.resize(n);
    out.next.resize(n);
    for (std::size_t k = 0; k < n; ++k) {
      const double p = g.normal() * std::ldexp(1.0, int(g.below(12)) - 8);
      const double step = g.sign() * (1 + g.uniform()) * std::ldexp(1.0, int(g.below(49)) - 40);
      out.prev[k] = float(p);
      out.next[k] = float(p + step);
      const float dk = out.next[k] - out.prev[k];
      out.sum_sq += (long double)dk * dk;
    }
    return out;
  }();
  const auto p = B::template upload<float>(fevo::oihw(d.prev.data(), d.s.N, d.s.C, d.s.H, d.s.W));
  const auto n = B::template upload<float>(fevo::oihw(d.next.data(), d.s.N, d.s.C, d.s.H, d.s.W));
  const fevo::layer_metrics m = fevo::compute(B::policy(), p.view(), n.view(), 0.0);
  const long double want = d.sum_sq / (long double)d.s.N;
  const double rel = double(std::fabs((long double)m.D - want) / want);
  INFO("D = " << m.D << ", long double reference " << double(want) << ", relative error " << rel
              << ", derived bound " << sum_bound(d.s.size()));
  REQUIRE(m.totals.weights == d.s.size());
  REQUIRE(rel <= 1e-6);
  CHECK(rel <= sum_bound(d.s.size()));
  FEVO_CHECK_SUM(fevo::D(B::policy(), p.view(), n.view()), want, d.s.size());
}
