// Flat fragments: the metrics of a layer held as contiguous ranges of its flattened weights.
//
// ZeRO (DeepSpeed) and FSDP1 flatten a layer's [O, I, H, W] weights and keep one contiguous range
// of them per rank, cut anywhere: inside a filter, inside a channel. Each rank computes the partial
// of its own range,
//
//   fevo::flat_partial p = fevo::compute_flat_partial(fevo::seq, prev_shard, next_shard,
//                                                     begin, end, {N, C, H, W}, tau);
//
// (prev_shard, next_shard: the rank's weights of flat elements [begin, end)), the partials travel
// to one rank, and merging them all gives the whole layer's result:
//
//   fevo::flat_partial all;                       // the identity
//   for (auto& q : partials) fevo::merge(all, q); // adjacent ranges, in either order
//   fevo::layer_metrics m = fevo::finalize(all, per);   // per: D_i, S_i, Z_i of every filter
//
// Exactness. changed, nonfinite and the weight counts add. Z needs, per channel, whether any of
// its weights changed (R_ic == 0); a channel cut between ranks is known only when its parts meet.
// So a partial keeps, besides one fevo::partial per filter it touches (its weights in the range,
// its channels wholly in the range closed as usual), the channels its range cuts: at most two,
// the one at each end (one when the range lies inside a channel), each with the count of changed
// weights in its part. What travels is therefore O(filters touched) + 2 channel counts, and when
// two adjacent ranges merge, their shared channel's counts add and the channel is closed once the
// merged range covers it: each channel is counted exactly once, however it was cut. Counts behind
// S and Z are exact; D is a sum of the same squares in another grouping, within the core's bound
// (exact up to summation order; equal bits for filters no cut passes through, on fevo::seq and
// fevo::cpu).
#pragma once

#include "config.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "accumulator.hpp"
#include "compute.hpp"
#include "detail/tau.hpp"
#include "error.hpp"
#include "results.hpp"
#include "view.hpp"

namespace fevo {

/// The mergeable totals of a contiguous range [begin, end) of a layer's flattened [O, I, H, W]
/// weights (see the file comment). Default-constructed: empty, merge's identity.
struct flat_partial {
  /// A channel the range cuts (its first or last weights are outside the range).
  struct cut_channel {
    std::uint64_t channel = 0;  ///< filter * C + channel
    std::uint64_t changed = 0;  ///< changed weights of its part in the range
  };
  std::array<std::uint64_t, 4> extents{};  ///< the whole layer's (N, C, H, W)
  std::uint64_t begin = 0, end = 0;        ///< the flat range [begin, end) it covers
  std::uint64_t first_filter = 0;          ///< filters[k] is filter first_filter + k
  /// Every filter the range touches: its weights in the range (sum_sq, changed, weights,
  /// nonfinite), and among its channels those wholly in the range (channels, zero_channels).
  std::vector<partial> filters;
  /// The channels the range cuts, at most two, in order.
  std::vector<cut_channel> cut;

