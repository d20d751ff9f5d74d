"""CUDA kernels against the CPU references (run only where a GPU and plantseek._C_cuda exist)."""
import pytest
import torch

from plantseek import kernels, metrics, native
from plantseek import nn as pnn

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(native.cuda_module() is None, reason="plantseek._C_cuda not built"),
]


def _mask(gen, widths, density, device):
    return [((torch.rand(widths[i + 1], widths[i], generator=gen) < density).to(device),
             (torch.rand(widths[i + 1], generator=gen) < density).to(device)) for i in range(len(widths) - 1)]


@pytest.mark.parametrize("widths", [[3, 5, 2], [17, 64, 64, 10], [1, 1], [40, 0, 3]])
@pytest.mark.parametrize("density", [0.0, 0.1, 1.0])
def test_cuda_overlap_and_reachability(widths, density):
    gen = torch.Generator().manual_seed(0)
    found = [_mask(gen, widths, density, "cuda") for _ in range(5)]
    ticket = _mask(gen, widths, 0.3, "cuda")
    got = kernels.cuda_overlap_counts(found, ticket)
    want = metrics.masks_mod.overlap_counts_reference([[(w.cpu(), b.cpu()) for w, b in m] for m in found],
                                                      [(w.cpu(), b.cpu()) for w, b in ticket])
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    cpu = [[(w.cpu(), b.cpu()) for w, b in m] for m in found]
    got = metrics.reachability_counts(found)
    want = metrics.reachability_counts_reference(cpu)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert metrics.recovery(found, ticket) == metrics.recovery(cpu, [(w.cpu(), b.cpu()) for w, b in ticket])


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("M", [None, 3])
@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_cuda_sparse_linear_matches_dense(dtype, tol, M, density):
    gen = torch.Generator().manual_seed(1)
    lead = () if M is None else (M,)
    x = torch.randn(*lead, 37, 50, generator=gen, dtype=dtype).cuda().requires_grad_(True)
    w = torch.randn(*lead, 20, 50, generator=gen, dtype=dtype).cuda().requires_grad_(True)
    b = torch.randn(*lead, 20, generator=gen, dtype=dtype).cuda().requires_grad_(True)
    m = (torch.rand(*lead, 20, 50, generator=gen) < density).cuda()
    bm = (torch.rand(*lead, 20, generator=gen) < 0.5).cuda()
    g = torch.randn(*lead, 37, 20, generator=gen, dtype=dtype).cuda()
    outs = []
    for impl in ("sparse", "dense"):
        y = pnn.masked_linear(x, w, m, b, bm, impl=impl)
        outs.append((y, *torch.autograd.grad(y, (x, w, b), g)))
    for a, c in zip(*outs):
        torch.testing.assert_close(a, c, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_cuda_feature_major_chain_matches_cpu(dtype, tol):
    """sparse_linear_fm on CUDA (row-major kernels with the layout converted around them) equals the CPU path."""
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
    for device in ("cpu", "cuda"):
        xd = x.to(device).requires_grad_(True)
        params, h = [], pnn.to_feature_major(xd)
        for k, (m, w, b) in enumerate(layers):
            s = pnn.mask_structure(m.to(device))
            vals = w.to(device).reshape(-1)[s.pos].clone().requires_grad_(True)
            bias = b.to(device).requires_grad_(True)
            params += [vals, bias]
            h = pnn.sparse_linear_fm(h, vals, s, B, bias, relu=k < len(layers) - 1)
        y = pnn.from_feature_major(h, B)
        g = torch.ones_like(y)
        results.append([t.cpu() for t in (y, *torch.autograd.grad(y, [xd] + params, g))])
    for a, c in zip(*results):
        torch.testing.assert_close(a, c, rtol=tol, atol=tol)
