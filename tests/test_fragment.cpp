// Flat fragments (<fevo/fragment.hpp>): a 17 x 5 x 3 x 3 layer cut into 1..6 contiguous ranges of
// its flattened weights, anywhere (inside filters and inside channels, empty ranges included),
// each range's partial computed from its own copy of the weights, merged, must give the unsharded
// result: every count exact (per filter and per layer), D_i equal where no cut passes through the
// filter and within 1e-12 relative where one does (fevo::cpu: its vector path's bound). Cuts:
// every one for 1 and 2 fragments, and (on fevo::seq) for 3; every position as a boundary for
// 4..6 (the boundaries of an even split shifted by each offset), and random cuts. Then the refusals.
#include "support.hpp"

#include <fevo/fragment.hpp>

#if defined(FEVO_TEST_HAVE_CPU)
#include <fevo/cpu.hpp>
#endif

#include <algorithm>
#include <array>
#include <string>
#include <vector>

namespace {

constexpr std::uint64_t N = 17, C = 5, H = 3, W = 3, HW = H * W, CHW = C * HW, total = N * CHW;
const std::array<std::uint64_t, 4> ext = {N, C, H, W};
constexpr double tau = 0.25;

/// Weights whose changes exercise Z across cuts: most channels unchanged, some with exactly one
/// changed weight (so a cut channel is zero only if every part of it is), a NaN, and ties |d| == tau.
struct layer_data {
  std::vector<float> prev, next;
  explicit layer_data(fevo_test::rng& r) : prev(total), next(total) {
    for (std::uint64_t j = 0; j < total; ++j) prev[j] = float(r.normal());
    next = prev;
    for (std::uint64_t q = 0; q < N * C; ++q) {
      const double u = r.uniform();
      if (u < 0.45) continue;  // unchanged channel
      if (u < 0.75) {          // one changed weight
        next[q * HW + r.below(HW)] += 1.0f;
        continue;
      }
      for (std::uint64_t k = 0; k < HW; ++k)  // several small and large changes
        if (r.chance(0.5)) next[q * HW + k] += float(r.sign() * (r.chance(0.5) ? 0.1 : 0.9));
    }
    prev[7] = 1.0f;  // a tie: |d| == tau is unchanged
    next[7] = 1.25f;
    next[400] = std::numeric_limits<float>::quiet_NaN();
  }
};

struct checker {
  const layer_data& d;
  fevo::layer_metrics whole;
  fevo::filter_results whole_per;
  /// The unsharded result, by the policy the fragments are computed with.
  template <class Policy>
  checker(const Policy& pol, const layer_data& data) : d(data) {
    whole = fevo::compute(pol, fevo::oihw(d.prev.data(), N, C, H, W), fevo::oihw(d.next.data(), N, C, H, W), tau,
                          whole_per);
  }

  /// The partial of [b, e) from the rank's own copy of those weights (so that reading past the
  /// range is caught under ASan).
  template <class Policy>
  fevo::flat_partial fragment(const Policy& pol, std::uint64_t b, std::uint64_t e) const {
    const std::vector<float> p(d.prev.begin() + std::ptrdiff_t(b), d.prev.begin() + std::ptrdiff_t(e));
    const std::vector<float> n(d.next.begin() + std::ptrdiff_t(b), d.next.begin() + std::ptrdiff_t(e));
    return fevo::compute_flat_partial(pol, p.empty() ? nullptr : p.data(), n.empty() ? nullptr : n.data(), b, e,
                                      ext, tau);
  }

  /// Merges the fragments of `bounds` (0 = b0 <= b1 <= ... = total) left to right, or right to
  /// left, and checks the result. Returns false (after reporting) on a mismatch.
  /// D's tolerance where a cut passes through a filter: 1e-12 relative for exact paths; the CPU
  /// backend's vector path rounds squares to float before summing (fevo::cpu::D_relative_error),
  /// and the parts of a cut channel are folded exactly, so twice that bound there.
  double d_tol = 1e-12;

