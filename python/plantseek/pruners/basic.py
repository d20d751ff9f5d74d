"""Baseline pruners: random (also with RigL's ERK layer budgets), magnitude at initialisation, and the ticket
oracle."""
from __future__ import annotations

import torch

from ..masks import Mask
from .base import Pruner, ScorePruner, check_density, check_scope, current_mask, register
from ..kernels import scores as score_kernels
from .selection import kept_count


@register("random")
class RandomPruner(ScorePruner):
    """Random pruning: uniformly random scores, the baseline (Frankle et al., ICLR 2021).

    The baseline of every pruning-at-initialisation paper, e.g. Frankle, Dziugaite, Roy & Carbin, "Pruning
    Neural Networks at Initialization: Why are We Missing the Mark?", ICLR 2021.

    Scores are drawn on the network's device from ``generator`` (weight 0, bias 0, weight 1, ...); the same
    generator state gives the same mask. Without a generator the draw uses seed 0.
    """

    def scores(self, net, data, generator, mask):
        return [
            (torch.rand(w.shape, generator=generator, device=w.device, dtype=w.dtype),
             torch.rand(b.shape, generator=generator, device=b.device, dtype=b.dtype))
            for w, b in zip(net.weights, net.biases)
        ]


@register("random-erk")
class RandomERKPruner(Pruner):
    """Random pruning with Erdos-Renyi-kernel layer budgets (Evci et al., ICML 2020): RigL's initial masks.

    Evci, Gale, Menick, Castro & Elsen, "Rigging the Lottery: Making All Tickets Winners", ICML 2020. Under
    scope ``"global"`` (its default) the exact global count round(density x prunable) is split over the layers
    by ERK (a layer's density proportional to (fan-in + fan-out) / (fan-in x fan-out), dense layers capped;
    `plantseek.mask_updates.layer_budgets`), then each layer keeps that many at random; under ``"layer"``
    every layer keeps the density itself (uniform budgets, as ``random`` with that scope). Within ``mask`` a
    layer short of eligible parameters passes its remainder to the others, so the count stays exact. The
    dynamic protocol keeps its per-layer counts through every update (``update_scope``)."""

    update_scope = "layer"  # plantseek.during_training: drop and grow within each layer

    def prune(self, net, data, density, *, scope="global", prune_bias=True, generator=None, mask=None) -> Mask:
        from .. import mask_updates as mu

        prune_bias = bool(prune_bias)
        check_scope(scope)
        density = check_density(density, net, scope=scope, prune_bias=prune_bias)
        current = current_mask(net, mask)
        g = generator if generator is not None else torch.Generator(device=net.device).manual_seed(0)
        scores = RandomPruner().scores(net, data, g, current)
        sizes = [int(w.numel()) + (int(b.numel()) if prune_bias else 0) for w, b in zip(net.weights, net.biases)]
        if scope == "layer":
            wanted = [kept_count(density, n) for n in sizes]
        else:
            wanted = [cw + (cb if prune_bias else 0) for cw, cb in
                      mu.layer_budgets([tuple(w.shape) for w in net.weights], density, kind="erk",
                                       prune_bias=prune_bias)]
        room = [int(wm.sum()) + (int(bm.sum()) if prune_bias else 0) for wm, bm in current]
        counts = [min(c, r) for c, r in zip(wanted, room)]
        if scope == "global":  # a layer short of eligible parameters passes the remainder on, in layer order
            short = sum(wanted) - sum(counts)
            for i in range(len(counts)):
                extra = min(short, room[i] - counts[i])
                counts[i] += extra
                short -= extra
        if not prune_bias:  # biases are not prunable: not counted, kept as they are
            scores = [(sw, None) for sw, _ in scores]
        return score_kernels.global_topk(scores, counts, current, scope="layer")


@register("magnitude")
class MagnitudePruner(ScorePruner):
    """Magnitude pruning: keep the largest |w| and |b| (Han et al., NeurIPS 2015).

    Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS
    2015; at initialisation as in Frankle et al., ICLR 2021.

    Scores the network's current weights: its initial (planted) values in the singleshot protocol, the trained
    ones in the multishot protocol, where magnitude + multishot is iterative magnitude pruning (Frankle &
    Carbin, "The Lottery Ticket Hypothesis", ICLR 2019).
    """

    def scores(self, net, data, generator, mask):
        return [(w.detach().abs(), b.detach().abs()) for w, b in zip(net.weights, net.biases)]


@register("ticket")
class TicketPruner(Pruner):
    """The oracle: returns the planted ticket mask exactly (the reference row of every table).

    It is the only code in plantseek that reads ``net.ticket_mask`` (DESIGN.md: the benchmark is void
    otherwise). ``density``, ``scope``, ``prune_bias`` and ``mask`` do not change the answer (the density is
    still validated); use ``density="ticket"`` elsewhere to give other pruners the ticket's budget.
    """

    exact = False  # keeps the ticket, whatever the density
    fixed = True  # the during-training protocols keep its mask through training (the reference row)

    def prune(self, net, data, density, *, scope="global", prune_bias=True, generator=None, mask=None) -> Mask:
        check_density(density, net, scope=scope, prune_bias=bool(prune_bias))
        check_scope(scope)
        current_mask(net, mask)  # validates shapes only
        return [
            (wm.to(device=net.device, dtype=torch.bool).clone(), bm.to(device=net.device, dtype=torch.bool).clone())
            for wm, bm in net.ticket_mask
        ]
