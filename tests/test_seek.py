"""seek / seek_batch: metrics, batching equals one by one, failures stay per run, bad input, CLI.

Slow checks (the paper-scale must-shows) run only with PLANTSEEK_SLOW=1.
"""
from __future__ import annotations

import importlib
import json
import math
import os

import pytest
import torch

import plantseek
from plantseek import pruners
from plantseek import seek as seek_module  # noqa: F401  (the module; plantseek.seek is the function)
from plantseek.pruners import ScorePruner
from plantseek.seek import SeekResult, seek, seek_batch

slow = pytest.mark.skipif(os.environ.get("PLANTSEEK_SLOW") != "1", reason="slow check: set PLANTSEEK_SLOW=1")

FAST = dict(task="circle", depth=3, width=20, n_samples=800, epochs=1, rounds=2, round_epochs=1, progress=False,
            device="cpu")


def _mod():
    return importlib.import_module("plantseek.seek")


def test_metrics_keys_and_values():
    r = seek(pruner="synflow", density=0.2, **FAST)
    assert isinstance(r, SeekResult)
    m = r.metrics
    for key in ["test_loss", "test_accuracy", "ticket_test_loss", "ticket_test_accuracy", "dense_test_loss",
                "dense_test_accuracy", "kept_density", "weight_density", "ticket_density", "requested_density",
                "effective_density", "dead_neurons", "layer_collapse", "recall", "precision", "f1", "jaccard",
                "ticket_survived", "train_time_s", "hiding_median_percentile"]:
        assert key in m, key
    for l in range(3):
        for key in ["recall_layer", "precision_layer", "f1_layer", "jaccard_layer", "layer_density", "ticket_layer_density"]:
            assert f"{key}_{l}" in m
    total = sum(wm.numel() + bm.numel() for wm, bm in r.masks)
    assert m["kept_density"] == round(0.2 * total) / total
    assert m["requested_density"] == 0.2
    assert 0 <= m["effective_density"] <= m["kept_density"]
    assert r.config["pruner"] == "synflow" and r.config["density"] == 0.2
    json.dumps({k: v for k, v in r.config.items()})  # the config is JSON-friendly


def test_functional_recall_in_every_run():
    m = seek(pruner="synflow", density=0.2, **FAST).metrics
    keys = ["functional_recall"] + [f"functional_recall_layer_{l}" for l in range(3)]
    assert all(0.0 <= m[k] <= 1.0 for k in keys), {k: m.get(k) for k in keys}
    # the ticket under strong keeps its planted values: every ticket neuron is computed again
    t = seek(**{**FAST, "task": "relu", "dense_baseline": False}, pruner="ticket", density="ticket",
             protocol="strong").metrics
    assert [t[k] for k in keys] == [1.0] * 4 and t["recall"] == 1.0
    # the ticket's weights without its first layer: positional recall 2/3, but the network computes nothing
    class SkipFirst(ScorePruner):
        name = "skip-first"

        def scores(self, net, data, generator, mask):
            out = [(tw.double(), tb.double()) for tw, tb in net.ticket_mask]
            out[0] = (torch.full_like(out[0][0], -1.0), torch.full_like(out[0][1], -1.0))
            return out

    n_params = plantseek.plant("relu", width=FAST["width"], depth=FAST["depth"], seed=0).n_params
    s = seek(**{**FAST, "task": "relu", "dense_baseline": False}, pruner=SkipFirst(), density=2 / n_params,
             protocol="strong").metrics
    assert s["recall"] == 2 / 3 and s["functional_recall"] == 0.0


def test_regression_reports_rescaled_loss():
    m = seek(**{**FAST, "task": "relu"}, pruner="magnitude", density=0.5).metrics
    assert "test_loss_rescaled" in m and "test_accuracy" not in m
    assert m["test_loss_rescaled"] <= m["test_loss"] + 1e-12


def test_same_seed_same_result_and_seeds_differ():
    a = seek(pruner="random", density=0.3, seed=3, dense_baseline=False, **FAST).metrics
    b = seek(pruner="random", density=0.3, seed=3, dense_baseline=False, **FAST).metrics
    c = seek(pruner="random", density=0.3, seed=4, dense_baseline=False, **FAST).metrics
    drop = ("train_time_s",)
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    assert a["test_loss"] != c["test_loss"]


