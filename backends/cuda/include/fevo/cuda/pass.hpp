// The host side of fevo::cuda's fused pass, written against a "device" interface so that it does
// not depend on the CUDA runtime: fevo/cuda.cuh runs it on a GPU, and the tests also run it,
// kernels included, on a host emulator (tests/simt), in every build.
//
// A Device provides
//   void check_pointer(const void* p, const char* which, std::size_t layer);  refuses host memory
//   std::size_t alignment();            of the scratch regions (a power of two, at least 16)
//   char* scratch(std::size_t bytes);   device memory, reused across calls, so aligned
//   char* staging(std::size_t bytes);   host memory the device copies to and from
//   template <class T, bool Advance, bool Shared, kernel_kind Kind> std::size_t max_blocks();
//                                       blocks of fold_filters<T, Advance, Shared, Kind> that fit
//                                       at once (0: the kernel cannot run there; only for staged,
//                                       whose shared memory not every device has)
//   template <class T, bool Advance, bool Shared, kernel_kind Kind> void fold(const pass_args<T>&);
//                                       the fused pass's launch(es)
//   uploaded_table& table();            what the scratch's start holds (see uploaded_table)
//   void upload(void* dst, const void* src, std::size_t bytes);        host -> device, ordered
//   void download(void* dst, const void* src, std::size_t bytes);      device -> host, ordered
//   void finish();                      waits for everything above
//   tuning_table& tuning();             autotune()'s measurements so far (see kernel_tuning)
//   void time_start(); void time_stop(); marks the start and end of a pass's launches
//   float time_read();                  after finish(): the device's milliseconds between them
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <fevo/fevo.hpp>

#include "kernel.cuh"

