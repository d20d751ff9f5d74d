"""plantseek.metrics: recovery and connectivity, native against the PyTorch references."""

import pytest
import torch

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from plantseek import metrics, native
from plantseek.kernels import masks as mask_kernels

from validation_helpers import names, no_native

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mask(gen, widths, density):
    return [(torch.rand(widths[i + 1], widths[i], generator=gen) < density, torch.rand(widths[i + 1], generator=gen) < density)
            for i in range(len(widths) - 1)]


def test_recovery_values_by_hand():
    ticket = [(torch.tensor([[True, False], [False, False]]), torch.tensor([True, False]))]
    found = [(torch.tensor([[True, True], [False, False]]), torch.tensor([False, False]))]
    r = metrics.recovery(found, ticket)
    assert r["intersection"] == 1 and r["kept"] == 2 and r["ticket"] == 2
    assert r["precision"] == 0.5 and r["recall"] == 0.5 and r["f1"] == 0.5 and r["jaccard"] == 1 / 3
    assert r["weight_precision"] == 0.5 and r["weight_recall"] == 1.0
    assert r["ticket_survived"] is False
    assert len(r["layers"]) == 1 and r["layers"][0]["recall"] == 0.5
    empty = [(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool))]
    r0 = metrics.recovery(empty, ticket)
    assert r0["precision"] == 0.0 and r0["recall"] == 0.0 and r0["f1"] == 0.0
    r1 = metrics.recovery(ticket, ticket)
    assert r1["ticket_survived"] and r1["f1"] == 1.0 and r1["jaccard"] == 1.0


@FAST
@given(widths=st.lists(st.integers(1, 40), min_size=2, max_size=5), M=st.integers(1, 5),
       density=st.sampled_from([0.0, 0.1, 0.5, 1.0]), seed=st.integers(0, 1000))
def test_recovery_many_equals_single(widths, M, density, seed):
    gen = torch.Generator().manual_seed(seed)
    ticket = _mask(gen, widths, 0.2)
    found = [_mask(gen, widths, density) for _ in range(M)]
    many = metrics.recovery(found, ticket)
    assert isinstance(many, list) and len(many) == M
    for f, r in zip(found, many):
        single = metrics.recovery(f, ticket)
        assert single == r
        inter = sum(int((a & b).sum()) for p, q in zip(f, ticket) for a, b in zip(p, q))
        assert r["intersection"] == inter
    stacked = [(torch.stack([f[l][0] for f in found]), torch.stack([f[l][1] for f in found])) for l in range(len(ticket))]
    assert metrics.recovery(stacked, ticket) == many


@FAST
@given(widths=st.lists(st.integers(1, 30), min_size=2, max_size=6), M=st.integers(1, 4),
       density=st.sampled_from([0.0, 0.03, 0.2, 0.6, 1.0]), seed=st.integers(0, 1000))
def test_reachability_native_matches_reference(widths, M, density, seed):
    gen = torch.Generator().manual_seed(seed)
    ms = [_mask(gen, widths, density) for _ in range(M)]
    got = mask_kernels.reachability_counts(ms)
    want = mask_kernels.reachability_counts_reference(ms)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_connectivity_by_hand():
    # 2 -> 2 -> 1: input 0 feeds hidden 0; hidden 1 has a kept bias but no outgoing weight.
    w1 = torch.tensor([[True, False], [False, False]])
    b1 = torch.tensor([False, True])
    w2 = torch.tensor([[True, False]])
    b2 = torch.tensor([True])
    mask = [(w1, b1), (w2, b2)]
    c = metrics.connectivity(mask)
    assert c["kept"] == 4 and c["effective"] == 3  # w1[0,0], w2[0,0], b2; b1[1] is a dead end
    assert c["effective_density"] == 3 / 9
    assert c["dead_neurons"] == 1 and c["layer_dead"] == [1]
    assert c["layer_collapse"] is False
    assert metrics.effective_density([mask, mask]) == [3 / 9, 3 / 9]
    assert metrics.dead_neurons(mask) == 1
    collapsed = [(w1, b1), (torch.zeros(1, 2, dtype=torch.bool), b2)]
    assert metrics.layer_collapse(collapsed) is True
    assert metrics.layer_collapse([mask, collapsed]) == [False, True]


