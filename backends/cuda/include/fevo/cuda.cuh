// fevo::cuda::par, the fused CUDA backend. Needs nvcc (.cu files); link fevo::cuda.
//
//   auto prev = fevo::oihw<fevo::device_space>(d_prev, N, C, H, W);   // device memory
//   auto next = fevo::oihw<fevo::device_space>(d_next, N, C, H, W);
//   fevo::layer_metrics m = fevo::compute(fevo::cuda::par.on(stream), prev, next, tau);
//   fevo::cuda::compare_and_advance(fevo::cuda::par, prev, next, tau);  // and prev := next
//
//   // A whole model, prev := next for every layer, in one pass:
//   std::vector<fevo::cuda::advance_pair<float>> model = {{"conv1", kept1, live1}, ...};
//   auto metrics = fevo::cuda::compare_and_advance_layers(fevo::cuda::par, model, tau);
//
// A whole model (compute_layers, compare_and_advance_layers) is two kernel launches: the fused
// pass and a per-layer merge; with par.single_launch(), one, the merge being done in the fused
// pass by the block that finishes each layer (results are identical). Filters of at least
// par.block_from weights (default 16384, e.g. 3x3x2048) are read by a whole block each, smaller
// ones by a warp each (on an H100 a warp per filter was as fast or faster for every VGG-16 and
// ResNet-50 layer: bench/bench_cuda.cu); par.block_per_filter_from(n) changes the switch, and
// small packed filters share a warp, 8 or 16 lanes each, where they hold an eighth of the
// weights or more (par.warp_sharing(true / false): always / never). These two are
// tuning knobs: counts are identical either way, D equal but for its last bits (its double sums
// are grouped differently), and every run of one configuration gives the same bits.
// par.lean_kernel() is a third, off by default: passes in which every filter is read by a warp
// launch a kernel with the other paths compiled out (fewer registers, more blocks per SM); it
// gives the same bits as the default kernel. par.work_queue(), a fourth, also off by default:
// the lean kernel's warps take their filters from a queue, the largest first, instead of a
// static share each; the same bits again. par.staged_copies(), a fifth, off by default: the work
// queue's kernel with its loads staged through shared memory by asynchronous copies, several
// rounds ahead; the same bits again. par.autotune(), off by default, chooses among those kernels
// by timing: the first calls on each model shape launch each in turn, timed, and later calls the
// fastest (fevo::cuda::last_pass() says which ran); the same bits whichever runs.
// Host views do not compile with this backend; device pointers that turn out to be host memory,
// and every CUDA error, are reported as fevo::error. Each pointer is checked with
// cudaPointerGetAttributes the first time a host thread hands it to fevo::cuda, and trusted on
// later calls (a training loop passes the same buffers every time; memory freed in between is
// the caller's bug, reported as a CUDA error by the kernel). Calls are synchronous with respect
// to the host (they return results), ordered on the policy's stream.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_set>
#include <type_traits>
#include <vector>

#include <cuda_runtime_api.h>

#include <fevo/fevo.hpp>

#include "cuda/kernel.cuh"
#include "cuda/pass.hpp"

