// The shared backend body on fevo::thrust::par, built by the host compiler with Thrust's device
// system set by the build (fevo's own build makes two: THRUST_DEVICE_SYSTEM_OMP and _CPP): the
// same Thrust code that nvcc builds for the GPU, tested on a machine without one.
#include <fevo/thrust.hpp>

#include <cstdio>
#include <string>

#include "backends.hpp"

namespace fevo_test {
struct thrust_backend : host_backend {
  static constexpr const char* name = "fevo::thrust::par";
  static auto policy() { return fevo::thrust::par; }
};
}  // namespace fevo_test

#define FEVO_TEST_BACKENDS std::tuple<::fevo_test::thrust_backend>
#include "backend_body.hpp"

TEST_CASE("thrust: the device system is the one the build asked for", "[thrust]") {
  std::printf("fevo::thrust device system: %s (THRUST_DEVICE_SYSTEM=%d)\n",
              fevo::thrust::device_system, int(THRUST_DEVICE_SYSTEM));
  CHECK(std::string(fevo::thrust::device_system) == FEVO_TEST_THRUST_SYSTEM);
}
