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

MLPs search in one batched computation for M runs of one shape (`prune_many`; `prune` is M = 1): the
products are torch's batched ones with the backward written out, the thresholds, effective weights and SGD
step of the scores are `plantseek.kernels.scores.ScoreSearch` (native on the CPU).
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels.scores import score_search
from ..masks import Mask
from ..optim import sgd_step_
from ..rescale import positive_factors
from ..threads import cpu_threads_for
from . import selection
from .base import (Pruner, check_density, check_reachable, check_scope, current_mask, device_generator,
                   network_forward, register)


def scale_free_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on raw logits for integer labels; for float targets the MSE after the per-output positive
    factor of the strong read-out (`plantseek.rescale.positive_factors`: least squares where positive) fitted
    on this batch (detached: at the optimum of c its derivative is zero, so the gradient in the outputs is
    the same)."""
    if not targets.is_floating_point():
        return F.cross_entropy(outputs, targets)
    y = targets.to(outputs.dtype).reshape(outputs.shape)
    with torch.no_grad():
        c = torch.nan_to_num(positive_factors(outputs, y, dim=0), nan=0.0).to(outputs.dtype)
    diff = outputs * c - y
    return (diff * diff).mean()


def _is_mlp(net) -> bool:
    """A plain MLP host (2-D weights, no layer sequence of its own): the batched search applies."""
    return not callable(getattr(net, "forward_params", None)) and all(w.dim() == 2 for w in net.weights)


def _scale_free_losses(outputs: torch.Tensor, targets: torch.Tensor, regression: bool) -> torch.Tensor:
    """(M,) per-network `scale_free_loss` of outputs (M, B, K) against targets (M, B, K) or labels (M, B)."""
    M, Bn = outputs.shape[0], outputs.shape[1]
    if not regression:
        return F.cross_entropy(outputs.reshape(M * Bn, -1), targets.reshape(M * Bn), reduction="none").view(M, Bn).mean(1)
    y = targets.to(outputs.dtype)
    with torch.no_grad():
        c = torch.nan_to_num(positive_factors(outputs, y, dim=1), nan=0.0).to(outputs.dtype)
    diff = outputs * c.unsqueeze(1) - y
    return (diff * diff).mean(dim=(1, 2))


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

    @property
    def batch_family(self) -> type:
        """Runs whose pruners share a family search in one batch (`plantseek.protocols`): the two registered
        variants, which differ only in `density_at`, together; any subclass only with its own kind."""
        return EdgePopupPruner if type(self) in (EdgePopupPruner, AnnealedEdgePopupPruner) else type(self)

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
        work = float(self.batch_size) * float(sum(w.numel() for w in net.weights))
        with cpu_threads_for(work, net.device):
            if _is_mlp(net):  # the batched search with M = 1: one code path for one run and for many
                out = self._prune_many([net], [data], [density], scope=scope, prune_bias=prune_bias,
                                       generators=[generator], masks=[mask])[0]
                if isinstance(out, BaseException):
                    raise out
                return out
            return self._prune(net, data, density, scope=scope, prune_bias=prune_bias, generator=generator, mask=mask)

    def prune_many(self, nets, datas, densities, *, scope="layer", prune_bias=True, generators=None, masks=None,
                   pruners=None):
        """Edge-popup for M MLPs of one shape in one batched search (stacked scores, per-run data, shuffles,
        densities and thresholds; SGD is elementwise, so each run gets what `prune` alone gives it).
        ``pruners``: each run's own edge-popup pruner (plain or annealed, with this one's options), whose
        density schedule it follows; by default this one for every run.

        Returns one entry per run: its mask, or the exception that stopped it (a diverging loss)."""
        M = len(nets)
        generators = list(generators) if generators is not None else [None] * M
        masks = list(masks) if masks is not None else [None] * M
        pruners = list(pruners) if pruners is not None else [self] * M
        if not (len(datas) == len(densities) == len(generators) == len(masks) == len(pruners) == M):
            raise ValueError("prune_many needs one data, density, generator, mask and pruner per network")
        for k, p in enumerate(pruners):
            if getattr(p, "batch_family", None) is not self.batch_family or p.options != self.options:
                raise ValueError(f"prune_many: pruners[{k}] ({p!r}) is not an edge-popup pruner with the options "
                                 f"{self.options} of the one searching")
        work = float(self.batch_size) * M * float(sum(w.numel() for w in nets[0].weights))
        with cpu_threads_for(work, nets[0].device):
            return self._prune_many(nets, datas, densities, scope=scope, prune_bias=prune_bias,
                                    generators=generators, masks=masks, pruners=pruners)

    def _prune_many(self, nets, datas, densities, *, scope, prune_bias, generators, masks, pruners=None):
        check_scope(scope)
        prune_bias = bool(prune_bias)
        M = len(nets)
        schedules = pruners if pruners is not None else [self] * M  # whose density_at each run follows
        net0 = nets[0]
        dev, dt = net0.device, net0.dtype
        shapes = [(tuple(w.shape), tuple(b.shape)) for w, b in zip(net0.weights, net0.biases)]
        dens, currents, gens, xs_all, ys_all = [], [], [], [], []
        for k, (net, data) in enumerate(zip(nets, datas)):
            if [(tuple(w.shape), tuple(b.shape)) for w, b in zip(net.weights, net.biases)] != shapes:
                raise ValueError(f"prune_many: network {k} does not have the shape of network 0")
            if net.device != dev or net.dtype != dt:
                raise ValueError(f"prune_many: network {k} is on {net.device}/{net.dtype}, network 0 on {dev}/{dt}")
            d = check_density(densities[k], net, scope=scope, prune_bias=prune_bias)
            cur = current_mask(net, masks[k])
            check_reachable(cur, d, scope, prune_bias)
            if data is None:
                raise ValueError(f"pruner {self.name!r} trains scores on data: pass the task data (a TaskData)")
            x = data.x_train.to(device=dev, dtype=dt)
            y = data.y_train.to(device=dev, dtype=dt) if data.y_train.is_floating_point() else data.y_train.to(device=dev)
            if self.samples is not None:
                x, y = x[: self.samples], y[: self.samples]
            dens.append(d)
            currents.append(cur)
            gens.append(device_generator(generators[k], dev))
            xs_all.append(x)
            ys_all.append(y)
        n = xs_all[0].shape[0]
        if any(x.shape[0] != n for x in xs_all):
            raise ValueError("prune_many: every run needs the same number of training samples")
        x, y = torch.stack(xs_all), torch.stack(ys_all)
        regression = y.is_floating_point()
        if regression and y.dim() == 2:
            y = y.unsqueeze(2)
        L = len(shapes)
        W = [torch.stack([net.weights[l].detach() for net in nets]) for l in range(L)]
        B = [torch.stack([net.biases[l].detach() for net in nets]) for l in range(L)]
        cur = [(torch.stack([c[l][0] for c in currents]), torch.stack([c[l][1] for c in currents])) for l in range(L)]
        per_run = [self._init_scores(net, g) for net, g in zip(nets, gens)]  # each run draws from its own generator
        scores = [(torch.stack([p[l][0] for p in per_run]), torch.stack([p[l][1] for p in per_run])) for l in range(L)]
        full = [(bool(cw.all()), bool(cb.all())) for cw, cb in cur]
        # the scored parameters, (M, R, C) each: layer i's weights at 2i, its biases (M, 1, out) at 2i + 1 when
        # pruned; the weights' gradient buffers are the backward's (M, in, out) products, read transposed
        seg_scores, seg_weights, seg_elig, seg_grads, where = [], [], [], [], {}
        grad_w, grad_b = [None] * L, [None] * L
        for i in range(L):
            grad_w[i] = torch.empty((M, shapes[i][0][1], shapes[i][0][0]), dtype=dt, device=dev)
            where[i, 0] = len(seg_scores)
            seg_scores.append(scores[i][0])
            seg_weights.append(W[i])
            seg_elig.append(None if full[i][0] else cur[i][0])
            seg_grads.append(grad_w[i].transpose(1, 2))
            if prune_bias:
                grad_b[i] = torch.empty((M, shapes[i][1][0]), dtype=dt, device=dev)
                where[i, 1] = len(seg_scores)
                seg_scores.append(scores[i][1].unsqueeze(1))
                seg_weights.append(B[i].unsqueeze(1).contiguous())
                seg_elig.append(None if full[i][1] else cur[i][1].unsqueeze(1))
                seg_grads.append(grad_b[i].unsqueeze(1))
        groups = self._groups(L, scope)
        search = score_search(seg_scores, seg_weights, seg_elig, seg_grads,
                              [[where[i, j] for i in layers for j in ((0, 1) if prune_bias else (0,))] for layers in groups],
                              momentum=self.momentum, weight_decay=self.weight_decay)
        # biases that are not pruned: their current mask, fixed for the whole search
        fixed_b = None if prune_bias else [B[i] * cur[i][1].to(dt) for i in range(L)]
        totals = [mags.shape[1] for mags in search.mags]  # each scope group's scored entries per run
        batches = [(s0, min(s0 + self.batch_size, n)) for s0 in range(0, n, self.batch_size)]
        idx_m = torch.arange(M, device=dev).unsqueeze(1)
        alive = [True] * M
        alive_t = torch.ones(M, dtype=torch.bool, device=dev)
        failed: list = [None] * M
        step = 0
        with torch.no_grad():
            for epoch in range(1, self.epochs + 1):
                lr = 0.5 * self.lr * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))
                ks = np.array([[min(t, max(1, selection.kept_count(p.density_at(d, epoch), t)))
                                for d, p in zip(dens, schedules)] for t in totals], dtype=np.int64)
                perm = torch.stack([torch.randperm(n, generator=g, device=dev) for g in gens])
                xs, ys = x[idx_m, perm], y[idx_m, perm]
                for s0, e0 in batches:
                    effs = search.forward(ks)
                    hs = [xs[:, s0:e0]]
                    for i in range(L):
                        eb = effs[where[i, 1]].squeeze(1) if prune_bias else fixed_b[i]
                        h = torch.baddbmm(eb.unsqueeze(1), hs[-1], effs[where[i, 0]].transpose(1, 2))
                        hs.append(torch.relu(h) if i < L - 1 else h)
                    with torch.enable_grad():
                        h = hs.pop().requires_grad_(True)
                        losses = _scale_free_losses(h, ys[:, s0:e0], regression)
                        finite = torch.isfinite(losses)
                        if not bool(finite[alive_t].all()):
                            for k, ok in enumerate(finite.tolist()):
                                if alive[k] and not ok:
                                    alive[k] = False
                                    failed[k] = ValueError(f"pruner {self.name!r}: the loss became {float(losses[k])} "
                                                           f"in epoch {epoch} of {self.epochs}")
                            alive_t = torch.tensor(alive, dtype=torch.bool, device=dev)
                            if not any(alive):
                                return failed
                        total = torch.where(alive_t, losses, torch.zeros_like(losses)).sum()
                        (g,) = torch.autograd.grad(total, [h])
                    _score_grads(g, hs, effs, where, grad_w, grad_b)
                    step += 1
                    search.step(lr, first=step == 1)
        out: list = []
        for k in range(M):
            if failed[k] is not None:
                out.append(failed[k])
                continue
            final = [(ws[k].detach().abs(), bs[k].detach().abs()) for ws, bs in scores]
            out.append(selection.select(final, dens[k], currents[k], scope=scope, prune_bias=prune_bias))
        return out

    def _prune(self, net, data, density, *, scope, prune_bias, generator, mask) -> Mask:
        density = check_density(density, net, scope=scope, prune_bias=bool(prune_bias))
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
                sgd_step_(params, grads, bufs, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay,
                          step=step)
        final = [(ws.detach().abs(), bs.detach().abs()) for ws, bs in scores]
        return selection.select(final, density, current, scope=scope, prune_bias=prune_bias)



def _score_grads(g, hs, effs, where, grad_w, grad_b) -> None:
    """The backward of the batched search's forward into the search's gradient buffers, as autograd computes
    it through baddbmm and ReLU: per layer d loss / d effective weight (baddbmm's batch2 product, kept in its
    (M, in, out) layout and read transposed) and d loss / d bias; g is d loss / d outputs of the last layer.
    Written out because autograd's bookkeeping over the ~8 nodes of each layer cost more than the products."""
    for i in range(len(hs) - 1, -1, -1):
        torch.bmm(hs[i].transpose(1, 2), g, out=grad_w[i])
        if grad_b[i] is not None:
            torch.sum(g, 1, out=grad_b[i])
        if i:
            g = torch.ops.aten.threshold_backward(torch.bmm(g, effs[where[i, 0]]), hs[i], 0)


@register("edge-popup-annealed")
class AnnealedEdgePopupPruner(EdgePopupPruner):
    """Edge-popup with annealed density: keeps density^(e/E) in epoch e of E (Plant 'n' Seek, ICLR 2022)."""

    annealed = True