namespace fevo::cuda {

struct policy {
  cudaStream_t stream = nullptr;
  /// Filters with at least this many weights are read by a block each, smaller ones by a warp.
  std::size_t block_from = 16384;
  /// Each layer's totals are merged in the fused launch itself, by the block that finishes the
  /// layer's last filter, instead of by a second launch.
  bool one_launch = false;
  /// Small packed filters share a warp, 16 or 8 lanes each (two or four filters at once):
  /// by default where they hold an eighth of a call's weights or more (detail::shared_from).
  detail::sharing share_warps = detail::sharing::automatic;
  /// Passes the lean kernel can serve (every filter read by a warp, none above 32768 weights,
  /// two launches) launch it: 80 registers and 3 blocks per SM instead of 128 and 2.
  bool lean = false;
  /// Passes the lean kernel can serve launch it with a work queue (work_queue()).
  bool queue = false;
  /// Passes the lean kernel can serve whose layers are all packed launch the staged kernel
  /// (staged_copies()).
  bool staged = false;
  /// Passes that more than one kernel can serve time each of them, then launch the fastest
  /// (autotune()).
  bool tune = false;
  /// A copy of this policy whose work is ordered on `s`.
  constexpr policy on(cudaStream_t s) const {
    policy p = *this;
    p.stream = s;
    return p;
  }
  /// A copy of this policy that gives a block to each filter of at least `weights` weights
  /// (SIZE_MAX: a warp per filter always). Counts do not depend on it; D only in its last bits.
  constexpr policy block_per_filter_from(std::size_t weights) const {
    policy p = *this;
    p.block_from = weights;
    return p;
  }
  /// A copy of this policy whose calls are one kernel launch (`true`) or two (`false`, the
  /// default). Results are identical; bench/bench_cuda.cu measures which is faster.
  constexpr policy single_launch(bool on = true) const {
    policy p = *this;
    p.one_launch = on;
    return p;
  }
  /// A copy of this policy in which packed filters of up to a few hundred weights share a warp
  /// (`true`) or never do (`false`): 8 lanes each up to 256 f32 or 512 f16/bf16 weights, 16
  /// lanes each up to twice that (f64: 16 lanes up to 256 weights), 2 or 4 filters at once, so
  /// that small filters (ResNet-50's 1x1 convolutions) keep every lane's loads in flight and share
  /// the per-filter reductions. By default (neither) they share a warp when the layers that would
  /// share hold at least an eighth of the call's weights (ResNet-50 yes, VGG-16 no). Results are
  /// identical but for D's last bits (its sums are grouped differently); bench/bench_cuda.cu
  /// measures both.
  constexpr policy warp_sharing(bool on = true) const {
    policy p = *this;
    p.share_warps = on ? detail::sharing::always : detail::sharing::never;
    return p;
  }
  /// A copy of this policy whose passes launch the lean kernel (`true`) where they can: every
  /// filter is read by a warp (none of block_from weights or more, none above 32768) and the
  /// layers' totals are merged by a second launch (not single_launch()). It is the same kernel
  /// with the other paths compiled out, so it takes 80 registers instead of 128 and runs 3 blocks
  /// per SM instead of 2, at the cost of a few spilled bytes; results are the same bits.
  /// bench/bench_cuda.cu times it (kernels_lean, compare_lean) against the default.
  constexpr policy lean_kernel(bool on = true) const {
    policy p = *this;
    p.lean = on;
    return p;
  }
  /// A copy of this policy whose passes (where the lean kernel can serve them, see lean_kernel())
  /// launch the lean kernel with a work queue (`true`): each warp takes the filters it folds
  /// from a counter in device memory, those of the layers with the largest filters first, one
  /// warp's share at a time, instead of the static share of a grid-stride loop, in which some
  /// warps get several large filters and others a few small ones, and the pass waits for the
  /// slowest. Results are the same bits; bench/bench_cuda.cu times it (kernels_queue,
  /// compare_queue) against the default.
  constexpr policy work_queue(bool on = true) const {
    policy p = *this;
    p.queue = on;
    return p;
  }
  /// A copy of this policy whose passes (where the lean kernel can serve them and every layer is
  /// packed: contiguous, 16-byte aligned filters) launch the staged kernel (`true`): the work
  /// queue's kernel, whose warps load through shared memory by asynchronous copies (cp.async,
  /// compute capability 8.0 and newer), several rounds ahead of what they fold, so that more
  /// bytes are in flight than registers can hold. It needs 96 KiB of shared memory a block: on
  /// devices that cannot give that (compute capability 7.5), the work queue's kernel serves the
  /// pass. Results are the same bits; bench/bench_cuda.cu times it (kernels_staged,
  /// compare_staged) against the default.
  constexpr policy staged_copies(bool on = true) const {
    policy p = *this;
    p.staged = on;
    return p;
  }
  /// A copy of this policy that chooses its kernel by timing (`true`), as cuDNN's benchmark mode
  /// does: the first passes of each model shape (element type, compare-and-advance or not, and
  /// every layer's shape and layout: not its pointers) launch in turn each kernel that can serve
  /// them (the default, lean, work-queue and, where the device has the shared memory, staged
  /// kernels), each timed by CUDA events around its launches, detail::tuning_samples times, and
  /// every later pass of that shape launches the fastest. Each of those calls is a real pass that
  /// returns its results: tuning costs no extra work, and results are the same bits whichever
  /// kernel runs. Passes only the default kernel can serve (a filter in block mode or above 32768
  /// weights, single_launch()) are not timed; lean_kernel(), work_queue() and staged_copies()
  /// choose a kernel instead. The measurements are kept per host thread and device.
  /// fevo::cuda::last_pass() says what a call launched.
  constexpr policy autotune(bool on = true) const {
    policy p = *this;
    p.tune = on;
    return p;
  }
  detail::pass_options options() const { return {block_from, one_launch, share_warps, lean, queue, staged, tune}; }
};
inline constexpr policy par{};

namespace detail {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) ::fevo::detail::fail("CUDA error in ", what, ": ", cudaGetErrorString(e));
}

