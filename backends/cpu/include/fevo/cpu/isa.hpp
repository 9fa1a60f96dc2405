// Which instruction set the CPU backend's kernels use, chosen once at run time.
//
// The kernels (kernel.hpp, over the primitives of simd.hpp) are compiled several times in every
// translation unit that includes <fevo/cpu.hpp>: once for the compiler's baseline ("generic":
// whatever the flags allow, e.g. SSE2 on x86-64 or NEON on AArch64, through GCC/Clang vector
// extensions) and, on x86-64 with GCC or Clang, once for AVX2+FMA and once for AVX-512, each in
// its own namespace inside a target-attribute region. evaluate() picks one from the CPU's
// features (cpuid, once per process) so that a default build runs as fast as a -march=native one.
//
// One definition rule: everything in fevo::cpu lives in an inline namespace named after the
// translation unit's baseline (cpu_x86_64_v1_dispatch ... cpu_x86_64_v4_dispatch, ...), so units
// compiled for different levels (a -march=native one next to a default one) never share an
// inline function whose code would only run on one of them; within one level every copy is the
// same code. The kernels of each instruction set are in namespaces of their own, so the linker
// never picks the AVX-512 copy of a function for an AVX2 caller.
#pragma once

#include <fevo/config.hpp>

#include <atomic>
#include <cstdint>
#include <vector>

// GCC/Clang vector extensions for the generic kernel; without them (another compiler, nvcc's
// front end, or FEVO_CPU_NO_VECTOR_EXTENSIONS) it is written with plain arrays of 4 floats.
#if (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && !defined(FEVO_CPU_NO_VECTOR_EXTENSIONS)
#define FEVO_CPU_VECTOR_EXTENSIONS 1
#else
#define FEVO_CPU_VECTOR_EXTENSIONS 0
#endif

// The AVX2 and AVX-512 kernels: x86-64 with GCC or Clang (target attributes, cpuid), unless
// FEVO_CPU_NO_ISA_DISPATCH asks for the generic kernel alone.
#if (defined(__x86_64__) || defined(_M_X64)) && FEVO_CPU_VECTOR_EXTENSIONS && !defined(FEVO_CPU_NO_ISA_DISPATCH)
#define FEVO_CPU_X86_DISPATCH 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define FEVO_CPU_X86_DISPATCH 0
#if defined(__SSE2__) && FEVO_CPU_VECTOR_EXTENSIONS
#include <emmintrin.h>  // the generic kernel's movemask on x86-64
#endif
#endif

/// Defined where fevo::cpu::instruction_set() and the ISA selection exist.
#define FEVO_CPU_ISA_DISPATCH 1

// The inline namespace: this translation unit's baseline (x86-64 psABI level) and which kernels it
// compiles (all, the generic one alone, or the one without vector extensions).
#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__AVX512DQ__) && defined(__AVX2__) && defined(__FMA__)
#define FEVO_CPU_LEVEL x86_64_v4
#elif defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__BMI2__) && \
    defined(__F16C__)
#define FEVO_CPU_LEVEL x86_64_v3
#elif defined(__x86_64__) && defined(__SSE4_2__) && defined(__POPCNT__)
#define FEVO_CPU_LEVEL x86_64_v2
#elif defined(__x86_64__)
#define FEVO_CPU_LEVEL x86_64_v1
#else
#define FEVO_CPU_LEVEL baseline
#endif
#if FEVO_CPU_X86_DISPATCH
#define FEVO_CPU_KERNELS dispatch
#elif FEVO_CPU_VECTOR_EXTENSIONS
#define FEVO_CPU_KERNELS generic
#else
#define FEVO_CPU_KERNELS portable
#endif
#define FEVO_CPU_NS_NAME(level, kernels) cpu_##level##_##kernels
#define FEVO_CPU_NS_EXPAND(level, kernels) FEVO_CPU_NS_NAME(level, kernels)
#define FEVO_CPU_BASELINE_NS FEVO_CPU_NS_EXPAND(FEVO_CPU_LEVEL, FEVO_CPU_KERNELS)

// Target regions: every function defined between BEGIN and END is compiled for that instruction
// set (GCC's target pragma; clang's attribute pragma applies the same attribute to each one).
// Nothing is #included inside a region, so no standard-library inline function gets a target.
#define FEVO_CPU_AVX2_FEATURES "avx2,fma,bmi,bmi2,popcnt,lzcnt,f16c"
#define FEVO_CPU_AVX512_FEATURES \
  "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,bmi,bmi2,popcnt,lzcnt,f16c"
