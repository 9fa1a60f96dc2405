// filter_view: a non-owning 4-D view of one conv layer's weights over raw memory.
//
// Logical axes are always (filter, channel, row, col) = (N, C, H, W), whatever the memory layout;
// strides are in elements (not bytes), as in std::mdspan. Any non-negative strides are accepted:
// contiguous OIHW (PyTorch/LibTorch), HWIO (TensorFlow/Keras), OHWI, sub-views and padded rows.
#pragma once

#include "config.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <type_traits>

#include "config.hpp"
#include "element.hpp"
#include "error.hpp"

namespace fevo {

/// Memory space tag: the pointer is dereferenceable on the host. Device backends add their own
/// tags, so a host view handed to a device backend fails to compile.
struct host_space {
  static constexpr const char* name = "host";
};

/// Four extents or strides given in any integer type: `{N, C, H, W}`. Negative values are
/// rejected when a view is made from them.
struct index4 {
  std::array<long long, 4> v;
  template <class A, class B, class C, class D,
            class = std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B> &&
                                     std::is_integral_v<C> && std::is_integral_v<D>>>
  constexpr index4(A a, B b, C c, D d)
      : v{to_ll(a), to_ll(b), to_ll(c), to_ll(d)} {}

 private:
  template <class I>
  static constexpr long long to_ll(I i) {
    if constexpr (std::is_unsigned_v<I>) {
      // Values past LLONG_MAX become -1 and are rejected as "negative or too large".
      return i > static_cast<unsigned long long>(std::numeric_limits<long long>::max())
                 ? -1
                 : static_cast<long long>(i);
    } else {
      return static_cast<long long>(i);
    }
  }
};

/// Memory space tag: the pointer is CUDA device memory (cudaMalloc, torch CUDA tensors). Views of
/// it are accepted only by device backends, and never dereferenced on the host.
struct device_space {
  static constexpr const char* name = "device";
};

template <class T, class Space = host_space>
class basic_filter_view {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using index_type = std::size_t;
  using memory_space = Space;
  static constexpr std::size_t rank() { return 4; }

  static_assert(is_element<value_type>::value,
                "fevo: element type must be float, double, fevo::half or fevo::bfloat16");

  constexpr basic_filter_view() = default;

  /// Unchecked constructor; use fevo::strided / fevo::oihw / ... which validate.
  constexpr basic_filter_view(T* data, const std::array<index_type, 4>& ext,
                              const std::array<index_type, 4>& str)
      : data_(data), ext_{ext[0], ext[1], ext[2], ext[3]}, str_{str[0], str[1], str[2], str[3]} {}

  /// A view of const elements converts from a view of mutable ones.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  FEVO_HOST_DEVICE constexpr basic_filter_view(const basic_filter_view<U, Space>& o)
      : data_(o.data_handle()),
        ext_{o.extent(0), o.extent(1), o.extent(2), o.extent(3)},
        str_{o.stride(0), o.stride(1), o.stride(2), o.stride(3)} {}

  FEVO_HOST_DEVICE constexpr T* data_handle() const { return data_; }
  FEVO_HOST_DEVICE constexpr index_type extent(std::size_t r) const { return ext_[r]; }
  /// Stride of axis r in elements.
  FEVO_HOST_DEVICE constexpr index_type stride(std::size_t r) const { return str_[r]; }
  constexpr std::array<index_type, 4> extents() const { return {ext_[0], ext_[1], ext_[2], ext_[3]}; }
  constexpr std::array<index_type, 4> strides() const { return {str_[0], str_[1], str_[2], str_[3]}; }

