"""edge-popup and edge-popup-annealed: registration, exact counts, bias scores learn, scale-free loss, schedule."""
from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import plantseek
from plantseek import pruners, tasks
from plantseek.pruners import edge_popup

slow = pytest.mark.skipif(os.environ.get("PLANTSEEK_SLOW") != "1", reason="slow check: set PLANTSEEK_SLOW=1")

QUICK = dict(epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def relu_setup():
    net = plantseek.plant("relu", width=16, depth=3, seed=0)
    data = tasks.get("relu").data(600, 0.01, 0)
    return net, data


def _count(mask, bias=True):
    return sum(int(wm.sum()) + (int(bm.sum()) if bias else 0) for wm, bm in mask)


def test_registered_with_docstrings():
    assert {"edge-popup", "edge-popup-annealed"} <= set(pruners.available())
    d = pruners.descriptions()
    assert "Ramanujan" in d["edge-popup"] and "density^(e/E)" in d["edge-popup-annealed"]
    with pytest.raises(ValueError, match="edge-popup"):
        pruners.get("edge-popup", lr=-1)
    with pytest.raises(ValueError, match="score_init"):
        pruners.get("edge-popup", score_init="zeros")


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("name", ["edge-popup", "edge-popup-annealed"])
def test_exact_counts(relu_setup, name, scope):
    net, data = relu_setup
    p = pruners.get(name, **QUICK)
    mask = p.prune(net, data, 0.1, scope=scope, generator=torch.Generator().manual_seed(0))
    if scope == "global":
        total = sum(wm.numel() + bm.numel() for wm, bm in mask)
        assert _count(mask) == round(0.1 * total)
    else:
        for wm, bm in mask:
            assert int(wm.sum()) + int(bm.sum()) == round(0.1 * (wm.numel() + bm.numel()))


def test_prune_bias_false_keeps_every_bias_and_density_one_keeps_all(relu_setup):
    net, data = relu_setup
    p = pruners.get("edge-popup", **QUICK)
    mask = p.prune(net, data, 0.2, prune_bias=False)
    assert all(bool(bm.all()) for _, bm in mask)
    full = p.prune(net, data, 1.0)
    assert all(bool(wm.all()) and bool(bm.all()) for wm, bm in full)


def test_nested_within_a_given_mask(relu_setup):
    net, data = relu_setup
    p = pruners.get("edge-popup", **QUICK)
    outer = p.prune(net, data, 0.5, scope="global")
    inner = p.prune(net, data, 0.2, scope="global", mask=outer)
    assert all(bool((wm & ~ow).sum() == 0) and bool((bm & ~ob).sum() == 0)
               for (wm, bm), (ow, ob) in zip(inner, outer))
    with pytest.raises(ValueError, match="never come back"):
        p.prune(net, data, 0.8, scope="global", mask=outer)


def test_bias_scores_start_nonzero_and_learn(relu_setup, monkeypatch):
    net, data = relu_setup
    captured = {}
    orig_init = edge_popup.EdgePopupPruner._init_scores
    orig_select = edge_popup.selection.select

    def spy_init(self, net_, gen):
        scores = orig_init(self, net_, gen)
        captured["initial"] = [(w.clone(), b.clone()) for w, b in scores]
        return scores

    def spy_select(scores, *a, **k):
        captured["final"] = [(w.clone(), b.clone()) for w, b in scores]  # |final scores|
        return orig_select(scores, *a, **k)

    monkeypatch.setattr(edge_popup.EdgePopupPruner, "_init_scores", spy_init)
    monkeypatch.setattr(edge_popup.selection, "select", spy_select)
    pruners.get("edge-popup", **QUICK).prune(net, data, 0.3, scope="global")
    for (w0, b0), (w1, b1) in zip(captured["initial"], captured["final"]):
        assert bool((b0 != 0).all()) and bool((w0 != 0).all())
        assert not torch.equal(b0.abs(), b1)  # bias scores moved
        assert not torch.equal(w0.abs(), w1)


@pytest.mark.parametrize("task", ["relu", "circle"])
def test_batched_search_equals_one_by_one(task):
    nets = [plantseek.plant(task, width=20, depth=3, seed=s).to("cpu", "float64") for s in (0, 1, 2)]
    datas = [tasks.get(task).data(300, 0.01, s).to("cpu", torch.float64) for s in (0, 1, 2)]
    dens = [0.1, 0.3, 0.2]
    p = pruners.get("edge-popup-annealed", epochs=2, batch_size=32)
    many = p.prune_many(nets, datas, dens, scope="global", generators=[torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    for k in range(3):
        one = p.prune(nets[k], datas[k], dens[k], scope="global", generator=torch.Generator().manual_seed(5 + k))
        assert all(torch.equal(a, b) and torch.equal(c, d) for (a, c), (b, d) in zip(many[k], one))


def test_deterministic_given_the_generator(relu_setup):
    net, data = relu_setup
    p = pruners.get("edge-popup-annealed", **QUICK)
    a = p.prune(net, data, 0.1, generator=torch.Generator().manual_seed(5))
    b = p.prune(net, data, 0.1, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b))


def test_scale_free_loss():
    g = torch.Generator().manual_seed(0)
    o = torch.randn(32, 3, generator=g, dtype=torch.float64)
    y = torch.randn(32, 3, generator=g, dtype=torch.float64)
    loss = edge_popup.scale_free_loss(o, y)
    # invariant to a positive per-output rescaling of the outputs: no softmax, no fixed scale
    assert float(edge_popup.scale_free_loss(o * torch.tensor([1e-3, 5.0, 2.0], dtype=torch.float64), y)) == pytest.approx(float(loss), rel=1e-10)
    # the strong read-out's positive factor: least squares where positive, else the ratio of RMS values
    ls = (o * y).sum(0) / (o * o).sum(0)
    c = torch.where(ls > 0, ls, (y * y).sum(0).sqrt() / (o * o).sum(0).sqrt())
    assert float(loss) == pytest.approx(float(((o * c - y) ** 2).mean()), rel=1e-12)
    y1 = y[:, :1]  # an anti-correlated output: no sign flip rescues it (factor rms(y)/rms(o) = 1 here)
    assert float(edge_popup.scale_free_loss(-y1, y1)) == pytest.approx(4 * float((y1 * y1).mean()), rel=1e-12)
    labels = torch.randint(0, 3, (32,), generator=g)
    assert float(edge_popup.scale_free_loss(o, labels)) == pytest.approx(float(torch.nn.functional.cross_entropy(o, labels)))


def test_annealed_schedule():
    p = pruners.get("edge-popup-annealed", epochs=4)
    assert [p.density_at(0.01, e) for e in range(1, 5)] == pytest.approx([0.01 ** 0.25, 0.01 ** 0.5, 0.01 ** 0.75, 0.01])
    q = pruners.get("edge-popup", epochs=4)
    assert all(q.density_at(0.01, e) == 0.01 for e in range(1, 5))


def test_strong_search_finds_a_good_relu_mask():
    m = plantseek.seek(task="relu", depth=4, width=50, pruner=pruners.get("edge-popup-annealed", epochs=5),
                       density=0.05, protocol="strong", scope="global", n_samples=3000, progress=False,
                       device="cpu", dense_baseline=False).metrics
    assert m["test_loss"] < 0.01


@slow
def test_slow_annealed_global_relu_paper_size():
    m = plantseek.seek(task="relu", depth=4, width=100, pruner="edge-popup-annealed", density=0.05,
                       protocol="strong", scope="global", progress=False, device="cpu", dense_baseline=False).metrics
    assert m["test_loss"] <= 0.01


@settings(max_examples=30, deadline=None)
@given(M=st.integers(1, 3), widths=st.lists(st.integers(1, 7), min_size=2, max_size=4), batch=st.integers(1, 5),
       seed=st.integers(0, 10_000), dtype=st.sampled_from([torch.float32, torch.float64]), prune_bias=st.booleans())
def test_score_grads_are_autograds(M, widths, batch, seed, dtype, prune_bias):
    """The batched search's written-out backward (into its gradient buffers), turned into score gradients as its
    step does (weight * sgn(score) * gradient), equals autograd's through the straight-through top-k
    (keep + |s| - |s|.detach()), baddbmm and ReLU, value for value, with kept and dropped weights mixed."""
    g = torch.Generator().manual_seed(seed)
    L = len(widths) - 1
    W = [torch.randn(M, widths[i + 1], widths[i], generator=g, dtype=dtype) for i in range(L)]
    B = [torch.randn(M, widths[i + 1], generator=g, dtype=dtype) for i in range(L)]
    scores = [(torch.randn(M, widths[i + 1], widths[i], generator=g, dtype=dtype).requires_grad_(True),
               torch.randn(M, widths[i + 1], generator=g, dtype=dtype).requires_grad_(True)) for i in range(L)]
    keep = [(torch.rand(M, widths[i + 1], widths[i], generator=g) < 0.6,
             torch.rand(M, widths[i + 1], generator=g) < 0.6) for i in range(L)]
    x = torch.randn(M, batch, widths[0], generator=g, dtype=dtype)
    up = torch.randn(M, batch, widths[-1], generator=g, dtype=dtype)  # d loss / d outputs
    h, hs, effs = x, [x], []
    for i, (ws, bs) in enumerate(scores):
        mw = keep[i][0].to(dtype) + (ws.abs() - ws.abs().detach())
        mb = keep[i][1].to(dtype) + (bs.abs() - bs.abs().detach()) if prune_bias else keep[i][1].to(dtype)
        h = torch.baddbmm((B[i] * mb).unsqueeze(1), h, (W[i] * mw).transpose(1, 2))
        effs.append((W[i] * mw).detach())
        if i < L - 1:
            h = torch.relu(h)
            hs.append(h.detach())
    params = [t for pair in scores for t in pair]
    want = torch.autograd.grad((h * up).sum(), params, allow_unused=True)
    # the backward into the search's buffers, then the straight-through gradient its step forms from them
    where = {(i, 0): i for i in range(L)}
    grad_w = [torch.empty(M, widths[i], widths[i + 1], dtype=dtype) for i in range(L)]
    grad_b = [torch.empty(M, widths[i + 1], dtype=dtype) if prune_bias else None for i in range(L)]
    edge_popup._score_grads(up, hs, effs, where, grad_w, grad_b)
    got = []
    for i, (ws, bs) in enumerate(scores):
        got.append((W[i] * ws.detach().sgn()) * grad_w[i].transpose(1, 2))
        got.append((B[i] * bs.detach().sgn()) * grad_b[i] if prune_bias else torch.zeros_like(bs))
    for l, (a, b) in enumerate(zip(got, want)):
        b = torch.zeros_like(a) if b is None else b
        assert a.shape == b.shape, l
        assert torch.equal(a, b), l


def test_both_variants_search_in_one_batch_and_each_run_as_alone():
    """edge-popup and edge-popup-annealed runs of one group search in one prune_many call (their batch family),
    each run following its own density schedule: masks equal to each run searched alone."""
    from plantseek import protocols

    plain, annealed = pruners.get("edge-popup", epochs=2), pruners.get("edge-popup-annealed", epochs=2)
    runs = [protocols.Run(label=f"s{s}", net=plantseek.plant("circle", width=20, depth=3, seed=s).to("cpu", "float64"),
                          data=tasks.get("circle").data(300, 0.01, s).to("cpu", torch.float64), pruner=p,
                          prune_generator=torch.Generator().manual_seed(s))
            for s, p in ((0, plain), (1, annealed), (2, annealed), (3, plain))]
    calls = []
    orig = edge_popup.EdgePopupPruner.prune_many

    def spy(self, nets, *a, **k):
        calls.append(len(nets))
        return orig(self, nets, *a, **k)

    import unittest.mock
    with unittest.mock.patch.object(edge_popup.EdgePopupPruner, "prune_many", spy):
        protocols._pruned(runs, lambda r: 0.1)
    assert calls == [4]
    for s, r in enumerate(runs):
        assert r.ok, r.error
        alone = r.pruner.prune(r.net, r.data, 0.1, generator=torch.Generator().manual_seed(s))
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(r.mask, alone))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(runs[0].mask, runs[3].mask))  # the runs differ


def test_prune_many_refuses_a_pruner_of_another_kind_or_options():
    p = pruners.get("edge-popup", epochs=1)
    nets = [plantseek.plant("circle", width=20, depth=2, seed=s) for s in (0, 1)]
    datas = [tasks.get("circle").data(100, 0.01, s) for s in (0, 1)]
    for other in (pruners.get("edge-popup", epochs=2), pruners.get("magnitude")):
        with pytest.raises(ValueError, match=r"pruners\[1\]"):
            p.prune_many(nets, datas, [0.1, 0.1], pruners=[p, other])

    class Mine(edge_popup.EdgePopupPruner):  # a subclass batches only with its own kind
        pass

    assert Mine(epochs=1).batch_family is Mine and pruners.get("edge-popup-annealed").batch_family is edge_popup.EdgePopupPruner
    with pytest.raises(ValueError, match=r"pruners\[1\]"):
        p.prune_many(nets, datas, [0.1, 0.1], pruners=[p, Mine(epochs=1)])
