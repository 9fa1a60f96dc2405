// fevo::io element types of snapshot files, and the one place where file bytes become a fevo view.
//
// Every file format fevo reads (safetensors, .npy, .npz) names its element type with one of the
// values below. fevo analyses four of them (F16, BF16, F32, F64: the types fevo::filter_view
// holds); the others are recognised so that a file holding them (integer step counters, boolean
// masks, fp8 weights, ...) still opens, lists its tensors, and a request to analyse such a
// tensor is refused with a message that says why.
//
// Byte order: the formats store little-endian data (safetensors always; .npy files declaring '>'
// are byte-swapped on read), and fevo hands out zero-copy views of those bytes, so fevo::io
// supports little-endian hosts only (every platform fevo targets).
#pragma once

#include "../config.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../element.hpp"
#include "../error.hpp"
#include "../view.hpp"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fevo::io reads little-endian files into zero-copy views: it needs a little-endian host"
#endif

namespace fevo::io {

/// Element types of snapshot files. The first four are analysed; the rest are the other
/// safetensors dtypes, recognised so that they can be listed and refused clearly.
enum class dtype {
  f16,
  bf16,
  f32,
  f64,
  // recognised, listed, never analysed:
  boolean,   ///< BOOL (one byte)
  u8,
  i8,
  i16,
  u16,
  i32,
  u32,
  i64,
  u64,
  f8_e5m2,
  f8_e4m3,
  f8_e8m0,
  c64,       ///< complex64: two f32
  f4,        ///< F4 (4 bits, packed two per byte)
  f6_e2m3,   ///< 6 bits, packed
  f6_e3m2,   ///< 6 bits, packed
};

/// Every dtype, in enum order.
inline constexpr dtype all_dtypes[] = {
    dtype::f16,     dtype::bf16,    dtype::f32,     dtype::f64,     dtype::boolean,
    dtype::u8,      dtype::i8,      dtype::i16,     dtype::u16,     dtype::i32,
    dtype::u32,     dtype::i64,     dtype::u64,     dtype::f8_e5m2, dtype::f8_e4m3,
    dtype::f8_e8m0, dtype::c64,     dtype::f4,      dtype::f6_e2m3, dtype::f6_e3m2};

/// Bits per element (4 and 6 for the packed sub-byte types).
inline std::size_t dtype_bits(dtype t) {
  switch (t) {
    case dtype::f16: case dtype::bf16: case dtype::i16: case dtype::u16: return 16;
    case dtype::f32: case dtype::i32: case dtype::u32: return 32;
    case dtype::f64: case dtype::i64: case dtype::u64: case dtype::c64: return 64;
    case dtype::boolean: case dtype::u8: case dtype::i8: case dtype::f8_e5m2:
    case dtype::f8_e4m3: case dtype::f8_e8m0: return 8;
    case dtype::f4: return 4;
    case dtype::f6_e2m3: case dtype::f6_e3m2: return 6;
  }
  return 0;
}

/// Bytes per element; 0 for the packed sub-byte types (F4, F6_*), whose size is dtype_bits().
inline std::size_t dtype_size(dtype t) {
  const std::size_t b = dtype_bits(t);
  return b % 8 == 0 ? b / 8 : 0;
}

/// The safetensors spelling: "F16", "BF16", "F32", "F64", "I64", "BOOL", ...
inline const char* dtype_name(dtype t) {
  switch (t) {
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::f32: return "F32";
    case dtype::f64: return "F64";
    case dtype::boolean: return "BOOL";
    case dtype::u8: return "U8";
    case dtype::i8: return "I8";
    case dtype::i16: return "I16";
    case dtype::u16: return "U16";
    case dtype::i32: return "I32";
    case dtype::u32: return "U32";
    case dtype::i64: return "I64";
    case dtype::u64: return "U64";
    case dtype::f8_e5m2: return "F8_E5M2";
    case dtype::f8_e4m3: return "F8_E4M3";
    case dtype::f8_e8m0: return "F8_E8M0";
    case dtype::c64: return "C64";
    case dtype::f4: return "F4";
    case dtype::f6_e2m3: return "F6_E2M3";
    case dtype::f6_e3m2: return "F6_E3M2";
  }
  return "?";
}

/// The dtype spelled `name` in a safetensors header; false when the name is not a safetensors dtype.
inline bool dtype_from_name(const std::string& name, dtype& out) {
  for (dtype t : all_dtypes)
    if (name == dtype_name(t)) {
      out = t;
      return true;
    }
  return false;
}

/// True for the four types fevo analyses: F16, BF16, F32, F64.
inline bool is_analysable(dtype t) {
  return t == dtype::f16 || t == dtype::bf16 || t == dtype::f32 || t == dtype::f64;
}

/// The dtype of a fevo element type: dtype_of<float>() == dtype::f32.
template <class T>
constexpr dtype dtype_of() {
  using U = std::remove_cv_t<T>;
  static_assert(is_element<U>::value,
                "fevo::io: element type must be float, double, fevo::half or fevo::bfloat16");
  if constexpr (std::is_same_v<U, half>) return dtype::f16;
  else if constexpr (std::is_same_v<U, bfloat16>) return dtype::bf16;
  else if constexpr (std::is_same_v<U, float>) return dtype::f32;
  else return dtype::f64;
}

/// Calls f(static_cast<T*>(nullptr)) with T the element type of an analysable dtype, so one
/// generic lambda handles all four:  visit_element(t, [&](auto* tag) { using T =
/// std::remove_pointer_t<decltype(tag)>; ... view_of<T>(...) ... });
/// Throws fevo::error for a dtype fevo does not analyse.
template <class F>
decltype(auto) visit_element(dtype t, F&& f) {
  switch (t) {
    case dtype::f16: return f(static_cast<half*>(nullptr));
    case dtype::bf16: return f(static_cast<bfloat16*>(nullptr));
    case dtype::f32: return f(static_cast<float*>(nullptr));
    case dtype::f64: return f(static_cast<double*>(nullptr));
    default:
      ::fevo::detail::fail("dtype ", dtype_name(t),
                           " is not analysed by fevo (supported: F16, BF16, F32, F64)");
  }
}

/// How a 4-D weight tensor is laid out in its file.
enum class layout {
  oihw,  ///< [out, in, h, w]: PyTorch, LibTorch, ONNX (the default)
  hwio,  ///< [h, w, in, out]: TensorFlow, Keras, JAX/Flax
};

inline const char* layout_name(layout l) { return l == layout::hwio ? "hwio" : "oihw"; }

/// "[2, 3, 4]"
inline std::string shape_string(const std::vector<std::uint64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace detail {

/// Elements of `shape` and their size in bytes; false on overflow or (sub-byte types) when the
/// bits do not fill whole bytes.
inline bool shape_bytes(const std::vector<std::uint64_t>& shape, dtype t, std::uint64_t& elements,
                        std::uint64_t& bytes) {
  std::uint64_t n = 1;
  for (std::uint64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n)) return false;
  std::uint64_t bits = 0;
  if (__builtin_mul_overflow(n, std::uint64_t(dtype_bits(t)), &bits)) return false;
  if (bits % 8 != 0) return false;
  elements = n;
  bytes = bits / 8;
  return true;
}

/// Returns the index of the first byte that is not valid UTF-8 (shortest form, no surrogates,
/// at most U+10FFFF), or n when all of [p, p+n) is valid.
inline std::size_t utf8_invalid_at(const unsigned char* p, std::size_t n) {
  std::size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // bounds of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;  // no UTF-16 surrogates
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;  // at most U+10FFFF
    else return i;
    if (n - i < len) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += len;
  }
  return n;
}

/// A fevo::error's message without its leading "fevo: ", to wrap it in more context.
inline std::string without_prefix(const std::string& what) {
  return what.compare(0, 6, "fevo: ") == 0 ? what.substr(6) : what;
}

/// "file: tensor 'name': " (either part may be empty).
inline std::string where(const std::string& file, const std::string& tensor) {
  std::string w;
  if (!file.empty()) w += file + ": ";
  if (!tensor.empty()) w += "tensor '" + tensor + "': ";
  return w;
}

/// The one place where file bytes become a view: checks the dtype against T and the rank against
/// the layout, copies misaligned data into `scratch`, and builds the view with fevo's factories.
///   rank 4, oihw: [O, I, H, W]        rank 4, hwio: [H, W, I, O]
///   rank 2 (allow_2d only), oihw: [out, in] (torch.nn.Linear) -> out x in x 1 x 1
///   rank 2 (allow_2d only), hwio: [in, out] (Keras Dense)      -> out x in x 1 x 1
template <class T>
filter_view<const T> layer_view(const unsigned char* data, dtype type,
                                const std::vector<std::uint64_t>& shape, std::uint64_t nbytes,
                                layout lay, std::vector<T>& scratch, bool allow_2d,
                                const std::string& file, const std::string& tensor) {
  const std::string at = where(file, tensor);
  if (!is_analysable(type))
    ::fevo::detail::fail(at, "dtype ", dtype_name(type),
                         " is not analysed by fevo (supported: F16, BF16, F32, F64)");
  if (type != dtype_of<T>())
    ::fevo::detail::fail(at, "dtype is ", dtype_name(type), " but a view of ",
                         dtype_name(dtype_of<T>()), " elements was requested");
  const bool is2d = shape.size() == 2;
  if (!(shape.size() == 4 || (is2d && allow_2d))) {
    if (is2d)
      ::fevo::detail::fail(at, "shape ", shape_string(shape),
                           " is 2-D (a fully connected layer); 2-D weights are analysed as "
                           "N x C x 1 x 1 filters only on request (allow_2d)");
    ::fevo::detail::fail(at, "shape ", shape_string(shape), " has rank ", shape.size(),
                         "; conv weights have rank 4 (", layout_name(lay), ")",
                         allow_2d ? " or 2" : "");
  }
  std::uint64_t elements = 0, bytes = 0;
  if (!shape_bytes(shape, type, elements, bytes) || bytes != nbytes)
    ::fevo::detail::fail(at, "shape ", shape_string(shape), " does not match its ", nbytes,
                         " bytes of data");
  for (std::uint64_t d : shape)
    if (d > std::uint64_t(std::numeric_limits<long long>::max()))
      ::fevo::detail::fail(at, "extent ", d, " in shape ", shape_string(shape), " is too large");
  const T* p = reinterpret_cast<const T*>(data);
  if (elements > 0 && reinterpret_cast<std::uintptr_t>(data) % alignof(T) != 0) {
    // Misaligned for T (a file written without alignment padding): copy, never read in place.
    scratch.resize(static_cast<std::size_t>(elements));
    std::memcpy(static_cast<void*>(scratch.data()), data, static_cast<std::size_t>(nbytes));
    p = scratch.data();
  }
  const auto ll = [&](std::size_t i) { return static_cast<long long>(shape[i]); };
  try {
    if (is2d) {
      if (lay == layout::oihw) return oihw(p, ll(0), ll(1), 1LL, 1LL);
      return hwio(p, 1LL, 1LL, ll(0), ll(1));
    }
    if (lay == layout::oihw) return oihw(p, ll(0), ll(1), ll(2), ll(3));
    return hwio(p, ll(0), ll(1), ll(2), ll(3));
  } catch (const ::fevo::error& e) {
    ::fevo::detail::fail(at, without_prefix(e.what()));
  }
}

}  // namespace detail

