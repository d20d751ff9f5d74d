"""The during-training protocols (`plantseek.during_training`): gradual pruning on Zhu & Gupta's schedule and
dynamic sparse training (SET, RigL), through `plantseek.seek` and `seek_batch`."""
from __future__ import annotations

import math

import pytest
import torch

import plantseek
from plantseek import train as T

SMALL = dict(task="circle", depth=3, width=24, epochs=3, n_samples=600, seed=0, dtype="float64", progress=False,
             update_every=10)


def _seek(**kw):
    return plantseek.seek(**{**SMALL, **kw})


def _prunable_kept(masks, prune_bias=True):
    return sum(int(wm.sum()) + (int(bm.sum()) if prune_bias else 0) for wm, bm in masks)


class _Recorder:
    """Wraps `plantseek.train.train` to record the masks every update returns."""

    def __init__(self, monkeypatch):
        self.masks: list = []
        self.before: list = []  # the masks each update was given
        real = T.train

        def wrapped(*args, schedule=None, **kw):
            if schedule is not None:
                inner = schedule.update

                def update(step, weights, biases, masks, alive, dense_grads):
                    new = inner(step, weights, biases, masks, alive, dense_grads)
                    self.masks.append((step, [(wm.clone(), bm.clone()) for wm, bm in new]))
                    self.before.append([(wm.clone(), bm.clone()) for wm, bm in masks])
                    return new
                schedule = T.MaskSchedule(steps=schedule.steps, update=update)
            return real(*args, schedule=schedule, **kw)

        monkeypatch.setattr(T, "train", wrapped)


@pytest.mark.parametrize("grow", ["random", "gradient"])
@pytest.mark.parametrize("scope,prune_bias", [("global", True), ("layer", True), ("global", False)])
def test_dynamic_keeps_exactly_the_target_count_after_every_update(monkeypatch, grow, scope, prune_bias):
    rec = _Recorder(monkeypatch)
    res = _seek(protocol="dynamic", pruner="random", density=0.1, grow=grow, scope=scope, prune_bias=prune_bias)
    assert res.metrics["mask_updates"] == len(rec.masks) == 3  # steps 10, 20, 30 of 51 (updates end at 3/4)
    first = rec.masks[0][1]
    for step, stacked in rec.masks:
        mask = [(wm[0], bm[0]) for wm, bm in stacked]
        if scope == "layer":  # weights and biases of each layer together
            assert [int(wm.sum()) + int(bm.sum()) for wm, bm in mask] == \
                [int(wm[0].sum()) + int(bm[0].sum()) for wm, bm in first]
        assert _prunable_kept(mask, prune_bias) == _prunable_kept([(w[0], b[0]) for w, b in first], prune_bias)
        if not prune_bias:
            assert all(bool(bm.all()) for _, bm in mask)
    n = sum(w.numel() + (b.numel() if prune_bias else 0) for w, b in zip(res.weights, res.biases))
    assert _prunable_kept(res.masks, prune_bias) == round(0.1 * n)
    # the masks moved (something was dropped and regrown) and nothing pruned drifted from zero
    assert any(not torch.equal(la[0], lb[0]) for a, (_, b) in zip(rec.before, rec.masks) for la, lb in zip(a, b))
    for w, b, (wm, bm) in zip(res.weights, res.biases, res.masks):
        assert not bool(w[~wm].any()) and not bool(b[~bm].any())
    curve = res.metrics["recall_curve"]
    assert len(curve) == len(res.metrics["curve_steps"]) == res.metrics["mask_updates"] + 1
    assert curve[-1] == pytest.approx(res.metrics["recall"])
    assert res.metrics["curve_steps"][0] == 0 and res.metrics["curve_steps"] == sorted(res.metrics["curve_steps"])


def test_gradual_masks_are_nested_and_reach_the_density(monkeypatch):
    rec = _Recorder(monkeypatch)
    res = _seek(protocol="gradual", pruner="magnitude", density=0.05)
    kept = [_prunable_kept([(wm[0], bm[0]) for wm, bm in m]) for _, m in rec.masks]
    n = sum(w.numel() + b.numel() for w, b in zip(res.weights, res.biases))
    assert kept == sorted(kept, reverse=True) and kept[0] < n and len(set(kept)) > 1
    for (_, a), (_, b) in zip(rec.masks, rec.masks[1:]):
        for (aw, ab), (bw, bb) in zip(a, b):
            assert not bool((bw & ~aw).any()) and not bool((bb & ~ab).any())  # pruned stays pruned
    assert _prunable_kept(res.masks) == round(0.05 * n) and res.metrics["kept_density"] == pytest.approx(0.05, abs=1e-3)
    assert res.metrics["regrown_into_ticket"] == 0  # nothing ever grows under gradual
    for w, (wm, _) in zip(res.weights, res.masks):
        assert not bool(w[~wm].any())


