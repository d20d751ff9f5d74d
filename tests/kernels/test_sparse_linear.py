"""plantseek.kernels.sparse_linear: the sparse masked linear path on every backend against the dense masked
reference (masked_linear, sparse_linear, the feature-major chain), the layer plantseek.sparse_layers.MaskedLinear,
argument checks, and the native bindings (SparsePattern validation, the feature-major kernels against NumPy:
bad arguments raise, never crash)."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantseek import native
from plantseek.kernels import sparse_linear as pnn
from plantseek.sparse_layers import MaskedLinear

from kernel_helpers import FIXTURE_OK, cpu

ext = native.cpu_module()
needs_native = pytest.mark.skipif(ext is None, reason="native core not built")


def _grads(impl, x, w, m, b, bm, g):
    y = pnn.masked_linear(x, w, m, b, bm, impl=impl)
    inputs = [t for t in (x, w, b) if t is not None and t.requires_grad]
    grads = torch.autograd.grad(y, inputs, g, allow_unused=True)
    return y, grads


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(M=st.sampled_from([None, 1, 3]), B=st.integers(0, 40), n_in=st.integers(0, 33), n_out=st.integers(0, 33),
       density=st.sampled_from([0.0, 0.02, 0.3, 1.0]), dtype=st.sampled_from([torch.float32, torch.float64]),
       with_bias=st.booleans(), with_bias_mask=st.booleans(), seed=st.integers(0, 1000),
       non_contiguous=st.booleans())
def test_sparse_matches_dense(backend, M, B, n_in, n_out, density, dtype, with_bias, with_bias_mask, seed,
                              non_contiguous):
    gen = torch.Generator().manual_seed(seed)
    lead = () if M is None else (M,)
    if non_contiguous:
        x = torch.randn(*lead, n_in, B, generator=gen, dtype=dtype).transpose(-1, -2)
        w = torch.randn(*lead, n_in, n_out, generator=gen, dtype=dtype).transpose(-1, -2)
    else:
        x = torch.randn(*lead, B, n_in, generator=gen, dtype=dtype)
        w = torch.randn(*lead, n_out, n_in, generator=gen, dtype=dtype)
    x, w = backend.to((x, w))
    x.requires_grad_(True)
    w.requires_grad_(True)
    m = backend.to(torch.rand(*lead, n_out, n_in, generator=gen) < density)
    b = backend.to(torch.randn(*lead, n_out, generator=gen, dtype=dtype)).requires_grad_(True) if with_bias else None
    bm = backend.to(torch.rand(*lead, n_out, generator=gen) < 0.5) if (with_bias and with_bias_mask) else None
    y_shape = (*lead, B, n_out)
    g = backend.to(torch.randn(*y_shape, generator=gen, dtype=dtype))
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


def test_unbatched_leading_dims_and_reference_without_native(backend, monkeypatch):
    x = backend.to(torch.randn(2, 3, 5, dtype=torch.float64))
    w = backend.to(torch.randn(4, 5, dtype=torch.float64))
    m = backend.to(torch.rand(4, 5) < 0.5)
    y = pnn.masked_linear(x, w, m, impl="sparse")
    assert y.shape == (2, 3, 4)
    torch.testing.assert_close(y, x @ (w * m).T)
    monkeypatch.setenv("PLANTSEEK_NATIVE", "0")
    torch.testing.assert_close(pnn.masked_linear(x, w, m, impl="sparse"), y)


def test_argument_errors(backend):
    x, w = backend.to((torch.randn(3, 5), torch.randn(4, 5)))
    m = backend.to(torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="impl"):
        pnn.masked_linear(x, w, m, impl="fast")
    for fn in (pnn.masked_linear, pnn.masked_linear_reference):  # the reference checks alike
        with pytest.raises(TypeError, match="weight_mask"):
            fn(x, w, m.float())
        with pytest.raises(ValueError, match="weight_mask shape"):
            fn(x, w, m[:, :4])
        with pytest.raises(TypeError, match="dtype"):
            fn(x.double(), w, m)
        with pytest.raises(ValueError, match="x must have shape"):
            fn(backend.to(torch.randn(3, 6)), w, m)
        with pytest.raises(ValueError, match="bias must have shape"):
            fn(x, w, m, backend.to(torch.randn(5)))
        with pytest.raises(ValueError, match="batched weight"):
            fn(x, w.unsqueeze(0), m.unsqueeze(0))
    with pytest.raises(ValueError, match="impl"):
        MaskedLinear(5, 4, impl="fast")


def test_crossover_env(monkeypatch):
    monkeypatch.setenv("PLANTSEEK_SPARSE_CROSSOVER", "0.5")
    assert pnn.crossover_density() == 0.5
    monkeypatch.setenv("PLANTSEEK_SPARSE_CROSSOVER", "abc")
    with pytest.raises(ValueError, match="PLANTSEEK_SPARSE_CROSSOVER"):
        pnn.crossover_density()
    monkeypatch.delenv("PLANTSEEK_SPARSE_CROSSOVER")
    assert 0 < pnn.crossover_density() <= 1


def test_structure_rebuilt_only_when_mask_changes(backend):
    layer = MaskedLinear(6, 4, n_networks=2, impl="sparse", dtype=torch.float64, device=backend.device)
    s1 = pnn.mask_structure(layer.weight_mask)
    assert pnn.mask_structure(layer.weight_mask) is s1
    new = backend.to(torch.rand(2, 4, 6) < 0.5)
    layer.set_mask(new, backend.to(torch.rand(2, 4) < 0.5))
    s2 = pnn.mask_structure(layer.weight_mask)
    assert s2 is not s1 and s2.nnz == int(new.sum())
    x = backend.to(torch.randn(2, 3, 6, dtype=torch.float64))
    ref = pnn.masked_linear_reference(x, layer.weight, layer.weight_mask, layer.bias, layer.bias_mask)
    torch.testing.assert_close(layer(x), ref)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_training_sparse_equals_dense(backend, dtype, tol):
    """A small masked MLP trained with Adam: sparse and dense paths give the same weights."""
    def run(impl):
        torch.manual_seed(0)
        layers = [MaskedLinear(4, 32, n_networks=3, impl=impl, dtype=dtype),
                  MaskedLinear(32, 32, n_networks=3, impl=impl, dtype=dtype),
                  MaskedLinear(32, 2, n_networks=3, impl=impl, dtype=dtype)]
        gen = torch.Generator().manual_seed(1)
        for layer in layers:
            layer.set_mask(torch.rand(layer.weight_mask.shape, generator=gen) < 0.1,
                           torch.rand(layer.bias_mask.shape, generator=gen) < 0.5)
            layer.to(backend.device)
        params = [p for layer in layers for p in layer.parameters()]
        opt = torch.optim.Adam(params, lr=1e-2)
        data = backend.to(torch.randn(3, 64, 4, generator=gen, dtype=dtype))
        target = backend.to(torch.randn(3, 64, 2, generator=gen, dtype=dtype))
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


def test_sparse_linear_values_form(backend):
    gen = torch.Generator().manual_seed(3)
    w = backend.to(torch.randn(2, 6, 9, generator=gen, dtype=torch.float64))
    m = backend.to(torch.rand(2, 6, 9, generator=gen) < 0.3)
    s = pnn.mask_structure(m)
    vals = w.reshape(-1)[s.pos].clone().requires_grad_(True)
    x = backend.to(torch.randn(2, 4, 9, generator=gen, dtype=torch.float64)).requires_grad_(True)
    b = backend.to(torch.randn(2, 6, generator=gen, dtype=torch.float64)).requires_grad_(True)
    y = pnn.sparse_linear(x, vals, s, b)
    torch.testing.assert_close(y, pnn.sparse_linear_reference(x, vals, s, b))
    wd = w.clone().requires_grad_(True)
    yd = pnn.masked_linear_reference(x, wd, m, b)
    torch.testing.assert_close(y, yd)
    g = torch.randn_like(y)
    gv, = torch.autograd.grad(y, vals, g)
    gw, = torch.autograd.grad(yd, wd, g)
    torch.testing.assert_close(gv, gw.reshape(-1)[s.pos])
    for fn in (pnn.sparse_linear, pnn.sparse_linear_reference):
        with pytest.raises(ValueError, match="values"):
            fn(x, vals[:-1], s)


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(M=st.integers(1, 3), B=st.integers(0, 40), widths=st.lists(st.integers(0, 12), min_size=2, max_size=4),
       density=st.sampled_from([0.0, 0.3, 1.0]), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 1000))
def test_feature_major_chain_matches_reference(backend, M, B, widths, density, dtype, seed):
    """A chain of sparse_linear_fm layers (bias and ReLU fused) equals the dense masked reference, outputs and
    every gradient, and keeps its padding lanes zero."""
    gen = torch.Generator().manual_seed(seed)
    x = backend.to(torch.randn(M, B, widths[0], generator=gen, dtype=dtype)).requires_grad_(True)
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        w = backend.to(torch.randn(M, n_out, n_in, generator=gen, dtype=dtype))
        m = backend.to(torch.rand(M, n_out, n_in, generator=gen) < density)
        s = pnn.mask_structure(m)
        vals = w.reshape(-1)[s.pos].clone().requires_grad_(True)
        b = backend.to(torch.randn(M, n_out, generator=gen, dtype=dtype)).requires_grad_(True)
        layers.append((w, m, s, vals, b))
    ht = pnn.to_feature_major(x)
    assert ht.shape == (M, widths[0], pnn.padded_batch(B))
    h = x
    for k, (w, m, s, vals, b) in enumerate(layers):
        relu = k < len(layers) - 1
        ht = pnn.sparse_linear_fm(ht, vals, s, B, b, relu)
        assert bool((ht[:, :, B:] == 0).all())
        wd = torch.zeros(w.numel(), dtype=dtype, device=w.device).index_put((s.pos,), vals).view(w.shape)
        h = pnn.masked_linear_reference(h, wd, m, b)
        h = torch.relu(h) if relu else h
    y = pnn.from_feature_major(ht, B)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, h, **tol)
    g = backend.to(torch.randn(y.shape, generator=gen, dtype=dtype))
    inputs = [x] + [t for layer in layers for t in layer[3:]]
    got = torch.autograd.grad(y, inputs, g, allow_unused=True)
    want = torch.autograd.grad(h, inputs, g, allow_unused=True)
    for a, b in zip(got, want):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            torch.testing.assert_close(a, b, **tol)


def _fm_layer(w, m, b, xt, B, g):
    """(outputs (out, Bp), input gradient (in, Bp)) of one native feature-major layer of a (out, in) weight."""
    s = pnn.build_structure(m.unsqueeze(0))
    vals = w.reshape(-1)[s.pos].contiguous()
    xt = xt.clone().requires_grad_(True)
    y = pnn.sparse_linear_fm(xt, vals, s, B, b.unsqueeze(0), False)
    gx, = torch.autograd.grad(y, xt, g.unsqueeze(0))
    return y[0].detach(), gx[0]


@needs_native
@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURE_OK)
@given(B=st.integers(1, 70), n_out=st.integers(1, 21), n_in=st.integers(1, 30),
       density=st.sampled_from([0.1, 0.5, 0.9, 1.0]), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 1000))
def test_row_blocks_sum_each_row_in_order(B, n_out, n_in, density, dtype, seed):
    """Each output row is bitwise what that row alone gives, in the forward pass and in the input gradient (the
    same kernels on the transposed structure), and a full layer's rows (the row-blocked dense kernel) equal the
    same rows in a layer that is not full (the sparse kernel): every path sums a row's entries in one order, so
    a network's results cannot depend on the rows or networks beside it."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n_out, n_in, generator=gen, dtype=dtype)
    m = torch.rand(n_out, n_in, generator=gen) < density if density < 1 else torch.ones(n_out, n_in, dtype=torch.bool)
    b = torch.randn(n_out, generator=gen, dtype=dtype)
    xt = pnn.to_feature_major(torch.randn(1, B, n_in, generator=gen, dtype=dtype))
    g = pnn.to_feature_major(torch.randn(1, B, n_out, generator=gen, dtype=dtype))[0]
    y, gx = _fm_layer(w, m, b, xt, B, g)
    for j in range(n_out):  # each row alone
        yj, _ = _fm_layer(w[j:j + 1], m[j:j + 1], b[j:j + 1], xt, B, g[j:j + 1])
        assert torch.equal(yj[0], y[j]), j
    for i in range(n_in):  # each input alone: its column of W^T g
        _, gi = _fm_layer(w[:, i:i + 1], m[:, i:i + 1], b, xt[:, i:i + 1], B, g)
        assert torch.equal(gi[0], gx[i]), i
    if density == 1.0:  # the full layer's rows inside a layer with one more row that is not full
        extra = torch.ones(1, n_in, dtype=torch.bool)
        extra[0, 0] = False
        y2, _ = _fm_layer(torch.cat([w, w[:1]]), torch.cat([m, extra]), torch.cat([b, b[:1]]), xt, B,
                          torch.cat([g, g[:1]]))
        assert torch.equal(y2[:n_out], y)


