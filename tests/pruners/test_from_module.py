"""Pruners written against torch.nn.Module (`plantseek.pruners.from_module`): torch.nn.utils.prune's global L1
pruning gives exactly plantseek's magnitude masks; masks are read from buffers, parametrizations and zeros; the
exact-count rule and bad returns are clear errors; a wrapped pruner runs through seek and multishot.

``torch-l1`` is registered when this module is imported, so the registry's contract tests
(test_pruners_counts.py, test_pruners_registry.py, parametrised over pruners.available()) check it too."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

import plantseek
from plantseek import pruners
from plantseek.pruners import base as pruner_base

from pruner_helpers import n_kept, planted, task_data

LAYERS = (nn.Linear, nn.Conv2d)


def torch_l1(module, data, density, generator, scope="global", prune_bias=True):
    """torch.nn.utils.prune.global_unstructured with L1Unstructured (one call per scope group)."""
    names = ("weight", "bias") if prune_bias else ("weight",)
    layers = [m for m in module.modules() if isinstance(m, LAYERS)]
    per_layer = [[(m, n) for n in names] for m in layers]
    groups = [[pair for group in per_layer for pair in group]] if scope == "global" else per_layer
    for params in groups:
        total = sum(getattr(m, n).numel() for m, n in params)
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
                                  amount=total - pruners.kept_count(density, total))


pruners.from_module(torch_l1, name="torch-l1")


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry for pruners registered by one test (unregistered on teardown)."""
    reg = dict(pruner_base._REGISTRY)
    monkeypatch.setattr(pruner_base, "_REGISTRY", reg)
    return reg


def same(a, b) -> bool:
    return all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b))


def distinct_magnitudes(net) -> bool:
    flat = torch.cat([t.reshape(-1) for w, b in zip(net.weights, net.biases) for t in (w, b)]).abs()
    return flat.unique().numel() == flat.numel()


# ------------------------------------------------------------------------------------------------ torch L1 = magnitude

@pytest.mark.parametrize("task,width,depth", [("circle", 24, 3), ("relu", 16, 4)])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("prune_bias", [True, False])
def test_torch_global_l1_gives_exactly_the_magnitude_masks(task, width, depth, scope, prune_bias):
    net, data = planted(task, width, depth), task_data(task)
    assert distinct_magnitudes(net)  # no ties: the two tie rules cannot differ here
    for density in (1.0, 0.5, 0.1, 0.01, "ticket"):
        ours = pruners.get("torch-l1").prune(net, data, density, scope=scope, prune_bias=prune_bias)
        ref = pruners.get("magnitude").prune(net, data, density, scope=scope, prune_bias=prune_bias)
        assert same(ours, ref), (density, scope, prune_bias)


def test_torch_l1_within_a_mask_is_magnitude_within_it(small_circle):
    """The pruned parameters reach the function as zeros, which L1 prunes first: nested masks agree too."""
    net, data = small_circle
    outer = pruners.get("random").prune(net, data, 0.6, generator=torch.Generator().manual_seed(3))
    for density in (0.6, 0.3, 0.05):
        ours = pruners.get("torch-l1").prune(net, data, density, mask=outer)
        assert same(ours, pruners.get("magnitude").prune(net, data, density, mask=outer))


def test_torch_l1_on_a_convolutional_network():
    """Conv2d and Linear layers in order (`plantseek.image`'s networks hand over their own module)."""
    from plantseek.image.planting import ConvNetwork

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.ReLU(), nn.Flatten(),
                           nn.Linear(3 * 4 * 4, 5)).double()
    net = ConvNetwork(module, (2, 6, 6))
    assert distinct_magnitudes(net)
    for density in (0.5, 0.1):
        for scope in ("global", "layer"):
            ours = pruners.get("torch-l1").prune(net, None, density, scope=scope)
            assert same(ours, pruners.get("magnitude").prune(net, None, density, scope=scope))
            assert ours[0][0].shape == (4, 2, 3, 3)


