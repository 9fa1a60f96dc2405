// The dispatch of fevo::cuda's fused pass: the descriptor table and the launch. Written against a
// "device" interface, so that it does not depend on the CUDA runtime: fevo/cuda.cuh runs it on a
// GPU (runtime.cuh), and the tests also run it, kernels included, on a host emulator (tests/simt).
//
// A Device provides
//   void check_pointer(const void* p, const char* which, std::size_t layer);  refuses host memory
//   std::size_t alignment();            of the scratch regions (a power of two, at least 16)
//   char* scratch(std::size_t bytes);   device memory, reused across calls, so aligned
//   char* staging(std::size_t bytes);   host memory the device copies to and from
//   uploaded_table& table();            what the scratch's start holds (see uploaded_table)
//   template <class Tuning, class T, bool Advance, bool Shared> std::size_t max_blocks();
//                                       blocks of fold_filters<Tuning, T, Advance, Shared> that fit
//                                       at once (0: it cannot run there: schedule::staged on a
//                                       device without its shared memory)
//   template <class Tuning, class T, bool Advance, bool Shared> void launch(const pass_args<T>&);
//                                       fold_filters<Tuning, T, Advance, Shared>, then reduce_layers
//   void upload(void* dst, const void* src, std::size_t bytes);        host -> device, ordered
//   void download(void* dst, const void* src, std::size_t bytes);      device -> host, ordered
//   void finish();                      waits for everything above
#pragma once

#include <fevo/config.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <fevo/fevo.hpp>

#include "descriptor.hpp"
#include "tuning.hpp"

namespace fevo::cuda {

/// One layer of a compare-and-advance pass: the kept snapshot (overwritten) and the live weights.
template <class T>
struct advance_pair {
  std::string name;  ///< used in error messages; may be empty
  basic_filter_view<T, device_space> prev;
  basic_filter_view<const T, device_space> next;
};

namespace detail {

inline std::size_t round_up(std::size_t n, std::size_t align) { return (n + align - 1) / align * align; }

/// Whether a view's filters can be read with 16-byte loads: packed filters, aligned.
template <class View>
bool vector_friendly(const View& v) {
  using T = typename View::value_type;
  const std::size_t C = v.channels(), H = v.rows(), W = v.cols();
  const bool packed = (W == 1 || v.stride(3) == 1) && (H == 1 || v.stride(2) == W) &&
                      (C == 1 || v.stride(1) == H * W);
  constexpr std::size_t V = 16 / sizeof(T);
  return packed && v.filter_size() % V == 0 &&
         (v.filters() == 1 || (v.stride(0) * sizeof(T)) % 16 == 0) &&
         reinterpret_cast<std::uintptr_t>(v.data_handle()) % 16 == 0;
}

/// What the start of a device's scratch holds since the last pass that completed there: the bytes
/// of its descriptor table, filter ranges and work-queue counter. A pass with the same table (a
/// training loop's every call on the same buffers) skips their upload; reduce_layers leaves a
/// work queue's counter at zero again. A Device forgets it whenever its scratch moves.
struct uploaded_table {
  const char* at = nullptr;
  std::vector<char> bytes;
  bool holds(const char* dst, const char* src, std::size_t n) const {
    return at == dst && bytes.size() == n && std::memcmp(bytes.data(), src, n) == 0;
  }
  void forget() {
    at = nullptr;
    bytes.clear();
  }
  void remember(const char* dst, const char* src, std::size_t n) {
    bytes.assign(src, src + n);
    at = dst;
  }
};

/// What a pass's launches need: the descriptor table and the result buffers, on the device.
template <class T>
struct pass_args {
  const layer_desc<T>* layers;
  int n_layers;
  std::size_t n_items;              ///< work items (units, in a work-queue pass)
  const std::size_t* filter_start;  ///< n_layers + 1: layer k's filters are [start[k], start[k + 1])
  partial* filters;                 ///< one per filter
  partial* totals;                  ///< one per layer, in the table's order
  std::uint32_t* r;                 ///< R_ic of the layers that want them
  unsigned long long* queue;        ///< a work-queue pass: the queue's counter, zero; else nullptr
  unsigned grid;                    ///< blocks of fold_filters
};

/// The fused pass of `n_tasks` layers on `dev` with the given tuning (tuning.hpp). With Advance,
/// every prev is overwritten with its next; `advance_prev[k]` is layer k's prev as a mutable
/// pointer. A warp_only tuning runs a pass it cannot serve (a filter over warp_bits weights; for
/// schedule::staged, a layer that is not packed, or a device without its shared memory) with
/// default_tuning.
template <class Tuning, class T, bool Advance, class Device>
void run_pass(Device& dev, layer_task<T, device_space>* tasks, std::size_t n_tasks, T* const* advance_prev) {
  static_assert(check_tuning<Tuning>());
  using desc = layer_desc<T>;
  std::vector<desc> descs(n_tasks);
  std::size_t filters = 0, r_total = 0, weights = 0, shared_weights = 0;
  bool want_filters = false, fits = true, all_packed = true;
  for (std::size_t k = 0; k < n_tasks; ++k) {
    const auto& t = tasks[k];
    dev.check_pointer(t.prev.data_handle(), "prev", k);
    dev.check_pointer(t.next.data_handle(), "next", k);
    desc& d = descs[k];
    d.prev = Advance ? advance_prev[k] : const_cast<T*>(t.prev.data_handle());  // read only unless Advance
    d.next = t.next.data_handle();
    ::fevo::detail::fill_layer_desc(d, t, filters, r_total, no_r);
    d.packed = vector_friendly(t.prev) && vector_friendly(t.next) ? 1 : 0;
    const std::size_t size = t.prev.filter_size();
    d.block = size >= Tuning::block_from && size <= block_bits ? 1 : 0;
    d.group = d.packed && !d.block ? group_for<Tuning, T>(size) : 32;  // if warps are shared (below)
    weights += t.prev.filters() * size;
    if (d.group < 32) shared_weights += t.prev.filters() * size;
    want_filters = want_filters || t.per_filter;
    fits = fits && size <= warp_bits;
    all_packed = all_packed && d.packed;
  }
  const bool shared = use_shared_warps<Tuning, T>(shared_weights, weights);
  if (!shared)
    for (desc& d : descs) d.group = 32;
  if constexpr (Tuning::warp_only) {
    bool serve = fits;
    if constexpr (Tuning::work == schedule::staged)
      serve = serve && all_packed &&
              (shared ? dev.template max_blocks<Tuning, T, Advance, true>()
                      : dev.template max_blocks<Tuning, T, Advance, false>()) > 0;
    if (!serve) return run_pass<default_tuning, T, Advance>(dev, tasks, n_tasks, advance_prev);
  }
  // The table's order: the tasks' or, for a work queue, the layers with the largest units first,
  // so that the last units the warps take are the smallest (ties: the tasks' order).
  // descs[k] is then tasks[order[k]]'s layer, and totals[k] its total.
  constexpr bool queued = Tuning::work != schedule::grid_stride;
  std::vector<std::size_t> order(n_tasks);
  for (std::size_t k = 0; k < n_tasks; ++k) order[k] = k;
  if (queued) {
    const auto unit = [&](std::size_t k) {
      return descs[k].ext[1] * descs[k].ext[2] * descs[k].ext[3] * std::size_t(32 / descs[k].group);
    };
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return unit(a) > unit(b); });
    std::vector<desc> sorted(n_tasks);
    for (std::size_t k = 0; k < n_tasks; ++k) sorted[k] = descs[order[k]];
    descs.swap(sorted);
    // The filters' totals and R_ic in the table's order too (reduce_layers takes them so).
    std::size_t f = 0, rc = 0;
    for (std::size_t k = 0; k < n_tasks; ++k) ::fevo::detail::fill_layer_desc(descs[k], tasks[order[k]], f, rc, no_r);
  }
  std::size_t items = 0;
  for (desc& d : descs) {
    d.first_item = items;
    items += items_of(d.ext[0], d.block != 0, d.group, queued);
  }

