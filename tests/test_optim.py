"""The trainer's optimisers (plantseek.optim) against torch.optim."""
from __future__ import annotations

import pytest
import torch

from plantseek import optim
from plantseek.train import TrainConfig


def test_adam_state_matches_torch_adam_with_weight_decay():
    g = torch.Generator().manual_seed(0)
    p = [torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
    q = [t.clone().requires_grad_(True) for t in p]
    cfg = TrainConfig(lr=1e-2, weight_decay=1e-3)
    ours = optim.AdamState(p, cfg)
    ref = torch.optim.Adam(q, lr=1e-2, weight_decay=1e-3)
    for _ in range(5):
        grads = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in p]
        ours.step([gr.t().contiguous().t() if gr.dim() == 2 else gr for gr in grads], 1e-2)
        for t, gr in zip(q, grads):
            t.grad = gr
        ref.step()
    for a, b in zip(p, q):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 1e-2), (0.0, 1e-2)])
def test_sgd_step_matches_torch_sgd(momentum, weight_decay):
    g = torch.Generator().manual_seed(0)
    p = [torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
    q = [t.clone().requires_grad_(True) for t in p]
    bufs = [torch.zeros_like(t) for t in p]
    ref = torch.optim.SGD(q, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    for step in range(1, 5):
        grads = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in p]
        for t, gr in zip(q, grads):
            t.grad = gr.clone()
        optim.sgd_step_(p, grads, bufs, lr=0.05, momentum=momentum, weight_decay=weight_decay, step=step)
        ref.step()
    for a, b in zip(p, q):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-12)


def test_the_configuration_accepts_the_optimizers():
    for name in optim.OPTIMIZERS:
        assert TrainConfig(optimizer=name).optimizer == name
    with pytest.raises(ValueError, match="available: adam, sgd"):
        TrainConfig(optimizer="lbfgs")
