#!/usr/bin/env python3
"""`mpirun -np K fevo analyze` against one process and against NumPy.

    analyze_mpi.py CHECK FEVO WORKDIR --mpirun MPIRUN [--mpirun-arg ARG]... [--seed N]

CHECK is one of:
  same     on a sharded series (three shards per checkpoint, bf16 and f32 layers, 2-D layers, a
           layer that holds most of the bytes, so that the ranks' shares split it by filters), for
           K = 1, 2, 3, 4: metrics.csv, filter_summary.csv and series/ byte for byte those of one
           process, the event file's events equal but for their wall time; --reference too; and the
           values equal to NumPy's (S and Z exactly, D within 1e-6), per layer and per filter.
  errors   a shard only the last of 4 ranks reads is malformed: every rank exits 2, and the one
           message names it; the same for each malformed index (tests/cli/sharded_series.py) with
           3 ranks, and for a problem rank 0 alone sees (--out is a file): nothing is written.
  resume   2 ranks killed (SIGKILL to the whole job) mid-run, then rerun with --resume by 3 ranks:
           the rows and summaries of an uninterrupted one-process run.

Each check prints ok/FAIL; the last line is 'N passed, M failed'."""
import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "cli"))
import sharded_series as ss  # noqa: E402

results = []
A = None


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"), flush=True)