def test_bias_source_counts():
    # hidden neuron reached only through its kept bias; its outgoing weight is effective
    w1 = torch.zeros(1, 3, dtype=torch.bool)
    b1 = torch.tensor([True])
    w2 = torch.tensor([[True]])
    b2 = torch.tensor([False])
    c = metrics.connectivity([(w1, b1), (w2, b2)])
    assert c["effective"] == 2 and c["dead_neurons"] == 0


def test_errors():
    good = [(torch.ones(2, 3, dtype=torch.bool), torch.ones(2, dtype=torch.bool))]
    with pytest.raises(TypeError, match="bool"):
        metrics.effective_density([(torch.ones(2, 3), torch.ones(2))])
    with pytest.raises(ValueError, match="empty"):
        metrics.recovery([], good)
    with pytest.raises(ValueError, match="differ"):
        metrics.recovery([(torch.ones(2, 4, dtype=torch.bool), torch.ones(2, dtype=torch.bool))], good)


_names, _no_native = names, no_native


REACHABILITY = [mask_kernels.reachability_counts, _no_native(mask_kernels.reachability_counts),
                mask_kernels.reachability_counts_reference]
MASK_DEFECTS = ["empty list", "empty mask", "one mask", "float", "int bias", "shape differs", "unchained", "3-D",
                "layers differ", "not tensors", "device"]


def _defective_masks(defect, ms, i, l):
    """(masks_list, the argument the error must name) with one defect in mask i, layer l; None: not applicable."""
    ms = [list(m) for m in ms]
    wm, bm = ms[i][l]
    if defect == "empty list":
        return [], "masks_list"
    if defect == "empty mask":
        ms[i] = []
        return ms, f"masks_list[{i}]"
    if defect == "one mask":
        return ms[0], "masks_list[0]"
    if defect == "float":
        ms[i][l] = (wm.float(), bm)
        return ms, f"masks_list[{i}][{l}][0]"
    if defect == "int bias":
        ms[i][l] = (wm, bm.to(torch.int8))
        return ms, f"masks_list[{i}][{l}][1]"
    if defect == "shape differs" and i > 0:
        ms[i][l] = (wm[:, :-1], bm)
        return ms, f"masks_list[{i}][{l}][0]"
    if defect == "unchained" and l > 0:
        ms[0][l] = (torch.cat([wm, wm[:, :1]], dim=1), bm)
        return ms, f"masks_list[0][{l}][0]"
    if defect == "3-D":
        ms[0][l] = (wm[None], bm)
        return ms, f"masks_list[0][{l}]"
    if defect == "layers differ" and i > 0:
        ms[i] = ms[i][:-1]
        return ms, f"masks_list[{i}]"
    if defect == "not tensors":
        ms[i][l] = (wm.tolist(), bm)
        return ms, f"masks_list[{i}][{l}][0]"
    if defect == "device" and i > 0:
        ms[i][l] = (wm.to("meta"), bm)
        return ms, f"masks_list[{i}][{l}][0]"
    return None


@FAST
@given(widths=st.lists(st.integers(1, 6), min_size=2, max_size=4), M=st.integers(1, 3),
       defect=st.sampled_from(MASK_DEFECTS), i=st.integers(0, 2), l=st.integers(0, 3), seed=st.integers(0, 100))
def test_reachability_arguments_are_checked(widths, M, defect, i, l, seed):
    gen = torch.Generator().manual_seed(seed)
    ms = [_mask(gen, widths, 0.5) for _ in range(M)]
    case = _defective_masks(defect, ms, i % M, l % (len(widths) - 1))
    assume(case is not None)
    bad, name = case
    for fn in REACHABILITY:
        with _names(name):
            fn(bad)