def test_feature_major_argument_errors(backend):
    if ext is not None:
        for b in (0, 1, 15, 16, 17, 255, 256, 1000):
            assert pnn.padded_batch(b) == ext.padded_batch(b)
    m = backend.to(torch.rand(2, 3, 4) < 0.5)
    s = pnn.mask_structure(m)
    vals = backend.to(torch.zeros(s.nnz, dtype=torch.float64))
    xt = backend.to(torch.zeros(2, 4, 16, dtype=torch.float64))
    for fn in (pnn.sparse_linear_fm, pnn.sparse_linear_fm_reference):  # the reference checks alike
        with pytest.raises(ValueError, match="feature-major"):
            fn(xt, vals, s, 17)
        with pytest.raises(ValueError, match="batch"):
            fn(xt, vals, s, -1)
        with pytest.raises(ValueError, match="bias"):
            fn(xt, vals, s, 3, backend.to(torch.zeros(2, 4, dtype=torch.float64)))
        with pytest.raises(ValueError, match="values"):
            fn(xt, vals.float(), s, 3)
        with pytest.raises(ValueError, match="xt"):
            fn(xt.to(torch.int64), vals, s, 3)
    for fn in (pnn.from_feature_major, pnn.from_feature_major_reference):
        with pytest.raises(ValueError, match="batch lanes"):
            fn(xt, 17)
    for fn in (pnn.to_feature_major, pnn.to_feature_major_reference):
        with pytest.raises(ValueError, match="3-D"):
            fn(xt[0])


