"""Zero-copy: computing on a 1 GiB float32 pair (two 512 MiB arrays) raises the peak resident set
of the process by under 64 MiB, for contiguous, strided and torch inputs, per-filter results,
compute_layers and compute_partial. Run in a child process, whose peak is its own."""
import os
import subprocess
import sys

import pytest

CHILD = r"""
import resource, sys
import numpy as np
import pandas  # compute_layers' table; imported before the baseline, as a program would have it
import fevo

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

shape = (4096, 512, 8, 8)                      # 2^27 float32 = 512 MiB per array
a = np.ones(shape, np.float32)
b = np.full(shape, 1.5, np.float32)
b[:, 0] = 1.0
with_torch = sys.argv[1] == "1"
if with_torch:
    import torch
    ta = torch.nn.Parameter(torch.from_numpy(a))
    tb = torch.from_numpy(b)
base = peak()
m = fevo.compute(a, b, 0.1, channel_counts=True)
assert m.S == 511 / 512 and m.filters.R.shape == (4096, 512), m
fevo.compute(a[:, ::2], b[:, ::2], 0.1)                       # every other channel: strided
fevo.compute(a.reshape(8, 8, 512, 4096), b.reshape(8, 8, 512, 4096), 0.1, layout="hwio")
fevo.compute_layers({"x": (a, b), "y": (a[:2048], b[:2048])}, 0.1)
fevo.compute_partial(a[1000:], b[1000:], 0.1)
if with_torch:
    fevo.compute(ta, tb, 0.1)
    fevo.compute(ta.permute(0, 2, 3, 1), tb.permute(0, 2, 3, 1), 0.1, layout="ohwi")
print((peak() - base) / 2**20)
"""


@pytest.mark.slow
@pytest.mark.parametrize("with_torch", [False, True], ids=["numpy", "torch"])
def test_a_1gib_pair_is_read_in_place(with_torch):
    if with_torch:
        pytest.importorskip("torch")
    r = subprocess.run([sys.executable, "-c", CHILD, "1" if with_torch else "0"], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert r.returncode == 0, r.stderr
    grew = float(r.stdout.split()[-1])
    print(f"peak resident set grew by {grew:.1f} MiB")
    assert grew < 64, f"computing on the pair raised the peak resident set by {grew:.1f} MiB"