/// The (filter, channel, row, col) extents that layer_view gives a tensor of `shape` in `lay`,
/// without its data: rank 4 as the layout says, rank 2 as out x in x 1 x 1. Other ranks: none.
inline std::optional<std::array<std::size_t, 4>> layer_extents(const std::vector<std::uint64_t>& shape, layout lay) {
  const auto z = [&](std::size_t i) { return static_cast<std::size_t>(shape[i]); };
  if (shape.size() == 4)
    return lay == layout::oihw ? std::array<std::size_t, 4>{z(0), z(1), z(2), z(3)}
                               : std::array<std::size_t, 4>{z(3), z(2), z(0), z(1)};
  if (shape.size() == 2)
    return lay == layout::oihw ? std::array<std::size_t, 4>{z(0), z(1), 1, 1}
                               : std::array<std::size_t, 4>{z(1), z(0), 1, 1};
  return std::nullopt;
}

/// Element `i` of `data` (dtype `t`, little-endian, any alignment) as a double. Analysable dtypes
/// only; used by tools and tests that print or compare values.
inline double element_as_double(dtype t, const unsigned char* data, std::size_t i) {
  switch (t) {
    case dtype::f16: {
      half h;
      std::memcpy(&h.bits, data + 2 * i, 2);
      return h.to_float();
    }
    case dtype::bf16: {
      bfloat16 b;
      std::memcpy(&b.bits, data + 2 * i, 2);
      return b.to_float();
    }
    case dtype::f32: {
      float f;
      std::memcpy(&f, data + 4 * i, 4);
      return f;
    }
    case dtype::f64: {
      double d;
      std::memcpy(&d, data + 8 * i, 8);
      return d;
    }
    default:
      ::fevo::detail::fail("dtype ", dtype_name(t),
                           " is not analysed by fevo (supported: F16, BF16, F32, F64)");
  }
}

}  // namespace fevo::io
