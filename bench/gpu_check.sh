#!/usr/bin/env bash
# The one-call GPU check: configures fevo with CUDA for the GPU it finds, builds the CUDA tests and
# the GPU benchmark, runs both and PyTorch eager on the same shapes, and writes a summary.
#   bench/gpu_check.sh OUTDIR        (OUTDIR gets summary.txt, sass.txt, ctest.log, bench.txt,
#                                     torch.json, ncu-*.txt, sanitizer.log)
# The benchmark times the default tuning and each tuning of fevo::cuda::experimental side by side
# (its last table: each variant's ratio to the default, and the fastest), so that one run can
# settle which deserves to be the default.
# Then compute-sanitizer (memcheck, racecheck) runs the CUDA-only test cases; FEVO_GPU_QUICK=1 skips
# those and the profiler.
# Catch2 and Google Benchmark come from the system or from .gpu-deps/ (bench/gpu_prepare.sh).
# Sized to finish in a few minutes on an H100 (a 16-core build, short benchmark runs), and held to
# a time budget: FEVO_GPU_BUDGET seconds in all (default 330, under 6 minutes). The build, the
# CUDA tests, the benchmark and PyTorch eager always run (the benchmark gets at least 60 s); the
# profiler and compute-sanitizer each run only within what is left of the budget, in that order,
# and the summary says which were cut short or left out for lack of time.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/gpu_check.sh OUTDIR}
mkdir -p "$out"
t0=$(date +%s)
budget=${FEVO_GPU_BUDGET:-330}
[[ "$budget" =~ ^[0-9]+$ ]] || { echo "gpu_check: FEVO_GPU_BUDGET must be a number of seconds, not '$budget'" >&2; exit 2; }
log() { echo "[gpu_check $(( $(date +%s) - t0 ))s] $*" | tee -a "$out/summary.txt"; }
budget_left() { echo $(( budget - ($(date +%s) - t0) )); }
# within WANT [FLOOR]: the seconds a step may take, WANT or what is left of the budget if less,
# but at least FLOOR (default 1: `timeout 0` would mean no limit at all).
within() {
  local left floor=${2:-1}
  left=$(budget_left)
  (( left > $1 )) && left=$1
  (( left < floor )) && left=$floor
  (( left < 1 )) && left=1
  echo "$left"
}
# afford STEP SECONDS: true when at least SECONDS of the budget are left for STEP; else says so.
afford() {
  local left
  left=$(budget_left)
  (( left >= $2 )) && return 0
  (( left < 0 )) && left=0
  log "left out for lack of time: $1 (${left}s of the ${budget}s budget left; FEVO_GPU_BUDGET sets it)"
  return 1
}

cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
[ -n "$cap" ] || { log "no GPU found by nvidia-smi"; exit 1; }
log "device: $name (sm_$cap), driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1), $(nproc) CPUs"
nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
prefix=""
[ -d .gpu-deps ] && prefix="-DCMAKE_PREFIX_PATH=$PWD/.gpu-deps"
gen=""
command -v ninja >/dev/null && gen="-G Ninja"

cmake -S . -B build-gpu $gen -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" \
  -DCMAKE_CUDA_ARCHITECTURES="$cap" -DFEVO_BUILD_TESTS=ON -DFEVO_BUILD_BENCH=ON \
  -DFEVO_BENCH_TORCH=OFF -DFEVO_BUILD_EXAMPLES=OFF -DFEVO_CUDA_TEST_TIMEOUT=180 $prefix >"$out/configure.log" 2>&1 ||
  { log "configure failed (configure.log)"; tail -30 "$out/configure.log"; exit 1; }
# One parallel build, going on past failures: the device recorder and the fevo command's CUDA path
# need more packages (.gpu-deps); their failure is reported, and the rest goes on.
keep="-k"
[ -n "$gen" ] && keep="-k 0"
cmake --build build-gpu -j"$(nproc)" --target fevo_test_cuda fevo_bench_cuda fevo_test_record_cuda fevo_cli \
  -- $keep >"$out/build.log" 2>&1 || log "build had errors (build.log): $(grep -m3 -E 'error' "$out/build.log" | tr '\n' ' ')"
for t in tests/fevo_test_cuda bench/fevo_bench_cuda; do
  [ -x build-gpu/$t ] || { log "$t was not built"; tail -40 "$out/build.log"; exit 1; }
