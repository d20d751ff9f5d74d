"""SynFlow, SNIP and GraSP scores against independent autograd computations (float64, tiny networks)."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from plantseek import pruners

from pruner_helpers import planted, task_data

TINY = [("relu", 6, 3), ("circle", 20, 2), ("helix", 30, 2)]


def _masks(net, seed, kill_neuron=True):
    """A random mask at about 70 % density; optionally every input of hidden neuron 0 is cut."""
    g = torch.Generator().manual_seed(seed)
    m = [(torch.rand(w.shape, generator=g) < 0.7, torch.rand(b.shape, generator=g) < 0.7) for w, b in zip(net.weights, net.biases)]
    if kill_neuron and net.depth > 1:
        m[0][0][0, :] = False
        m[0][1][0] = False
    return m


def _loss(kind, out, y):
    return F.cross_entropy(out, y) if kind == "classification" else F.mse_loss(out, y)


def _module_params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _as_pairs(module, tensors):
    """Dict of Sequential parameter tensors -> [(weight, bias), ...] in layer order."""
    names = [k for k, _ in module.named_parameters()]
    return [(tensors[names[2 * i]], tensors[names[2 * i + 1]]) for i in range(len(names) // 2)]


def _assert_close(got, want):
    assert len(got) == len(want)
    for (gw, gb), (ww, wb) in zip(got, want):
        torch.testing.assert_close(gw, ww, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gb, wb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("task,width,depth", TINY)
@pytest.mark.parametrize("masked", [False, True])
def test_synflow_scores_equal_autograd(task, width, depth, masked):
    net = planted(task, width, depth)
    mask = _masks(net, 1) if masked else [(torch.ones_like(w, dtype=torch.bool), torch.ones_like(b, dtype=torch.bool)) for w, b in zip(net.weights, net.biases)]
    # independent: a plain nn.Sequential with the masked parameters made positive, an all-ones input, R = sum(out)
    module = net.to_module(mask)
    with torch.no_grad():
        for p in module.parameters():
            p.abs_()
    module.zero_grad()
    module(torch.ones(1, net.widths[0], dtype=torch.float64)).sum().backward()
    want = [((lin.weight.grad * lin.weight).detach().abs(), (lin.bias.grad * lin.bias).detach().abs())
            for lin in module if isinstance(lin, torch.nn.Linear)]
    got = pruners.get("synflow").scores(net, None, torch.Generator(), mask)
    _assert_close(got, want)


@pytest.mark.parametrize("task,width,depth", TINY)
@pytest.mark.parametrize("masked", [False, True])
def test_snip_scores_equal_autograd(task, width, depth, masked):
    net = planted(task, width, depth)
    data = task_data(task)
    kind = "classification" if task == "circle" else "regression"
    mask = _masks(net, 2) if masked else None
    module = net.to_module(mask)
    x, y = data.x_train[:40], data.y_train[:40]
    module.zero_grad()
    _loss(kind, module(x), y).backward()
    want = [((lin.weight.grad * lin.weight).detach().abs(), (lin.bias.grad * lin.bias).detach().abs())
            for lin in module if isinstance(lin, torch.nn.Linear)]
    cur = mask or [(torch.ones_like(w, dtype=torch.bool), torch.ones_like(b, dtype=torch.bool)) for w, b in zip(net.weights, net.biases)]
    got = pruners.get("snip").scores(net, data, torch.Generator(), cur)
    _assert_close(got, want)


@pytest.mark.parametrize("task,width,depth", TINY)
@pytest.mark.parametrize("masked", [False, True])
def test_grasp_scores_equal_full_hessian_times_gradient(task, width, depth, masked):
    net = planted(task, width, depth)
    data = task_data(task)
    kind = "classification" if task == "circle" else "regression"
    mask = _masks(net, 3) if masked else None
    module = net.to_module(mask)
    params = _module_params(module)
    x, y = data.x_train[:40], data.y_train[:40]
    T = 200.0

    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]

    def f(flat):
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(torch.split(flat, sizes), shapes))))
        return _loss(kind, functional_call(module, parts, (x,)) / T, y)

    theta = torch.cat([params[k].reshape(-1) for k in names])
    g = torch.autograd.functional.jacobian(f, theta)
    H = torch.autograd.functional.hessian(f, theta, vectorize=True)  # the full Hessian: tiny networks only
    hg = H @ g
    score = theta * hg
    # GraSP removes the highest -theta * Hg; plantseek keeps the highest scores, hence +theta * Hg
    want = _as_pairs(module, dict(zip(names, (t.reshape(s) for t, s in zip(torch.split(score, sizes), shapes)))))
    cur = mask or [(torch.ones_like(w, dtype=torch.bool), torch.ones_like(b, dtype=torch.bool)) for w, b in zip(net.weights, net.biases)]
    got = pruners.get("grasp").scores(net, data, torch.Generator(), cur)
    _assert_close(got, want)
    # so the kept set is exactly "remove the highest -theta * Hg" of the paper (up to ties)
    k = round(0.3 * net.n_params)
    neg = torch.cat([(-t).reshape(-1) for pair in want for t in pair])
    removed_by_paper = set(torch.topk(neg, net.n_params - k).indices.tolist())
    m = pruners.get("grasp").prune(net, data, 0.3, mask=None)
    kept = torch.cat([t.reshape(-1) for pair in m for t in pair]).nonzero().reshape(-1).tolist()
    if not masked:
        assert not removed_by_paper & set(kept)


def test_grasp_temperature_matters():
    net, data = planted("circle", 20, 2), task_data("circle")
    full = [(torch.ones_like(w, dtype=torch.bool), torch.ones_like(b, dtype=torch.bool)) for w, b in zip(net.weights, net.biases)]
    a = pruners.get("grasp").scores(net, data, torch.Generator(), full)
    b = pruners.get("grasp", temperature=1.0).scores(net, data, torch.Generator(), full)
    assert not torch.allclose(a[0][0], b[0][0])


def test_pruning_set_is_the_first_samples():
    net, data = planted("relu", 6, 3), task_data("relu")
    full = [(torch.ones_like(w, dtype=torch.bool), torch.ones_like(b, dtype=torch.bool)) for w, b in zip(net.weights, net.biases)]
    a = pruners.get("snip", pruning_samples=10).scores(net, data, torch.Generator(), full)
    from plantseek.tasks import TaskData
    cut = TaskData(data.x_train[:10], data.y_train[:10], data.x_test, data.y_test)
    b = pruners.get("snip", pruning_samples=40).scores(net, cut, torch.Generator(), full)
    _assert_close(a, b)
