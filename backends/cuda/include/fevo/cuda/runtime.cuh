// The Device of dispatch.hpp on a GPU, through the CUDA runtime: checked pointers, device scratch
// and pinned staging memory reused across calls, occupancy, and the launches. Needs nvcc.
#pragma once

#include <fevo/config.hpp>

#include <cstddef>
#include <unordered_set>
#include <vector>

#include <cuda_runtime_api.h>

#include <fevo/error.hpp>

#include "dispatch.hpp"
#include "kernels.cuh"

namespace fevo::cuda {

/// Counters of this host thread's fevo::cuda calls: kernel launches and descriptor-table uploads
/// (a training loop's repeated call on the same buffers uploads nothing); with time_kernels set,
/// each call records CUDA events around its kernels and kernel_ms holds their device time (the
/// pass without the host's part of the call). For benchmarks and tests; reading them costs nothing.
struct thread_stats {
  std::size_t launches = 0;
  std::size_t uploads = 0;
  bool time_kernels = false;
  float kernel_ms = 0;
};

namespace detail {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) ::fevo::detail::fail("CUDA error in ", what, ": ", cudaGetErrorString(e));
}

/// Pointers this host thread has checked already (bounded: forgotten all at once when full).
inline std::unordered_set<const void*>& checked_pointers() {
  static thread_local std::unordered_set<const void*> s;
  return s;
}

/// Refuses pointers the device cannot read: plain host memory and unknown pointers.
inline void check_device_pointer(const void* p, const char* which, std::size_t layer) {
  auto& seen = checked_pointers();
  if (seen.count(p)) return;
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error state of this query
    ::fevo::detail::fail("layer #", layer, ": ", which, " is not a CUDA pointer (", cudaGetErrorString(e), ")");
  }
  FEVO_EXPECTS(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged, "layer #", layer, ": ",
               which, " is host memory; fevo::cuda needs device (or managed) memory");
  if (seen.size() >= 4096) seen.clear();
  seen.insert(p);
}

/// Device memory reused across calls of one host thread (grown, never shrunk), so that a call
/// costs its two launches and small copies, not cudaMalloc/cudaFree; `table` says what its start
/// holds (forgotten when it moves).
class scratch {
 public:
  uploaded_table table;
  scratch() = default;
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
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
  pinned() = default;
  pinned(const pinned&) = delete;
  pinned& operator=(const pinned&) = delete;
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

/// This thread's thread_stats, and the two events that time its kernels (made at first use and
/// left to the driver at exit).
struct thread_timing {
  thread_stats stats;
  cudaEvent_t start = nullptr, stop = nullptr;
  static thread_timing& for_this_thread() {
    static thread_local thread_timing t;
    return t;
  }
};

/// Blocks of fold_filters<Tuning, T, Advance, Shared> that fit on the current device at once (the
/// grid of one pass); 0 for schedule::staged on a device that cannot give a block its shared
/// memory.
template <class Tuning, class T, bool Advance, bool Shared>
std::size_t resident_blocks() {
  static thread_local int cached_device = -1;
  static thread_local std::size_t cached = 0;
  int device = 0, sms = 0, per_sm = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (device == cached_device) return cached;
  const auto kernel = fold_filters<Tuning, T, Advance, Shared>;
  constexpr std::size_t dynamic = dynamic_shared_bytes<Tuning>();
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
  cached = std::size_t(sms) * std::size_t(per_sm > 0 ? per_sm : dynamic > 0 ? 0 : 1);
  cached_device = device;
  return cached;
}

/// Whether the current device takes programmatic dependent launches (compute capability 9.0 and
/// newer).
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

/// Launches the per-layer merge of a pass after its fold_filters on `stream`; with the tuning's
/// dependent_launch, where the device allows, as a programmatic dependent launch, whose start
/// overlaps the end of fold_filters (reduce_layers<true> waits for it before it reads anything).
template <class Tuning, class T>
void launch_reduce_layers(const pass_args<T>& a, cudaStream_t stream) {
#if CUDART_VERSION >= 12000
  if constexpr (Tuning::dependent_launch) {
    if (device_takes_dependent_launch()) {
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
      check(cudaLaunchKernelEx(&cfg, reduce_layers<true>, a.filter_start, static_cast<const partial*>(a.filters),
                               a.totals, a.queue),
            "launching reduce_layers");
      return;
    }
  }
#endif
  reduce_layers<Tuning::dependent_launch><<<unsigned(a.n_layers), block_threads, 0, stream>>>(a.filter_start, a.filters,
                                                                                              a.totals, a.queue);
  check(cudaGetLastError(), "launching reduce_layers");
}

/// The Device of run_pass (dispatch.hpp): the current CUDA device, work ordered on `stream`.
struct runtime_device {
  cudaStream_t stream;

  void check_pointer(const void* p, const char* which, std::size_t layer) { check_device_pointer(p, which, layer); }
  std::size_t alignment() const { return 256; }  // cudaMalloc's
  char* scratch(std::size_t bytes) { return static_cast<char*>(scratch::for_this_thread().get(bytes)); }
  uploaded_table& table() { return scratch::for_this_thread().table; }
  // Pinned host memory: no staging copies, one DMA each way.
  char* staging(std::size_t bytes) { return static_cast<char*>(pinned::for_this_thread().get(bytes)); }
  template <class Tuning, class T, bool Advance, bool Shared>
  std::size_t max_blocks() {
    return resident_blocks<Tuning, T, Advance, Shared>();
  }
  void upload(void* dst, const void* src, std::size_t bytes) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream), "copying layer descriptors");
    ++thread_timing::for_this_thread().stats.uploads;
  }
  template <class Tuning, class T, bool Advance, bool Shared>
  void launch(const pass_args<T>& a) {
    thread_timing& timing = thread_timing::for_this_thread();
    const bool timed = timing.stats.time_kernels;
    if (timed) {
      if (!timing.start) {
        check(cudaEventCreate(&timing.start), "cudaEventCreate");
        check(cudaEventCreate(&timing.stop), "cudaEventCreate");
      }
      check(cudaEventRecord(timing.start, stream), "cudaEventRecord");
    }
    fold_filters<Tuning, T, Advance, Shared><<<a.grid, block_threads, dynamic_shared_bytes<Tuning>(), stream>>>(
        a.layers, a.n_layers, a.n_items, a.filters, a.r, a.queue);
    check(cudaGetLastError(), "launching fold_filters");
    launch_reduce_layers<Tuning>(a, stream);
    timing.stats.launches += 2;
    if (timed) check(cudaEventRecord(timing.stop, stream), "cudaEventRecord");
  }
  void download(void* dst, const void* src, std::size_t bytes) {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "copying the results");
  }
  void finish() {
    check(cudaStreamSynchronize(stream), "the fused pass");
    thread_timing& timing = thread_timing::for_this_thread();
    if (timing.stats.time_kernels && timing.start)
      check(cudaEventElapsedTime(&timing.stats.kernel_ms, timing.start, timing.stop), "cudaEventElapsedTime");
  }
};

}  // namespace detail

/// This host thread's counters (thread_stats), to read or to set time_kernels.
inline thread_stats& stats() { return detail::thread_timing::for_this_thread().stats; }

}  // namespace fevo::cuda