def test_gradual_schedule_is_zhu_gupta():
    from plantseek import mask_updates as mu

    # halfway through the pruning window, the sparsity has covered 1 - 1/8 of its way
    d = mu.zhu_gupta_density(50, final=0.1, initial=1.0, begin=0, end=100)
    assert 1 - d == pytest.approx(0.9 + (0.0 - 0.9) * 0.5 ** 3)


def test_rigl_grows_where_the_dense_gradient_is_largest():
    """The grow step's gradient equals an independent autograd computation of the dense gradient at the pruned
    positions (float64), and growth picks its largest magnitudes among the inactive."""
    torch.manual_seed(0)
    M, N = 2, 20
    shapes = [(5, 2), (3, 5)]
    W = [torch.randn((M,) + s, dtype=torch.float64) for s in shapes]
    B = [torch.randn(M, s[0], dtype=torch.float64) for s in shapes]
    masks = [(torch.rand(w.shape) < 0.5, torch.ones(b.shape, dtype=torch.bool)) for w, b in zip(W, B)]
    W = [w * wm for w, (wm, _) in zip(W, masks)]
    x = torch.randn(M, N, 2, dtype=torch.float64)
    y = torch.randn(M, N, 3, dtype=torch.float64)
    grads = T._dense_grads(W, B, (x, y), lambda out, tgt: ((out - tgt) ** 2).mean(dim=(1, 2)), [True, True])
    for k in range(M):  # independently: a plain torch.nn network of run k, dense, at the same weights
        net = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).double()
        with torch.no_grad():
            for lin, w, b in zip((net[0], net[2]), W, B):
                lin.weight.copy_(w[k])
                lin.bias.copy_(b[k])
        torch.nn.functional.mse_loss(net(x[k]), y[k]).backward()
        for (gw, gb), lin, (wm, _) in zip(grads, (net[0], net[2]), masks):
            assert torch.allclose(gw[k], lin.weight.grad, rtol=1e-12, atol=1e-14)
            assert bool(gw[k][~wm[k]].abs().sum() > 0)  # pruned positions have a gradient too
    from plantseek import mask_updates as mu

    mask0 = [(wm[0], bm[0]) for wm, bm in masks]
    new, info = mu.drop_and_grow([w[0] for w in W], [b[0] for b in B], mask0, 0.3, scope="global",
                                 prune_bias=False, grow="gradient", grads=[(gw[0], gb[0]) for gw, gb in grads])
    grown = torch.cat([g.reshape(-1) for g, _ in info["grown_mask"]])
    kept_after_drop = torch.cat([(nw & ~g).reshape(-1) for (nw, _), (g, _) in zip(new, info["grown_mask"])])
    score = torch.cat([gw[0].abs().reshape(-1) for gw, _ in grads])
    assert info["grown"] == int(grown.sum()) > 0
    # every grown position scores at least as high as every candidate (not kept after the drop) left out
    left_out = ~kept_after_drop & ~grown
    assert float(score[grown].min()) >= float(score[left_out].max())


@pytest.mark.parametrize("options,match", [
    ({"update_every": -5}, "update_every"),
    ({"update_every": 0}, "update_every"),
    ({"drop_fraction": 1.0}, r"drop_fraction must lie in \(0, 1\)"),
    ({"drop_fraction": 0.0}, "drop_fraction"),
    ({"update_end": 1.5}, r"update_end must be a fraction .* \[0, 1\]"),
    ({"update_begin": 0.8, "update_end": 0.5}, "update_begin .* must come before update_end"),
    ({"update_every": 100000}, "no mask update fits: update_every=100000 steps"),
    ({"grow": "momentum"}, "grow 'momentum'"),
])
def test_bad_options_are_refused_before_training(monkeypatch, options, match):
    def no_training(*a, **kw):
        raise AssertionError("training started")

    monkeypatch.setattr(T, "train", no_training)
    with pytest.raises(ValueError, match=match):
        _seek(protocol="dynamic", pruner="random", density=0.1, **options)


