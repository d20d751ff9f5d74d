"""Every tensor a run creates after the CPU drawing lives on the run's device (one run per protocol).

A TorchDispatchMode records the device of every tensor every ATen op returns (factories included) while a
run goes through `seek`. Drawing data and planting happen on the CPU in float64 by design (a seed means the
same network everywhere), and so does the ticket's own evaluation (a float64 CPU object) and the bit-packed
mask bookkeeping of the recovery metrics; those phases are paused. On a machine with CUDA the run goes to
"cuda" and the same check then catches any tensor left on the CPU; here it runs on the CPU.
"""
from __future__ import annotations

import importlib
import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import plantseek  # noqa: F401
from plantseek import pruners

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class DeviceRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.paused = 0
        self.seen: collections.Counter = collections.Counter()
        self.examples: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.seen[t.device.type] += 1
                    self.examples.setdefault(t.device.type, []).append(str(func))
        return out


def _pausing(recorder, fn):
    def wrapped(*a, **k):
        recorder.paused += 1
        try:
            return fn(*a, **k)
        finally:
            recorder.paused -= 1
    return wrapped


@pytest.mark.parametrize("protocol,pruner,impl", [
    ("singleshot", "synflow", "auto"),
    ("singleshot", pruners.get("synflow", iterations=1), "sparse"),  # the native sparse training path
    ("multishot", "magnitude", "auto"),
    ("strong", pruners.get("edge-popup-annealed", epochs=1, batch_size=64), "auto"),
])
def test_everything_is_created_on_the_run_device(monkeypatch, protocol, pruner, impl):
    mod = importlib.import_module("plantseek.seek")
    mod.clear_caches()
    rec = DeviceRecorder()
    for name in ("_planted", "_data", "_ticket_metrics", "mask_metrics"):
        monkeypatch.setattr(mod, name, _pausing(rec, getattr(mod, name)))
    with rec:
        r = mod.seek(task="circle", depth=3, width=20, pruner=pruner, density=0.2, protocol=protocol, epochs=1,
                     rounds=2, round_epochs=1, n_samples=400, device=DEVICE, progress=False, impl=impl)
    assert r.metrics["test_loss"] == r.metrics["test_loss"]
    expected = torch.device(DEVICE).type
    assert rec.seen[expected] > 100  # the recorder did see the run
    others = {d: n for d, n in rec.seen.items() if d != expected}
    assert not others, {d: collections.Counter(rec.examples[d]).most_common(5) for d in others}
    assert r.masks[0][0].device.type == expected and r.weights[0].device.type == expected


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        plantseek.seek(task="relu", depth=2, width=4, pruner="random", density=0.5, device="cuda:0", progress=False)


def test_sweep_device_from_the_file_and_the_cli_wins(tmp_path):
    """The sweep file's `device` reaches every run; --device on the CLI overrides it."""
    from plantseek.cli import main
    from plantseek.store import ResultStore
    from plantseek.sweep import run_sweep
    from sweep_fake import FakeSeeker

    text = """
[sweep]
device = "{dev}"
tasks = ["relu"]
pruners = ["random", "magnitude"]
protocols = ["singleshot"]
densities = [0.5]
seeds = [0]
depth = 2
width = 6
epochs = 1
n_samples = 200
dense_baseline = false
"""
    seen = []

    class Recording(FakeSeeker):
        def batch(self, kwargs_list):
            seen.extend(kw["device"] for kw in kwargs_list)
            return super().batch(kwargs_list)

    f = tmp_path / "s.toml"
    f.write_text(text.format(dev="cpu"))
    rec = Recording()
    run_sweep(f, tmp_path / "a.db", batch_fn=rec.batch, single_fn=rec, progress=False, log=lambda m: None)
    assert seen == ["cpu", "cpu"]
    seen.clear()
    run_sweep(f, tmp_path / "b.db", device="auto", batch_fn=rec.batch, single_fn=rec, progress=False,
              log=lambda m: None)
    assert seen == ["auto", "auto"]
    # a file asking for a device this machine lacks runs with --device cpu (the real seeker)
    other = "cpu" if torch.cuda.is_available() else "cuda:7"
    f.write_text(text.format(dev=other))
    if other != "cpu":
        assert main(["sweep", str(f), "--db", str(tmp_path / "c.db"), "--no-progress"]) == 2
    assert main(["sweep", str(f), "--db", str(tmp_path / "c.db"), "--no-progress", "--device", DEVICE]) == 0
    with ResultStore(tmp_path / "c.db") as store:
        recs = store.records()
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    assert {r["device"] for r in recs} == {DEVICE}


def test_unknown_device_is_a_clear_error():
    from plantseek.device import resolve_device

    for bad in ("tpu", "gpu:0", "cuda:x"):
        with pytest.raises(ValueError, match="available: cpu"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here \\(available: cpu\\)"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("pruner,impl", [("magnitude", "auto"), (pruners.get("synflow", iterations=1), "auto"),
                                         (pruners.get("synflow", iterations=5), "sparse"), ("ticket", "auto")])
def test_same_seed_same_network_and_masks_on_cpu_and_cuda(pruner, impl):
    """Deterministic pruners: the same seed gives the same planted network and, in float64, the same masks on
    the CPU and on CUDA (and the same metrics within float64 round-off)."""
    mod = importlib.import_module("plantseek.seek")
    kw = dict(task="circle", depth=3, width=300, pruner=pruner, density=0.01, epochs=1, n_samples=400,
              dtype="float64", progress=False, impl=impl, dense_baseline=False)
    a = mod.seek(device="cpu", **kw)
    b = mod.seek(device="cuda", **kw)
    for (wa, ba), (wb, bb) in zip(a.masks, b.masks):
        assert torch.equal(wa, wb.cpu()) and torch.equal(ba, bb.cpu())
    for name, v in a.metrics.items():
        if name.endswith("time_s") or not isinstance(v, float):
            continue
        assert b.metrics[name] == pytest.approx(v, rel=1e-7, abs=1e-9, nan_ok=True), name
    net_cpu = plantseek.plant("circle", width=50, depth=3, seed=3, device="cpu")
    net_gpu = plantseek.plant("circle", width=50, depth=3, seed=3, device="cuda")
    for wa, wb in zip(net_cpu.weights, net_gpu.weights):
        assert torch.equal(wa, wb.cpu())
