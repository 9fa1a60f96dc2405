// Zero-copy views of rank-4 LibTorch tensors (torch::Tensor). Link LibTorch.
//
//   torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 64, 3));
//   auto v = fevo::from_torch<const float>(conv->weight);    // dimensions are (O, I, H, W)
//   auto k = fevo::from_torch<float>(t, fevo::dims::hwio);    // a tensor holding (H, W, I, O)
//
// T is the element type the caller expects: float, double, fevo::half (torch::kHalf) or
// fevo::bfloat16 (torch::kBFloat16), const or not; a tensor of another dtype is refused. Any
// strides are accepted (channels-last, slices, transposes); strides are the tensor's, in elements.
// The view aliases the tensor's storage: it stays valid while the tensor (or another owner of its
// storage) is alive and not resized, and sees every in-place update, e.g. an optimiser step.
//
// Host views need a CPU tensor. CUDA tensors give views of device memory with
// fevo::from_torch_device<T>(t), offered when fevo's CUDA backend is in the build (nvcc, or
// FEVO_WITH_CUDA defined by the user); those views go only to device backends.
// Every refusal is a fevo::error naming the dtype, rank or device that is wrong.
#pragma once

#include "config.hpp"

#include <torch/torch.h>

#include <array>
#include <sstream>
#include <string>
#include <type_traits>

#include "dims.hpp"
#include "view.hpp"

namespace fevo {

namespace detail {

template <class S>
struct torch_dtype_of;
template <>
struct torch_dtype_of<float> {
  static constexpr c10::ScalarType value = c10::ScalarType::Float;
};
template <>
struct torch_dtype_of<double> {
  static constexpr c10::ScalarType value = c10::ScalarType::Double;
};
template <>
struct torch_dtype_of<half> {
  static constexpr c10::ScalarType value = c10::ScalarType::Half;
};
template <>
struct torch_dtype_of<bfloat16> {
  static constexpr c10::ScalarType value = c10::ScalarType::BFloat16;
};

/// Checks rank, dtype and layout, and gives the extents and strides in the tensor's index order.
template <class T>
void torch_checks(const at::Tensor& t, std::array<long long, 4>& e, std::array<long long, 4>& s) {
  using V = std::remove_const_t<T>;
  static_assert(is_element<V>::value,
                "fevo::from_torch<T>: T is float, double, fevo::half or fevo::bfloat16 (const or not)");
  FEVO_EXPECTS(t.defined(), "from_torch: the tensor is undefined (an empty torch::Tensor)");
  FEVO_EXPECTS(t.layout() == c10::kStrided, "from_torch: the tensor's layout is not strided (sparse or "
               "mkldnn tensors have no element strides)");
  FEVO_EXPECTS(t.dim() == 4, "from_torch: the tensor has ", t.dim(), " dimensions ", t.sizes(),
               "; a conv layer's weights have 4");
  FEVO_EXPECTS(t.scalar_type() == torch_dtype_of<V>::value, "from_torch: the tensor's dtype is ",
               c10::toString(t.scalar_type()), ", the view's element type is ", element_traits<V>::name,
               " (", c10::toString(torch_dtype_of<V>::value), ")");
  for (int r = 0; r < 4; ++r) {
    e[std::size_t(r)] = static_cast<long long>(t.size(r));
    s[std::size_t(r)] = static_cast<long long>(t.stride(r));
  }
}

template <class T>
T* torch_data(const at::Tensor& t) {
  // data_ptr() of a tensor with zero elements may be null; fevo views need a pointer.
  return reinterpret_cast<T*>(const_cast<void*>(t.data_ptr()));
}

}  // namespace detail

/// A view of a CPU tensor's elements, zero-copy. See the header comment.
template <class T>
filter_view<T> from_torch(const at::Tensor& t, dims order = dims::oihw) {
  std::array<long long, 4> e{}, s{};
  detail::torch_checks<T>(t, e, s);
  FEVO_EXPECTS(t.device().is_cpu(), "from_torch: the tensor is on ", t.device().str(),
               "; host views need a CPU tensor (from_torch_device gives device views when fevo's "
               "CUDA backend is built)");
  return detail::view_from_dims(detail::torch_data<T>(t), e, s, order);
}

#if defined(__CUDACC__) || defined(FEVO_WITH_CUDA)
/// A view of a CUDA tensor's elements (device memory), zero-copy, for fevo's device backends.
template <class T>
basic_filter_view<T, device_space> from_torch_device(const at::Tensor& t, dims order = dims::oihw) {
  std::array<long long, 4> e{}, s{};
  detail::torch_checks<T>(t, e, s);
  FEVO_EXPECTS(t.device().is_cuda(), "from_torch_device: the tensor is on ", t.device().str(),
               "; device views need a CUDA tensor (use from_torch for CPU tensors)");
  std::array<long long, 4> pe = e, ps = s;
  switch (order) {
    case dims::hwio: pe = {e[3], e[2], e[0], e[1]}; ps = {s[3], s[2], s[0], s[1]}; break;
    case dims::ohwi: pe = {e[0], e[3], e[1], e[2]}; ps = {s[0], s[3], s[1], s[2]}; break;
    case dims::oihw: break;
  }
  return strided<device_space>(detail::torch_data<T>(t), {pe[0], pe[1], pe[2], pe[3]},
                               {ps[0], ps[1], ps[2], ps[3]});
}
#endif

}  // namespace fevo
