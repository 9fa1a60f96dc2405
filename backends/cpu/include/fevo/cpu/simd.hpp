// The vector primitives the CPU kernels (kernel.hpp) are written against, for one instruction set.
// Included by <fevo/cpu.hpp> once per kernel namespace, inside that set's target region, with
// FEVO_CPU_KERNEL_NS naming the namespace and FEVO_CPU_KERNEL_ISA the set (0 generic, 1 AVX2,
// 2 AVX-512). Not a header to include on its own, hence no include guard.
//
// A native vector holds L floats. Weights are widened to float on load, in order: f32 as is, bf16
// by a 16-bit shift, f16 exactly (F16C on x86-64-v3 and up; integer code otherwise). A comparison
// gives a `cmp` (a mask register, or a vector of all-ones lanes) from which the kernels take the
// changed bits (bit k = lane k) and per-lane counts.
// config.hpp first, as in every fevo header (its include guard makes this a no-op inside
// <fevo/cpu.hpp>'s target regions; it defines macros only).
#include <fevo/config.hpp>

#if !defined(FEVO_CPU_KERNEL_NS) || !defined(FEVO_CPU_KERNEL_ISA)
#error "fevo/cpu/simd.hpp is included by <fevo/cpu.hpp> only"
#endif

namespace fevo::cpu {
inline namespace FEVO_CPU_BASELINE_NS {
namespace detail {
namespace FEVO_CPU_KERNEL_NS {
namespace simd {

#if FEVO_CPU_KERNEL_ISA == 2  // ---- AVX-512 --------------------------------------------------------

inline constexpr int L = 16;
using vf = __m512;
using vi = __m512i;
using cmp = __mmask16;
struct vd2 {  // the L lanes widened to double: lanes 0..7, 8..15
  __m512d lo, hi;
};

inline vf zero() { return _mm512_setzero_ps(); }
inline vf splat(float x) { return _mm512_set1_ps(x); }
inline vi zero_i() { return _mm512_setzero_si512(); }
inline vd2 zero_d() { return {_mm512_setzero_pd(), _mm512_setzero_pd()}; }

inline vf load(const float* p) { return _mm512_loadu_ps(p); }
inline vf load(const bfloat16* p) {
  const __m512i w = _mm512_maskz_cvtepu16_epi32(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, w, 16));
}
inline vf load(const half* p) {  // vcvtph2ps: exact, subnormals, Inf and NaN included
  return _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

/// The first n (< L) elements, zeros after them; nothing past them is read (masked loads).
inline vf load_first(const float* p, std::size_t n) { return _mm512_maskz_loadu_ps(static_cast<cmp>((1u << n) - 1), p); }
inline vf load_first(const bfloat16* p, std::size_t n) {
  const __m256i h = _mm256_maskz_loadu_epi16(static_cast<cmp>((1u << n) - 1), p);
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, _mm512_maskz_cvtepu16_epi32(0xffff, h), 16));
}
inline vf load_first(const half* p, std::size_t n) {
  return _mm512_maskz_cvtph_ps(0xffff, _mm256_maskz_loadu_epi16(static_cast<cmp>((1u << n) - 1), p));
}

inline vf sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
inline vf abs(vf d) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(d), _mm512_set1_epi32(0x7fffffff))); }
/// rule::changed: not (|d| <= tau), so NaN is changed (NLE, unordered: true).
inline cmp changed(vf abs_d, vf tau) { return _mm512_cmp_ps_mask(abs_d, tau, _CMP_NLE_UQ); }
/// The lanes below n (1 <= n <= L), for keep(); keep(d, m): d in those lanes, zero in the others.
using lanes = __mmask16;
inline lanes first_lanes(std::size_t n) { return static_cast<lanes>((1u << n) - 1); }
inline vf keep(vf d, lanes m) { return _mm512_maskz_mov_ps(m, d); }
inline std::uint64_t bits(cmp c) { return static_cast<std::uint64_t>(c); }
/// Adds 1 to the lanes that compared true.
inline vi count(vi acc, cmp c) { return _mm512_mask_sub_epi32(acc, c, acc, _mm512_set1_epi32(-1)); }
/// Adds 1 to the lanes whose bit of `m` is set.
inline vi count_bits(vi acc, std::uint32_t m) { return count(acc, static_cast<cmp>(m)); }
inline vf square_add(vf d, vf acc) { return _mm512_fmadd_ps(d, d, acc); }
inline vi or_bits(vi acc, vf x) { return _mm512_or_si512(acc, _mm512_castps_si512(x)); }
// (The masked forms of the conversions and extracts: GCC 12 warns that the unmasked ones read
// an uninitialised register, which they do not.)
inline void widen_add(vd2& acc, vf s) {
  acc.lo = _mm512_add_pd(acc.lo, _mm512_maskz_cvtps_pd(0xff, _mm512_maskz_extractf32x8_ps(0xff, s, 0)));
  acc.hi = _mm512_add_pd(acc.hi, _mm512_maskz_cvtps_pd(0xff, _mm512_maskz_extractf32x8_ps(0xff, s, 1)));
}
inline void store(double* out, const vd2& v) {
  _mm512_storeu_pd(out, v.lo);
  _mm512_storeu_pd(out + 8, v.hi);
}
inline vd2 load_d(const double* p) { return {_mm512_loadu_pd(p), _mm512_loadu_pd(p + 8)}; }
inline void store(std::uint32_t* out, vi v) { _mm512_storeu_si512(out, v); }
inline void store(float* out, vf v) { _mm512_storeu_ps(out, v); }
inline vi load_u32(const std::uint32_t* p) { return _mm512_loadu_si512(p); }
inline double sum(const vd2& v) {
  const __m512d s = _mm512_add_pd(v.lo, v.hi);
  const __m256d q = _mm256_add_pd(_mm512_maskz_extractf64x4_pd(0xf, s, 0), _mm512_maskz_extractf64x4_pd(0xf, s, 1));
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(q), _mm256_extractf128_pd(q, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
inline std::uint32_t any_lanes(vi v) { return _mm512_test_epi32_mask(v, v); }
/// Lanes (0/1) of 16 bits of `m`, as 32-bit counts.
inline void expand_bits(std::uint32_t m, std::uint32_t* out) {
  _mm512_storeu_si512(out, _mm512_maskz_set1_epi32(static_cast<cmp>(m), 1));
}

#elif FEVO_CPU_KERNEL_ISA == 1  // ---- AVX2 + FMA + F16C ----------------------------------------------

inline constexpr int L = 8;
using vf = __m256;
using vi = __m256i;
using cmp = __m256;
struct vd2 {
  __m256d lo, hi;
};

inline vf zero() { return _mm256_setzero_ps(); }
inline vf splat(float x) { return _mm256_set1_ps(x); }
inline vi zero_i() { return _mm256_setzero_si256(); }
inline vd2 zero_d() { return {_mm256_setzero_pd(), _mm256_setzero_pd()}; }

inline vf load(const float* p) { return _mm256_loadu_ps(p); }
inline vf load(const bfloat16* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline vf load(const half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
/// The first n (< L) elements, zeros after them; nothing past them is read.
inline vf load_first(const float* p, std::size_t n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane));
}
template <class T>
inline vf load_first(const T* p, std::size_t n) {
  T t[L] = {};
  std::memcpy(t, p, n * sizeof(T));
  return load(t);
}

inline vf sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
inline vf abs(vf d) { return _mm256_and_ps(d, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
inline cmp changed(vf abs_d, vf tau) { return _mm256_cmp_ps(abs_d, tau, _CMP_NLE_UQ); }
using lanes = __m256;
inline lanes first_lanes(std::size_t n) {
  return _mm256_castsi256_ps(
      _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}
inline vf keep(vf d, lanes m) { return _mm256_and_ps(d, m); }
inline std::uint64_t bits(cmp c) { return static_cast<std::uint32_t>(_mm256_movemask_ps(c)); }
inline vi count(vi acc, cmp c) { return _mm256_sub_epi32(acc, _mm256_castps_si256(c)); }
inline vi count_bits(vi acc, std::uint32_t m) {
  const __m256i sel = _mm256_and_si256(
      _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(m)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
      _mm256_set1_epi32(1));
  return _mm256_add_epi32(acc, sel);
}
inline vf square_add(vf d, vf acc) { return _mm256_fmadd_ps(d, d, acc); }
inline vi or_bits(vi acc, vf x) { return _mm256_or_si256(acc, _mm256_castps_si256(x)); }
inline void widen_add(vd2& acc, vf s) {
  acc.lo = _mm256_add_pd(acc.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(s)));
  acc.hi = _mm256_add_pd(acc.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(s, 1)));
}
inline void store(double* out, const vd2& v) {
  _mm256_storeu_pd(out, v.lo);
  _mm256_storeu_pd(out + 4, v.hi);
}
inline vd2 load_d(const double* p) { return {_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4)}; }
inline void store(std::uint32_t* out, vi v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), v); }
inline void store(float* out, vf v) { _mm256_storeu_ps(out, v); }
inline vi load_u32(const std::uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline double sum(const vd2& v) {
  const __m256d s = _mm256_add_pd(v.lo, v.hi);
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
inline std::uint32_t any_lanes(vi v) {
  const __m256i nz = _mm256_xor_si256(_mm256_cmpeq_epi32(v, _mm256_setzero_si256()), _mm256_set1_epi32(-1));
  return static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(nz)));
}
inline void expand_bits(std::uint32_t m, std::uint32_t* out) { store(out, count_bits(zero_i(), m)); }

