"""plantseek.nn: the sparse masked linear path against the dense masked reference."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantseek import native
from plantseek import nn as pnn

needs_native = pytest.mark.skipif(native.cpu_module() is None, reason="native core not built")


def _grads(impl, x, w, m, b, bm, g):
    y = pnn.masked_linear(x, w, m, b, bm, impl=impl)
    inputs = [t for t in (x, w, b) if t is not None and t.requires_grad]
    grads = torch.autograd.grad(y, inputs, g, allow_unused=True)
    return y, grads


@needs_native
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(M=st.sampled_from([None, 1, 3]), B=st.integers(0, 40), n_in=st.integers(0, 33), n_out=st.integers(0, 33),
       density=st.sampled_from([0.0, 0.02, 0.3, 1.0]), dtype=st.sampled_from([torch.float32, torch.float64]),
       with_bias=st.booleans(), with_bias_mask=st.booleans(), seed=st.integers(0, 1000),
       non_contiguous=st.booleans())
def test_sparse_matches_dense(M, B, n_in, n_out, density, dtype, with_bias, with_bias_mask, seed, non_contiguous):
    gen = torch.Generator().manual_seed(seed)
    lead = () if M is None else (M,)
    if non_contiguous:
        x = torch.randn(*lead, n_in, B, generator=gen, dtype=dtype).transpose(-1, -2)
        w = torch.randn(*lead, n_in, n_out, generator=gen, dtype=dtype).transpose(-1, -2)
    else:
        x = torch.randn(*lead, B, n_in, generator=gen, dtype=dtype)
        w = torch.randn(*lead, n_out, n_in, generator=gen, dtype=dtype)
    x.requires_grad_(True)
    w.requires_grad_(True)
    m = torch.rand(*lead, n_out, n_in, generator=gen) < density
    b = torch.randn(*lead, n_out, generator=gen, dtype=dtype).requires_grad_(True) if with_bias else None
    bm = (torch.rand(*lead, n_out, generator=gen) < 0.5) if (with_bias and with_bias_mask) else None
    y_shape = (*lead, B, n_out)
    g = torch.randn(*y_shape, generator=gen, dtype=dtype)
    ys, gs = _grads("sparse", x, w, m, b, bm, g)
    yd, gd = _grads("dense", x, w, m, b, bm, g)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    assert ys.shape == y_shape
    torch.testing.assert_close(ys, yd, **tol)
    for a, c in zip(gs, gd):
        torch.testing.assert_close(a, c, **tol)
    # gradients vanish where masked
    gw = gs[1]
    assert torch.all(gw[~m] == 0)


def test_unbatched_leading_dims_and_reference_without_native(monkeypatch):
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    w = torch.randn(4, 5, dtype=torch.float64)
    m = torch.rand(4, 5) < 0.5
    y = pnn.masked_linear(x, w, m, impl="sparse")
    assert y.shape == (2, 3, 4)
    torch.testing.assert_close(y, x @ (w * m).T)
    monkeypatch.setenv("PLANTSEEK_NATIVE", "0")
    torch.testing.assert_close(pnn.masked_linear(x, w, m, impl="sparse"), y)


def test_argument_errors():
    x = torch.randn(3, 5)
    w = torch.randn(4, 5)
    m = torch.ones(4, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="impl"):
        pnn.masked_linear(x, w, m, impl="fast")
    with pytest.raises(TypeError, match="weight_mask"):
        pnn.masked_linear(x, w, m.float())
    with pytest.raises(ValueError, match="weight_mask shape"):
        pnn.masked_linear(x, w, m[:, :4])
    with pytest.raises(TypeError, match="dtype"):
        pnn.masked_linear(x.double(), w, m)
    with pytest.raises(ValueError, match="x must have shape"):
        pnn.masked_linear(torch.randn(3, 6), w, m)
    with pytest.raises(ValueError, match="bias must have shape"):
        pnn.masked_linear(x, w, m, torch.randn(5))
    with pytest.raises(ValueError, match="batched weight"):
        pnn.masked_linear(x, w.unsqueeze(0), m.unsqueeze(0))


def test_crossover_env(monkeypatch):
    monkeypatch.setenv("PLANTSEEK_SPARSE_CROSSOVER", "0.5")
    assert pnn.crossover_density() == 0.5
    monkeypatch.setenv("PLANTSEEK_SPARSE_CROSSOVER", "abc")
    with pytest.raises(ValueError, match="PLANTSEEK_SPARSE_CROSSOVER"):
        pnn.crossover_density()
    monkeypatch.delenv("PLANTSEEK_SPARSE_CROSSOVER")
    assert 0 < pnn.crossover_density() <= 1


@needs_native
def test_structure_rebuilt_only_when_mask_changes():
    layer = pnn.MaskedLinear(6, 4, n_networks=2, impl="sparse", dtype=torch.float64)
    s1 = pnn.mask_structure(layer.weight_mask)
    assert pnn.mask_structure(layer.weight_mask) is s1
    new = torch.rand(2, 4, 6) < 0.5
    layer.set_mask(new, torch.rand(2, 4) < 0.5)
    s2 = pnn.mask_structure(layer.weight_mask)
    assert s2 is not s1 and s2.nnz == int(new.sum())
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    ref = pnn.masked_linear_reference(x, layer.weight, layer.weight_mask, layer.bias, layer.bias_mask)
    torch.testing.assert_close(layer(x), ref)


@needs_native
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_training_sparse_equals_dense(dtype, tol):
    """A small masked MLP trained with Adam: sparse and dense paths give the same weights."""
    def run(impl):
        torch.manual_seed(0)
        layers = [pnn.MaskedLinear(4, 32, n_networks=3, impl=impl, dtype=dtype),
                  pnn.MaskedLinear(32, 32, n_networks=3, impl=impl, dtype=dtype),
                  pnn.MaskedLinear(32, 2, n_networks=3, impl=impl, dtype=dtype)]
        gen = torch.Generator().manual_seed(1)
        for layer in layers:
            layer.set_mask(torch.rand(layer.weight_mask.shape, generator=gen) < 0.1,
                           torch.rand(layer.bias_mask.shape, generator=gen) < 0.5)
        params = [p for layer in layers for p in layer.parameters()]
        opt = torch.optim.Adam(params, lr=1e-2)
        data = torch.randn(3, 64, 4, generator=gen, dtype=dtype)
        target = torch.randn(3, 64, 2, generator=gen, dtype=dtype)
        for _ in range(20):
            h = data
            for i, layer in enumerate(layers):
                h = layer(h)
                if i < len(layers) - 1:
                    h = torch.relu(h)
            loss = ((h - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return [p.detach() for p in params], float(loss.detach())

    ps, ls = run("sparse")
    pd, ld = run("dense")
    assert abs(ls - ld) <= tol * max(1.0, abs(ld))
    for a, b in zip(ps, pd):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@needs_native
def test_sparse_linear_values_form():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(2, 6, 9, generator=gen, dtype=torch.float64)
    m = torch.rand(2, 6, 9, generator=gen) < 0.3
    s = pnn.mask_structure(m)
    vals = w.reshape(-1)[s.pos].clone().requires_grad_(True)
    x = torch.randn(2, 4, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    y = pnn.sparse_linear(x, vals, s, b)
    wd = w.clone().requires_grad_(True)
    yd = pnn.masked_linear_reference(x, wd, m, b)
    torch.testing.assert_close(y, yd)
    g = torch.randn_like(y)
    gv, = torch.autograd.grad(y, vals, g)
    gw, = torch.autograd.grad(yd, wd, g)
    torch.testing.assert_close(gv, gw.reshape(-1)[s.pos])
    with pytest.raises(ValueError, match="values"):
        pnn.sparse_linear(x, vals[:-1], s)


@needs_native
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(M=st.integers(1, 3), B=st.integers(0, 40), widths=st.lists(st.integers(0, 12), min_size=2, max_size=4),
       density=st.sampled_from([0.0, 0.3, 1.0]), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 1000))
def test_feature_major_chain_matches_reference(M, B, widths, density, dtype, seed):
    """A chain of sparse_linear_fm layers (bias and ReLU fused) equals the dense masked reference, outputs and
    every gradient, and keeps its padding lanes zero."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(M, B, widths[0], generator=gen, dtype=dtype, requires_grad=True)
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        w = torch.randn(M, n_out, n_in, generator=gen, dtype=dtype)
        m = torch.rand(M, n_out, n_in, generator=gen) < density
        s = pnn.mask_structure(m)
        vals = w.reshape(-1)[s.pos].clone().requires_grad_(True)
        b = torch.randn(M, n_out, generator=gen, dtype=dtype, requires_grad=True)
        layers.append((w, m, s, vals, b))
    ht = pnn.to_feature_major(x)
    assert ht.shape == (M, widths[0], pnn.padded_batch(B))
    h = x
    for k, (w, m, s, vals, b) in enumerate(layers):
        relu = k < len(layers) - 1
        ht = pnn.sparse_linear_fm(ht, vals, s, B, b, relu)
        assert bool((ht[:, :, B:] == 0).all())
        wd = torch.zeros(w.numel(), dtype=dtype).index_put((s.pos,), vals).view(w.shape)
        h = pnn.masked_linear_reference(h, wd, m, b)
        h = torch.relu(h) if relu else h
    y = pnn.from_feature_major(ht, B)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, h, **tol)
    g = torch.randn(y.shape, generator=gen, dtype=dtype)
    inputs = [x] + [t for layer in layers for t in layer[3:]]
    got = torch.autograd.grad(y, inputs, g, allow_unused=True)
    want = torch.autograd.grad(h, inputs, g, allow_unused=True)
    for a, b in zip(got, want):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            torch.testing.assert_close(a, b, **tol)


