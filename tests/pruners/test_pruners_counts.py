"""Exact kept counts, scopes, the bias option, deterministic ties and nested masks."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantseek import pruners
from plantseek.pruners import kept_count, topk_keep

from pruner_helpers import n_kept

SCORE_PRUNERS = ["random", "magnitude", "snip", "grasp", "synflow"]


def _expected(net, density, scope, prune_bias):
    """Expected kept prunable count per scope group."""
    if scope == "global":
        n = sum(w.numel() + (b.numel() if prune_bias else 0) for w, b in zip(net.weights, net.biases))
        return [kept_count(density, n)]
    return [kept_count(density, w.numel() + (b.numel() if prune_bias else 0)) for w, b in zip(net.weights, net.biases)]


def _counted(mask, scope, prune_bias):
    per_layer = [int(wm.sum()) + (int(bm.sum()) if prune_bias else 0) for wm, bm in mask]
    return [sum(per_layer)] if scope == "global" else per_layer


@pytest.mark.parametrize("name", SCORE_PRUNERS)
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("prune_bias", [True, False])
def test_exact_counts(name, scope, prune_bias, small_circle):
    net, data = small_circle
    p = pruners.get(name)
    for density in (1.0, 0.5, 0.1, 0.01, net.ticket_density):
        m = p.prune(net, data, density, scope=scope, prune_bias=prune_bias)
        assert len(m) == net.depth
        for (wm, bm), w, b in zip(m, net.weights, net.biases):
            assert wm.dtype == torch.bool and bm.dtype == torch.bool
            assert wm.shape == w.shape and bm.shape == b.shape and wm.device == w.device
            if not prune_bias:
                assert bool(bm.all()), "prune_bias=False keeps every bias"
        assert _counted(m, scope, prune_bias) == _expected(net, density, scope, prune_bias), (name, density)
        if density == 1.0:
            assert n_kept(m) == net.n_params


def test_ticket_oracle_returns_the_ticket_mask_exactly(small_circle):
    net, data = small_circle
    p = pruners.get("ticket")
    for density in (1.0, 0.5, 0.01, "ticket"):
        for prune_bias in (True, False):
            for scope in ("global", "layer"):
                m = p.prune(net, data, density, scope=scope, prune_bias=prune_bias)
                for (a, b), (ta, tb) in zip(m, net.ticket_mask):
                    assert torch.equal(a, ta) and torch.equal(b, tb)
    m[0][0][...] = True  # a copy: the planted network's mask is untouched
    assert not bool(net.ticket_mask[0][0].all())


def _reference_select(flat_scores, k, eligible):
    """Plain reference: sort by (-score, index) among eligible entries and keep the first k."""
    order = sorted((i for i in range(len(flat_scores)) if eligible[i]), key=lambda i: (-flat_scores[i], i))
    keep = [False] * len(flat_scores)
    for i in order[:k]:
        keep[i] = True
    return keep


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.integers(-3, 3), min_size=1, max_size=60),
    data=st.data(),
)
def test_topk_keep_matches_reference_with_ties(scores, data):
    n = len(scores)
    eligible = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    k = data.draw(st.integers(0, sum(eligible)))
    s = torch.tensor(scores, dtype=torch.float64)
    got = topk_keep(s, k, torch.tensor(eligible, dtype=torch.bool)).tolist()
    assert got == _reference_select(scores, k, eligible)
    assert sum(got) == k


class TiedScores(pruners.ScorePruner):
    """Scores from a small integer range: many ties (test helper; not registered)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def scores(self, net, data, generator, mask):
        return self.table


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31 - 1),
    density=st.floats(0.005, 1.0),
    scope=st.sampled_from(["global", "layer"]),
    prune_bias=st.booleans(),
    levels=st.integers(1, 4),
    pre_density=st.sampled_from([None, 1.0, 0.7]),
)
def test_counts_and_ties_are_exact_and_deterministic(small_circle, seed, density, scope, prune_bias, levels, pre_density):
    net, data = small_circle
    g = torch.Generator().manual_seed(seed)
    table = [
        (torch.randint(0, levels, w.shape, generator=g).double(), torch.randint(0, levels, b.shape, generator=g).double())
        for w, b in zip(net.weights, net.biases)
    ]
    current = None
    if pre_density is not None:
        current = pruners.get("random").prune(net, data, pre_density, scope=scope, prune_bias=prune_bias,
                                              generator=torch.Generator().manual_seed(seed + 1))
        density = min(density, pre_density)
    p = TiedScores(table)
    m = p.prune(net, data, density, scope=scope, prune_bias=prune_bias, mask=current)
    assert _counted(m, scope, prune_bias) == _expected(net, density, scope, prune_bias)
    again = TiedScores(table).prune(net, data, density, scope=scope, prune_bias=prune_bias, mask=current)
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(m, again))
    # same answer as the plain reference over the flat order weight0, bias0, weight1, bias1, ...
    cur = current or [(torch.ones_like(w, dtype=torch.bool), torch.ones_like(b, dtype=torch.bool)) for w, b in zip(net.weights, net.biases)]
    groups = [list(range(net.depth))] if scope == "global" else [[i] for i in range(net.depth)]
    for layers in groups:
        flat, elig, got = [], [], []
        for i in layers:
            parts = [0, 1] if prune_bias else [0]
            for j in parts:
                flat += table[i][j].reshape(-1).tolist()
                elig += cur[i][j].reshape(-1).tolist()
                got += m[i][j].reshape(-1).tolist()
        assert got == _reference_select(flat, kept_count(density, len(flat)), elig)
    ref = pruners.selection.select_reference(table, density, cur, scope=scope, prune_bias=prune_bias)
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(m, ref))
    if not prune_bias:
        assert all(torch.equal(bm, cb) for (_, bm), (_, cb) in zip(m, cur))
    if current is not None:  # pruned parameters never come back
        for (a, b), (ca, cb) in zip(m, current):
            assert not bool((a & ~ca).any()) and not bool((b & ~cb).any())


