"""fevo.compute, compute_layers and the partials against the NumPy oracle (conftest.oracle) and the
torch eager formula: every dtype and layout, 2-, 3- and 4-D weights, strided views, NaN and Inf."""
import pickle

import numpy as np
import pytest

import fevo
from conftest import assert_matches, oracle

ml_dtypes = pytest.importorskip("ml_dtypes")

# tau is a power of two, exact in every element type, so that |d| == tau occurs exactly.
TAU = 2.0 ** -7
DTYPES = {  # name: (NumPy element type, compute type)
    "float32": (np.float32, np.float32),
    "float64": (np.float64, np.float64),
    "float16": (np.float16, np.float32),
    "bfloat16": (ml_dtypes.bfloat16, np.float32),
}
LAYOUTS = ("oihw", "hwio", "ohwi")


def snapshots(rng, shape, dtype):
    """Logical (N, C, H, W) prev and next: random weights, a third unchanged, some changed by
    exactly +-tau, some whole channels unchanged."""
    prev = (rng.standard_normal(shape) * 0.05).astype(dtype)
    step = rng.choice([0.0, TAU / 4, TAU * 4], size=shape) * rng.choice([-1, 1], size=shape)
    nxt = (prev.astype(np.float64) + step).astype(dtype)
    exact = rng.random(shape) < 0.05
    prev[exact] = 0
    nxt[exact] = np.where(rng.random(int(exact.sum())) < 0.5, TAU, -TAU).astype(dtype)
    if shape[1] > 1:
        nxt[:, 0] = prev[:, 0]  # channel 0 of every filter unchanged: Z > 0
    return prev, nxt


def physical(logical, layout, ndim):
    """The array a framework holds for logical (N, C, H, W) weights in `layout`, with ndim axes."""
    axes = {"oihw": "oihw", "hwio": "hwio", "ohwi": "ohwi"}[layout]
    if ndim == 3:
        assert logical.shape[2] == 1
        axes = axes.replace("h", "")
    elif ndim == 2:
        assert logical.shape[2] == logical.shape[3] == 1
        axes = axes.replace("h", "").replace("w", "")
    squeezed = logical
    order = "oihw"
    if ndim <= 3:
        squeezed = squeezed[:, :, 0]
        order = "oiw"
    if ndim == 2:
        squeezed = squeezed[:, :, 0]
        order = "oi"
    return np.ascontiguousarray(squeezed.transpose([order.index(a) for a in axes]))


def compute_type(name):
    return DTYPES[name][1]


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(7, 5, 3, 4), (6, 4, 1, 5), (9, 11, 1, 1), (130, 64, 3, 3)],
                         ids=["4d", "3d", "2d", "4d-threaded"])
def test_every_dtype_and_layout_against_the_oracle(rng, name, layout, shape):
    dtype, ct = DTYPES[name]
    prev, nxt = snapshots(rng, shape, dtype)
    o = oracle(prev, nxt, TAU, ct)
    ndims = [4] if shape[2] > 1 else ([3, 4] if shape[3] > 1 else [2, 3, 4])
    for ndim in ndims:
        p, n = physical(prev, layout, ndim), physical(nxt, layout, ndim)
        m = fevo.compute(p, n, TAU, layout=layout, channel_counts=True)
        assert_matches(m, o)
        np.testing.assert_array_equal(m.filters.S, o["changed"] / (shape[1] * shape[2] * shape[3]))
        np.testing.assert_array_equal(m.filters.Z, o["zero_channels"] / shape[1])
        plain = fevo.compute(p, n, TAU, layout=layout)
        assert plain.filters is None
        assert (plain.D, plain.S, plain.Z, plain.nonfinite) == (m.D, m.S, m.Z, m.nonfinite)


def test_per_filter_without_channel_counts(rng):
    prev, nxt = snapshots(rng, (8, 3, 3, 3), np.float32)
    m = fevo.compute(prev, nxt, TAU, per_filter=True)
    assert m.filters.R is None
    assert m.filters.D.dtype == np.float64 and m.filters.changed.dtype == np.uint64
    assert_matches(m, oracle(prev, nxt, TAU, np.float32))


def test_strided_numpy_views(rng):
    base_prev, base_next = snapshots(rng, (16, 12, 5, 5), np.float32)
    views = {
        "every other filter": (slice(None, None, 2),),
        "channels 3..": (slice(None), slice(3, None)),
        "inner crop": (slice(None), slice(None), slice(1, 4), slice(0, 5, 2)),
    }
    for what, idx in views.items():
        p, n = base_prev[idx], base_next[idx]
        assert not p.flags.c_contiguous, what
        assert_matches(fevo.compute(p, n, TAU, per_filter=True), oracle(p, n, TAU, np.float32))
    # Memory in HWIO order read as OIHW through a transposed view, against contiguous memory.
    hwio = np.ascontiguousarray(base_prev.transpose(2, 3, 1, 0))
    view = hwio.transpose(3, 2, 0, 1)
    m = fevo.compute(view, base_next, TAU, per_filter=True)
    assert_matches(m, oracle(base_prev, base_next, TAU, np.float32))
    # A broadcast (stride 0) reads one filter for all.
    one = np.broadcast_to(base_prev[:1], base_prev.shape)
    assert_matches(fevo.compute(one, base_next, TAU, per_filter=True), oracle(np.array(one), base_next, TAU, np.float32))