namespace fevo::cuda {

/// One layer of a compare-and-advance pass: the kept snapshot (overwritten) and the live weights.
template <class T>
struct advance_pair {
  std::string name;  ///< used in error messages; may be empty
  basic_filter_view<T, device_space> prev;
  basic_filter_view<const T, device_space> next;
};

namespace detail {

/// Whether small packed filters share a warp (2 or 4 to a warp, group_for).
enum class sharing : unsigned char {
  automatic,  ///< when the layers whose filters would share hold at least shared_from of the weights
  always,
  never,
};
/// The share of a call's weights in layers whose filters would share a warp from which the
/// automatic choice takes the shared-warp kernel. That kernel helps small filters (H200: ResNet-50
/// 1x1 convolutions, 26% of its f32 weights, 43% of bf16: kernels 9% and 30% faster) and costs
/// the others a little (VGG-16 bf16, 0.25% in shared layers: 6% slower), so it is taken only
/// where small filters are a good part of the work.
inline constexpr double shared_from = 0.125;

/// Whether a pass launches the shared-warp kernel: `shared_weights` of its `weights` are in
/// layers whose filters would share a warp.
inline bool use_shared_warps(sharing s, std::size_t shared_weights, std::size_t weights) {
  if (s == sharing::never || shared_weights == 0) return false;
  return s == sharing::always || double(shared_weights) >= shared_from * double(weights);
}

/// How a pass runs (fevo::cuda::policy's tuning knobs; results do not depend on them).
struct pass_options {
  std::size_t block_from = 16384;       ///< filters of at least this many weights get a block each
  bool one_launch = false;              ///< merge each layer's totals in the fused launch
  sharing share = sharing::automatic;   ///< small packed filters 2 or 4 to a warp
  bool lean = false;                    ///< the lean kernel where a pass allows it (lean_allowed)
  bool queue = false;                   ///< the lean kernel with a work queue where a pass allows it
  bool staged = false;                  ///< the staged kernel where a pass allows it (staged_allowed)
  bool autotune = false;                ///< time the kernels that give the same bits, then keep the fastest
};

/// What autotune() has measured of the passes of one shape (tuning_key): the fastest time seen of
/// each kernel kind, in milliseconds, and, once every candidate has been timed tuning_samples
/// times, the kind chosen. Passes of that shape launch the candidates in turn until then (each
/// call is a real pass: the tuning costs no extra work), and the chosen one from then on.
struct kernel_tuning {
  std::array<float, 4> best_ms{std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity()};
  unsigned calls = 0;  ///< tuning calls completed
  bool chosen = false;
  kernel_kind kind = kernel_kind::full;  ///< once chosen
};
/// Timed calls of each candidate before the choice: the fastest of them counts, so that one slow
/// call (the first launch of a kernel loads its module) does not decide.
inline constexpr unsigned tuning_samples = 3;
/// Shapes a tuning_table holds at most (forgotten all at once when it is full, and tuned again).
inline constexpr std::size_t tuning_table_limit = 256;
/// autotune()'s state of one device for one host thread, by tuning_key.
using tuning_table = std::unordered_map<std::string, kernel_tuning>;

/// What the last pass of this host thread launched (fevo::cuda::last_pass()).
struct pass_report {
  kernel_kind kernel = kernel_kind::full;
  bool shared = false;      ///< the shared-warp instantiation (policy::warp_sharing)
  unsigned candidates = 1;  ///< kernels that give the pass the same bits (autotune()'s choices)
  bool tuning = false;      ///< an autotune() call that timed its kernel; the choice is still open
};
inline pass_report& last_pass_report() {
  static thread_local pass_report r;
  return r;
}

inline const char* kernel_name(kernel_kind k) {
  switch (k) {
    case kernel_kind::full: return "full";
    case kernel_kind::lean: return "lean";
    case kernel_kind::queued: return "queued";
    case kernel_kind::staged: return "staged";
  }
  return "?";
}

/// A distinct address for each element type, so that f16 and bf16 passes of the same shapes are
/// tuned apart (no RTTI needed).
template <class T>
inline constexpr char type_tag = 0;

/// The key of a pass's shape in a tuning_table: element type, compare-and-advance, shared warps,
/// and each layer's extents, layout, vector path, mode, lanes per filter and whether it keeps R_ic,
/// in the tasks' order. The layout is both snapshots' strides: of a packed layer only the filter
/// stride (the rest follow from its extents), of any other every stride, since how well its element
/// loads coalesce, and so which kernel is fastest, depends on them. Pointers and thresholds are
/// left out: a training loop's passes on other buffers of the same model, or `fevo analyze` on
/// pair after pair, share their tuning.
template <class T>
std::string tuning_key(const std::vector<layer_desc<T>>& descs, bool advance, bool shared) {
  std::string key;
  const auto put = [&](std::size_t v) { key.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(reinterpret_cast<std::uintptr_t>(&type_tag<T>));
  put((advance ? 1u : 0u) | (shared ? 2u : 0u));
  for (const layer_desc<T>& d : descs) {
    for (std::size_t e : d.ext) put(e);
    for (std::size_t i = 0; i < (d.packed ? 1u : 4u); ++i) {
      put(d.sp[i]);
      put(d.sn[i]);
    }
    put(std::size_t(d.packed) | std::size_t(d.block) << 1 | std::size_t(d.r_offset != no_r) << 2 |
        std::size_t(d.group) << 3);
  }
  return key;
}

/// The kernel an autotune() pass launches: the chosen one, or the next candidate to time
/// (`timing` set). `candidates`: the kinds that give the pass the same bits, the default first.
inline kernel_kind tuned_kind(const kernel_tuning& t, const std::vector<kernel_kind>& candidates, bool& timing) {
  timing = !t.chosen;
  return t.chosen ? t.kind : candidates[t.calls % candidates.size()];
}

/// Records the time of a tuning call's kernel `k`, and chooses once every candidate has had
/// tuning_samples calls: the fastest (ties: the earlier candidate, the default first).
inline void record_tuning(kernel_tuning& t, const std::vector<kernel_kind>& candidates, kernel_kind k, float ms) {
  float& best = t.best_ms[std::size_t(k)];
  if (ms >= 0 && ms < best) best = ms;
  if (++t.calls < tuning_samples * candidates.size()) return;
  t.kind = candidates.front();
  for (kernel_kind c : candidates)
    if (t.best_ms[std::size_t(c)] < t.best_ms[std::size_t(t.kind)]) t.kind = c;
  t.chosen = true;
}

/// Whether a pass may launch a lean kernel (kernel_kind lean or queued): every layer in warp mode, with
/// filters of at most warp_bits weights, and a second launch to merge the layers' totals.
template <class T>
bool lean_allowed(const std::vector<layer_desc<T>>& descs, bool one_launch) {
  if (one_launch) return false;
  for (const layer_desc<T>& d : descs)
    if (d.block || d.ext[1] * d.ext[2] * d.ext[3] > warp_bits) return false;
  return true;
}

/// Whether a pass may launch the staged kernel (fold_staged): a lean kernel may serve it, and every
/// layer is packed (its loads are all 16-byte vectors).
template <class T>
bool staged_allowed(const std::vector<layer_desc<T>>& descs, bool one_launch) {
  if (!lean_allowed(descs, one_launch)) return false;
  for (const layer_desc<T>& d : descs)
    if (!d.packed) return false;
  return true;
}

/// Kernel launches of one fused pass (a whole model in one call).
inline constexpr std::size_t launches_per_pass(bool one_launch) { return one_launch ? 1 : 2; }

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
/// of its descriptor table and layer counters. A pass with the same table (a training loop's
/// every call on the same buffers) skips their upload; the one-launch kernel leaves its counters
/// at zero again, and reduce_layers a work queue's. A Device forgets it whenever its scratch moves.
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

/// What the fused pass's launch needs: the descriptor table and the result buffers, on the device.
template <class T>
struct pass_args {
  const layer_desc<T>* layers;
  int n_layers;
  std::size_t n_items;        ///< work items (units, in a work-queue pass)
  std::size_t n_filters;      ///< of every layer
  partial* filters;           ///< one per filter
  partial* totals;            ///< one per layer, in the table's order
  std::uint32_t* r;           ///< R_ic of the layers that want them
  unsigned long long* done;   ///< with one_launch: one counter per layer, zero; else nullptr
  unsigned long long* queue;  ///< a work-queue pass: the queue's counter, zero; else nullptr
  unsigned grid;              ///< blocks of fold_filters
};

/// Launches fold_filters<T, Advance, Shared, Kind> (and the merge) on `dev` with as many blocks
/// as fit at once, at most one per item. (run_pass launches the staged kernel only where it
/// fits: its max_blocks is not 0.)
template <class T, bool Advance, bool Shared, kernel_kind Kind, class Device>
void launch_pass(Device& dev, pass_args<T>& a) {
  const std::size_t max_blocks = dev.template max_blocks<T, Advance, Shared, Kind>();
  a.grid = static_cast<unsigned>(a.n_items < max_blocks ? a.n_items : max_blocks);
  dev.template fold<T, Advance, Shared, Kind>(a);
}
template <class T, bool Advance, bool Shared, class Device>
void launch_pass(Device& dev, pass_args<T>& a, kernel_kind kind) {
  switch (kind) {
    case kernel_kind::full: return launch_pass<T, Advance, Shared, kernel_kind::full>(dev, a);
    case kernel_kind::lean: return launch_pass<T, Advance, Shared, kernel_kind::lean>(dev, a);
    case kernel_kind::queued: return launch_pass<T, Advance, Shared, kernel_kind::queued>(dev, a);
    case kernel_kind::staged: return launch_pass<T, Advance, Shared, kernel_kind::staged>(dev, a);
  }
}

/// The fused pass of `n_tasks` layers on `dev` (see the top of this file). With Advance, every
/// prev is overwritten with its next; `advance_prev[k]` is layer k's prev as a mutable pointer.
template <class T, bool Advance, class Device>
void run_pass(Device& dev, const pass_options& opt, layer_task<T, device_space>* tasks, std::size_t n_tasks,
              T* const* advance_prev) {
  using desc = layer_desc<T>;
  std::vector<desc> descs(n_tasks);
  std::size_t filters = 0, r_total = 0, items = 0, weights = 0, shared_weights = 0;
  bool want_filters = false;
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
    d.block = size >= opt.block_from && size <= block_bits ? 1 : 0;
    d.group = d.packed && !d.block ? group_for<T>(size) : 32;  // if warps are shared (below)
    weights += t.prev.filters() * size;
    if (d.group < 32) shared_weights += t.prev.filters() * size;
    want_filters = want_filters || t.per_filter;
  }
  const bool shared = use_shared_warps(opt.share, shared_weights, weights);
  if (!shared)
    for (desc& d : descs) d.group = 32;
  // The kernel: a lean one (with a work queue or not, or the staged kernel, which takes units from
  // a work queue too) where one is asked for and can serve the pass; with autotune() and none
  // asked for, each kernel that can serve it in turn, timed, until the fastest is known. Every
  // kind gives the same bits.
  const bool can_lean = lean_allowed(descs, opt.one_launch);
  const bool can_stage = staged_allowed(descs, opt.one_launch);
  const auto stage_fits = [&] {
    return (shared ? dev.template max_blocks<T, Advance, true, kernel_kind::staged>()
                   : dev.template max_blocks<T, Advance, false, kernel_kind::staged>()) > 0;
  };
  kernel_kind kind = kernel_kind::full;
  std::vector<kernel_kind> candidates{kernel_kind::full};
  kernel_tuning* tuning = nullptr;
  bool timing = false;
  if (opt.staged && can_stage) {
    kind = stage_fits() ? kernel_kind::staged : kernel_kind::queued;  // the same units, the same bits
  } else if (opt.queue && can_lean) {
    kind = kernel_kind::queued;
  } else if (opt.lean && can_lean) {
    kind = kernel_kind::lean;
  } else if (opt.autotune && !opt.staged && !opt.queue && !opt.lean && can_lean) {
    candidates.insert(candidates.end(), {kernel_kind::lean, kernel_kind::queued});
    if (can_stage && stage_fits()) candidates.push_back(kernel_kind::staged);
    tuning_table& table = dev.tuning();
    std::string key = tuning_key(descs, Advance, shared);
    if (table.size() >= tuning_table_limit && table.count(key) == 0) table.clear();
    tuning = &table[std::move(key)];
    kind = tuned_kind(*tuning, candidates, timing);
  }
  const bool queued = kind == kernel_kind::queued || kind == kernel_kind::staged;
  // The table's order: the tasks' or, for a work queue, the layers with the largest units first,
  // so that the last units the warps take are the smallest (ties: the tasks' order).
  // descs[k] is then tasks[order[k]]'s layer, and totals[k] its total.
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
    // The filters' totals and R_ic in the table's order too (merge_filters wants it).
    std::size_t f = 0, rc = 0;
    for (std::size_t k = 0; k < n_tasks; ++k) ::fevo::detail::fill_layer_desc(descs[k], tasks[order[k]], f, rc, no_r);
  }
  for (desc& d : descs) {
    d.first_item = items;
    items += items_of(d.ext[0], d.block != 0, d.group, queued);
  }

