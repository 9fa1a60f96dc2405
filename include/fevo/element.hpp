// Element types: float, double and two 16-bit storage types (IEEE binary16 and bfloat16).
// The 16-bit types are plain storage with conversions written here, so host code needs no GPU
// header; their bit layouts match __half / __nv_bfloat16, so device buffers can be reinterpreted.
#pragma once

#include "config.hpp"

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "config.hpp"

namespace fevo {

namespace detail {
FEVO_HOST_DEVICE inline float bits_to_float(std::uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
FEVO_HOST_DEVICE inline std::uint32_t float_to_bits(float f) {
  std::uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}
}  // namespace detail

/// IEEE 754 binary16, stored as its 16 bits.
struct half {
  std::uint16_t bits;

  /// Exact conversion to float (every half is a float): normals, subnormals, infinities, NaN.
  FEVO_HOST_DEVICE float to_float() const {
#if defined(__CUDA_ARCH__)
    // The GPU's conversion instruction (exact as well): the code below takes registers a
    // kernel's loads need.
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(bits));
    return f;
#else
    const std::uint32_t sign = std::uint32_t(bits & 0x8000u) << 16;
    const std::uint32_t mag = std::uint32_t(bits & 0x7fffu) << 13;
    // Rebias the exponent by multiplying with 2^(127-15); this is exact and also handles
    // subnormal halves, which land on float subnormal bit patterns before the multiply.
    float f = detail::bits_to_float(mag) * 5.192296858534828e33f;  // 0x1p112
    if ((bits & 0x7c00u) == 0x7c00u) f = detail::bits_to_float(mag | 0x7f800000u);  // Inf, NaN
    return detail::bits_to_float(detail::float_to_bits(f) | sign);
#endif
  }

  /// Round-to-nearest-even conversion from float; overflow gives infinity, NaN stays NaN.
  FEVO_HOST_DEVICE static half from_float(float f) {
    const std::uint32_t u = detail::float_to_bits(f);
    const std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
    const std::uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return half{std::uint16_t(sign | 0x7e00u)};  // NaN
    if (a >= 0x477ff000u) return half{std::uint16_t(sign | 0x7c00u)};  // >= 65520 rounds to Inf
    if (a < 0x38800000u) {
      // Result is subnormal (or zero) in half: value / 2^-24, rounded to nearest even.
      // Adding 0.5 (2^-1) forces the float's rounding to act on the bits we keep.
      const float v = detail::bits_to_float(a) + 0.5f;
      return half{std::uint16_t(sign | std::uint16_t(detail::float_to_bits(v) - 0x3f000000u))};
    }
    const std::uint32_t odd = (a >> 13) & 1u;
    const std::uint32_t r = a + 0xc8000fffu + odd;  // rebias exponent (-112 << 23) and round
    return half{std::uint16_t(sign | std::uint16_t(r >> 13))};
  }
};

/// bfloat16: the upper 16 bits of an IEEE float.
struct bfloat16 {
  std::uint16_t bits;

  FEVO_HOST_DEVICE float to_float() const { return detail::bits_to_float(std::uint32_t(bits) << 16); }

  /// Round-to-nearest-even conversion from float; NaN stays NaN.
  FEVO_HOST_DEVICE static bfloat16 from_float(float f) {
    const std::uint32_t u = detail::float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bfloat16{std::uint16_t((u >> 16) | 0x40u)};
    const std::uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    return bfloat16{std::uint16_t(r >> 16)};
  }
};

static_assert(sizeof(half) == 2 && sizeof(bfloat16) == 2, "16-bit storage types must be 2 bytes");

/// What fevo knows about an element type: the type differences are computed in, and a name.
template <class T>
struct element_traits;  // undefined: only the four types below are supported

template <>
struct element_traits<float> {
  using compute_type = float;
  static constexpr const char* name = "f32";
  FEVO_HOST_DEVICE static float load(float v) { return v; }
};
template <>
struct element_traits<double> {
  using compute_type = double;
  static constexpr const char* name = "f64";
  FEVO_HOST_DEVICE static double load(double v) { return v; }
};
template <>
struct element_traits<half> {
  using compute_type = float;
  static constexpr const char* name = "f16";
  FEVO_HOST_DEVICE static float load(half v) { return v.to_float(); }
};
template <>
struct element_traits<bfloat16> {
  using compute_type = float;
  static constexpr const char* name = "bf16";
  FEVO_HOST_DEVICE static float load(bfloat16 v) { return v.to_float(); }
};

template <class T>
using compute_t = typename element_traits<std::remove_cv_t<T>>::compute_type;

template <class T, class = void>
struct is_element : std::false_type {};
template <class T>
struct is_element<T, std::void_t<typename element_traits<std::remove_cv_t<T>>::compute_type>>
    : std::true_type {};

/// Loads one stored element as its compute type (float for f16/bf16/f32, double for f64).
template <class T>
FEVO_HOST_DEVICE inline compute_t<T> load(const T& v) {
  return element_traits<std::remove_cv_t<T>>::load(v);
}

}  // namespace fevo
