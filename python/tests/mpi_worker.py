"""One rank of test_distributed.py's mpi4py test: every way of splitting 17 filters over the ranks
(empty ranks included), each rank's fevo.compute_partial gathered with mpi4py's allgather (the
partials pickled) and merged, against fevo.compute on the whole layer.

    mpirun -n WORLD python mpi_worker.py SEED

Exit 0 when every split agrees on every rank (counts exactly, D within the core's bound); prints
the first disagreement otherwise."""
import functools
import sys

import numpy as np
from mpi4py import MPI

import fevo
from distributed_worker import N, splits


def main():
    comm = MPI.COMM_WORLD
    rank, world, seed = comm.Get_rank(), comm.Get_size(), int(sys.argv[1])
    rng = np.random.default_rng(seed)  # the same weights on every rank
    prev = rng.standard_normal((N, 5, 3, 3)).astype(np.float32)
    nxt = prev + (rng.standard_normal((N, 5, 3, 3)) * 1e-3).astype(np.float32)
    nxt[:, 1] = prev[:, 1]  # unchanged channels
    nxt[N - 1, 0, 0, 0] = np.inf  # a non-finite change, on whichever rank holds the last filter
    tau = 1e-3
    whole = fevo.compute(prev, nxt, tau)
    want = (whole.S, whole.Z, whole.n_filters, whole.nonfinite)
    count = 0
    for sizes in splits(N, world):
        lo = sum(sizes[:rank])
        hi = lo + sizes[rank]
        mine = fevo.compute_partial(prev[lo:hi], nxt[lo:hi], tau)
        total = functools.reduce(fevo.merge, comm.allgather(mine), fevo.Partial())
        m = fevo.finalize(total)
        got = (m.S, m.Z, m.n_filters, m.nonfinite)
        if got != want or not np.isinf(m.D):
            print(f"rank {rank}: split {sizes}: got {m}, unsharded {whole}", flush=True)
            return 1
        count += 1
    # Finite changes: D within the core's bound of the unsharded pass.
    fin = nxt.copy()
    fin[N - 1, 0, 0, 0] = prev[N - 1, 0, 0, 0]
    whole = fevo.compute(prev, fin, tau)
    lo, hi = rank * N // world, (rank + 1) * N // world
    m = fevo.finalize(functools.reduce(fevo.merge, comm.allgather(fevo.compute_partial(prev[lo:hi], fin[lo:hi], tau))))
    if (m.S, m.Z, m.n_filters) != (whole.S, whole.Z, whole.n_filters) or abs(m.D - whole.D) > 1e-6 * abs(whole.D):
        print(f"rank {rank}: finite changes: got {m}, unsharded {whole}", flush=True)
        return 1
    print(f"rank {rank}: {count} splits agree", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