@pytest.mark.parametrize("protocol", ["singleshot", "multishot", "strong"])
def test_batch_equals_one_by_one_float64(protocol):
    kws = [dict(FAST, pruner=p, density=d, seed=s, protocol=protocol, dtype="float64")
           for p, d, s in [("synflow", 0.2, 0), ("magnitude", 0.3, 1), ("random", 0.1, 0), ("ticket", "ticket", 2)]]
    _mod().clear_caches()
    batched = seek_batch(kws)
    _mod().clear_caches()
    single = [seek(**kw) for kw in kws]
    for rb, rs in zip(batched, single):
        assert isinstance(rb, SeekResult)
        for k, v in rs.metrics.items():
            if k == "train_time_s":
                continue
            if isinstance(v, float) and math.isfinite(v):
                assert rb.metrics[k] == pytest.approx(v, rel=1e-10, abs=1e-12), k
            else:
                assert rb.metrics[k] == v or (v != v and rb.metrics[k] != rb.metrics[k]), k
        for (a, b), (c, d) in zip(rb.masks, rs.masks):
            assert torch.equal(a, c) and torch.equal(b, d)
        for wb, ws in zip(rb.weights, rs.weights):
            assert torch.allclose(wb, ws, rtol=0, atol=1e-10)


def test_strong_edge_popup_searches_together_and_equals_one_by_one():
    kws = [dict(FAST, protocol="strong", dtype="float64", pruner=pruners.get("edge-popup-annealed", epochs=2),
                density=d, seed=s, scope="global") for d, s in [(0.1, 0), (0.2, 1), (0.1, 2)]]
    calls = []
    orig = type(kws[0]["pruner"]).prune_many

    def spy(self, nets, *a, **k):
        calls.append(len(nets))
        return orig(self, nets, *a, **k)

    import unittest.mock
    with unittest.mock.patch.object(type(kws[0]["pruner"]), "prune_many", spy):
        batched = seek_batch(kws)
    assert calls == [3]
    for kw, rb in zip(kws, batched):
        rs = seek(**kw)
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(rb.masks, rs.masks))
        assert rb.metrics["test_loss"] == pytest.approx(rs.metrics["test_loss"], rel=1e-10)


class _Picky(ScorePruner):
    """test pruner that fails for one seed's network"""

    def scores(self, net, data, generator, mask):
        if net.config.get("seed") == 1:
            raise RuntimeError("picky pruner refuses seed 1")
        return [(w.abs(), b.abs()) for w, b in zip(net.weights, net.biases)]


def test_batch_failures_stay_with_their_run():
    kws = [dict(FAST, pruner="magnitude", density=0.2, seed=0),
           dict(FAST, pruner="magnitude", density=1.5, seed=0),  # bad argument
           dict(FAST, pruner=_Picky(), density=0.2, seed=1),  # pruner error
           dict(FAST, pruner="no-such-pruner", density=0.2, seed=0),
           dict(FAST, pruner=_Picky(), density=0.2, seed=2)]
    res = seek_batch(kws)
    assert isinstance(res[0], SeekResult) and isinstance(res[4], SeekResult)
    assert isinstance(res[1], ValueError) and "(0, 1]" in str(res[1])
    assert isinstance(res[2], RuntimeError) and "seed 1" in str(res[2])
    assert isinstance(res[3], ValueError) and "available" in str(res[3])
    alone = seek(**kws[4])
    assert res[4].metrics["test_loss"] == pytest.approx(alone.metrics["test_loss"], rel=1e-5)


def test_divergence_is_a_clear_error_naming_the_epoch():
    with pytest.raises(ValueError, match=r"diverged.*epoch 1 of 2"):
        seek(**{**FAST, "task": "relu", "epochs": 2}, pruner="magnitude", density=0.5, lr=1e30, dense_baseline=False)


@pytest.mark.parametrize("density", [0, -0.1, 1.5, float("nan"), "half", True])
def test_bad_density(density):
    with pytest.raises(ValueError, match="density"):
        seek(pruner="random", density=density, **FAST)


@pytest.mark.parametrize("key", ["prune_bias", "dense_baseline", "progress"])
@pytest.mark.parametrize("value", ["no", "false", 0, 1, None])
def test_booleans_take_only_true_or_false(key, value):
    with pytest.raises(ValueError, match=rf"{key} must be True or False, got {value!r}"):
        _mod().normalize(dict(FAST, pruner="random", **{key: value}))
    res = seek_batch([dict(FAST, pruner="random", density=0.1, **{key: value})])
    assert isinstance(res[0], ValueError) and key in str(res[0])
    assert _mod().normalize(dict(FAST, pruner="random", **{key: False}))[key] is False


@pytest.mark.parametrize("task, noise", [("circle", 1.5), ("circle", float("nan")), ("circle", -0.1),
                                         ("relu", float("inf")), ("relu", float("nan")), ("helix", "0.1")])
def test_bad_noise_names_the_task_and_the_range(task, noise):
    with pytest.raises(ValueError, match=rf"task '{task}': noise must be .*got {noise!r}"):
        seek(pruner="random", density=0.1, **{**FAST, "task": task, "noise": noise})
    assert _mod().normalize(dict(FAST, task="relu", pruner="random", noise=1.5))["noise"] == 1.5


