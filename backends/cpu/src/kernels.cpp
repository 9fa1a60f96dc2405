// The CPU kernels of the four element types, compiled once for fevo's own programs (tests,
// tools, examples, benchmarks), which link the CMake target fevo_cpu_kernels and so see the
// extern declarations at the end of <fevo/cpu.hpp> (FEVO_CPU_EXTERN_KERNELS) instead of
// compiling the kernels themselves. Not part of the installed, header-only fevo::cpu.
#include <fevo/cpu.hpp>

namespace fevo::cpu {
inline namespace FEVO_CPU_BASELINE_NS {

template void evaluate<float>(const parallel_policy&, layer_task<float, host_space>*, std::size_t);
template void evaluate<double>(const parallel_policy&, layer_task<double, host_space>*, std::size_t);
template void evaluate<bfloat16>(const parallel_policy&, layer_task<bfloat16, host_space>*, std::size_t);
template void evaluate<half>(const parallel_policy&, layer_task<half, host_space>*, std::size_t);

}  // namespace FEVO_CPU_BASELINE_NS
}  // namespace fevo::cpu
