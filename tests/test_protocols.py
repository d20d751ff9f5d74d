"""Protocols: the ticket oracle through every protocol, the fitted output scales, multishot nesting."""
from __future__ import annotations

import math

import pytest
import torch

from plantseek import protocols, pruners
from plantseek.pruners import ScorePruner
from plantseek.seek import seek

SMALL = dict(depth=4, n_samples=1200, epochs=1, rounds=2, round_epochs=1, progress=False, device="cpu",
             dense_baseline=False)
WIDTH = {"relu": 20, "circle": 20, "helix": 32}


def test_registry():
    assert {"singleshot", "multishot", "strong"} <= set(protocols.available())
    with pytest.raises(ValueError, match="available: .*multishot.*singleshot.*strong"):
        protocols.get("lottery")
    assert all(protocols.descriptions().values())


@pytest.mark.parametrize("protocol", ["singleshot", "multishot", "strong"])
@pytest.mark.parametrize("task", ["relu", "circle", "helix"])
def test_ticket_pruner_recall_one(task, protocol):
    r = seek(task=task, width=WIDTH[task], pruner="ticket", density="ticket", protocol=protocol, **SMALL)
    m = r.metrics
    assert m["recall"] == 1.0 and m["precision"] == 1.0 and m["ticket_survived"] is True
    assert all(m[f"recall_layer_{l}"] == 1.0 for l in range(4))
    assert m["kept_density"] == pytest.approx(m["ticket_density"], rel=0, abs=1e-15)
    assert all(m[f"layer_density_{l}"] == m[f"ticket_layer_density_{l}"] for l in range(4))


@pytest.mark.parametrize("task", ["relu", "circle", "helix"])
def test_strong_ticket_is_exact(task):
    m = seek(task=task, width=WIDTH[task], pruner="ticket", density="ticket", protocol="strong", dtype="float64",
             **{**SMALL, "n_samples": 3000}).metrics
    # planted-scale reading: the planted ticket computes output_scale x ticket exactly
    assert m["test_loss_planted_scale"] == pytest.approx(m["ticket_test_loss"], rel=1e-9, abs=0)
    if task == "circle":
        # accuracy does not depend on a positive scale: exactly the ticket's
        assert m["test_accuracy"] == m["ticket_test_accuracy"]
        assert m["output_scale_fitted"] > 0
    elif task == "relu":
        # fitted on training data: within 1% of the ticket's own test loss
        assert m["test_loss"] == pytest.approx(m["ticket_test_loss"], rel=0.01)
        assert m["output_scale_fitted"] == pytest.approx(m["output_scale"], rel=0.01)
        assert m["test_loss_rescaled"] <= m["ticket_test_loss"] * 1.0001
    else:
        # helix: the ticket's interpolants of u cos u and u sin u come out ~3.5% too small (measured), so the
        # per-output fitted factors *improve* on the ticket (about 1.4e-4 against 3.1e-4); never worse
        assert m["test_loss"] <= m["ticket_test_loss"]
        assert m["output_scale_fitted"] == pytest.approx(m["output_scale"], rel=0.05)


def test_singleshot_ticket_trains_to_the_noise_floor():
    m = seek(task="relu", depth=3, width=20, pruner="ticket", density="ticket", protocol="singleshot",
             epochs=10, n_samples=10000, progress=False, device="cpu", dense_baseline=False).metrics
    assert m["ticket_test_loss"] < 1.5e-4
    # the criterion for regression (1.2x); measured 1.08x here with the default rescale
    assert m["test_loss"] <= 1.2 * m["ticket_test_loss"]


def test_fit_regression_scale_closed_form():
    g = torch.Generator().manual_seed(0)
    o = torch.randn(50, 3, generator=g, dtype=torch.float64)
    c_true = torch.tensor([2.0, -0.5, 0.0], dtype=torch.float64)
    y = o * c_true
    y[:, 2] = torch.randn(50, generator=g, dtype=torch.float64)
    c = protocols.fit_regression_scale(o, y)
    assert c[0] == pytest.approx(2.0, abs=1e-12)
    assert c[1] == pytest.approx(0.5, abs=1e-12)  # positive: the ratio of RMS values, never a sign flip
    assert c[2] == pytest.approx(float((o[:, 2] @ y[:, 2]) / (o[:, 2] @ o[:, 2])), abs=1e-12)
    zero = protocols.fit_regression_scale(torch.zeros(5, 1, dtype=torch.float64), torch.ones(5, 1, dtype=torch.float64))
    assert zero.tolist() == [0.0]


