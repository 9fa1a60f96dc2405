// fevo::cpu alone: fevo::cpu::par (OpenMP, which the package brings).
#include <fevo/cpu.hpp>
#include <fevo/fevo.hpp>

#include "check.hpp"

// fevo::cpu compiles without OpenMP too (its loops then run on one thread), so only this says
// whether the package brought OpenMP's flags.
#ifndef _OPENMP
#error "fevo::cpu did not bring OpenMP: compiled without OpenMP, its loops run on one thread"
#endif

int main() {
  using namespace consumer;
  const auto m = fevo::compute(fevo::cpu::par, fevo::oihw(a.data(), 2, 1, 1, 2), fevo::oihw(b.data(), 2, 1, 1, 2), tau);
  std::printf("D=%g S=%g Z=%g\n", m.D, m.S, m.Z);
  check(expected(m), "fevo::cpu::par");
  return failures == 0 ? 0 : 1;
}