#elif !FEVO_CPU_VECTOR_EXTENSIONS  // ---- generic without vector extensions: arrays of 4 ---------------

inline constexpr int L = 4;
struct vf {
  float v[L];
};
struct vi {
  std::int32_t v[L];
};
using cmp = vi;  // 1 where true
struct vd2 {
  double v[L];
};

inline vf zero() { return vf{}; }
inline vf splat(float x) { return vf{{x, x, x, x}}; }
inline vi zero_i() { return vi{}; }
inline vd2 zero_d() { return vd2{}; }
template <class T>
inline vf load(const T* p) {
  vf r;
  for (int k = 0; k < L; ++k) r.v[k] = ::fevo::load(p[k]);
  return r;
}
template <class T>
inline vf load_first(const T* p, std::size_t n) {
  vf r{};
  for (std::size_t k = 0; k < n; ++k) r.v[k] = ::fevo::load(p[k]);
  return r;
}
inline vf sub(vf a, vf b) {
  for (int k = 0; k < L; ++k) a.v[k] -= b.v[k];
  return a;
}
inline vf abs(vf d) {
  for (int k = 0; k < L; ++k) d.v[k] = rule::magnitude(d.v[k]);
  return d;
}
inline cmp changed(vf abs_d, vf tau) {
  cmp c;
  for (int k = 0; k < L; ++k) c.v[k] = rule::changed(abs_d.v[k], tau.v[k]);
  return c;
}
using lanes = vi;
inline lanes first_lanes(std::size_t n) {
  lanes m{};
  for (int k = 0; k < L; ++k) m.v[k] = static_cast<std::size_t>(k) < n;
  return m;
}
inline vf keep(vf d, lanes m) {
  for (int k = 0; k < L; ++k)
    if (!m.v[k]) d.v[k] = 0;
  return d;
}
inline std::uint64_t bits(cmp c) {
  std::uint64_t b = 0;
  for (int k = 0; k < L; ++k) b |= std::uint64_t(c.v[k] != 0) << k;
  return b;
}
inline vi count(vi acc, cmp c) {
  for (int k = 0; k < L; ++k) acc.v[k] += c.v[k];
  return acc;
}
inline vi count_bits(vi acc, std::uint32_t m) {
  for (int k = 0; k < L; ++k) acc.v[k] += (m >> k) & 1u;
  return acc;
}
inline vf square_add(vf d, vf acc) {
  for (int k = 0; k < L; ++k) acc.v[k] += d.v[k] * d.v[k];
  return acc;
}
inline vi or_bits(vi acc, vf x) {
  for (int k = 0; k < L; ++k) acc.v[k] |= x.v[k] != 0;  // |d| bits are non-zero exactly when |d| is
  return acc;
}
inline void widen_add(vd2& acc, vf s) {
  for (int k = 0; k < L; ++k) acc.v[k] += s.v[k];
}
inline void store(double* out, const vd2& v) { std::memcpy(out, v.v, sizeof v.v); }
inline vd2 load_d(const double* p) {
  vd2 v;
  std::memcpy(v.v, p, sizeof v.v);
  return v;
}
inline void store(std::uint32_t* out, vi v) { std::memcpy(out, v.v, sizeof v.v); }
inline void store(float* out, vf v) { std::memcpy(out, v.v, sizeof v.v); }
inline vi load_u32(const std::uint32_t* p) {
  vi v;
  std::memcpy(v.v, p, sizeof v.v);
  return v;
}
inline double sum(const vd2& v) { return (v.v[0] + v.v[1]) + (v.v[2] + v.v[3]); }
inline std::uint32_t any_lanes(vi v) { return static_cast<std::uint32_t>(bits(v)); }
inline void expand_bits(std::uint32_t m, std::uint32_t* out) {
  for (int k = 0; k < L; ++k) out[k] = (m >> k) & 1u;
}

