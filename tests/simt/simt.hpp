// A small SIMT emulator that runs fevo's CUDA kernels on the host, so that their logic (indexing,
// bitsets, warp exchanges, block barriers, compare-and-advance stores) is tested by every build,
// with or without a GPU, and under AddressSanitizer, which sees any read or write outside the
// buffers the test allocated.
//
// Include it, and simt/device_ops.hpp (fevo's device operations on the emulator), before the
// kernel header, in a file compiled by a host compiler (never nvcc):
//
//   #include "simt/simt.hpp"
//   #include "simt/device_ops.hpp"
//   #include <fevo/cuda/kernels.cuh>
//   simt::launch(grid, block, [&] { fevo::cuda::detail::fold_filters<Tuning, float, false, false>(...); });
//
// Every CUDA thread is a fiber on the calling OS thread (a few instructions of context switch on
// x86-64, ucontext elsewhere): a block's threads run until
// they reach a barrier (__syncthreads, __syncwarp, a warp shuffle or ballot) and resume when
// every thread the barrier waits for has arrived. Each round of the scheduler runs the waiting
// threads in the opposite order of the round before, so code that reads shared memory another
// lane writes without a barrier sees a stale value in one order or the other. Blocks run one
// after another, so `__shared__` is `static` storage. Threads that meet at different barriers
// (divergent code) are reported (simt::error), and so is a barrier some threads never reach (a
// deadlock), instead of a hang. Asynchronous copies into shared memory (cp.async) land only when
// their thread waits for their group, so a kernel that reads a stage too early reads stale bytes;
// a thread that exits with copies it never waited for is reported.
//
// What it does not model: timing, concurrent blocks, the GPU memory model (it is sequentially
// consistent) and masks other than the full warp (kernels here always use 0xffffffff).
#pragma once

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIMT_ASAN 1
#endif
#endif
#if defined(SIMT_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__CUDACC__)
#error "simt.hpp emulates CUDA on the host: compile this file with a host compiler, not nvcc"
#endif

