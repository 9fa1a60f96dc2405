#!/usr/bin/env python3
"""`fevo analyze` and `fevo inspect` on sharded checkpoints: a Trainer's output directory of
checkpoint-N/ directories (three shards each, f32 and bf16 layers, 2-D linear layers with
--include-2d) against NumPy (sharded_series.metrics), and every malformed index refused with exit
status 2 and one line on stderr naming the file, before anything is written.

    sharded.py FEVO_BINARY WORKDIR [--seed N]

Each check prints ok/FAIL; the last line is 'N passed, M failed'."""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sharded_series as ss  # noqa: E402

results = []


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"))


def run(fevo, *args):
    p = subprocess.run([fevo, *args], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def oracle_rows(weights, steps, tau, layers):
    rows = []
    for k in range(1, len(steps)):
        for name in layers:
            (D, S, Z, nf), _ = ss.metrics(weights[k - 1][name], weights[k][name], tau)
            rows.append(((steps[k - 1], steps[k], name), (D, S, Z, nf)))
    return rows


def compare(out, expected):
    with open(os.path.join(out, "metrics.csv"), newline="") as f:
        got = list(csv.DictReader(f))
    if len(got) != len(expected):
        return f"{len(got)} rows, expected {len(expected)}"
    for row, (key, (D, S, Z, nf)) in zip(got, expected):
        k = (int(row["step_prev"]), int(row["step"]), row["layer"])
        if k != key:
            return f"row {k}, expected {key}"
        gD, gS, gZ, gnf = float(row["D"]), float(row["S"]), float(row["Z"]), int(row["nonfinite"])
        okD = (np.isnan(D) and np.isnan(gD)) or abs(gD - D) <= 1e-6 * abs(D)
        if not (okD and gS == S and gZ == Z and gnf == nf):
            return f"{key}: fevo {gD!r} {gS!r} {gZ!r} {gnf}, numpy {D!r} {S!r} {Z!r} {nf}"
    return ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fevo")
    ap.add_argument("workdir")
    ap.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "little"))
    a = ap.parse_args()
    print(f"sharded.py seed: {a.seed} (pass --seed {a.seed} to reproduce)")
    fevo, work = a.fevo, a.workdir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tau = 2e-4
    steps = [100, 200, 300, 400, 500, 600]
    good = os.path.join(work, "trainer_out")
    weights = ss.write_series(good, steps, a.seed)

    rc, out, err = run(fevo, "inspect", os.path.join(good, "checkpoint-100"), "--include-2d")
    check("fevo inspect on a checkpoint directory lists its shards and tensors",
          rc == 0 and "safetensors, 3 shards, 8 tensors" in out and "blocks.1.conv.weight" in out
          and "5 of 8 tensors would be analysed" in out, f"rc={rc} {out} {err}")

    o = os.path.join(work, "o_good")
    rc, out, err = run(fevo, "analyze", good, "--tau", repr(tau), "--out", o, "--include-2d")
    bad = compare(o, oracle_rows(weights, steps, tau, ss.analysed())) if rc == 0 else err
    check("fevo analyze on checkpoint-N/ directories equals NumPy (f32 and bf16, 2-D layers)", not bad, bad)
    o4 = os.path.join(work, "o_4d")
    rc, out, err = run(fevo, "analyze", good, "--tau", repr(tau), "--out", o4)
    bad = compare(o4, oracle_rows(weights, steps, tau, ss.analysed(include_2d=False))) if rc == 0 else err
    check("... and without --include-2d, the 4-D layers alone", not bad, bad)

    # The same weights in one file per step: the same rows (in that file's order of tensors).
    flat = os.path.join(work, "flat")
    os.makedirs(flat)
    from safetensors.numpy import save_file
    for step, w in zip(steps, weights):
        save_file(w, os.path.join(flat, f"step_{step}.safetensors"))
    of = os.path.join(work, "o_flat")
    rc, _, err = run(fevo, "analyze", flat, "--tau", repr(tau), "--out", of, "--include-2d")
    with open(os.path.join(o, "metrics.csv")) as f1, open(os.path.join(of, "metrics.csv")) as f2:
        sharded_rows, flat_rows = sorted(f1.read().splitlines()), sorted(f2.read().splitlines())
    check("sharded and single-file snapshots of the same weights give the same rows", rc == 0 and sharded_rows == flat_rows,
          err)

    # ---- malformed checkpoints: exit 2, one line naming the file, nothing written ------------------
    def refused(name, breaker, must_contain):
        n = len(results)
        d = os.path.join(work, f"bad_{n}")
        shutil.copytree(good, d)
        target = breaker(d)
        out_dir = os.path.join(work, f"o_bad_{n}")
        rc, out, err = run(fevo, "analyze", d, "--tau", repr(tau), "--out", out_dir, "--include-2d")
        lines = err.strip("\n").split("\n") if err else []
        ok = (rc == 2 and len(lines) == 1 and lines[0].startswith("fevo: ") and target in lines[0]
              and all(m in lines[0] for m in must_contain) and not os.path.exists(out_dir) and out == "")
        check(f"{name}: exit 2, one line naming {os.path.relpath(target, d)}, nothing written", ok,
              f"rc={rc} stderr={err.strip()[:400]!r} out exists={os.path.exists(out_dir)}")

    for name, breaker, must_contain in ss.malformed_cases(weights):
        refused(name, breaker, must_contain)

    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
