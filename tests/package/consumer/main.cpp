#include <cstdio>
#include <vector>

#include <fevo/cpu.hpp>
#include <fevo/fevo.hpp>

int main() {
  // 2 filters x 1 channel x 1 x 2. d = {0.5, 0, 1, 1}, tau = 0.5:
  // D = (0.25 + 0 + 1 + 1) / 2 = 1.125; S = 2 changed / 4 = 0.5; Z = 1 zero channel / 2 = 0.5.
  std::vector<float> a{0, 0, 0, 0}, b{0.5f, 0, 1, 1};
  auto m = fevo::compute(fevo::cpu::par, fevo::oihw(a.data(), 2, 1, 1, 2),
                         fevo::oihw(b.data(), 2, 1, 1, 2), 0.5);
  std::printf("D=%g S=%g Z=%g\n", m.D, m.S, m.Z);
  return (m.D == 1.125 && m.S == 0.5 && m.Z == 0.5) ? 0 : 1;
}