def test_fit_temperature_minimises_cross_entropy():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(400, 4, generator=g, dtype=torch.float64)
    labels = torch.where(torch.rand(400, generator=g) < 0.7, z.argmax(1), torch.randint(0, 4, (400,), generator=g))
    t = protocols.fit_temperature(z, labels)
    ce = lambda s: float(torch.nn.functional.cross_entropy(z * s, labels))  # noqa: E731
    grid = torch.linspace(0.01, 10, 400, dtype=torch.float64)
    logp = torch.log_softmax(z.unsqueeze(0) * grid.view(-1, 1, 1), dim=2)
    best = float((-logp.gather(2, labels.view(1, -1, 1).expand(len(grid), -1, 1))).mean(dim=(1, 2)).min())
    assert ce(t) <= best + 1e-9
    assert ce(t) <= min(ce(t * 1.001), ce(t / 1.001))
    # logits that carry no information: t = 0
    assert protocols.fit_temperature(torch.zeros(10, 3, dtype=torch.float64), torch.zeros(10, dtype=torch.long)) == 0.0


class _Spy(ScorePruner):
    """test pruner recording the masks it is asked to prune within"""

    calls: list = []

    def scores(self, net, data, generator, mask):
        _Spy.calls.append(([(wm.clone(), bm.clone()) for wm, bm in mask], [w.clone() for w in net.weights]))
        return [(w.abs(), b.abs()) for w, b in zip(net.weights, net.biases)]


def test_multishot_nested_masks_rewinds_and_schedule(monkeypatch):
    monkeypatch.setattr(_Spy, "calls", [])
    pruner = _Spy()
    r = seek(task="circle", depth=3, width=20, pruner=pruner, density=0.1, protocol="multishot", rounds=3,
             round_epochs=1, epochs=1, n_samples=600, progress=False, device="cpu", dense_baseline=False)
    calls = _Spy.calls
    assert len(calls) == 3
    total = sum(wm.numel() + bm.numel() for wm, bm in calls[0][0])
    for rnd, (mask, weights) in enumerate(calls, start=1):
        kept = sum(int(wm.sum()) + int(bm.sum()) for wm, bm in mask)
        expected = total if rnd == 1 else round(0.1 ** ((rnd - 1) / 3) * total)
        assert kept == expected
        if rnd > 1:  # nested: the current mask lies within the previous one
            prev = calls[rnd - 2][0]
            assert all(bool((wm & ~pw).sum() == 0) for (wm, _), (pw, _) in zip(mask, prev))
    # the pruner scored trained weights (not the planted ones)
    from plantseek.seek import _planted, normalize
    net = _planted(normalize(dict(task="circle", depth=3, width=20, pruner="random", device="cpu")))
    assert not torch.equal(calls[0][1][1], net.weights[1])
    assert r.metrics["kept_density"] == pytest.approx(round(0.1 * total) / total)
    kept_final = sum(int(wm.sum()) + int(bm.sum()) for wm, bm in r.masks)
    assert all(bool((wm & ~pw).sum() == 0) for (wm, _), (pw, _) in zip(r.masks, calls[-1][0]))
    assert kept_final == round(0.1 * total)


def test_strong_keeps_planted_values():
    r = seek(task="relu", depth=3, width=12, pruner="magnitude", density=0.2, protocol="strong", n_samples=500,
             progress=False, device="cpu", dense_baseline=False, dtype="float64")
    from plantseek.seek import _planted, normalize
    net = _planted(normalize(dict(task="relu", depth=3, width=12, pruner="random", device="cpu")))
    for (wm, bm), w, b, w0, b0 in zip(r.masks, r.weights, r.biases, net.weights, net.biases):
        assert torch.equal(w, w0 * wm) and torch.equal(b, b0 * bm)
    assert math.isfinite(r.metrics["test_loss"]) and "test_loss_planted_scale" in r.metrics


# ------------------------------------------------------------------------------------------------ mask checks

def _run(pruner, scope=None, prune_bias=True):
    import plantseek
    from plantseek import tasks

    net = plantseek.plant("circle", width=20, depth=3, seed=0)  # 2*20+20 + 20*20+20 + 20*4+4 = 564 parameters
    return protocols.Run(label="test", net=net, data=tasks.get("circle").data(200, 0.01, 0), pruner=pruner,
                         scope=scope, prune_bias=prune_bias)


class _Fixed(pruners.Pruner):
    """test pruner answering with `make(net, data, density, **kw)`, whatever it is asked"""

    def __init__(self, make):
        self.options, self.make = {}, make

    def prune(self, net, data, density, *, scope="global", prune_bias=True, generator=None, mask=None):
        return self.make(net, data, density, scope=scope, prune_bias=prune_bias)


def _all_true(net, data, density, **kw):
    return [(torch.ones(w.shape, dtype=torch.bool), torch.ones(b.shape, dtype=torch.bool))
            for w, b in zip(net.weights, net.biases)]