def test_nan_and_inf(rng):
    for name, (dtype, ct) in DTYPES.items():
        prev, nxt = snapshots(rng, (6, 4, 3, 3), dtype)
        big = np.finfo(ct).max if dtype != np.float16 else 60000.0
        nxt[0, 1, 0, 0] = np.nan          # NaN d: changed, nonfinite
        prev[1, 2, 1, 1] = np.inf         # inf - x
        nxt[2, 0, 2, 2] = -np.inf
        prev[3, 3, 0, 1] = nxt[3, 3, 0, 1] = np.inf   # inf - inf = NaN
        prev[4, 0, 0, 0], nxt[4, 0, 0, 0] = dtype(-big), dtype(big)  # overflows to inf in float32 when finite max
        m = fevo.compute(prev, nxt, TAU, channel_counts=True)
        o = oracle(prev, nxt, TAU, ct)
        assert o["nonfinite"] >= 4, name
        assert_matches(m, o)
        assert np.isnan(m.D) or np.isinf(m.D)
        # A NaN never counts as unchanged: its channel is not a zero channel.
        assert m.filters.R[0, 1] >= 1 and m.filters.R[3, 3] >= 1


@pytest.mark.parametrize("tau", [0.0, 1e-3, 10.0])
def test_tau_is_strict(tau):
    prev = np.zeros((2, 1, 1, 4), np.float64)
    nxt = np.array([tau, -tau, np.nextafter(tau, 1e9), 0.0] * 2, np.float64).reshape(2, 1, 1, 4)
    m = fevo.compute(prev, nxt, tau, per_filter=True)
    np.testing.assert_array_equal(m.filters.changed, [1, 1])  # only nextafter(tau) > tau
    assert m.Z == 0.0


torch = pytest.importorskip("torch")
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
                "bfloat16": torch.bfloat16}


def torch_eager(prev, nxt, tau):
    """The metrics with torch operations: d in the compute type, D summed in float64, NaN changed."""
    ct = torch.float64 if prev.dtype == torch.float64 else torch.float32
    d = nxt.to(ct) - prev.to(ct)
    tau_ct = torch.tensor(tau, dtype=ct)
    D_i = d.double().pow(2).sum(dim=(1, 2, 3))
    changed = ~(d.abs() <= tau_ct)
    R = changed.sum(dim=(2, 3))
    return {"D": D_i.mean().item(), "S": changed.double().mean().item(),
            "Z": (R == 0).double().mean().item(), "D_i": D_i.numpy(), "R": R.numpy()}


@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_torch_tensors_against_the_torch_formula_and_the_oracle(rng, name):
    dtype = TORCH_DTYPES[name]
    prev64, next64 = snapshots(rng, (12, 6, 3, 3), np.float64)
    prev = torch.from_numpy(prev64).to(dtype)
    nxt = torch.from_numpy(next64).to(dtype)
    nxt[0, 0, 0, 0] = float("nan")
    e = torch_eager(prev, nxt, TAU)
    o = oracle(prev.double().numpy() if dtype != torch.float64 else prev.numpy(),
               nxt.double().numpy() if dtype != torch.float64 else nxt.numpy(), TAU,
               np.float64 if dtype == torch.float64 else np.float32)
    views = {
        "contiguous": (prev, nxt),
        "parameter": (torch.nn.Parameter(prev.clone()), nxt),
        "channels_last": (prev.contiguous(memory_format=torch.channels_last), nxt),
        "permuted storage": (prev.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1), nxt),
    }
    for what, (p, n) in views.items():
        m = fevo.compute(p, n, TAU, channel_counts=True)
        assert_matches(m, o)
        assert m.S == pytest.approx(e["S"], abs=0, rel=1e-15), what
        assert m.Z == pytest.approx(e["Z"], abs=0, rel=1e-15), what
        np.testing.assert_array_equal(m.filters.R, e["R"])
    # Slices: filters 2..9 and channels 1..4.
    p, n = prev[2:10, 1:5], nxt[2:10, 1:5]
    assert_matches(fevo.compute(p, n, TAU, per_filter=True), oracle(
        o_input(p), o_input(n), TAU, np.float64 if dtype == torch.float64 else np.float32))


