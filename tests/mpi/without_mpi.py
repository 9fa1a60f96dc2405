#!/usr/bin/env python3
"""The fevo command built without MPI: as one process it writes what the MPI build writes; started
by mpirun as several processes, every one exits 2 and one message says it was built without MPI
(rather than each running the whole analysis into the same directory). --version says which.

    without_mpi.py FEVO_WITHOUT_MPI FEVO_WITH_MPI WORKDIR --mpirun MPIRUN [--mpirun-arg=ARG]..."""
import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
import sharded_series as ss  # noqa: E402

results = []


def check(name, cond, detail=""):
    results.append(bool(cond))
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("nompi")
    ap.add_argument("mpi")
    ap.add_argument("workdir")
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--mpirun-arg", action="append", default=[])
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    series = os.path.join(a.workdir, "series")
    ss.write_series(series, [10, 20, 30], 7)
    run = lambda *c: subprocess.run(list(c), capture_output=True, text=True, timeout=300)
    o1, o2 = os.path.join(a.workdir, "nompi"), os.path.join(a.workdir, "mpi")
    p1 = run(a.nompi, "analyze", series, "--tau", "2e-4", "--out", o1, "--include-2d")
    p2 = run(a.mpi, "analyze", series, "--tau", "2e-4", "--out", o2, "--include-2d")
    same = p1.returncode == 0 and p2.returncode == 0 and all(
        open(os.path.join(o1, f), "rb").read() == open(os.path.join(o2, f), "rb").read()
        for f in ("metrics.csv", "filter_summary.csv"))
    check("as one process, the build without MPI writes the MPI build's files", same, p1.stderr + p2.stderr)
    o3 = os.path.join(a.workdir, "np2")
    cmd = [a.mpirun, *a.mpirun_arg, "-np", "2", "sh", "-c",
           '"$0" "$@"; s=$?; echo "rank $OMPI_COMM_WORLD_RANK exit $s" >&2; exit $s',
           a.nompi, "analyze", series, "--tau", "2e-4", "--out", o3]
    p = run(*cmd)
    lines = [l for l in p.stderr.strip().split("\n") if l.startswith("fevo: ")]
    check("under mpirun -np 2: each exits 2, one message says it was built without MPI, nothing written",
          p.returncode == 2 and len(lines) == 1 and "built without MPI" in lines[0] and "2 processes by mpirun" in lines[0]
          and "rank 0 exit 2" in p.stderr and "rank 1 exit 2" in p.stderr and not os.path.exists(o3), p.stderr)
    v1, v2 = run(a.nompi, "--version"), run(a.mpi, "--version")
    check("--version says whether it was built with MPI",
          "(without MPI)" in v1.stdout and "(with MPI" in v2.stdout, v1.stdout + v2.stdout)
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
