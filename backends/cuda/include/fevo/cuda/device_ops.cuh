// The few device operations fevo::cuda's kernels need beyond CUDA C++: PTX for an L2 prefetch
// hint, asynchronous copies into shared memory, programmatic dependent launches, and a global
// memory hint. nvcc only. (A host build of the kernels, tests/simt, declares its own versions of
// these functions before it includes kernels.cuh.)
#pragma once

#include <fevo/config.hpp>

#include <cstdint>

namespace fevo::cuda::detail {

/// A hint that the 128-byte line holding p will be read soon: it is fetched into L2 and nothing
/// waits for it (no register, no stall), so it adds bytes in flight that loads alone, capped by
/// registers, cannot. p is always inside a buffer of the call (the emulated tests check this).
__device__ inline void prefetch_l2(const void* p) {
#if defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
  (void)p;
#endif
}

/// Asynchronous copies of 16 bytes from global into shared memory (cp.async.cg, sm_80 and newer:
/// through L2, no register holds the bytes in flight), committed in groups, each thread waiting
/// until at most N of its own groups are still pending. A thread may read what it copied once the
/// group is complete, and nothing else (no thread reads another's copies, so no barrier is
/// needed). Below sm_80 the copy is a plain load and store, and the waits are no-ops.
__device__ inline void copy_async16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(src) : "memory");
#else
  *static_cast<uint4*>(dst) = *static_cast<const uint4*>(src);
#endif
}
__device__ inline void commit_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N>
__device__ inline void wait_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
/// The block's dynamic shared memory, 16-byte aligned.
__device__ inline unsigned char* dynamic_shared() {
  extern __shared__ uint4 fevo_dynamic_shared[];
  return reinterpret_cast<unsigned char*>(fevo_dynamic_shared);
}

/// Tells nvcc that p points to global memory (the snapshots' pointers come from the descriptor
/// table, so it cannot tell), so that 16-byte loads and stores through it are global ones
/// (LDG.E.128, STG.E.128) rather than generic ones (LD.E.128), which first resolve which memory an
/// address is in. Every pointer handed to the kernels is device global memory (fevo::cuda checks
/// each with cudaPointerGetAttributes).
template <class U>
__device__ inline void assume_global(const U* p) {
#if defined(__CUDA_ARCH__)
  __builtin_assume(__isGlobal(p));
#else
  (void)p;
#endif
}

/// Programmatic dependent launch (compute capability 9.0 and newer; nothing on older GPUs, where
/// the host launches the merge plainly): the fused kernel lets the launch of the merge after it
/// begin as soon as all its blocks are running; the merge waits, before it reads anything, until
/// the fused kernel has finished and its writes are visible, as a plain launch would.
__device__ inline void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}
__device__ inline void wait_for_prerequisite_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace fevo::cuda::detail
