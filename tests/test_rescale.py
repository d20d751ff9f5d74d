"""The function-preserving rescale of the weak protocols (plantseek.rescale) and what it buys the ticket oracle."""
from __future__ import annotations

import hashlib
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import plantseek
from plantseek import protocols, pruners
from plantseek.rescale import Rescale, check_mode, fit_factors, positive_factors
from plantseek.seek import seek, seek_batch


def _forward(weights, biases, x):
    h = x
    for l, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w.T + b
        if l < len(weights) - 1:
            h = torch.relu(h)
    return h


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(1, 6), seed=st.integers(0, 2**31 - 1), log_scale=st.floats(-9, 9))
def test_rescale_computes_c_times_the_old_function(depth, seed, log_scale):
    g = torch.Generator().manual_seed(seed)
    widths = [int(torch.randint(1, 7, (1,), generator=g)) for _ in range(depth)]
    dims = [3] + widths
    W = [torch.randn(o, i, generator=g, dtype=torch.float64) for i, o in zip(dims[:-1], dims[1:])]
    B = [torch.randn(o, generator=g, dtype=torch.float64) for o in dims[1:]]
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    c = torch.exp(log_scale + torch.randn(widths[-1], generator=g, dtype=torch.float64))
    rs = Rescale.from_factors(c, widths)
    W2, B2 = rs.apply(W, B)
    torch.testing.assert_close(_forward(W2, B2, x), _forward(W, B, x) * c, rtol=1e-9, atol=1e-12)
    W3, B3 = rs.divide_out(W2, B2)
    for a, b in zip(W3 + B3, W + B):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    assert rs.g == pytest.approx(float(torch.exp(torch.log(c).mean())), rel=1e-12)


