"""SynFlow: data-free iterative synaptic-flow pruning."""
from __future__ import annotations

import torch

from ..kernels import scores as score_kernels
from .base import ScorePruner, check_density, check_reachable, check_scope, current_mask, register


def synflow_scores_reference(params: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """SynFlow scores of one (masked) network in closed form, without autograd.

    The linearised network has |W| and |b| and reads an all-ones input; with forward activations a (a_0 = 1,
    a_l = relu(|W_l| a_{l-1} + |b_l|)) and the backward signal dR/da of R = sum(output), the scores are
    dR/dW_ij * |W_ij| = (dR/dz_l)_i (a_{l-1})_j |W_ij| and dR/db_i * |b_i| = (dR/dz_l)_i |b_i|. The ReLU
    derivative is 0 at 0 (as in autograd), which only matters for neurons that nothing reaches.
    """
    ws = [w.abs() for w, _ in params]
    bs = [b.abs() for _, b in params]
    dtype, device = ws[0].dtype, ws[0].device
    acts = [torch.ones(ws[0].shape[1], dtype=dtype, device=device)]
    for l, (w, b) in enumerate(zip(ws, bs)):
        z = w @ acts[-1] + b
        acts.append(torch.relu(z) if l < len(ws) - 1 else z)
    grad = torch.ones(ws[-1].shape[0], dtype=dtype, device=device)  # dR/dz of the output layer
    out: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(ws)  # type: ignore[list-item]
    for l in range(len(ws) - 1, -1, -1):
        out[l] = (grad[:, None] * acts[l][None, :] * ws[l], grad * bs[l])
        if l > 0:
            grad = (ws[l].t() @ grad) * (acts[l] > 0).to(dtype)
    return out


def synflow_scores_network(net, params: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """SynFlow scores by autograd through ``net.forward_params`` (networks with their own layer sequence, e.g.
    the convolutional networks of `plantseek.image`): R = sum of the outputs of the network with |W|, |b| on an
    all-ones input of shape ``(1, *net.input_shape)``; scores |dR/dtheta * theta|. Computed in float64 (R is a
    product over all layers and overflows float32 in deep conv nets), returned in float64."""
    leaves = [(w.abs().double().requires_grad_(True), b.abs().double().requires_grad_(True)) for w, b in params]
    flat = [t for pair in leaves for t in pair]
    x = torch.ones((1, *net.input_shape), dtype=torch.float64, device=flat[0].device)
    with torch.enable_grad():
        r = net.forward_params(leaves, x).sum()
        grads = torch.autograd.grad(r, flat, allow_unused=True)
    out = []
    for i, (w, b) in enumerate(leaves):
        gw, gb = grads[2 * i], grads[2 * i + 1]
        out.append(((w * gw).detach() if gw is not None else torch.zeros_like(w).detach(),
                    (b * gb).detach() if gb is not None else torch.zeros_like(b).detach()))
    return out


@register("synflow")
class SynFlowPruner(ScorePruner):
    """SynFlow: data-free iterative synaptic flow pruning (Tanaka et al., NeurIPS 2020).

    Tanaka, Kunin, Yamins & Ganguli, "Pruning neural networks without any data by iteratively conserving
    synaptic flow", NeurIPS 2020.

    Score |dR/dtheta * theta| with R = 1^T (prod_l |W_l|) 1: the sum of the outputs of the linearised network
    (absolute weights and biases, pruned ones zero) on an all-ones input; biases are scored too. Data-free.
    Option ``iterations`` (default 100, as in SynFlow's paper; the Plant 'n' Seek paper's main runs use 1):
    rounds with the exponential density schedule density^(r/R), rescoring the masked network each round.
    All R rounds run in one call of `plantseek.kernels.scores.synflow_prune` (native on the CPU, PyTorch on other
    devices; scores in float64, which keeps the product of layer norms of deep, wide networks finite); conv
    networks and subclasses with scores of their own take the generic `ScorePruner` rounds, which give the
    same masks (same schedule, counts and tie rule).
    """

    default_iterations = 100

    def prune(self, net, data, density, *, scope="global", prune_bias=True, generator=None, mask=None):
        if (callable(getattr(net, "forward_params", None))  # conv networks: autograd `scores`
                or type(self).scores is not SynFlowPruner.scores):  # a subclass with scores of its own
            return super().prune(net, data, density, scope=scope, prune_bias=prune_bias, generator=generator, mask=mask)
        density = check_density(density, net, scope=scope, prune_bias=bool(prune_bias))
        check_scope(scope)
        current = current_mask(net, mask)
        check_reachable(current, density, scope, bool(prune_bias))
        out = score_kernels.synflow_prune(net.weights, net.biases, density, rounds=self.iterations, masks=current, scope=scope,
                 prune_bias=bool(prune_bias))
        return [(wm.to(net.device), bm.to(net.device)) for wm, bm in out]

    def scores(self, net, data, generator, mask):
        params = [(w.detach() * wm, b.detach() * bm) for w, b, (wm, bm) in zip(net.weights, net.biases, mask)]
        if callable(getattr(net, "forward_params", None)):  # conv networks: autograd through their layers
            return synflow_scores_network(net, params)
        return score_kernels.synflow_scores(params)