def test_a_mask_with_the_wrong_count_is_refused_naming_pruner_and_counts():
    with pytest.raises(ValueError, match=r"pruner '_Fixed' kept 564 of 564 .* density 0\.1, expected exactly 56 "):
        protocols.prune_run(_run(_Fixed(_all_true)), 0.1)
    exempt = type("Loose", (_Fixed,), {"exact": False})(_all_true)  # a pruner may opt out: what it keeps is reported
    assert sum(int(w.sum()) + int(b.sum()) for w, b in protocols.prune_run(_run(exempt), 0.1)) == 564
    ticket = protocols.prune_run(_run(pruners.get("ticket")), 0.5)  # the oracle keeps the ticket
    assert all(torch.equal(a, ta) and torch.equal(b, tb) for (a, b), (ta, tb) in zip(ticket, _run(None).net.ticket_mask))


def test_count_is_checked_per_layer_under_scope_layer():
    def global_mask(net, data, density, **kw):
        return pruners.get("magnitude").prune(net, data, density, scope="global")

    with pytest.raises(ValueError, match=r"pruner '_Fixed' kept \d+ of \d+ prunable parameters in layer \d+ .*"
                                         r"expected exactly \d+ .*scope='layer'"):
        protocols.prune_run(_run(_Fixed(global_mask), scope="layer"), 0.1)
    assert protocols.prune_run(_run(pruners.get("magnitude"), scope="layer"), 0.1)  # the exact one passes


def test_prune_bias_false_keeps_every_bias():
    def drops_a_bias(net, data, density, **kw):
        m = pruners.get("magnitude").prune(net, data, density, prune_bias=False)
        m[1][1][0] = False  # same weight count, one bias pruned
        return m

    with pytest.raises(ValueError, match=r"pruner '_Fixed' pruned biases of layer 1 although prune_bias=False"):
        protocols.prune_run(_run(_Fixed(drops_a_bias), prune_bias=False), 0.2)
    with pytest.raises(ValueError, match=r"kept 520 of 520 .*expected exactly 104 .*prune_bias=False"):
        protocols.prune_run(_run(_Fixed(_all_true), prune_bias=False), 0.2)


def test_nested_masks_are_counted_at_the_density_of_the_round():
    run = _run(pruners.get("magnitude"))
    previous = pruners.get("random").prune(run.net, run.data, 0.5)
    assert protocols.prune_run(run, 0.3, previous)  # nested and exact

    def ignores_the_mask(net, data, density, **kw):
        return pruners.get("magnitude").prune(net, data, density)

    with pytest.raises(ValueError, match=r"kept \d+ of 564 prunable parameters \(within the previous mask\) at "
                                         r"density 0\.3, expected exactly 169 "):
        protocols.prune_run(_run(_Fixed(ignores_the_mask)), 0.3, previous)

    def always_final(net, data, density, **kw):  # prunes to the final density in every round
        return pruners.get("magnitude").prune(net, data, 0.1, mask=kw.get("mask"))

    with pytest.raises(ValueError, match=r"pruner '_Fixed' kept 56 of 564 .* density 0\.316228, expected exactly 178 "):
        seek(task="circle", depth=3, width=20, pruner=_Fixed(always_final), density=0.1, protocol="multishot",
             rounds=2, round_epochs=1, epochs=1, n_samples=400, progress=False, device="cpu", dense_baseline=False)


def test_masks_on_another_device_are_refused():
    def on_meta(net, data, density, **kw):
        return [(torch.ones(w.shape, dtype=torch.bool, device="meta"), torch.ones(b.shape, dtype=torch.bool, device="meta"))
                for w, b in zip(net.weights, net.biases)]

    with pytest.raises(ValueError, match=r"pruner '_Fixed' returned its layer 0 mask on meta, the network is on cpu"):
        protocols.prune_run(_run(_Fixed(on_meta)), 1.0)


def test_a_density_that_keeps_nothing_is_refused_before_pruning():
    calls = []
    spy = _Fixed(lambda *a, **kw: calls.append(1))
    with pytest.raises(ValueError, match=r"density 1e-12 keeps none of the 564 prunable parameters.*smallest density that keeps one is 0\.00177 \(1/564\)"):
        protocols.prune_run(_run(spy), 1e-12)
    with pytest.raises(ValueError, match=r"keeps none of the 520 .*\(1/520\)"):
        protocols.prune_run(_run(spy, prune_bias=False), 1e-12)
    with pytest.raises(ValueError, match=r"no prunable parameter in any layer .*scope='layer'.*\(1/420\)"):
        protocols.prune_run(_run(spy, scope="layer"), 0.001)
    assert not calls