  template <class Policy>
  bool check(const Policy& pol, const std::vector<std::uint64_t>& bounds, bool right_to_left) const {
    std::vector<fevo::flat_partial> parts;
    for (std::size_t k = 1; k < bounds.size(); ++k) parts.push_back(fragment(pol, bounds[k - 1], bounds[k]));
    return check(parts, bounds, right_to_left);
  }
  /// The same with the fragments' partials already computed.
  bool check(const std::vector<fevo::flat_partial>& parts, const std::vector<std::uint64_t>& bounds,
             bool right_to_left) const {
    fevo::flat_partial all;
    if (right_to_left)
      for (std::size_t k = parts.size(); k-- > 0;) fevo::merge(all, parts[k]);
    else
      for (const auto& q : parts) fevo::merge(all, q);
    fevo::filter_results per;
    const fevo::layer_metrics m = fevo::finalize(all, per);
    bool ok = all.cut.empty() && m.totals.changed == whole.totals.changed &&
              m.totals.zero_channels == whole.totals.zero_channels && m.totals.channels == whole.totals.channels &&
              m.totals.weights == whole.totals.weights && m.nonfinite == whole.nonfinite && m.S == whole.S &&
              m.Z == whole.Z && m.n_filters == N;
    ok = ok && std::isnan(m.D) == std::isnan(whole.D) &&
         (std::isnan(m.D) || std::abs(m.D - whole.D) <= d_tol * std::abs(whole.D));
    for (std::uint64_t i = 0; i < N && ok; ++i) {
      bool cut_inside = false;  // a bound strictly inside filter i
      for (std::uint64_t b : bounds) cut_inside = cut_inside || (b > i * CHW && b < (i + 1) * CHW);
      const double a = per.D[i], w = whole_per.D[i];
      const bool d_ok = cut_inside ? (std::isnan(a) == std::isnan(w) && (std::isnan(w) || std::abs(a - w) <= d_tol * w))
                                   : (std::isnan(w) ? std::isnan(a) : a == w);
      ok = d_ok && per.changed[i] == whole_per.changed[i] && per.zero_channels[i] == whole_per.zero_channels[i] &&
           per.nonfinite[i] == whole_per.nonfinite[i] && per.S[i] == whole_per.S[i] && per.Z[i] == whole_per.Z[i];
    }
    if (!ok) {
      std::string b;
      for (auto x : bounds) b += std::to_string(x) + " ";
      FAIL_CHECK("fragments with bounds " << b << (right_to_left ? "(merged right to left)" : "")
                                          << ": D " << m.D << " vs " << whole.D << ", changed " << m.totals.changed
                                          << " vs " << whole.totals.changed << ", zero channels "
                                          << m.totals.zero_channels << " vs " << whole.totals.zero_channels);
    }
    return ok;
  }
};

template <class Policy>
void every_cut(const Policy& pol, const char* name, double d_tol, bool exhaustive_three) {
  INFO("policy " << name);
  auto r = fevo_test::rng_for(std::string("flat fragments ") + name);
  const layer_data data(r);
  checker ch(pol, data);
  ch.d_tol = d_tol;
  REQUIRE(ch.whole.totals.zero_channels > 0);
  REQUIRE(ch.whole.totals.zero_channels < N * C);
  REQUIRE(ch.whole.nonfinite == 1);
  std::size_t cases = 0, bad = 0;
  const auto run = [&](const std::vector<std::uint64_t>& bounds) {
    ++cases;
    bad += !ch.check(pol, bounds, false);
    if (cases % 5 == 0) bad += !ch.check(pol, bounds, true);  // merged in the other order too
  };
  // 1 fragment; 2: every cut, at either end too (an empty fragment).
  run({0, total});
  for (std::uint64_t a = 0; a <= total; ++a) run({0, a, total});
  // 3: every pair of cuts (with the first and last fragments computed once per cut). The
  // backend sees only whole channels, which the cuts above already place everywhere: the pairs
  // are checked on fevo::seq, and under the sanitizers for every 7th first cut.
  if (exhaustive_three) {
    std::vector<fevo::flat_partial> head(total + 1), tail(total + 1);
    for (std::uint64_t a = 0; a <= total; ++a) {
      head[a] = ch.fragment(pol, 0, a);
      tail[a] = ch.fragment(pol, a, total);
    }
    const std::uint64_t step3 = fevo_test::sanitized ? 7 : 1;
    for (std::uint64_t a = 0; a <= total; a += step3)
      for (std::uint64_t b = a; b <= total; ++b) {
        ++cases;
        bad += !ch.check({head[a], ch.fragment(pol, a, b), tail[b]}, {0, a, b, total}, (a + b) % 5 == 0);
      }
  }
  // 4..6: every position is a bound, in an even split shifted by each offset.
  for (std::uint64_t k = 4; k <= 6; ++k)
    for (std::uint64_t s = 0; s <= total; ++s) {
      std::vector<std::uint64_t> b = {0};
      for (std::uint64_t j = 1; j < k; ++j) b.push_back(std::min(total, (s + (j - 1) * (total / (k - 1))) % (total + 1)));
      std::sort(b.begin() + 1, b.end());
      b.push_back(total);
      run(b);
    }
  // Random cuts, many of them inside one channel or at the same place.
  for (int n = 0; n < 3000; ++n) {
    const std::uint64_t k = 1 + r.below(6);
    std::vector<std::uint64_t> b = {0};
    const std::uint64_t centre = r.below(total + 1);
    for (std::uint64_t j = 1; j < k; ++j)
      b.push_back(r.chance(0.5) ? r.below(total + 1) : std::min(total, centre + r.below(2 * HW)));
    std::sort(b.begin() + 1, b.end());
    b.push_back(total);
    run(b);
  }
  INFO(cases << " cuts checked");
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("flat fragments: every cut of a 17x5x3x3 layer into 1..6 fragments merges to the whole layer",
          "[fragment]") {
  every_cut(fevo::seq, "seq", 1e-12, true);
#if defined(FEVO_TEST_HAVE_CPU)
  every_cut(fevo::cpu::par.threads(1), "cpu", 2 * fevo::cpu::D_relative_error, false);
#endif
}

TEST_CASE("flat fragments: a range inside one channel keeps it cut; what travels is O(filters) + 2 channels",
          "[fragment]") {
  auto r = fevo_test::rng_for("flat fragment shape");
  const layer_data d(r);
  const checker ch(fevo::seq, d);
  // Inside channel 3 (flat 27..35), touching neither end: one cut entry, no channel closed.
  fevo::flat_partial p = ch.fragment(fevo::seq, 29, 33);
  REQUIRE(p.cut.size() == 1);
  CHECK(p.cut[0].channel == 3);
  CHECK(p.filters.size() == 1);
  CHECK(p.first_filter == 0);
  CHECK(p.filters[0].channels == 0);
  CHECK(p.filters[0].weights == 4);
  // From the middle of filter 2 to the middle of filter 5: two cut channels, four filters.
  p = ch.fragment(fevo::seq, 2 * CHW + 13, 5 * CHW + 20);
  REQUIRE(p.cut.size() == 2);
  CHECK(p.cut[0].channel == (2 * CHW + 13) / HW);
  CHECK(p.cut[1].channel == (5 * CHW + 20) / HW);
  CHECK(p.first_filter == 2);
  CHECK(p.filters.size() == 4);
  CHECK(p.filters[1].channels == C);
  CHECK(p.filters[1].weights == CHW);
  // Its neighbours close both channels.
  fevo::flat_partial left = ch.fragment(fevo::seq, 2 * CHW, 2 * CHW + 13);
  fevo::merge(p, left);
  CHECK(p.cut.size() == 1);
  fevo::merge(p, ch.fragment(fevo::seq, 5 * CHW + 20, 5 * CHW + 27));
  CHECK(p.cut.empty());
  CHECK(p.filters.front().channels == C);
  // The identity, on either side, from any position.
  fevo::flat_partial e = ch.fragment(fevo::seq, 100, 100), q = p;
  CHECK(e.empty());
  fevo::merge(q, e);
  fevo::merge(e, p);
  CHECK(q.begin == p.begin);
  CHECK(q.end == p.end);
  CHECK(e.end == p.end);
}

TEST_CASE("flat fragments: refusals name the range and the problem", "[fragment]") {
  std::vector<float> a(total, 0.0f), b(total, 0.0f);
  const auto msg = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const fevo::error& e) {
      return e.what();
    }
    return "<no error>";
  };
  const auto has = [](const std::string& m, const std::string& part) {
    INFO(m);
    CHECK(m.find(part) != std::string::npos);
  };
  has(msg([&] { fevo::compute_flat_partial(fevo::seq, a.data(), b.data(), 10, total + 1, ext, tau); }),
      "range [10, 766) is not inside the layer's 765 weights");
  has(msg([&] { fevo::compute_flat_partial(fevo::seq, a.data(), b.data(), 20, 10, ext, tau); }), "range [20, 10)");
  has(msg([&] { fevo::compute_flat_partial(fevo::seq, a.data(), b.data(), 0, 5, {N, 0, H, W}, tau); }),
      "extent(1) of the layer is zero");
  has(msg([&] { fevo::compute_flat_partial(fevo::seq, a.data(), static_cast<const float*>(nullptr), 0, 5, ext, tau); }),
      "next is a null pointer");
  has(msg([&] { fevo::compute_flat_partial(fevo::seq, a.data(), b.data(), 0, 5, ext, -1.0); }), "tau");
  fevo::flat_partial x = fevo::compute_flat_partial(fevo::seq, a.data(), b.data(), 0, 10, ext, tau);
  const fevo::flat_partial y = fevo::compute_flat_partial(fevo::seq, a.data(), b.data(), 20, 30, ext, tau);
  has(msg([&] { fevo::merge(x, y); }), "flat fragments [0, 10) and [20, 30) do not touch");
  const fevo::flat_partial z = fevo::compute_flat_partial(fevo::seq, a.data(), b.data(), 10, 20, {N, C, 1, 9}, tau);
  has(msg([&] { fevo::merge(x, z); }), "layers of other extents");
  has(msg([&] { fevo::finalize(x); }), "flat fragments cover [0, 10) of a layer of 765 weights");
  has(msg([&] { fevo::finalize(fevo::flat_partial{}); }), "cover [0, 0)");
  // An empty range needs no pointers.
  CHECK(fevo::compute_flat_partial(fevo::seq, static_cast<const float*>(nullptr), static_cast<const float*>(nullptr), 7,
                                   7, ext, tau)
            .empty());
}
