"""fevo.distributed.compute with torch.distributed's gloo backend, 2 and 3 processes on the CPU,
and fevo.compute_partial gathered with mpi4py under mpirun, 2 and 3 ranks: every way of splitting
17 filters over the ranks, empty ranks included, equals the unsharded result on every rank
(distributed_worker.py, mpi_worker.py)."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import SEED

HERE = os.path.dirname(os.path.abspath(__file__))
dist = pytest.importorskip("torch.distributed")


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_every_split_of_17_filters_equals_the_unsharded_layer(tmp_path, world):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    init = tmp_path / "init"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "distributed_worker.py"), str(r), str(world),
                               str(init), str(SEED)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env) for r in range(world)]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, out))
    splits = {2: 18, 3: 171}[world]
    for rank, (rc, out) in enumerate(outs):
        assert rc == 0, f"rank {rank}:\n{out}"
        assert f"rank {rank}: {splits} splits agree" in out, out


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_partials_gathered_with_mpi4py(world):
    """fevo.compute_partial on each rank's shard, gathered with mpi4py's allgather (pickled) and
    merged: the unsharded result on every rank, for every split of 17 filters (mpi_worker.py)."""
    pytest.importorskip("mpi4py")
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no mpirun")
    # Open MPI refuses root without these; --oversubscribe: more ranks than cores.
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl="self,vader")
    r = subprocess.run([mpirun, "-n", str(world), "--oversubscribe", sys.executable, os.path.join(HERE, "mpi_worker.py"),
                        str(SEED)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=300)
    splits = {2: 18, 3: 171}[world]
    assert r.returncode == 0, r.stdout
    for rank in range(world):
        assert f"rank {rank}: {splits} splits agree" in r.stdout, r.stdout