def test_ties_are_broken_by_each_side_its_own_way():
    """Where magnitudes tie at the threshold the two may differ (torch.topk's choice); the counts never do."""
    torch.manual_seed(0)
    net = plantseek.plant("circle", width=24, depth=3, seed=0)
    tied = net.to("cpu", "float64")
    for w in tied.weights:
        w.copy_(w.sign() * (w.abs() * 4).round().clamp(min=1) / 4)  # a few magnitude levels: many ties
    for b in tied.biases:
        b.copy_(b.sign() * (b.abs() * 4).round().clamp(min=1) / 4)
    ours = pruners.get("torch-l1").prune(tied, None, 0.3)
    ref = pruners.get("magnitude").prune(tied, None, 0.3)
    assert n_kept(ours) == n_kept(ref) == pruners.kept_count(0.3, tied.n_params)
    # magnitude keeps the lowest flat indices among ties; every strictly larger magnitude is kept by both
    flat = torch.cat([t.reshape(-1) for w, b in zip(tied.weights, tied.biases) for t in (w, b)]).abs()
    keep_a = torch.cat([t.reshape(-1) for p in ours for t in p])
    keep_b = torch.cat([t.reshape(-1) for p in ref for t in p])
    threshold = flat[keep_b].min()
    assert torch.equal(keep_a[flat > threshold], keep_b[flat > threshold])
    assert not bool(keep_a[flat < threshold].any())


# ------------------------------------------------------------------------------------------------ reading masks

