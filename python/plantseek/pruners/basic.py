"""Baseline pruners: random, magnitude at initialisation, and the ticket oracle."""
from __future__ import annotations

import torch

from ..masks import Mask
from .base import Pruner, ScorePruner, check_density, check_scope, current_mask, register


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
