#!/usr/bin/env python3
"""Compiles the C++ blocks of fevo's Markdown docs (README.md, docs/*.md) against the source tree.

Every ```cpp block (also c++, cxx, cc, cuda, cu) must be marked on the line just above its fence:

  <!-- compile: [fragment] [NEED...] -->   compile it; NEED is any of cpu, io, record, eigen, xtensor
  <!-- no-compile: REASON -->              do not (e.g. it needs nvcc, or LibTorch)

A block without `fragment` is a whole translation unit, compiled as written (and linked when it
defines main()). A `fragment` is the body of a function; it is compiled after this prologue, whose
names it may use without declaring them, and linked with an empty main():

  #include <cstddef>, <cstdint>, <cstdio>, <string>, <vector>, <fevo/fevo.hpp>
  and, per NEED: cpu <fevo/cpu.hpp>; io <fevo/io/format.hpp> (safetensors, npy, npz);
  record <fevo/record/recorder.hpp>; eigen <fevo/eigen.hpp> and Eigen's Tensor;
  xtensor <fevo/xtensor.hpp>, <xtensor/xtensor.hpp>, <xtensor/xview.hpp>
  void fevo_doc_fragment(std::vector<float>& before, std::vector<float>& after,  // N*C*H*W each
                         std::size_t N, std::size_t C, std::size_t H, std::size_t W, double tau) {
    <the block>
  }

The compiler reports errors at the block's lines in the Markdown file (#line). Other blocks (sh,
cmake, text, ...) are not looked at. Exit status 0 when every marked block compiles, 1 when one
does not, or a marker is wrong, or a C++ block is unmarked, or no block was compiled.

  check_doc_blocks.py --config FLAGS.cfg --root SRC [--jobs N] [FILE.md...]

FLAGS.cfg (written by tests/docs/CMakeLists.txt from the build's targets), one KEY=a;b;c a line:
  cxx=COMPILER, implicit=the compiler's own include directories (never passed as -I),
  NEED.include, NEED.options, NEED.defines, NEED.link for core and each NEED of this build
  (a key given twice adds to the list).
A NEED missing from it (not in this build) skips the blocks that ask for it, and says so.
"""
import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile

CXX_LANGS = {"cpp", "c++", "cxx", "cc", "cuda", "cu"}
NEEDS = ["cpu", "io", "record", "eigen", "xtensor"]
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")
COMPILE = re.compile(r"^\s*<!--\s*compile:\s*(.*?)\s*-->\s*$")
NO_COMPILE = re.compile(r"^\s*<!--\s*no-compile:\s*(.*?)\s*-->\s*$")
MAIN = re.compile(r"\bint\s+main\s*\(")

PROLOGUE_INCLUDES = {
    None: ["cstddef", "cstdint", "cstdio", "string", "vector", "fevo/fevo.hpp"],
    "cpu": ["fevo/cpu.hpp"],
    "io": ["fevo/io/format.hpp"],
    "record": ["fevo/record/recorder.hpp"],
    "eigen": ["fevo/eigen.hpp", "unsupported/Eigen/CXX11/Tensor"],
    "xtensor": ["fevo/xtensor.hpp", "xtensor/xtensor.hpp", "xtensor/xview.hpp"],
}
FRAGMENT_SIGNATURE = ("void fevo_doc_fragment(std::vector<float>& before, std::vector<float>& after, "
                      "std::size_t N, std::size_t C, std::size_t H, std::size_t W, double tau) {")


class Block:
    def __init__(self, path, line, fragment, needs, text):
        self.path = path          # as printed: relative to the source root
        self.line = line          # 1-based line of the block's first code line
        self.fragment = fragment
        self.needs = needs
        self.text = text

    def where(self):
        return f"{self.path}:{self.line}"

    def kind(self):
        return " ".join((["fragment"] if self.fragment else []) + self.needs) or "translation unit"