@pytest.mark.parametrize("protocol", ["gradual", "dynamic"])
def test_conv_tasks_refuse_the_during_training_protocols(monkeypatch, protocol):
    def no_training(*a, **kw):
        raise AssertionError("training started")

    monkeypatch.setattr(T, "train", no_training)
    with pytest.raises(ValueError, match=f"cannot run protocol '{protocol}'.*changes the mask while training"):
        plantseek.seek(task="digits", protocol=protocol, pruner="random", density=0.1, progress=False)


def test_the_oracle_under_dynamic_starts_at_the_ticket():
    res = _seek(protocol="dynamic", pruner="ticket", density="ticket", grow="random")
    assert res.metrics["recall_curve"][0] == 1.0
    assert math.isfinite(res.metrics["test_accuracy"])


def test_batched_equals_one_by_one_float64():
    kws = [dict(SMALL, protocol=p, pruner=pr, density=0.1, **({"grow": g} if g else {}))
           for p, pr, g in (("dynamic", "random", "gradient"), ("dynamic", "random", "random"),
                            ("gradual", "magnitude", None))]
    batched = plantseek.seek_batch(kws)
    for kw, b in zip(kws, batched):
        alone = plantseek.seek(**kw)
        for key in ("test_loss", "recall", "kept_density", "recall_curve", "regrown_into_ticket"):
            assert b.metrics[key] == pytest.approx(alone.metrics[key], rel=1e-9), key


@pytest.mark.parametrize("protocol", ["gradual", "dynamic"])
def test_the_oracles_mask_stays_the_ticket(protocol):
    res = _seek(protocol=protocol, pruner="ticket", density="ticket")
    assert res.metrics["recall"] == 1.0 and res.metrics["precision"] == 1.0
    assert res.metrics["mask_updates"] == 0 and res.metrics["recall_curve"] == [1.0]


@pytest.mark.parametrize("protocol,options", [
    ("gradual", {"grow": "random"}), ("gradual", {"drop_fraction": 0.5}), ("dynamic", {"gradual_initial": 0.5}),
    ("singleshot", {"update_every": 50}), ("multishot", {"update_end": 0.5}), ("strong", {"grow": "random"}),
])
def test_an_option_of_another_protocol_is_refused(protocol, options):
    key, value = next(iter(options.items()))
    with pytest.raises(ValueError, match=f"option {key}={value!r} does not apply to protocol '{protocol}'"):
        _seek(**{"protocol": protocol, "pruner": "random", "density": 0.1, "update_every": 100, **options})


def test_random_erk_gives_rigls_layer_budgets_and_dynamic_keeps_them(monkeypatch):
    from plantseek import mask_updates as mu

    rec = _Recorder(monkeypatch)
    res = _seek(protocol="dynamic", pruner="random-erk", density=0.1, grow="gradient")
    shapes = [tuple(w.shape) for w in res.weights]
    budgets = [cw + cb for cw, cb in mu.layer_budgets(shapes, 0.1, kind="erk")]
    per_layer = [int(wm.sum()) + int(bm.sum()) for wm, bm in res.masks]
    assert per_layer == budgets
    densities = [c / (w.numel() + b.numel()) for c, w, b in zip(per_layer, res.weights, res.biases)]
    assert densities[0] > densities[1]  # the small input layer is denser (ERK), not uniform
    for _, stacked in rec.masks:  # every update kept the layer budgets
        assert [int(wm[0].sum()) + int(bm[0].sum()) for wm, bm in stacked] == budgets


def test_gradual_trains_dense_until_the_crossover_and_sparse_after(monkeypatch):
    """Each segment is planned for its masks (`plantseek.impl_choice`): a host too large for the native stack at
    any density starts on the dense path and moves to the sparse one once pruning passes the crossover."""
    seen = []
    real = T.plan_training

    def recording(masks, impl, dtype):
        plan = real(masks, impl, dtype)
        kept = sum(int(wm.sum()) for wm, _ in masks) / sum(wm.numel() for wm, _ in masks)
        seen.append((kept, {i for block in plan.impls for i in block}))
        return plan

    monkeypatch.setattr(T, "plan_training", recording)
    res = _seek(protocol="gradual", pruner="magnitude", density=0.05, width=400, epochs=2, update_every=5,
                dense_baseline=False)
    assert res.metrics["mask_updates"] == len(seen) - 1 > 3
    assert seen[0][0] == 1.0 and "dense" in seen[0][1] and "sparse" not in seen[0][1]
    assert "sparse" in seen[-1][1] and "dense" not in seen[-1][1] and seen[-1][0] < 0.1