def test_connectivity_arguments_are_checked():
    good = [(torch.ones(2, 3, dtype=torch.bool), torch.ones(2, dtype=torch.bool))]
    for fn in (metrics.connectivity, metrics.effective_density, metrics.dead_neurons, metrics.layer_collapse):
        with _names("masks"):
            fn([])
        with _names("masks[0][0]"):
            fn([(torch.ones(2, 3), torch.ones(2))])
        with _names("masks[1][0]"):  # stacked masks of different M
            fn([(torch.ones(2, 2, 3, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool)),
                (torch.ones(3, 4, 2, dtype=torch.bool), torch.ones(2, 4, dtype=torch.bool))])
        with _names("masks"):
            fn([(torch.ones(0, 2, 3, dtype=torch.bool), torch.ones(0, 2, dtype=torch.bool))])
        with _names("masks[1]"):
            fn([good, good[0]])
    with _names("masks_list"):
        mask_kernels.reachability_counts([])


@FAST
@given(widths=st.lists(st.integers(0, 6), min_size=2, max_size=5), M=st.integers(1, 3),
       density=st.sampled_from([0.0, 0.5, 1.0]), seed=st.integers(0, 100))
def test_reachability_of_zero_size_layers(widths, M, density, seed):
    """Layers of width 0 are valid: every implementation agrees (and nothing before a width-0 layer is
    effective)."""
    gen = torch.Generator().manual_seed(seed)
    ms = [_mask(gen, widths, density) for _ in range(M)]
    want = mask_kernels.reachability_counts_reference(ms)
    for fn in REACHABILITY:
        for a, b in zip(fn(ms), want):
            assert torch.equal(a, b)
    if 0 in widths[1:-1]:
        assert not bool(want[1][:, :2 * widths[1:-1].index(0)].any())


@pytest.mark.skipif(native.cpu_module() is None, reason="native core not built")
def test_native_reachability_validation():
    import numpy as np
    ext = native.cpu_module()
    with pytest.raises(ValueError, match="widths"):
        ext.reachability([[np.zeros((2, 3), bool), np.zeros(2, bool)]], [3])
    with pytest.raises(ValueError, match="weight mask"):
        ext.reachability([[np.zeros((2, 4), bool), np.zeros(2, bool)]], [3, 2])
    with pytest.raises(ValueError, match="2 \\* layers"):
        ext.reachability([[np.zeros((2, 3), bool)]], [3, 2])
    with pytest.raises(TypeError, match="bool"):
        ext.reachability([[np.zeros((2, 3), np.uint8), np.zeros(2, bool)]], [3, 2])


def test_recovery_and_densities_of_conv_masks():
    # Conv2d weight masks are (out, in, kh, kw); a flatten step means layers need not chain
    conv = torch.zeros(2, 1, 3, 3, dtype=torch.bool)
    conv[0, 0, 0, 0] = conv[1, 0, 1, 1] = True
    ticket = [(conv.clone(), torch.tensor([True, False])), (torch.zeros(3, 8, dtype=torch.bool), torch.ones(3, dtype=torch.bool))]
    found = [(torch.zeros_like(conv), torch.tensor([True, True])), (torch.ones(3, 8, dtype=torch.bool), torch.ones(3, dtype=torch.bool))]
    found[0][0][0, 0, 0, 0] = True
    flat = metrics.flat_recovery(found, ticket)
    # ticket: 2 + 1 + 3 = 6 kept; found: 1 + 2 + 24 + 3 = 30; both: 1 + 1 + 3 = 5
    assert flat["recall"] == pytest.approx(5 / 6) and flat["precision"] == pytest.approx(5 / 30)
    assert flat["recall_layer_0"] == pytest.approx(2 / 3) and not flat["ticket_survived"]
    d = metrics.densities(found, ticket)
    assert d["layer_density_0"] == pytest.approx(1 / 18) and d["ticket_layer_density_1"] == 0.0


# --------------------------------------------------------------------------------------------- functional recall