def test_cuda_auto_crossover_defaults_to_dense(monkeypatch):
    monkeypatch.delenv("PLANTSEEK_SPARSE_CROSSOVER_CUDA", raising=False)
    assert pnn.crossover_density("cuda") == 0.0
    monkeypatch.setenv("PLANTSEEK_SPARSE_CROSSOVER_CUDA", "0.05")
    assert pnn.crossover_density(torch.device("cuda", 0)) == 0.05


# ------------------------------------------------------------------------------------------------ on a device
# What tests/test_native_cuda.py checked on the GPU alone, now on every backend.


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("M", [None, 3])
@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_sparse_linear_matches_dense_on_the_device(backend, dtype, tol, M, density):
    gen = torch.Generator().manual_seed(1)
    lead = () if M is None else (M,)
    x = backend.to(torch.randn(*lead, 37, 50, generator=gen, dtype=dtype)).requires_grad_(True)
    w = backend.to(torch.randn(*lead, 20, 50, generator=gen, dtype=dtype)).requires_grad_(True)
    b = backend.to(torch.randn(*lead, 20, generator=gen, dtype=dtype)).requires_grad_(True)
    m = backend.to(torch.rand(*lead, 20, 50, generator=gen) < density)
    bm = backend.to(torch.rand(*lead, 20, generator=gen) < 0.5)
    g = backend.to(torch.randn(*lead, 37, 20, generator=gen, dtype=dtype))
    outs = []
    for impl in ("sparse", "dense"):
        y = pnn.masked_linear(x, w, m, b, bm, impl=impl)
        outs.append((y, *torch.autograd.grad(y, (x, w, b), g)))
    for a, c in zip(*outs):
        torch.testing.assert_close(a, c, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_feature_major_chain_matches_the_cpu_reference(backend, dtype, tol):
    """sparse_linear_fm on the backend (on CUDA: row-major kernels with the layout converted around them) equals
    the PyTorch references on the CPU, outputs and every gradient."""
    gen = torch.Generator().manual_seed(2)
    M, B, widths = 3, 21, [2, 30, 30, 2]
    x = torch.randn(M, B, widths[0], generator=gen, dtype=dtype)
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        m = torch.rand(M, n_out, n_in, generator=gen) < 0.3
        w = torch.randn(M, n_out, n_in, generator=gen, dtype=dtype)
        b = torch.randn(M, n_out, generator=gen, dtype=dtype)
        layers.append((m, w, b))
    results = []
    for device, fm, to_fm, from_fm in ((backend.device, pnn.sparse_linear_fm, pnn.to_feature_major,
                                        pnn.from_feature_major),
                                       ("cpu", pnn.sparse_linear_fm_reference, pnn.to_feature_major_reference,
                                        pnn.from_feature_major_reference)):
        xd = x.to(device).requires_grad_(True)
        params, h = [], to_fm(xd)
        for k, (m, w, b) in enumerate(layers):
            s = pnn.mask_structure(m.to(device))
            vals = w.to(device).reshape(-1)[s.pos].clone().requires_grad_(True)
            bias = b.to(device).requires_grad_(True)
            params += [vals, bias]
            h = fm(h, vals, s, B, bias, relu=k < len(layers) - 1)
        y = from_fm(h, B)
        g = torch.ones_like(y)
        results.append(cpu([y, *torch.autograd.grad(y, [xd] + params, g)]))
    for a, c in zip(*results):
        torch.testing.assert_close(a, c, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------ the bindings


def _structure(rng, M, n_out, n_in, density):
    """CSR (indptr, cols) of random masks and their CSC walk (csc_indptr, csc_rows, csc_perm), plus rows."""
    mask = rng.random((M * n_out, n_in)) < density
    rows, cols = np.nonzero(mask)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=M * n_out))]).astype(np.int64)
    m = rows // max(n_out, 1)
    j = rows - m * n_out
    key = (m * n_in + cols) * max(n_out, 1) + j
    perm = np.argsort(key, kind="stable").astype(np.int64)
    csc_rows = j[perm].astype(np.int64)
    csc_indptr = np.concatenate([[0], np.cumsum(np.bincount(m * n_in + cols, minlength=M * n_in))]).astype(np.int64)
    return dict(indptr=indptr, cols=cols.astype(np.int64), csc_indptr=csc_indptr, csc_rows=csc_rows,
                csc_perm=perm), rows


