"""Data-driven pruners at initialisation: SNIP and GraSP, scored on a small pruning set."""
from __future__ import annotations

import numbers
from typing import Callable

import torch

from .base import ScorePruner, default_loss, effective_parameters, forward, network_forward, pruning_set, register


class DataScorePruner(ScorePruner):
    """A score pruner that scores on the first ``pruning_samples`` training samples (40 by default, as the
    Plant 'n' Seek code) with the task loss (``loss``: a callable ``(outputs, targets) -> scalar``; default
    cross-entropy for integer labels and MSE for float targets, exactly `Task.loss`)."""

    needs_data = True

    def __init__(self, iterations: int | None = None, pruning_samples: int = 40,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__(iterations=iterations)
        if isinstance(pruning_samples, bool) or not isinstance(pruning_samples, numbers.Integral) or pruning_samples < 1:
            raise ValueError(f"pruning_samples must be a positive integer, got {pruning_samples!r}")
        if loss is not None and not callable(loss):
            raise ValueError(f"loss must be a callable (outputs, targets) -> scalar or None, got {loss!r}")
        self._set_options(pruning_samples=int(pruning_samples), loss=loss)

    def _loss(self) -> Callable:
        return self.loss if self.loss is not None else default_loss

    def _leaves(self, net, mask):
        """Masked parameters as fresh leaf tensors that require gradients (pruned entries are 0)."""
        return [(w.requires_grad_(True), b.requires_grad_(True)) for w, b in effective_parameters(net, mask)]


@register("snip")
class SnipPruner(DataScorePruner):
    """SNIP: keep the largest connection sensitivity |g * w| on a pruning set (Lee et al., ICLR 2019).

    Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019.

    g is the gradient of the task loss on the pruning set with respect to each (masked) weight and bias; the
    score |g * w| equals the paper's |dL/dc| for a multiplicative mask c = 1. The paper's normalisation by the
    sum of scores does not change the ranking and is left out.
    """

    def scores(self, net, data, generator, mask):
        x, y = pruning_set(net, data, self.pruning_samples)
        params = self._leaves(net, mask)
        flat = [t for pair in params for t in pair]
        with torch.enable_grad():
            loss = self._loss()(network_forward(net, params, x), y)
            grads = torch.autograd.grad(loss, flat, allow_unused=True)
        out = []
        for i in range(len(params)):
            gw, gb = grads[2 * i], grads[2 * i + 1]
            w, b = params[i]
            gw = torch.zeros_like(w) if gw is None else gw
            gb = torch.zeros_like(b) if gb is None else gb
            out.append(((gw * w).detach().abs(), (gb * b).detach().abs()))
        return out


@register("grasp")
class GraspPruner(DataScorePruner):
    """GraSP: gradient signal preservation, keeps the largest theta * Hg (Wang et al., ICLR 2020).

    Wang, Zhang & Grosse, "Picking Winning Tickets Before Training by Preserving Gradient Flow", ICLR 2020,
    with the paper's temperature T = 200.

    With L the task loss of the outputs divided by T on the pruning set, g = dL/dtheta (held constant) and H the
    Hessian of L, the Hessian-gradient product Hg is obtained by double backpropagation: Hg = d(g . dL/dtheta)/dtheta.
    The paper scores S(-theta) = -theta * Hg and *removes the highest* scores (pruning the weights whose removal
    reduces gradient flow the least, or increases it); the original code (alecwangcq/GraSP) keeps the weights with
    -theta * Hg <= threshold. plantseek keeps the *highest* scores, so this pruner returns theta * Hg: the same
    masks (SynFlow's and the Plant 'n' Seek code do the same). Biases are scored like weights; the temperature is
    applied to regression outputs too, as in the Plant 'n' Seek code. The normalisation by |sum of scores| does
    not change the ranking and is left out. Option ``temperature``.
    """

    def __init__(self, iterations: int | None = None, pruning_samples: int = 40,
                 loss: Callable | None = None, temperature: float = 200.0) -> None:
        super().__init__(iterations=iterations, pruning_samples=pruning_samples, loss=loss)
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not float(temperature) > 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self._set_options(temperature=float(temperature))

    def scores(self, net, data, generator, mask):
        x, y = pruning_set(net, data, self.pruning_samples)
        params = self._leaves(net, mask)
        flat = [t for pair in params for t in pair]
        with torch.enable_grad():
            loss = self._loss()(network_forward(net, params, x) / self.temperature, y)
            grads = torch.autograd.grad(loss, flat, create_graph=True, allow_unused=True)
            used = [(g, p) for g, p in zip(grads, flat) if g is not None]
            z = sum((g.detach() * g).sum() for g, _ in used)
            hg = torch.autograd.grad(z, flat, allow_unused=True) if torch.is_tensor(z) and z.requires_grad else [None] * len(flat)
        out = []
        for i in range(len(params)):
            w, b = params[i]
            hw = torch.zeros_like(w) if hg[2 * i] is None else hg[2 * i]
            hb = torch.zeros_like(b) if hg[2 * i + 1] is None else hg[2 * i + 1]
            out.append(((w * hw).detach(), (b * hb).detach()))
        return out
