#!/usr/bin/env bash
# Builds fevo's CPU benchmark in Release for this machine (FEVO_NATIVE=ON; the default-build rows
# come from bench_cpu_default.cpp, compiled without it) into build-bench and runs it; it prints
# the CPU, the load average, the per-benchmark rates and the ratio table at the end.
#   bench/run_cpu.sh [--quick] [--dram-mb=N] [google-benchmark flags, e.g. --benchmark_filter=resnet50]
# BUILD_DIR overrides the build folder; JOBS the build parallelism.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"
jobs="${JOBS:-$(nproc 2>/dev/null || echo 2)}"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFEVO_NATIVE=ON \
      -DFEVO_BUILD_BENCH=ON -DFEVO_BUILD_TESTS=OFF
cmake --build "$build" -j"$jobs" --target fevo_bench_cpu
exe="$build/bench/fevo_bench_cpu"
if [[ ! -x "$exe" ]]; then
  echo "run_cpu.sh: $exe was not built (Google Benchmark missing? see the cmake output)" >&2
  exit 1
fi
if command -v lscpu >/dev/null; then
  lscpu | grep -E '^(Model name|CPU\(s\)|L3 cache)' || true
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
"$exe" "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
