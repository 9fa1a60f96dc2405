"""One rank of test_distributed.py: fevo.distributed.compute over gloo on every way of splitting
17 filters over the ranks (empty ranks included), against fevo.compute on the whole layer.

    python distributed_worker.py RANK WORLD INIT_FILE SEED

Exit 0 when every split agrees (counts exactly, D within the core's bound); prints the first
disagreement otherwise."""
import itertools
import sys

import numpy as np
import torch
import torch.distributed as dist

import fevo

N = 17


def splits(n, parts):
    """Every composition of n into `parts` non-negative sizes."""
    for cuts in itertools.combinations_with_replacement(range(n + 1), parts - 1):
        bounds = (0,) + cuts + (n,)
        yield [bounds[k + 1] - bounds[k] for k in range(parts)]


def main():
    rank, world, init, seed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    rng = np.random.default_rng(seed)  # the same weights on every rank
    prev = torch.from_numpy(rng.standard_normal((N, 5, 3, 3)).astype(np.float32))
    nxt = prev + torch.from_numpy(rng.standard_normal((N, 5, 3, 3)).astype(np.float32)) * 1e-3
    nxt[:, 1] = prev[:, 1]  # unchanged channels
    tau = 1e-3
    whole = fevo.compute(prev, nxt, tau)
    count = 0
    for sizes in splits(N, world):
        lo = sum(sizes[:rank])
        hi = lo + sizes[rank]
        m = fevo.distributed.compute(torch.nn.Parameter(prev[lo:hi].clone()), nxt[lo:hi], tau)
        got = (m.S, m.Z, m.n_filters, m.nonfinite, m.totals.changed, m.totals.zero_channels, m.totals.weights)
        want = (whole.S, whole.Z, whole.n_filters, whole.nonfinite, whole.totals.changed, whole.totals.zero_channels,
                whole.totals.weights)
        if got != want or abs(m.D - whole.D) > 1e-6 * abs(whole.D):
            print(f"rank {rank}: split {sizes}: got {m}, unsharded {whole}", flush=True)
            return 1
        count += 1
    # A non-finite change on one rank reaches every rank.
    bad = nxt.clone()
    bad[N - 1, 0, 0, 0] = float("nan")
    lo = rank * N // world
    hi = (rank + 1) * N // world
    m = fevo.distributed.compute(prev[lo:hi], bad[lo:hi], tau)
    if m.nonfinite != 1 or not np.isnan(m.D):
        print(f"rank {rank}: NaN lost: {m}", flush=True)
        return 1
    # A shard of another layer shape is refused on every rank.
    shard = prev[lo:hi] if rank else prev[lo:hi, :4]
    try:
        fevo.distributed.compute(shard, shard, tau)
        print(f"rank {rank}: mismatched shards were accepted", flush=True)
        return 1
    except fevo.Error as e:
        if "must split one layer by filters" not in str(e):
            raise
    print(f"rank {rank}: {count} splits agree", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
