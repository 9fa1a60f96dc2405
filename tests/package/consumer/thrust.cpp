// fevo::thrust alone, on Thrust's OpenMP device system (THRUST_DEVICE_SYSTEM, set by CMakeLists.txt),
// host compiler.
#include <fevo/fevo.hpp>
#include <fevo/thrust.hpp>

#include "check.hpp"

int main() {
  using namespace consumer;
  check(expected(fevo::compute(fevo::thrust::par, fevo::oihw(a.data(), 2, 1, 1, 2), fevo::oihw(b.data(), 2, 1, 1, 2),
                               tau)),
        "fevo::thrust::par (OpenMP device system)");
  return failures == 0 ? 0 : 1;
}