def fevo(*args, timeout=300):
    p = subprocess.run([A.fevo, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def mpirun(k, *args, timeout=300, wrap=False):
    """fevo ARGS on k ranks. wrap: each rank also reports its own exit status on stderr ('rank R
    exit S'), and mpirun lets every rank finish when one exits with an error (rather than killing
    the others, as it does by default: then its own exit status is 0)."""
    cmd = [A.mpirun, *A.mpirun_arg, "-np", str(k)]
    if wrap:
        cmd[1:1] = ["--mca", "orte_abort_on_non_zero_status", "0"]
        cmd += ["sh", "-c", '"$0" "$@"; s=$?; echo "rank $OMPI_COMM_WORLD_RANK exit $s" >&2; exit $s', A.fevo, *args]
    else:
        cmd += [A.fevo, *args]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.time() - t0


def read(path):
    with open(path, "rb") as f:
        return f.read()


def events(run_dir):
    """The events of a run's event file, each serialised with its wall_time set to 0."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors as tb_errors
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as tb_pywrap
    names = [n for n in os.listdir(run_dir) if n.startswith("events.out.tfevents.")]
    if len(names) != 1:
        return None
    reader = tb_pywrap.PyRecordReader_New(os.path.join(run_dir, names[0]))
    out = []
    while True:
        try:
            reader.GetNext()
        except tb_errors.OutOfRangeError:
            break
        e = event_pb2.Event.FromString(reader.record())
        e.wall_time = 0
        out.append(e.SerializeToString())
    return out


def same_run(a, b, with_events):
    """'' when the runs in a and b have the same files (events but for wall time), else what differs."""
    for f in ["metrics.csv", "filter_summary.csv"]:
        if read(os.path.join(a, f)) != read(os.path.join(b, f)):
            return f
    sa, sb = os.path.join(a, "series"), os.path.join(b, "series")
    if sorted(os.listdir(sa)) != sorted(os.listdir(sb)):
        return "series/ file names"
    for f in os.listdir(sa):
        if read(os.path.join(sa, f)) != read(os.path.join(sb, f)):
            return "series/" + f
    if with_events:
        ea, eb = events(a), events(b)
        if ea is None or ea != eb:
            return "event file"
    return ""


def oracle(out, weights, steps, tau, reference=None):
    """'' when metrics.csv and series/ equal NumPy's values, else the first difference."""
    layers = ss.analysed()
    with open(os.path.join(out, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    expected = []
    for k in range(1, len(steps)):
        p = 0 if reference is not None else k - 1
        for name in layers:
            expected.append(((steps[p], steps[k], name), ss.metrics(weights[p][name], weights[k][name], tau)))
    if len(rows) != len(expected):
        return f"{len(rows)} rows, expected {len(expected)}"
    with open(os.path.join(out, "series", "index.csv"), newline="") as f:
        files = {r["layer"]: r for r in csv.DictReader(f)}
    series = {n: {m: np.load(os.path.join(out, "series", files[n][m])) for m in "DSZ"} for n in layers}
    record = {}
    for row, (key, ((D, S, Z, nf), (Di, Si, Zi))) in zip(rows, expected):
        got = (int(row["step_prev"]), int(row["step"]), row["layer"])
        if got != key:
            return f"row {got}, expected {key}"
        r = record.setdefault(key[2], 0)
        record[key[2]] = r + 1
        gD, gS, gZ, gnf = float(row["D"]), float(row["S"]), float(row["Z"]), int(row["nonfinite"])
        okD = (np.isnan(D) and np.isnan(gD)) or abs(gD - D) <= 1e-6 * abs(D)
        if not (okD and gS == S and gZ == Z and gnf == nf):
            return f"{key}: fevo D={gD!r} S={gS!r} Z={gZ!r} {gnf}; numpy D={D!r} S={S!r} Z={Z!r} {nf}"
        sD, sS, sZ = series[key[2]]["D"][r], series[key[2]]["S"][r], series[key[2]]["Z"][r]
        finite = np.isfinite(Di)
        if not (np.array_equal(np.isfinite(sD), finite) and np.all(np.abs(sD[finite] - Di[finite]) <= 1e-6 * np.abs(Di[finite]))
                and np.array_equal(sS, Si) and np.array_equal(sZ, Zi)):
            return f"{key}: per-filter D_i, S_i or Z_i differ from NumPy's"
    return ""


def check_same(work):
    tau = 2e-4
    steps = [100, 200, 300, 400, 500, 600, 700]
    good = os.path.join(work, "series")
    weights = ss.write_series(good, steps, A.seed)
    flags = ["--tau", repr(tau), "--include-2d", "--per-filter-series", "--tensorboard"]
    one = os.path.join(work, "one")
    rc, out, err = fevo("analyze", good, "--out", one, *flags)
    check("one process: fevo analyze succeeds", rc == 0, err)
    bad = oracle(one, weights, steps, tau)
    check("one process: metrics.csv and series/ equal NumPy (S, Z exact; D, D_i within 1e-6)", not bad, bad)
    for k in (1, 2, 3, 4):
        o = os.path.join(work, f"np{k}")
        rc, out, err, _ = mpirun(k, "analyze", good, "--out", o, "--report-io", *flags)
        lines = out.strip().split("\n")
        split = sum(1 for l in lines if l.startswith("fevo analyze: rank ") and "(0 split)" not in l)
        diff = same_run(o, one, True) if rc == 0 else err
        check(f"np {k}: the files of one process (byte for byte; events but for wall time)", rc == 0 and not diff,
              f"rc={rc} differs: {diff}")
        check(f"np {k}: one summary line, then one line per rank and a total (--report-io)",
              len(lines) == k + 2 and lines[0].startswith("fevo analyze: 6 snapshot pairs x 5 layers")
              and lines[-1].startswith(f"fevo analyze: {k} rank"), out)
        if k > 1:
            check(f"np {k}: a layer is split between ranks", split >= 2, out)
    ref = os.path.join(work, "ref_one")
    rc, _, err = fevo("analyze", good, "--out", ref, "--reference", "300", *flags)
    o = os.path.join(work, "ref_np3")
    rc3, _, err3, _ = mpirun(3, "analyze", good, "--out", o, "--reference", "300", *flags)
    diff = same_run(o, ref, True) if rc == 0 and rc3 == 0 else err + err3
    check("--reference 300 on 3 ranks: the files of one process", not diff, diff)


def check_errors(work):
    tau = 2e-4
    steps = [100, 200, 300, 400, 500, 600]
    good = os.path.join(work, "series")
    weights = ss.write_series(good, steps, A.seed)

    def refused(name, k, series_dir, must_name, must_contain, extra=()):
        out_dir = os.path.join(work, f"o_{len(results)}")
        rc, out, err, secs = mpirun(k, "analyze", series_dir, "--tau", repr(tau), "--out", out_dir, "--include-2d",
                                    *extra, wrap=True, timeout=120)
        lines = [l for l in err.strip("\n").split("\n") if l]
        fevo_lines = [l for l in lines if not l.startswith("rank ")]
        exits = sorted(l for l in lines if l.startswith("rank "))
        ok = (exits == [f"rank {r} exit 2" for r in range(k)] and len(fevo_lines) == 1
              and fevo_lines[0].startswith("fevo: ") and must_name in fevo_lines[0]
              and all(m in fevo_lines[0] for m in must_contain) and out == ""
              and (not os.path.exists(out_dir) or os.path.isfile(out_dir)))
        check(f"{name} ({k} ranks): each exits 2 ({secs:.1f} s), one message naming {os.path.basename(must_name)}, "
              "nothing written", ok, f"rc={rc} stderr={err.strip()[:600]!r} stdout={out[:200]!r}")

    # A shard of the last snapshot that only the last of 4 ranks reads (the head.* layers are its).
    d = os.path.join(work, "last_rank")
    shutil.copytree(good, d)
    shard = os.path.join(d, "checkpoint-600", "model-00003-of-00003.safetensors")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) - 7)
    rc, out, _, _ = mpirun(4, "analyze", good, "--tau", repr(tau), "--out", os.path.join(work, "probe"), "--include-2d",
                           "--report-io")
    last = [l for l in out.split("\n") if l.startswith("fevo analyze: rank 3:")]
    check("(the head.* layers are the last rank's alone)", rc == 0 and last and "3 tensors" in last[0], out)
    refused("a malformed shard read only by the last rank", 4, d, shard, ["truncated"])
    rc, out, err, secs = mpirun(4, "analyze", d, "--tau", repr(tau), "--out", os.path.join(work, "o_rc"), timeout=120)
    check(f"... and mpirun's own exit status is 2 ({secs:.1f} s), with that one line on stderr",
          rc == 2 and err.count("\n") == 1 and err.startswith("fevo: ") and shard in err, f"rc={rc} {err!r}")
    for name, breaker, must_contain in ss.malformed_cases(weights):
        d = os.path.join(work, f"bad_{len(results)}")
        shutil.copytree(good, d)
        target = breaker(d)
        refused(name, 3, d, target, must_contain)
    # What rank 0 alone sees: --out is a file.
    out_file = os.path.join(work, "a_file")
    open(out_file, "w").write("mine\n")
    rc, out, err, _ = mpirun(3, "analyze", good, "--tau", repr(tau), "--out", out_file, wrap=True, timeout=120)
    fevo_lines = [l for l in err.strip().split("\n") if l.startswith("fevo: ")]
    check("--out a file (rank 0 opens the run): every rank exits 2, one message, the file untouched",
          len(fevo_lines) == 1 and "exists and is not a directory" in fevo_lines[0]
          and err.count(" exit 2") == 3 and open(out_file).read() == "mine\n", err)


def check_resume(work):
    steps = list(range(0, 2400, 100))
    big = os.path.join(work, "big")
    rng = np.random.default_rng(A.seed)
    w = {"a.weight": rng.standard_normal((256, 128, 3, 3)).astype(np.float32),
         "b.weight": rng.standard_normal((128, 256, 3, 3)).astype(ss.BF16)}
    for step in steps:
        w = {k: (v.astype(np.float32) + rng.standard_normal(v.shape).astype(np.float32) * 1e-3).astype(v.dtype)
             for k, v in w.items()}
        ss.write_checkpoint(os.path.join(big, f"checkpoint-{step}"), w, [["a.weight"], ["b.weight"]], global_step=step)
    ref = os.path.join(work, "ref")
    rc, _, err = fevo("analyze", big, "--tau", "1e-3", "--out", ref, "--threads", "1")
    killed = os.path.join(work, "killed")
    cmd = [A.mpirun, *A.mpirun_arg, "-np", "2", A.fevo, "analyze", big, "--tau", "1e-3", "--out", killed]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = os.path.join(killed, "metrics.csv")
    deadline = time.time() + 120
    landed = False
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(metrics) and len(open(metrics).read().split("\n")) > 4:
            os.killpg(p.pid, signal.SIGKILL)
            landed = True
            break
        time.sleep(0.002)
    p.wait()
    rows_then = len(open(metrics).read().split("\n")) - 2 if os.path.exists(metrics) else 0
    rc2, out, err2, _ = mpirun(3, "analyze", big, "--tau", "1e-3", "--out", killed, "--resume")
    same = rc == 0 and rc2 == 0 and read(metrics) == read(os.path.join(ref, "metrics.csv")) and \
        read(os.path.join(killed, "filter_summary.csv")) == read(os.path.join(ref, "filter_summary.csv"))
    total_rows = 2 * (len(steps) - 1)
    mid = landed and rows_then < total_rows
    check(f"kill -9 of 2 ranks {'after ' + str(rows_then) + ' of ' + str(total_rows) + ' rows' if mid else '(the run had finished)'}, "
          "then --resume on 3: the rows and summary of one uninterrupted process", same, f"rc={rc},{rc2} {err} {err2} {out}")
    check("... and the resumed run says how many pairs it had", not mid or "more already in the run" in out, out)


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["same", "errors", "resume"])
    ap.add_argument("fevo")
    ap.add_argument("workdir")
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--mpirun-arg", action="append", default=[])
    ap.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "little"))
    A = ap.parse_args()
    print(f"analyze_mpi.py seed: {A.seed} (pass --seed {A.seed} to reproduce)")
    shutil.rmtree(A.workdir, ignore_errors=True)
    os.makedirs(A.workdir)
    t0 = time.time()
    {"same": check_same, "errors": check_errors, "resume": check_resume}[A.what](A.workdir)
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed ({time.time() - t0:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