def test_masks_are_read_from_parametrizations(small_circle, registry):
    """torch.ao.pruning's FakeSparsity (a parametrization with a mask buffer) and a parametrization without one
    (read from the zeros of the parametrized weight)."""
    from torch.ao.pruning import FakeSparsity

    net, data = small_circle
    ref = pruners.get("magnitude").prune(net, data, 0.2, scope="layer")

    def fake_sparsity(module, data, density, generator, scope="layer"):
        for m, (wm, bm) in zip([m for m in module.modules() if isinstance(m, nn.Linear)], ref):
            parametrize.register_parametrization(m, "weight", FakeSparsity(wm.double()))
            parametrize.register_parametrization(m, "bias", FakeSparsity(bm))  # a bool mask

    class Zeroing(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.keep = mask

        def forward(self, x):
            return x * self.keep

    def zeroing(module, data, density, generator, scope="layer"):
        for m, (wm, bm) in zip([m for m in module.modules() if isinstance(m, nn.Linear)], ref):
            parametrize.register_parametrization(m, "weight", Zeroing(wm))
            parametrize.register_parametrization(m, "bias", Zeroing(bm))

    for fn, name in ((fake_sparsity, "fake-sparsity"), (zeroing, "parametrized-zeros")):
        pruners.from_module(fn, name=name)
        assert same(pruners.get(name).prune(net, data, 0.2, scope="layer"), ref), name
        assert pruners.get(name).prune(net, data, 0.2)  # its default scope is the function's
        assert pruner_base.default_scope(name) == "layer"


def test_masks_are_read_from_zeros_of_a_module_pruned_in_place_or_returned(small_circle, registry):
    net, data = small_circle
    ref = pruners.get("magnitude").prune(net, data, 0.1)

    @pruners.from_module(name="zero-in-place")
    def zero_in_place(module, data, density, generator):
        with torch.no_grad():
            for m, (wm, bm) in zip([m for m in module.modules() if isinstance(m, nn.Linear)], ref):
                m.weight.mul_(wm)
                m.bias.mul_(bm)

    @pruners.from_module(name="returns-a-copy")
    def returns_a_copy(module, data, density, generator):
        other = copy.deepcopy(module)
        torch_l1(other, data, density, generator)
        for m in other.modules():
            if isinstance(m, nn.Linear):
                prune.remove(m, "weight")  # pruning made permanent: zeros, no buffer
                prune.remove(m, "bias")
        return other

    assert same(pruners.get("zero-in-place").prune(net, data, 0.1), ref)
    assert same(pruners.get("returns-a-copy").prune(net, data, 0.1), ref)


def test_the_function_gets_what_it_asks_for_and_options(small_circle, registry):
    net, data = small_circle
    seen = {}

    @pruners.from_module(name="records")
    def records(module, data, density, generator, *, scope="global", prune_bias=True, mask=None, alpha=1.0):
        """Record the arguments."""
        seen.update(module=module, data=data, density=density, generator=generator, scope=scope,
                    prune_bias=prune_bias, mask=mask, alpha=alpha)
        torch_l1(module, data, density, generator, scope=scope, prune_bias=prune_bias)

    outer = pruners.get("magnitude").prune(net, data, 0.5, scope="layer", prune_bias=False)
    pruners.get("records", alpha=2.5).prune(net, data, 0.2, scope="layer", prune_bias=False, mask=outer)
    assert seen["alpha"] == 2.5 and seen["scope"] == "layer" and seen["prune_bias"] is False
    assert seen["data"] is data and seen["density"] == 0.2 and isinstance(seen["generator"], torch.Generator)
    assert same(seen["mask"], outer)
    linears = [m for m in seen["module"].modules() if isinstance(m, nn.Linear)]
    assert len(linears) == net.depth
    assert all(bool((m.weight_orig[~wm] == 0).all()) for m, (wm, _) in zip(linears, outer))  # pruned: zeros
    assert pruners.descriptions()["records"] == "Record the arguments."
    assert pruners.get("records").options == {"alpha": 1.0}
    with pytest.raises(ValueError, match=r"pruner 'records' has no option\(s\) 'beta'; its options: alpha"):
        pruners.get("records", beta=1)


# ------------------------------------------------------------------------------------------------ exact counts

def keep_one_more(module, data, density, generator):
    torch_l1(module, data, density, generator)
    first = next(m for m in module.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        first.weight_mask.view(-1)[first.weight_mask.view(-1).argmin()] = 1.0


def test_the_exact_count_is_enforced_unless_exact_false(small_circle, registry):
    net, data = small_circle  # 772 parameters: 0.1 keeps 77
    pruners.from_module(keep_one_more, name="one-more")
    with pytest.raises(ValueError, match=r"pruner 'one-more' kept 78 of 772 prunable parameters at density 0.1, "
                                         r"expected exactly 77"):
        pruners.get("one-more").prune(net, data, 0.1)
    pruners.from_module(keep_one_more, name="one-more-loose", exact=False)
    m = pruners.get("one-more-loose").prune(net, data, 0.1)
    assert n_kept(m) == 78 and not pruners.get("one-more-loose").exact


def test_a_function_without_scope_is_asked_for_its_own_scope_only(small_circle, registry):
    net, data = small_circle

    @pruners.from_module(name="global-only")
    def global_only(module, data, density, generator):
        torch_l1(module, data, density, generator)

    with pytest.raises(ValueError, match=r"pruner 'global-only' prunes with scope='global' only.*no `scope`"):
        pruners.get("global-only").prune(net, data, 0.1, scope="layer")


def test_biases_must_be_kept_when_they_are_not_prunable(small_circle, registry):
    net, data = small_circle
    pruners.from_module(torch_l1, name="ignores-prune-bias")  # its prune_bias default is True; it is passed False

    @pruners.from_module(name="prunes-biases")
    def prunes_biases(module, data, density, generator):
        torch_l1(module, data, density, generator)

    assert pruners.get("ignores-prune-bias").prune(net, data, 0.1, prune_bias=False)
    with pytest.raises(ValueError, match="pruner 'prunes-biases' pruned biases of layer 0 although prune_bias=False"):
        pruners.get("prunes-biases").prune(net, data, 0.1, prune_bias=False)


# ------------------------------------------------------------------------------------------------ bad returns

def _bad(kind):
    def fn(module, data, density, generator):
        layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
        if kind == "wider":
            module[2] = nn.Linear(layers[1].in_features, layers[1].out_features + 1).double()
            module[4] = nn.Linear(layers[2].in_features + 1, layers[2].out_features).double()
            return module
        if kind == "no-bias":
            module[0].bias = None
            return module
        torch_l1(module, data, density, generator)
        if kind == "list":
            return [m.weight_mask for m in layers]
        if kind == "fewer-layers":
            return nn.Sequential(*list(module.children())[:-2])
        if kind == "half-mask":
            layers[1].weight_mask.mul_(0.5)
        if kind == "nan-mask":
            layers[2].bias_mask[0] = float("nan")
        if kind == "mask-shape":
            del layers[1]._buffers["weight_mask"]
            layers[1].register_buffer("weight_mask", torch.ones(3, 3))
        if kind == "nan-weight":
            for m in layers:
                prune.remove(m, "weight")
            with torch.no_grad():
                layers[0].weight[0, 0] = float("nan")
        return None
    return fn


@pytest.mark.parametrize("kind,message", [
    ("list", r"pruner 'bad': its function returned a list of 3 item\(s\); expected None .* or a torch.nn.Module"),
    ("fewer-layers", r"pruner 'bad': the module it returned has 2 Linear/Conv layers \('0' \(Linear\), '2' "
                     r"\(Linear\)\), the network has 3"),
    ("wider", r"pruner 'bad' layer 1 \('2', Linear\): its weight has shape \(25, 24\), the network's has \(24, 24\)"),
    ("half-mask", r"pruner 'bad' layer 1 \('2', Linear\): its weight_mask buffer is not a mask: it holds \d+ "
                  r"value\(s\) other than 0 and 1 \(0.5"),
    ("nan-mask", r"pruner 'bad' layer 2 \('4', Linear\): its bias_mask buffer has NaN entries"),
    ("mask-shape", r"pruner 'bad' layer 1 \('2', Linear\): its weight_mask buffer has shape \(3, 3\), the network's "
                   r"has \(24, 24\)"),
    ("nan-weight", r"pruner 'bad' layer 0 \('0', Linear\): its weight has 1 NaN entries; .* exact zeros"),
    ("no-bias", r"pruner 'bad' layer 0 \('0', Linear\) has no bias; the network's layer has one of shape \(24,\)"),
])
def test_bad_returns_are_clear_errors_naming_the_pruner_and_the_layer(small_circle, registry, kind, message):
    net, data = small_circle
    pruners.from_module(_bad(kind), name="bad")
    with pytest.raises(ValueError, match=message):
        pruners.get("bad").prune(net, data, 0.1)


def test_bad_functions_are_refused_when_registered(registry):
    with pytest.raises(TypeError, match=r"must take \(module, data, density, generator\)"):
        pruners.from_module(lambda module, data: None, name="too-few")
    with pytest.raises(TypeError, match="its argument 'alpha' has no default"):
        pruners.from_module(lambda module, data, density, generator, *, alpha: None, name="required-option")
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        pruners.from_module(torch_l1, name="")
    with pytest.raises(ValueError, match="pruner 'magnitude' is already registered"):
        pruners.from_module(torch_l1, name="magnitude")
    with pytest.raises(ValueError, match="pruner 'torch-l1' is already registered"):
        pruners.from_module(keep_one_more, name="torch-l1")
    before = registry["torch-l1"]
    again = pruners.from_module(torch_l1, name="torch-l1")  # the same function again (a re-import): replaced
    assert registry["torch-l1"] is again and again is not before


# ------------------------------------------------------------------------------------------------ through seek

RUN = dict(task="circle", depth=3, width=20, density=0.1, epochs=1, n_samples=400, seed=0, dtype="float64")


@pytest.mark.parametrize("protocol", ["singleshot", "multishot", "strong"])
def test_a_wrapped_pruner_runs_through_seek_like_magnitude(protocol):
    extra = {"rounds": 2, "round_epochs": 1} if protocol == "multishot" else {}
    ours = plantseek.seek(**RUN, pruner="torch-l1", protocol=protocol, **extra)
    ref = plantseek.seek(**RUN, pruner="magnitude", protocol=protocol, **extra)
    assert ours.config["pruner"] == "torch-l1"
    for key in ("test_loss", "recall", "kept_density", "effective_density"):
        assert ours.metrics[key] == pytest.approx(ref.metrics[key], rel=1e-9), key


def test_an_inexact_pruner_reports_the_density_it_achieved(registry):
    pruners.from_module(keep_one_more, name="one-more-seek", exact=False)
    res = plantseek.seek(**RUN, pruner="one-more-seek")
    net = plantseek.plant("circle", width=20, depth=3, seed=0)
    assert res.metrics["kept_density"] == pytest.approx((pruners.kept_count(0.1, net.n_params) + 1) / net.n_params)
    pruners.from_module(keep_one_more, name="one-more-strict")
    with pytest.raises(ValueError, match=r"pruner 'one-more-strict' kept \d+ of \d+ .* expected exactly"):
        plantseek.seek(**RUN, pruner="one-more-strict")