@needs_native
def test_feature_major_argument_errors():
    for b in (0, 1, 15, 16, 17, 255, 256, 1000):
        assert pnn.padded_batch(b) == native.cpu_module().padded_batch(b)
    m = torch.rand(2, 3, 4) < 0.5
    s = pnn.mask_structure(m)
    vals = torch.zeros(s.nnz, dtype=torch.float64)
    xt = torch.zeros(2, 4, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="feature-major"):
        pnn.sparse_linear_fm(xt, vals, s, 17)
    with pytest.raises(ValueError, match="batch"):
        pnn.sparse_linear_fm(xt, vals, s, -1)
    with pytest.raises(ValueError, match="bias"):
        pnn.sparse_linear_fm(xt, vals, s, 3, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="values"):
        pnn.sparse_linear_fm(xt, vals.float(), s, 3)


def test_cuda_auto_crossover_defaults_to_dense(monkeypatch):
    monkeypatch.delenv("PLANTSEEK_SPARSE_CROSSOVER_CUDA", raising=False)
    assert pnn.crossover_density("cuda") == 0.0
    monkeypatch.setenv("PLANTSEEK_SPARSE_CROSSOVER_CUDA", "0.05")
    assert pnn.crossover_density(torch.device("cuda", 0)) == 0.05
