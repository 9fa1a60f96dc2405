// Per-filter results: D_i, S_i, Z_i, the counts behind S_i and Z_i, and optionally R_ic.
#pragma once

#include "config.hpp"

#include <cstddef>
#include <cstdint>
#include <vector>

#include "accumulator.hpp"
#include "error.hpp"

namespace fevo {

/// Asks compute() to also record R_ic, the changed-weight count of each (filter, channel).
struct channel_counts_t {
  explicit constexpr channel_counts_t() = default;
};
inline constexpr channel_counts_t with_channel_counts{};

/// One entry per filter of a layer (or of the view passed in, for a shard): the three metrics and
/// the counts behind them, each an array indexed by filter (per.D[i], per.S[i], per.Z[i]).
struct filter_results {
  std::size_t channels = 0;            ///< C
  std::size_t weights_per_filter = 0;  ///< C * H * W
  std::vector<double> D;               ///< D_i = ||d_i||^2 (eq. 1 before the mean)
  std::vector<double> S;               ///< S_i = changed_i / (C H W) (eq. 2 before the mean)
  std::vector<double> Z;               ///< Z_i = zero_channels_i / C (eq. 3 before the mean)
  std::vector<std::uint64_t> changed;        ///< #{|d| > tau or not finite} in filter i
  std::vector<std::uint64_t> zero_channels;  ///< #{c : R_ic == 0} in filter i
  std::vector<std::uint64_t> nonfinite;      ///< non-finite changes in filter i
  /// R_ic, row-major [filter][channel]; empty unless with_channel_counts was passed.
  std::vector<std::uint32_t> channel_changed;

  std::size_t size() const { return D.size(); }
  /// R_ic; throws fevo::error when channel counts were not requested.
  std::uint32_t R(std::size_t i, std::size_t c) const {
    FEVO_EXPECTS(!channel_changed.empty(), "channel counts were not requested (pass fevo::with_channel_counts)");
    FEVO_EXPECTS(i < size() && c < channels, "R(", i, ", ", c, ") is outside ", size(), " x ", channels);
    return channel_changed[i * channels + c];
  }
  /// Sets filter i's entries from that filter's totals.
  void store(std::size_t i, const partial& f) {
    D[i] = f.sum_sq;
    S[i] = double(f.changed) / double(weights_per_filter);
    Z[i] = double(f.zero_channels) / double(channels);
    changed[i] = f.changed;
    zero_channels[i] = f.zero_channels;
    nonfinite[i] = f.nonfinite;
  }
  /// The filter's totals as a partial, e.g. to merge filters into groups.
  partial filter_partial(std::size_t i) const {
    partial p;
    p.sum_sq = D.at(i);
    p.changed = changed.at(i);
    p.weights = weights_per_filter;
    p.zero_channels = zero_channels.at(i);
    p.channels = channels;
    p.nonfinite = nonfinite.at(i);
    return p;
  }

  void resize(std::size_t n_filters, std::size_t n_channels, std::size_t per_filter, bool with_r) {
    channels = n_channels;
    weights_per_filter = per_filter;
    D.assign(n_filters, 0.0);
    S.assign(n_filters, 0.0);
    Z.assign(n_filters, 0.0);
    changed.assign(n_filters, 0);
    zero_channels.assign(n_filters, 0);
    nonfinite.assign(n_filters, 0);
    // Not cleared: every backend writes each of the N x C counts (a test fills them with garbage
    // first), and clearing them first made a call with R_ic up to 1.5x slower (ResNet-50 OIHW;
    // docs/benchmarks-log.md).
    channel_changed.resize(with_r ? n_filters * n_channels : 0);
  }
};

}  // namespace fevo