def test_density_ticket_in_any_case_and_one_that_keeps_nothing():
    for spelling in ("Ticket", "TICKET", " ticket "):
        assert _mod().normalize(dict(FAST, pruner="random", density=spelling))["density"] == "ticket"
    with pytest.raises(ValueError, match=r"density must be a number in \(0, 1\] or 'ticket', got '0.1'"):
        _mod().normalize(dict(FAST, pruner="random", density="0.1"))
    for pruner in ("magnitude", "ticket"):  # circle, depth 3, width 20: 564 parameters
        with pytest.raises(ValueError, match=r"density 1e-12 keeps none of the 564 prunable parameters.*\(1/564\)"):
            seek(pruner=pruner, density=1e-12, protocol="multishot", **FAST)


def test_user_pruner_keeping_the_wrong_count_fails_the_run():
    class KeepsAll(pruners.Pruner):
        def prune(self, net, data, density, **kw):
            return [(torch.ones(w.shape, dtype=torch.bool), torch.ones(b.shape, dtype=torch.bool))
                    for w, b in zip(net.weights, net.biases)]

    for protocol in ("singleshot", "strong"):
        with pytest.raises(ValueError, match=r"pruner 'KeepsAll' kept 564 of 564 .*expected exactly 56 "):
            seek(pruner=KeepsAll(), density=0.1, protocol=protocol, dense_baseline=False, **FAST)


def test_cli_density_follows_the_one_rule():
    import argparse

    from plantseek.cli.seek import parse_density

    assert parse_density("Ticket") == "ticket" and parse_density("0.25") == 0.25
    for bad in ("nan", "0", "1.5", "half"):
        with pytest.raises(argparse.ArgumentTypeError, match="density"):
            parse_density(bad)


def test_bad_names_and_devices():
    with pytest.raises(ValueError, match=r"unknown pruner 'nope'; available: .*synflow"):
        seek(pruner="nope", density=0.1, **FAST)
    with pytest.raises(ValueError, match="unknown protocol"):
        seek(pruner="random", density=0.1, **{**FAST, "protocol": "weak"})
    with pytest.raises(ValueError, match="unknown task"):
        seek(pruner="random", density=0.1, **{**FAST, "task": "spiral"})
    with pytest.raises(TypeError, match="wdith"):
        seek(pruner="random", density=0.1, wdith=3, **FAST)
    res = seek_batch([dict(FAST, pruner="random", density=0.1, wdith=3)])
    assert isinstance(res[0], TypeError) and "unknown argument" in str(res[0])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            seek(pruner="random", density=0.1, **{**FAST, "device": "cuda"})


class _WrongShape(ScorePruner):
    def prune(self, net, data, density, **kw):
        return [(torch.ones(3, 3, dtype=torch.bool), torch.ones(3, dtype=torch.bool))] * net.depth


def test_wrong_mask_shapes_from_a_pruner():
    with pytest.raises(ValueError, match="do not match"):
        seek(pruner=_WrongShape(), density=0.1, dense_baseline=False, **FAST)


def test_density_one_and_ticket_and_pruner_objects():
    full = seek(pruner="synflow", density=1.0, dense_baseline=False, **FAST).metrics
    assert full["kept_density"] == 1.0 and full["recall"] == 1.0
    t = seek(pruner="magnitude", density="ticket", dense_baseline=False, **FAST)
    assert t.metrics["kept_density"] == pytest.approx(t.metrics["ticket_density"], abs=1e-3)
    assert t.metrics["requested_density"] == t.metrics["ticket_density"]
    obj = seek(pruner=pruners.get("synflow", iterations=1), density=0.1, dense_baseline=False, **FAST)
    assert obj.config["pruner"] == "synflow" and obj.config["pruner_options"] == {"iterations": 1}
    named = seek(pruner="synflow", pruner_options={"iterations": 1}, density=0.1, dense_baseline=False, **FAST)
    assert named.metrics["test_loss"] == obj.metrics["test_loss"]


def test_dense_baseline_is_cached_and_switchable():
    mod = _mod()
    mod.clear_caches()
    a = seek(pruner="random", density=0.3, **FAST).metrics
    assert len(mod._DENSE) == 1
    b = seek(pruner="magnitude", density=0.1, **FAST).metrics
    assert len(mod._DENSE) == 1 and a["dense_test_loss"] == b["dense_test_loss"]
    c = seek(pruner="magnitude", density=0.1, dense_baseline=False, **FAST).metrics
    assert "dense_test_loss" not in c


