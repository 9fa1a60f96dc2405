// fevo on raw weight buffers: two snapshots of one conv layer, its D, S and Z, and the filters
// that changed least. `./run.sh demo` runs this until the paper driver exists.
#include <cstdio>
#include <random>
#include <vector>

#include <fevo/fevo.hpp>
#if defined(FEVO_EXAMPLE_HAVE_CPU)
#include <fevo/cpu.hpp>
#endif

int main() {
  const int N = 64, C = 32, H = 3, W = 3;  // a 3x3 conv layer with 64 filters of 32 channels
  const double tau = 2e-4;                 // the paper's threshold: the initial learning rate

  // Two snapshots in PyTorch's OIHW layout: filters 0..15 stay still, the rest move a little.
  std::vector<float> before(N * C * H * W), after;
  std::mt19937 rng(42);
  std::normal_distribution<float> init(0.f, 0.05f), step(0.f, 1e-3f);
  for (float& w : before) w = init(rng);
  after = before;
  for (int i = 16; i < N; ++i)
    for (int k = 0; k < C * H * W; ++k) after[i * C * H * W + k] += step(rng);

  // example-begin raw-buffers
  auto prev = fevo::oihw(before.data(), N, C, H, W);  // contiguous [O, I, H, W]
  auto next = fevo::oihw(after.data(), N, C, H, W);
  fevo::layer_metrics m = fevo::compute(fevo::seq, prev, next, tau);
  std::printf("D = %.6g  S = %.4f  Z = %.4f\n", m.D, m.S, m.Z);

  fevo::filter_results per;  // D_i, S_i, Z_i of every filter
  fevo::compute(fevo::seq, prev, next, tau, per);
  std::printf("filter 0: D = %g, S = %g, Z = %g\n", per.D[0], per.S[0], per.Z[0]);
  // example-end raw-buffers

#if defined(FEVO_EXAMPLE_HAVE_CPU)
  const fevo::layer_metrics p = fevo::compute(fevo::cpu::par, prev, next, tau);
  std::printf("cpu::par agrees: D = %.6g  S = %.4f  Z = %.4f\n", p.D, p.S, p.Z);
#endif
  int still = 0;
  for (std::size_t i = 0; i < per.size(); ++i) still += per.changed[i] == 0;
  std::printf("%d of %d filters did not change by more than tau\n", still, N);
  return still == 16 ? 0 : 1;
}