#else  // ---- generic: GCC/Clang vector extensions, compiled for the baseline flags ------------------

// 16-byte vectors: the width every baseline has (SSE2, NEON), so nothing is passed in registers
// the baseline lacks.
inline constexpr int L = 4;
typedef float vf __attribute__((vector_size(16)));
typedef std::int32_t vi __attribute__((vector_size(16)));
typedef std::uint32_t vu __attribute__((vector_size(16)));
typedef double vd __attribute__((vector_size(16)));
using cmp = vi;  // all-ones lanes where true
struct vd2 {
  vd lo, hi;
};

inline vf zero() { return vf{}; }
inline vf splat(float x) { return vf{} + x; }
inline vi zero_i() { return vi{}; }
inline vd2 zero_d() { return {vd{}, vd{}}; }

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
/// L 16-bit patterns widened to 32 bits.
inline vu load_u16(const std::uint16_t* p) {
#if defined(__SSE2__)
  const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));  // 8 bytes, no more
  return (vu)_mm_unpacklo_epi16(h, _mm_setzero_si128());
#else
  std::uint16_t h[L];
  std::memcpy(h, p, sizeof h);
  return vu{h[0], h[1], h[2], h[3]};
#endif
}
inline vf load(const bfloat16* p) { return (vf)(load_u16(&p->bits) << 16); }
inline vf load(const half* p) {
  // half::to_float on L lanes: rebias by multiplying with 2^112 (exact, subnormals included).
  const vu h = load_u16(&p->bits);
  const vu sign = (h & 0x8000u) << 16;
  const vu mag = (h & 0x7fffu) << 13;
  const vu scaled = (vu)((vf)mag * 5.192296858534828e33f);  // * 2^112
  const vu special = (vu)((h & 0x7c00u) == 0x7c00u);         // Inf or NaN
  return (vf)(((mag | 0x7f800000u) & special) | (scaled & ~special) | sign);
}

