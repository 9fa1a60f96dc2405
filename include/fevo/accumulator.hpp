// The one accumulator every backend folds weights into: init / fold / merge / finalize.
//
// The paper's metrics (section III-B), for a layer of N filters of C channels of H x W weights,
// between two snapshots with d = next - prev:
//   eq. 1   D   = 1/N sum_i ||d_i||^2
//   eq. 2   S   = 1/N sum_i (1/CHW) #{(c,h,w) : |d_i(c,h,w)| > tau}
//   eq. 3   Z   = 1/N sum_i (1/C)   #{c : R_ic == 0},   R_ic = #{(h,w) : |d_i(c,h,w)| > tau}
// Every filter of a layer has the same C*H*W, so the means over filters are ratios of totals:
// S = changed / weights and Z = zero_channels / channels. A `partial` holds those totals for any
// set of whole channels (one channel, one filter, a shard, a layer), and two partials of disjoint
// sets merge by adding. This file is the only place where the metric definitions live.
#pragma once

#include "config.hpp"

#include <cmath>
#include <cstdint>

#include "config.hpp"
#include "element.hpp"

namespace fevo {

/// Mergeable totals over a set of whole channels of one layer.
struct partial {
  double sum_sq = 0;                 ///< sum of d^2 (eq. 1 numerator), accumulated in double
  std::uint64_t changed = 0;         ///< weights with |d| > tau or d not finite (eq. 2 numerator)
  std::uint64_t weights = 0;         ///< weights folded
  std::uint64_t zero_channels = 0;   ///< closed channels with R_ic == 0 (eq. 3 numerator)
  std::uint64_t channels = 0;        ///< channels closed
  std::uint64_t nonfinite = 0;       ///< weights whose d is NaN or infinite
};

/// Element rules, shared by every backend (scalar and vectorised paths call these).
namespace rule {
template <class CT>
FEVO_HOST_DEVICE constexpr CT max_finite();
template <>
FEVO_HOST_DEVICE constexpr float max_finite<float>() { return 3.40282346638528859812e+38F; }
template <>
FEVO_HOST_DEVICE constexpr double max_finite<double>() { return 1.79769313486231570815e+308; }

template <class CT>
FEVO_HOST_DEVICE inline CT magnitude(CT d) {
  using std::fabs;
  return fabs(d);  // NaN stays NaN
}
/// |d| > tau, and NaN counts as changed: written as "not |d| <= tau" so that NaN is true.
template <class CT>
FEVO_HOST_DEVICE inline bool changed(CT abs_d, CT tau) { return !(abs_d <= tau); }
/// d is NaN or +-Inf.
template <class CT>
FEVO_HOST_DEVICE inline bool nonfinite(CT abs_d) { return !(abs_d <= max_finite<CT>()); }
/// d^2 in double: exact for a float d, so a finite float change never overflows D.
template <class CT>
FEVO_HOST_DEVICE inline double square(CT d) { return double(d) * double(d); }
}  // namespace rule

/// Folds one weight pair into the partial of the channel it belongs to.
template <class T>
FEVO_HOST_DEVICE inline void fold(partial& p, const T& prev, const T& next, compute_t<T> tau) {
  using CT = compute_t<T>;
  const CT d = load(next) - load(prev);
  const CT a = rule::magnitude(d);
  p.sum_sq += rule::square(d);
  p.changed += rule::changed(a, tau);
  p.nonfinite += rule::nonfinite(a);
  p.weights += 1;
}

/// Marks the weights folded into `p` since the last close as one whole channel.
FEVO_HOST_DEVICE inline void close_channel(partial& p, std::uint64_t changed_in_channel) {
  p.channels += 1;
  p.zero_channels += (changed_in_channel == 0);
}

/// Merges the partial of a disjoint set of whole channels into `into`.
FEVO_HOST_DEVICE inline void merge(partial& into, const partial& other) {
  into.sum_sq += other.sum_sq;
  into.changed += other.changed;
  into.weights += other.weights;
  into.zero_channels += other.zero_channels;
  into.channels += other.channels;
  into.nonfinite += other.nonfinite;
}

/// A layer's metrics and the totals they come from.
struct layer_metrics {
  double D = 0;  ///< eq. 1: mean over filters of the squared L2 change
  double S = 0;  ///< eq. 2: mean share of weights with |d| > tau
  double Z = 0;  ///< eq. 3: mean share of channels where no weight has |d| > tau
  /// D's size-fair companion: the mean over the layer's weights of their squared change,
  /// sum_sq / (N C H W) = D / (C H W). D sums over a filter's C H W weights, so it grows with the
  /// filter's size even when every weight moves by the same amount; this does not.
  double D_per_weight = 0;
  std::uint64_t n_filters = 0;
  std::uint64_t nonfinite = 0;  ///< weights whose change is NaN or infinite
  partial totals;               ///< the merged totals D, S, Z were computed from
};

/// Turns the merged totals of a whole layer of `n_filters` filters into D, S and Z.
inline layer_metrics finalize(const partial& p, std::uint64_t n_filters) {
  layer_metrics m;
  m.n_filters = n_filters;
  m.nonfinite = p.nonfinite;
  m.totals = p;
  m.D = n_filters ? p.sum_sq / double(n_filters) : 0.0;
  m.D_per_weight = p.weights ? p.sum_sq / double(p.weights) : 0.0;
  m.S = p.weights ? double(p.changed) / double(p.weights) : 0.0;
  m.Z = p.channels ? double(p.zero_channels) / double(p.channels) : 0.0;
  return m;
}

}  // namespace fevo
