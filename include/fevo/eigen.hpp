// Zero-copy views of rank-4 Eigen tensors (Eigen::Tensor, Eigen::TensorMap).
// Link fevo::eigen (or have Eigen's unsupported/Eigen/CXX11/Tensor on the include path).
//
//   Eigen::TensorMap<Eigen::Tensor<float, 4, Eigen::RowMajor>> w(ptr, O, I, H, W);
//   auto v = fevo::from_eigen(w);                      // dimensions are (O, I, H, W)
//   auto k = fevo::from_eigen(keras_kernel, fevo::dims::hwio);  // dimensions are (H, W, I, O)
//
// Strides follow the tensor's storage order (ColMajor: the first dimension is contiguous).
// Eigen::half and Eigen::bfloat16 map to fevo::half and fevo::bfloat16 (same bits).
#pragma once

#include "config.hpp"

#include <unsupported/Eigen/CXX11/Tensor>

#include <array>
#include <type_traits>

#include "dims.hpp"
#include "view.hpp"

namespace fevo {

namespace detail {
template <class S>
struct eigen_element {
  using type = S;
};
template <>
struct eigen_element<Eigen::half> {
  using type = half;
};
template <>
struct eigen_element<Eigen::bfloat16> {
  using type = bfloat16;
};
template <class S>
using eigen_element_t = std::conditional_t<std::is_const_v<S>,
                                           const typename eigen_element<std::remove_const_t<S>>::type,
                                           typename eigen_element<S>::type>;

template <class S, int Options, class Index>
auto eigen_view(S* data, const Eigen::DSizes<Index, 4>& d, dims order) {
  static_assert(sizeof(eigen_element_t<S>) == sizeof(S), "element sizes differ");
  std::array<long long, 4> stride{};
  long long s = 1;
  if (Options & Eigen::RowMajor) {
    for (int r = 3; r >= 0; --r) { stride[r] = s; s *= static_cast<long long>(d[r]); }
  } else {
    for (int r = 0; r < 4; ++r) { stride[r] = s; s *= static_cast<long long>(d[r]); }
  }
  std::array<long long, 4> ext{static_cast<long long>(d[0]), static_cast<long long>(d[1]),
                               static_cast<long long>(d[2]), static_cast<long long>(d[3])};
  return view_from_dims(reinterpret_cast<eigen_element_t<S>*>(data), ext, stride, order);
}
}  // namespace detail

template <class S, int Options, class Index>
auto from_eigen(Eigen::Tensor<S, 4, Options, Index>& t, dims order = dims::oihw) {
  return detail::eigen_view<S, Options, Index>(t.data(), t.dimensions(), order);
}
template <class S, int Options, class Index>
auto from_eigen(const Eigen::Tensor<S, 4, Options, Index>& t, dims order = dims::oihw) {
  return detail::eigen_view<const S, Options, Index>(t.data(), t.dimensions(), order);
}
template <class S, int Options, class Index, int MapOptions, template <class> class MakePointer>
auto from_eigen(const Eigen::TensorMap<Eigen::Tensor<S, 4, Options, Index>, MapOptions, MakePointer>& t,
                dims order = dims::oihw) {
  return detail::eigen_view<S, Options, Index>(t.data(), t.dimensions(), order);
}
template <class S, int Options, class Index, int MapOptions, template <class> class MakePointer>
auto from_eigen(
    const Eigen::TensorMap<const Eigen::Tensor<S, 4, Options, Index>, MapOptions, MakePointer>& t,
    dims order = dims::oihw) {
  return detail::eigen_view<const S, Options, Index>(t.data(), t.dimensions(), order);
}

}  // namespace fevo