done
log "built"
# How nvcc compiled the fused kernels for this GPU: registers, spills, and whether each round's
# 16-byte loads are all issued before the first is used (tools/sass_report.py; cuda.sass_loads
# checks the same in the tests' kernels).
python3 tools/sass_report.py build-gpu/bench/fevo_bench_cuda >"$out/sass.txt" 2>&1
log "SASS of the fused kernels (sass.txt): $(tail -1 "$out/sass.txt")"

# Every step that runs kernels has a time limit, so that a kernel that never finishes costs this run
# minutes, not the rest of the device's time: ctest stops a CUDA test after 180 s
# (FEVO_CUDA_TEST_TIMEOUT above), and the benchmarks run under run_bench.
# run_bench FILE SECONDS BINARY ARGS...: runs the benchmark with its output in FILE. If it is still
# running after SECONDS (or what is left of the budget, if less, but at least RUN_BENCH_FLOOR
# seconds), the benchmark it was in (the first of its list that has not reported) is
# named, left out with --skip (a variant, such as kernels_staged, in all its forms: fused_staged,
# kernels_staged, compare_staged), and the rest run again, at most twice more. The
# tables at the end of FILE then have no figures (0.0) for what was left out.
run_bench() {
  local file=$1 secs=$2 bin=$3 skip="" attempt rc hung fam lim
  shift 3
  for attempt in 1 2 3; do
    # A rerun of an optional benchmark (no RUN_BENCH_FLOOR) only within the budget.
    if (( attempt > 1 )) && [ -z "${RUN_BENCH_FLOOR:-}" ]; then
      afford "a rerun of $(basename "$bin") without ${skip}" 20 || return $rc
    fi
    local args=("$@")
    [ -n "$skip" ] && args+=("--skip=^BM_($skip)/")
    lim=$(within "$secs" "${RUN_BENCH_FLOOR:-1}")
    timeout -k 10 "$lim" "$bin" "${args[@]}" >"$file" 2>&1
    rc=$?
    [ $rc = 124 ] || [ $rc = 137 ] || return $rc
    hung=$("$bin" "${args[@]}" --benchmark_list_tests=true 2>/dev/null | grep -E '^BM_' |
      while read -r b; do grep -q "^$b " "$file" || { echo "$b"; break; }; done)
    fam=${hung%%/*}
    fam=${fam#BM_}
    [[ "$fam" =~ ^(fused|kernels|compare)_(shared|unshared|lean|work_queue|staged|global_words|overlapped_merge|deep)$ ]] &&
      fam="(fused|kernels|compare)_${BASH_REMATCH[2]}"
    log "$(basename "$bin"): still running after ${lim}s, in ${hung:-(unknown)}: left out: ${fam:-nothing}"
    [ -n "$fam" ] || return $rc
    skip=${skip:+$skip|}$fam
    cp "$file" "$file.stopped-$attempt"
  done
  return $rc
}

# -V: every test's output, with the time of each Catch2 case as it ends (--durations, flushed), so
# that the log of a test ctest stopped names the last case that finished.
(cd build-gpu && ctest -L cuda -V) >"$out/ctest.log" 2>&1
log "cuda tests: $(grep -E 'tests passed|tests failed' "$out/ctest.log" | tail -1)"
grep -E '^ *[0-9]+/[0-9]+ Test' "$out/ctest.log" | tee -a "$out/summary.txt"
case_times() { grep -E "^$1: [0-9.]+ s: " "$out/ctest.log" | sed -E "s/^$1: //"; }
for n in $(sed -nE 's/^ *[0-9]+\/[0-9]+ Test +#([0-9]+): .*\*\*\*Timeout.*/\1/p' "$out/ctest.log"); do
  log "test #$n stopped at its time limit; the last case it finished: $(case_times "$n" | tail -1)"
done
log "slowest CUDA test cases (s):"
for n in $(sed -nE 's/^ *[0-9]+\/[0-9]+ Test +#([0-9]+): .*/\1/p' "$out/ctest.log"); do case_times "$n"; done |
  sort -rn | head -5 | tee -a "$out/summary.txt"

RUN_BENCH_FLOOR=60 run_bench "$out/bench.txt" 180 ./build-gpu/bench/fevo_bench_cuda --benchmark_min_time=0.2
log "benchmark:"
sed -n '/^model /,$p' "$out/bench.txt" | tee -a "$out/summary.txt"

timeout -k 10 "$(within 120 30)" python3 bench/torch_gpu.py --json "$out/torch.json" >/tmp/fevo_torch.txt 2>&1
tee -a "$out/summary.txt" </tmp/fevo_torch.txt
python3 - "$out" <<'PY' | tee -a "$out/summary.txt"
import json, re, sys
out = sys.argv[1]
try:
    torch = json.load(open(f"{out}/torch.json"))
except Exception:
    print("no PyTorch figures"); sys.exit(0)
rows = {}
for line in open(f"{out}/bench.txt"):
    m = re.match(r"(vgg16|resnet50)\s+(f32|bf16)\s+([\d.]+)", line)
    if m: rows.setdefault((m[1], m[2]), float(m[3]))  # the first table: the fused call
for (model, ty), fused in rows.items():
    t = torch.get(f"{model}/{ty}")
    if t:
        r = fused / t
        print(f"{model} {ty}: fused {fused:.1f} GB/s vs torch eager {t:.1f} GB/s = {r:.1f}x (target >= 5) {'PASS' if r >= 5 else 'MISS'}")
PY
log "torch done"
# The work-assignment model behind experimental::work_queue, for this GPU's SMs (PyTorch says how
# many; 132, an H100's or H200's, if it cannot), to set beside the kernels_work_queue rows.
sms=$(python3 -c 'import torch; print(torch.cuda.get_device_properties(0).multi_processor_count)' 2>/dev/null)
python3 bench/schedule.py --sms "${sms:-132}" 2>&1 | tee -a "$out/summary.txt"
# Nsight Compute on the first two calls of the fused pass (two launches each), and of its staged
# and work-queue variants, on VGG-16 and ResNet-50 (in that order, as far as the budget goes):
# duration, DRAM throughput, occupancy and its limits, and where warps stall. Counting launches from the first: a ResNet-50 benchmark may run
# a single iteration under the profiler.
# FEVO_GPU_QUICK=1 skips the profiler and compute-sanitizer (a rerun that only times).
quick=${FEVO_GPU_QUICK:-0}
if [ "$quick" != 1 ] && command -v ncu >/dev/null; then
  for mb in vgg16/fused resnet50/fused vgg16/fused_staged vgg16/fused_work_queue resnet50/fused_staged; do
    m=${mb%/*} b=${mb#*/}
    afford "ncu $m $b" 20 || break
    timeout "$(within 40)" ncu --clock-control none --kernel-name regex:'fold_filters|reduce_layers' --launch-count 4 \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
      --metrics dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active \
      ./build-gpu/bench/fevo_bench_cuda --benchmark_filter="^BM_$b/$m/f32" --benchmark_min_time=0.001 \
      >"$out/ncu-$m-$b.txt" 2>&1
    log "ncu $m $b: exit $?"
    grep -E '^  [a-z_]+.*(fold_filters|reduce_layers)|Duration|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per Thread|Block Limit (Registers|Shared Mem)|Warp Cycles Per Issued|dram__throughput|sm__warps_active|stall' \
      "$out/ncu-$m-$b.txt" | cut -c1-200 | tee -a "$out/summary.txt"
  done
fi
# The CUDA-only cases (mixed models, every mode and dtype) under compute-sanitizer: the staged
# kernel's small case first under both tools (its shared memory is what racecheck looks at), then
# the whole set, as far as the budget goes (exit 124: stopped at its time limit).
if [ "$quick" != 1 ] && command -v compute-sanitizer >/dev/null; then
  for cases in "cuda: the staged tuning runs*" "[cuda]"; do
    for tool in memcheck racecheck; do
      afford "compute-sanitizer $tool on '$cases'" 20 || break 2
      timeout "$(within 150)" compute-sanitizer --tool $tool --error-exitcode 9 ./build-gpu/tests/fevo_test_cuda "$cases" \
        >>"$out/sanitizer.log" 2>&1
      log "compute-sanitizer $tool on '$cases': exit $? ($(grep -c 'ERROR SUMMARY: 0 errors' "$out/sanitizer.log") clean summaries so far)"
    done
  done
fi
log "done ($(( $(date +%s) - t0 ))s of the ${budget}s budget)"
