// Compiled by ctest only (config.* tests), never linked into a test executable: what a newcomer's
// first compile of fevo's headers says when it is wrong (tests/first_error.cmake). FEVO_PROBE_CPU
// adds the CPU backend, whose hexadecimal float literals a C++14 compiler cannot read.
#include <fevo/fevo.hpp>
#ifdef FEVO_PROBE_CPU
#include <fevo/cpu.hpp>
#endif

int main() {
  const float prev[4] = {0, 1, 2, 3}, next[4] = {0, 1, 2, 4};
#ifdef FEVO_PROBE_CPU
  const auto& pol = fevo::cpu::par;
#else
  const auto& pol = fevo::seq;
#endif
  const fevo::layer_metrics m = fevo::compute(pol, fevo::oihw(prev, 1, 1, 2, 2), fevo::oihw(next, 1, 1, 2, 2), 0.5);
  return m.D == 1.0 ? 0 : 1;
}
