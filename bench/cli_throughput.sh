#!/usr/bin/env bash
# Streaming throughput of `fevo analyze` on a directory of safetensors snapshots already in the
# page cache, against just reading the same files (`cat FILES > /dev/null`), in one run.
#   bench/cli_throughput.sh [SNAPSHOTS=6] [BUILD_DIR=build-cli]     (REPS=9: runs of each, in turn)
# The command is built as `cmake --install` builds it for a user: Release, without FEVO_NATIVE, so
# the CPU backend picks its kernel at run time (FEVO_NATIVE=ON in the environment builds with
# -march=native instead, for comparison). FEVO=path/to/fevo times that binary instead of building;
# FEVO_BASE=path/to/other/fevo times a second binary in turn with it (e.g. one built from an older
# commit), so that a change is measured in one run.
# Snapshots: the 53 conv layers of ResNet-50 in f32 (23.5M weights, 94 MB each), written with the
# reference safetensors package. Target: analyze >= 0.8x the read rate.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-6}
build=${2:-build-cli}
native=${FEVO_NATIVE:-OFF}
work=$(mktemp -d /tmp/fevo-cli-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

if [[ -n "${FEVO:-}" ]]; then
  fevo=$FEVO
else
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DFEVO_NATIVE="$native" -DFEVO_BUILD_TESTS=OFF \
        -DFEVO_BUILD_BENCH=OFF -DFEVO_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build "$build" -j"$(nproc)" --target fevo_cli >/dev/null
  fevo="$build/tools/fevo"
fi
echo "fevo: $fevo ($("$fevo" --version 2>&1 | head -1); FEVO_NATIVE=$native)"

python3 - "$work/snaps" "$n" <<'PY'
import os, sys
import numpy as np
from safetensors.numpy import save_file
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
shapes = [("conv1", (64, 3, 7, 7))]
inp = 64
for s, units in enumerate([3, 4, 6, 3]):
    mid, o = 64 << s, 256 << s
    for u in range(units):
        p = f"layer{s + 1}.{u}."
        shapes += [(p + "conv1", (mid, inp, 1, 1)), (p + "conv2", (mid, mid, 3, 3)), (p + "conv3", (o, mid, 1, 1))]
        if u == 0:
            shapes.append((p + "downsample", (o, inp, 1, 1)))
        inp = o
rng = np.random.default_rng(3)
w = {k + ".weight": rng.normal(0, 0.05, s).astype(np.float32) for k, s in shapes}
for step in range(n):
    save_file(w, f"{out}/step_{step * 100:06d}.safetensors", metadata={"step": str(step * 100)})
    for v in w.values():
        v += (rng.normal(0, 4e-4, v.shape) * (rng.random(v.shape) < 0.7)).astype(np.float32)
PY

files=("$work"/snaps/*.safetensors)
bytes=$(cat "${files[@]}" | wc -c)
sync  # written back now, so that writeback does not run during the timings
cat "${files[@]}" >/dev/null  # into the page cache
base=${FEVO_BASE:-}
[[ -n "$base" ]] && echo "baseline: $base ($("$base" --version 2>&1 | head -1))"
reps=${REPS:-9}
t_cat=() t_fevo=() t_base=()
for rep in $(seq "$reps"); do
  t0=$(date +%s.%N); cat "${files[@]}" >/dev/null; t1=$(date +%s.%N)
  t_cat+=("$t0:$t1")
  rm -rf "$work/out"
  t0=$(date +%s.%N); "$fevo" analyze "$work/snaps" --tau 2e-4 --out "$work/out"; t1=$(date +%s.%N)
  t_fevo+=("$t0:$t1")
  if [[ -n "$base" ]]; then
    rm -rf "$work/out"
    t0=$(date +%s.%N); "$base" analyze "$work/snaps" --tau 2e-4 --out "$work/out"; t1=$(date +%s.%N)
    t_base+=("$t0:$t1")
  fi
done
# One more run, for its page faults: the command maps the snapshots, and the kernel maps a
# page-cached file in fewer, cheaper faults when its page cache is in large folios (which depends
# on how the file was written and read before), so the rate above moves with this count.
rm -rf "$work/out"
faults=$(python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt)' "$fevo" analyze "$work/snaps" --tau 2e-4 --out "$work/out")
python3 - "$bytes" "$n" "$faults" "${t_cat[*]}" "${t_fevo[*]}" "${t_base[*]:-}" <<'PY'
import statistics, sys
b, n, faults = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def times(arg):
    return [float(e) - float(s) for s, e in (t.split(":") for t in arg.split())]
cat, fevo, base = times(sys.argv[4]), times(sys.argv[5]), times(sys.argv[6])
print(f"{n} ResNet-50 f32 snapshots, {b / 1e6:.0f} MB, in the page cache (best of {len(cat)} in turn; median)")
def line(name, t):
    return f"{name}: {min(t):.3f} s  {b / min(t) / 1e9:.2f} GB/s  (median {statistics.median(t):.3f} s)"
print(line("cat FILES > /dev/null ", cat))
print(line("fevo analyze          ", fevo) + "  each file is read once")
c, f = min(cat), min(fevo)
if base:
    g = min(base)
    print(line("baseline analyze      ", base) +
          f"  ratio to read {c / g:.2f}; fevo / baseline rate {g / f:.2f} (medians {statistics.median(base) / statistics.median(fevo):.2f})")
print(f"analyze page faults   : {faults} minor, in one more run (mapping the snapshots)")
r = c / f
print(f"ratio analyze / read  : {r:.2f}, of the medians {statistics.median(cat) / statistics.median(fevo):.2f}  "
      f"(target >= 0.8) {'PASS' if r >= 0.8 else 'MISS'}")
PY
