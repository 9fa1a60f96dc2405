"""The Python blocks of docs/python.md run, in order, in one scratch directory (each in a namespace
of its own); a block marked <!-- no-run: why --> on the line above its fence is left out."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "python.md")

RUNNER = r"""
import sys, traceback
blocks = eval(sys.stdin.read())
for line, code in blocks:
    try:
        exec(compile(code, f"docs/python.md:{line}", "exec"), {"__name__": "__main__"})
    except Exception:
        traceback.print_exc()
        print(f"FAILED: the block at docs/python.md:{line}")
        sys.exit(1)
"""


def blocks():
    lines = open(DOC).read().split("\n")
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


def test_the_python_blocks_of_docs_python_md_run(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    runnable = blocks()
    assert len(runnable) >= 5
    r = subprocess.run([sys.executable, "-c", RUNNER], input=repr(runnable), capture_output=True, text=True,
                       cwd=tmp_path, env=dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "runs" / "fevo-example" / "evolution.png").exists()


def test_every_block_is_python_or_marked():
    text = open(DOC).read()
    for m in re.finditer(r"<!-- no-run: ([^>]*) -->\n```(\w*)", text):
        assert m.group(1).strip() and m.group(2) == "python", m.group(0)
