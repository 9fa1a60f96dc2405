// fevo::eigen alone: views of Eigen tensors (Eigen3, which the package brings).
#include <algorithm>

#include <fevo/eigen.hpp>
#include <fevo/fevo.hpp>

#include "check.hpp"

int main() {
  using namespace consumer;
  Eigen::Tensor<float, 4, Eigen::RowMajor> ea(2, 1, 1, 2), eb(2, 1, 1, 2);
  std::copy(a.begin(), a.end(), ea.data());
  std::copy(b.begin(), b.end(), eb.data());
  check(expected(fevo::compute(fevo::seq, fevo::from_eigen(ea), fevo::from_eigen(eb), tau)), "fevo::from_eigen");
  return failures == 0 ? 0 : 1;
}
