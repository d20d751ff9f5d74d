"""Edge-popup: strong-ticket search by training a score per parameter (Ramanujan et al., CVPR 2020).

Ramanujan, Wortsman, Kembhavi, Farhadi & Rastegari, "What's Hidden in a Randomly Weighted Neural Network?",
CVPR 2020. The weights keep their (planted) values; every weight *and every bias* gets a score, both
initialised non-zero so that both learn (the Plant 'n' Seek code initialised bias scores to zero, so they
never moved). Each step keeps the top-k scores (|score|, per layer or globally) and the gradient passes
straight through the top-k to the scores: d loss / d score = d loss / d (effective weight) * weight. SGD with
momentum 0.9, weight decay 5e-4, lr 0.1 with a cosine schedule over the epochs, batch 32, 10 epochs.

Loss: the strong protocol reads outputs through a fitted scale, so edge-popup trains with the same scale-free
loss: regression MSE after the per-batch least-squares factor per output (no softmax on regression outputs:
the original applied one, which made regression impossible), classification cross-entropy on the raw logits.

``edge-popup-annealed`` lowers the density during the search: density ** (e / E) in epoch e of E
(1-based), ending at the requested density.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from ..masks import Mask
from . import selection
from .base import (Pruner, check_density, check_reachable, check_scope, current_mask, device_generator,
                   network_forward, register)


def scale_free_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on raw logits for integer labels; for float targets the MSE after the per-output
    least-squares factor c_k = <o_k, y_k> / <o_k, o_k> fitted on this batch (detached: at the optimum of c
    its derivative is zero, so the gradient in the outputs is the same)."""
    if not targets.is_floating_point():
        return F.cross_entropy(outputs, targets)
    y = targets.to(outputs.dtype).reshape(outputs.shape)
    with torch.no_grad():
        num = (outputs * y).sum(dim=0)
        den = (outputs * outputs).sum(dim=0)
        c = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
    diff = outputs * c - y
    return (diff * diff).mean()