#if FEVO_CPU_X86_DISPATCH && defined(__clang__)
#define FEVO_CPU_PRAGMA(x) _Pragma(#x)
#define FEVO_CPU_TARGET_BEGIN(features) \
  FEVO_CPU_PRAGMA(clang attribute push(__attribute__((target(features))), apply_to = function))
#define FEVO_CPU_TARGET_END _Pragma("clang attribute pop")
#elif FEVO_CPU_X86_DISPATCH
#define FEVO_CPU_PRAGMA(x) _Pragma(#x)
#define FEVO_CPU_TARGET_BEGIN(features) _Pragma("GCC push_options") FEVO_CPU_PRAGMA(GCC target(features))
#define FEVO_CPU_TARGET_END _Pragma("GCC pop_options")
#endif

// A kernel function that its callers must inline (fold_lanes' walks: the compiler's own choice left
// hot code out of line).
#if defined(__GNUC__) || defined(__clang__)
#define FEVO_CPU_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define FEVO_CPU_ALWAYS_INLINE inline
#endif

namespace fevo::cpu {
inline namespace FEVO_CPU_BASELINE_NS {
namespace detail {

/// The kernels there are; each is one set of functions in its own namespace.
enum class isa : int {
  generic = 0,  ///< the compiler's baseline flags (GCC/Clang vector extensions)
  avx2 = 1,     ///< x86-64 AVX2, FMA, F16C, BMI2 (x86-64-v3)
  avx512 = 2,   ///< x86-64 AVX-512 F/BW/VL/DQ (x86-64-v4)
};

inline const char* isa_name(isa i) {
  switch (i) {
    case isa::avx512: return "avx512";
    case isa::avx2: return "avx2";
    case isa::generic: break;
  }
  return "generic";
}

/// The best kernel this CPU (and its operating system) can run, from cpuid.
inline isa detect_isa() {
#if FEVO_CPU_X86_DISPATCH
  __builtin_cpu_init();
  unsigned a = 0, b = 0, c = 0, d = 0;
  // __builtin_cpu_supports also checks that the OS saves the AVX/AVX-512 registers (XCR0).
  // F16C (CPUID.1:ECX bit 29) is not a feature name in every compiler's builtin.
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                  __builtin_cpu_supports("popcnt") && f16c;
  if (v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return isa::avx512;
  if (v3) return isa::avx2;
#endif
  return isa::generic;
}

/// detect_isa(), computed once per process.
inline isa best_isa() {
  static const isa best = detect_isa();
  return best;
}

/// Every kernel this CPU can run, the generic one first.
inline std::vector<isa> supported_isas() {
  std::vector<isa> v{isa::generic};
  for (const isa i : {isa::avx2, isa::avx512})
    if (static_cast<int>(i) <= static_cast<int>(best_isa())) v.push_back(i);
  return v;
}

/// For tests and benchmarks only: a kernel to use instead of best_isa(), or -1.
inline std::atomic<int>& forced_isa() {
  static std::atomic<int> forced{-1};
  return forced;
}

/// For tests and benchmarks only: while it lives, evaluate() runs the given kernel (which this CPU
/// must support; see supported_isas()). Not for use while another thread computes.
class isa_override {
 public:
  explicit isa_override(isa i) : previous_(forced_isa().exchange(static_cast<int>(i))) {}
  ~isa_override() { forced_isa().store(previous_); }
  isa_override(const isa_override&) = delete;
  isa_override& operator=(const isa_override&) = delete;

 private:
  int previous_;
};

/// The kernel evaluate() runs: best_isa() unless a test forced another.
inline isa active_isa() {
  const int f = forced_isa().load(std::memory_order_relaxed);
  return f >= 0 ? static_cast<isa>(f) : best_isa();
}

}  // namespace detail

/// The instruction set of the kernel fevo::cpu::par runs on this machine: "avx512", "avx2" or
/// "generic" (the compiler's baseline: SSE2 on x86-64 unless built with more, NEON on AArch64).
inline const char* instruction_set() { return detail::isa_name(detail::active_isa()); }

}  // namespace FEVO_CPU_BASELINE_NS
}  // namespace fevo::cpu
