"""Stacking networks and masks into batched tensors and back (plantseek.batching)."""
from __future__ import annotations

import pytest
import torch

from plantseek import batching as B


def _net(seed, shapes=((4, 2), (3, 4))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes], [torch.randn(s[0], generator=g) for s in shapes]


def test_stack_and_unstack_round_trip():
    nets = [_net(k) for k in range(3)]
    W, Bs = B.stack_params(nets)
    assert [tuple(w.shape) for w in W] == [(3, 4, 2), (3, 3, 4)] and [tuple(b.shape) for b in Bs] == [(3, 4), (3, 3)]
    for k, (ws, bs) in enumerate(nets):
        uw, ub = B.unstack(W, Bs, k)
        assert all(torch.equal(a, b) for a, b in zip(uw + ub, ws + bs))
    masks = [[(w > 0, b > 0) for w, b in zip(*net)] for net in nets]
    M = B.stack_masks(masks)
    assert B.check_stacked(W, Bs, M) == 3
    assert all(torch.equal(M[l][0][k], masks[k][l][0]) for k in range(3) for l in range(2))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least one network"):
        B.stack_params([])
    with pytest.raises(ValueError, match="network 1 has 1 layers"):
        B.stack_params([_net(0), _net(1, shapes=((4, 2),))])
    with pytest.raises(ValueError, match="at least one mask"):
        B.stack_masks([])
    W, Bs = B.stack_params([_net(0), _net(1)])
    with pytest.raises(ValueError, match="one bias per weight"):
        B.check_stacked(W, Bs[:1], None)
    with pytest.raises(ValueError, match="layer 1 takes 5 inputs but layer 0 has 4 outputs"):
        B.check_stacked([W[0], torch.zeros(2, 3, 5)], Bs, None)
    with pytest.raises(ValueError, match="masks have 1 layers"):
        B.check_stacked(W, Bs, [(W[0] > 0, Bs[0] > 0)])
    with pytest.raises(ValueError, match="bool"):
        B.check_stacked(W, Bs, [(w.double(), b > 0) for w, b in zip(W, Bs)])
