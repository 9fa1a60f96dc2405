#!/usr/bin/env python3
"""What nvcc made of fevo's fused kernels, read from the SASS of a built binary.

    tools/sass_report.py BINARY [--arch sm_90] [--kernel fold_filters] [--check] [--strict REGEX]
                        [--max-kernels N] [--cuobjdump PATH]

For each kernel whose name matches --kernel (default: fold_filters): its registers, its stack frame
and spill instructions (STL, LDL), how its 16-byte snapshot loads are issued (global LDG.E.128 or
generic LD.E.128) and, for each group of them (a round of the packed path: one load per vector of
each snapshot), whether any instruction inside the group uses a register that an earlier load of
the group writes. Such a use makes the warp wait for that load before it issues the rest, so the
round's loads are no longer all in flight together (a "wait" below).

--check exits with status 1 if a kernel whose name matches --strict (default: the tuning
fevo::cuda::experimental::global_words, the one that claims these properties) has a load group
that waits, a generic 16-byte load, or no 16-byte loads at all (the packed path's loads were split
into narrower ones). Other kernels are reported, not judged: the default tuning's is the kernel
measured on a GPU, whose bf16 rounds wait and whose loads are generic.
--max-kernels N exits with status 1 if, for some architecture, the binary holds more than N
distinct kernels matching --kernel (fevo::cuda::par alone should build at most 16: see
fevo/cuda/tuning.hpp).

Needs cuobjdump and the nvdisasm it runs (CUDA toolkit; or the PyPI wheels nvidia-cuda-cuobjdump
and nvidia-cuda-nvdisasm, which ./run.sh test installs): --cuobjdump, else on PATH, else in
$CUDA_HOME/bin or /usr/local/cuda/bin; nvdisasm beside it, or wherever cuobjdump looks (PATH,
NVDISASM_PATH). Without either it exits with status 77 (ctest: skipped). BINARY is anything cuobjdump reads: an executable, an object
file or a cubin. --arch picks one of its architectures (default: each it holds).
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys

LOAD128 = re.compile(r"^LDG?\.E\.128\b")
PRED = re.compile(r"^@!?U?P\w+\s+")
ARCH = re.compile(r"(?:arch = |code for )(sm_\d+)")
GROUP_GAP = 40  # loads further apart than this many instructions start a new group


NOT_FOUND = 77


def find_tool(name, given=None, beside=None):
    """The path of tool `name`: `given`, else beside `beside`, else on PATH, else in the toolkit."""
    if given:
        if os.path.isfile(given) and os.access(given, os.X_OK):
            return given
        print(f"sass_report: --{name} {given}: not an executable file", file=sys.stderr)
        sys.exit(NOT_FOUND)
    dirs = [beside, os.environ.get("NVDISASM_PATH") if name == "nvdisasm" else None]
    candidates = [os.path.join(d, name) for d in dirs if d] + [shutil.which(name) or ""]
    candidates += [os.path.join(r, "bin", name) for r in (os.environ.get("CUDA_HOME"), "/usr/local/cuda") if r]
    for found in candidates:
        if found and os.path.isfile(found) and os.access(found, os.X_OK):
            return found
    print(f"sass_report: {name} not found (CUDA toolkit, or pip install nvidia-cuda-{name})", file=sys.stderr)
    sys.exit(NOT_FOUND)


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"sass_report: {' '.join(cmd)} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def demangle(names):
    if not names or not shutil.which("c++filt"):
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
    return dict(zip(names, out.splitlines()))


def split_functions(sass):
    """(arch, mangled name, [instruction text]) for each function of cuobjdump -sass output."""
    arch, funcs, cur = None, [], None
    for line in sass.splitlines():
        m = ARCH.search(line)
        if m:
            arch = m.group(1)
            continue
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = (arch, m.group(1), [])
            funcs.append(cur)
            continue
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", line)
        if m and cur is not None:
            cur[2].append(m.group(1))
    return funcs


def opcode_and_regs(ins):
    body = PRED.sub("", ins)
    op = body.split()[0] if body.split() else ""
    return op, [int(r) for r in re.findall(r"\bR(\d+)\b", body[len(op):])]


def load_groups(instrs):
    """[(first, last, loads, waits)] of the function's 128-bit loads."""
    idx = [k for k, s in enumerate(instrs) if LOAD128.match(PRED.sub("", s))]
    groups = []
    for k in idx:
        if groups and k - groups[-1][-1] <= GROUP_GAP:
            groups[-1].append(k)
        else:
            groups.append([k])
    out = []
    for g in groups:
        pending, waits = set(), 0
        for k in range(g[0], g[-1] + 1):
            op, regs = opcode_and_regs(instrs[k])
            if LOAD128.match(op):
                written = set(range(regs[0], regs[0] + 4))
            elif op.startswith(("ST", "BRA", "RED", "ATOM")) or "SETP" in op:
                written = set()  # (a SETP writes predicates: its registers are all read)
            else:
                written = set(regs[:1])
            read = set(regs) - written if LOAD128.match(op) else set(regs[1 if written else 0:])
            # Reading a register a pending load writes, or writing it, waits for that load.
            if pending & (read | written):
                waits += 1
                pending = set()  # the wait lets the earlier loads arrive
            if LOAD128.match(op):
                pending |= written
        out.append((g[0], g[-1], len(g), waits))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--arch", help="e.g. sm_90 (default: every architecture in the binary)")
    ap.add_argument("--kernel", default="fold_filters", help="regex on the demangled name")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if a --strict kernel's load group waits, or its 16-byte loads are generic or absent")
    ap.add_argument("--strict", default="global_words",
                    help="regex on the demangled name of the kernels --check judges (default: global_words)")
    ap.add_argument("--max-kernels", type=int, help="exit 1 if an architecture holds more matching kernels")
    ap.add_argument("--cuobjdump", help="the cuobjdump to run")
    a = ap.parse_args()
    if not os.path.isfile(a.binary):
        sys.exit(f"sass_report: {a.binary}: no such file")
    tool = find_tool("cuobjdump", a.cuobjdump)
    disasm = find_tool("nvdisasm", beside=os.path.dirname(tool))
    env = dict(os.environ, NVDISASM_PATH=os.path.dirname(disasm))
    which = (["-arch", a.arch] if a.arch else []) + [a.binary]
    funcs = split_functions(run([tool, "-sass"] + which, env))
    usage = {}
    arch = None
    for line in run([tool, "--dump-resource-usage"] + which, env).splitlines():
        m = ARCH.search(line)
        if m:
            arch = m.group(1)
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            name = m.group(1)
        m = re.search(r"REG:(\d+) STACK:(\d+)", line)
        if m:
            usage[(arch, name)] = (int(m.group(1)), int(m.group(2)))
    names = demangle(sorted({f[1] for f in funcs}))
    pattern = re.compile(a.kernel)
    strict = re.compile(a.strict)
    shown = bad = judged = 0
    per_arch = {}
    for arch, mangled, instrs in funcs:
        name = names.get(mangled, mangled)
        if not pattern.search(name):
            continue
        shown += 1
        ops = [opcode_and_regs(s)[0] for s in instrs]
        count = lambda pred: sum(1 for o in ops if pred(o))
        # (A cubin's resource report names no architecture.)
        reg, stack = usage.get((arch, mangled), usage.get((None, mangled), ("?", "?")))
        groups = load_groups(instrs)
        waits = sum(g[3] for g in groups)
        per_arch.setdefault(arch, set()).add(mangled)
        generic = count(lambda o: o.startswith("LD.E.128"))
        if strict.search(name):
            judged += 1
            bad += waits > 0 or generic > 0 or not groups
        short = re.sub(r"\((fevo::cuda::detail::layer_desc<|unsigned long const\*).*$", "", name).replace(
            "fevo::cuda::detail::", "")
        print(f"{arch} {short}")
        print(f"    registers {reg}, stack {stack} bytes, spills: {count(lambda o: o.startswith('STL'))} STL"
              f" {count(lambda o: o.startswith('LDL'))} LDL; 16-byte loads: {count(lambda o: o.startswith('LDG.E.128'))}"
              f" global, {generic} generic; load groups: "
              + (", ".join(f"{n} loads/{w} waits" for _, _, n, w in groups) or "none"))
    if shown == 0:
        sys.exit(f"sass_report: no kernel matching '{a.kernel}' in {a.binary}")
    print(f"{shown} kernels; of the {judged} matching --strict '{a.strict}', {bad} with a load group that waits,"
          " a generic 16-byte load or none")
    most = max((len(k) for k in per_arch.values()), default=0)
    print(f"most kernels matching '{a.kernel}' in one architecture: {most}"
          + (f" (at most {a.max_kernels} allowed)" if a.max_kernels is not None else ""))
    if a.check and judged == 0:
        print(f"sass_report: --check: no kernel matches --strict '{a.strict}'", file=sys.stderr)
        return 1
    failed = (a.check and bad) or (a.max_kernels is not None and most > a.max_kernels)
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the report quietly
    sys.exit(main())