/// Pointers this host thread has checked already (bounded: forgotten all at once when full).
inline std::unordered_set<const void*>& checked_pointers() {
  static thread_local std::unordered_set<const void*> s;
  return s;
}
/// Forgets the checked pointers, so the next call checks every pointer again.
inline void forget_checked_pointers() { checked_pointers().clear(); }

/// Refuses pointers the device cannot read: plain host memory and unknown pointers.
inline void check_device_pointer(const void* p, const char* which, std::size_t layer) {
  auto& seen = checked_pointers();
  if (seen.count(p)) return;
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error state of this query
    ::fevo::detail::fail("layer #", layer, ": ", which, " is not a CUDA pointer (",
                         cudaGetErrorString(e), ")");
  }
  FEVO_EXPECTS(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged, "layer #",
               layer, ": ", which, " is host memory; fevo::cuda needs device (or managed) memory");
  if (seen.size() >= 4096) seen.clear();
  seen.insert(p);
}

/// Device scratch reused across calls of one host thread (grown, never shrunk), so that a call
/// costs its two launches and small copies, not cudaMalloc/cudaFree; `table` says what its start
/// holds (forgotten when it moves).
class scratch {
 public:
  uploaded_table table;
  ~scratch() {
    if (ptr_) cudaFree(ptr_);  // may fail harmlessly at process exit
  }
  /// At least `bytes` bytes of device memory on the current device, 256-byte aligned.
  void* get(std::size_t bytes) {
    int dev = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    if (ptr_ && (bytes > size_ || dev != device_)) {
      cudaFree(ptr_);
      ptr_ = nullptr;
      table.forget();
    }
    if (!ptr_) {
      const std::size_t want = bytes > size_ ? bytes + bytes / 2 : size_;
      check(cudaMalloc(&ptr_, want), "cudaMalloc of fevo's scratch");
      size_ = want;
      device_ = dev;
    }
    return ptr_;
  }
  static scratch& for_this_thread() {
    static thread_local scratch s;
    return s;
  }

 private:
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
  int device_ = -1;
};

/// Pinned host memory reused across calls of one host thread (grown, never shrunk): the staging
/// area of the descriptors and the results.
class pinned {
 public:
  ~pinned() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  void* get(std::size_t bytes) {
    if (bytes > size_) {
      if (ptr_) cudaFreeHost(ptr_);
      ptr_ = nullptr;
      size_ = 0;
      const std::size_t want = bytes + bytes / 2;
      check(cudaMallocHost(&ptr_, want), "cudaMallocHost of fevo's staging area");
      size_ = want;
    }
    return ptr_;
  }
  static pinned& for_this_thread() {
    static thread_local pinned p;
    return p;
  }

 private:
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
};

/// Two CUDA events around work on a stream, made at first use (and left to the driver at exit).
class event_span {
 public:
  void start(cudaStream_t s) {
    if (!a_) {
      check(cudaEventCreate(&a_), "cudaEventCreate");
      check(cudaEventCreate(&b_), "cudaEventCreate");
    }
    check(cudaEventRecord(a_, s), "cudaEventRecord");
  }
  void stop(cudaStream_t s) { check(cudaEventRecord(b_, s), "cudaEventRecord"); }
  /// Milliseconds between the two, once the stream has passed the second.
  float read() const {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a_, b_), "cudaEventElapsedTime");
    return ms;
  }

 private:
  cudaEvent_t a_ = nullptr, b_ = nullptr;
};

/// For benchmarks: when `on`, each call records CUDA events around its two kernels, and `last_ms`
/// holds their time on the device (the fused pass without the host's part of the call).
struct kernel_timer {
  bool on = false;
  float last_ms = 0;
  event_span events;
  static kernel_timer& for_this_thread() {
    static thread_local kernel_timer t;
    return t;
  }
};

/// policy::autotune()'s measurements (fevo/cuda/pass.hpp) on one device for one host thread, and
/// the events its timed passes record there (an event is recorded only on its own device's
/// streams).
struct device_tuning {
  tuning_table table;
  event_span events;
};
/// This host thread's device_tuning of the current device.
inline device_tuning& tuning_for_this_thread() {
  static thread_local std::vector<device_tuning> per_device;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (per_device.size() <= std::size_t(device)) per_device.resize(std::size_t(device) + 1);
  return per_device[std::size_t(device)];
}

