#!/usr/bin/env python3
"""What a newcomer meets with the fevo command: failed runs leave nothing behind, --resume and
--overwrite, tau checked before anything is written, a summary line on success, --threads, --help,
a misspelled command, --layers that match nothing, steps from file names, a truncated file.

    plain_speaking.py FEVO_BINARY WORKDIR

Each check prints ok/FAIL; the last line is 'N passed, M failed'."""
import csv
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import save_file

FEVO = None
results = []


def run(*args, timeout=120):
    p = subprocess.run([FEVO, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"))


def refused(name, args, must_contain, out_dir=None):
    """Exit 2, one line on stderr containing every string of must_contain; out_dir not created."""
    rc, out, err = run(*args)
    lines = err.strip("\n").split("\n") if err else []
    ok = rc == 2 and len(lines) == 1 and lines[0].startswith("fevo: ") and all(m in lines[0] for m in must_contain)
    if out_dir is not None:
        ok = ok and not os.path.exists(out_dir)
    check(name, ok, f"rc={rc} stderr={err.strip()[:300]!r} out exists={out_dir and os.path.exists(out_dir)}")


def series(d, names, shapes=None, seed=0, bad_at=None):
    """Snapshots named `names` in d, random f32 conv weights moving a little each step; the one at
    index bad_at has conv2 with another shape."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    shapes = shapes or {"conv1.weight": (8, 3, 3, 3), "conv2.weight": (16, 8, 3, 3), "fc.weight": (10, 16)}
    w = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    for k, n in enumerate(names):
        w = {key: v + (rng.standard_normal(v.shape) * 1e-3).astype(np.float32) for key, v in w.items()}
        snap = dict(w)
        if k == bad_at:
            snap["conv2.weight"] = np.zeros((16, 8, 1, 1), np.float32)
        save_file(snap, os.path.join(d, n))


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def main():
    global FEVO
    FEVO, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    good = os.path.join(work, "good")
    series(good, [f"step_{k}.safetensors" for k in range(5)])

    # ---- a run that fails leaves nothing behind ----------------------------------------------------
    bad = os.path.join(work, "bad")
    series(bad, [f"step_{k}.safetensors" for k in range(5)], bad_at=3)
    out = os.path.join(work, "o_bad")
    refused("a series whose 4th snapshot differs is refused before --out is made",
            ["analyze", bad, "--tau", "1e-3", "--out", out], ["step_3.safetensors", "conv2.weight", "[16, 8, 1, 1]"], out)
    rc, _, _ = run("analyze", bad, "--tau", "1e-3", "--out", out)
    check("... and a rerun says the same (no 'already holds a run')", rc == 2 and not os.path.exists(out))
    pre = os.path.join(work, "o_existing")
    os.makedirs(pre)
    with open(os.path.join(pre, "notes.txt"), "w") as f:
        f.write("mine\n")
    rc, _, _ = run("analyze", bad, "--tau", "1e-3", "--out", pre)
    check("a failed run in an existing directory leaves it as it was",
          rc == 2 and sorted(os.listdir(pre)) == ["notes.txt"], str(os.listdir(pre)))
    for tau, why in (("1e-50", "rounds to 0"), ("1e300", "not finite in the compute type"), ("-1", "non-negative")):
        o = os.path.join(work, "o_tau")
        refused(f"--tau {tau} refused before --out is made", ["analyze", good, "--tau", tau, "--out", o], [why], o)

    # ---- success: one summary line -------------------------------------------------------------
    out = os.path.join(work, "o_good")
    rc, stdout, err = run("analyze", good, "--tau", "1e-3", "--out", out)
    lines = stdout.strip().split("\n")
    check("success prints one summary line (pairs, layers, bytes, time, where)",
          rc == 0 and len(lines) == 1 and "4 snapshot pairs x 2 layers" in lines[0] and " read in " in lines[0]
          and out in lines[0] and "metrics.csv" in lines[0] and err == "", f"rc={rc} stdout={stdout!r} stderr={err!r}")
    full = rows(os.path.join(out, "metrics.csv"))
    summary = open(os.path.join(out, "filter_summary.csv"), "rb").read()

    # ---- a directory that holds a run: refused, --overwrite, --resume ------------------------------
    refused("--out holding a run is refused, saying --resume and --overwrite",
            ["analyze", good, "--tau", "1e-3", "--out", out], ["already holds a run", "--resume", "--overwrite"])
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("mine\n")
    rc, _, err = run("analyze", good, "--tau", "1e-3", "--out", out, "--overwrite", "--tensorboard")
    names = sorted(os.listdir(out))
    check("--overwrite replaces the run (and touches nothing else there)",
          rc == 0 and rows(os.path.join(out, "metrics.csv")) == full and "notes.txt" in names
          and any(n.startswith("events.out.tfevents.") for n in names), f"rc={rc} {err} {names}")
    rc, _, err = run("analyze", good, "--tau", "1e-3", "--out", out, "--overwrite", "--resume")
    check("--resume with --overwrite is a usage error", rc == 2 and "exclude" in err, err)
    # A run stopped after two pairs, then resumed with the whole series.
    part = os.path.join(work, "part")
    os.makedirs(part)
    for k in range(3):
        shutil.copy(os.path.join(good, f"step_{k}.safetensors"), part)
    res = os.path.join(work, "o_resume")
    rc1, _, _ = run("analyze", part, "--tau", "1e-3", "--out", res)
    rc2, stdout, err = run("analyze", good, "--tau", "1e-3", "--out", res, "--resume")
    check("--resume computes only the pairs the run lacks, and the files equal one whole run's",
          rc1 == 0 and rc2 == 0 and "2 snapshot pairs" in stdout and "2 more already in the run" in stdout
          and rows(os.path.join(res, "metrics.csv")) == full
          and open(os.path.join(res, "filter_summary.csv"), "rb").read() == summary, f"{stdout} {err}")
    rc, _, err = run("analyze", good, "--tau", "2e-3", "--out", res, "--resume")
    check("--resume with another tau is refused (the run's settings are kept)", rc == 2 and "tau" in err, err)
    # kill -9 during a run, then --resume: no row lost or doubled.
    big = os.path.join(work, "big")
    series(big, [f"ckpt-{k}.safetensors" for k in range(24)], shapes={"a.weight": (256, 256, 3, 3), "b.weight": (128, 256, 3, 3)}, seed=3)
    ref_out, killed = os.path.join(work, "o_big_ref"), os.path.join(work, "o_big_killed")
    rc, _, _ = run("analyze", big, "--tau", "1e-3", "--out", ref_out, "--threads", "1")
    p = subprocess.Popen([FEVO, "analyze", big, "--tau", "1e-3", "--out", killed, "--threads", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = os.path.join(killed, "metrics.csv")
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(metrics) and len(rows(metrics)) > 2:
            break
        time.sleep(0.002)
    landed = p.poll() is None
    if landed:
        p.send_signal(signal.SIGKILL)
    p.wait()
    rc2, stdout, err = run("analyze", big, "--tau", "1e-3", "--out", killed, "--threads", "1", "--resume")
    check(f"kill -9 {'mid-run' if landed else '(the run had finished)'}, then --resume: the same rows and summary",
          rc == 0 and rc2 == 0 and rows(metrics) == rows(os.path.join(ref_out, "metrics.csv"))
          and open(os.path.join(killed, "filter_summary.csv"), "rb").read()
          == open(os.path.join(ref_out, "filter_summary.csv"), "rb").read(), f"{stdout} {err}")

    # ---- the command speaks plainly -----------------------------------------------------------
    rc, stdout, _ = run("--help")
    check("--help: the usage line says fevo, with exit codes and two examples",
          rc == 0 and "Usage: fevo " in stdout and "Exit status" in stdout and stdout.count("  fevo ") >= 2, stdout[-600:])
    refused("a misspelled command gets 'did you mean'", ["analyse", good], ["unknown command 'analyse'", "did you mean 'analyze'"])
    refused("an unknown command lists the commands", ["frobnicate"], ["unknown command 'frobnicate'", "analyze, inspect"])
    o = os.path.join(work, "o_threads")
    refused("--threads -1 is refused", ["analyze", good, "--tau", "1e-3", "--out", o, "--threads", "-1"], ["--threads"], o)
    rc, _, _ = run("analyze", good, "--tau", "1e-3", "--out", o, "--threads", "1")
    check("--threads 1 gives the same files", rc == 0 and rows(os.path.join(o, "metrics.csv")) == full)
    o = os.path.join(work, "o_layers")
    refused("--layers matching nothing lists the tensors that could be analysed",
            ["analyze", good, "--tau", "1e-3", "--out", o, "--layers", "encoder.*"],
            ["--layers matches none", "'conv1.weight'", "'conv2.weight'"], o)

    # ---- steps from file names -------------------------------------------------------------------
    named = os.path.join(work, "named")
    series(named, ["epoch3-step400.safetensors", "checkpoint-100.safetensors", "step_200.safetensors", "run.300.safetensors"])
    o = os.path.join(work, "o_named")
    rc, _, err = run("analyze", named, "--tau", "1e-3", "--out", o)
    steps = sorted({(int(r[0]), int(r[1])) for r in rows(os.path.join(o, "metrics.csv"))[1:]}) if rc == 0 else []
    check("steps: the number ending the last word (epoch3-step400 is 400, checkpoint-100 is 100)",
          steps == [(100, 200), (200, 300), (300, 400)], f"{steps} {err}")
    odd = os.path.join(work, "odd")
    series(odd, ["step_1.safetensors", "no4d.safetensors"])
    refused("a name whose digits end no word has no step (no4d is not step 4)",
            ["analyze", odd, "--tau", "1e-3", "--out", os.path.join(work, "o_odd")], ["no4d.safetensors", "cannot tell its training step"])
    dup = os.path.join(work, "dup")
    series(dup, ["a_step5.safetensors", "b-5.safetensors"])
    refused("two files with one step name both", ["analyze", dup, "--tau", "1e-3", "--out", os.path.join(work, "o_dup")],
            ["a_step5.safetensors", "b-5.safetensors", "step 5"])

    # ---- a truncated file ----------------------------------------------------------------------
    cut = os.path.join(work, "cut")
    series(cut, ["step_0.safetensors", "step_1.safetensors"])
    blob = open(os.path.join(cut, "step_1.safetensors"), "rb").read()
    hlen = struct.unpack("<Q", blob[:8])[0]
    with open(os.path.join(cut, "step_1.safetensors"), "wb") as f:
        f.write(blob[:-100])
    data = len(blob) - 8 - hlen
    refused("a truncated file says how many bytes its header needs and the file holds",
            ["analyze", cut, "--tau", "1e-3", "--out", os.path.join(work, "o_cut")],
            ["step_1.safetensors", f"truncated: the header needs {data} bytes of data, the file holds {data - 100}"])

    bad_n = results.count(False)
    print(f"{len(results) - bad_n} passed, {bad_n} failed")
    return 1 if bad_n else 0


if __name__ == "__main__":
    sys.exit(main())