def o_input(t):
    return t.double().numpy() if t.dtype != torch.float64 else t.numpy()


def test_torch_conv1d_and_linear_weights(rng):
    conv1d = torch.nn.Conv1d(4, 6, 5)
    linear = torch.nn.Linear(7, 3)
    for w in (conv1d.weight, linear.weight):
        before = w.detach().clone()
        with torch.no_grad():
            w.add_(torch.from_numpy(rng.standard_normal(tuple(w.shape)).astype(np.float32)) * 0.01)
        m = fevo.compute(before, w, TAU, per_filter=True)
        logical = lambda t: t.detach().numpy().reshape(t.shape[0], t.shape[1], 1, -1)  # noqa: E731
        assert_matches(m, oracle(logical(before), logical(w), TAU, np.float32))


def test_compute_layers_equals_compute(rng):
    layers = {}
    for k, shape in enumerate([(8, 3, 3, 3), (16, 8, 1, 1), (130, 64, 3, 3), (4, 4, 5, 5)]):
        layers[f"layer,{k}"] = snapshots(rng, shape, np.float32)
    layers["f64"] = snapshots(rng, (5, 2, 3, 3), np.float64)
    layers["bf16"] = tuple(x.astype(ml_dtypes.bfloat16) for x in snapshots(rng, (5, 2, 3, 3), np.float32))
    df = fevo.compute_layers(layers, TAU)
    assert list(df.columns) == ["layer", "D", "S", "Z", "n_filters", "nonfinite", "D_per_weight"]
    assert list(df["layer"]) == list(layers)
    for row, (name, (p, n)) in zip(df.itertuples(index=False), layers.items()):
        m = fevo.compute(p, n, TAU)
        assert (row.D, row.S, row.Z, row.n_filters, row.nonfinite, row.D_per_weight) == \
            (m.D, m.S, m.Z, m.n_filters, m.nonfinite, m.D_per_weight), name
        o = oracle(p, n, TAU, np.float64 if p.dtype == np.float64 else np.float32)
        assert row.D_per_weight == pytest.approx(o["D_per_weight"], rel=1e-6, abs=0), name
    as_tuples = fevo.compute_layers([(name, p, n) for name, (p, n) in layers.items()], TAU)
    assert as_tuples.equals(df)
    assert len(fevo.compute_layers({}, TAU)) == 0


def test_compute_layers_hwio(rng):
    p, n = snapshots(rng, (6, 5, 3, 3), np.float32)
    df = fevo.compute_layers({"k": (physical(p, "hwio", 4), physical(n, "hwio", 4))}, TAU, layout="hwio")
    o = oracle(p, n, TAU, np.float32)
    assert df["S"][0] == o["S"] and df["Z"][0] == o["Z"]


def test_partials_of_filter_and_channel_shards_merge_into_the_whole(rng):
    p, n = snapshots(rng, (17, 6, 3, 3), np.float32)
    whole = fevo.compute(p, n, TAU)
    by_filters = fevo.Partial()
    for lo, hi in [(0, 5), (5, 5), (5, 16), (16, 17)]:  # (5, 5): an empty shard
        by_filters = fevo.merge(by_filters, fevo.compute_partial(p[lo:hi], n[lo:hi], TAU))
    m = fevo.finalize(by_filters)
    assert by_filters.filters == 17
    assert (m.S, m.Z, m.nonfinite, m.n_filters) == (whole.S, whole.Z, whole.nonfinite, whole.n_filters)
    assert m.D == pytest.approx(whole.D, rel=1e-6)  # the core bound of D (api.md)
    by_channels = fevo.merge(fevo.compute_partial(p[:, :2], n[:, :2], TAU), fevo.compute_partial(p[:, 2:], n[:, 2:], TAU))
    m = fevo.finalize(by_channels, n_filters=17)
    assert (m.S, m.Z, m.n_filters) == (whole.S, whole.Z, 17)
    assert m.D == pytest.approx(whole.D, rel=1e-6)  # the core bound of D (api.md)


def test_partials_pickle_and_compare():
    a = fevo.Partial(sum_sq=1.5, changed=3, weights=10, zero_channels=1, channels=4, nonfinite=2, filters=2)
    b = pickle.loads(pickle.dumps(a))
    assert b == a and b is not a
    assert (b.sum_sq, b.changed, b.weights, b.zero_channels, b.channels, b.nonfinite, b.filters) == (1.5, 3, 10, 1, 4, 2, 2)
    assert fevo.merge(fevo.Partial(), a) == a == fevo.merge(a, fevo.Partial())
    assert pickle.loads(pickle.dumps(fevo.Partial(sum_sq=float("nan")))) == fevo.Partial(sum_sq=float("nan"))
    assert "changed=3" in repr(a)
    assert fevo.finalize(fevo.Partial()).D == 0.0