  // One scratch block on the device and its mirror in host staging memory:
  //   descriptors | work queue | layer counters | layer totals | per-filter totals | R_ic
  // The descriptors and the zeroed counters go up in one copy (none when the scratch holds them
  // from the last pass: each pass leaves its counters at zero), and the results come back in one
  // copy of the range the call needs.
  const std::size_t al = dev.alignment();
  const std::size_t o_queue = round_up(n_tasks * sizeof(desc), al);
  const std::size_t o_done = o_queue + (queued ? round_up(sizeof(unsigned long long), al) : 0);
  const std::size_t o_totals = o_done + (opt.one_launch ? round_up(n_tasks * sizeof(unsigned long long), al) : 0);
  const std::size_t o_filters = o_totals + round_up(n_tasks * sizeof(partial), al);
  const std::size_t o_r = o_filters + round_up(filters * sizeof(partial), al);
  const std::size_t o_end = o_r + round_up(r_total * sizeof(std::uint32_t), al);
  const std::size_t back_end = r_total ? o_end : want_filters ? o_r : o_filters;
  char* base = dev.scratch(o_end);
  char* host = dev.staging(o_end);
  std::memcpy(host, descs.data(), n_tasks * sizeof(desc));
  std::memset(host + o_queue, 0, o_totals - o_queue);
  uploaded_table& table = dev.table();
  const bool resident = table.holds(base, host, o_totals);
  table.forget();  // until this pass completes: a failed one may leave counters behind
  if (!resident) dev.upload(base, host, o_totals);

