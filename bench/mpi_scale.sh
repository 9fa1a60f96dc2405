#!/usr/bin/env bash
# `mpirun -np K fevo analyze` on a sharded bf16 series already in the page cache: what MPI costs
# against threads, and how the work scales with ranks, in one run.
#   bench/mpi_scale.sh [GB_PER_CHECKPOINT=1] [CHECKPOINTS=6] [BUILD_DIR=build-bench] [--wait-quiet]
# The series: a Trainer's checkpoint-N/ directories under /tmp, each a transformer's 2-D bf16
# weights (hidden 2048, MLP 8192) in shards of at most 256 MB with model.safetensors.index.json;
# analysed with --include-2d. Timed, best of 3 each (the whole command, mpirun's start-up included;
# and the analysis alone, as --report-io times it):
#   A  one process, --threads 2
#   B  mpirun -np 2, one thread each         target: A / B >= 0.9 (MPI costs little)
#   C  mpirun -np 1, one thread               target: C / B >= 1.7 (ranks scale)
# and the GB/s each rank reads (--report-io: bytes of its share over its busy seconds).
# --wait-quiet: first wait until the 1-minute load average is below 1.5 (polled every 30 s, for
# at most 20 minutes; the load it ran under is printed either way). Prints PASS/MISS per target and
# exits 0 whatever the timings.
set -euo pipefail
cd "$(dirname "$0")/.."
wait_quiet=0
args=()
for a in "$@"; do
  if [ "$a" = --wait-quiet ]; then wait_quiet=1; else args+=("$a"); fi
done
gb=${args[0]:-1}
n=${args[1]:-6}
build=${args[2]:-build-bench}
work=$(mktemp -d /tmp/fevo-mpi-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DFEVO_NATIVE=ON -DFEVO_BUILD_TESTS=OFF -DFEVO_BUILD_BENCH=OFF \
  -DFEVO_BUILD_EXAMPLES=OFF -DFEVO_ENABLE_CUDA=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target fevo_cli >/dev/null
fevo="$build/tools/fevo"
grep -q "with MPI" <("$fevo" --version) || { echo "mpi_scale.sh: $fevo was built without MPI"; exit 0; }

python3 - "$work/series" "$gb" "$n" <<'PY'
import json, os, sys
import ml_dtypes
import numpy as np
from safetensors.numpy import save_file
out, gb, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
bf16 = np.dtype(ml_dtypes.bfloat16)
hidden, mlp = 2048, 8192
block = [("attn.q", (hidden, hidden)), ("attn.k", (hidden, hidden)), ("attn.v", (hidden, hidden)),
         ("attn.o", (hidden, hidden)), ("mlp.up", (mlp, hidden)), ("mlp.down", (hidden, mlp))]
per_block = sum(a * b for _, (a, b) in block) * 2
blocks = max(1, int(gb * 1e9 // per_block))
names = [(f"model.layers.{i}.{k}.weight", s) for i in range(blocks) for k, s in block]
rng = np.random.default_rng(5)
w = {k: rng.standard_normal(s, dtype=np.float32).astype(bf16) for k, s in names}
shard_max = 256 << 20
for c in range(n):
    step = (c + 1) * 500
    d = os.path.join(out, f"checkpoint-{step}")
    os.makedirs(d)
    shards, cur, size = [], [], 0
    for k, _ in names:
        if cur and size + w[k].nbytes > shard_max:
            shards.append(cur); cur, size = [], 0
        cur.append(k); size += w[k].nbytes
    shards.append(cur)
    wm = {}
    for i, s in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: w[k] for k in s}, os.path.join(d, fn), metadata={"format": "pt"})
        wm.update({k: fn for k in s})
    json.dump({"metadata": {"total_size": sum(v.nbytes for v in w.values())}, "weight_map": wm},
              open(os.path.join(d, "model.safetensors.index.json"), "w"))
    json.dump({"global_step": step}, open(os.path.join(d, "trainer_state.json"), "w"))
    # a tenth of the weights move a little (in place: bf16 bits, no float copy of the whole model)
    for k, v in w.items():
        flat = v.reshape(-1)
        idx = rng.integers(0, flat.size, flat.size // 10)
        flat[idx] = (flat[idx].astype(np.float32) * np.float32(1.01)).astype(bf16)
print(f"{n} checkpoints of {blocks} transformer blocks (hidden {hidden}, MLP {mlp}), "
      f"{sum(v.nbytes for v in w.values()) / 1e9:.2f} GB each, {len(shards)} shards each")
PY

bytes=$(du -cb "$work"/series/*/*.safetensors | tail -1 | cut -f1)
sync
cat "$work"/series/*/*.safetensors >/dev/null  # into the page cache
free_gb=$(awk '/MemAvailable/ {printf "%.1f", $2 / 1e6}' /proc/meminfo)
echo "series: $(python3 -c "print(f'{$bytes / 1e9:.2f}')") GB of safetensors in /tmp, ${free_gb} GB of memory available"

if [ "$wait_quiet" = 1 ]; then
  for i in $(seq 1 40); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    python3 -c "import sys; sys.exit(0 if $load < 1.5 else 1)" && break
    echo "waiting for a quiet machine: 1-minute load average $load"
    sleep 30
  done
fi
echo "load average before the timings: $(cut -d' ' -f1-3 /proc/loadavg)"

export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
mpirun=(mpirun -q --oversubscribe --mca btl self,vader)
run() {  # label, then the command that starts fevo ("analyze ..." is appended): "best best_analysis"
  local label=$1; shift
  local best=1e9 best_loop=1e9 t0 t1 loop
  for rep in 1 2 3; do
    rm -rf "$work/out"
    t0=$(date +%s.%N)
    "$@" analyze "$work/series" --tau 1e-3 --include-2d --out "$work/out" --report-io >"$work/$label.log"
    t1=$(date +%s.%N)
    loop=$(tail -1 "$work/$label.log" | sed -E 's/.* read in ([0-9.]+) s.*/\1/')
    best=$(python3 -c "print(min($best, $t1 - $t0))")
    best_loop=$(python3 -c "print(min($best_loop, $loop))")
  done
  echo "$best $best_loop"
}
read -r a a_loop < <(run A env OMP_NUM_THREADS=2 "$fevo")
read -r b b_loop < <(run B env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 2 "$fevo")
read -r c c_loop < <(run C env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 1 "$fevo")
echo "load average after the timings: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "mpirun -np 2, one thread each, --report-io (last of 3):"
grep "rank [0-9]*:" "$work/B.log" | sed 's/^fevo analyze: /  /'
python3 - "$bytes" "$a" "$a_loop" "$b" "$b_loop" "$c" "$c_loop" <<'PY'
import sys
n = int(sys.argv[1])
a, al, b, bl, c, cl = map(float, sys.argv[2:])
print(f"{'':34} {'whole command':>22} {'analysis (--report-io)':>24}")
for name, t, l in [("A  one process, 2 threads", a, al), ("B  mpirun -np 2, 1 thread each", b, bl),
                   ("C  mpirun -np 1, 1 thread", c, cl)]:
    print(f"{name:34} {t:8.3f} s {n / t / 1e9:7.2f} GB/s {l:10.3f} s {n / l / 1e9:7.2f} GB/s")
for what, x, y, target in [("A / B (MPI against threads)", a / b, al / bl, 0.9), ("C / B (2 ranks against 1)", c / b, cl / bl, 1.7)]:
    print(f"{what:34} {x:8.2f} {'PASS' if x >= target else 'MISS':>12} {y:10.2f} {'PASS' if y >= target else 'MISS':>13}"
          f"   (target >= {target})")
PY