class Recording(pruners.ScorePruner):
    """Magnitude scores that record the mask of every round."""

    def __init__(self, iterations):
        super().__init__(iterations=iterations)
        self.seen = []

    def scores(self, net, data, generator, mask):
        self.seen.append([(a.clone(), b.clone()) for a, b in mask])
        return [(w.abs() * torch.rand(w.shape, generator=generator, dtype=w.dtype), b.abs()) for w, b in zip(net.weights, net.biases)]


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_iterations_follow_the_exponential_schedule_with_nested_masks(small_circle, scope):
    net, data = small_circle
    R, density = 5, 0.05
    p = Recording(R)
    final = p.prune(net, data, density, scope=scope)
    rounds = p.seen[1:] + [final]
    assert len(p.seen) == R
    prev = p.seen[0]
    assert n_kept(prev) == net.n_params
    for r, m in enumerate(rounds, start=1):
        assert _counted(m, scope, True) == _expected(net, density ** (r / R), scope, True)
        for (a, b), (pa, pb) in zip(m, prev):
            assert not bool((a & ~pa).any()) and not bool((b & ~pb).any())
        prev = m


def test_synflow_iterations_are_nested_and_exact(small_circle):
    net, data = small_circle
    m100 = pruners.get("synflow").prune(net, data, 0.02)
    m1 = pruners.get("synflow", iterations=1).prune(net, data, 0.02)
    assert n_kept(m100) == n_kept(m1) == kept_count(0.02, net.n_params)
    # multishot-style chain: each prune starts from the previous mask and stays inside it
    chain, mask = [], None
    for r in range(1, 4):
        mask = pruners.get("synflow", iterations=2).prune(net, data, 0.1 ** (r / 3), mask=mask)
        chain.append(mask)
    for a, b in zip(chain, chain[1:]):
        for (x, y), (px, py) in zip(b, a):
            assert not bool((x & ~px).any()) and not bool((y & ~py).any())


def test_random_is_seeded(small_circle):
    net, data = small_circle
    p = pruners.get("random")
    a = p.prune(net, data, 0.3, generator=torch.Generator().manual_seed(1))
    b = p.prune(net, data, 0.3, generator=torch.Generator().manual_seed(1))
    c = p.prune(net, data, 0.3, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))
    d = p.prune(net, data, 0.3)  # no generator: deterministic
    e = p.prune(net, data, 0.3)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(d, e))


