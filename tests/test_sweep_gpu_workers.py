"""One Dask worker per GPU: the per-worker pinning (CUDA_VISIBLE_DEVICES) is checked on the CPU with two
pretend GPU ids; the runs themselves go to the CPU here and results equal the local executor's. With real
GPUs (`test_two_gpus_real`) the same sweep runs on CUDA."""
from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("distributed")

from plantseek.sweep import run_sweep
from plantseek.sweep.executors import gpu_cluster, visible_gpus
from sweep_fake import FakeSeeker
from sweep_helpers import results_by_key

SWEEP = """
[sweep]
tasks = ["circle"]
pruners = ["random", "synflow"]
protocols = ["singleshot"]
densities = [0.1, 0.01]
seeds = [0, 1, 2]
depth = 3
width = 30
epochs = 1
"""


class EnvSeeker(FakeSeeker):
    """Records in each result which GPU its worker was pinned to."""

    def batch(self, kwargs_list):
        out = super().batch(kwargs_list)
        for r in out:
            r.metrics["pinned_gpu"] = float(os.environ.get("CUDA_VISIBLE_DEVICES", "-1"))
        return out


def test_one_worker_per_gpu_each_pinned(tmp_path):
    cluster = gpu_cluster(gpus=["0", "1"])
    try:
        from distributed import Client

        with Client(cluster) as client:
            seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(seen.values()) == ["0", "1"]
    finally:
        cluster.close()
    # a sweep through pinned workers: every run ran on one of them; results as the local executor's
    (tmp_path / "s.toml").write_text(SWEEP)
    f = EnvSeeker()
    lines = []
    rep = run_sweep(tmp_path / "s.toml", tmp_path / "gpu.db", executor="dask-local", gpus=["0", "1"], device="cpu",
                    batch_fn=f.batch, single_fn=f, max_batch=3, progress=False, log=lines.append)
    assert (rep.ok, rep.failed) == (12, 0)
    assert any("one per GPU" in m for m in lines)
    res = results_by_key(tmp_path / "gpu.db")
    assert {m["pinned_gpu"] for _, m, _ in res.values()} <= {0.0, 1.0}
    run_sweep(tmp_path / "s.toml", tmp_path / "local.db", batch_fn=f.batch, single_fn=f, max_batch=3,
              progress=False, log=lambda m: None)
    local = results_by_key(tmp_path / "local.db")
    strip = lambda d: {k: (s, {n: v for n, v in m.items() if n != "pinned_gpu"}, c) for k, (s, m, c) in d.items()}
    assert strip(res) == strip(local)


def test_gpu_cluster_errors():
    with pytest.raises(ValueError, match="only 2 GPU"):
        gpu_cluster(3, gpus=["0", "1"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="none is visible.*available: cpu"):
            gpu_cluster(gpus=[])


def test_visible_gpus_reads_the_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


def test_dask_cuda_needs_dask_cuda_or_says_so(tmp_path):
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        from plantseek.sweep import get_executor

        ex = get_executor("dask-cuda")
        with pytest.raises(ValueError, match="pip install dask-cuda"):
            ex._client("cuda")
    else:
        pytest.skip("dask-cuda is installed")


def test_cuda_device_without_cuda_is_one_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "s.toml").write_text(SWEEP)
    for executor in ("local", "dask-local"):
        with pytest.raises(ValueError, match="CUDA is not available.*available: cpu"):
            run_sweep(tmp_path / "s.toml", tmp_path / "x.db", executor=executor, device="cuda", progress=False,
                      log=lambda m: None)
    with pytest.raises(ValueError, match="unsupported device 'tpu'|unknown device 'tpu'"):
        run_sweep(tmp_path / "s.toml", tmp_path / "x.db", device="tpu", progress=False, log=lambda m: None)


@pytest.mark.skipif(torch.cuda.device_count() < 1, reason="needs a GPU")
def test_gpu_workers_real(tmp_path):
    """With GPUs: --executor dask-local --device cuda runs the real seeker on one worker per GPU and gives the
    local executor's results (float64)."""
    text = SWEEP.replace("epochs = 1", "epochs = 1\ndtype = \"float64\"\nn_samples = 400")
    (tmp_path / "s.toml").write_text(text)
    rep = run_sweep(tmp_path / "s.toml", tmp_path / "gpu.db", executor="dask-local", device="cuda", progress=False,
                    log=lambda m: None)
    assert rep.failed == 0
    run_sweep(tmp_path / "s.toml", tmp_path / "local.db", device="cuda", progress=False, log=lambda m: None)
    a, b = results_by_key(tmp_path / "gpu.db"), results_by_key(tmp_path / "local.db")
    assert a.keys() == b.keys()
    for k in a:
        for name, v in a[k][1].items():
            if name.endswith("time_s"):
                continue
            assert b[k][1][name] == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True), name
