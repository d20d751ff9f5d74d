"""plantseek.kernels.scores: the dispatchers (SynFlow, top-k, simple scores) on every backend against their PyTorch
references, and their argument checks."""
import math

import numpy as np
import pytest
import torch

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from plantseek import native
from plantseek.kernels import scores as K

from kernel_helpers import FIXTURE_OK, cpu
from validation_helpers import names

needs_native = pytest.mark.skipif(native.cpu_module() is None, reason="native core not built")
FAST = settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)


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


@FAST
@given(widths=widths_st, M=st.sampled_from([None, 1, 4]), density=st.sampled_from([0.0, 0.3, 1.0]),
       seed=st.integers(0, 1000), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_synflow_scores_match_autograd(backend, widths, M, density, seed, dtype):
    ws, bs, masks = _net(seed, widths, M, density, dtype)
    got = cpu(K.synflow_scores(*backend.to((ws, bs, masks))))
    want = K.synflow_scores_reference(ws, bs, masks)
    for (a, b), (c, d) in zip(got, want):
        assert a.dtype == dtype and a.shape == c.shape and b.shape == d.shape
        torch.testing.assert_close(a, c, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
        torch.testing.assert_close(b, d, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)


def test_synflow_scores_accepts_masked_pairs(backend):
    ws, bs, masks = backend.to(_net(0, [4, 6, 3]))
    pairs = [(w * wm, b * bm) for w, b, (wm, bm) in zip(ws, bs, masks)]
    a = K.synflow_scores(pairs)
    b = K.synflow_scores(ws, bs, masks)
    for p, q in zip(a, b):
        torch.testing.assert_close(p[0], q[0])
        torch.testing.assert_close(p[1], q[1])


@FAST
@given(widths=widths_st, M=st.sampled_from([None, 3]), density=st.sampled_from([0.0, 0.05, 0.4, 1.0]),
       rounds=st.sampled_from([1, 3, 10]), scope=st.sampled_from(["global", "layer"]), prune_bias=st.booleans(),
       seed=st.integers(0, 1000))
def test_synflow_prune_matches_reference(backend, widths, M, density, rounds, scope, prune_bias, seed):
    ws, bs, _ = _net(seed, widths, M)
    got = cpu(K.synflow_prune(*backend.to((ws, bs)), density, rounds=rounds, scope=scope, prune_bias=prune_bias))
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


def test_synflow_prune_rejects_unreachable_density(backend):
    ws, bs, masks = backend.to(_net(0, [4, 6, 3], density=0.1))
    with pytest.raises(ValueError, match="never come back"):
        K.synflow_prune(ws, bs, 0.9, rounds=2, masks=masks)


@FAST
@given(widths=widths_st, M=st.sampled_from([None, 1, 3]), scope=st.sampled_from(["global", "layer"]),
       with_bias=st.booleans(), use_eligible=st.booleans(), frac=st.floats(0, 1), seed=st.integers(0, 1000),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_global_topk_matches_reference(backend, widths, M, scope, with_bias, use_eligible, frac, seed, dtype):
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
    got = cpu(K.global_topk(backend.to(scores), k, backend.to(eligible), scope=scope))
    want = K.global_topk_reference(scores, k, eligible, scope=scope)
    assert _equal_masks(got, want)


def test_topk_tie_rule_lowest_flat_index(backend):
    scores = backend.to([(torch.ones(2, 3), torch.ones(2)), (torch.ones(1, 2), torch.ones(1))])
    for fn in (K.global_topk, K.global_topk_reference):
        m = cpu(fn(scores, 9))
        assert bool(m[0][0].all()) and bool(m[0][1].all()) and m[1][0].tolist() == [[True, False]]
        assert not bool(m[1][1].any())


@FAST
@given(n=st.integers(0, 300), frac=st.floats(0, 1), seed=st.integers(0, 100), with_el=st.booleans())
def test_flat_topk(backend, n, frac, seed, with_el):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randint(0, 5, (n,), generator=gen).double() - 2.0
    s[::7] = -0.0
    el = (torch.rand(n, generator=gen) < 0.5) if with_el else None
    k = int(frac * (int(el.sum()) if with_el else n))
    got = cpu(K.global_topk(backend.to(s), k, backend.to(el)))
    assert torch.equal(got, K.global_topk_reference(s, k, el))
    assert int(got.sum()) == k


@settings(max_examples=12, deadline=None)
@given(n=st.sampled_from([8191, 8192, 8193, 20000]), eligible=st.sampled_from([None, 0.02, 0.5]),
       frac=st.floats(0, 1), seed=st.integers(0, 100), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_flat_topk_on_both_selection_paths(n, eligible, frac, seed, dtype):
    """Around the native kernel's switch from selecting among a copy (at most 8192 candidates) to the radix
    histogram, with many ties (few distinct values, signed zeros): the reference's mask exactly."""
    gen = torch.Generator().manual_seed(seed)
    s = (torch.randint(0, 9, (n,), generator=gen).to(dtype) - 4.0) * 0.25
    s[::11] = -0.0
    el = None if eligible is None else torch.rand(n, generator=gen) < eligible
    k = int(frac * (n if el is None else int(el.sum())))
    got = K.global_topk(s, k, el)
    assert torch.equal(got, K.global_topk_reference(s, k, el)) and int(got.sum()) == k


@settings(max_examples=80, deadline=None)
@given(M=st.integers(0, 4), P=st.integers(1, 60), eligible=st.sampled_from([None, "few", "equal few", "half"]),
       frac=st.floats(0, 1), seed=st.integers(0, 1000), dtype=st.sampled_from([torch.float32, torch.float64,
                                                                                torch.int64]))
def test_rows_topk_matches_the_reference(M, P, eligible, frac, seed, dtype):
    """Exact top-k per row with ties to the lowest column (few distinct values, signed zeros), with eligible
    entries everywhere, few (equal or unequal counts: the compact path and the filler) or half."""
    gen = torch.Generator().manual_seed(seed)
    s = (torch.randint(0, 5, (M, P), generator=gen) - 2).to(dtype)
    if dtype.is_floating_point:
        s[:, ::7] = -0.0
    el = None
    if eligible == "equal few":
        el = torch.zeros(M, P, dtype=torch.bool)
        for m in range(M):
            el[m, torch.randperm(P, generator=gen)[:max(1, P // 5)]] = True
    elif eligible is not None:
        el = torch.rand(M, P, generator=gen) < (0.15 if eligible == "few" else 0.5)
    fewest = P if el is None else (int(el.sum(1).min()) if M else 0)
    k = int(frac * fewest)
    got = K.rows_topk(s, k, el)
    assert got.dtype == torch.bool and got.shape == (M, P)
    assert torch.equal(got, K.rows_topk_reference(s, k, el))
    assert got.sum(1).tolist() == [k] * M
    if el is not None:
        assert not bool((got & ~el).any())


@pytest.mark.parametrize("frac", [0.003, 0.1, 0.5, 0.97])
@pytest.mark.parametrize("eligible", [None, 0.01, 0.9])
def test_rows_topk_native_and_torch_paths_agree_with_the_reference(eligible, frac, monkeypatch):
    """The native selection (a bounded heap for k up to an eighth of the candidates, a selection above) and the
    torch fallback (other devices, integer scores) both give the reference's masks on long rows with many ties."""
    gen = torch.Generator().manual_seed(1)
    s = (torch.randint(0, 50, (3, 30000), generator=gen).double() - 25.0) * 0.5
    s[:, ::11] = -0.0
    el = None if eligible is None else torch.rand(3, 30000, generator=gen) < eligible
    k = max(1, int(frac * (30000 if el is None else int(el.sum(1).min()))))
    want = K.rows_topk_reference(s, k, el)
    assert torch.equal(K.rows_topk(s, k, el), want)
    assert torch.equal(K.rows_topk(s.float(), k, el), K.rows_topk_reference(s.float(), k, el))
    monkeypatch.setattr(K, "_native_for", lambda tensors: None)
    assert torch.equal(K.rows_topk(s, k, el), want)


def test_rows_topk_refuses_bad_arguments():
    s = torch.tensor([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="exceeds the 1 eligible"):
        K.rows_topk(s, 2, torch.tensor([[True, False, False]]))
    with pytest.raises(ValueError, match="NaN"):
        K.rows_topk(torch.tensor([[1.0, float("nan")]]), 1)
    with pytest.raises(ValueError, match="matrix"):
        K.rows_topk(torch.ones(3), 1)
    with pytest.raises(ValueError, match="eligible"):
        K.rows_topk(s, 1, torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(K.ArgumentError, match="exceeds the 3 eligible"):  # the native kernel's refusal
        K.rows_topk(s, 4)


def test_topk_errors(backend):
    scores = backend.to([(torch.ones(2, 3), torch.ones(2))])
    with pytest.raises(ValueError, match="exactly one"):
        K.global_topk(scores)
    with pytest.raises(ValueError, match="outside"):
        K.global_topk(scores, 99)
    with pytest.raises(ValueError, match="scope"):
        K.global_topk(scores, 1, scope="row")
    with pytest.raises(ValueError, match="NaN"):
        K.global_topk(backend.to([(torch.tensor([[float("nan")]]), torch.zeros(1))]), 1)
    with pytest.raises(ValueError, match="eligible"):
        K.global_topk(*backend.to((torch.ones(5), 4, torch.tensor([True, False, False, True, False]))))


def test_density_form_and_simple_scores(backend):
    ws, bs, _ = backend.to(_net(0, [3, 4, 2]))
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


# --------------------------------------------------------------------------------------------- argument validation
# Every dispatcher raises ArgumentError (a ValueError) naming the bad argument on every backend, and so does its
# reference; valid edge cases keep working.


_names = names


bad_fraction_st = st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 <= x <= 1),
                            st.sampled_from([True, "0.5", None, [0.5], complex(0.5, 0), torch.tensor([0.1, 0.2])]))
bad_count_st = st.one_of(st.integers(max_value=-1),
                         st.floats(allow_nan=True, allow_infinity=True).filter(
                             lambda x: not (math.isfinite(x) and x.is_integer() and x >= 0)),
                         st.sampled_from([True, False, "3", None, [3]]))


@FAST
@given(density=bad_fraction_st, n=st.integers(0, 100))
def test_kept_count_and_schedule_reject_bad_densities(density, n):
    with _names("density"):
        K.kept_count(density, n)
    with _names("density"):
        K.density_schedule(1.0, density, 3)
    with _names("d0"):
        K.density_schedule(density, 0.5, 3)


@FAST
@given(n=bad_count_st, rounds=st.one_of(bad_count_st, st.just(0)))
def test_kept_count_and_schedule_reject_bad_integers(n, rounds):
    with _names("n"):
        K.kept_count(0.5, n)
    with _names("rounds"):
        K.density_schedule(0.5, 0.25, rounds)


def test_kept_count_and_schedule_valid_edges():
    assert K.kept_count(0, 0) == 0 and K.kept_count(1, 7) == 7 and K.kept_count(0.5, 10.0) == 5
    assert K.kept_count(np.float64(0.25), np.int64(8)) == 2 and K.kept_count(torch.tensor(0.5), 4) == 2
    assert K.density_schedule(0.0, 0.5, 3) == [0.5] * 3 and K.density_schedule(1, 1, 1) == [1.0]
    assert K.density_schedule(1.0, 0.25, 2) == [0.5, 0.25]


def _synflow_fns():
    scores = [K.synflow_scores, K.synflow_scores_reference]
    prune = [K.synflow_prune, K.synflow_prune_reference]
    return ([lambda ws, bs, masks=None, f=f: f(ws, bs, masks) for f in scores]
            + [lambda ws, bs, masks=None, f=f: f(ws, bs, 0.0, rounds=2, masks=masks) for f in prune])


NETWORK_FNS = [lambda ws, bs, masks=None: K.magnitude_scores(ws, bs),
               lambda ws, bs, masks=None: K.grad_times_weight_scores(ws, bs, [None] * len(bs), [None] * len(bs))
               ] + _synflow_fns()
NETWORK_DEFECTS = ["empty", "tensor for the list", "list for a tensor", "bool weights", "int biases", "complex weights",
                   "bias shape", "chain", "inf weight", "nan bias", "one bias short", "no networks", "mixed stacking"]


def _defective_network(defect, ws, bs, l, M):
    """(weights, biases, the argument the error must name) with one defect in layer l; None: not applicable."""
    ws, bs = [w.clone() for w in ws], [b.clone() for b in bs]
    later = max(l, 1)  # layer 0 sets the input width and the (plain or stacked) form
    if defect == "empty":
        return [], [], "weights"
    if defect == "tensor for the list":
        return ws[0], bs, "weights"
    if defect == "list for a tensor":
        ws[l] = ws[l].tolist()
        return ws, bs, f"weights[{l}]"
    if defect == "bool weights":
        ws[l] = ws[l] > 0
        return ws, bs, f"weights[{l}]"
    if defect == "int biases":
        bs[l] = bs[l].to(torch.int32)
        return ws, bs, f"biases[{l}]"
    if defect == "complex weights":
        ws[l] = ws[l].to(torch.complex128)
        return ws, bs, f"weights[{l}]"
    if defect == "bias shape":
        bs[l] = torch.cat([bs[l], bs[l][..., :1]], dim=-1)
        return ws, bs, f"biases[{l}]"
    if defect == "chain" and len(ws) > 1:
        ws[later] = torch.cat([ws[later], ws[later][..., :1]], dim=-1)
        return ws, bs, f"weights[{later}]"
    if defect == "inf weight":
        ws[l].reshape(-1)[-1] = -math.inf
        return ws, bs, f"weights[{l}]"
    if defect == "nan bias":
        bs[l].reshape(-1)[0] = math.nan
        return ws, bs, f"biases[{l}]"
    if defect == "one bias short":
        return ws, bs[:-1], "biases"
    if defect == "no networks" and M:
        return [w[:0] for w in ws], [b[:0] for b in bs], "weights[0]"
    if defect == "mixed stacking" and len(ws) > 1:
        ws[later], bs[later] = (ws[later][0], bs[later][0]) if M else (ws[later][None], bs[later][None])
        return ws, bs, f"weights[{later}]"
    return None


@FAST
@given(widths=widths_st, M=st.sampled_from([None, 2]), defect=st.sampled_from(NETWORK_DEFECTS),
       layer=st.integers(0, 4), seed=st.integers(0, 100))
def test_network_arguments_are_checked(backend, widths, M, defect, layer, seed):
    ws, bs, _ = _net(seed, widths, M)
    case = _defective_network(defect, ws, bs, layer % len(ws), M)
    assume(case is not None)
    bad_ws, bad_bs, name = backend.to(case)
    for fn in NETWORK_FNS:
        with _names(name):
            fn(bad_ws, bad_bs)


@FAST
@given(widths=widths_st, M=st.sampled_from([None, 2]), defect=st.sampled_from(["float", "shape", "count", "pair"]),
       layer=st.integers(0, 4), seed=st.integers(0, 100))
def test_synflow_mask_arguments_are_checked(backend, widths, M, defect, layer, seed):
    ws, bs, masks = backend.to(_net(seed, widths, M))
    l = layer % len(ws)
    masks = list(masks)
    if defect == "float":
        masks[l], name = (masks[l][0].double(), masks[l][1]), f"masks[{l}][0]"
    elif defect == "shape":
        masks[l], name = (masks[l][0], masks[l][1][..., :-1]), f"masks[{l}][1]"
    elif defect == "count":
        masks, name = masks[:-1], "masks"
    else:
        masks[l], name = masks[l][0], f"masks[{l}]"
    for fn in _synflow_fns():
        with _names(name):
            fn(ws, bs, masks)


@FAST
@given(widths=widths_st, M=st.sampled_from([None, 2]),
       defect=st.sampled_from(["shape", "bool", "inf", "short", "tensor"]), layer=st.integers(0, 4),
       seed=st.integers(0, 100))
def test_gradient_arguments_are_checked(backend, widths, M, defect, layer, seed):
    ws, bs, _ = backend.to(_net(seed, widths, M))
    l = layer % len(ws)
    gws, gbs = [torch.ones_like(w) for w in ws], [None] * len(bs)
    if defect == "shape":
        gws[l], name = gws[l][..., :-1], f"weight_grads[{l}]"
    elif defect == "bool":
        gbs[l], name = torch.ones_like(bs[l], dtype=torch.bool), f"bias_grads[{l}]"
    elif defect == "inf":
        gws[l].reshape(-1)[0], name = math.inf, f"weight_grads[{l}]"
    elif defect == "short":
        gbs, name = gbs[:-1], "bias_grads"
    else:
        gws, name = torch.ones(3, device=backend.device), "weight_grads"
    with _names(name):
        K.grad_times_weight_scores(ws, bs, gws, gbs)
    # valid: all gradients missing scores 0, a gradient of ones gives |w|
    g = K.grad_times_weight_scores(ws, bs, [torch.ones_like(w) for w in ws], [None] * len(bs))
    assert all(torch.equal(s, w.abs()) and not bool(sb.any()) for (s, sb), w in zip(g, ws))


def test_magnitude_scores_from_the_issue():
    with _names("weights[0]"):
        K.magnitude_scores([torch.ones(1, 6, dtype=torch.bool)], [torch.ones(1, dtype=torch.int32)])


@FAST
@given(widths=widths_st, M=st.sampled_from([None, 2]), layer=st.integers(0, 4), where=st.sampled_from(["w", "b"]),
       value=st.sampled_from([math.inf, -math.inf, math.nan]), masked=st.booleans(), seed=st.integers(0, 100))
def test_synflow_rejects_non_finite_parameters(backend, widths, M, layer, where, value, masked, seed):
    ws, bs, masks = backend.to(_net(seed, widths, M))
    l = layer % len(ws)
    t, m, name = (ws[l], masks[l][0], f"weights[{l}]") if where == "w" else (bs[l], masks[l][1], f"biases[{l}]")
    t.reshape(-1)[0] = value
    m.reshape(-1)[0] = not masked  # a pruned parameter must be finite too (the reference multiplies it by 0)
    for fn in _synflow_fns():
        with _names(name):
            fn(ws, bs, masks)
        with _names(name):
            fn(ws, bs)


@FAST
@given(depth=st.integers(3, 5), M=st.sampled_from([None, 2]), scale=st.sampled_from([1e120, 1e200, 1e300]),
       width=st.integers(1, 4))
def test_synflow_rejects_a_flow_that_overflows(backend, depth, M, scale, width):
    lead = () if M is None else (M,)
    ws = backend.to([torch.full((*lead, width, width), scale, dtype=torch.float64) for _ in range(depth)])
    bs = backend.to([torch.zeros(*lead, width, dtype=torch.float64) for _ in range(depth)])
    for fn in _synflow_fns():
        with _names("weights"):
            fn(ws, bs)
    # with layer 0 of moderate weights and the huge weights after it pruned the flow is finite: valid (the
    # bound on unpruned weights is not enough, the exact check decides), and native and reference agree
    ws[0] = torch.ones_like(ws[0])
    masks = backend.to([(torch.full(w.shape, l == 0), torch.ones(b.shape, dtype=torch.bool))
                        for l, (w, b) in enumerate(zip(ws, bs))])
    got = cpu(K.synflow_scores(ws, bs, masks))
    want = cpu(K.synflow_scores_reference(ws, bs, masks))
    for (a, b), (c, d) in zip(got, want):
        assert bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())
        torch.testing.assert_close(a, c, rtol=1e-12, atol=0)
        torch.testing.assert_close(b, d, rtol=1e-12, atol=0)
    assert _equal_masks(cpu(K.synflow_prune(ws, bs, 0.0, rounds=2, masks=masks)),
                        cpu(K.synflow_prune_reference(ws, bs, 0.0, rounds=2, masks=masks)))


def test_synflow_inf_weights_from_the_issue(backend):
    ws, bs, _ = _net(0, [3, 4, 2])
    ws[0][1, 1] = math.inf
    ws, bs = backend.to((ws, bs))
    for fn in (K.synflow_prune, K.synflow_prune_reference):
        with _names("weights[0]"):
            fn(ws, bs, 0.5, rounds=3)


@FAST
@given(density=bad_fraction_st, rounds=st.one_of(bad_count_st, st.just(0)), seed=st.integers(0, 100))
def test_synflow_prune_scalar_arguments_are_checked(backend, density, rounds, seed):
    ws, bs, _ = backend.to(_net(seed, [3, 4, 2]))
    for fn in (K.synflow_prune, K.synflow_prune_reference):
        with _names("density"):
            fn(ws, bs, density, rounds=2)
        with _names("rounds"):
            fn(ws, bs, 0.5, rounds=rounds)
        with _names("scope"):
            fn(ws, bs, 0.5, rounds=2, scope="row")
        with _names("prune_bias"):
            fn(ws, bs, 0.5, rounds=2, prune_bias="no")


TOPK_DEFECTS = ["empty", "bool scores", "complex scores", "pair", "no networks", "stacking", "k negative",
                "k too large", "k fractional", "k nan", "k bool", "k list", "layer k length", "layer k entry",
                "density", "eligible length", "eligible dtype", "eligible shape", "k above eligible", "scope", "both"]


def _topk_case(defect, scores, masks, l, M):
    """(scores, keyword arguments, the argument the error must name) with one defect; None: not applicable."""
    s = [list(p) for p in scores]
    L, n_net = len(s), M or 1
    counts = [sum(t.numel() // n_net for t in p if t is not None) for p in s]
    kw = dict(k=1, eligible=None, scope="global")
    later = max(l, 1)
    if defect == "empty":
        return [], kw, "scores"
    if defect == "bool scores":
        s[l][0] = s[l][0] > 0
        return s, kw, f"scores[{l}][0]"
    if defect == "complex scores":
        s[l][0] = s[l][0].to(torch.complex64)
        return s, kw, f"scores[{l}][0]"
    if defect == "pair":
        s[l] = s[l][0]
        return s, kw, f"scores[{l}]"
    if defect == "no networks" and M:
        return [(w[:0], None if b is None else b[:0]) for w, b in s], kw, "scores[0][0]"
    if defect == "stacking" and M and L > 1:
        s[later][0] = s[later][0][:1]
        return s, kw, f"scores[{later}][0]"
    if defect.startswith("k "):
        k = {"k negative": -1, "k too large": sum(counts) + 1, "k fractional": 0.5, "k nan": math.nan, "k bool": True,
             "k list": [1]}.get(defect)
        if defect == "k above eligible":
            kw["eligible"] = [(torch.zeros_like(wm), torch.zeros_like(bm)) for wm, bm in masks]  # nothing eligible
            k = 1
        return s, dict(kw, k=k), "k"
    if defect == "layer k length":
        return s, dict(kw, k=[0] * (L + 1), scope="layer"), "k"
    if defect == "layer k entry":
        k = [0] * L
        k[l] = counts[l] + 1
        return s, dict(kw, k=k, scope="layer"), f"k[{l}]"
    if defect == "density":
        return s, dict(kw, k=None, density=1.5), "density"
    if defect == "both":
        return s, dict(kw, density=0.5), "density"
    if defect == "scope":
        return s, dict(kw, scope="row"), "scope"
    el = [list(p) for p in masks]
    if defect == "eligible length":
        return s, dict(kw, eligible=el[:-1]), "eligible"
    if defect == "eligible dtype":
        el[l][0] = el[l][0].float()
        return s, dict(kw, eligible=el), f"eligible[{l}][0]"
    if defect == "eligible shape":
        el[l][0] = el[l][0][..., :-1]
        return s, dict(kw, eligible=el), f"eligible[{l}][0]"
    return None


@FAST
@given(widths=widths_st, M=st.sampled_from([None, 3]), with_bias=st.booleans(), defect=st.sampled_from(TOPK_DEFECTS),
       layer=st.integers(0, 4), seed=st.integers(0, 100))
def test_topk_arguments_are_checked(backend, widths, M, with_bias, defect, layer, seed):
    ws, bs, masks = backend.to(_net(seed, widths, M))
    scores = [(w.abs(), b.abs() if with_bias else None) for w, b in zip(ws, bs)]
    case = _topk_case(defect, scores, masks, layer % len(ws), M)
    assume(case is not None)
    bad, kw, name = case
    for fn in (K.global_topk, K.global_topk_reference):
        with _names(name):
            fn(bad, **kw)


@FAST
@given(n=st.integers(1, 30), defect=st.sampled_from(["bool", "k missing", "k negative", "k too large", "k fractional",
                                                     "eligible shape", "eligible dtype", "k above eligible"]))
def test_flat_topk_arguments_are_checked(backend, n, defect):
    s, k, el, name = torch.arange(n, dtype=torch.float64), 1, None, "k"
    if defect == "bool":
        s, name = s > 0, "scores"
    elif defect == "k missing":
        k = None
    elif defect == "k negative":
        k = -1
    elif defect == "k too large":
        k = n + 1
    elif defect == "k fractional":
        k = 0.5
    elif defect == "eligible shape":
        el, name = torch.ones(n + 1, dtype=torch.bool), "eligible"
    elif defect == "eligible dtype":
        el, name = torch.ones(n), "eligible"
    else:
        el = torch.zeros(n, dtype=torch.bool)
    s, el = backend.to((s, el))
    for fn in (K.global_topk, K.global_topk_reference):
        with _names(name):
            fn(s, k, el)


def test_topk_from_the_issue(backend):
    for fn in (K.global_topk, K.global_topk_reference):
        with _names("scores[0][0]"):
            fn([(torch.zeros(0, 1, 5, device=backend.device), None)], k=[0], scope="layer")


@FAST
@given(widths=st.lists(st.integers(0, 6), min_size=2, max_size=4), M=st.sampled_from([None, 1, 3]),
       scope=st.sampled_from(["global", "layer"]), with_bias=st.booleans(), frac=st.sampled_from([0.0, 0.5, 1.0]),
       seed=st.integers(0, 100))
def test_topk_and_synflow_valid_edges(backend, widths, M, scope, with_bias, frac, seed):
    """Zero-size layers, k = 0 and k = n, integer scores: every implementation gives the same exact masks."""
    ws, bs, _ = _net(seed, widths, M)
    gen = torch.Generator().manual_seed(seed)
    scores = [(torch.randint(0, 3, w.shape, generator=gen),
               torch.randint(0, 3, b.shape, generator=gen) if with_bias else None) for w, b in zip(ws, bs)]
    n_net = M or 1
    counts = [sum(t.numel() // n_net for t in p if t is not None) for p in scores]
    k = int(frac * sum(counts)) if scope == "global" else [int(frac * c) for c in counts]
    want = K.global_topk_reference(scores, k, scope=scope)
    float_scores = [(w.double(), None if b is None else b.double()) for w, b in scores]
    for fn in (K.global_topk, K.global_topk_reference):
        assert _equal_masks(cpu(fn(backend.to(scores), k, scope=scope)), want)
        assert _equal_masks(cpu(fn(backend.to(float_scores), k, scope=scope)), want)
    kept = sum(int(wm.sum()) + (int(bm.sum()) if with_bias else 0) for wm, bm in want)
    assert kept == n_net * (k if scope == "global" else sum(k))
    want = K.synflow_prune_reference(ws, bs, frac, rounds=2, scope=scope, prune_bias=with_bias)
    got = [cpu(fn(*backend.to((ws, bs)), frac, rounds=2, scope=scope, prune_bias=with_bias))
           for fn in (K.synflow_prune, K.synflow_prune_reference)]
    assert _equal_masks(got[0], want) and _equal_masks(got[1], want)


def _sorted_kth(x: torch.Tensor, k: list[int]) -> torch.Tensor:
    top = torch.topk(x, max(k), dim=1, sorted=True).values
    return top.gather(1, torch.tensor(k).sub(1).unsqueeze(1)).squeeze(1)


def _same_values(got: torch.Tensor, want: torch.Tensor) -> bool:
    return torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(nan=0.0), want.nan_to_num(nan=0.0))


@settings(max_examples=80, deadline=None)
@given(rows=st.integers(1, 6), n=st.integers(1, 40), seed=st.integers(0, 10_000),
       dtype=st.sampled_from([torch.float32, torch.float64]), specials=st.booleans(), ties=st.booleans())
def test_rows_kth_largest_is_the_sorted_top_k(rows, n, seed, dtype, specials, ties):
    """Edge-popup's per-run thresholds, native and reference, are exactly the k-th value of a sorted top k with
    -inf (ineligible scores), +inf, NaN (ranked largest) and ties: the masks of every search step follow."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, generator=g, dtype=dtype)
    if ties:
        x = x.round()
    if specials:
        for value, share in ((-math.inf, 0.3), (math.inf, 0.1), (math.nan, 0.1)):
            x[torch.rand(rows, n, generator=g) < share] = value
    k = torch.randint(1, n + 1, (rows,), generator=g).tolist()
    want = _sorted_kth(x, k)
    for got in (K.rows_kth_largest(x, k), K.rows_kth_largest_reference(x, k)):
        assert got.dtype == dtype and got.shape == (rows,)
        assert _same_values(got, want)


def test_rows_kth_largest_native_on_long_rows_with_mixed_counts():
    """Rows of edge-popup's size (one layer of width 100), a count per row from 1 to all, NaN in one row."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 10_100, generator=g).abs()
    x[4, 17] = math.nan
    k = [1, 101, 1010, 5050, 5050, 10_100, 10_099, 2, 10_100]
    assert native.cpu_module() is not None
    want = _sorted_kth(x, k)
    assert _same_values(K.rows_kth_largest(x, k), want)
    assert _same_values(K.rows_kth_largest(x.double(), k), _sorted_kth(x.double(), k))
    assert _same_values(K.rows_kth_largest_reference(x, k), want)


def test_rows_kth_largest_refuses_bad_arguments():
    x = torch.ones(2, 3)
    with pytest.raises(K.ArgumentError, match=r"k\[1\] = 4 is outside \[1, 3\]"):
        K.rows_kth_largest(x, [1, 4])
    with pytest.raises(K.ArgumentError, match=r"k\[0\] = 0"):
        K.rows_kth_largest(x, [0, 1])
    with pytest.raises(K.ArgumentError, match="one count per row"):
        K.rows_kth_largest(x, [1])
    with pytest.raises(K.ArgumentError, match="matrix"):
        K.rows_kth_largest(torch.ones(3), [1])
    with pytest.raises(K.ArgumentError, match="values"):
        K.rows_kth_largest(torch.ones(2, 3, dtype=torch.int64), [1, 1])


# ------------------------------------------------------------------------------ edge-popup's batched search

def _search_problem(seed, M, shapes, dtype, masked):
    """Scored parameters (M, R, C) with weights, eligibility, transposed gradient buffers and their groups."""
    gen = torch.Generator().manual_seed(seed)
    scores, weights, eligible, bufs, grads = [], [], [], [], []
    for R, C in shapes:
        s = torch.randn(M, R, C, generator=gen, dtype=dtype)
        s[torch.rand(s.shape, generator=gen) < 0.05] = 0.0  # zero scores: no sign, no gradient
        scores.append(s)
        weights.append(torch.randn(M, R, C, generator=gen, dtype=dtype))
        eligible.append(torch.rand(M, R, C, generator=gen) < 0.7 if masked else None)
        b = torch.empty(M, C, R, dtype=dtype)  # the backward's (M, in, out) product, read transposed
        bufs.append(b)
        grads.append(b.transpose(1, 2))
    return scores, weights, eligible, bufs, grads


@needs_native
@FAST
@given(seed=st.integers(0, 2**16), M=st.integers(1, 4),
       shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=3),
       dtype=st.sampled_from([torch.float32, torch.float64]), masked=st.booleans(), one_group=st.booleans(),
       momentum=st.sampled_from([0.0, 0.9]), decay=st.sampled_from([0.0, 5e-4]))
def test_score_search_native_is_its_reference_bitwise(seed, M, shapes, dtype, masked, one_group, momentum, decay):
    runs = []
    for make in (K.score_search, K.score_search_reference):
        scores, weights, eligible, bufs, grads = _search_problem(seed, M, shapes, dtype, masked)
        J = len(shapes)
        groups = [list(range(J))] if one_group else [[j] for j in range(J)]
        search = make(scores, weights, eligible, grads, groups, momentum=momentum, weight_decay=decay)
        sizes = [sum(shapes[j][0] * shapes[j][1] for j in g) for g in groups]
        gen = torch.Generator().manual_seed(seed + 1)
        trace = []
        for step in range(3):
            k = np.array([[int(torch.randint(1, P + 1, (), generator=gen)) for _ in range(M)] for P in sizes])
            if masked:  # at most the eligible count of each run and group
                elig = [torch.cat([eligible[j].reshape(M, -1) for j in g], 1).sum(1) for g in groups]
                k = np.minimum(k, np.maximum(1, np.array([e.numpy() for e in elig])))
            trace += [e.clone() for e in search.forward(k)]
            for b in bufs:
                b.copy_(torch.randn(b.shape, generator=gen, dtype=dtype))
            search.step(0.1 / (step + 1), first=step == 0)
            trace += [s.clone() for s in scores] + [m.clone() for m in search.mags] + [b.clone() for b in search.buffers]
        runs.append((search.native, trace))
    (native_used, got), (ref_used, want) = runs
    assert native_used and not ref_used
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0))
        assert torch.equal(torch.signbit(a), torch.signbit(b))  # zeros keep their sign


@pytest.mark.parametrize("make", [K.score_search, K.score_search_reference])
def test_score_search_effective_weights_and_step(make):
    s = torch.tensor([[[3.0, -1.0, 0.5, 2.0]]])  # one run, one (1, 4) parameter
    w = torch.tensor([[[10.0, 20.0, 30.0, 40.0]]])
    gbuf = torch.tensor([[[1.0], [1.0], [1.0], [1.0]]])  # (M, C, R): read transposed
    search = make([s], [w], [None], [gbuf.transpose(1, 2)], [[0]], momentum=0.0, weight_decay=0.0)
    (eff,) = search.forward(np.array([[2]]))  # keeps |3| and |2|
    assert eff.tolist() == [[[10.0, 0.0, 0.0, 40.0]]]
    search.step(0.5, first=True)  # s -= 0.5 * w * sgn(s) * 1
    assert s.tolist() == [[[-2.0, 9.0, -14.5, -18.0]]]
    assert search.mags[0].tolist() == [[2.0, 9.0, 14.5, 18.0]]


@needs_native
def test_score_search_refuses_bad_arguments():
    s, w = torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)
    g = torch.zeros(2, 4, 3).transpose(1, 2)
    with pytest.raises(ValueError, match="groups"):
        K.score_search([s], [w], [None], [g], [[0], [0]], momentum=0.9, weight_decay=0.0)
    with pytest.raises(ValueError, match="weights"):
        K.score_search([s], [torch.zeros(2, 4, 3)], [None], [g], [[0]], momentum=0.9, weight_decay=0.0)
    with pytest.raises(ValueError, match="weights"):
        K.score_search([s], [w.double()], [None], [g], [[0]], momentum=0.9, weight_decay=0.0)
    with pytest.raises(ValueError, match="eligible"):
        K.score_search([s], [w], [torch.ones(2, 3, 4)], [g], [[0]], momentum=0.9, weight_decay=0.0)
    with pytest.raises(ValueError, match="scores"):
        K.score_search([s.transpose(1, 2)], [w], [None], [g], [[0]], momentum=0.9, weight_decay=0.0)
    with pytest.raises(ValueError, match="momentum"):
        K.score_search([s], [w], [None], [g], [[0]], momentum=-1.0, weight_decay=0.0)
    search = K.score_search([s], [w], [None], [g], [[0]], momentum=0.9, weight_decay=0.0)
    assert search.native
    with pytest.raises(ValueError, match="outside"):
        search.forward(np.array([[13, 1]]))
    with pytest.raises(ValueError, match="k"):
        search.forward(np.array([1, 1]))


@needs_native
@FAST
@given(seed=st.integers(0, 2**16), M=st.integers(1, 3), P=st.integers(1, 300),
       dtype=st.sampled_from([torch.float32, torch.float64]), levels=st.sampled_from([0, 3, 50]),
       lr=st.sampled_from([1e-4, 1e-2, 1.0]))
def test_score_search_thresholds_from_the_previous_ones_are_exact(seed, M, P, dtype, levels, lr):
    """The native forward starts each threshold's selection near the previous step's (a band that narrows on a
    hit and widens on a miss): over many small and large steps, with ties (few distinct levels), zeros and
    counts that change, every threshold is the k-th largest magnitude."""
    gen = torch.Generator().manual_seed(seed)
    s = torch.rand(1, M, P, generator=gen, dtype=dtype).transpose(0, 1).contiguous()  # (M, 1, P)
    if levels:
        s = torch.floor(s * levels) / levels
    w = torch.ones_like(s)
    gbuf = torch.empty(M, P, 1, dtype=dtype)
    search = K.score_search([s], [w], [None], [gbuf.transpose(1, 2)], [[0]], momentum=0.9, weight_decay=0.0)
    for step in range(12):
        k = np.array([[int(torch.randint(1, P + 1, (), generator=gen)) if step % 5 == 0 else max(1, P // 3)
                       for _ in range(M)]])
        search.forward(k)
        want = K.rows_kth_largest_reference(search.mags[0], k[0].tolist())
        assert torch.equal(search.thresholds()[0], want), step
        gbuf.copy_(torch.randn(gbuf.shape, generator=gen, dtype=dtype) * (1.0 if levels == 0 else 0.0))
        search.step(lr, first=step == 0)