def _relu_net_and_inputs():
    import plantseek
    net = plantseek.plant("relu", width=20, depth=3, seed=0)
    x = torch.linspace(-1, 1, 301, dtype=torch.float64)[:, None]
    return net, x


def _other_path(net, output_sign: float):
    """Host neurons k0, k1 off the ticket's path with W0[k0, 0] > 0, W1[k1, k0] > 0 and an output weight
    W2[0, k1] of sign `output_sign`."""
    (t0,), (t1,) = net.neuron_map[0], net.neuron_map[1]
    W0, W1, W2 = net.weights
    for k1 in range(W1.shape[0]):
        if k1 == t1 or W2[0, k1] * output_sign <= 0:
            continue
        for k0 in range(W0.shape[0]):
            if k0 != t0 and W0[k0, 0] > 0 and W1[k1, k0] > 0:
                return k0, k1
    raise AssertionError("no such path in this host")


def _keep_path(net, k0, k1):
    mask = [(torch.zeros_like(w, dtype=torch.bool), torch.zeros_like(b, dtype=torch.bool))
            for w, b in zip(net.weights, net.biases)]
    mask[0][0][k0, 0] = mask[1][0][k1, k0] = mask[2][0][0, k1] = True
    return mask


def _measured(net, mask):
    return ([w * wm for w, (wm, _) in zip(net.weights, mask)], [b * bm for b, (_, bm) in zip(net.biases, mask)])


def test_functional_recall_sees_another_positive_path():
    net, x = _relu_net_and_inputs()
    mask = _keep_path(net, *_other_path(net, +1.0))
    W, B = _measured(net, mask)
    assert metrics.recovery(mask, net.ticket_mask)["recall"] == 0.0
    fr = metrics.functional_recall(W, B, net.ticket.weights, net.ticket.biases, x)
    assert fr["functional_recall"] == 1.0 and fr["recovered"] == fr["ticket_neurons"] == 3
    assert [d["functional_recall"] for d in fr["layers"]] == [1.0, 1.0, 1.0]
    flat = metrics.flat_functional_recall(W, B, net.ticket.weights, net.ticket.biases, x)
    assert flat == {"functional_recall": 1.0, "functional_recall_layer_0": 1.0, "functional_recall_layer_1": 1.0,
                    "functional_recall_layer_2": 1.0}


def test_functional_recall_needs_a_positive_factor():
    net, x = _relu_net_and_inputs()
    W, B = _measured(net, _keep_path(net, *_other_path(net, -1.0)))  # output = -c ReLU(x): hidden layers only
    fr = metrics.functional_recall(W, B, net.ticket.weights, net.ticket.biases, x)
    assert [d["functional_recall"] for d in fr["layers"]] == [1.0, 1.0, 0.0]
    assert fr["functional_recall"] == 2 / 3