  FEVO_HOST_DEVICE constexpr index_type filters() const { return ext_[0]; }
  FEVO_HOST_DEVICE constexpr index_type channels() const { return ext_[1]; }
  FEVO_HOST_DEVICE constexpr index_type rows() const { return ext_[2]; }
  FEVO_HOST_DEVICE constexpr index_type cols() const { return ext_[3]; }
  /// Weights in one filter: C * H * W.
  FEVO_HOST_DEVICE constexpr index_type filter_size() const { return ext_[1] * ext_[2] * ext_[3]; }
  /// Number of elements the view addresses: N * C * H * W.
  FEVO_HOST_DEVICE constexpr index_type size() const { return ext_[0] * filter_size(); }
  FEVO_HOST_DEVICE constexpr bool empty() const { return size() == 0; }

  /// Offset in elements of (filter, channel, row, col) from data_handle().
  FEVO_HOST_DEVICE constexpr index_type offset(index_type i, index_type c, index_type h,
                                               index_type w) const {
    return i * str_[0] + c * str_[1] + h * str_[2] + w * str_[3];
  }
  FEVO_HOST_DEVICE constexpr T& operator()(index_type i, index_type c, index_type h,
                                           index_type w) const {
    return data_[offset(i, c, h, w)];
  }

  /// One more than the largest offset the view addresses (0 for an empty view).
  FEVO_HOST_DEVICE constexpr index_type required_span_size() const {
    if (empty()) return 0;
    index_type s = 1;
    for (std::size_t r = 0; r < 4; ++r) s += (ext_[r] - 1) * str_[r];
    return s;
  }

  /// True when the view addresses every element of [data, data + size()) exactly once.
  constexpr bool is_exhaustive() const {
    if (empty()) return true;
    // Sort the non-trivial axes by stride; each stride must equal the product of the extents
    // of the axes below it.
    std::array<std::size_t, 4> ax{0, 1, 2, 3};
    for (std::size_t a = 1; a < 4; ++a)
      for (std::size_t b = a; b > 0 && str_[ax[b]] < str_[ax[b - 1]]; --b) {
        std::size_t t = ax[b];
        ax[b] = ax[b - 1];
        ax[b - 1] = t;
      }
    index_type expect = 1;
    for (std::size_t k = 0; k < 4; ++k) {
      const std::size_t r = ax[k];
      if (ext_[r] == 1) continue;
      if (str_[r] != expect) return false;
      expect *= ext_[r];
    }
    return true;
  }

  /// Filters [first, first + count): a shard of the layer split by output filters.
  basic_filter_view filter_slice(index_type first, index_type count) const {
    FEVO_EXPECTS(first <= ext_[0] && count <= ext_[0] - first, "filter_slice [", first, ", ",
                 first + count, ") is outside the view's ", ext_[0], " filters");
    basic_filter_view v = *this;
    v.data_ = data_ + first * str_[0];
    v.ext_[0] = count;
    return v;
  }
  /// Channels [first, first + count) of every filter: a shard split by input channels.
  basic_filter_view channel_slice(index_type first, index_type count) const {
    FEVO_EXPECTS(first <= ext_[1] && count <= ext_[1] - first, "channel_slice [", first, ", ",
                 first + count, ") is outside the view's ", ext_[1], " channels");
    basic_filter_view v = *this;
    v.data_ = data_ + first * str_[1];
    v.ext_[1] = count;
    return v;
  }

