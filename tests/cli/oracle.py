#!/usr/bin/env python3
"""Oracle test of `fevo analyze`: snapshots written by the reference `safetensors` package (and
NumPy's .npy/.npz writers), metrics recomputed with NumPy from eqs. 1-3 with fevo's exact semantics:
d = next - prev in float32 (float64 for f64 input), changed = not (|d| <= tau) (NaN counts as
changed), D = sum of float64(d)**2 per filter, averaged over filters; S and Z from exact counts.

    oracle.py FEVO_BINARY WORKDIR [--seed N]

S and Z must equal exactly; D within 1e-6 relative (fevo's bound for f32 input)."""
import argparse
import csv
import os
import shutil
import subprocess
import sys

try:
    import numpy as np
    from safetensors.numpy import save_file
except ImportError as e:  # the test command installs them
    print(f"oracle.py: {e}: run `python3 -m pip install numpy safetensors`", file=sys.stderr)
    sys.exit(1)


def metrics(a, b, tau, compute):
    with np.errstate(invalid="ignore", over="ignore"):
        return _metrics(a, b, tau, compute)


def _metrics(a, b, tau, compute):
    a = a.astype(compute)
    b = b.astype(compute)
    d = (b - a).astype(compute)
    tau_c = compute(tau)
    changed = ~(np.abs(d) <= tau_c)
    n, c = d.shape[0], d.shape[1]
    D = float(np.sum(d.astype(np.float64) ** 2, axis=(1, 2, 3)).sum() / n)
    S = int(changed.sum()) / float(d.size)
    R = changed.sum(axis=(2, 3))
    Z = int((R == 0).sum()) / float(n * c)
    nonfinite = int((~np.isfinite(d)).sum())
    Dw = D / float(c * d.shape[2] * d.shape[3])  # D per weight: D / (C H W)
    return D, S, Z, nonfinite, Dw


def run(fevo, args):
    p = subprocess.run([fevo] + args, capture_output=True, text=True)
    if p.returncode != 0:
        print("fevo failed:", " ".join(args), p.stderr, file=sys.stderr)
        sys.exit(1)


def check(out_dir, expected, label):
    rows = list(csv.DictReader(open(os.path.join(out_dir, "metrics.csv"))))
    assert len(rows) == len(expected), f"{label}: {len(rows)} rows, expected {len(expected)}"
    bad = 0
    close = lambda want, got: (np.isnan(want) and np.isnan(got)) or want == got or abs(got - want) <= 1e-6 * abs(want)
    for row, (key, (D, S, Z, nf, Dw)) in zip(rows, expected):
        got = (int(row["step_prev"]), int(row["step"]), row["layer"])
        if got != key:
            print(f"{label}: row {got} expected {key}"); bad += 1; continue
        gD, gS, gZ, gnf = float(row["D"]), float(row["S"]), float(row["Z"]), int(row["nonfinite"])
        gDw = float(row["D_per_weight"])
        if not (close(D, gD) and close(Dw, gDw) and gS == S and gZ == Z and gnf == nf):
            print(f"{label} {key}: fevo D={gD!r} S={gS!r} Z={gZ!r} nonfinite={gnf} D_per_weight={gDw!r}; "
                  f"numpy D={D!r} S={S!r} Z={Z!r} nonfinite={nf} D_per_weight={Dw!r}")
            bad += 1
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fevo")
    ap.add_argument("workdir")
    ap.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "little"))
    a = ap.parse_args()
    print(f"oracle.py seed: {a.seed} (pass --seed {a.seed} to reproduce)")
    rng = np.random.default_rng(a.seed)
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    tau = 2e-4
    bad = 0
    dtypes = [(np.float32, np.float32, "f32"), (np.float64, np.float64, "f64"), (np.float16, np.float32, "f16")]
    for store, compute, tag in dtypes:
        d = os.path.join(a.workdir, tag)
        os.makedirs(d)
        shapes = {"features.0.weight": (8, 3, 3, 3), "features.3.weight": (16, 8, 3, 3),
                  "layer.conv1x1.weight": (32, 16, 1, 1), "stem.weight": (4, 3, 7, 7)}
        w = {k: rng.normal(0, 0.05, s).astype(store) for k, s in shapes.items()}
        w["fc.weight"] = rng.normal(0, 0.05, (10, 16)).astype(store)
        snaps = []
        # 7 snapshots: more pairs than `fevo analyze` computes in one window (4)
        steps = [0, 10, 20, 35, 50, 60, 80]
        for k, step in enumerate(steps):
            if k == 2:  # a non-finite change and an exact tie |d| == tau
                w["features.0.weight"][0, 0, 0, 0] = np.nan
                w["features.3.weight"].flat[-1] = np.inf
            save_file(w, os.path.join(d, f"snap_{step:05d}.safetensors"), metadata={"step": str(step)})
            snaps.append(dict(w))
            w = {name: (v + (rng.normal(0, 1e-3, v.shape) * (rng.random(v.shape) < 0.4)).astype(store))
                 for name, v in w.items()}
        out = os.path.join(a.workdir, f"out_{tag}")
        run(a.fevo, ["analyze", d, "--tau", repr(tau), "--out", out])
        # the layers in the order fevo wrote them (the first snapshot's order)
        order = [r["layer"] for r in csv.DictReader(open(os.path.join(out, "metrics.csv")))][: len(shapes)]
        expected = []
        for k in range(1, len(snaps)):
            for name in order:
                expected.append(((steps[k - 1], steps[k], name), metrics(snaps[k - 1][name], snaps[k][name], tau, compute)))
        bad += check(out, expected, tag)
        # against a fixed reference step, and 2-D weights included
        out = os.path.join(a.workdir, f"out_{tag}_ref")
        run(a.fevo, ["analyze", d, "--tau", repr(tau), "--out", out, "--reference", "0", "--include-2d"])
        order = [r["layer"] for r in csv.DictReader(open(os.path.join(out, "metrics.csv")))][: len(shapes) + 1]
        expected = []
        for k in range(1, len(snaps)):
            for name in order:
                pa, pb = snaps[0][name], snaps[k][name]
                if pa.ndim == 2:
                    pa, pb = pa[:, :, None, None], pb[:, :, None, None]
                expected.append(((0, steps[k], name), metrics(pa, pb, tau, compute)))
        bad += check(out, expected, tag + " --reference 0")
    # NumPy's own writers: a series of .npz archives and of .npy files
    for kind in ("npz", "npy"):
        d = os.path.join(a.workdir, kind)
        os.makedirs(d)
        arrs = []
        x = rng.normal(0, 0.05, (6, 5, 3, 3)).astype(np.float32)
        for step in (1, 2, 3):
            if kind == "npz":
                np.savez(os.path.join(d, f"w{step}.npz"), conv=x)
            else:
                np.save(os.path.join(d, f"w{step}.npy"), x)
            arrs.append(x)
            x = (x + rng.normal(0, 1e-3, x.shape) * (rng.random(x.shape) < 0.5)).astype(np.float32)
        out = os.path.join(a.workdir, f"out_{kind}")
        run(a.fevo, ["analyze", d, "--tau", repr(tau), "--out", out])
        name = "conv" if kind == "npz" else "array"
        expected = [((k, k + 1, name), metrics(arrs[k - 1], arrs[k], tau, np.float32)) for k in (1, 2)]
        bad += check(out, expected, kind)
    if bad:
        print(f"oracle.py: {bad} mismatches", file=sys.stderr)
        return 1
    print("oracle.py: fevo analyze equals the NumPy computation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
