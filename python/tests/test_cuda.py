"""CUDA tensors on fevo's CUDA backend, against the CPU results of the same weights. Built when
nvcc is found at install time; without a usable GPU every test here is reported skipped, never
passed."""
import os

import numpy as np
import pytest

import fevo
from conftest import SEED

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not (fevo.cuda_available() and torch.cuda.is_available()),
                                 reason="no usable CUDA device (or fevo was built without CUDA)")]
TAU = 2.0 ** -9


def pair(shape, dtype=torch.float32, device="cuda"):
    g = torch.Generator().manual_seed(SEED % (1 << 31))
    prev = torch.randn(shape, generator=g) * 0.05
    nxt = prev + torch.randn(shape, generator=g) * TAU * (torch.rand(shape, generator=g) < 0.5)
    nxt[:, 0] = prev[:, 0]
    return prev.to(dtype).to(device), nxt.to(dtype).to(device)


def same(gpu, cpu):
    assert (gpu.S, gpu.Z, gpu.n_filters, gpu.nonfinite) == (cpu.S, cpu.Z, cpu.n_filters, cpu.nonfinite)
    assert gpu.D == pytest.approx(cpu.D, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_equals_cpu(dtype):
    p, n = pair((70, 33, 3, 3), dtype)
    n[3, 2, 1, 1] = float("nan")
    for views in [(p, n), (p.contiguous(memory_format=torch.channels_last), n), (p[5:60, 1:], n[5:60, 1:])]:
        g = fevo.compute(*views, TAU, channel_counts=True)
        c = fevo.compute(*(v.cpu() for v in views), TAU, channel_counts=True)
        same(g, c)
        np.testing.assert_array_equal(g.filters.R, c.filters.R)
        np.testing.assert_array_equal(g.filters.changed, c.filters.changed)


def test_cuda_on_the_current_stream():
    p, n = pair((64, 64, 3, 3))
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        q = p * 1.0  # queued on s; fevo must run after it, on s
        m = fevo.compute(q, n, TAU)
    same(m, fevo.compute(p.cpu(), n.cpu(), TAU))


def test_cuda_compute_layers_and_partials():
    layers = {f"l{k}": pair(shape) for k, shape in enumerate([(64, 3, 7, 7), (256, 64, 1, 1), (128, 128, 3, 3)])}
    layers["bf16"] = tuple(t.bfloat16() for t in pair((32, 16, 3, 3)))
    df = fevo.compute_layers(layers, TAU)
    cpu = fevo.compute_layers({k: (a.cpu(), b.cpu()) for k, (a, b) in layers.items()}, TAU)
    assert (df[["S", "Z", "n_filters", "nonfinite"]] == cpu[["S", "Z", "n_filters", "nonfinite"]]).all().all()
    np.testing.assert_allclose(df["D"], cpu["D"], rtol=1e-6)
    p, n = layers["l2"]
    total = fevo.merge(fevo.compute_partial(p[:50], n[:50], TAU), fevo.compute_partial(p[50:], n[50:], TAU))
    assert fevo.compute_partial(p[:0], n[:0], TAU) == fevo.Partial()
    same(fevo.finalize(total), fevo.compute(p.cpu(), n.cpu(), TAU))


def test_cuda_refuses_a_cpu_partner():
    p, n = pair((4, 3, 3, 3))
    with pytest.raises(fevo.Error, match="prev is on cuda:0 but next is on cpu"):
        fevo.compute(p, n.cpu(), TAU)


def test_cuda_recorder_equals_the_cpu_recorder(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 32, 3), torch.nn.Conv1d(4, 8, 3))
    gpu_model = torch.nn.Sequential(*[torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 32, 3),
                                      torch.nn.Conv1d(4, 8, 3)]).cuda()
    gpu_model.load_state_dict(model.state_dict())
    with fevo.Recorder(model, TAU, tmp_path / "cpu", every=1, per_filter_series=True) as rc, \
            fevo.Recorder(gpu_model, TAU, tmp_path / "gpu", every=1, per_filter_series=True) as rg:
        assert rg.copy_bytes == rc.copy_bytes
        for step in range(1, 6):
            with torch.no_grad():
                for p, q in zip(model.parameters(), gpu_model.parameters()):
                    p.add_(torch.randn_like(p) * TAU * (torch.rand_like(p) < 0.5))
                    q.copy_(p)
            rc.step(step)
            rg.step(step)
    a, b = fevo.read_run(tmp_path / "cpu"), fevo.read_run(tmp_path / "gpu")
    cols = ["step_prev", "step", "layer", "S", "Z", "n_filters", "nonfinite"]
    assert a.metrics[cols].equals(b.metrics[cols])
    np.testing.assert_allclose(a.metrics["D"], b.metrics["D"], rtol=1e-6)
    for name in a.series:
        np.testing.assert_array_equal(a.series[name]["S"], b.series[name]["S"])
    assert os.path.exists(tmp_path / "gpu" / "fevo-state" / "journal.bin")
