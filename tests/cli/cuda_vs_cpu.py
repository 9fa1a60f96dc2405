#!/usr/bin/env python3
"""`fevo analyze --backend cuda` against `--backend cpu` on the same snapshot series (NumPy .npy
files, f32 C-order, f32 Fortran-order (a strided view on the device) and f16).

    cuda_vs_cpu.py FEVO_BINARY WORKDIR [--seed N]

S and Z (and the per-filter fractions) must be equal; D within 1e-6 relative (the CPU backend's
bound; the CUDA backend sums exact squares). Exit 77 (skipped) when there is no usable GPU."""
import argparse
import csv
import os
import shutil
import subprocess
import sys

import numpy as np


def write_series(root, name, dtype, fortran, rng):
    d = os.path.join(root, name)
    os.makedirs(d)
    w = rng.standard_normal((48, 40, 3, 3)).astype(np.float32) * 0.05
    for step in (0, 10, 20):
        arr = w.astype(dtype)
        if fortran:
            arr = np.asfortranarray(arr)
        np.save(os.path.join(d, f"snap_{step}.npy"), arr)
        keep = rng.random(w.shape) < 0.4
        w = np.where(keep, w, w + rng.standard_normal(w.shape).astype(np.float32) * 4e-4)
    return d


def run(fevo, series, out, backend):
    return subprocess.run([fevo, "analyze", series, "--tau", "2e-4", "--out", out, "--backend", backend],
                          capture_output=True, text=True)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fevo")
    ap.add_argument("work")
    ap.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "little"))
    a = ap.parse_args()
    print(f"cuda_vs_cpu.py seed {a.seed} (--seed {a.seed} reproduces)")
    rng = np.random.default_rng(a.seed)
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    failures = 0
    for name, dtype, fortran in (("f32", np.float32, False), ("f32_fortran", np.float32, True),
                                 ("f16", np.float16, False)):
        series = write_series(a.work, name, dtype, fortran, rng)
        outs = {}
        for backend in ("cpu", "cuda"):
            out = os.path.join(a.work, f"out_{name}_{backend}")
            r = run(a.fevo, series, out, backend)
            if backend == "cuda" and r.returncode == 2 and "no usable CUDA device" in r.stderr:
                print("no usable CUDA device: skipped")
                return 77
            if r.returncode != 0:
                print(f"{name} {backend}: exit {r.returncode}: {r.stderr.strip()}")
                return 1
            outs[backend] = out
        m_cpu = rows(os.path.join(outs["cpu"], "metrics.csv"))
        m_gpu = rows(os.path.join(outs["cuda"], "metrics.csv"))
        assert len(m_cpu) == len(m_gpu) == 2, (len(m_cpu), len(m_gpu))
        for c, g in zip(m_cpu, m_gpu):
            for k in ("step_prev", "step", "layer", "S", "Z", "n_filters", "nonfinite"):
                if c[k] != g[k]:
                    print(f"{name}: {k} differs: cpu {c[k]} cuda {g[k]}")
                    failures += 1
            for k in ("D", "D_per_weight"):
                dc, dg = float(c[k]), float(g[k])
                if abs(dc - dg) > 1e-6 * abs(dg):
                    print(f"{name}: {k} differs beyond 1e-6: cpu {dc!r} cuda {dg!r}")
                    failures += 1
        s_cpu = rows(os.path.join(outs["cpu"], "filter_summary.csv"))
        s_gpu = rows(os.path.join(outs["cuda"], "filter_summary.csv"))
        for c, g in zip(s_cpu, s_gpu):
            for k in ("layer", "filter", "steps", "frac_S_zero", "frac_Z_one"):
                if c[k] != g[k]:
                    print(f"{name}: summary {k} differs: cpu {c[k]} cuda {g[k]}")
                    failures += 1
        print(f"{name}: {len(m_cpu)} rows, {len(s_cpu)} filters compared")
    print("PASS" if failures == 0 else f"FAIL: {failures} differences")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
