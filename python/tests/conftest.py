"""Shared fixtures of fevo's Python tests: the run's seed, a NumPy oracle written from the paper's
equations (independent of fevo), and helpers.

The seed of random tests is printed in pytest's header and summary; FEVO_TEST_SEED=N reproduces a run."""
import os
import random

import numpy as np
import pytest

SEED = int(os.environ.get("FEVO_TEST_SEED", random.SystemRandom().randrange(1 << 31)))
SEED_LINE = f"fevo test seed: {SEED} (FEVO_TEST_SEED={SEED} reproduces this run)"


def pytest_report_header(config):
    return SEED_LINE


def pytest_terminal_summary(terminalreporter):
    # Also at the end, where `pytest -q` (which leaves the header out) shows it next to a failure.
    terminalreporter.write_line(SEED_LINE)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (left out of ./run.sh test --fast)")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (reported skipped without one)")


@pytest.fixture
def rng(request):
    """A generator seeded from the run's seed and the test's name."""
    return np.random.default_rng([SEED, sum(map(ord, request.node.nodeid))])


def oracle(prev, next, tau, compute_dtype):
    """eq. 1-3 with NumPy, for logical (N, C, H, W) arrays of the element values: d in the compute
    type (float32 for 16- and 32-bit input, float64 for 64-bit), tau converted once to it, a weight
    changed when not |d| <= tau (so NaN counts), D_i summed in float64. Returns a dict of the layer's
    and the filters' values."""
    ct = np.dtype(compute_dtype).type
    with np.errstate(invalid="ignore", over="ignore"):
        d = next.astype(ct) - prev.astype(ct)
        a = np.abs(d)
        changed = ~(a <= ct(tau))
        nonfinite = ~(a <= np.finfo(ct).max)
        d64 = d.astype(np.float64)
        D_i = (d64 * d64).reshape(d.shape[0], -1).sum(axis=1)
    N, C, H, W = d.shape
    R = changed.reshape(N, C, H * W).sum(axis=2)
    changed_i = changed.reshape(N, -1).sum(axis=1)
    zero_i = (R == 0).sum(axis=1)
    return {
        "D": D_i.sum() / N,
        "D_per_weight": D_i.sum() / N / (C * H * W),  # D / (C H W)
        "S": changed_i.sum() / (N * C * H * W),
        "Z": zero_i.sum() / (N * C),
        "nonfinite": int(nonfinite.sum()),
        "n_filters": N,
        "D_i": D_i,
        "changed": changed_i,
        "zero_channels": zero_i,
        "nonfinite_i": nonfinite.reshape(N, -1).sum(axis=1),
        "R": R,
    }


def assert_matches(m, o, rtol=1e-6):
    """A LayerMetrics (with filters) against the oracle: counts exactly, D within rtol."""
    assert m.n_filters == o["n_filters"]
    assert m.nonfinite == o["nonfinite"]
    assert m.S == o["S"]
    assert m.Z == o["Z"]
    if np.isfinite(o["D"]):
        assert m.D == pytest.approx(o["D"], rel=rtol, abs=0)
        assert m.D_per_weight == pytest.approx(o["D_per_weight"], rel=rtol, abs=0)
    else:
        assert not np.isfinite(m.D)
        assert not np.isfinite(m.D_per_weight)
    if m.filters is not None:
        f = m.filters
        np.testing.assert_array_equal(f.changed, o["changed"])
        np.testing.assert_array_equal(f.zero_channels, o["zero_channels"])
        np.testing.assert_array_equal(f.nonfinite, o["nonfinite_i"])
        fin = np.isfinite(o["D_i"])
        np.testing.assert_allclose(f.D[fin], o["D_i"][fin], rtol=rtol, atol=0)
        assert not np.isfinite(f.D[~fin]).any()
        if f.R is not None:
            np.testing.assert_array_equal(f.R, o["R"])


def torch_or_skip():
    return pytest.importorskip("torch")
