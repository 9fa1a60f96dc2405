// Zero-copy views of rank-4 xtensor expressions that own or view strided memory:
// xt::xtensor<T, 4>, xt::xarray<T> (of dimension 4), xt::strided_view and xt::view results.
// Link fevo::xtensor (or have xtensor on the include path).
//
//   xt::xtensor<float, 4> w = ...;                   // shape (O, I, H, W)
//   auto v = fevo::from_xtensor(w);
//   auto s = fevo::from_xtensor(xt::view(w, xt::range(0, 16), xt::all(), xt::all(), xt::all()));
#pragma once

#include "config.hpp"

#include <xtensor/xexpression.hpp>
#include <xtensor/xutils.hpp>

#include <array>
#include <type_traits>

#include "dims.hpp"
#include "error.hpp"
#include "view.hpp"

namespace fevo {

/// Works on any xtensor expression with a data interface (data(), data_offset(), strides()).
/// Expressions without one (lazy arithmetic, broadcasts) must be evaluated first.
template <class E>
auto from_xtensor(E&& e, dims order = dims::oihw) {
  using expr = std::decay_t<E>;
  static_assert(xt::has_data_interface<expr>::value,
                "fevo::from_xtensor needs an expression backed by memory; evaluate it first "
                "(xt::eval) or use a container or strided view");
  FEVO_EXPECTS(e.dimension() == 4, "from_xtensor: expected a 4-D tensor, got ", e.dimension(),
               " dimensions");
  std::array<long long, 4> ext{}, str{};
  for (std::size_t r = 0; r < 4; ++r) {
    ext[r] = static_cast<long long>(e.shape()[r]);
    str[r] = static_cast<long long>(e.strides()[r]);
    FEVO_EXPECTS(str[r] >= 0, "from_xtensor: dimension ", r, " has negative stride ", str[r],
                 " (reversed views are not supported)");
  }
  auto* data = e.data() + e.data_offset();
  return detail::view_from_dims(data, ext, str, order);
}

}  // namespace fevo
