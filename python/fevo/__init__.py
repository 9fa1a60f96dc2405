"""fevo: how the conv filters of a network evolve during training.

Given two snapshots of a layer's weights, fevo computes in one fused pass over memory the three
metrics of Hu et al., "How Functions Evolve in Deep Convolutional Neural Network" (III-B), for a
layer of N filters of C input channels of H x W weights, with d = next - prev:

    eq. 1   D = 1/N sum_i ||f_i(t+1) - f_i(t)||^2
    eq. 2   S = 1/N sum_i 1/(C*H*W) #{(c, h, w) : |d_i(c, h, w)| > tau}
    eq. 3   Z = 1/N sum_i 1/C #{c : R_ic = 0},   R_ic = #{(h, w) : |d_i(c, h, w)| > tau}

This package is a thin binding of fevo's C++ library (the same code as the C++ API): arrays are
read in place, never copied, on the CPU with OpenMP threads or, for CUDA tensors, on the GPU.

    fevo.compute(prev, next, tau)                  one layer -> LayerMetrics
    fevo.compute_layers({name: (prev, next)}, tau) a whole model in one pass -> pandas DataFrame
    fevo.compute_partial / merge / finalize        sharded weights; fevo.distributed.compute
    fevo.Recorder(model, tau, out_dir)             a training loop's record, as the C++ recorder
    fevo.read_run(out_dir)                         a recorded run as pandas DataFrames and arrays

See docs/python.md for the whole API and examples.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Tuple, Union

from . import _fevo
from ._fevo import Error, FilterMetrics, LayerMetrics, Partial
from ._recorder import Recorder
from ._run import Run, read_run
from . import distributed

__all__ = [
    "Error",
    "FilterMetrics",
    "LayerMetrics",
    "Partial",
    "Recorder",
    "Run",
    "compute",
    "compute_layers",
    "compute_partial",
    "cpu_kernels",
    "cuda_available",
    "distributed",
    "finalize",
    "merge",
    "read_run",
]

__version__ = "0.1.0"

#: Anything fevo reads in place: torch.Tensor and nn.Parameter (CPU or CUDA), numpy.ndarray, and
#: any object that exports DLPack or the buffer protocol.
ArrayLike = Any


def compute(prev: ArrayLike, next: ArrayLike, tau: float, *, layout: str = "oihw",
            per_filter: bool = False, channel_counts: bool = False) -> LayerMetrics:
    """D, S and Z of one layer between two snapshots of its weights, in one read of both.

    With d = next - prev, for a layer of N filters of C channels of H x W weights (Hu et al.,
    "How Functions Evolve in Deep Convolutional Neural Network", section III-B):

        eq. 1   D = 1/N sum_i ||f_i(t+1) - f_i(t)||^2
                    mean over filters of the squared Euclidean change of the filter
        eq. 2   S = 1/N sum_i 1/(C*H*W) #{(c, h, w) : |d_i(c, h, w)| > tau}
                    mean share of weights that changed by more than tau
        eq. 3   Z = 1/N sum_i 1/C #{c : R_ic = 0},  R_ic = #{(h, w) : |d_i(c, h, w)| > tau}
                    mean share of input channels in which no weight changed by more than tau

    tau: a weight counts as changed when |d| > tau, strictly (|d| == tau is unchanged). d is
    computed in float32 for float32, float16 and bfloat16 input and in float64 for float64 input;
    tau is converted once to that type. tau must be finite and non-negative (the paper uses the
    initial learning rate).

    NaN rule: a d that is NaN or infinite counts as changed (in S and in R_ic, so its channel is
    not a zero channel), is counted in `nonfinite`, and makes D non-finite; it is never counted
    as unchanged. D sums exact squares in float64 (for float32 input D is within 1e-6 relative of
    an exact sum); every count is exact.

    Args:
        prev, next: the weights at t and t+1, read in place (zero-copy) with any non-negative
            strides: torch.Tensor or nn.Parameter (CPU or CUDA; permuted, sliced, channels_last),
            numpy.ndarray (non-contiguous too), or any object exporting DLPack or the buffer
            protocol. dtype float32, float64, float16 or bfloat16 (torch's, or NumPy's through
            ml_dtypes); both the same dtype on the same device. A CUDA tensor is computed on the
            GPU on the tensor's current stream, a CPU one with OpenMP threads (OMP_NUM_THREADS);
            fevo never moves data between devices.
        tau: the threshold of S and Z.
        layout: the order of the weight's axes: "oihw" (PyTorch: [out, in, kh, kw]), "hwio"
            (Keras, TensorFlow, JAX/Flax: [kh, kw, in, out]) or "ohwi" ([out, kh, kw, in]). A 3-D
            weight drops kh ([out, in, k] in "oihw": N x C x 1 x k; [k, in, out] in "hwio"; [out,
            k, in] in "ohwi") and a 2-D one drops both ([out, in]: N x C x 1 x 1; [in, out] in
            "hwio").
        per_filter: also return D_i, S_i, Z_i and their counts per filter (`.filters`).
        channel_counts: also return R_ic (`.filters.R`, N x C); implies per_filter.

    Returns:
        LayerMetrics with D, S, Z, n_filters, nonfinite, totals (a Partial) and filters (a
        FilterMetrics of NumPy arrays D, S, Z, changed, zero_channels, nonfinite and R, or None).

    Raises:
        fevo.Error (a ValueError) with the C++ library's message: different shapes, dtypes or
        devices; a dtype other than the four above; fewer than 2 or more than 4 dimensions; a zero
        extent; negative strides or anything else that could only be read through a copy; tau
        negative, NaN, infinite or too large for the compute type.
    """
    return _fevo.compute(prev, next, tau, layout, per_filter, channel_counts)


def compute_layers(layers: Union[Mapping[str, Tuple[ArrayLike, ArrayLike]], Iterable[Tuple[str, ArrayLike, ArrayLike]]],
                   tau: float, *, layout: str = "oihw"):
    """D, S and Z of many layers (a whole model) in one parallel pass, as a pandas DataFrame.

    Args:
        layers: {name: (prev, next)} (or a sequence of (name, prev, next)); each pair as in
            fevo.compute. Layers of one dtype on one device are computed in one C++
            fevo::compute_layers call (on the GPU: two kernel launches for the whole model).
        tau, layout: as in fevo.compute (the same for every layer).

    Returns:
        A DataFrame with one row per layer, in the order given: layer, D, S, Z, n_filters,
        nonfinite, D_per_weight (the columns of metrics.csv; the metrics of fevo.compute, see
        help(fevo.compute) for the equations, tau and the NaN rule, and
        help(fevo.LayerMetrics.D_per_weight)).
    """
    import pandas as pd

    if isinstance(layers, Mapping):
        items = []
        for name, pair in layers.items():
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise Error(f"fevo: compute_layers: layer '{name}': expected a (prev, next) pair, "
                            f"got {type(pair).__name__}")
            items.append((name, pair[0], pair[1]))
    else:
        items = [tuple(item) for item in layers]
    names, D, S, Z, n_filters, nonfinite, Dw = _fevo.compute_layers(items, tau, layout)
    # The columns are new arrays that nothing else holds: the frame takes them as they are
    # (copy=False), without copying them into one block.
    return pd.DataFrame({"layer": names, "D": D, "S": S, "Z": Z, "n_filters": n_filters,
                         "nonfinite": nonfinite, "D_per_weight": Dw}, copy=False)


def compute_partial(prev: ArrayLike, next: ArrayLike, tau: float, *, layout: str = "oihw") -> Partial:
    """The mergeable totals of a shard of a layer: whole filters (dim 0, as FSDP and DTensor
    Shard(0) hold them) or whole input channels.

    Partials of the shards of one layer merge exactly (fevo.merge), in any grouping; finalize
    turns the merged total into the layer's LayerMetrics, equal to fevo.compute on the whole layer
    (counts exactly; D up to the order of its float64 sum). A shard with no filters (an empty
    rank) gives Partial(), merge's identity; its shape apart from dim 0 and tau are still checked.
    Partials are picklable: gather them with torch.distributed.all_gather_object or mpi4py
    (fevo.distributed.compute does it for torch.distributed).

    Arguments as in fevo.compute.
    """
    return _fevo.compute_partial(prev, next, tau, layout)


def merge(a: Partial, b: Partial) -> Partial:
    """The Partial of two disjoint shards of one layer (a new object; a and b are unchanged)."""
    return _fevo.merge(a, b)


def finalize(total: Partial, n_filters: Optional[int] = None) -> LayerMetrics:
    """D, S and Z from the merged Partial of a whole layer.

    n_filters is the layer's N; by default total.filters, the sum of the shards' filters, which is
    N when the shards split the layer by filters. Give N when they split it by channels (each
    shard then holds every filter).
    """
    return _fevo.finalize(total, n_filters)


def cpu_kernels() -> str:
    """The instruction set of the CPU kernels fevo runs on this machine: "avx512", "avx2" or
    "generic" (the compiler's baseline: SSE2 on x86-64, NEON on AArch64). The kernels are compiled
    for each and chosen once, at run time, from the CPU's features, so a build without -march runs
    as fast as a native one; the `fevo` command's `fevo --version` names the same."""
    return _fevo.cpu_kernels()


def cuda_available() -> bool:
    """True when this build of fevo has its CUDA entry points (a CUDA compiler was found when it
    was installed) and a usable CUDA device is present."""
    return _fevo.cuda_available()