  // One scratch block on the device and its mirror in host staging memory:
  //   descriptors | filter ranges | work queue | layer totals | per-filter totals | R_ic
  // The descriptors, filter ranges and the zeroed queue go up in one copy (none when the scratch
  // holds them from the last pass: each pass leaves its queue at zero), and the results come
  // back in one copy of the range the call needs.
  const std::size_t al = dev.alignment();
  const std::size_t o_ranges = round_up(n_tasks * sizeof(desc), al);
  const std::size_t o_queue = o_ranges + round_up((n_tasks + 1) * sizeof(std::size_t), al);
  const std::size_t o_totals = o_queue + (queued ? round_up(sizeof(unsigned long long), al) : 0);
  const std::size_t o_filters = o_totals + round_up(n_tasks * sizeof(partial), al);
  const std::size_t o_r = o_filters + round_up(filters * sizeof(partial), al);
  const std::size_t o_end = o_r + round_up(r_total * sizeof(std::uint32_t), al);
  const std::size_t back_end = r_total ? o_end : want_filters ? o_r : o_filters;
  char* base = dev.scratch(o_end);
  char* host = dev.staging(o_end);
  std::memcpy(host, descs.data(), n_tasks * sizeof(desc));
  std::memset(host + n_tasks * sizeof(desc), 0, o_totals - n_tasks * sizeof(desc));
  std::size_t* ranges = reinterpret_cast<std::size_t*>(host + o_ranges);
  for (std::size_t k = 0; k < n_tasks; ++k) ranges[k] = descs[k].first_filter;
  ranges[n_tasks] = filters;
  uploaded_table& table = dev.table();
  const bool resident = table.holds(base, host, o_totals);
  table.forget();  // until this pass completes: a failed one may leave a counter behind
  if (!resident) dev.upload(base, host, o_totals);