/// The first n (< L) elements, zeros after them; nothing past them is read.
template <class T>
inline vf load_first(const T* p, std::size_t n) {
  T t[L] = {};
  std::memcpy(t, p, n * sizeof(T));
  return load(t);
}

inline vf sub(vf a, vf b) { return a - b; }
inline vf abs(vf d) { return (vf)((vu)d & 0x7fffffffu); }
inline cmp changed(vf abs_d, vf tau) { return ~(abs_d <= tau); }  // NaN: (NaN <= tau) is false
using lanes = vi;
inline lanes first_lanes(std::size_t n) { return vi{0, 1, 2, 3} < (vi{} + static_cast<std::int32_t>(n)); }
inline vf keep(vf d, lanes m) { return (vf)((vi)d & m); }
inline std::uint64_t bits(cmp c) {
#if defined(__SSE2__)
  return static_cast<std::uint32_t>(_mm_movemask_ps((__m128)c));  // the lanes' sign bits
#else
  const vu x = (vu)c & vu{1u, 2u, 4u, 8u};  // lane k contributes bit k
  return x[0] | x[1] | x[2] | x[3];
#endif
}
inline vi count(vi acc, cmp c) { return acc - c; }
inline vi count_bits(vi acc, std::uint32_t m) { return acc + (vi)(((vu{} + m) >> vu{0, 1, 2, 3}) & 1u); }
inline vf square_add(vf d, vf acc) { return acc + d * d; }
inline vi or_bits(vi acc, vf x) { return acc | (vi)x; }
inline void widen_add(vd2& acc, vf s) {
  acc.lo += vd{s[0], s[1]};
  acc.hi += vd{s[2], s[3]};
}
inline void store(double* out, const vd2& v) {
  std::memcpy(out, &v.lo, sizeof v.lo);
  std::memcpy(out + 2, &v.hi, sizeof v.hi);
}
inline vd2 load_d(const double* p) {
  vd2 v;
  std::memcpy(&v.lo, p, sizeof v.lo);
  std::memcpy(&v.hi, p + 2, sizeof v.hi);
  return v;
}
inline void store(std::uint32_t* out, vi v) { std::memcpy(out, &v, sizeof v); }
inline void store(float* out, vf v) { std::memcpy(out, &v, sizeof v); }
inline vi load_u32(const std::uint32_t* p) {
  vi v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline double sum(const vd2& v) {
  const vd s = v.lo + v.hi;
  return s[0] + s[1];
}
inline std::uint32_t any_lanes(vi v) { return static_cast<std::uint32_t>(bits(v != 0)); }
inline void expand_bits(std::uint32_t m, std::uint32_t* out) { store(out, count_bits(zero_i(), m)); }

#endif

}  // namespace simd
}  // namespace FEVO_CPU_KERNEL_NS
}  // namespace detail
}  // namespace FEVO_CPU_BASELINE_NS
}  // namespace fevo::cpu