/// Kernel launches made by this backend (for benchmarks that report launches per call).
inline std::size_t& launch_count() {
  static thread_local std::size_t n = 0;
  return n;
}
/// Descriptor tables uploaded by this thread (for tests: a repeated call uploads none).
inline std::size_t& upload_count() {
  static thread_local std::size_t n = 0;
  return n;
}

/// Blocks of fold_filters that fit on the current device at once (the grid of one pass); 0 for the
/// staged kernel on a device that cannot give a block its shared memory.
template <class T, bool Advance, bool Shared, kernel_kind Kind>
std::size_t resident_blocks() {
  static thread_local int cached_device = -1;
  static thread_local std::size_t cached = 0;
  int device = 0, sms = 0, per_sm = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (device == cached_device) return cached;
  const auto kernel = fold_filters<T, Advance, Shared, Kind>;
  constexpr std::size_t dynamic = dynamic_shared_bytes(Kind);
  if (dynamic > 0) {
    // More than 48 KiB a block is opt-in, up to what the device allows.
    int optin = 0;
    cudaFuncAttributes attr{};
    check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute");
    check(cudaFuncGetAttributes(&attr, kernel), "cudaFuncGetAttributes");
    if (attr.sharedSizeBytes + dynamic > std::size_t(optin)) {
      cached = 0;
      cached_device = device;
      return cached;
    }
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dynamic)),
          "cudaFuncSetAttribute");
  }
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  // Ask for the largest shared-memory carveout: each block holds 32 KiB of bitsets.
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                             int(cudaSharedmemCarveoutMaxShared)),
        "cudaFuncSetAttribute");
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, block_threads, dynamic),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  // (The staged kernel may not fit at all: a device with less shared memory per SM than it asks.)
  cached = std::size_t(sms) * std::size_t(per_sm > 0 ? per_sm : dynamic > 0 ? 0 : 1);
  cached_device = device;
  return cached;
}

/// For benchmarks: whether this thread's calls launch reduce_layers as a programmatic dependent
/// launch where the device takes one (on by default; bench/bench_cuda.cu times both).
inline bool& dependent_launches() {
  static thread_local bool on = true;
  return on;
}

/// Whether the current device takes programmatic dependent launches (compute capability 9.0 and
/// newer; see allow_dependent_launch in kernel.cuh).
inline bool device_takes_dependent_launch() {
  static thread_local int cached_device = -1;
  static thread_local bool cached = false;
  int device = 0, major = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (device == cached_device) return cached;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  cached = major >= 9;
  cached_device = device;
  return cached;
}

/// Launches the per-layer merge of a pass after its fold_filters on `stream`: where the device
/// allows, as a programmatic dependent launch, whose start overlaps the end of fold_filters
/// (reduce_layers waits for its results before it reads them).
template <class T>
void launch_reduce_layers(const pass_args<T>& a, cudaStream_t stream) {
#if CUDART_VERSION >= 12000
  if (dependent_launches() && device_takes_dependent_launch()) {
    cudaLaunchAttribute attr[1] = {};
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(a.n_layers));
    cfg.blockDim = dim3(block_threads);
    cfg.dynamicSmemBytes = 0;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    check(cudaLaunchKernelEx(&cfg, reduce_layers<T>, static_cast<const layer_desc<T>*>(a.layers), a.n_layers,
                             a.n_filters, static_cast<const partial*>(a.filters), a.totals, a.queue),
          "launching reduce_layers");
    return;
  }
#endif
  reduce_layers<T><<<unsigned(a.n_layers), block_threads, 0, stream>>>(a.layers, a.n_layers, a.n_filters, a.filters,
                                                                       a.totals, a.queue);
  check(cudaGetLastError(), "launching reduce_layers");
}

/// The device of run_pass (fevo/cuda/pass.hpp): the current CUDA device, work ordered on `stream`.
struct runtime_device {
  cudaStream_t stream;

