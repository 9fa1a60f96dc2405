// fevo::xtensor alone: views of xtensor arrays (xtensor, which the package brings).
#include <algorithm>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include <fevo/fevo.hpp>
#include <fevo/xtensor.hpp>

#include "check.hpp"

int main() {
  using namespace consumer;
  xt::xarray<float> xa = xt::zeros<float>({2, 1, 1, 2}), xb = xa;
  std::copy(b.begin(), b.end(), xb.begin());
  check(expected(fevo::compute(fevo::seq, fevo::from_xtensor(xa), fevo::from_xtensor(xb), tau)),
        "fevo::from_xtensor");
  return failures == 0 ? 0 : 1;
}