 private:
  // Plain arrays (not std::array) so that device code can read them.
  T* data_ = nullptr;
  index_type ext_[4] = {0, 0, 0, 0};
  index_type str_[4] = {0, 0, 0, 0};
};

template <class T>
using filter_view = basic_filter_view<T, host_space>;

namespace detail {

inline bool mul_overflows(std::size_t a, std::size_t b, std::size_t& out) {
  return __builtin_mul_overflow(a, b, &out);
}
inline bool add_overflows(std::size_t a, std::size_t b, std::size_t& out) {
  return __builtin_add_overflow(a, b, &out);
}

/// Validates extents and strides and builds the view. Every public factory ends here.
template <class Space, class T>
basic_filter_view<T, Space> make_view(T* data, const index4& ext, const index4& str) {
  static const char* const axis[4] = {"filters", "channels", "rows", "cols"};
  std::array<std::size_t, 4> e{}, s{};
  for (std::size_t r = 0; r < 4; ++r) {
    FEVO_EXPECTS(ext.v[r] >= 0, "extent(", r, ") (", axis[r], ") is negative or too large: ",
                 ext.v[r]);
    FEVO_EXPECTS(str.v[r] >= 0, "stride(", r, ") (", axis[r], ") is negative or too large: ",
                 str.v[r], " (strides must be non-negative, in elements)");
    e[r] = static_cast<std::size_t>(ext.v[r]);
    s[r] = static_cast<std::size_t>(str.v[r]);
  }
  // The largest offset must be addressable: (e-1)*s summed, without overflow.
  std::size_t span = 1, count = 1;
  for (std::size_t r = 0; r < 4; ++r) {
    std::size_t term = 0;
    const bool bad = mul_overflows(e[r] == 0 ? 0 : e[r] - 1, s[r], term) ||
                     add_overflows(span, term, span) || mul_overflows(count, e[r], count);
    FEVO_EXPECTS(!bad, "extents {", e[0], ", ", e[1], ", ", e[2], ", ", e[3], "} with strides {",
                 s[0], ", ", s[1], ", ", s[2], ", ", s[3], "} overflow the index type");
  }
  FEVO_EXPECTS(span <= std::numeric_limits<std::size_t>::max() / sizeof(T),
               "view spans more bytes than the address space holds");
  return basic_filter_view<T, Space>(data, e, s);
}

/// Product of extents for packed layouts; a negative factor or an overflow is an error.
inline long long packed_product(std::initializer_list<long long> factors) {
  long long p = 1;
  for (long long f : factors) {
    FEVO_EXPECTS(f >= 0, "extent ", f, " is negative");
    FEVO_EXPECTS(!__builtin_mul_overflow(p, f, &p), "layout extents overflow the index type");
  }
  return p;
}

}  // namespace detail

/// A view with any strides (in elements): strided(p, {N, C, H, W}, {sN, sC, sH, sW}).
/// For device memory: fevo::strided<fevo::device_space>(device_ptr, ...), and the same for the
/// layout helpers below.
template <class Space = host_space, class T>
basic_filter_view<T, Space> strided(T* data, index4 extents, index4 strides) {
  return detail::make_view<Space>(data, extents, strides);
}

// Layout helpers: arguments follow the letters of the name, i.e. the order of the dimensions
// in memory (outermost first), as the framework reports the tensor's shape. The view's logical
// axes are still (filter, channel, row, col).

/// Contiguous [O, I, H, W] (PyTorch, LibTorch, ONNX).
template <class Space = host_space, class T>
basic_filter_view<T, Space> oihw(T* data, long long o, long long i, long long h, long long w) {
  using detail::packed_product;
  return strided<Space>(data, {o, i, h, w}, {packed_product({i, h, w}), packed_product({h, w}), w, 1LL});
}
/// Contiguous [H, W, I, O] (TensorFlow, Keras, JAX/Flax).
template <class Space = host_space, class T>
basic_filter_view<T, Space> hwio(T* data, long long h, long long w, long long i, long long o) {
  using detail::packed_product;
  return strided<Space>(data, {o, i, h, w},
                 {1LL, packed_product({o}), packed_product({w, i, o}), packed_product({i, o})});
}
/// Contiguous [O, H, W, I] (channels-last PyTorch, TensorRT, cuDNN NHWC filters).
template <class Space = host_space, class T>
basic_filter_view<T, Space> ohwi(T* data, long long o, long long h, long long w, long long i) {
  using detail::packed_product;
  return strided<Space>(data, {o, i, h, w},
                 {packed_product({h, w, i}), 1LL, packed_product({w, i}), packed_product({i})});
}

}  // namespace fevo
