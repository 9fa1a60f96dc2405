// What the four dimensions of a framework's tensor mean, for the adapters.
#pragma once

#include "config.hpp"

#include <array>

#include "view.hpp"

namespace fevo {

/// The meaning of a rank-4 tensor's dimensions, in index order.
enum class dims {
  oihw,  ///< (out = filter, in = channel, row, col): PyTorch, LibTorch, ONNX
  hwio,  ///< (row, col, in, out): TensorFlow, Keras, JAX/Flax
  ohwi,  ///< (out, row, col, in): channels-last filters
};

namespace detail {
/// Builds a checked view from per-dimension extents and strides given in the tensor's index order.
template <class T>
filter_view<T> view_from_dims(T* data, const std::array<long long, 4>& e,
                              const std::array<long long, 4>& s, dims order) {
  switch (order) {
    case dims::hwio: return strided(data, {e[3], e[2], e[0], e[1]}, {s[3], s[2], s[0], s[1]});
    case dims::ohwi: return strided(data, {e[0], e[3], e[1], e[2]}, {s[0], s[3], s[1], s[2]});
    case dims::oihw: break;
  }
  return strided(data, {e[0], e[1], e[2], e[3]}, {s[0], s[1], s[2], s[3]});
}
}  // namespace detail

}  // namespace fevo
