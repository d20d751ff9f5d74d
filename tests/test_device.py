"""Every tensor a run creates after the CPU drawing lives on the run's device (one run per protocol).

A TorchDispatchMode records the device of every tensor every ATen op returns (factories included) while a
run goes through `seek`. Drawing data and planting happen on the CPU in float64 by design (a seed means the
same network everywhere), and so does the ticket's own evaluation (a float64 CPU object) and the bit-packed
mask bookkeeping of the recovery metrics; those phases are paused. On a machine with CUDA the run goes to
"cuda" and the same check then catches any tensor left on the CPU; here it runs on the CPU.
"""
from __future__ import annotations

import collections
import sys

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


@pytest.mark.parametrize("protocol,pruner", [
    ("singleshot", "synflow"),
    ("multishot", "magnitude"),
    ("strong", pruners.get("edge-popup-annealed", epochs=1, batch_size=64)),
])
def test_everything_is_created_on_the_run_device(monkeypatch, protocol, pruner):
    mod = sys.modules["plantseek.seek"]
    mod.clear_caches()
    rec = DeviceRecorder()
    for name in ("_planted", "_data", "_ticket_metrics", "mask_metrics"):
        monkeypatch.setattr(mod, name, _pausing(rec, getattr(mod, name)))
    with rec:
        r = mod.seek(task="circle", depth=3, width=20, pruner=pruner, density=0.2, protocol=protocol, epochs=1,
                     rounds=2, round_epochs=1, n_samples=400, device=DEVICE, progress=False)
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