  bool empty() const { return begin == end; }
  std::uint64_t size() const { return end - begin; }
};

namespace detail {

inline std::uint64_t flat_layer_size(const std::array<std::uint64_t, 4>& e) {
  std::uint64_t n = 1;
  for (std::uint64_t x : e) FEVO_EXPECTS(!__builtin_mul_overflow(n, x, &n), "layer extents overflow 64 bits");
  return n;
}

/// Folds [from, to) of a range starting at flat index `begin` into `into` (sum_sq, changed,
/// weights, nonfinite; no channel closed), element by element: at most one channel's part.
template <class T>
void fold_flat(partial& into, const T* prev, const T* next, std::uint64_t begin, std::uint64_t from,
               std::uint64_t to, compute_t<T> tau) {
  for (std::uint64_t j = from; j < to; ++j) fold(into, prev[j - begin], next[j - begin], tau);
}

/// Closes the cut channels that [p.begin, p.end) now covers wholly, and merges two entries of one
/// channel; keeps the others (at most one at each end).
inline void settle_cuts(flat_partial& p, std::vector<flat_partial::cut_channel> cuts) {
  const std::uint64_t C = p.extents[1], HW = p.extents[2] * p.extents[3];
  p.cut.clear();
  for (std::size_t k = 0; k < cuts.size(); ++k) {
    flat_partial::cut_channel c = cuts[k];
    while (k + 1 < cuts.size() && cuts[k + 1].channel == c.channel) c.changed += cuts[++k].changed;
    if (p.begin <= c.channel * HW && (c.channel + 1) * HW <= p.end) {
      partial& f = p.filters[c.channel / C - p.first_filter];
      close_channel(f, c.changed);
    } else {
      p.cut.push_back(c);
    }
  }
}

}  // namespace detail

/// The partial of the flat range [begin, end) of a layer of extents {N, C, H, W} (contiguous
/// [O, I, H, W], as ZeRO and FSDP flatten it): prev and next point to the range's first element
/// (the rank's own shard), each holding end - begin elements. An empty range gives the identity
/// (its pointers may be null). fevo::error for a range outside the layer, a zero extent, null
/// pointers or a bad tau. The whole channels and filters in the range are computed by `policy`;
/// the parts of the (at most two) cut channels by the accumulator's fold.
template <class Policy, class T>
flat_partial compute_flat_partial(const Policy& policy, const T* prev, const T* next, std::uint64_t begin,
                                  std::uint64_t end, const std::array<std::uint64_t, 4>& extents, double tau) {
  using E = std::remove_cv_t<T>;
  using CT = compute_t<E>;
  for (std::size_t r = 0; r < 4; ++r)
    FEVO_EXPECTS(extents[r] > 0, "flat fragment: extent(", r, ") of the layer is zero");
  const std::uint64_t total = detail::flat_layer_size(extents);
  FEVO_EXPECTS(begin <= end && end <= total, "flat fragment: range [", begin, ", ", end,
               ") is not inside the layer's ", total, " weights");
  FEVO_EXPECTS(total <= std::uint64_t(std::numeric_limits<long long>::max()), "flat fragment: layer too large");
  const CT t = detail::check_tau<CT>(tau, detail::where_layer{});
  flat_partial p;
  p.extents = extents;
  p.begin = p.end = begin;
  if (begin == end) return p;
  FEVO_EXPECTS(prev != nullptr && next != nullptr, "flat fragment: ", prev ? "next" : "prev", " is a null pointer");
  p.end = end;
  const std::uint64_t C = extents[1], H = extents[2], W = extents[3], HW = H * W, CHW = C * HW;
  p.first_filter = begin / CHW;
  p.filters.assign(std::size_t((end - 1) / CHW - p.first_filter + 1), partial{});
  const auto filter_of = [&](std::uint64_t flat) -> partial& { return p.filters[std::size_t(flat / CHW - p.first_filter)]; };
  std::vector<flat_partial::cut_channel> cuts;

  // The head: the part of a channel cut by begin (the whole range when it lies inside one channel).
  std::uint64_t pos = begin;
  if (begin % HW != 0) {
    const std::uint64_t q = begin / HW, stop = std::min(end, (q + 1) * HW);
    partial part;
    detail::fold_flat(part, prev, next, begin, begin, stop, t);
    merge(filter_of(begin), part);
    cuts.push_back({q, part.changed});
    pos = stop;
  }
  // Whole channels: the rest of a first filter, whole filters, the start of a last filter; in one
  // call of the policy, with each filter's totals.
  const std::uint64_t whole_end = std::max(pos, end - end % HW);
  std::vector<layer_pair<E>> segs;
  std::vector<std::uint64_t> seg_first;  // the flat index where each segment starts
  const auto add_seg = [&](std::uint64_t from, std::uint64_t filters, std::uint64_t channels) {
    segs.push_back({"", oihw(prev + (from - begin), (long long)filters, (long long)channels, (long long)H, (long long)W),
                    oihw(next + (from - begin), (long long)filters, (long long)channels, (long long)H, (long long)W)});
    seg_first.push_back(from);
  };
  std::uint64_t at = pos;
  if (at < whole_end && at % CHW != 0) {  // channels [c, c') of one filter
    const std::uint64_t filter_end = (at / CHW + 1) * CHW, stop = std::min(whole_end, filter_end);
    add_seg(at, 1, (stop - at) / HW);
    at = stop;
  }
  if (at < whole_end && whole_end - at >= CHW) {  // whole filters
    const std::uint64_t n = (whole_end - at) / CHW;
    add_seg(at, n, C);
    at += n * CHW;
  }
  if (at < whole_end) {  // channels [0, c) of one filter
    add_seg(at, 1, (whole_end - at) / HW);
    at = whole_end;
  }
  if (!segs.empty()) {
    std::vector<filter_results> per;
    compute_layers(policy, segs, tau, &per);
    for (std::size_t s = 0; s < segs.size(); ++s)
      for (std::size_t i = 0; i < per[s].size(); ++i)
        merge(filter_of(seg_first[s] + i * CHW), per[s].filter_partial(i));
  }
  // The tail: the part of a channel cut by end.
  if (end % HW != 0 && end - end % HW >= pos) {
    const std::uint64_t from = end - end % HW;
    partial part;
    detail::fold_flat(part, prev, next, begin, from, end, t);
    merge(filter_of(from), part);
    cuts.push_back({from / HW, part.changed});
  }
  detail::settle_cuts(p, std::move(cuts));
  return p;
}

/// Merges the partial of an adjacent range (other.begin == into.end, or other.end ==
/// into.begin) of the same layer into `into`; an empty partial is the identity on either side.
/// A channel cut between the two is closed once the merged range covers it. fevo::error for
/// ranges that do not touch, or partials of layers of other extents.
inline void merge(flat_partial& into, const flat_partial& other) {
  if (other.empty()) return;
  if (into.empty()) {
    into = other;
    return;
  }
  FEVO_EXPECTS(into.extents == other.extents, "flat fragments of layers of other extents: {", into.extents[0], ", ",
               into.extents[1], ", ", into.extents[2], ", ", into.extents[3], "} and {", other.extents[0], ", ",
               other.extents[1], ", ", other.extents[2], ", ", other.extents[3], "}");
  const bool after = into.end == other.begin;
  FEVO_EXPECTS(after || other.end == into.begin, "flat fragments [", into.begin, ", ", into.end, ") and [", other.begin,
               ", ", other.end, ") do not touch: merge adjacent ranges");
  const flat_partial& a = after ? into : other;
  const flat_partial& b = after ? other : into;
  flat_partial m;
  m.extents = a.extents;
  m.begin = a.begin;
  m.end = b.end;
  m.first_filter = a.first_filter;
  m.filters = a.filters;
  std::size_t k = 0;
  if (b.first_filter == a.first_filter + a.filters.size() - 1) merge(m.filters.back(), b.filters[k++]);
  m.filters.insert(m.filters.end(), b.filters.begin() + std::ptrdiff_t(k), b.filters.end());
  std::vector<flat_partial::cut_channel> cuts = a.cut;
  cuts.insert(cuts.end(), b.cut.begin(), b.cut.end());
  detail::settle_cuts(m, std::move(cuts));
  into = std::move(m);
}

/// D, S and Z of the whole layer from the merge of all its fragments; with `per_filter`, also
/// every filter's D_i, S_i, Z_i and counts. fevo::error when the merged range is not the whole
/// layer.
inline layer_metrics finalize(const flat_partial& p, filter_results* per_filter = nullptr) {
  const std::uint64_t total = detail::flat_layer_size(p.extents);
  FEVO_EXPECTS(p.begin == 0 && p.end == total && total > 0, "flat fragments cover [", p.begin, ", ", p.end,
               ") of a layer of ", total, " weights: merge every fragment before finalize");
  const std::uint64_t N = p.extents[0], C = p.extents[1], CHW = C * p.extents[2] * p.extents[3];
  if (per_filter) per_filter->resize(std::size_t(N), std::size_t(C), std::size_t(CHW), false);
  partial layer;
  for (std::size_t i = 0; i < p.filters.size(); ++i) {
    merge(layer, p.filters[i]);
    if (per_filter) per_filter->store(i, p.filters[i]);
  }
  return finalize(layer, N);
}
inline layer_metrics finalize(const flat_partial& p, filter_results& per_filter) { return finalize(p, &per_filter); }

}  // namespace fevo
