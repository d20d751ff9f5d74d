"""Tests of `plantseek.mask_updates`: schedules, per-layer budgets and the SET/RigL drop-and-grow update."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from plantseek.mask_updates import (
    cosine_drop_fraction, drop_and_grow, layer_budgets, random_mask, update_steps, zhu_gupta_density,
)


def counts(mask, prune_bias=True):
    return [int(wm.sum()) + (int(bm.sum()) if prune_bias else 0) for wm, bm in mask]


def network(shapes, density, seed, prune_bias=True):
    """Trained-looking weights (distinct magnitudes) with pruned entries zero, and their random mask."""
    g = torch.Generator().manual_seed(seed)
    mask = random_mask(shapes, layer_budgets(shapes, density, kind="uniform", prune_bias=prune_bias), g,
                       prune_bias=prune_bias)
    ws = [torch.randn(s, generator=g, dtype=torch.float64) * wm for s, (wm, _) in zip(shapes, mask)]
    bs = [torch.randn(s[0], generator=g, dtype=torch.float64) * bm for s, (_, bm) in zip(shapes, mask)]
    return ws, bs, mask


def flat(pairs):
    return torch.cat([t.reshape(-1) for p in pairs for t in p])


shapes_st = st.lists(st.tuples(st.integers(1, 7), st.integers(1, 7)), min_size=1, max_size=4)


# ------------------------------------------------------------------------------------------------ drop and grow

@settings(max_examples=60, deadline=None)
@given(shapes=shapes_st, density=st.floats(0.05, 1.0), fraction=st.floats(0.0, 0.99),
       scope=st.sampled_from(["global", "layer"]), prune_bias=st.booleans(),
       grow=st.sampled_from(["random", "gradient"]), seed=st.integers(0, 2**16))
def test_drop_and_grow_keeps_exact_counts(shapes, density, fraction, scope, prune_bias, grow, seed):
    ws, bs, mask = network(shapes, density, seed, prune_bias)
    g = torch.Generator().manual_seed(seed + 1)
    grads = [(torch.randn(w.shape, generator=g), torch.randn(b.shape, generator=g)) for w, b in zip(ws, bs)]
    new, info = drop_and_grow(ws, bs, mask, fraction, scope=scope, prune_bias=prune_bias, grow=grow,
                              grads=grads if grow == "gradient" else None, generator=g)
    before, after = counts(mask, prune_bias), counts(new, prune_bias)
    if scope == "layer":
        assert after == before
        assert info["dropped"] == sum(round(fraction * n) for n in before)
    else:
        assert sum(after) == sum(before)
        assert info["dropped"] == round(fraction * sum(before))
    assert info["grown"] == info["dropped"]
    assert sum(counts(info["grown_mask"], prune_bias)) == info["grown"]
    for (wn, bn), (wg, bg), (wm, bm) in zip(new, info["grown_mask"], mask):
        assert wn.dtype == torch.bool and bool((wg <= wn).all()) and bool((bg <= bn).all())
        if not prune_bias:
            assert torch.equal(bn, bm) and bool(bn.all()) and not bool(bg.any())


@settings(max_examples=40, deadline=None)
@given(shapes=shapes_st, density=st.floats(0.05, 1.0), fraction=st.floats(0.0, 0.99),
       scope=st.sampled_from(["global", "layer"]), prune_bias=st.booleans(),
       grow=st.sampled_from(["random", "gradient"]), M=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_stacked_drop_and_grow_equals_one_call_per_network(shapes, density, fraction, scope, prune_bias, grow, M,
                                                           seed):
    """Networks of equal counts (one random mask per network, same budgets) in one stacked call: each network's
    new mask, grown mask and regrown count equal its own call (SET: each network draws from its generator)."""
    nets = [network(shapes, density, seed + m, prune_bias) for m in range(M)]
    g = torch.Generator().manual_seed(seed)
    grads = [[(torch.randn(w.shape, generator=g, dtype=torch.float64), torch.randn(b.shape, generator=g,
                                                                                    dtype=torch.float64))
              for w, b in zip(ws, bs)] for ws, bs, _ in nets]
    singles = [drop_and_grow(ws, bs, mask, fraction, scope=scope, prune_bias=prune_bias, grow=grow, grads=gr,
                             generator=torch.Generator().manual_seed(seed + 7 * m))
               for m, ((ws, bs, mask), gr) in enumerate(zip(nets, grads))]

    def stack(i):
        return [torch.stack([net[i][l] for net in nets]) for l in range(len(shapes))]

    W, B = stack(0), stack(1)
    mask = [(torch.stack([n[2][l][0] for n in nets]), torch.stack([n[2][l][1] for n in nets]))
            for l in range(len(shapes))]
    G = [(torch.stack([gr[l][0] for gr in grads]), torch.stack([gr[l][1] for gr in grads])) for l in range(len(shapes))]
    new, info = drop_and_grow(W, B, mask, fraction, scope=scope, prune_bias=prune_bias, grow=grow, grads=G,
                              generator=[torch.Generator().manual_seed(seed + 7 * m) for m in range(M)], stacked=True)
    for m, (one, one_info) in enumerate(singles):
        assert all(torch.equal(wn[m], wo) and torch.equal(bn[m], bo) for (wn, bn), (wo, bo) in zip(new, one))
        assert all(torch.equal(wg[m], wo) and torch.equal(bg[m], bo)
                   for (wg, bg), (wo, bo) in zip(info["grown_mask"], one_info["grown_mask"]))
        assert info["regrown"][m] == one_info["regrown"]
        assert info["dropped"] == one_info["dropped"]


def test_stacked_drop_and_grow_refuses_networks_of_different_counts():
    a, b = network([(5, 4)], 0.5, 0), network([(5, 4)], 0.25, 1)
    W, B = torch.stack([a[0][0], b[0][0]]), torch.stack([a[1][0], b[1][0]])
    mask = [(torch.stack([a[2][0][0], b[2][0][0]]), torch.stack([a[2][0][1], b[2][0][1]]))]
    with pytest.raises(ValueError, match="same number of prunable parameters"):
        drop_and_grow([W], [B], mask, 0.3, generator=[torch.Generator(), torch.Generator()], stacked=True)
    same = [(torch.stack([a[2][0][0]] * 2), torch.stack([a[2][0][1]] * 2))]
    with pytest.raises(ValueError, match="one torch.Generator per network"):
        drop_and_grow([W], [B], same, 0.3, scope="layer", generator=[torch.Generator()], stacked=True)
    with pytest.raises(ValueError, match="stacked over networks"):
        drop_and_grow([W[0]], [B[0]], [(mask[0][0][0], mask[0][1][0])], 0.3, generator=torch.Generator(),
                      stacked=True)


def test_dropped_are_the_smallest_kept_magnitudes():
    ws, bs, mask = network([(6, 5), (4, 6)], 0.6, seed=3)
    # gradients only where nothing is kept, so no dropped parameter grows back
    grads = [(torch.rand(w.shape) + 1.0) * ~wm for w, (wm, _) in zip(ws, mask)]
    grads = [(gw, (torch.rand(b.shape) + 1.0) * ~bm) for gw, b, (_, bm) in zip(grads, bs, mask)]
    new, info = drop_and_grow(ws, bs, mask, 0.3, grow="gradient", grads=grads)
    kept_before = flat(mask)
    mags = flat(list(zip(ws, bs))).abs()
    k = round(0.3 * int(kept_before.sum()))
    order = torch.argsort(torch.where(kept_before, mags, torch.full_like(mags, math.inf)))
    expected = torch.zeros_like(kept_before)
    expected[order[:k]] = True
    dropped = kept_before & ~flat(new)
    assert info["dropped"] == k == int(dropped.sum()) and info["regrown"] == 0
    assert torch.equal(dropped, expected)


def test_drop_per_layer_in_layer_scope_and_ties_drop_highest_indices():
    shapes = [(2, 3), (2, 2)]
    ws = [torch.ones(s) for s in shapes]
    bs = [torch.ones(s[0]) for s in shapes]
    mask = [(torch.ones(s, dtype=torch.bool), torch.ones(s[0], dtype=torch.bool)) for s in shapes]
    grads = [(torch.zeros(s), torch.zeros(s[0])) for s in shapes]  # growth ties too: lowest candidates regrow
    new, info = drop_and_grow(ws, bs, mask, 0.25, scope="layer", grow="gradient", grads=grads)
    # layer 0: 8 kept -> drop 2 (bias entries 0 and 1, the highest flat indices), full layer -> regrown
    assert info["dropped"] == 2 + round(0.25 * 6)
    assert info["regrown"] == info["dropped"]
    assert all(bool(wm.all()) and bool(bm.all()) for wm, bm in new)
    # with growth forced elsewhere the tie rule shows: a half-kept layer drops the highest-index ties
    ws = [torch.ones(1, 4)]
    bs = [torch.zeros(1)]
    mask = [(torch.tensor([[True, True, True, False]]), torch.tensor([False]))]
    grads = [(torch.tensor([[0.0, 0.0, 0.0, 5.0]]), torch.tensor([1.0]))]
    new, info = drop_and_grow(ws, bs, mask, 0.5, scope="layer", grow="gradient", grads=grads)
    # kept 3 -> drop round(1.5) = 2: entries 1 and 2 (equal |w|, highest indices); grow the largest |grad|: 3, bias
    assert torch.equal(new[0][0], torch.tensor([[True, False, False, True]]))
    assert bool(new[0][1].item())


def test_global_scope_moves_parameters_between_layers():
    ws = [torch.tensor([[0.1, 0.2]]), torch.tensor([[5.0, 6.0]])]
    bs = [torch.zeros(1), torch.zeros(1)]
    mask = [(torch.tensor([[True, True]]), torch.tensor([False])), (torch.tensor([[True, True]]), torch.tensor([False]))]
    grads = [(torch.zeros(1, 2), torch.tensor([0.0])), (torch.zeros(1, 2), torch.tensor([9.0]))]
    new, info = drop_and_grow(ws, bs, mask, 0.25, scope="global", grow="gradient", grads=grads)
    assert info["dropped"] == 1
    assert torch.equal(new[0][0], torch.tensor([[False, True]]))  # 0.1 dropped from layer 0
    assert bool(new[1][1].item()) and counts(new) == [1, 3]  # grown into layer 1's bias


@settings(max_examples=30, deadline=None)
@given(shapes=shapes_st, density=st.floats(0.1, 0.9), fraction=st.floats(0.05, 0.9),
       scope=st.sampled_from(["global", "layer"]), seed=st.integers(0, 2**16))
def test_gradient_growth_picks_largest_grads_among_not_kept(shapes, density, fraction, scope, seed):
    ws, bs, mask = network(shapes, density, seed)
    g = torch.Generator().manual_seed(seed + 7)
    grads = [(torch.randn(w.shape, generator=g), torch.randn(b.shape, generator=g)) for w, b in zip(ws, bs)]
    new, info = drop_and_grow(ws, bs, mask, fraction, scope=scope, grow="gradient", grads=grads)
    grown = info["grown_mask"]
    groups = [list(range(len(shapes)))] if scope == "global" else [[i] for i in range(len(shapes))]
    for grp in groups:
        gm = flat([grown[i] for i in grp])
        nm = flat([new[i] for i in grp])
        gr = flat([grads[i] for i in grp]).abs()
        after_drop = nm & ~gm
        cand = ~after_drop
        rest = cand & ~gm
        if bool(gm.any()) and bool(rest.any()):
            # every grown |grad| is at least every non-grown candidate's |grad|
            assert float(gr[gm].min()) >= float(gr[rest].max())
        assert not bool((gm & after_drop).any())


def test_random_growth_is_deterministic_per_seed_and_differs_across_seeds():
    ws, bs, mask = network([(20, 30), (10, 20)], 0.3, seed=1)

    def run(seed):
        return drop_and_grow(ws, bs, mask, 0.3, generator=torch.Generator().manual_seed(seed))[1]["grown_mask"]

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))


def test_zero_fraction_changes_nothing():
    ws, bs, mask = network([(4, 3)], 0.5, seed=0)
    new, info = drop_and_grow(ws, bs, mask, 0.0, generator=torch.Generator().manual_seed(0))
    assert info["dropped"] == info["grown"] == 0
    assert torch.equal(flat(new), flat(mask))


@pytest.mark.parametrize("kwargs, match", [
    (dict(fraction=1.0), "fraction"),
    (dict(fraction=-0.1), "fraction"),
    (dict(grow="magic"), "grow must be one of"),
    (dict(scope="network"), "scope must be one of"),
    (dict(grow="random", generator=None), "Generator"),
    (dict(grow="gradient", grads=None), "needs grads"),
    (dict(grow="gradient", grads="bad-shape"), r"grads\[0\]\[0\] must be a tensor shaped like"),
    (dict(grow="gradient", grads="short"), "one \\(grad_w, grad_b\\) pair per layer"),
])
def test_drop_and_grow_rejects_bad_arguments(kwargs, match):
    ws, bs, mask = network([(4, 3), (2, 4)], 0.5, seed=0)
    args = dict(fraction=0.2, grow="random", generator=torch.Generator().manual_seed(0))
    args.update(kwargs)
    if args.get("grads") == "bad-shape":
        args["grads"] = [(torch.zeros(3, 4), torch.zeros(4)), (torch.zeros(2, 4), torch.zeros(2))]
    elif args.get("grads") == "short":
        args["grads"] = [(torch.zeros(4, 3), torch.zeros(4))]
    fraction = args.pop("fraction")
    with pytest.raises(ValueError, match=match):
        drop_and_grow(ws, bs, mask, fraction, **args)


def test_drop_and_grow_rejects_a_mask_of_the_wrong_shape():
    ws, bs, mask = network([(4, 3)], 0.5, seed=0)
    with pytest.raises(ValueError):
        drop_and_grow(ws, bs, [(torch.ones(3, 4, dtype=torch.bool), torch.ones(4, dtype=torch.bool))], 0.1,
                      generator=torch.Generator())


# ------------------------------------------------------------------------------------------------ schedules

def test_zhu_gupta_schedule_values():
    kw = dict(final=0.1, initial=0.9, begin=100, end=300)
    assert zhu_gupta_density(0, **kw) == 0.9
    assert zhu_gupta_density(100, **kw) == pytest.approx(0.9)
    assert zhu_gupta_density(300, **kw) == pytest.approx(0.1)
    assert zhu_gupta_density(1000, **kw) == 0.1
    s_i, s_f = 0.1, 0.9
    assert 1.0 - zhu_gupta_density(200, **kw) == pytest.approx(s_f + (s_i - s_f) / 8)
    values = [zhu_gupta_density(t, **kw) for t in range(100, 301, 10)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing on [begin, end]
    assert zhu_gupta_density(50, final=0.2, begin=0, end=100) == pytest.approx(0.2 + 0.8 / 8)


@pytest.mark.parametrize("kwargs, name", [
    (dict(final=0.0, begin=0, end=10), "final"),
    (dict(final=1.5, begin=0, end=10), "final"),
    (dict(final=0.5, initial=0.4, begin=0, end=10), "initial"),
    (dict(final=0.5, initial=1.2, begin=0, end=10), "initial"),
    (dict(final=0.5, begin=-1, end=10), "begin"),
    (dict(final=0.5, begin=10, end=10), "begin"),
])
def test_zhu_gupta_rejects_bad_options(kwargs, name):
    with pytest.raises(ValueError, match=name):
        zhu_gupta_density(5, **kwargs)


def test_cosine_drop_fraction_values():
    assert cosine_drop_fraction(0, initial=0.3, end=100) == pytest.approx(0.3)
    assert cosine_drop_fraction(50, initial=0.3, end=100) == pytest.approx(0.15)
    assert cosine_drop_fraction(100, initial=0.3, end=100) == pytest.approx(0.0, abs=1e-12)
    assert cosine_drop_fraction(101, initial=0.3, end=100) == 0.0
    assert cosine_drop_fraction(25, initial=0.3, end=100) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))


@pytest.mark.parametrize("initial", [0.0, 1.0, -0.1, 1.5])
def test_cosine_drop_fraction_rejects_initial_outside_open_interval(initial):
    with pytest.raises(ValueError, match="initial"):
        cosine_drop_fraction(0, initial=initial, end=10)


def test_update_steps_examples():
    assert update_steps(10, 3) == [3, 6, 9]
    assert update_steps(9, 3) == [3, 6]  # no update after the last step
    assert update_steps(100, 10, begin=5, end=50) == [15, 25, 35, 45]
    assert update_steps(100, 10, begin=0, end=50) == [10, 20, 30, 40, 50]
    assert update_steps(5, 10) == []
    assert update_steps(4, 1) == [1, 2, 3]


@pytest.mark.parametrize("args, kwargs, match", [
    ((10, 0), {}, "update interval must be >= 1 step"),
    ((10, -2), {}, "update interval must be >= 1 step"),
    ((10, 2), dict(begin=-1), "begin"),
    ((10, 2), dict(end=11), "the update schedule ends at step 11 but training has only 10 steps"),
    ((10, 2), dict(begin=5, end=5), "begin"),
    ((10, 2), dict(begin=10), "begin"),
])
def test_update_steps_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        update_steps(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ budgets

def total_prunable(shapes, prune_bias):
    return sum(math.prod(s) + (s[0] if prune_bias else 0) for s in shapes)


@settings(max_examples=80, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=5),
       density=st.floats(0.001, 1.0), kind=st.sampled_from(["uniform", "erk"]), prune_bias=st.booleans())
def test_layer_budgets_total_is_exact(shapes, density, kind, prune_bias):
    budgets = layer_budgets(shapes, density, kind=kind, prune_bias=prune_bias)
    assert len(budgets) == len(shapes)
    kept = sum(w + (b if prune_bias else 0) for w, b in budgets)
    assert kept == round(density * total_prunable(shapes, prune_bias))
    for (w, b), s in zip(budgets, shapes):
        assert 0 <= w <= math.prod(s) and 0 <= b <= s[0]
        if not prune_bias:
            assert b == s[0]


def test_erk_caps_small_layers_and_favours_smaller_layers():
    shapes = [(4, 3), (300, 784), (300, 300), (10, 300)]
    budgets = layer_budgets(shapes, 0.05, kind="erk")
    dens = [(w + b) / (math.prod(s) + s[0]) for (w, b), s in zip(budgets, shapes)]
    assert budgets[0] == (12, 4)  # the tiny layer would exceed density 1: dense
    # ERK density grows with sum(dims)/prod(dims) among the layers that are not dense
    ratio = [sum(s) / math.prod(s) for s in shapes]
    for i in range(1, 4):
        for j in range(1, 4):
            if ratio[i] > ratio[j]:
                assert dens[i] > dens[j]
    assert sum(w + b for w, b in budgets) == round(0.05 * total_prunable(shapes, True))
    # the uncapped layers' densities are proportional to the ERK ratios
    assert dens[1] / dens[2] == pytest.approx(ratio[1] / ratio[2], rel=1e-2)


def test_erk_conv_shapes_use_all_dims():
    shapes = [(16, 3, 3, 3), (32, 16, 3, 3)]
    budgets = layer_budgets(shapes, 0.2, kind="erk", prune_bias=False)
    assert sum(w for w, _ in budgets) == round(0.2 * (16 * 27 + 32 * 144))
    assert [b for _, b in budgets] == [16, 32]
    assert budgets[0][0] / 432 > budgets[1][0] / 4608


def test_uniform_budgets_equal_densities():
    shapes = [(100, 784), (100, 100), (10, 100)]
    budgets = layer_budgets(shapes, 0.1, kind="uniform", prune_bias=True)
    assert budgets == [(7840, 10), (1000, 10), (100, 1)]
    budgets = layer_budgets([(7, 3), (5, 5)], 0.5, kind="uniform", prune_bias=False)
    assert sum(w for w, _ in budgets) == round(0.5 * 46) and abs(budgets[0][0] - 10.5) <= 1
    assert abs(budgets[1][0] - 12.5) <= 1


def test_layer_budgets_full_density_is_dense():
    shapes = [(5, 3), (2, 5)]
    for kind in ("uniform", "erk"):
        assert layer_budgets(shapes, 1.0, kind=kind) == [(15, 5), (10, 2)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(density=0.0), "density"), (dict(density=1.5), "density"), (dict(density=0.5, kind="er"), "kind"),
])
def test_layer_budgets_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layer_budgets([(3, 3)], **kwargs)


def test_layer_budgets_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shapes"):
        layer_budgets([(3,)], 0.5)
    with pytest.raises(ValueError, match="shapes"):
        layer_budgets([], 0.5)


# ------------------------------------------------------------------------------------------------ random masks

@settings(max_examples=40, deadline=None)
@given(shapes=shapes_st, density=st.floats(0.01, 1.0), prune_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_random_mask_has_the_budgeted_counts(shapes, density, prune_bias, seed):
    budgets = layer_budgets(shapes, density, prune_bias=prune_bias)
    mask = random_mask(shapes, budgets, torch.Generator().manual_seed(seed), prune_bias=prune_bias)
    assert [(int(wm.sum()), int(bm.sum())) for wm, bm in mask] == [tuple(b) for b in budgets]
    assert [tuple(wm.shape) for wm, _ in mask] == [tuple(s) for s in shapes]
    assert all(wm.dtype == torch.bool and bm.dtype == torch.bool for wm, bm in mask)


def test_random_mask_is_deterministic_and_accepts_tensors():
    shapes = [(30, 20), (5, 30)]
    budgets = layer_budgets(shapes, 0.3)
    a = random_mask(shapes, budgets, torch.Generator().manual_seed(1))
    b = random_mask([torch.zeros(s) for s in shapes], budgets, torch.Generator().manual_seed(1))
    c = random_mask([(torch.zeros(s), torch.zeros(s[0])) for s in shapes], budgets, torch.Generator().manual_seed(2))
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))


def test_random_mask_rejects_bias_pruning_when_biases_are_not_prunable():
    with pytest.raises(ValueError, match="prune_bias=False"):
        random_mask([(3, 3)], [(4, 2)], torch.Generator(), prune_bias=False)
    with pytest.raises(ValueError):
        random_mask([(3, 3)], [(10, 3)], torch.Generator())


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), scope=st.sampled_from(["global", "layer"]), prune_bias=st.booleans(),
       levels=st.integers(2, 6))
def test_the_drop_is_global_topks_selection_ties_included(seed, scope, prune_bias, levels):
    """What stays after the drop is `global_topk` of the magnitudes within the mask, ties included (few
    magnitude levels: many ties): the magnitude pruner's mask at the lower count."""
    from plantseek import mask_updates as mu
    from plantseek.kernels import scores as score_kernels
    from plantseek.pruners.selection import kept_count

    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (4, 5), (2, 4)]
    weights = [torch.randint(1, levels, s, generator=g).double() for s in shapes]  # few levels: many ties
    biases = [torch.randint(1, levels, (s[0],), generator=g).double() for s in shapes]
    mask = [(torch.rand(s, generator=g) < 0.6, torch.rand(s[0], generator=g) < 0.6) for s in shapes]
    weights = [w * wm for w, (wm, _) in zip(weights, mask)]
    biases = [b * bm for b, (_, bm) in zip(biases, mask)]
    sizes = [int(wm.sum()) + (int(bm.sum()) if prune_bias else 0) for wm, bm in mask]
    kept = [sum(sizes)] if scope == "global" else sizes
    stay = [n - kept_count(0.5, n) for n in kept]
    new, info = mu.drop_and_grow(weights, biases, mask, 0.5, scope=scope, prune_bias=prune_bias,
                                 generator=torch.Generator().manual_seed(seed))
    after = [(nw & ~gw, nb & ~gb) for (nw, nb), (gw, gb) in zip(new, info["grown_mask"])]
    mags = [(w.abs(), b.abs() if prune_bias else None) for w, b in zip(weights, biases)]
    ref = score_kernels.global_topk(mags, stay[0] if scope == "global" else stay, mask, scope=scope)
    for (aw, ab), (rw, rb), (_, bm) in zip(after, ref, mask):
        assert torch.equal(aw, rw)
        assert torch.equal(ab, rb if prune_bias else bm)  # unprunable biases keep their mask
