// The public entry points: compute(), compute_partial(), compute_layers() and the D/S/Z functors.
//
// Every entry point checks its arguments here, at the public boundary, and then hands one array of
// layer_task to the backend's `evaluate(policy, tasks, n)`, found by argument-dependent lookup
// from the policy type (fevo::seq here, fevo::cpu::par in <fevo/cpu.hpp>, ...).
#pragma once

#include "config.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <type_traits>
#include <vector>

#include "accumulator.hpp"
#include "detail/tau.hpp"
#include "element.hpp"
#include "error.hpp"
#include "results.hpp"
#include "view.hpp"

namespace fevo {

/// Which parts of the fused pass a call needs; backends may skip the rest.
enum want : unsigned {
  want_D = 1u,
  want_S = 2u,
  want_Z = 4u,
  want_R = 8u,  ///< per-(filter, channel) counts into filter_results::channel_changed
  want_all = want_D | want_S | want_Z,
};

/// One layer's work as a backend sees it: validated views, tau in the compute type, outputs.
template <class T, class Space = host_space>
struct layer_task {
  basic_filter_view<const T, Space> prev;
  basic_filter_view<const T, Space> next;
  compute_t<T> tau;
  unsigned want = want_all;
  partial* total = nullptr;             ///< required: totals of the whole view
  filter_results* per_filter = nullptr;  ///< optional: already sized by the caller
};

/// Two snapshots of one layer, for compute_layers().
template <class T, class Space = host_space>
struct layer_pair {
  std::string name;  ///< used in error messages and by callers; may be empty
  basic_filter_view<const T, Space> prev;
  basic_filter_view<const T, Space> next;
};

namespace detail {

template <class V>
std::string shape_of(const V& v) {
  return "{" + std::to_string(v.extent(0)) + ", " + std::to_string(v.extent(1)) + ", " +
         std::to_string(v.extent(2)) + ", " + std::to_string(v.extent(3)) + "}";
}

/// The "layer 'name': " (or "layer #k: ") that starts a message about one layer of a call, or
/// nothing for a single-layer call; formatted only when a message is written.
struct where_layer {
  const std::string* name = nullptr;  ///< the layer's name; null or empty: use the index
  std::size_t index = 0;
  bool in_list = false;  ///< one of several layers (compute_layers): named even without a name
  friend std::ostream& operator<<(std::ostream& os, const where_layer& w) {
    if (w.name && !w.name->empty()) os << "layer '" << *w.name << "': ";
    else if (w.in_list) os << "layer '#" << w.index << "': ";
    return os;
  }
};

/// Checks one pair of snapshots and tau; returns tau converted once to the compute type.
template <class T, class Space>
compute_t<T> check_pair(const basic_filter_view<const T, Space>& prev,
                        const basic_filter_view<const T, Space>& next, double tau, unsigned want,
                        const where_layer& where) {
  using CT = compute_t<T>;
  FEVO_EXPECTS(prev.extents() == next.extents(), where, "shape mismatch: prev has extents ",
               shape_of(prev), " but next has ", shape_of(next), " (filter, channel, row, col)");
  for (std::size_t r = 0; r < 4; ++r)
    FEVO_EXPECTS(prev.extent(r) > 0, where, "extent(", r, ") is zero in extents ", shape_of(prev));
  FEVO_EXPECTS(prev.data_handle() != nullptr, where, "prev is a null pointer");
  FEVO_EXPECTS(next.data_handle() != nullptr, where, "next is a null pointer");
  const CT t = check_tau<CT>(tau, where);
  if (want & want_R)
    FEVO_EXPECTS(prev.extent(2) * prev.extent(3) <= std::numeric_limits<std::uint32_t>::max(),
                 where, "rows*cols per channel exceed 2^32-1; channel counts cannot be stored");
  return t;
}

template <class A, class B>
using pair_value_t = std::enable_if_t<std::is_same_v<std::remove_cv_t<A>, std::remove_cv_t<B>>,
                                      std::remove_cv_t<A>>;

template <class Policy, class T, class Space>
partial run_one(const Policy& policy, basic_filter_view<const T, Space> prev,
                basic_filter_view<const T, Space> next, double tau, unsigned want,
                filter_results* per_filter) {
  layer_task<T, Space> task;
  task.prev = prev;
  task.next = next;
  task.tau = check_pair(prev, next, tau, want, where_layer{});
  task.want = want;
  partial total;
  task.total = &total;
  if (per_filter)
    per_filter->resize(prev.filters(), prev.channels(), prev.filter_size(), (want & want_R) != 0);
  task.per_filter = per_filter;
  evaluate(policy, &task, std::size_t{1});  // the backend, found by ADL on the policy
  return total;
}

/// Checked tasks for many layers (anything with .name, .prev and .next): the shared start of
/// compute_layers and of backends' whole-model calls. `totals` is sized to one per layer; with
/// `per_filter`, it is resized to one filter_results per layer, each sized for its layer.
template <class T, class Space, class Layers>
std::vector<layer_task<T, Space>> make_tasks(const Layers& layers, double tau, std::vector<partial>& totals,
                                             std::vector<filter_results>* per_filter) {
  totals.assign(layers.size(), partial{});
  std::vector<layer_task<T, Space>> tasks(layers.size());
  if (per_filter) per_filter->resize(layers.size());
  for (std::size_t k = 0; k < layers.size(); ++k) {
    const auto& l = layers[k];
    tasks[k].prev = l.prev;
    tasks[k].next = l.next;
    tasks[k].tau = check_pair(tasks[k].prev, tasks[k].next, tau, want_all, where_layer{&l.name, k, true});
    tasks[k].want = want_all;
    tasks[k].total = &totals[k];
    if (per_filter) {
      (*per_filter)[k].resize(l.prev.filters(), l.prev.channels(), l.prev.filter_size(), false);
      tasks[k].per_filter = &(*per_filter)[k];
    }
  }
  return tasks;
}

/// Fills the fields that the backends' per-layer descriptors share (ext, sp, sn: extents and the
/// two snapshots' strides; tau; first_filter; r_offset, or `no_r` when the task wants no R_ic)
/// from a task, advancing the running counts of filters and of R_ic values.
template <class Desc, class Task>
void fill_layer_desc(Desc& d, const Task& t, std::size_t& filters, std::size_t& r_total, std::size_t no_r) {
  for (int r = 0; r < 4; ++r) {
    d.ext[r] = t.prev.extent(r);
    d.sp[r] = t.prev.stride(r);
    d.sn[r] = t.next.stride(r);
  }
  d.tau = t.tau;
  d.first_filter = filters;
  filters += t.prev.filters();
  d.r_offset = no_r;
  if (t.per_filter && (t.want & want_R)) {
    d.r_offset = r_total;
    r_total += t.prev.filters() * t.prev.channels();
  }
}

/// The host-side end of a backend's pass over one task: its filters' totals (`filters`, one per
/// filter) are merged in filter order into *t.total and copied to t.per_filter, and R_ic (N*C
/// values, row-major) are copied there when `r` is given.
template <class Task>
void finish_task(const Task& t, const partial* filters, const std::uint32_t* r) {
  partial layer;
  const std::size_t n = t.prev.filters();
  for (std::size_t i = 0; i < n; ++i) {
    merge(layer, filters[i]);
    if (t.per_filter) t.per_filter->store(i, filters[i]);
  }
  if (r && t.per_filter)
    std::copy(r, r + n * t.prev.channels(), t.per_filter->channel_changed.begin());
  *t.total = layer;
}

}  // namespace detail

/// D, S and Z of one layer between two snapshots, in one read of both.
template <class Policy, class A, class B, class Space>
layer_metrics compute(const Policy& policy, basic_filter_view<A, Space> prev,
                      basic_filter_view<B, Space> next, double tau) {
  using T = detail::pair_value_t<A, B>;
  basic_filter_view<const T, Space> p = prev, n = next;
  return finalize(detail::run_one(policy, p, n, tau, want_all, nullptr), prev.filters());
}

/// As above, and also D_i, S_i, Z_i of every filter into `per_filter`.
template <class Policy, class A, class B, class Space>
layer_metrics compute(const Policy& policy, basic_filter_view<A, Space> prev,
                      basic_filter_view<B, Space> next, double tau, filter_results& per_filter) {
  using T = detail::pair_value_t<A, B>;
  basic_filter_view<const T, Space> p = prev, n = next;
  return finalize(detail::run_one(policy, p, n, tau, want_all, &per_filter), prev.filters());
}

/// As above, and also R_ic of every (filter, channel) into per_filter.channel_changed.
template <class Policy, class A, class B, class Space>
layer_metrics compute(const Policy& policy, basic_filter_view<A, Space> prev,
                      basic_filter_view<B, Space> next, double tau, filter_results& per_filter,
                      channel_counts_t) {
  using T = detail::pair_value_t<A, B>;
  basic_filter_view<const T, Space> p = prev, n = next;
  return finalize(detail::run_one(policy, p, n, tau, want_all | want_R, &per_filter),
                  prev.filters());
}

/// The mergeable totals of a shard (whole filters or whole channels of a layer). Merge the
/// shards' partials with fevo::merge and call fevo::finalize(total, N) with the layer's N.
/// An empty shard (a zero extent: no filters, or no channels, on this rank) is merge's identity,
/// partial{}: its two views must still have the same extents and tau must be valid, but its
/// pointers may be null and no backend is called.
template <class Policy, class A, class B, class Space>
partial compute_partial(const Policy& policy, basic_filter_view<A, Space> prev,
                        basic_filter_view<B, Space> next, double tau) {
  using T = detail::pair_value_t<A, B>;
  basic_filter_view<const T, Space> p = prev, n = next;
  if (p.empty() || n.empty()) {
    FEVO_EXPECTS(p.extents() == n.extents(), "shape mismatch: prev has extents ", detail::shape_of(p),
                 " but next has ", detail::shape_of(n), " (filter, channel, row, col)");
    detail::check_tau<compute_t<T>>(tau, detail::where_layer{});
    return partial{};
  }
  return detail::run_one(policy, p, n, tau, want_all, nullptr);
}

/// Many layers (a whole model) in one parallel pass. Results follow the order of `layers`.
/// When `per_filter` is given it is resized to one filter_results per layer.
template <class Policy, class T, class Space>
std::vector<layer_metrics> compute_layers(const Policy& policy,
                                          const std::vector<layer_pair<T, Space>>& layers,
                                          double tau,
                                          std::vector<filter_results>* per_filter = nullptr) {
  std::vector<partial> totals;
  std::vector<layer_task<T, Space>> tasks = detail::make_tasks<T, Space>(layers, tau, totals, per_filter);
  if (!tasks.empty()) evaluate(policy, tasks.data(), tasks.size());
  std::vector<layer_metrics> out(layers.size());
  for (std::size_t k = 0; k < layers.size(); ++k) out[k] = finalize(totals[k], layers[k].prev.filters());
  return out;
}

/// eq. 1 alone: D = mean over filters of ||next_i - prev_i||^2.
struct metric_D {
  template <class Policy, class A, class B, class Space>
  double operator()(const Policy& policy, basic_filter_view<A, Space> prev,
                    basic_filter_view<B, Space> next) const {
    using T = detail::pair_value_t<A, B>;
    basic_filter_view<const T, Space> p = prev, n = next;
    return detail::run_one(policy, p, n, 0.0, want_D, nullptr).sum_sq / double(prev.filters());
  }
};
/// eq. 2 alone: S = mean share of weights with |d| > tau.
struct metric_S {
  template <class Policy, class A, class B, class Space>
  double operator()(const Policy& policy, basic_filter_view<A, Space> prev,
                    basic_filter_view<B, Space> next, double tau) const {
    using T = detail::pair_value_t<A, B>;
    basic_filter_view<const T, Space> p = prev, n = next;
    const partial t = detail::run_one(policy, p, n, tau, want_S, nullptr);
    return double(t.changed) / double(t.weights);
  }
};
/// eq. 3 alone: Z = mean share of channels in which no weight has |d| > tau.
struct metric_Z {
  template <class Policy, class A, class B, class Space>
  double operator()(const Policy& policy, basic_filter_view<A, Space> prev,
                    basic_filter_view<B, Space> next, double tau) const {
    using T = detail::pair_value_t<A, B>;
    basic_filter_view<const T, Space> p = prev, n = next;
    const partial t = detail::run_one(policy, p, n, tau, want_Z, nullptr);
    return double(t.zero_channels) / double(t.channels);
  }
};
inline constexpr metric_D D{};
inline constexpr metric_S S{};
inline constexpr metric_Z Z{};

}  // namespace fevo
