// Compiled by ctest only (config.* tests), never linked into a test executable: fevo's headers
// must refuse -ffast-math / -ffinite-math-only and compile without them.
#include <fevo/fevo.hpp>

int main() {
  const float prev[4] = {0, 1, 2, 3}, next[4] = {0, 1, 2, 4};
  const fevo::layer_metrics m =
      fevo::compute(fevo::seq, fevo::oihw(prev, 1, 1, 2, 2), fevo::oihw(next, 1, 1, 2, 2), 0.5);
  return m.D == 1.0 ? 0 : 1;
}
