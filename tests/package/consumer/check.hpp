// What every consumer computes and checks: 2 filters x 1 channel x 1 x 2, a = 0, b - a = d =
// {0.5, 0, 1, 1}, tau = 0.5: D = (0.25 + 0 + 1 + 1) / 2 = 1.125; S = 2 changed / 4 = 0.5;
// Z = 1 zero channel / 2 = 0.5 (all three exact in binary, so == is the right test).
#pragma once

#include <cstdio>
#include <vector>

#include <fevo/fevo.hpp>

namespace consumer {

inline const std::vector<float> a{0, 0, 0, 0}, b{0.5f, 0, 1, 1};
constexpr double tau = 0.5;

inline bool expected(const fevo::layer_metrics& m) { return m.D == 1.125 && m.S == 0.5 && m.Z == 0.5; }

inline int failures = 0;

inline void check(bool ok, const char* what) {
  std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
  failures += ok ? 0 : 1;
}

}  // namespace consumer
