"""Registry, options and bad-input errors of plantseek.pruners."""
import math

import pytest
import torch

from plantseek import pruners

from pruner_helpers import planted, task_data

PAPER_SET = ["random", "magnitude", "snip", "grasp", "synflow", "ticket"]


def test_available_lists_the_paper_set():
    names = pruners.available()
    assert set(PAPER_SET) <= set(names)
    assert names == sorted(names)
    desc = pruners.descriptions()
    for name in PAPER_SET:
        assert desc[name] and "\n" not in desc[name]


def test_unknown_pruner_lists_known_names():
    with pytest.raises(ValueError) as exc:
        pruners.get("no-such-pruner")
    for name in PAPER_SET:
        assert name in str(exc.value)


def test_options_are_checked():
    assert pruners.get("synflow").iterations == 100  # SynFlow's paper
    assert pruners.get("synflow", iterations=1).iterations == 1  # the Plant 'n' Seek paper's main runs
    assert pruners.get("grasp").temperature == 200.0
    assert pruners.get("snip").pruning_samples == 40
    with pytest.raises(ValueError, match="iterations"):
        pruners.get("synflow", iterations=0)
    with pytest.raises(ValueError, match="no option"):
        pruners.get("magnitude", temperature=3)
    with pytest.raises(ValueError):
        pruners.get("ticket", iterations=2)
    with pytest.raises(ValueError, match="temperature"):
        pruners.get("grasp", temperature=-1)
    p = pruners.get("magnitude")
    assert pruners.get(p) is p
    assert "synflow" in repr(pruners.get("synflow", iterations=3)) and "iterations=3" in repr(pruners.get("synflow", iterations=3))


def test_register_rejects_duplicates_and_non_pruners():
    with pytest.raises(ValueError, match="already registered"):
        @pruners.register("magnitude")
        class Again(pruners.ScorePruner):
            def scores(self, net, data, generator, mask):
                return []
    with pytest.raises(TypeError):
        pruners.register("not-a-pruner")(object)


@pytest.mark.parametrize("name", PAPER_SET)
@pytest.mark.parametrize("density", [0, -0.1, 1.5, float("nan"), float("inf"), True, "abc", None])
def test_density_outside_unit_interval(name, density, small_circle):
    net, data = small_circle
    with pytest.raises(ValueError, match="density"):
        pruners.get(name).prune(net, data, density)


def test_density_ticket_means_the_ticket_density(small_circle):
    net, data = small_circle
    m = pruners.get("magnitude").prune(net, data, "ticket")
    assert sum(int(a.sum()) + int(b.sum()) for a, b in m) == round(net.ticket_density * net.n_params)


@pytest.mark.parametrize("name", PAPER_SET)
def test_wrong_mask_shapes(name, small_circle):
    net, data = small_circle
    p = pruners.get(name, iterations=1) if name == "synflow" else pruners.get(name)
    full = [(torch.ones_like(w, dtype=torch.bool), torch.ones_like(b, dtype=torch.bool)) for w, b in zip(net.weights, net.biases)]
    with pytest.raises(ValueError, match="layers"):
        p.prune(net, data, 0.5, mask=full[:-1])
    bad = list(full)
    bad[1] = (bad[1][0].t().contiguous()[:, :-1], bad[1][1])
    with pytest.raises(ValueError, match="shape"):
        p.prune(net, data, 0.5, mask=bad)
    floats = [(a.double(), b.double()) for a, b in full]
    with pytest.raises(ValueError, match="bool"):
        p.prune(net, data, 0.5, mask=floats)


def test_bad_scope(small_circle):
    net, data = small_circle
    with pytest.raises(ValueError, match="scope"):
        pruners.get("magnitude").prune(net, data, 0.5, scope="local")


def test_data_driven_pruners_need_data(small_circle):
    net, _ = small_circle
    for name in ("snip", "grasp"):
        with pytest.raises(ValueError, match="data"):
            pruners.get(name).prune(net, None, 0.5)


def test_nan_scores_are_an_error(small_circle):
    net, data = small_circle

    class NaNScores(pruners.ScorePruner):
        def scores(self, net, data, generator, mask):
            return [(torch.full_like(w, math.nan), b.abs()) for w, b in zip(net.weights, net.biases)]

    with pytest.raises(ValueError, match="NaN"):
        NaNScores().prune(net, data, 0.5)


def test_score_shapes_are_checked(small_circle):
    net, data = small_circle

    class Wrong(pruners.ScorePruner):
        def scores(self, net, data, generator, mask):
            return [(w.abs().t(), b.abs()) for w, b in zip(net.weights, net.biases)]

    with pytest.raises(ValueError, match="score shapes"):
        Wrong().prune(net, data, 0.5)


def test_asking_for_more_than_the_current_mask_keeps(small_circle):
    net, data = small_circle
    m = pruners.get("magnitude").prune(net, data, 0.2)
    with pytest.raises(ValueError, match="never come back"):
        pruners.get("magnitude").prune(net, data, 0.5, mask=m)


@pytest.mark.parametrize("name", pruners.available())
def test_a_density_that_keeps_nothing_names_the_smallest_that_keeps_one(name, small_circle):
    net, data = small_circle  # 772 parameters, 720 weights
    opts = {"epochs": 1} if name.startswith("edge-popup") else {}
    with pytest.raises(ValueError, match=r"density 1e-12 keeps none of the 772 prunable parameters.*\(1/772\)"):
        pruners.get(name, **opts).prune(net, data, 1e-12, scope="global")
    with pytest.raises(ValueError, match=r"keeps none of the 720 .*\(1/720\)"):
        pruners.get(name, **opts).prune(net, data, 1e-12, scope="global", prune_bias=False)
    with pytest.raises(ValueError, match=r"no prunable parameter in any layer .*scope='layer'.*\(1/600\)"):
        pruners.get(name, **opts).prune(net, data, 5e-4, scope="layer")


def test_density_ticket_in_any_case(small_circle):
    net, data = small_circle
    ref = pruners.get("magnitude").prune(net, data, "ticket")
    for spelling in ("Ticket", " TICKET "):
        m = pruners.get("magnitude").prune(net, data, spelling)
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(m, ref))
    for bad in ("0.1", "tickets", "yes"):
        with pytest.raises(ValueError, match=r"density must be a number in \(0, 1\] or 'ticket', got"):
            pruners.parse_density(bad)