def _pattern(s, M, n_out, n_in):
    return ext.SparsePattern(s["indptr"], s["cols"], s["csc_indptr"], s["csc_rows"], s["csc_perm"], M, n_out, n_in)


def _fm(x, Bp):
    """(M, B, n) -> feature-major (M, n, Bp), padding zero."""
    M, B, n = x.shape
    out = np.zeros((M, n, Bp), dtype=x.dtype)
    out[:, :, :B] = x.transpose(0, 2, 1)
    return out


@needs_native
def test_pattern_validation_messages():
    rng = np.random.default_rng(0)
    s, _ = _structure(rng, 2, 3, 4, 0.5)
    pat = _pattern(s, 2, 3, 4)
    assert (pat.M, pat.n_out, pat.n_in, pat.nnz) == (2, 3, 4, len(s["cols"]))
    bad = dict(s, cols=s["cols"].copy())
    bad["cols"][0] = 4
    with pytest.raises(ValueError, match="out of range"):
        _pattern(bad, 2, 3, 4)
    with pytest.raises(ValueError, match="indptr must have shape"):
        _pattern(s, 2, 4, 4)
    bad = dict(s, csc_perm=s["csc_perm"][::-1].copy())
    with pytest.raises(ValueError, match="csc_perm"):
        _pattern(bad, 2, 3, 4)
    with pytest.raises(TypeError, match="int64"):
        _pattern(dict(s, cols=s["cols"].astype(np.int32)), 2, 3, 4)
    with pytest.raises(TypeError, match="numpy array"):
        _pattern(dict(s, cols=s["cols"].tolist()), 2, 3, 4)
    with pytest.raises(ValueError, match=">= 0"):
        _pattern(s, -1, 3, 4)


