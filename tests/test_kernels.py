"""plantseek.kernels: native scores and top-k against the PyTorch references."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantseek import kernels as K
from plantseek import native

needs_native = pytest.mark.skipif(native.cpu_module() is None, reason="native core not built")
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _net(seed, widths, M=None, density=0.7, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    lead = () if M is None else (M,)
    ws = [torch.randn(*lead, widths[i + 1], widths[i], generator=gen, dtype=dtype) for i in range(len(widths) - 1)]
    bs = [torch.randn(*lead, widths[i + 1], generator=gen, dtype=dtype) for i in range(len(widths) - 1)]
    masks = [(torch.rand(w.shape, generator=gen) < density, torch.rand(b.shape, generator=gen) < density)
             for w, b in zip(ws, bs)]
    return ws, bs, masks


def _equal_masks(a, b):
    return all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))


widths_st = st.lists(st.integers(1, 12), min_size=2, max_size=5)


@needs_native
@FAST
@given(widths=widths_st, M=st.sampled_from([None, 1, 4]), density=st.sampled_from([0.0, 0.3, 1.0]),
       seed=st.integers(0, 1000), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_synflow_scores_match_autograd(widths, M, density, seed, dtype):
    ws, bs, masks = _net(seed, widths, M, density, dtype)
    got = K.synflow_scores(ws, bs, masks)
    want = K.synflow_scores_reference(ws, bs, masks)
    for (a, b), (c, d) in zip(got, want):
        assert a.dtype == dtype and a.shape == c.shape and b.shape == d.shape
        torch.testing.assert_close(a, c, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
        torch.testing.assert_close(b, d, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)


@needs_native
def test_synflow_scores_accepts_masked_pairs():
    ws, bs, masks = _net(0, [4, 6, 3])
    pairs = [(w * wm, b * bm) for w, b, (wm, bm) in zip(ws, bs, masks)]
    a = K.synflow_scores(pairs)
    b = K.synflow_scores(ws, bs, masks)
    for p, q in zip(a, b):
        torch.testing.assert_close(p[0], q[0])
        torch.testing.assert_close(p[1], q[1])


@needs_native
@FAST
@given(widths=widths_st, M=st.sampled_from([None, 3]), density=st.sampled_from([0.0, 0.05, 0.4, 1.0]),
       rounds=st.sampled_from([1, 3, 10]), scope=st.sampled_from(["global", "layer"]), prune_bias=st.booleans(),
       seed=st.integers(0, 1000))
def test_synflow_prune_matches_reference(widths, M, density, rounds, scope, prune_bias, seed):
    ws, bs, _ = _net(seed, widths, M)
    got = K.synflow_prune(ws, bs, density, rounds=rounds, scope=scope, prune_bias=prune_bias)
    want = K.synflow_prune_reference(ws, bs, density, rounds=rounds, scope=scope, prune_bias=prune_bias)
    assert _equal_masks(got, want)
    # exact counts
    nets = range(M) if M else [None]
    for m in nets:
        pick = (lambda t: t[m]) if M else (lambda t: t)
        if scope == "global":
            total = sum(pick(w).numel() + (pick(b).numel() if prune_bias else 0) for w, b in zip(ws, bs))
            kept = sum(int(pick(wm).sum()) + (int(pick(bm).sum()) if prune_bias else 0) for wm, bm in got)
            assert kept == K.kept_count(density, total)
        if not prune_bias:
            assert all(bool(pick(bm).all()) for _, bm in got)


@needs_native
def test_synflow_prune_rejects_unreachable_density():
    ws, bs, masks = _net(0, [4, 6, 3], density=0.1)
    with pytest.raises(ValueError, match="never come back"):
        K.synflow_prune(ws, bs, 0.9, rounds=2, masks=masks)


@needs_native
@FAST
@given(widths=widths_st, M=st.sampled_from([None, 1, 3]), scope=st.sampled_from(["global", "layer"]),
       with_bias=st.booleans(), use_eligible=st.booleans(), frac=st.floats(0, 1), seed=st.integers(0, 1000),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_global_topk_matches_reference(widths, M, scope, with_bias, use_eligible, frac, seed, dtype):
    ws, bs, masks = _net(seed, widths, M, density=0.6)
    gen = torch.Generator().manual_seed(seed + 1)
    # few distinct values: many ties
    scores = [(torch.randint(0, 4, w.shape, generator=gen).to(dtype),
               torch.randint(0, 4, b.shape, generator=gen).to(dtype) if with_bias else None) for w, b in zip(ws, bs)]
    eligible = masks if use_eligible else None
    n_net = M or 1

    def avail(l, j):
        t = scores[l][j]
        if eligible is None:
            return t.numel() // n_net
        return min(int((eligible[l][j][m] if M else eligible[l][j]).sum()) for m in range(n_net))

    if scope == "global":
        cap = sum(avail(l, 0) + (avail(l, 1) if with_bias else 0) for l in range(len(ws)))
        k = int(frac * cap)
    else:
        k = [int(frac * (avail(l, 0) + (avail(l, 1) if with_bias else 0))) for l in range(len(ws))]
    got = K.global_topk(scores, k, eligible, scope=scope)
    want = K.global_topk_reference(scores, k, eligible, scope=scope)
    assert _equal_masks(got, want)


def test_topk_tie_rule_lowest_flat_index():
    scores = [(torch.ones(2, 3), torch.ones(2)), (torch.ones(1, 2), torch.ones(1))]
    for fn in (K.global_topk, K.global_topk_reference):
        m = fn(scores, 9)
        assert bool(m[0][0].all()) and bool(m[0][1].all()) and m[1][0].tolist() == [[True, False]]
        assert not bool(m[1][1].any())


@needs_native
@FAST
@given(n=st.integers(0, 300), frac=st.floats(0, 1), seed=st.integers(0, 100), with_el=st.booleans())
def test_flat_topk(n, frac, seed, with_el):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 5, (n,), generator=gen).double() - 2.0
    s[::7] = -0.0
    el = (torch.rand(n, generator=gen) < 0.5) if with_el else None
    k = int(frac * (int(el.sum()) if with_el else n))
    got = K.global_topk(s, k, el)
    assert torch.equal(got, K.global_topk_reference(s, k, el))
    assert int(got.sum()) == k


def test_topk_errors():
    scores = [(torch.ones(2, 3), torch.ones(2))]
    with pytest.raises(ValueError, match="exactly one"):
        K.global_topk(scores)
    with pytest.raises(ValueError, match="outside"):
        K.global_topk(scores, 99)
    with pytest.raises(ValueError, match="scope"):
        K.global_topk(scores, 1, scope="row")
    with pytest.raises(ValueError, match="NaN"):
        K.global_topk([(torch.tensor([[float("nan")]]), torch.zeros(1))], 1)
    with pytest.raises(ValueError, match="eligible"):
        K.global_topk(torch.ones(5), 4, torch.tensor([True, False, False, True, False]))


def test_density_form_and_simple_scores():
    ws, bs, _ = _net(0, [3, 4, 2])
    sc = K.magnitude_scores(ws, bs)
    m = K.global_topk(sc, density=0.5)
    total = sum(w.numel() + b.numel() for w, b in zip(ws, bs))
    assert sum(int(a.sum()) + int(b.sum()) for a, b in m) == round(0.5 * total)
    g = K.grad_times_weight_scores(ws, bs, [torch.ones_like(w) for w in ws], [None for _ in bs])
    assert torch.equal(g[0][0], ws[0].abs()) and not bool(g[0][1].any())


@needs_native
def test_native_topk_validation():
    ext = native.cpu_module()
    a = np.zeros(4, np.float64)
    with pytest.raises(ValueError, match="group"):
        ext.topk_masks([[a]], [3], [1])
    with pytest.raises(ValueError, match="k\\[0\\]"):
        ext.topk_masks([[a]], [0], [-1])
    with pytest.raises(TypeError, match="dtype"):
        ext.topk_masks([[a.astype(np.int64)]], [0], [1])
    with pytest.raises(ValueError, match="C-contiguous"):
        ext.topk_masks([[np.zeros((4, 2))[:, 0]]], [0], [1])
    with pytest.raises(ValueError, match="eligible"):
        ext.topk_masks([[a]], [0], [3], [[np.array([True, False, False, True])]])