namespace simt {

struct error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace detail {

inline constexpr unsigned full_mask = 0xffffffffu;

#if defined(__x86_64__)
// switch_stack(&save, to): saves the callee-saved registers on the current stack, stores the
// stack pointer in *save, and resumes the context saved at `to`. MXCSR and the x87 control word
// are not switched: no kernel changes the rounding mode. (ucontext's swapcontext also saves the
// signal mask: a system call per switch, 50 times slower.)
extern "C" void fevo_simt_switch_stack(void** save, void* to);
asm(R"(
  .text
  .weak fevo_simt_switch_stack
  .type fevo_simt_switch_stack, @function
fevo_simt_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fevo_simt_switch_stack, .-fevo_simt_switch_stack
)");

struct context {
  void* sp = nullptr;
};
inline void switch_context(context& from, context& to) { fevo_simt_switch_stack(&from.sp, to.sp); }
/// A context that starts `entry` (which never returns) on [stack, stack + bytes).
inline void make_context(context& c, char* stack, std::size_t bytes, void (*entry)()) {
  auto top = reinterpret_cast<std::uintptr_t>(stack + bytes) & ~std::uintptr_t(15);
  auto* p = reinterpret_cast<std::uint64_t*>(top);
  *--p = 0;                                         // entry's (absent) return address
  *--p = reinterpret_cast<std::uint64_t>(entry);    // where the first switch "returns" to
  for (int r = 0; r < 6; ++r) *--p = 0;             // rbp, rbx, r12..r15
  c.sp = p;
}
#else
struct context {
  ucontext_t uc{};
};
inline void switch_context(context& from, context& to) { swapcontext(&from.uc, &to.uc); }
inline void make_context(context& c, char* stack, std::size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

/// Where in the source a thread calls a barrier.
struct site {
  const char* file = nullptr;
  int line = 0;
  bool operator==(const site& o) const {
    return line == o.line && (file == o.file || (file && o.file && std::strcmp(file, o.file) == 0));
  }
  bool operator!=(const site& o) const { return !(*this == o); }
};

struct barrier {
  unsigned arrived = 0;
  unsigned long long generation = 0;
  site where;  // where the threads of this round called it
};

/// One asynchronous copy (cp.async) a thread issued and has not waited for yet.
struct pending_copy {
  void* dst;
  const void* src;
  std::size_t bytes;
};

struct fiber {
  context ctx;
  std::unique_ptr<char[]> stack;
  dim3 idx;
  unsigned linear = 0;
  bool done = false;
#if defined(SIMT_ASAN)
  // Where on its stack the thread's last run may have left poisoned shadow (its live frames'
  // redzones): from the stack pointer of its last switch on a clean exit; the whole stack when
  // it threw or was abandoned (the start of the stack).
  const char* dirty_from = nullptr;
#endif
  std::vector<pending_copy> open;                 // issued, not yet committed
  std::vector<std::vector<pending_copy>> groups;  // committed, oldest first, not yet waited for
};

struct machine {
  static constexpr std::size_t stack_bytes = std::size_t(1) << 18;  // 256 KiB: room for ASan frames
  context scheduler;
  std::vector<fiber> fibers;
  fiber* current = nullptr;
  // The round in progress: its threads run in order (or in reverse order), each until it waits
  // or exits, and hand over to the next one directly; the last hands back to the scheduler.
  unsigned round_size = 0;
  unsigned round_pos = 0;
  bool round_reverse = false;
  dim3 block_idx, block_dim, grid_dim;
  unsigned live = 0;
  barrier block;
  std::vector<barrier> warps;
  std::vector<unsigned long long> lanes;  // one exchange slot per thread
  std::unique_ptr<unsigned char[]> dynamic_shared;  // the block's, exactly as large as the launch asked
  unsigned long long progress = 0;        // barrier arrivals and exits, for deadlock detection
  const std::function<void()>* body = nullptr;
  std::exception_ptr failure;
  bool running = false;
#if defined(SIMT_ASAN)
  const void* main_stack = nullptr;
  std::size_t main_stack_size = 0;
#endif
};

/// The one emulated device (launches run on one host thread at a time). A namespace-scope
/// variable, not a function's static: no guard is checked at each of the many calls.
inline machine the_machine;
inline machine& m() { return the_machine; }

/// The next thread of the round that has not exited (null: the round is over); moves past it.
inline fiber* next_in_round() {
  machine& M = m();
  while (M.round_pos < M.round_size) {
    const unsigned k = M.round_pos++;
    fiber& f = M.fibers[M.round_reverse ? M.round_size - 1 - k : k];
    if (!f.done) return &f;
  }
  return nullptr;
}

/// Switches from `from` (the scheduler's context or the current thread's) to the next thread of
/// the round, or to the scheduler when the round is over. One switch per hand-over: a thread
/// that waits resumes the next one itself, not through the scheduler. `exiting`: `from` is a
/// thread that has exited and is never resumed.
inline void hand_over(context& from, bool exiting = false) {
  machine& M = m();
  fiber* next = next_in_round();
  const bool to_scheduler = next == nullptr;
  if (to_scheduler && &from == &M.scheduler) return;  // nothing to run
  if (!to_scheduler) M.current = next;
#if defined(SIMT_ASAN)
  void* fake = nullptr;
  if (to_scheduler)
    __sanitizer_start_switch_fiber(exiting ? nullptr : &fake, M.main_stack, M.main_stack_size);
  else
    __sanitizer_start_switch_fiber(exiting ? nullptr : &fake, next->stack.get(), machine::stack_bytes);
#else
  (void)exiting;
#endif
  switch_context(from, to_scheduler ? M.scheduler : next->ctx);
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

/// Hands over to the next thread; returns when this thread's turn comes again (a later round).
inline void yield() { hand_over(m().current->ctx); }

#if defined(SIMT_ASAN)
/// The stack pointer of the calling thread.
inline const char* stack_pointer() {
#if defined(__x86_64__)
  const char* sp;
  asm volatile("movq %%rsp, %0" : "=r"(sp));
  return sp;
#else
  return nullptr;  // unknown: the whole stack is unpoisoned
#endif
}
#endif

inline void entry() {
  machine& M = m();
#if defined(SIMT_ASAN)
  // The first thread a launch starts comes from the scheduler: the stack it switched from is the
  // launching thread's own.
  const void* from_stack = nullptr;
  std::size_t from_size = 0;
  __sanitizer_finish_switch_fiber(nullptr, &from_stack, &from_size);
  if (!M.main_stack) {
    M.main_stack = from_stack;
    M.main_stack_size = from_size;
  }
#endif
  bool threw = false;
  try {
    (*M.body)();
    const fiber& f = *M.current;
    bool pending = !f.open.empty();
    for (const auto& g : f.groups) pending = pending || !g.empty();
    if (pending)
      throw error("simt: thread " + std::to_string(f.linear) + " of block " + std::to_string(M.block_idx.x) +
                  " exits with asynchronous copies it never waited for");
  } catch (...) {
    threw = true;
    if (!M.failure) M.failure = std::current_exception();
  }
#if defined(SIMT_ASAN)
  // Every frame below this one has returned (clearing its redzones' shadow), but for the
  // hand-over below, which never returns (4 KiB are left for it), unless the kernel threw: then
  // the whole stack is unpoisoned before its next use.
  {
    constexpr std::ptrdiff_t hand_over_frame = 4096;
    const char* sp = stack_pointer();
    const char* lo = M.current->stack.get();
    M.current->dirty_from = threw || !sp || sp - lo < hand_over_frame ? lo : sp - hand_over_frame;
  }
#else
  (void)threw;
#endif
  M.current->done = true;
  --M.live;
  ++M.progress;
  // A thread that exits counts as arrived at the block barrier (as on sm_70 and later).
  if (M.block.arrived > 0 && M.block.arrived >= M.live) {
    M.block.arrived = 0;
    ++M.block.generation;
  }
  context dead;  // this fiber is never resumed
  hand_over(dead, true);
}

/// Threads of the block at `b` (met at b.where) and at `at`: divergent code. Out of line, so
/// that the message's strings do not widen the frame of every barrier (which AddressSanitizer
/// poisons and clears at each call).
[[noreturn]] __attribute__((noinline, cold)) inline void divergent(const barrier& b, const site& at) {
  const machine& M = m();
  throw error("simt: threads of block (" + std::to_string(M.block_idx.x) + "," + std::to_string(M.block_idx.y) +
              "," + std::to_string(M.block_idx.z) + ") meet at different barriers, " + b.where.file + ":" +
              std::to_string(b.where.line) + " and " + at.file + ":" + std::to_string(at.line) +
              " (__syncthreads, __syncwarp or a warp exchange in divergent code)");
}

/// Waits until `expected` threads have arrived at `b`. Every thread of a round must call it from
/// the same line: threads at two different barriers are an error (divergent code).
inline void arrive_and_wait(barrier& b, unsigned expected, const site& at) {
  machine& M = m();
  ++M.progress;
  if (b.arrived == 0) b.where = at;
  else if (b.where != at) divergent(b, at);
  const unsigned long long gen = b.generation;
  if (++b.arrived >= expected) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  while (b.generation == gen) yield();
}

inline unsigned lane() { return m().current->linear & 31u; }
inline unsigned warp() { return m().current->linear >> 5; }

inline void warp_sync(unsigned mask, const site& at) {
  if (mask != full_mask) throw error("simt: only full-warp masks (0xffffffff) are emulated");
  arrive_and_wait(m().warps[warp()], 32, at);
}

template <class V>
unsigned long long to_slot(V v) {
  static_assert(sizeof(V) <= 8 && std::is_trivially_copyable_v<V>, "simt: exchanged values fit 8 bytes");
  unsigned long long s = 0;
  std::memcpy(&s, &v, sizeof(V));
  return s;
}
template <class V>
V from_slot(unsigned long long s) {
  V v;
  std::memcpy(&v, &s, sizeof(V));
  return v;
}

/// Every lane of the warp publishes `v`; each gets the value of lane src(lane).
template <class V, class Src>
V exchange(unsigned mask, V v, Src src, const site& at) {
  machine& M = m();
  const unsigned base = warp() * 32, l = lane();
  M.lanes[base + l] = to_slot(v);
  warp_sync(mask, at);
  const unsigned from = src(l);
  const V out = from < 32 ? from_slot<V>(M.lanes[base + from]) : v;
  warp_sync(mask, at);  // nobody overwrites a slot before every lane has read
  return out;
}

/// The barriers and warp exchanges, called at a source line (the CUDA names below are macros that
/// pass it).
struct at {
  site where;
  void syncthreads() const { arrive_and_wait(m().block, m().live, where); }
  void syncwarp(unsigned mask = full_mask) const { warp_sync(mask, where); }
  template <class V>
  V shfl(unsigned mask, V v, int src, int width = 32) const {
    return exchange(
        mask, v, [&](unsigned l) { return unsigned(int(l) / width * width + (src % width + width) % width); },
        where);
  }
  template <class V>
  V shfl_down(unsigned mask, V v, unsigned delta, int width = 32) const {
    return exchange(
        mask, v,
        [&](unsigned l) {
          const unsigned s = l + delta;
          return s / unsigned(width) == l / unsigned(width) ? s : 32u;  // out of the segment: own value
        },
        where);
  }
  template <class V>
  V shfl_xor(unsigned mask, V v, int lane_mask, int width = 32) const {
    return exchange(
        mask, v,
        [&](unsigned l) {
          const unsigned s = l ^ unsigned(lane_mask);
          return s / unsigned(width) == l / unsigned(width) ? s : l;
        },
        where);
  }
  unsigned ballot(unsigned mask, int predicate) const {
    machine& M = m();
    const unsigned base = warp() * 32;
    M.lanes[base + lane()] = predicate ? 1 : 0;
    warp_sync(mask, where);
    unsigned word = 0;
    for (unsigned l = 0; l < 32; ++l) word |= unsigned(M.lanes[base + l] != 0) << l;
    warp_sync(mask, where);
    return word;
  }
};

}  // namespace detail

/// Runs `kernel` (a callable; every thread calls it) on grid x block threads, one block at a time,
/// each block with `dynamic_shared` bytes of dynamic shared memory (filled with 0xA5 at each
/// block's start, as a GPU leaves it undefined). Rethrows the first exception a thread threw;
/// simt::error on a deadlock.
inline void launch(dim3 grid, dim3 block, const std::function<void()>& kernel, std::size_t dynamic_shared = 0) {
  detail::machine& M = detail::m();
  if (M.running) throw error("simt: launches do not nest");
  const unsigned n = block.x * block.y * block.z;
  if (n == 0 || n % 32 != 0 || n > 1024) throw error("simt: a block must be 32..1024 threads, whole warps");
  M.running = true;
  M.failure = nullptr;
  M.body = &kernel;
  M.grid_dim = grid;
  M.block_dim = block;
  if (M.fibers.size() < n) M.fibers.resize(n);
  M.warps.assign(n / 32, detail::barrier{});
  M.lanes.assign(n, 0);
  M.dynamic_shared.reset(dynamic_shared ? new unsigned char[dynamic_shared] : nullptr);
#if defined(SIMT_ASAN)
  M.main_stack = nullptr;  // learnt by the first thread started (entry)
#endif
  struct reset {
    detail::machine& M;
    ~reset() { M.running = false; }
  } guard{M};
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        M.block_idx = {bx, by, bz};
        M.block = {};
        for (auto& w : M.warps) w = {};
        if (dynamic_shared) std::memset(M.dynamic_shared.get(), 0xA5, dynamic_shared);
        M.live = n;
        for (unsigned t = 0; t < n; ++t) {
          detail::fiber& f = M.fibers[t];
          if (!f.stack) f.stack.reset(new char[detail::machine::stack_bytes]);
          f.linear = t;
          f.idx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
          f.done = false;
          f.open.clear();
          f.groups.clear();
#if defined(SIMT_ASAN)
          // A finished thread leaves its last frames' redzones poisoned on the stack it used (an
          // abandoned one, all its frames'). A new stack has none.
          if (f.dirty_from) {
            const char* end = f.stack.get() + detail::machine::stack_bytes;
            __asan_unpoison_memory_region(f.dirty_from, std::size_t(end - f.dirty_from));
          }
          f.dirty_from = f.stack.get();  // until it exits cleanly
#endif
          // Stack tops staggered by 320 bytes a thread: equally aligned tops would share cache sets.
          detail::make_context(f.ctx, f.stack.get(), detail::machine::stack_bytes - (t % 64) * 320,
                               &detail::entry);
        }
        M.round_size = n;
        for (unsigned round = 0; M.live > 0; ++round) {
          const unsigned long long before = M.progress;
          M.round_pos = 0;
          M.round_reverse = round % 2 != 0;
          detail::hand_over(M.scheduler);  // back when the round's last thread waits or exits
          if (M.failure) std::rethrow_exception(M.failure);
          if (M.live > 0 && M.progress == before) {
            // Every live thread waits at a barrier that can never open: abandon the block.
            throw error("simt: deadlock in block (" + std::to_string(bx) + "," + std::to_string(by) + "," +
                        std::to_string(bz) + "): " + std::to_string(M.live) +
                        " threads wait at barriers the others never reach");
          }
        }
      }
}

inline void launch(unsigned grid, unsigned block, const std::function<void()>& kernel,
                   std::size_t dynamic_shared = 0) {
  launch(dim3{grid, 1, 1}, dim3{block, 1, 1}, kernel, dynamic_shared);
}

/// Fibers a launch keeps for the next one (their stacks): freed here.
inline void release() {
  if (!detail::m().running) detail::m().fibers.clear();
}

}  // namespace simt

// ---- the CUDA names the kernels use ------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define threadIdx (::simt::detail::m().current->idx)
#define blockIdx (::simt::detail::m().block_idx)
#define blockDim (::simt::detail::m().block_dim)
#define gridDim (::simt::detail::m().grid_dim)

#define SIMT_AT ::simt::detail::at{::simt::detail::site{__FILE__, __LINE__}}
#define __syncthreads() SIMT_AT.syncthreads()
#define __syncwarp(...) SIMT_AT.syncwarp(__VA_ARGS__)
#define __shfl_sync(...) SIMT_AT.shfl(__VA_ARGS__)
#define __shfl_down_sync(...) SIMT_AT.shfl_down(__VA_ARGS__)
#define __shfl_xor_sync(...) SIMT_AT.shfl_xor(__VA_ARGS__)
#define __ballot_sync(...) SIMT_AT.ballot(__VA_ARGS__)
inline void __threadfence() {}
inline void __threadfence_block() {}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
template <class V>
V atomicAdd(V* p, V v) {  // one OS thread: a plain read-modify-write is atomic
  const V old = *p;
  *p = old + v;
  return old;
}
template <class V>
V __ldcg(const V* p) {
  return *p;
}
/// Where tests collect the addresses of fevo's L2 prefetch hints (null: nowhere).
inline std::vector<const void*>* simt_prefetched = nullptr;
/// fevo's L2 prefetch hint: a byte is read, so a hint outside the buffers fails under ASan.
inline void simt_prefetch_l2(const void* p) {
  (void)*static_cast<const volatile unsigned char*>(p);
  if (simt_prefetched) simt_prefetched->push_back(p);
}
/// The block's dynamic shared memory (extern __shared__), as large as the launch asked.
inline unsigned char* simt_dynamic_shared() {
  unsigned char* p = ::simt::detail::m().dynamic_shared.get();
  if (!p) throw ::simt::error("simt: the kernel reads dynamic shared memory its launch did not ask for");
  return p;
}
/// cp.async: the copy is only recorded. It lands when the thread waits for its group, so a read
/// of the destination before that finds what was there before (an early read is caught).
inline void simt_copy_async(void* dst, const void* src, std::size_t bytes) {
  ::simt::detail::m().current->open.push_back({dst, src, bytes});
}
/// cp.async.commit_group: the copies issued since the last commit form a group (maybe empty).
inline void simt_commit_copies() {
  auto& f = *::simt::detail::m().current;
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}
/// cp.async.wait_group n: the thread's oldest groups land until at most n are pending; the
/// sources are read now (they must still be valid: ASan checks every byte).
inline void simt_wait_copies(int n) {
  auto& f = *::simt::detail::m().current;
  while (f.groups.size() > std::size_t(n)) {
    for (const auto& c : f.groups.front()) std::memcpy(c.dst, c.src, c.bytes);
    f.groups.erase(f.groups.begin());
  }
}