@needs_native
def test_kernel_argument_messages():
    rng = np.random.default_rng(1)
    s, _ = _structure(rng, 1, 3, 5, 0.5)
    pat = _pattern(s, 1, 3, 5)
    nnz = pat.nnz
    xt = _fm(rng.normal(size=(1, 4, 5)), 16)
    vals = rng.normal(size=nnz)
    yt = ext.sparse_fm_forward(xt, pat, vals, None, False, 4)
    assert yt.shape == (1, 3, 16) and np.all(yt[:, :, 4:] == 0)
    with pytest.raises(TypeError, match="xt must have dtype"):
        ext.sparse_fm_forward(xt.astype(np.int32), pat, vals, None, False, 4)
    with pytest.raises(TypeError, match="vals"):
        ext.sparse_fm_forward(xt, pat, vals.astype(np.float32), None, False, 4)
    with pytest.raises(ValueError, match="padded"):
        ext.sparse_fm_forward(xt, pat, vals, None, False, 17)
    with pytest.raises(ValueError, match="xt must have shape"):
        ext.sparse_fm_forward(xt[:, :4].copy(), pat, vals, None, False, 4)
    with pytest.raises(ValueError, match="C-contiguous"):
        ext.sparse_fm_forward(np.zeros((1, 5, 32))[:, :, ::2], pat, vals, None, False, 4)
    with pytest.raises(ValueError, match="bias"):
        ext.sparse_fm_forward(xt, pat, vals, np.zeros((1, 4)), False, 4)
    with pytest.raises(ValueError, match="batch must be >= 0"):
        ext.sparse_fm_forward(xt, pat, vals, None, False, -1)
    with pytest.raises(TypeError):
        ext.sparse_fm_forward(xt, "not a pattern", vals, None, False, 4)
    gy = np.ones_like(yt)
    with pytest.raises(ValueError, match="yt must have shape"):
        ext.sparse_fm_backward(gy, xt, yt[:, :2].copy(), pat, vals, 4)
    with pytest.raises(TypeError, match="grad_yt must have dtype"):
        ext.sparse_fm_backward(gy.astype(np.float16), xt, None, pat, vals, 4)
    with pytest.raises(ValueError, match="xt must have shape"):
        ext.sparse_fm_backward(gy, xt[:, :, :8].copy(), None, pat, vals, 4)