def test_empty_shard_is_the_identity():
    empty = np.zeros((0, 3, 3, 3), np.float32)
    assert fevo.compute_partial(empty, empty, TAU) == fevo.Partial()
    assert fevo.compute_partial(torch.zeros(0, 3, 3, 3), torch.zeros(0, 3, 3, 3), TAU) == fevo.Partial()
    with pytest.raises(fevo.Error, match="shape mismatch"):
        fevo.compute_partial(empty, np.zeros((0, 3, 3, 2), np.float32), TAU)
    with pytest.raises(fevo.Error, match="tau"):
        fevo.compute_partial(empty, empty, -1.0)
    with pytest.raises(fevo.Error, match="extent"):
        fevo.compute(empty, empty, TAU)  # a whole layer needs filters


def test_results_survive_their_inputs(rng):
    p, n = snapshots(rng, (8, 3, 3, 3), np.float32)
    m = fevo.compute(p, n, TAU, channel_counts=True)
    D = m.filters.D
    del m, p, n
    assert D.shape == (8,) and np.isfinite(D).all()


def test_buffer_protocol_objects(rng):
    """memoryview: the buffer protocol without NumPy's array interface or DLPack, strided too."""
    for name in ("float32", "float64", "float16"):
        dtype, ct = DTYPES[name]
        prev, nxt = snapshots(rng, (6, 8, 3, 3), dtype)
        for idx in ((slice(None),), (slice(None), slice(None, None, 2))):
            p, n = prev[idx], nxt[idx]
            assert_matches(fevo.compute(memoryview(p), memoryview(n), TAU, per_filter=True), oracle(p, n, TAU, ct))
    p = np.zeros((2, 2, 1, 1), np.int32)
    with pytest.raises(fevo.Error, match="int32"):
        fevo.compute(memoryview(p), memoryview(p), TAU)


# JAX arrays (jax[cpu] is installed by ./run.sh test): read through DLPack, in JAX's own dtypes,
# as Flax holds its kernels (HWIO) and as PyTorch code ported to JAX does (OIHW).
JAX_DTYPES = ("float32", "bfloat16", "float16")


@pytest.mark.parametrize("name", JAX_DTYPES)
@pytest.mark.parametrize("layout", ("oihw", "hwio"))
def test_jax_arrays(rng, name, layout):
    jnp = pytest.importorskip("jax.numpy")
    dtype, ct = DTYPES[name]
    prev, nxt = snapshots(rng, (12, 5, 3, 3), dtype)
    p, n = jnp.asarray(physical(prev, layout, 4)), jnp.asarray(physical(nxt, layout, 4))
    assert p.dtype == jnp.dtype(name)  # JAX's dtype, not a NumPy copy of another
    m = fevo.compute(p, n, TAU, layout=layout, channel_counts=True)
    assert_matches(m, oracle(prev, nxt, TAU, ct))


def test_jax_float64_and_a_flax_style_model(rng):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    with jax.experimental.enable_x64():
        prev, nxt = snapshots(rng, (6, 4, 3, 3), np.float64)
        p, n = jnp.asarray(prev), jnp.asarray(nxt)
        assert p.dtype == jnp.float64
        assert_matches(fevo.compute(p, n, TAU, per_filter=True), oracle(prev, nxt, TAU, np.float64))
    # A dict of HWIO kernels, as a Flax model's parameters hold them.
    layers = {name: snapshots(rng, shape, np.float32) for name, shape in
              [("conv1", (16, 3, 3, 3)), ("conv2", (32, 16, 3, 3)), ("dense", (10, 32, 1, 1))]}
    df = fevo.compute_layers({k: (jnp.asarray(physical(p, "hwio", 4)), jnp.asarray(physical(n, "hwio", 4)))
                              for k, (p, n) in layers.items()}, TAU, layout="hwio")
    assert list(df["layer"]) == list(layers)
    for row, (p, n) in zip(df.itertuples(), layers.values()):
        o = oracle(p, n, TAU, np.float32)
        assert (row.S, row.Z, row.n_filters) == (o["S"], o["Z"], o["n_filters"])
        assert row.D == pytest.approx(o["D"], rel=1e-6, abs=0)


def test_jax_bad_input_raises(rng):
    jnp = pytest.importorskip("jax.numpy")
    p, n = snapshots(rng, (6, 4, 3, 3), np.float32)
    with pytest.raises(fevo.Error, match="int32"):
        fevo.compute(jnp.asarray(p).astype(jnp.int32), jnp.asarray(n).astype(jnp.int32), TAU)
    with pytest.raises(fevo.Error, match="shape"):
        fevo.compute(jnp.asarray(p), jnp.asarray(n[:5]), TAU)
