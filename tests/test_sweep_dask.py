"""Dask executors with a real LocalCluster of 2 workers: same results as the local executor, the client
alone writes the database, failures are recorded."""
from __future__ import annotations

import pytest

pytest.importorskip("distributed")

from plantseek.store import ResultStore
from plantseek.sweep import run_sweep
from sweep_fake import FakeSeeker
from sweep_helpers import results_by_key

SWEEP = """
[sweep]
tasks = ["circle", "relu"]
pruners = ["random", "synflow", "ticket"]
protocols = ["singleshot"]
densities = [0.1, 0.01, "ticket"]
seeds = [0, 1, 2]
depth = 3
width = 30
epochs = 1
"""


@pytest.fixture(scope="module")
def local_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    (tmp / "s.toml").write_text(SWEEP)
    f = FakeSeeker(fail_seeds=[2])
    run_sweep(tmp / "s.toml", tmp / "local.db", batch_fn=f.batch, single_fn=f, max_batch=5, progress=False,
              log=lambda m: None)
    return results_by_key(tmp / "local.db")


def test_dask_local_threads_matches_local(tmp_path, local_results):
    (tmp_path / "s.toml").write_text(SWEEP)
    f = FakeSeeker(fail_seeds=[2])
    rep = run_sweep(tmp_path / "s.toml", tmp_path / "dask.db", executor="dask-local", workers=2, processes=False,
                    batch_fn=f.batch, single_fn=f, max_batch=5, progress=False, log=lambda m: None)
    assert (rep.ok, rep.failed) == (28, 14)  # the ticket oracle once per task and seed
    assert results_by_key(tmp_path / "dask.db") == local_results


def test_dask_two_process_cluster_matches_local(tmp_path, local_results):
    from distributed import Client, LocalCluster

    (tmp_path / "s.toml").write_text(SWEEP)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        # --executor dask --scheduler tcp://...: a cluster the sweep did not start
        f = FakeSeeker(fail_seeds=[2])
        rep = run_sweep(tmp_path / "s.toml", tmp_path / "dask.db", executor="dask", scheduler=cluster.scheduler_address,
                        batch_fn=f.batch, single_fn=f, max_batch=5, progress=False, log=lambda m: None)
        assert (rep.ok, rep.failed) == (28, 14)
        with Client(cluster) as client:
            hosts = client.run(lambda: __import__("os").getpid())
    assert len(set(hosts.values())) == 2
    res = results_by_key(tmp_path / "dask.db")
    assert res == local_results
    # the workers ran the runs (different processes), the client wrote every row
    with ResultStore(tmp_path / "dask.db") as store:
        assert {r["sweep"] for r in store.records()} == {"s"}
    # resuming through Dask skips everything already there
    rep2 = run_sweep(tmp_path / "s.toml", tmp_path / "dask.db", executor="dask-local", workers=1, processes=False,
                     batch_fn=f.batch, single_fn=f, max_batch=5, progress=False, log=lambda m: None)
    assert rep2.ran == 0


def test_dask_executor_needs_a_scheduler():
    from plantseek.sweep import get_executor

    with pytest.raises(ValueError, match="--scheduler"):
        get_executor("dask")
    with pytest.raises(ValueError, match="unknown executor 'slurm'.*dask-local.*local"):
        get_executor("slurm")
