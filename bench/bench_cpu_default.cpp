// See default_build.hpp: compiled without -march=native, whatever FEVO_NATIVE says.
#include "default_build.hpp"

#include <fevo/cpu.hpp>

namespace fevo_bench::default_build {
namespace {

template <class T>
void layers(const pair_list<T>& pairs, std::vector<fevo::layer_metrics>& out) {
  out = fevo::compute_layers(fevo::cpu::par.threads(kThreads), pairs, kTau);
}
template <class T>
void calls(const pair_list<T>& pairs, std::vector<fevo::layer_metrics>& out) {
  out.resize(pairs.size());
  for (std::size_t k = 0; k < pairs.size(); ++k)
    out[k] = fevo::compute(fevo::cpu::par.threads(kThreads), pairs[k].prev, pairs[k].next, kTau);
}

}  // namespace

const char* instruction_set() {
#if defined(FEVO_CPU_ISA_DISPATCH)
  return fevo::cpu::instruction_set();
#else
  return "n/a";
#endif
}
void compute_layers(const pair_list<float>& p, std::vector<fevo::layer_metrics>& out) { layers(p, out); }
void compute_layers(const pair_list<fevo::bfloat16>& p, std::vector<fevo::layer_metrics>& out) { layers(p, out); }
void compute_layers(const pair_list<fevo::half>& p, std::vector<fevo::layer_metrics>& out) { layers(p, out); }
void compute_calls(const pair_list<float>& p, std::vector<fevo::layer_metrics>& out) { calls(p, out); }
void compute_calls(const pair_list<fevo::bfloat16>& p, std::vector<fevo::layer_metrics>& out) { calls(p, out); }
void compute_calls(const pair_list<fevo::half>& p, std::vector<fevo::layer_metrics>& out) { calls(p, out); }

}  // namespace fevo_bench::default_build