@needs_native
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), M=st.integers(0, 3), n_in=st.integers(0, 9), n_out=st.integers(0, 9),
       corrupt=st.sampled_from(["ptr_start", "ptr_end", "ptr_order", "col", "perm_range", "perm_dup", "perm_row",
                                "csc_rows", "csc_ptr"]))
def test_pattern_fuzz_rejects_corruption(seed, M, n_in, n_out, corrupt):
    rng = np.random.default_rng(seed)
    s, _ = _structure(rng, M, n_out, n_in, 0.5)
    s = {k: v.copy() for k, v in s.items()}
    nnz = len(s["cols"])
    if corrupt == "ptr_start":
        s["indptr"][0] = 1
    elif corrupt == "ptr_end":
        s["indptr"][-1] = nnz + 1
    elif corrupt == "ptr_order" and len(s["indptr"]) > 2 and nnz:
        k = int(np.argmax(s["indptr"] > 0))
        s["indptr"][k - 1] = s["indptr"][k] + 1
    elif corrupt == "col" and nnz:
        s["cols"][0] = -1
    elif corrupt == "perm_range" and nnz:
        s["csc_perm"][0] = nnz
    elif corrupt == "perm_dup" and nnz > 1:
        s["csc_perm"][1] = s["csc_perm"][0]
    elif corrupt == "perm_row" and nnz > 1 and not np.array_equal(np.roll(s["csc_perm"], 1), s["csc_perm"]):
        # a permutation, but entries no longer map to the CSR entry of the same (network, row, column)
        rolled = np.roll(s["csc_perm"], 1)
        rows_a = np.searchsorted(s["indptr"], s["csc_perm"], side="right")
        rows_b = np.searchsorted(s["indptr"], rolled, side="right")
        if np.array_equal(rows_a, rows_b) and np.array_equal(s["cols"][s["csc_perm"]], s["cols"][rolled]):
            return  # rolling happened to keep every mapping valid
        s["csc_perm"] = rolled
    elif corrupt == "csc_rows" and nnz:
        s["csc_rows"][0] = n_out
    elif corrupt == "csc_ptr":
        s["csc_indptr"][-1] = nnz + 1
    else:
        return  # this corruption needs entries the draw does not have
    with pytest.raises(ValueError):
        _pattern(s, M, n_out, n_in)


