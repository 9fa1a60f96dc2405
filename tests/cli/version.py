#!/usr/bin/env python3
"""fevo --version: the version line, then one line naming the instruction set of the CPU kernels
the command runs on this machine ('CPU kernels: avx512', 'avx2' or 'generic'), which on x86-64
Linux must be the best one the CPU's flags in /proc/cpuinfo allow.

    version.py FEVO_BINARY"""
import platform
import re
import subprocess
import sys


def expected_kernel():
    """The kernel fevo::cpu should pick here, or None where this script cannot tell."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return "generic"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    v3 = all(x in flags for x in ("avx2", "fma", "bmi1", "bmi2", "popcnt", "f16c"))
    if v3 and all(x in flags for x in ("avx512f", "avx512bw", "avx512vl", "avx512dq")):
        return "avx512"
    return "avx2" if v3 else "generic"


def main():
    p = subprocess.run([sys.argv[1], "--version"], capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    print(p.stdout, end="")
    failures = []
    if p.returncode != 0:
        failures.append(f"exit status {p.returncode} (stderr: {p.stderr.strip()!r})")
    if not lines or not re.fullmatch(r"fevo \d+\.\d+\.\d+( \(with(out)? MPI.*\))?", lines[0]):
        failures.append("the first line is not 'fevo X.Y.Z'")
    kernel_lines = [l for l in lines if l.startswith("CPU kernels: ")]
    if len(kernel_lines) != 1:
        failures.append(f"{len(kernel_lines)} lines start with 'CPU kernels: ' (one expected)")
    else:
        got = kernel_lines[0][len("CPU kernels: "):]
        want = expected_kernel()
        if got not in ("avx512", "avx2", "generic"):
            failures.append(f"unknown kernel name {got!r}")
        elif want is not None and got != want:
            failures.append(f"the CPU's flags call for the {want} kernel, --version says {got}")
    for f in failures:
        print("FAIL " + f)
    print("ok" if not failures else f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