def test_signature_defaults_are_the_documented_ones():
    import inspect

    params = inspect.signature(seek).parameters
    assert {k: p.default for k, p in params.items()} == _mod().DEFAULTS
    assert _mod().DEFAULTS["lr"] == 1e-3 and _mod().DEFAULTS["batch_size"] == 32 and _mod().DEFAULTS["epochs"] == 10
    assert _mod().DEFAULTS["rounds"] == 10 and _mod().DEFAULTS["round_epochs"] == 5
    assert _mod().DEFAULTS["n_samples"] == 10_000 and _mod().DEFAULTS["pruning_samples"] == 40


def test_package_exports():
    assert plantseek.seek is seek and plantseek.seek_batch is seek_batch


def test_cli_seek_and_pruners(tmp_path, capsys):
    from plantseek.cli import main

    out = tmp_path / "r.json"
    code = main(["seek", "--task", "relu", "--depth", "3", "--width", "12", "--pruner", "synflow", "--density", "0.2",
                 "--epochs", "1", "--n-samples", "500", "--device", "cpu", "--no-progress", "--no-dense",
                 "--pruner-option", "iterations=1", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "test_loss" in text and "recall_layer" in text and "functional_recall" in text
    data = json.loads(out.read_text())
    assert data["config"]["pruner_options"] == {"iterations": 1} and "test_loss" in data["metrics"]
    assert main(["pruners"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines if line.strip()]
    assert {"edge-popup", "edge-popup-annealed", "synflow", "ticket"} <= set(names)
    assert main(["seek", "--pruner", "nope", "--device", "cpu", "--no-progress"]) == 2
    assert "available" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ slow checks

@slow
def test_slow_multishot_synflow_circle_reaches_the_ticket():
    kws = [dict(task="circle", depth=4, width=100, pruner="synflow", density=0.02, protocol="multishot", seed=s,
                progress=False, device="cpu", dense_baseline=False) for s in range(5)]
    res = seek_batch(kws)
    close = [r.metrics["ticket_test_accuracy"] - r.metrics["test_accuracy"] <= 0.03 for r in res]
    assert sum(close) >= 3, [(r.metrics["test_accuracy"], r.metrics["ticket_test_accuracy"]) for r in res]


@slow
def test_slow_singleshot_ticket_relu_paper_size():
    m = seek(task="relu", depth=4, width=100, pruner="ticket", density="ticket", progress=False, device="cpu",
             dense_baseline=False).metrics
    assert m["test_loss"] <= 1.05 * m["ticket_test_loss"] and m["test_loss"] < 2e-4


def test_repr_is_short_with_the_run_and_its_headline_metrics():
    r = seek(pruner=pruners.get("synflow", iterations=1), density=0.2, **FAST)
    text = repr(r)
    assert len(text) < 300 and "tensor" not in text and str(r) == text
    for part in ("task='circle'", "pruner='synflow[iterations=1]'", "protocol='singleshot'", "seed=0",
                 "density=", "test_accuracy=", "recall=", "functional_recall="):
        assert part in text, (part, text)
    reg = seek(task="relu", depth=3, width=20, n_samples=800, epochs=1, progress=False, device="cpu",
               pruner="random", density=0.5)
    assert "test_loss=" in repr(reg) and "test_accuracy" not in repr(reg)


@pytest.mark.parametrize("protocol", ["singleshot", "multishot"])
def test_a_mixed_group_gives_each_run_what_it_gets_alone_float64(protocol, monkeypatch):
    """One batch of mixed pruners, densities and seeds (multishot: every round in lock-step), density-1 runs
    included, which train once per seed with the dense baseline (`plantseek.train.identical_networks`): every
    run's metrics equal those of the run sought alone (float64)."""
    from plantseek import train as T
    from plantseek.seek import clear_caches

    kws = [dict(FAST, dtype="float64", protocol=protocol, pruner=p, density=d, seed=s)
           for p in ("random", "magnitude") for d in (0.1, 0.5, 1.0) for s in (0, 1)]
    counts = []
    real = T.identical_networks
    monkeypatch.setattr(T, "identical_networks", lambda *a: counts.append(real(*a)) or counts[-1])
    clear_caches()
    batched = seek_batch(kws)
    # singleshot: 12 runs and 2 dense baselines, at density 1 one per seed (4 runs + 2 baselines -> 2);
    # multishot's first round: the 12 runs, all unpruned yet, one per seed
    first = counts[0]
    assert (len(first), len(set(first))) == ((14, 10) if protocol == "singleshot" else (12, 2))
    monkeypatch.setattr(T, "identical_networks", real)
    for kw, b in zip(kws, batched):
        clear_caches()
        alone = seek(**kw)
        for key in ("test_loss", "test_accuracy", "recall", "kept_density", "dense_test_loss"):
            assert b.metrics[key] == pytest.approx(alone.metrics[key], rel=1e-9, abs=1e-12), (kw, key)
