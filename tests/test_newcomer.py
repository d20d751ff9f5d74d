"""A newcomer's tasks, each done once (docs/contributing.md): a new pruner in one file, a new task in one file,
a new metric (its declaration plus its producer), a new kernel (its concept module, its C++ file, its test).

The example files live in tests/newcomer/; each test loads one as a user's module would be loaded and runs it
through `seek`, a sweep file and the registry's contract checks. The registries are restored afterwards.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import plantseek
from plantseek import pruners, tasks

NEWCOMER = Path(__file__).parent / "newcomer"
FAST = dict(depth=3, width=12, epochs=1, n_samples=400, device="cpu", progress=False, dense_baseline=False)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"newcomer_{name}", NEWCOMER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registries(monkeypatch):
    """Registries that forget what a test registered."""
    from plantseek.pruners import base as pruner_base
    from plantseek.tasks import base as task_base

    monkeypatch.setattr(pruner_base, "_REGISTRY", dict(pruner_base._REGISTRY))
    monkeypatch.setattr(task_base, "_TASKS", dict(task_base._TASKS))
    yield
    for name in [m for m in sys.modules if m.startswith("newcomer_")]:
        sys.modules.pop(name)


def _sweep(tmp_path, body: str) -> dict:
    from plantseek.store import ResultStore
    from plantseek.sweep import run_sweep

    path = tmp_path / "s.toml"
    path.write_text("[sweep]\nname = \"newcomer\"\nprotocol = \"singleshot\"\nseed = 0\ndepth = 3\nwidth = 12\n"
                    "epochs = 1\nn_samples = 400\ndense_baseline = false\n" + body)
    report = run_sweep(path, tmp_path / "r.db", progress=False)
    assert report.failed == 0, report
    with ResultStore(tmp_path / "r.db", readonly=True) as store:
        return {r["config"]["pruner"] + "/" + r["config"]["task"]: r for r in store.records()}


def test_a_new_pruner_in_one_file(registries, tmp_path):
    _load("smallest_magnitude")
    assert "smallest-magnitude" in pruners.available()
    res = plantseek.seek(task="relu", pruner="smallest-magnitude", density=0.1, **FAST)
    net = plantseek.plant("relu", width=12, depth=3, seed=0)
    kept = sum(int(wm.sum() + bm.sum()) for wm, bm in res.masks)
    assert kept == pruners.kept_count(0.1, net.n_params)  # the framework's exact count
    # it keeps the smallest magnitudes: every kept weight is no larger than every pruned one, per layer of a
    # global scope (checked over all parameters)
    values = torch.cat([torch.cat([w.abs().flatten(), b.abs().flatten()]) for w, b in zip(net.weights, net.biases)])
    keep = torch.cat([torch.cat([wm.flatten(), bm.flatten()]) for wm, bm in res.masks]).cpu()
    assert values[keep].max() <= values[~keep].min()
    assert res["recall"] < 1.0  # it is a bad pruner: it loses the (large) ticket weights
    rows = _sweep(tmp_path, 'task = "relu"\npruners = ["smallest-magnitude", "magnitude"]\ndensity = 0.1\n')
    assert set(rows) == {"smallest-magnitude/relu", "magnitude/relu"}


def test_a_new_task_in_one_file(registries, tmp_path):
    _load("absolute")
    task = tasks.get("absolute")
    ticket = task.ticket(3)
    data = task.data(n=400, noise=0.0, seed=0)
    assert task.evaluate(ticket(data.x_test), data.y_test)["loss"] < 1e-12  # the ticket computes |x| exactly
    net = plantseek.plant("absolute", width=12, depth=3, seed=0)
    x = data.x_test.to(net.weights[0].dtype)
    planted = net.forward(x, net.ticket_mask) / net.output_scale
    assert torch.allclose(planted, ticket(data.x_test).to(planted.dtype), atol=1e-5)
    res = plantseek.seek(task="absolute", pruner="ticket", density="ticket", **FAST)
    assert res["recall"] == 1.0 and res["precision"] == 1.0
    rows = _sweep(tmp_path, 'task = "absolute"\npruners = ["ticket", "random"]\ndensity = 0.5\n')
    assert set(rows) == {"ticket/absolute", "random/absolute"}
    assert rows["ticket/absolute"]["metrics"]["recall"] == 1.0


def test_a_new_metric_is_its_declaration_plus_its_producer(tmp_path, capsys):
    """`kept_params`, declared in metric_schema.py and produced by metrics.densities (through measure): every run
    reports it, the exact count agrees with it, the CLI lists it and the store exports it."""
    from plantseek import metric_schema
    from plantseek.cli import main

    m = metric_schema.get("kept_params")
    assert m.kind == "count" and m.doc
    res = plantseek.seek(task="relu", pruner="magnitude", density=0.1, **FAST)
    net = plantseek.plant("relu", width=12, depth=3, seed=0)
    assert res["kept_params"] == pruners.kept_count(0.1, net.n_params) == sum(
        int(wm.sum() + bm.sum()) for wm, bm in res.masks)
    assert list(res.metrics).index("kept_params") == list(res.metrics).index("kept_density") + 1  # schema order
    assert main(["metrics"]) == 0
    assert "kept_params" in capsys.readouterr().out
    rows = _sweep(tmp_path, 'task = "relu"\npruner = "random"\ndensity = 0.5\n')
    assert rows["random/relu"]["metrics"]["kept_params"] == pruners.kept_count(0.5, net.n_params)


def test_a_new_kernel_has_its_module_binding_and_test():
    """The kernel recipe (docs/native.md, "Adding a kernel") holds for every concept: tests/kernels/test_layout.py
    checks the parts; here, one concept end to end: its dispatcher equals its reference."""
    from plantseek import kernels
    from plantseek.kernels import masks as mask_kernels

    assert "masks" in kernels.CONCEPTS
    assert mask_kernels.KERNELS["overlap_counts"] == "overlap_counts_reference"
    root = Path(__file__).resolve().parents[1]
    assert (root / "csrc" / "bindings" / "masks.cpp").exists() and (root / "tests" / "kernels" / "test_masks.py").exists()
    g = torch.Generator().manual_seed(0)
    found = [[(torch.rand(4, 3, generator=g) < 0.5, torch.rand(4, generator=g) < 0.5)] for _ in range(3)]
    ticket = [(torch.rand(4, 3, generator=g) < 0.5, torch.rand(4, generator=g) < 0.5)]
    got = mask_kernels.overlap_counts(found, ticket)
    want = mask_kernels.overlap_counts_reference(found, ticket)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