@needs_native
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), M=st.integers(1, 3), B=st.integers(0, 40),
       n_in=st.sampled_from([0, 1, 5, 9, 17, 40]),  # rows of 16+ kept weights take the grouped reductions
       n_out=st.integers(0, 9), density=st.sampled_from([0.0, 0.3, 1.0]),
       dtype=st.sampled_from([np.float32, np.float64]), relu=st.booleans(), with_bias=st.booleans(),
       need=st.tuples(st.booleans(), st.booleans(), st.booleans()))
def test_kernels_match_numpy(seed, M, B, n_in, n_out, density, dtype, relu, with_bias, need):
    rng = np.random.default_rng(seed)
    s, rows = _structure(rng, M, n_out, n_in, density)
    pat = _pattern(s, M, n_out, n_in)
    cols = s["cols"]
    Bp = ext.padded_batch(B)
    x = rng.normal(size=(M, B, n_in)).astype(dtype)
    vals = rng.normal(size=len(cols)).astype(dtype)
    bias = rng.normal(size=(M, n_out)).astype(dtype) if with_bias else None
    W = np.zeros((M * n_out, n_in))
    W[rows, cols] = vals
    W = W.reshape(M, n_out, n_in)
    pre = np.einsum("mbi,moi->mbo", x.astype(np.float64), W) + (0 if bias is None else bias[:, None, :])
    want_y = np.maximum(pre, 0) if relu else pre
    tol = 1e-4 if dtype == np.float32 else 1e-10
    xt = _fm(x, Bp)
    yt = ext.sparse_fm_forward(xt, pat, vals, bias, relu, B)
    assert yt.shape == (M, n_out, Bp) and yt.dtype == dtype
    np.testing.assert_allclose(yt[:, :, :B].transpose(0, 2, 1), want_y, rtol=tol, atol=tol)
    assert np.all(yt[:, :, B:] == 0)
    gy = rng.normal(size=(M, B, n_out)).astype(dtype)
    gyt = _fm(gy, Bp)
    gyt[:, :, B:] = 7.0  # the padding of the incoming gradient must not count
    need_x, need_w, need_b = need
    gx, gv, gb = ext.sparse_fm_backward(gyt, xt, yt if relu else None, pat, vals, B, need_x, need_w, need_b)
    g = gy.astype(np.float64) * (pre > 0 if relu else 1.0)
    if need_x:
        assert gx.shape == (M, n_in, Bp) and np.all(gx[:, :, B:] == 0)
        np.testing.assert_allclose(gx[:, :, :B].transpose(0, 2, 1), np.einsum("mbo,moi->mbi", g, W), rtol=tol, atol=tol)
    else:
        assert gx is None
    if need_w:
        want_gv = np.einsum("mbo,mbi->moi", g, x.astype(np.float64)).reshape(M * n_out, n_in)[rows, cols]
        np.testing.assert_allclose(gv, want_gv, rtol=tol, atol=tol)
    else:
        assert gv is None
    if need_b:
        np.testing.assert_allclose(gb, g.sum(axis=1), rtol=tol, atol=tol)
    else:
        assert gb is None