def test_native_global_topk_agrees_with_the_reference_when_present():
    from plantseek.kernels.scores import global_topk as fn
    g = torch.Generator().manual_seed(0)
    for n, levels in [(1, 1), (50, 3), (1000, 5), (4097, 1000)]:
        s = torch.randint(0, levels, (n,), generator=g).double()
        elig = torch.rand(n, generator=g) < 0.8
        for k in {0, 1, int(elig.sum()) // 2, int(elig.sum())}:
            assert torch.equal(fn(s, k, elig), topk_keep(s, k, elig))


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("prune_bias", [True, False])
def test_synflow_native_rounds_equal_the_generic_rounds(small_circle, scope, prune_bias):
    """SynFlowPruner.prune (all rounds in one plantseek.kernels call) = the ScorePruner loop over `scores`."""
    net, data = small_circle
    p = pruners.get("synflow", iterations=7)
    start = pruners.get("random").prune(net, data, 0.8, scope=scope, prune_bias=prune_bias)
    for mask in (None, start):
        fast = p.prune(net, data, 0.03, scope=scope, prune_bias=prune_bias, mask=mask)
        slow = pruners.ScorePruner.prune(p, net, data, 0.03, scope=scope, prune_bias=prune_bias, mask=mask)
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(fast, slow))


def _options(name):
    return {"epochs": 1, "batch_size": 64} if name.startswith("edge-popup") else {}


@pytest.mark.parametrize("name", pruners.available())
@pytest.mark.parametrize("scope", [None, "global", "layer"])
@pytest.mark.parametrize("prune_bias", [True, False])
def test_every_registered_pruner_passes_the_protocols_mask_check(name, scope, prune_bias, small_circle):
    """`protocols.prune_run` refuses masks that are not exact; every registered pruner passes it, nested too."""
    from plantseek import protocols

    net, data = small_circle
    run = protocols.Run(label="t", net=net, data=data, pruner=pruners.get(name, **_options(name)), scope=scope,
                        prune_bias=prune_bias, prune_generator=torch.Generator().manual_seed(0))
    outer = protocols.prune_run(run, 0.5)
    inner = protocols.prune_run(run, 0.1, outer)
    assert all(bool((wm & ~ow).sum() == 0) for (wm, _), (ow, _) in zip(inner, outer))


def test_edge_popup_batched_path_passes_the_mask_check(monkeypatch):
    """prune_many's masks go through the same check (and the batched path does not fall back to one by one)."""
    import plantseek
    from plantseek import protocols, tasks

    p = pruners.get("edge-popup", epochs=1, batch_size=64)
    runs = [protocols.Run(label=f"s{s}", net=plantseek.plant("circle", width=20, depth=3, seed=s),
                          data=tasks.get("circle").data(300, 0.01, s), pruner=p, prune_bias=pb,
                          prune_generator=torch.Generator().manual_seed(s))
            for s, pb in ((0, True), (1, True))]
    monkeypatch.setattr(type(p), "prune", lambda *a, **k: pytest.fail("fell back to one by one"))
    protocols._pruned(runs, lambda r: 0.1)
    for r in runs:
        assert r.ok, r.error
        assert _counted(r.mask, "layer", True) == _expected(r.net, 0.1, "layer", True)

    class Loose(type(p)):  # a batched pruner whose masks keep too much is caught too
        def prune_many(self, nets, *a, **k):
            return [[(torch.ones_like(w, dtype=torch.bool), torch.ones_like(b, dtype=torch.bool))
                     for w, b in zip(n.weights, n.biases)] for n in nets]

    bad = [protocols.Run(label=r.label, net=r.net, data=r.data, pruner=Loose(epochs=1)) for r in runs]
    protocols._pruned(bad, lambda r: 0.1)
    assert all(isinstance(r.error, ValueError) and "pruner 'edge-popup' kept" in str(r.error)
               and "expected exactly" in str(r.error) for r in bad)
