// The device operations of fevo/cuda/device_ops.cuh (PTX under nvcc) on the SIMT emulator, for
// host builds of fevo::cuda's kernels. Include after simt.hpp and before <fevo/cuda/kernels.cuh>:
//
//   #include "simt/simt.hpp"
//   #include "simt/device_ops.hpp"
//   #include <fevo/cuda/kernels.cuh>
#pragma once

#include "simt.hpp"

namespace fevo::cuda::detail {

/// The L2 prefetch hint: a byte is read (so a hint outside the call's buffers fails under ASan)
/// and the address is logged where a test asks (simt_prefetched).
inline void prefetch_l2(const void* p) { ::simt_prefetch_l2(p); }
/// cp.async and its groups: copies land only when their thread waits for them.
inline void copy_async16(void* dst, const void* src) { ::simt_copy_async(dst, src, 16); }
inline void commit_copies() { ::simt_commit_copies(); }
template <int N>
inline void wait_copies() {
  ::simt_wait_copies(N);
}
inline unsigned char* dynamic_shared() { return ::simt_dynamic_shared(); }
/// Hints without an effect on the emulator: every pointer is host memory, and launches run one
/// after another.
template <class U>
inline void assume_global(const U*) {}
inline void allow_dependent_launch() {}
inline void wait_for_prerequisite_grid() {}

}  // namespace fevo::cuda::detail