  pass_args<T> a;
  a.layers = reinterpret_cast<const desc*>(base);
  a.n_layers = int(n_tasks);
  a.n_items = items;
  a.n_filters = filters;
  a.filters = reinterpret_cast<partial*>(base + o_filters);
  a.totals = reinterpret_cast<partial*>(base + o_totals);
  a.r = reinterpret_cast<std::uint32_t*>(base + o_r);
  a.done = opt.one_launch ? reinterpret_cast<unsigned long long*>(base + o_done) : nullptr;
  a.queue = queued ? reinterpret_cast<unsigned long long*>(base + o_queue) : nullptr;
  // The shared-warp kernel and the lean ones are other instantiations (a run-time group size
  // takes more registers; the lean kernels compile out what they cannot meet).
  if (timing) dev.time_start();
  if (shared)
    launch_pass<T, Advance, true>(dev, a, kind);
  else
    launch_pass<T, Advance, false>(dev, a, kind);
  if (timing) dev.time_stop();

  dev.download(host + o_totals, base + o_totals, back_end - o_totals);
  dev.finish();
  table.remember(base, host, o_totals);
  if (timing) record_tuning(*tuning, candidates, kind, dev.time_read());
  last_pass_report() = {kind, shared, unsigned(candidates.size()), timing && !tuning->chosen};

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
template <class T, class Device>
std::vector<layer_metrics> advance_layers(Device& dev, const pass_options& opt,
                                          const std::vector<advance_pair<T>>& layers, double tau,
                                          std::vector<filter_results>* per_filter) {
  static_assert(!std::is_const_v<T>, "compare_and_advance writes prev: pass views of mutable memory");
  std::vector<partial> totals;
  std::vector<layer_task<T, device_space>> tasks =
      ::fevo::detail::make_tasks<T, device_space>(layers, tau, totals, per_filter);
  std::vector<T*> raw(layers.size());
  for (std::size_t k = 0; k < layers.size(); ++k) raw[k] = layers[k].prev.data_handle();
  check_disjoint(layers);
  if (!tasks.empty()) run_pass<T, true>(dev, opt, tasks.data(), tasks.size(), raw.data());
  std::vector<layer_metrics> out(layers.size());
  for (std::size_t k = 0; k < layers.size(); ++k) out[k] = finalize(totals[k], layers[k].prev.filters());
  return out;
}

}  // namespace detail
}  // namespace fevo::cuda