  void check_pointer(const void* p, const char* which, std::size_t layer) {
    check_device_pointer(p, which, layer);
  }
  std::size_t alignment() const { return 256; }  // cudaMalloc's
  char* scratch(std::size_t bytes) { return static_cast<char*>(scratch::for_this_thread().get(bytes)); }
  uploaded_table& table() { return scratch::for_this_thread().table; }
  // Pinned host memory: no staging copies, one DMA each way.
  char* staging(std::size_t bytes) { return static_cast<char*>(pinned::for_this_thread().get(bytes)); }
  template <class T, bool Advance, bool Shared, kernel_kind Kind>
  std::size_t max_blocks() {
    return resident_blocks<T, Advance, Shared, Kind>();
  }
  void upload(void* dst, const void* src, std::size_t bytes) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream), "copying layer descriptors");
    ++upload_count();
  }
  template <class T, bool Advance, bool Shared, kernel_kind Kind>
  void fold(const pass_args<T>& a) {
    kernel_timer& timer = kernel_timer::for_this_thread();
    if (timer.on) timer.events.start(stream);
    fold_filters<T, Advance, Shared, Kind><<<a.grid, block_threads, dynamic_shared_bytes(Kind), stream>>>(
        a.layers, a.n_layers, a.n_items, a.n_filters, a.filters, a.r, a.totals, a.done, a.queue);
    check(cudaGetLastError(), "launching fold_filters");
    ++launch_count();
    if (!a.done) {
      launch_reduce_layers(a, stream);
      ++launch_count();
    }
    if (timer.on) timer.events.stop(stream);
  }
  void download(void* dst, const void* src, std::size_t bytes) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "copying the results");
  }
  void finish() {
    check(cudaStreamSynchronize(stream), "the fused pass");
    kernel_timer& timer = kernel_timer::for_this_thread();
    if (timer.on) timer.last_ms = timer.events.read();
  }
  tuning_table& tuning() { return tuning_for_this_thread().table; }
  void time_start() { tuning_for_this_thread().events.start(stream); }
  void time_stop() { tuning_for_this_thread().events.stop(stream); }
  float time_read() { return tuning_for_this_thread().events.read(); }
};

template <class T>
inline constexpr bool always_false = false;

}  // namespace detail

/// What the last call of this host thread on fevo::cuda::par launched: its kernel (kernel_name:
/// "full", "lean", "queued" or "staged"), whether it was the shared-warp instantiation, how many
/// kernels could have served it, and, under autotune(), whether the kernel was still being timed.
using detail::pass_report;
using detail::kernel_kind;
using detail::kernel_name;
inline pass_report last_pass() { return detail::last_pass_report(); }

template <class T>
void evaluate(const policy& pol, layer_task<T, device_space>* tasks, std::size_t n_tasks) {
  detail::runtime_device dev{pol.stream};
  detail::run_pass<T, false>(dev, pol.options(), tasks, n_tasks, nullptr);
}

/// Host views reach here only by mistake: say so at compile time.
template <class T>
void evaluate(const policy&, layer_task<T, host_space>*, std::size_t) {
  static_assert(detail::always_false<T>,
                "fevo::cuda::par needs views of device memory: make them with "
                "fevo::oihw<fevo::device_space>(...) or fevo::strided<fevo::device_space>(...)");
}

/// compare-and-advance for a whole model in one fused pass (two launches, or one): the metrics of every
/// (prev, next) pair, and prev := next, for training loops that keep one device copy of the
/// previous snapshot. Results follow the order of `layers`; with `per_filter`, one
/// filter_results per layer. The prev spans must not overlap each other or any next (checked).
template <class T>
std::vector<layer_metrics> compare_and_advance_layers(const policy& pol,
                                                      const std::vector<advance_pair<T>>& layers, double tau,
                                                      std::vector<filter_results>* per_filter = nullptr) {
  detail::runtime_device dev{pol.stream};
  return detail::advance_layers(dev, pol.options(), layers, tau, per_filter);
}

/// Computes the metrics of (prev, next) and overwrites prev with next in the same pass (one
/// layer; see compare_and_advance_layers for a whole model in one pass).
template <class T>
layer_metrics compare_and_advance(const policy& pol, basic_filter_view<T, device_space> prev,
                                  basic_filter_view<const T, device_space> next, double tau,
                                  filter_results* per_filter = nullptr) {
  static_assert(!std::is_const_v<T>, "compare_and_advance writes prev: pass a view of mutable memory");
  std::vector<advance_pair<T>> one{{std::string(), prev, next}};
  if (!per_filter) return compare_and_advance_layers(pol, one, tau)[0];
  std::vector<filter_results> per;
  const layer_metrics m = compare_and_advance_layers(pol, one, tau, &per)[0];
  *per_filter = std::move(per[0]);
  return m;
}

}  // namespace fevo::cuda
