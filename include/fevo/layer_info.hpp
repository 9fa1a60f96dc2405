// fevo::layer_info: a layer as fevo describes it apart from its weights (in the recorder's files,
// in the fevo command): its name and its extents.
#pragma once

#include "config.hpp"

#include <array>
#include <cstddef>
#include <string>
#include <utility>

namespace fevo {

/// A layer's name and extents: filters, channels, rows, cols (N, C, H, W; a view's extents()).
struct layer_info {
  std::string name;
  std::array<std::size_t, 4> extents{};

  std::size_t filters() const { return extents[0]; }
  std::size_t channels() const { return extents[1]; }
  /// Weights in one filter: C * H * W.
  std::size_t filter_size() const { return extents[1] * extents[2] * extents[3]; }
};

/// The layer_info of a filter view (or anything whose extents() gives the four extents).
template <class View>
layer_info layer_info_of(std::string name, const View& v) {
  return layer_info{std::move(name), v.extents()};
}

}  // namespace fevo