@needs_native
def test_relu_keeps_nan_like_torch():
    rng = np.random.default_rng(3)
    s, _ = _structure(rng, 1, 2, 2, 1.0)
    pat = _pattern(s, 1, 2, 2)
    xt = _fm(np.array([[[np.nan, 1.0]]]), 16)
    yt = ext.sparse_fm_forward(xt, pat, np.ones(pat.nnz), None, True, 1)
    assert np.isnan(yt[0, :, 0]).all()


@needs_native
def test_threads_give_the_same_result():
    rng = np.random.default_rng(4)
    M, B, n = 8, 64, 128  # over the kernels' parallel-work threshold: networks run in parallel
    s, _ = _structure(rng, M, n, n, 0.3)
    pat = _pattern(s, M, n, n)
    xt = _fm(rng.normal(size=(M, B, n)), ext.padded_batch(B))
    vals = rng.normal(size=pat.nnz)
    one = ext.sparse_fm_forward(xt, pat, vals, None, True, B, 1)
    two = ext.sparse_fm_forward(xt, pat, vals, None, True, B, 2)
    np.testing.assert_array_equal(one, two)
    g = rng.normal(size=one.shape)
    for a, b in zip(ext.sparse_fm_backward(g, xt, one, pat, vals, B, True, True, True, 1),
                    ext.sparse_fm_backward(g, xt, one, pat, vals, B, True, True, True, 2)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@needs_native
@settings(max_examples=60, deadline=None)
@given(M=st.integers(0, 4), n_out=st.integers(0, 9), n_in=st.integers(0, 9),
       density=st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]), seed=st.integers(0, 1000))
def test_native_structure_builder_equals_the_reference(M, n_out, n_in, density, seed):
    """The one-pass C++ builder gives the reference's arrays exactly (empty networks, layers and masks too)."""
    m = torch.rand(M, n_out, n_in, generator=torch.Generator().manual_seed(seed)) < density
    a, b = pnn.build_structure(m), pnn.build_structure_reference(m)
    assert (a.M, a.n_out, a.n_in) == (b.M, b.n_out, b.n_in)
    for f in ("indptr", "cols", "rows", "pos", "csc_indptr", "csc_rows", "csc_perm"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype == torch.int64 and torch.equal(x, y), f
    pnn.native_pattern(a)  # the validated native copy accepts it


def test_structure_builders_refuse_bad_masks():
    for fn in (pnn.build_structure, pnn.build_structure_reference):
        with pytest.raises(ValueError, match="bool tensor"):
            fn(torch.ones(1, 2, 3))
        with pytest.raises(ValueError, match="expected a \\(M, out, in\\) mask"):
            fn(torch.ones(2, 3, dtype=torch.bool))
    if ext is not None:
        with pytest.raises(ValueError, match="mask"):
            ext.csr_structure(np.ones((2, 3), dtype=bool))
        with pytest.raises(TypeError, match="mask"):
            ext.csr_structure(np.ones((1, 2, 3), dtype=np.float32))