def test_functional_recall_of_the_ticket_mask_and_of_nothing():
    import plantseek
    for task, depth in (("relu", 3), ("circle", 3), ("helix", 2)):
        net = plantseek.plant(task, width=40, depth=depth, seed=1)
        x = torch.rand(1500, net.widths[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
        W, B = _measured(net, net.ticket_mask)
        full = metrics.functional_recall(W, B, net.ticket.weights, net.ticket.biases, x)
        assert full["functional_recall"] == 1.0, task
        assert full["ticket_neurons"] == sum(net.ticket.widths[1:]), task
        # the host-sized ticket-masked form counts the same neurons (the others are zero there)
        same = metrics.functional_recall([w.float() for w in W], [b.float() for b in B], W, B, x.float())
        assert same["functional_recall"] == 1.0 and same["ticket_neurons"] == full["ticket_neurons"], task
        none = metrics.functional_recall([w * 0 for w in W], [b * 0 for b in B], net.ticket.weights,
                                         net.ticket.biases, x)
        assert none["functional_recall"] == 0.0 and none["recovered"] == 0, task


def test_functional_recall_subsamples_and_checks_its_arguments():
    net, x = _relu_net_and_inputs()
    W, B = _measured(net, net.ticket_mask)
    a = metrics.functional_recall(W, B, net.ticket.weights, net.ticket.biases, x, max_points=7)
    assert a["functional_recall"] == 1.0 and a["ticket_neurons"] == 3
    # one point left: x = -1, where every ticket neuron is zero, so none is counted (and recall is 1)
    one = metrics.functional_recall(W, B, net.ticket.weights, net.ticket.biases, x, max_points=1)
    assert one["ticket_neurons"] == 0 and one["functional_recall"] == 1.0
    with pytest.raises(ValueError, match="must agree"):
        metrics.functional_recall(W[:2], B[:2], net.ticket.weights, net.ticket.biases, x)
    with pytest.raises(ValueError, match="threshold"):
        metrics.functional_recall(W, B, net.ticket.weights, net.ticket.biases, x, threshold=1.5)
    with pytest.raises(ValueError, match="max_points"):
        metrics.functional_recall(W, B, net.ticket.weights, net.ticket.biases, x, max_points=0)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stacked_ticket_units_equal_one_ticket_units_each(dtype, sparse, monkeypatch):
    """Networks of one shape against their own tickets (tickets of different sizes: padded), some found
    networks recovering everything (the ticket mask), some a path off the ticket, some random masks: the
    stacked recall of every network, and of a subset of rows, equals `TicketUnits.recall` of each alone."""
    import plantseek
    g = torch.Generator().manual_seed(5)
    nets = [plantseek.plant("relu", width=30, depth=3, seed=s) for s in range(4)]
    xs = [torch.rand(300, 1, generator=g, dtype=torch.float64) * 2 - 1 for _ in nets]
    xs[3] = -xs[3].abs()  # where the ticket's first neuron is zero: network 3 counts fewer ticket neurons
    masks = [nets[0].ticket_mask, _keep_path(nets[1], *_other_path(nets[1], +1.0)),
             [(torch.rand(w.shape, generator=g) < 0.3, torch.rand(b.shape, generator=g) < 0.3)
              for w, b in zip(nets[2].weights, nets[2].biases)], nets[3].ticket_mask]
    found = [_measured(n, m) for n, m in zip(nets, masks)]
    found[3] = ([w * 2.0 for w in found[3][0]], [b * 2.0 for b in found[3][1]])  # a positive factor
    units = [metrics.TicketUnits(n.ticket.weights, n.ticket.biases, x, max_points=250) for n, x in zip(nets, xs)]
    alone = [units[m].recall([w.to(dtype) for w in W], [b.to(dtype) for b in B])["functional_recall"]
             for m, (W, B) in enumerate(found)]
    assert alone[0] == alone[1] == alone[3] == 1.0 and alone[2] < 1.0
    W = [torch.stack([f[0][l] for f in found]).to(dtype) for l in range(3)]
    B = [torch.stack([f[1][l] for f in found]).to(dtype) for l in range(3)]
    if sparse and native.cpu_module() is None:
        pytest.skip("the sparse forward needs the native core")
    # every density on the native sparse forward, or none
    monkeypatch.setattr(metrics, "SPARSE_RECALL_DENSITY", 1.1 if sparse else 0.0)
    stacked = metrics.StackedTicketUnits(units)
    assert stacked.counted[0][3] < stacked.counted[0][0]  # padded
    assert stacked.recall(W, B) == alone
    rows = [1, 2]
    assert stacked.recall([w[rows] for w in W], [b[rows] for b in B], rows) == [alone[1], alone[2]]
    with pytest.raises(ValueError, match="2 stacked networks but 1 rows"):
        stacked.recall([w[rows] for w in W], [b[rows] for b in B], [0])
    other = metrics.TicketUnits(nets[0].ticket.weights, nets[0].ticket.biases, xs[0], max_points=100)
    with pytest.raises(ValueError, match="same depth and point count"):
        metrics.StackedTicketUnits([units[0], other])