@register("edge-popup")
class EdgePopupPruner(Pruner):
    """Edge-popup: train a score per weight and bias through a straight-through top-k (Ramanujan et al., CVPR 2020).

    Options: epochs (10), lr (0.1), momentum (0.9), weight_decay (5e-4), batch_size (32), score_init
    ("kaiming": uniform in +-1/sqrt(fan_in) per layer as the original, or "uniform": uniform in (0, 1] for
    every layer, comparable across layers in the global scope), samples (None = the whole training set).
    The default scope is per layer, as in its paper; scope="global" ranks all scores together.
    """

    needs_data = True
    annealed = False

    def __init__(self, epochs: int = 10, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                 batch_size: int = 32, score_init: str = "kaiming", samples: int | None = None) -> None:
        self.options = {}
        for name, v in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < (0 if name == "epochs" else 1):
                raise ValueError(f"edge-popup option {name} must be an integer >= {0 if name == 'epochs' else 1}, got {v!r}")
        for name, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise ValueError(f"edge-popup option {name} must be a finite number >= 0, got {v!r}")
        if score_init not in ("kaiming", "uniform"):
            raise ValueError(f"edge-popup option score_init must be 'kaiming' or 'uniform', got {score_init!r}")
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1):
            raise ValueError(f"edge-popup option samples must be a positive integer or None, got {samples!r}")
        self._set_options(epochs=int(epochs), lr=float(lr), momentum=float(momentum), weight_decay=float(weight_decay),
                          batch_size=int(batch_size), score_init=score_init,
                          samples=None if samples is None else int(samples))

    # -- schedule
    def density_at(self, density: float, epoch: int) -> float:
        """The density kept during epoch `epoch` (1-based) of the search."""
        if self.annealed and self.epochs > 0:
            return density ** (epoch / self.epochs)
        return density

    # -- scores
    def _init_scores(self, net, gen) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for w, b in zip(net.weights, net.biases):
            if self.score_init == "kaiming":
                bound = 1.0 / math.sqrt(max(1, w[0].numel()))  # fan_in (in x kh x kw for Conv2d)
                ws = (torch.rand(w.shape, generator=gen, device=w.device, dtype=w.dtype) * 2 - 1) * bound
                bs = (torch.rand(b.shape, generator=gen, device=b.device, dtype=b.dtype) * 2 - 1) * bound
            else:
                ws = 1.0 - torch.rand(w.shape, generator=gen, device=w.device, dtype=w.dtype)
                bs = 1.0 - torch.rand(b.shape, generator=gen, device=b.device, dtype=b.dtype)
            # never exactly zero: a zero score has no sign to pass the gradient through |s|
            tiny = torch.finfo(w.dtype).tiny
            ws = torch.where(ws == 0, torch.full_like(ws, tiny), ws)
            bs = torch.where(bs == 0, torch.full_like(bs, tiny), bs)
            out.append((ws, bs))
        return out

    @staticmethod
    def _groups(n_layers: int, scope: str) -> list[list[int]]:
        return [list(range(n_layers))] if scope == "global" else [[i] for i in range(n_layers)]

    def _step_masks(self, scores, current, density, scope, prune_bias):
        """Top-k keep masks of |scores| (threshold compare; ties may keep a few more during the search)."""
        masks = [[None, None] for _ in scores]
        with torch.no_grad():
            for layers in self._groups(len(scores), scope):
                vals, total = [], 0
                for i in layers:
                    ws, bs = scores[i]
                    vals.append(torch.where(current[i][0], ws.abs(), torch.full_like(ws, -math.inf)).reshape(-1))
                    total += ws.numel()
                    if prune_bias:
                        vals.append(torch.where(current[i][1], bs.abs(), torch.full_like(bs, -math.inf)).reshape(-1))
                        total += bs.numel()
                flat = torch.cat(vals) if len(vals) > 1 else vals[0]
                k = max(1, min(selection.kept_count(density, total), flat.numel()))
                thr = torch.topk(flat, k, sorted=False).values.min()
                for i in layers:
                    ws, bs = scores[i]
                    masks[i][0] = (ws.abs() >= thr) & current[i][0]
                    masks[i][1] = ((bs.abs() >= thr) & current[i][1]) if prune_bias else current[i][1]
        return masks

    # -- search
    def prune(self, net, data, density, *, scope="layer", prune_bias=True, generator=None, mask=None) -> Mask:
        """Train the scores on ``data.x_train`` and keep the top ones (exact count, deterministic ties)."""
        from ..train import cpu_threads_for

        work = float(self.batch_size) * float(sum(w.numel() for w in net.weights))
        with cpu_threads_for(work, net.device):
            return self._prune(net, data, density, scope=scope, prune_bias=prune_bias, generator=generator, mask=mask)

    def _prune(self, net, data, density, *, scope, prune_bias, generator, mask) -> Mask:
        density = check_density(density, net)
        check_scope(scope)
        current = current_mask(net, mask)
        check_reachable(current, density, scope, bool(prune_bias))
        prune_bias = bool(prune_bias)
        if data is None:
            raise ValueError(f"pruner {self.name!r} trains scores on data: pass the task data (a TaskData)")
        dev, dt = net.device, net.dtype
        gen = device_generator(generator, dev)
        x = data.x_train.to(device=dev, dtype=dt)
        y = data.y_train.to(device=dev, dtype=dt) if data.y_train.is_floating_point() else data.y_train.to(device=dev)
        if self.samples is not None:
            x, y = x[: self.samples], y[: self.samples]
        n = x.shape[0]
        weights = [w.detach() for w in net.weights]
        biases = [b.detach() for b in net.biases]
        scores = self._init_scores(net, gen)
        params = [t.requires_grad_(True) for pair in scores for t in pair]
        bufs = [torch.zeros_like(p) for p in params]
        batches = [(s, min(s + self.batch_size, n)) for s in range(0, n, self.batch_size)]
        last = len(weights) - 1
        step = 0
        for epoch in range(1, self.epochs + 1):
            lr = 0.5 * self.lr * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))
            d_e = self.density_at(density, epoch)
            perm = torch.randperm(n, generator=gen, device=dev)
            xs, ys = x[perm], y[perm]
            for s, e in batches:
                keep = self._step_masks(scores, current, d_e, scope, prune_bias)
                eff = []
                for i, (w, b) in enumerate(zip(weights, biases)):
                    ws, bs = scores[i]
                    wsa, bsa = ws.abs(), bs.abs()
                    mw = keep[i][0].to(dt) + (wsa - wsa.detach())  # straight-through top-k
                    mb = keep[i][1].to(dt) + (bsa - bsa.detach()) if prune_bias else keep[i][1].to(dt)
                    eff.append((w * mw, b * mb))
                h = network_forward(net, eff, xs[s:e])  # MLP, or the net's own layers (Conv2d)
                loss = scale_free_loss(h, ys[s:e])
                if not torch.isfinite(loss):
                    raise ValueError(f"pruner {self.name!r}: the loss became {float(loss)} in epoch {epoch} of {self.epochs}")
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
                step += 1
                with torch.no_grad():
                    if self.weight_decay:
                        torch._foreach_add_(grads, params, alpha=self.weight_decay)
                    if self.momentum:
                        if step == 1:
                            torch._foreach_copy_(bufs, grads)
                        else:
                            torch._foreach_mul_(bufs, self.momentum)
                            torch._foreach_add_(bufs, grads)
                        torch._foreach_add_(params, bufs, alpha=-lr)
                    else:
                        torch._foreach_add_(params, grads, alpha=-lr)
        final = [(ws.detach().abs(), bs.detach().abs()) for ws, bs in scores]
        return selection.select(final, density, current, scope=scope, prune_bias=prune_bias)


@register("edge-popup-annealed")
class AnnealedEdgePopupPruner(EdgePopupPruner):
    """Edge-popup with annealed density: keeps density^(e/E) in epoch e of E (Plant 'n' Seek, ICLR 2022)."""

    annealed = True
