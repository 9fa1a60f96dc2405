// The fused pass compiled without -march=native (bench_cpu_default.cpp), as an installed `fevo`
// or a pip-built module runs it: the CPU backend picks its kernel at run time. The benchmark times
// it next to the same calls compiled by this build, for the "default build / native build" rows;
// the two translation units may be compiled for different instruction sets because fevo::cpu puts
// everything that depends on them in a namespace named after the set.
#pragma once

#include <vector>

#include <fevo/fevo.hpp>

namespace fevo_bench {

inline constexpr int kThreads = 2;
inline constexpr double kTau = 2e-4;  // the paper's initial learning rate

template <class T>
using pair_list = std::vector<fevo::layer_pair<T>>;

namespace default_build {

/// fevo::cpu::instruction_set() in the default build.
const char* instruction_set();
/// One fevo::compute_layers call over all pairs (kThreads threads, kTau).
void compute_layers(const pair_list<float>& pairs, std::vector<fevo::layer_metrics>& out);
void compute_layers(const pair_list<fevo::bfloat16>& pairs, std::vector<fevo::layer_metrics>& out);
void compute_layers(const pair_list<fevo::half>& pairs, std::vector<fevo::layer_metrics>& out);
/// One fevo::compute call per pair.
void compute_calls(const pair_list<float>& pairs, std::vector<fevo::layer_metrics>& out);
void compute_calls(const pair_list<fevo::bfloat16>& pairs, std::vector<fevo::layer_metrics>& out);
void compute_calls(const pair_list<fevo::half>& pairs, std::vector<fevo::layer_metrics>& out);

}  // namespace default_build
}  // namespace fevo_bench
