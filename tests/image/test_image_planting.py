"""Planting of convolutional tickets: exactness (float64, 1e-9 relative) for several layer sequences, BatchNorm
folding, errors, and the pruners on Conv2d layers."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

import plantseek
from plantseek import pruners
from plantseek.image import models
from plantseek.image.planting import ConvNetwork, fold_batch_norm, plant_state_dict

D = torch.float64


def sparse_state(module: nn.Module, density: float, seed: int) -> dict:
    """The module's state dict with a random share ``density`` of every tensor kept (the rest exactly 0)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().to(D).clone()
        keep = torch.rand(v.shape, generator=g) < density
        out[k] = v * keep
    return out


def check_exact(ticket: nn.Module, state: dict, host: nn.Module, x: torch.Tensor, seed: int = 0):
    net = plant_state_dict(state, host, seed=seed)
    ticket.load_state_dict(state)
    ticket.eval()  # Dropout: identity at evaluation, as the planted forward treats it
    want = net.output_scale * ticket.to(D)(x.to(D))
    got = net(x, net.ticket_mask)
    err, scale = float((got - want).abs().max().detach()), float(want.abs().max().detach())
    assert err <= 1e-9 * scale or err == 0.0, (err, scale)  # a ticket whose output is 0 everywhere plants as 0
    # the planted ticket's own forward through the host's layer sequence agrees too
    assert torch.allclose(net.output_scale * net.ticket_forward(x), want, rtol=1e-9, atol=1e-300)
    return net


