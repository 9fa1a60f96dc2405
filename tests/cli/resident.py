#!/usr/bin/env python3
"""`fevo analyze` keeps at most two snapshots resident however long the series.

    resident.py PEAK_RSS FEVO_BINARY WORKDIR

Writes two series of 9 safetensors snapshots (f32; one of many similar layers, one with a layer
of half the snapshot), runs `fevo analyze` on each, consecutive and against a reference, and
compares the peak resident set of each run (its rusage maxrss, which counts the memory-mapped
snapshot pages it touched, reported by the PEAK_RSS helper that spawns it) with the peak of a run
on two tiny snapshots (the program itself). The difference must stay within two snapshots plus
4 MiB for the run's own buffers (per-filter results, the journal record)."""
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    from safetensors.numpy import save_file
except ImportError as e:  # the test command installs them
    print(f"resident.py: {e}: run `python3 -m pip install numpy safetensors`", file=sys.stderr)
    sys.exit(1)


def peak_kib(helper, cmd):
    """Runs cmd under the helper; returns its maxrss in KiB (Linux reports KiB)."""
    p = subprocess.run([helper] + cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"resident.py: {' '.join(cmd)} exited {p.returncode}: {p.stderr}", file=sys.stderr)
        sys.exit(1)
    return int(p.stdout.strip().splitlines()[-1])


def write_series(d, shapes, rng, n=9):
    os.makedirs(d)
    w = {k: rng.normal(0, 0.05, s).astype(np.float32) for k, s in shapes.items()}
    for step in range(n):
        save_file(w, os.path.join(d, f"step_{step:03d}.safetensors"))
        for v in w.values():
            v += rng.normal(0, 1e-3, v.shape).astype(np.float32)
    return sum(v.nbytes for v in w.values())


def main():
    helper, fevo, work = sys.argv[1], sys.argv[2], sys.argv[3]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rng = np.random.default_rng(5)
    # Many layers of similar size (pairs are computed four at a time, in chunks of layers), and one
    # layer of half the snapshot (pair by pair).
    models = {
        "even": {f"l{k}.weight": (256, 128, 3, 3) for k in range(8)} | {"stem.weight": (64, 3, 7, 7)},
        "dominant": {"conv1.weight": (64, 3, 7, 7), "a.weight": (256, 256, 3, 3), "b.weight": (512, 256, 3, 3),
                     "c.weight": (1024, 512, 1, 1), "d.weight": (64, 64, 1, 1)},
    }
    tiny = os.path.join(work, "tiny")
    os.makedirs(tiny)
    for step in range(2):
        save_file({"t.weight": np.full((2, 2, 3, 3), step, np.float32)}, os.path.join(tiny, f"s{step}.safetensors"))
    base = peak_kib(helper, [fevo, "analyze", tiny, "--tau", "1e-3", "--out", os.path.join(work, "out_tiny")])
    bad = 0
    for model, shapes in models.items():
        series = os.path.join(work, model)
        snap_bytes = write_series(series, shapes, rng)
        limit = (2 * snap_bytes + 4 * 2**20) / 1024
        for label, extra in (("consecutive", []), ("--reference 0", ["--reference", "0"])):
            out = os.path.join(work, f"out_{model}_{len(extra)}")
            peak = peak_kib(helper, [fevo, "analyze", series, "--tau", "1e-3", "--out", out] + extra)
            grown = peak - base
            ok = grown <= limit
            print(f"{model}, {label}: peak {peak} KiB, program alone {base} KiB, grown {grown} KiB "
                  f"= {grown * 1024 / snap_bytes:.2f} snapshots of {snap_bytes / 2**20:.1f} MiB "
                  f"(limit 2 snapshots + 4 MiB) {'ok' if ok else 'TOO MUCH'}")
            bad += not ok
    shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
