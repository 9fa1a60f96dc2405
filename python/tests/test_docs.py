"""The Python blocks of docs/python.md run, in order, in one scratch directory (each in a namespace
of its own); a block marked <!-- no-run: why --> on the line above its fence is left out. The
README's Python example runs the same way."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "python.md")
README = os.path.join(ROOT, "README.md")

RUNNER = r"""
import sys, traceback
doc, blocks = eval(sys.stdin.read())
for line, code in blocks:
    try:
        exec(compile(code, f"{doc}:{line}", "exec"), {"__name__": "__main__"})
    except Exception:
        traceback.print_exc()
        print(f"FAILED: the block at {doc}:{line}")
        sys.exit(1)
"""


def blocks(path):
    """(first line, text) of each ```python block of `path` not marked no-run."""
    lines = open(path).read().split("\n")
    out, k = [], 0
    while k < len(lines):
        if lines[k].strip() == "```python":
            start = k + 1
            end = lines.index("```", start)
            above = lines[k - 1].strip() if k else ""
            if not above.startswith("<!-- no-run:"):
                out.append((start + 1, "\n".join(lines[start:end])))
            k = end
        k += 1
    return out


def run_blocks(path, runnable, cwd):
    doc = os.path.relpath(path, ROOT)
    return subprocess.run([sys.executable, "-c", RUNNER], input=repr((doc, runnable)), capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1"))


def test_the_python_blocks_of_docs_python_md_run(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    runnable = blocks(DOC)
    assert len(runnable) >= 5
    r = run_blocks(DOC, runnable, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "runs" / "fevo-example" / "evolution.png").exists()


def test_the_readme_python_example_runs(tmp_path):
    pytest.importorskip("torch")
    runnable = blocks(README)
    assert len(runnable) == 1
    assert len(runnable[0][1].strip().split("\n")) <= 10, "the README's example is ten lines at most"
    r = run_blocks(README, runnable, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    D, S, Z = (float(x) for x in r.stdout.split("\n")[0].split())
    assert D > 0 and 0 < S <= 1 and 0 <= Z <= 1


def test_every_block_is_python_or_marked():
    text = open(DOC).read()
    for m in re.finditer(r"<!-- no-run: ([^>]*) -->\n```(\w*)", text):
        assert m.group(1).strip() and m.group(2) == "python", m.group(0)