  pass_args<T> a;
  a.layers = reinterpret_cast<const desc*>(base);
  a.n_layers = int(n_tasks);
  a.n_items = items;
  a.filter_start = reinterpret_cast<const std::size_t*>(base + o_ranges);
  a.filters = reinterpret_cast<partial*>(base + o_filters);
  a.totals = reinterpret_cast<partial*>(base + o_totals);
  a.r = reinterpret_cast<std::uint32_t*>(base + o_r);
  a.queue = queued ? reinterpret_cast<unsigned long long*>(base + o_queue) : nullptr;
  // As many blocks as fit at once, at most one per item. The shared-warp kernel is another
  // instantiation (a run-time group size takes more registers).
  const auto launch = [&](auto shared_tag) {
    constexpr bool S = decltype(shared_tag)::value;
    const std::size_t max_blocks = dev.template max_blocks<Tuning, T, Advance, S>();
    a.grid = static_cast<unsigned>(items < max_blocks ? items : max_blocks);
    dev.template launch<Tuning, T, Advance, S>(a);
  };
  if constexpr (sizeof(T) == 8) launch(std::false_type{});  // f64 never shares (use_shared_warps)
  else if (shared) launch(std::true_type{});
  else launch(std::false_type{});

  dev.download(host + o_totals, base + o_totals, back_end - o_totals);
  dev.finish();
  table.remember(base, host, o_totals);

  const partial* totals = reinterpret_cast<const partial*>(host + o_totals);
  const partial* per = reinterpret_cast<const partial*>(host + o_filters);
  const std::uint32_t* r_host = reinterpret_cast<const std::uint32_t*>(host + o_r);
  for (std::size_t k = 0; k < n_tasks; ++k) {
    const auto& t = tasks[order[k]];
    *t.total = totals[k];
    if (!t.per_filter) continue;
    for (std::size_t i = 0; i < t.prev.filters(); ++i) t.per_filter->store(i, per[descs[k].first_filter + i]);
    if (descs[k].r_offset != no_r)
      std::copy(r_host + descs[k].r_offset, r_host + descs[k].r_offset + t.prev.filters() * t.prev.channels(),
                t.per_filter->channel_changed.begin());
  }
}

/// compare-and-advance writes every prev while it reads every next: refuses any overlap of a
/// prev's span with another prev's or any next's span.
template <class T>
void check_disjoint(const std::vector<advance_pair<T>>& layers) {
  struct span {
    std::uintptr_t begin, end;
    std::size_t layer;
    bool prev;
  };
  std::vector<span> spans;
  for (std::size_t k = 0; k < layers.size(); ++k) {
    const auto add = [&](const void* p, std::size_t n, bool prev) {
      const auto b = reinterpret_cast<std::uintptr_t>(p);
      spans.push_back({b, b + n * sizeof(T), k, prev});
    };
    add(layers[k].prev.data_handle(), layers[k].prev.required_span_size(), true);
    add(layers[k].next.data_handle(), layers[k].next.required_span_size(), false);
  }
  std::sort(spans.begin(), spans.end(), [](const span& a, const span& b) { return a.begin < b.begin; });
  // Any overlap involving a prev span is an error; next spans may overlap each other.
  std::size_t reach = 0;  // index of the span reaching furthest so far among those overlapping
  bool have = false;
  for (std::size_t k = 0; k < spans.size(); ++k) {
    if (have && spans[k].begin < spans[reach].end && (spans[k].prev || spans[reach].prev)) {
      const auto& a = spans[reach];
      const auto& b = spans[k];
      const auto name = [&](const span& x) {
        const std::string& n = layers[x.layer].name;
        return (n.empty() ? "#" + std::to_string(x.layer) : "'" + n + "'") + (x.prev ? " prev" : " next");
      };
      ::fevo::detail::fail("compare_and_advance: layer ", name(a), " and layer ", name(b),
                           " overlap in memory; prev is overwritten while next is read, so each "
                           "prev must be disjoint from every other prev and next");
    }
    // Keep the span that ends last (ties: prefer a prev span, so prev/next overlaps are caught).
    if (!have || spans[k].end > spans[reach].end || (spans[k].end == spans[reach].end && spans[k].prev))
      reach = k;
    have = true;
  }
}

/// compare_and_advance_layers (fevo/cuda.cuh) on `dev`.
template <class Tuning, class T, class Device>
std::vector<layer_metrics> advance_layers(Device& dev, const std::vector<advance_pair<T>>& layers, double tau,
                                          std::vector<filter_results>* per_filter) {
  static_assert(!std::is_const_v<T>, "compare_and_advance writes prev: pass views of mutable memory");
  std::vector<partial> totals;
  std::vector<layer_task<T, device_space>> tasks =
      ::fevo::detail::make_tasks<T, device_space>(layers, tau, totals, per_filter);
  std::vector<T*> raw(layers.size());
  for (std::size_t k = 0; k < layers.size(); ++k) raw[k] = layers[k].prev.data_handle();
  check_disjoint(layers);
  if (!tasks.empty()) run_pass<Tuning, T, true>(dev, tasks.data(), tasks.size(), raw.data());
  std::vector<layer_metrics> out(layers.size());
  for (std::size_t k = 0; k < layers.size(); ++k) out[k] = finalize(totals[k], layers[k].prev.filters());
  return out;
}

}  // namespace detail
}  // namespace fevo::cuda
