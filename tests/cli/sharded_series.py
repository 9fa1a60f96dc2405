"""Sharded checkpoints as Hugging Face writes them (save_pretrained with max_shard_size, in a
Trainer's checkpoint-N/ directories), for the tests of `fevo analyze` on them; and the metrics of
eqs. 1-3 recomputed with NumPy, independently of fevo (see oracle.py for the exact semantics).

Imported by tests/cli/sharded.py and tests/mpi/*.py."""
import json
import os

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

BF16 = np.dtype(ml_dtypes.bfloat16)


def write_checkpoint(d, tensors, shards, global_step=None, total_size=None, weight_map=None):
    """One checkpoint directory: shard k (model-0000k-of-0000n.safetensors) holds the tensors named
    in shards[k]; model.safetensors.index.json maps each to its shard (weight_map overrides the
    map; total_size the true total); trainer_state.json has global_step when it is given."""
    os.makedirs(d, exist_ok=True)
    n = len(shards)
    wm, total = {}, 0
    for k, names in enumerate(shards):
        fn = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        save_file({t: tensors[t] for t in names}, os.path.join(d, fn), metadata={"format": "pt"})
        for t in names:
            wm[t] = fn
            total += tensors[t].nbytes
    index = {"metadata": {"total_size": total if total_size is None else total_size},
             "weight_map": dict(sorted((weight_map or wm).items()))}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    if global_step is not None:
        with open(os.path.join(d, "trainer_state.json"), "w") as f:
            json.dump({"global_step": global_step, "epoch": 0.5, "log_history": []}, f)
    # What a Trainer also saves, never opened by fevo.
    with open(os.path.join(d, "optimizer.pt"), "wb") as f:
        f.write(b"\x80\x02}q\x00.")


# A small model in three shards: an f32 stem, a bf16 layer holding most of the bytes (so that a
# rank's share of them ends inside it), 2-D f32 and bf16 linear layers, biases and a step counter.
SHAPES = {
    "stem.weight": ((8, 3, 3, 3), np.float32),
    "stem.bias": ((8,), np.float32),
    "blocks.0.conv.weight": ((48, 8, 3, 3), BF16),
    "blocks.1.conv.weight": ((40, 48, 3, 3), BF16),
    "head.proj.weight": ((24, 40), np.float32),
    "head.out.weight": ((10, 24), BF16),
    "head.out.bias": ((10,), np.float32),
    "num_batches_tracked": ((), np.int64),
}
SHARDS = [["stem.weight", "stem.bias", "blocks.0.conv.weight"], ["blocks.1.conv.weight"],
          ["head.proj.weight", "head.out.weight", "head.out.bias", "num_batches_tracked"]]


def series_weights(steps, seed):
    """The weights at each step: a random walk in which a fifth of the weights move by about
    1e-3 each step, a few channels never move (so Z is not 0), and one weight at the third step is
    NaN (a non-finite change)."""
    rng = np.random.default_rng(seed)
    w = {k: (rng.normal(0, 0.05, s) if s else np.array(0)).astype(dt) for k, (s, dt) in SHAPES.items()}
    out = []
    for k, _ in enumerate(steps):
        if k == 2:
            w["blocks.1.conv.weight"][3, 7, 1, 1] = np.nan
        out.append({n: v.copy() for n, v in w.items()})
        nxt = {}
        for n, v in w.items():
            if v.ndim < 2:
                nxt[n] = v
                continue
            move = rng.normal(0, 1e-3, v.shape) * (rng.random(v.shape) < 0.2)
            if v.ndim == 4:
                move[:, 0] = 0  # channel 0 of every filter never moves
            nxt[n] = (v.astype(np.float32) + move).astype(v.dtype)
        w = nxt
    return out


def write_series(root, steps, seed, names="checkpoint-{}"):
    """A Trainer's output directory: checkpoint-<step>/ for each step (the step also in
    trainer_state.json). Returns the weights at each step."""
    weights = series_weights(steps, seed)
    for step, w in zip(steps, weights):
        write_checkpoint(os.path.join(root, names.format(step)), w, SHARDS, global_step=step)
    return weights


def analysed(include_2d=True):
    """The layers fevo analyses, in the order it writes them (the checkpoint's, shard by shard)."""
    out = []
    for shard in SHARDS:
        # save_file orders a shard's data by dtype size (largest first), then by name.
        order = sorted(shard, key=lambda n: (-np.dtype(SHAPES[n][1]).itemsize, n))
        out += [n for n in order if len(SHAPES[n][0]) == 4 or (include_2d and len(SHAPES[n][0]) == 2)]
    return out


def metrics(a, b, tau):
    """D, S, Z and the non-finite count of one layer, and its per-filter D_i, S_i, Z_i: d in
    float32 (the compute type of f32 and bf16), changed = not (|d| <= tau), D from float64
    squares."""
    if a.ndim == 2:
        a, b = a[:, :, None, None], b[:, :, None, None]
    with np.errstate(invalid="ignore", over="ignore"):
        d = b.astype(np.float32) - a.astype(np.float32)
        changed = ~(np.abs(d) <= np.float32(tau))
        Di = np.sum(d.astype(np.float64) ** 2, axis=(1, 2, 3))
    n, c = d.shape[0], d.shape[1]
    Si = changed.sum(axis=(1, 2, 3)) / float(d[0].size)
    Zi = (changed.sum(axis=(2, 3)) == 0).sum(axis=1) / float(c)
    D = float(Di.sum() / n)
    S = int(changed.sum()) / float(d.size)
    Z = int((changed.sum(axis=(2, 3)) == 0).sum()) / float(n * c)
    return (D, S, Z, int((~np.isfinite(d)).sum())), (Di, Si, Zi)