def parse(path, shown):
    """The marked blocks of one Markdown file, and the problems found (strings 'file:line: ...')."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks, problems = [], []
    pending = None  # (line number, marker kind, words) of a marker on the previous line
    i = 0
    while i < len(lines):
        line = lines[i]
        m = FENCE.match(line)
        if m:
            fence, lang = m.group(2), m.group(3).lower()
            end = i + 1
            while end < len(lines) and not re.match(r"^\s*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$", lines[end]):
                end += 1
            if end == len(lines):
                problems.append(f"{shown}:{i + 1}: code block is never closed")
            body = lines[i + 1:end]
            if lang in CXX_LANGS:
                if pending is None:
                    problems.append(f"{shown}:{i + 1}: C++ block without a marker: put "
                                    "'<!-- compile: [fragment] [needs] -->' or "
                                    "'<!-- no-compile: why -->' on the line above its fence")
                elif pending[1] == "compile":
                    words = pending[2]
                    fragment = "fragment" in words
                    needs = [w for w in words if w != "fragment"]
                    bad = [w for w in needs if w not in NEEDS]
                    if bad:
                        problems.append(f"{shown}:{pending[0]}: unknown word(s) in compile marker: "
                                        f"{' '.join(bad)} (known: fragment {' '.join(NEEDS)})")
                    else:
                        ordered = [n for n in NEEDS if n in needs]
                        blocks.append(Block(shown, i + 2, fragment, ordered, "\n".join(body)))
            elif pending is not None:
                problems.append(f"{shown}:{pending[0]}: marker is not followed by a C++ block "
                                f"(the next line opens a '{lang or 'plain'}' block)")
            pending = None
            i = end + 1
            continue
        if pending is not None:
            problems.append(f"{shown}:{pending[0]}: marker is not followed by a C++ block "
                            "(it must be on the line just above the fence)")
            pending = None
        c, n = COMPILE.match(line), NO_COMPILE.match(line)
        if c:
            pending = (i + 1, "compile", c.group(1).split())
        elif n:
            if not n.group(1):
                problems.append(f"{shown}:{i + 1}: no-compile marker without a reason")
            pending = (i + 1, "no-compile", [])
        i += 1
    if pending is not None:
        problems.append(f"{shown}:{pending[0]}: marker is not followed by a C++ block")
    return blocks, problems


def source_of(block):
    abs_path = block.abs_path.replace("\\", "\\\\").replace('"', '\\"')
    if not block.fragment:
        return f'#line {block.line} "{abs_path}"\n{block.text}\n'
    out = []
    for key in [None] + block.needs:
        out += [f"#include <{h}>" for h in PROLOGUE_INCLUDES[key]]
    out += [FRAGMENT_SIGNATURE, f'#line {block.line} "{abs_path}"', block.text, "}",
            '#line 1 "fragment-epilogue"', "int main() { return 0; }", ""]
    return "\n".join(out)


def read_config(path):
    config = {"cxx": None, "implicit": [], "needs": {}}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise SystemExit(f"{path}:{n}: not KEY=VALUE: {line!r}")
            items = [v for v in value.split(";") if v]
            if key == "cxx":
                config["cxx"] = value
            elif key == "implicit":
                config["implicit"] = [os.path.normpath(v) for v in items]
            elif "." in key:
                need, field = key.split(".", 1)
                entry = config["needs"].setdefault(need, {})
                entry.setdefault(field, []).extend(items)
            else:
                raise SystemExit(f"{path}:{n}: unknown key {key!r}")
    if not config["cxx"] or "core" not in config["needs"]:
        raise SystemExit(f"{path}: no cxx= or core.include= line")
    return config


def flags_of(config, block):
    inc, opts, defs, link = [], [], [], []
    for need in ["core"] + block.needs:
        n = config["needs"][need]
        inc += [d for d in n.get("include", [])
                if d not in inc and os.path.normpath(d) not in config["implicit"]]
        opts += [o for o in n.get("options", []) if o not in opts]
        defs += [d for d in n.get("defines", []) if d not in defs]
        link += [l for l in n.get("link", []) if l not in link]
    cflags = ["-std=c++17", "-Wall", "-Wextra"] + opts + [f"-D{d}" for d in defs] + [f"-I{d}" for d in inc]
    if block.fragment:
        cflags.append("-Wno-unused-parameter")  # the prologue's names are there to be used, or not
    return cflags, opts + link


def compile_block(config, block, work, index):
    src = os.path.join(work, f"block{index}.cpp")
    obj = os.path.join(work, f"block{index}.o")
    with open(src, "w", encoding="utf-8") as f:
        f.write(source_of(block))
    cflags, lflags = flags_of(config, block)
    cmd = [config["cxx"]] + cflags + ["-c", src, "-o", obj]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        return False, "compile", r.stdout
    if block.fragment or MAIN.search(block.text):
        exe = os.path.join(work, f"block{index}")
        r = subprocess.run([config["cxx"], obj, "-o", exe] + lflags,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            return False, "link", r.stdout
    return True, "", r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="the compiler and flags per need (JSON)")
    ap.add_argument("--root", required=True, help="the source tree: README.md and docs/*.md are checked")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("files", nargs="*", help="Markdown files to check instead of README.md and docs/*.md")
    args = ap.parse_args()

    config = read_config(args.config)
    root = os.path.abspath(args.root)
    files = args.files
    if not files:
        docs = os.path.join(root, "docs")
        files = [os.path.join(root, "README.md")]
        if os.path.isdir(docs):
            files += sorted(os.path.join(docs, n) for n in os.listdir(docs) if n.endswith(".md"))

    blocks, problems = [], []
    for path in files:
        path = os.path.abspath(path)
        shown = os.path.relpath(path, root) if path.startswith(root + os.sep) else path
        try:
            b, p = parse(path, shown)
        except OSError as e:
            problems.append(f"{shown}: cannot read: {e.strerror}")
            continue
        for block in b:
            block.abs_path = path
        blocks += b
        problems += p

    runnable, skipped = [], []
    for b in blocks:
        missing = [n for n in b.needs if n not in config["needs"]]
        (skipped if missing else runnable).append((b, missing))
    for b, missing in skipped:
        print(f"skip {b.where()} ({b.kind()}): this build has no {', '.join(missing)}")

    failed = 0
    with tempfile.TemporaryDirectory(prefix="fevo-doc-blocks.") as work:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(compile_block, config, b, work, k) for k, (b, _) in enumerate(runnable)]
            for (b, _), fut in zip(runnable, futures):
                ok, stage, out = fut.result()
                if ok:
                    print(f"ok   {b.where()} ({b.kind()})")
                else:
                    failed += 1
                    print(f"FAIL {b.where()}: the block does not {stage} ({b.kind()}):\n{out}")
    for p in problems:
        print(f"FAIL {p}")
    print(f"{len(runnable) - failed} of {len(runnable)} blocks compiled, {len(skipped)} skipped, "
          f"{len(problems)} marker problem(s), in {len(files)} file(s)")
    if failed or problems:
        return 1
    if not runnable:
        print("FAIL no marked C++ block was found: nothing was checked")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
