"""Planting: the masked host computes output_scale x ticket exactly, tickets hide, errors are clear."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import plantseek
from plantseek import plant, tasks
from plantseek.masks import count
from plantseek.kernels.planting_search import plant_search_reference
from plantseek.tickets import univariate


def relative_error(net, ticket, x):
    got = net.forward(x, net.ticket_mask)
    want = net.output_scale * ticket(x)
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


def probe_inputs(task, n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, task.input_dim, generator=g, dtype=torch.float64) * 2 - 1


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(["relu", "circle", "helix"]),
    depth=st.integers(2, 10),
    extra=st.integers(0, 60),
    seed=st.integers(0, 2**31 - 1),
    uneven=st.booleans(),
)
def test_masked_host_equals_scaled_ticket(name, depth, extra, seed, uneven):
    task = tasks.get(name)
    ticket = task.ticket(depth)
    need = ticket.widths[1:-1]
    g = np.random.default_rng(seed)
    widths = [n + (int(g.integers(0, extra + 1)) if uneven else extra) for n in need]
    net = plant(ticket, width=widths, seed=seed)
    assert net.widths[1:-1] == widths
    assert relative_error(net, ticket, probe_inputs(task, seed=seed)) <= 1e-9
    assert net.output_scale > 0
    assert count(net.ticket_mask) == ticket.nnz


@pytest.mark.parametrize("width", [100, 2000])
@pytest.mark.parametrize("name", ["relu", "circle", "helix"])
def test_exact_at_large_widths(name, width):
    task = tasks.get(name)
    ticket = task.ticket(4)
    net = plant(ticket, width=width, seed=1)
    assert relative_error(net, ticket, probe_inputs(task)) <= 1e-9


def test_planted_ticket_keeps_its_class_decisions():
    task = tasks.get("circle")
    data = task.data(n=5000, seed=2)
    for depth in (2, 4, 6):
        ticket = task.ticket(depth)
        net = plant(ticket, width=100, seed=3)
        assert torch.equal(net(data.x_test, net.ticket_mask).argmax(1), ticket(data.x_test).argmax(1))


def test_unmasked_host_differs_and_non_ticket_weights_stay_random():
    ticket = tasks.get("circle").ticket(4)
    a = plant(ticket, width=100, seed=0)
    b = plant(ticket, width=100, seed=0)
    c = plant(ticket, width=100, seed=1)
    for wa, wb, wc in zip(a.weights, b.weights, c.weights):
        assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    from plantseek import host_init
    w0, _ = host_init.get("he-scaled")(a.widths, torch.Generator().manual_seed(0))
    for (wm, _), w, orig in zip(a.ticket_mask, a.weights, w0):
        assert torch.equal(w[~wm], orig[~wm])  # only ticket positions were overwritten


@pytest.mark.parametrize("name", ["circle", "helix"])
@pytest.mark.parametrize("depth", [2, 4, 6])
def test_ticket_weights_are_hidden(name, depth):
    pct = [plant(tasks.get(name).ticket(depth), width=100, seed=s).hiding["median_percentile"] for s in range(3)]
    assert all(0.2 <= p <= 0.8 for p in pct), pct


def test_magnitude_of_output_scale_follows_median_rule():
    ticket = tasks.get("helix").ticket(2)
    net = plant(ticket, width=100, seed=0)
    wm = net.ticket_mask[-1][0]
    planted = net.weights[-1][wm].abs().median()
    from plantseek import host_init
    w0, _ = host_init.get("he-scaled")(net.widths, torch.Generator().manual_seed(0))
    assert float(planted) == pytest.approx(float(w0[-1][wm].abs().median()), rel=0.05)


def test_errors_name_the_problem_and_minimum():
    ticket = tasks.get("circle").ticket(2)
    with pytest.raises(ValueError, match="at least 18"):
        plant(ticket, width=10)
    with pytest.raises(ValueError, match="minimum depth: 4"):
        plant(tasks.get("circle").ticket(4), depth=3)
    with pytest.raises(ValueError, match="unknown task"):
        plant("spiral")
    with pytest.raises(ValueError, match="depth >= 2"):
        tasks.get("relu").ticket(1)
    with pytest.raises(ValueError, match="unknown init"):
        plant(ticket, init="xavier-magic")
    with pytest.raises(ValueError, match="one entry per hidden layer"):
        plant(ticket, width=[100, 100])


def test_task_name_and_deeper_host():
    net = plant("relu", width=20, depth=5, seed=0)
    assert net.depth == 5 and net.ticket.depth == 5
    user = univariate(lambda s: s * s, knots=8, depth=2)
    deep = plant(user, width=30, depth=6, seed=0)  # deepened with (+, -) pairs
    x = torch.linspace(-1, 1, 50, dtype=torch.float64)[:, None]
    assert relative_error(deep, deep.ticket, x) <= 1e-9
    assert torch.allclose(deep.ticket(x), user(x), atol=1e-12)


def test_save_load_roundtrip(tmp_path):
    net = plant(tasks.get("helix").ticket(3), width=40, seed=4)
    path = tmp_path / "net.pt"
    net.save(path)
    back = plantseek.load(path)
    x = torch.rand(10, 1, dtype=torch.float64)
    assert torch.equal(back(x, back.ticket_mask), net(x, net.ticket_mask))
    assert back.output_scale == net.output_scale and back.hiding == net.hiding
    (tmp_path / "junk.pt").write_bytes(b"not a network")
    with pytest.raises(ValueError, match="not a plantseek planted network"):
        plantseek.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        plantseek.load(tmp_path / "missing.pt")


def test_to_module_and_to_dtype():
    net = plant(tasks.get("circle").ticket(3), width=30, seed=0)
    x = torch.rand(7, 2, dtype=torch.float64)
    mod = net.to_module(net.ticket_mask)
    assert torch.allclose(mod(x), net(x, net.ticket_mask))
    f32 = net.to("cpu", "float32")
    assert f32.weights[0].dtype == torch.float32 and f32(x.float()).dtype == torch.float32
    with pytest.raises(ValueError, match="CUDA|cuda"):
        if not torch.cuda.is_available():
            net.to("cuda")
        else:
            raise ValueError("cuda present")


def test_search_reference_prefers_sign_matching_closest_neuron():
    host_w = np.array([[1.0, -1.0], [2.0, 2.0], [0.5, -0.6], [1.0, -1.0]])
    host_b = np.array([0.1, 0.1, 0.1, -0.1])
    used = np.zeros(4, dtype=np.uint8)
    # one ticket neuron with weights (1, -1) on columns (0, 1) and bias 0.1
    chosen, lam, matched = plant_search_reference(host_w, host_b, np.array([0, 2]), np.array([0, 1]),
                                                  np.array([1.0, -1.0]), np.array([0.1]), np.array([1], np.uint8), used)
    assert chosen.tolist() == [0] and lam[0] == pytest.approx(1.0) and matched[0] == 1
    assert used.tolist() == [1, 0, 0, 0]
    # a second identical request takes the next best sign match (neuron 2, scaled)
    chosen, lam, matched = plant_search_reference(host_w, host_b, np.array([0, 2]), np.array([0, 1]),
                                                  np.array([1.0, -1.0]), np.array([0.1]), np.array([1], np.uint8), used)
    assert chosen.tolist() == [2] and matched[0] == 1


def test_hiding_statistics_match_scipy():
    from scipy.stats import ks_2samp

    for name, depth in [("circle", 4), ("helix", 3), ("relu", 5)]:
        net = plant(tasks.get(name).ticket(depth), width=60, seed=depth)
        for (wm, _), w, layer in zip(net.ticket_mask, net.weights, net.hiding["layers"]):
            mags, m = w.abs().flatten(), wm.flatten()
            assert layer["ks"] == pytest.approx(ks_2samp(mags[m].numpy(), mags[~m].numpy()).statistic, abs=1e-12)
            pct = (mags[None, :] <= mags[m][:, None]).double().mean(1)
            assert layer["median_percentile"] == pytest.approx(float(pct.median()), abs=1e-12)


@pytest.mark.parametrize("name", ["relu", "circle", "helix"])
def test_planted_values_stay_on_the_hosts_scale(name):
    for depth in (2, 4, 6):
        net = plant(tasks.get(name).ticket(depth), width=100, seed=depth)
        for (wm, _), w in zip(net.ticket_mask, net.weights):
            host = w[~wm].abs().max()
            assert float(w[wm].abs().max()) <= 1000 * float(host)  # the 1e-16 residue bug gave 1e14


@pytest.mark.parametrize("name", ["relu", "circle", "helix"])
def test_masked_host_equals_scaled_ticket_to_1e_12(name):
    """The README's claim: not bit-equal (float64 rounding), but within 1e-12 of the largest output."""
    task = tasks.get(name)
    for depth in (2, 4, 9):
        net = plant(task.ticket(depth), width=100, seed=0)
        assert relative_error(net, net.ticket, task.data(n=2000, seed=0).x_test) <= 1e-12


def test_repr_is_short_and_names_the_task():
    net = plant(tasks.get("circle").ticket(4), width=100, seed=0)
    text = repr(net)
    assert len(text) < 300 and "tensor" not in text
    assert text.startswith("PlantedNetwork(task='circle', widths=[2, 100, 100, 100, 4]")
    assert "ticket_density=" in text and "output_scale=" in text
    assert str(net) == text