def arch_strided(width):
    c = lambda n: max(1, round(n * width))  # noqa: E731
    return nn.Sequential(
        nn.Conv2d(2, c(6), 5, stride=2, padding=0), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(c(6), c(8), 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
        nn.Linear(c(8) * 4, c(12)), nn.ReLU(), nn.Dropout(0.5), nn.Linear(c(12), 5))


def arch_allconv(width):
    c = lambda n: max(1, round(n * width))  # noqa: E731
    return nn.Sequential(
        nn.Conv2d(3, c(4), 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(c(4), c(6), (3, 1), padding=(1, 0)),
        nn.ReLU(), nn.Conv2d(c(6), 7, 1), nn.AdaptiveMaxPool2d(1), nn.Flatten())


def arch_mlp(width):
    c = lambda n: max(1, round(n * width))  # noqa: E731
    return nn.Sequential(nn.Flatten(), nn.Linear(12, c(9)), nn.ReLU(), nn.Linear(c(9), c(5)), nn.ReLU(), nn.Linear(c(5), 3))


@pytest.mark.parametrize("name,make,in_shape", [
    ("digits", lambda w: models.vgg("digits", w), (1, 8, 8)),
    ("small-avg", lambda w: models.vgg("small", w, in_channels=3, image_size=12, pool="avg"), (3, 12, 12)),
    ("strided", arch_strided, (2, 17, 17)),
    ("allconv", arch_allconv, (3, 8, 8)),
    ("mlp", arch_mlp, (1, 3, 4)),
])
@pytest.mark.parametrize("density", [0.3, 1.0])
def test_planting_is_exact(name, make, in_shape, density):
    torch.manual_seed(0)
    ticket, host = make(1.0), make(3.0)
    state = sparse_state(ticket, density, seed=1)
    x = torch.randn(16, *in_shape, dtype=D)
    net = check_exact(ticket, state, host, x)
    # the mask marks exactly the ticket's nonzeros
    nnz = sum(int((v != 0).sum()) for v in state.values())
    assert sum(int(wm.sum()) + int(bm.sum()) for wm, bm in net.ticket_mask) == nnz == net.ticket_nnz
    assert net.output_scale > 0 and math.isfinite(net.output_scale)
    assert 0 < net.hiding["median_percentile"] < 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    c1=st.integers(1, 5), c2=st.integers(1, 5), hidden=st.integers(1, 6), k=st.sampled_from([1, 3]),
    pool=st.sampled_from(["max", "avg"]), factor=st.sampled_from([1.0, 1.5, 2.0]), size=st.integers(4, 7),
    density=st.floats(0.05, 1.0), seed=st.integers(0, 10_000),
)
def test_planting_exact_property(c1, c2, hidden, k, pool, factor, size, density, seed):
    def make(w):
        s = lambda n: max(1, int(math.floor(n * w + 0.5)))  # noqa: E731
        pooler = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        return nn.Sequential(nn.Conv2d(2, s(c1), k, padding=k // 2), nn.ReLU(), pooler,
                             nn.Conv2d(s(c1), s(c2), k, padding=k // 2), nn.ReLU(), nn.Flatten(),
                             nn.Linear(s(c2) * (size // 2) ** 2, s(hidden)), nn.ReLU(), nn.Linear(s(hidden), 4))
    torch.manual_seed(seed)
    ticket, host = make(1.0), make(factor)
    state = sparse_state(ticket, density, seed)
    x = torch.randn(8, 2, size, size, generator=torch.Generator().manual_seed(seed), dtype=D)
    check_exact(ticket, state, host, x, seed=seed)


def test_batchnorm_is_folded():
    torch.manual_seed(3)
    ticket = models.vgg("small", 1.0, image_size=8, batch_norm=True).to(D)
    for m in ticket.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    ticket.eval()
    host = models.vgg("small", 2.0, image_size=8)
    x = torch.randn(10, 1, 8, 8, dtype=D)
    net = plant_state_dict(ticket.state_dict(), host, seed=0)
    want = net.output_scale * ticket(x)
    with torch.no_grad():
        assert float((net(x, net.ticket_mask) - want).abs().max() / want.abs().max()) < 1e-9
    folded = fold_batch_norm(ticket)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(folded(x), ticket(x), rtol=1e-9, atol=1e-12)


def test_bad_requests_name_the_problem():
    ticket = models.vgg("digits", 1.0)
    state = sparse_state(ticket, 0.5, 0)
    with pytest.raises(ValueError, match="at least 16"):
        plant_state_dict(state, models.vgg("digits", 0.5), seed=0)
    with pytest.raises(ValueError, match="BatchNorm"):
        plant_state_dict(state, models.vgg("digits", 2.0, batch_norm=True), seed=0)
    with pytest.raises(ValueError, match="same layer sequence"):
        plant_state_dict(state, models.vgg("small", 2.0), seed=0)
    bad = dict(state)
    bad["0.weight"] = bad["0.weight"].clone()
    bad["0.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        plant_state_dict(bad, models.vgg("digits", 2.0), seed=0)
    with pytest.raises(ValueError, match="outputs"):
        plant_state_dict(state, models.vgg("digits", 2.0, num_classes=11), seed=0)


def test_public_api_and_determinism():
    assert plantseek.plant_state_dict is plant_state_dict
    ticket = models.vgg("digits", 1.0)
    state = sparse_state(ticket, 0.2, 5)
    host = models.vgg("digits", 2.0)
    before = [p.detach().clone() for p in host.parameters()]
    a = plant_state_dict(state, host, seed=7)
    b = plant_state_dict(state, host, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(before, host.parameters()))  # the host module is not modified
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))
    assert a.ticket_density == pytest.approx(a.ticket_nnz / a.n_params)
    c = a.to("cpu", "float32")
    assert c.dtype == torch.float32 and c.ticket_density == a.ticket_density


def planted_digits(width=2.0, density=0.2, seed=0):
    return plant_state_dict(sparse_state(models.vgg("digits", 1.0), density, seed), models.vgg("digits", width), seed=seed)


def fake_data(n=48):
    from plantseek.tasks import TaskData

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=D)
    y = torch.randint(0, 10, (n,), generator=g)
    return TaskData(x, y, x[:8], y[:8])


@pytest.mark.parametrize("name,opts", [
    ("random", {}), ("magnitude", {}), ("snip", {}), ("grasp", {}), ("synflow", {"iterations": 3}),
    ("edge-popup", {"epochs": 1}), ("edge-popup-annealed", {"epochs": 2, "score_init": "uniform"}),
])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_pruners_handle_conv_layers(name, opts, scope):
    net = planted_digits()
    data = fake_data()
    mask = pruners.get(name, **opts).prune(net, data, 0.1, scope=scope, generator=torch.Generator().manual_seed(0))
    assert [tuple(wm.shape) for wm, _ in mask] == [tuple(w.shape) for w in net.weights]
    assert mask[0][0].dim() == 4 and mask[-1][0].dim() == 2
    groups = [mask] if scope == "global" else [[pair] for pair in mask]
    for g in groups:
        total = sum(wm.numel() + bm.numel() for wm, bm in g)
        assert sum(int(wm.sum()) + int(bm.sum()) for wm, bm in g) == round(0.1 * total)


def test_ticket_oracle_recovers_the_planted_mask():
    from plantseek.measure import mask_metrics

    net = planted_digits()
    mask = pruners.get("ticket").prune(net, None, "ticket")
    m = mask_metrics(mask, net)
    assert m["recall"] == 1.0 and m["precision"] == 1.0 and m["ticket_survived"]
    assert m["kept_density"] == pytest.approx(net.ticket_density)


def test_synflow_on_a_linear_layer_sequence_matches_the_mlp_closed_form():
    """The autograd SynFlow through a module's own layers equals the closed form on the same MLP."""
    from plantseek.pruners.synflow import synflow_scores_network, synflow_scores_reference

    torch.manual_seed(0)
    net = ConvNetwork(arch_mlp(1.0).to(D), (1, 3, 4))
    a = synflow_scores_network(net, net.params())
    b = synflow_scores_reference(net.params())
    for (aw, ab), (bw, bb) in zip(a, b):
        assert torch.allclose(aw, bw, rtol=1e-12, atol=0) and torch.allclose(ab, bb, rtol=1e-12, atol=0)
