"""Sharded checkpoints as Hugging Face writes them (save_pretrained with max_shard_size, in a
Trainer's checkpoint-N/ directories), for the tests of `fevo analyze` on them; and the metrics of
eqs. 1-3 recomputed with NumPy, independently of fevo (see oracle.py for the exact semantics).

Imported by tests/cli/sharded.py and tests/mpi/*.py."""
import json
import os
import shutil

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


def malformed_cases(weights):
    """Ways to break a copy of a series written by write_series (the weights it returned): each
    (name, breaker, must_contain), where breaker(d) breaks the series in directory d and returns the
    path of the file the error must name, and must_contain lists what else the message says."""
    def index_path(d, step):
        return os.path.join(d, f"checkpoint-{step}", "model.safetensors.index.json")

    def edit_index(d, step, fn):
        p = index_path(d, step)
        with open(p) as f:
            ix = json.load(f)
        fn(ix)
        with open(p, "w") as f:
            json.dump(ix, f)
        return p

    def escaping(d):
        return edit_index(d, 400, lambda ix: ix["weight_map"].update({"stem.weight": "../checkpoint-100/model-00001-of-00003.safetensors"}))

    def absolute(d):
        return edit_index(d, 300, lambda ix: ix["weight_map"].update({"head.out.bias": "/etc/passwd"}))

    def link_out(d):
        ck = os.path.join(d, "checkpoint-500")
        shard = os.path.join(ck, "model-00002-of-00003.safetensors")
        os.replace(shard, os.path.join(d, "elsewhere.safetensors"))
        os.symlink(os.path.join(d, "elsewhere.safetensors"), shard)
        return index_path(d, 500)

    def missing_tensor(d):
        ck = os.path.join(d, "checkpoint-600")
        w = {k: v for k, v in weights[5].items() if k in SHARDS[2] and k != "head.out.weight"}
        save_file(w, os.path.join(ck, "model-00003-of-00003.safetensors"))
        edit_index(d, 600, lambda ix: ix["metadata"].update({"total_size": ix["metadata"]["total_size"] - weights[5]["head.out.weight"].nbytes}))
        return os.path.join(ck, "model-00003-of-00003.safetensors")

    def in_two_shards(d):
        ck = os.path.join(d, "checkpoint-300")
        w = {k: weights[2][k] for k in SHARDS[1]}
        w["stem.bias"] = weights[2]["stem.bias"]
        save_file(w, os.path.join(ck, "model-00002-of-00003.safetensors"))
        return os.path.join(ck, "model-00002-of-00003.safetensors")

    def shape_changed(d):
        ck = os.path.join(d, "checkpoint-500")
        shutil.rmtree(ck)
        w = dict(weights[4])
        w["blocks.0.conv.weight"] = w["blocks.0.conv.weight"][:, :4].copy()
        write_checkpoint(ck, w, SHARDS, global_step=500)
        return ck

    def lying_total(d):
        return edit_index(d, 200, lambda ix: ix["metadata"].update({"total_size": ix["metadata"]["total_size"] + 2}))

    def listed_twice(d):
        p = index_path(d, 400)
        text = open(p).read().replace('"weight_map": {', '"weight_map": {"stem.weight": "model-00003-of-00003.safetensors", ', 1)
        open(p, "w").write(text)
        return p

    def bad_step(d):
        p = os.path.join(d, "checkpoint-200", "trainer_state.json")
        open(p, "w").write('{"global_step": "two hundred"}')
        return p

    def truncated_shard(d):
        p = os.path.join(d, "checkpoint-600", "model-00002-of-00003.safetensors")
        with open(p, "r+b") as f:
            f.truncate(os.path.getsize(p) - 10)
        return p

    return [("escaping shard name (../)", escaping, ["not a plain file name", "stem.weight"]),
            ("absolute shard name", absolute, ["not a plain file name"]),
            ("link out of the checkpoint directory", link_out, ["link out of the checkpoint directory"]),
            ("missing tensor (mapped to a shard that lacks it)", missing_tensor, ["tensor 'head.out.weight' is missing"]),
            ("tensor in two shards", in_two_shards, ["holds tensor 'stem.bias'", "in no other"]),
            ("shape changed between snapshots", shape_changed, ["blocks.0.conv.weight", "[48, 4, 3, 3]", "[48, 8, 3, 3]"]),
            ("lying total_size", lying_total, ["metadata total_size is", "hold"]),
            ("tensor listed twice in weight_map", listed_twice, ["key 'stem.weight' appears twice"]),
            ("trainer_state.json with a bad global_step", bad_step, ["global_step"]),
            ("truncated shard", truncated_shard, ["truncated"])]