def test_rescale_spreads_g_over_the_layers():
    rs = Rescale.from_factors(torch.tensor([8.0, 2.0], dtype=torch.float64), [5, 5, 2])  # g = 4, L = 3
    assert rs.g == pytest.approx(4.0)
    torch.testing.assert_close(rs.w_scale[0], torch.full((5,), 4 ** (1 / 3), dtype=torch.float64))
    torch.testing.assert_close(rs.b_scale[1], torch.full((5,), 4 ** (2 / 3), dtype=torch.float64))
    torch.testing.assert_close(rs.w_scale[2], 4 ** (1 / 3) * torch.tensor([2.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(rs.b_scale[2], torch.tensor([8.0, 2.0], dtype=torch.float64))


def test_positive_factors_never_flip_a_sign():
    y = torch.linspace(-1, 1, 100, dtype=torch.float64).reshape(-1, 1).repeat(1, 3)
    o = torch.stack([2 * y[:, 0], -0.5 * y[:, 1], torch.zeros(100, dtype=torch.float64)], dim=1)
    c = positive_factors(o, y)
    assert c[0] == pytest.approx(0.5)
    assert c[1] == pytest.approx(2.0)  # anti-correlated: the ratio of RMS values, not -2
    assert math.isnan(c[2])
    # the strong protocol's read-out uses the same rule (0 where an output is identically zero)
    c_strong = protocols.fit_regression_scale(o, y)
    assert (c_strong >= 0).all() and c_strong[1] == pytest.approx(2.0) and c_strong[2] == 0


def test_fit_factors_skips_masks_without_signal():
    y = torch.linspace(-1, 1, 100, dtype=torch.float64).reshape(-1, 1)
    assert fit_factors(-y, y, "regression") is None  # the positive read-out is worse than a zero output
    assert fit_factors(torch.zeros_like(y), y, "regression") is None
    torch.testing.assert_close(fit_factors(3 * y, y, "regression"), torch.tensor([1 / 3], dtype=torch.float64))
    labels = torch.arange(100) % 4
    assert fit_factors(torch.zeros(100, 4), labels, "classification") is None  # no information: t = 0
    logits = torch.nn.functional.one_hot(labels, 4).double() * 1e-3
    logits[:10] = logits[:10].roll(1, dims=1)  # not separable, so the temperature is finite
    c = fit_factors(logits, labels, "classification")
    assert c is not None and c.shape == (4,) and (c == c[0]).all() and c[0] > 1e3


def test_rescale_option_is_checked():
    assert check_mode("fit") == "fit" and check_mode("none") == "none"
    with pytest.raises(ValueError, match="rescale must be one of 'fit', 'fit-even', 'none', got 'yes'"):
        seek(task="relu", width=10, rescale="yes", progress=False)
    with pytest.raises(ValueError, match="rescale"):
        protocols.Settings(task=plantseek.tasks.get("relu"), rescale=True)


def _oracle(task, protocol, rescale, seeds=3, depth=4, width=100, **kw):
    runs = seek_batch([dict(task=task, depth=depth, width=width, pruner="ticket", density="ticket", protocol=protocol,
                            seed=s, dtype="float64", dense_baseline=False, progress=False, rescale=rescale, **kw)
                       for s in range(seeds)])
    assert all(not isinstance(r, BaseException) for r in runs), runs
    return [r.metrics for r in runs]


def _mean(ms, key):
    return sum(m[key] for m in ms) / len(ms)


@pytest.mark.parametrize("protocol", ["singleshot", "multishot"])
def test_circle_oracle_reaches_the_ticket_with_the_rescale(protocol):
    kw = dict(rounds=2, round_epochs=1) if protocol == "multishot" else {}
    fit = _oracle("circle", protocol, "fit", **kw)
    assert _mean(fit, "test_accuracy") >= _mean(fit, "ticket_test_accuracy") - 0.02
    assert all(m["rescale_factor"] > 1 for m in fit)
    none = _oracle("circle", protocol, "none", **kw)  # the paper's protocol first destroys the ticket
    assert _mean(none, "test_accuracy") < _mean(fit, "test_accuracy") - 0.03
    assert "rescale_factor" not in none[0]


@pytest.mark.parametrize("task", ["relu", "helix"])
def test_regression_oracle_reaches_the_ticket_with_the_rescale(task):
    fit = _oracle(task, "singleshot", "fit")
    assert _mean(fit, "test_loss") <= 1.2 * _mean(fit, "ticket_test_loss")


def _net_hash(net) -> str:
    d = hashlib.sha256()
    for w, b in zip(net.weights, net.biases):
        d.update(w.numpy().tobytes())
        d.update(b.numpy().tobytes())
    for wm, bm in net.ticket_mask:
        d.update(wm.numpy().tobytes())
        d.update(bm.numpy().tobytes())
    d.update(repr(float(net.output_scale)).encode())
    return d.hexdigest()[:16]


def test_planting_and_hiding_unchanged_bit_for_bit():
    # literal hashes of the planted networks as of the commit before the rescale (c1d78e9): the rescale acts on
    # copies before training and never on the planted network or its hiding statistics
    expected = {"relu": ("e18d489ca62b6217", 0.54), "circle": ("897282462b4e29cb", 0.5575),
                "helix": ("f94fde02e9b1a27f", 0.43)}
    for task, (digest, median) in expected.items():
        net = plantseek.plant(task, width=100, depth=4, seed=0)
        assert _net_hash(net) == digest, task
        assert net.hiding["median_percentile"] == median
        seek(task=task, depth=4, width=100, seed=0, pruner="ticket", density="ticket", epochs=1, progress=False,
             dense_baseline=False, dtype="float64")
        assert _net_hash(plantseek.plant(task, width=100, depth=4, seed=0)) == digest


def test_multishot_pruner_scores_the_planted_parametrisation(monkeypatch):
    seen = []
    real = protocols.prune_run

    def spy(run, density, mask=None):
        if run.weights is not None:  # a multishot round: the trained network is about to be scored
            seen.append((run.net.weights, run.net.biases, list(run.weights), list(run.biases), run.extra["rescale"]))
        return real(run, density, mask)

    monkeypatch.setattr(protocols, "prune_run", spy)
    seek(task="circle", depth=4, width=100, pruner="magnitude", density=0.1, protocol="multishot", rounds=2,
         round_epochs=1, epochs=1, n_samples=2000, dtype="float64", progress=False, dense_baseline=False)
    assert len(seen) == 2
    mag = pruners.get("magnitude")
    for net_w, net_b, W, B, rs in seen:
        assert rs is not None and abs(math.log(rs.g)) > 0.5
        # what the pruner saw is the trained network with the rescale divided out ...
        dw, db = rs.divide_out(W, B)
        for a, b in zip(net_w + net_b, dw + db):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # ... so magnitude pruning of it equals magnitude pruning of those weights, and differs from magnitude
        # pruning of the rescaled network (whose deep biases are inflated by g^(l/L))
        net = plantseek.plant("circle", width=100, depth=4, seed=0).to("cpu", torch.float64)
        from dataclasses import replace

        mask_planted = mag.prune(replace(net, weights=dw, biases=db), None, 0.3)
        mask_rescaled = mag.prune(replace(net, weights=W, biases=B), None, 0.3)
        seen_mask = mag.prune(replace(net, weights=list(net_w), biases=list(net_b)), None, 0.3)
        assert all(torch.equal(a, b) for p, q in zip(seen_mask, mask_planted) for a, b in zip(p, q))
        assert any(not torch.equal(a, b) for p, q in zip(mask_planted, mask_rescaled) for a, b in zip(p, q))


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(2, 5), seed=st.integers(0, 2**31 - 1), log_scale=st.floats(-6, 6), keep=st.floats(0.3, 1.0))
def test_balanced_rescale_keeps_the_function_and_balances_the_neurons(depth, seed, log_scale, keep):
    g = torch.Generator().manual_seed(seed)
    widths = [int(torch.randint(1, 7, (1,), generator=g)) for _ in range(depth)]
    dims = [3] + widths
    W = [torch.randn(o, i, generator=g, dtype=torch.float64) * 10 ** float(torch.randn(1, generator=g))
         for i, o in zip(dims[:-1], dims[1:])]
    B = [torch.randn(o, generator=g, dtype=torch.float64) for o in dims[1:]]
    mask = [(torch.rand(w.shape, generator=g) < keep, torch.rand(b.shape, generator=g) < keep) for w, b in zip(W, B)]
    Wm = [w * wm for w, (wm, _) in zip(W, mask)]
    Bm = [b * bm for b, (_, bm) in zip(B, mask)]
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    c = torch.exp(log_scale + torch.randn(widths[-1], generator=g, dtype=torch.float64))
    rs = Rescale.from_factors(c, widths).balanced(W, B, mask)
    W2, B2 = rs.apply(Wm, Bm)
    want = _forward(Wm, Bm, x) * c
    torch.testing.assert_close(_forward(W2, B2, x), want, rtol=1e-9, atol=1e-12 * float(want.abs().max() + 1))
    for l in range(depth - 1):
        n_in = (W2[l].pow(2).sum(1) + B2[l].pow(2)).sqrt()
        n_out = W2[l + 1].pow(2).sum(0).sqrt()
        both = (n_in > 0) & (n_out > 0)
        # the last hidden layer is balanced against the final output weights; earlier layers against the next
        # layer's weights after that layer was itself rescaled, so only the last hidden layer is exactly equal
        if l == depth - 2:
            torch.testing.assert_close(n_in[both], n_out[both], rtol=1e-9, atol=0)
    W3, B3 = rs.divide_out(W2, B2)
    for a, b in zip(W3 + B3, Wm + Bm):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-300)


def test_fit_even_is_the_unbalanced_rule():
    even = _oracle("circle", "singleshot", "fit-even", seeds=1, width=1000)
    fit = _oracle("circle", "singleshot", "fit", seeds=1, width=1000)
    assert even[0]["rescale_factor"] == pytest.approx(fit[0]["rescale_factor"])
    assert even[0]["test_accuracy"] != fit[0]["test_accuracy"]
