"""fevo.distributed: the metrics of a layer whose weights are sharded across processes.

    import torch.distributed as dist
    m = fevo.distributed.compute(prev_shard, next_shard, tau)   # on every rank

Each rank passes its dim-0 shard of the layer (whole filters, as FSDP2 and DTensor Shard(0) hold
them); every rank gets the metrics of the whole layer. Each rank computes its shard's
fevo.compute_partial, the partials are all-gathered (torch.distributed.all_gather_object) and
merged in rank order, so every rank gets the same result, equal to fevo.compute on the unsharded
layer (counts exactly; D up to the order of its float64 sum). A rank with no filters passes an
empty shard (shape (0, C, H, W)).
"""
from __future__ import annotations

from typing import Any, Optional

from . import _fevo
from ._fevo import Error, LayerMetrics, Partial


def _local(t: Any) -> Any:
    """The local shard of a DTensor (it must be sharded on dim 0), else the tensor itself."""
    placements = getattr(t, "placements", None)
    if placements is not None and hasattr(t, "to_local"):
        for p in placements:
            is_shard = getattr(p, "is_shard", None)
            if not (is_shard and is_shard(0)):
                raise Error(f"fevo: distributed.compute: a DTensor placed {tuple(placements)} is not sharded on "
                            "dim 0 (the filters) alone; pass Shard(0) tensors, or fevo.compute on a whole layer")
        t = t.to_local()
    return t


def compute(prev_shard: Any, next_shard: Any, tau: float, group: Optional[Any] = None, *,
            layout: str = "oihw") -> LayerMetrics:
    """D, S and Z of a layer sharded by filters (dim 0) across the ranks of `group` (default: the
    default process group), on every rank. Call it on every rank of the group with that rank's
    shard. The shards must have the same shape apart from dim 0, the same dtype, and every rank
    the same tau (checked: fevo.Error on every rank). Arguments as in fevo.compute; see
    help(fevo.compute) for the equations, tau and the NaN rule."""
    import torch.distributed as dist

    p, n = _local(prev_shard), _local(next_shard)
    part = _fevo.compute_partial(p, n, tau, layout)
    _, C, H, W = _fevo.extents(p, layout)
    world = dist.get_world_size(group)
    gathered = [None] * world
    dist.all_gather_object(gathered, (part, (C, H, W), float(tau)), group=group)
    total = Partial()
    for rank, (other, chw, other_tau) in enumerate(gathered):
        if chw != (C, H, W):
            raise Error(f"fevo: distributed.compute: rank {rank}'s shard has (channels, rows, cols) {chw}, this "
                        f"rank's {(C, H, W)}: the shards must split one layer by filters (dim 0)")
        if other_tau != float(tau):
            raise Error(f"fevo: distributed.compute: rank {rank} passed tau {other_tau}, this rank {float(tau)}")
        total = _fevo.merge(total, other)
    return _fevo.finalize(total, None)
