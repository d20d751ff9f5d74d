"""During-training sparsity: protocols whose mask changes while the network trains (DESIGN.md, "During-training
sparsity"), with ticket recall followed at every mask update.

- ``gradual`` (Zhu & Gupta 2017): start from ``gradual_initial`` density (1: dense; below 1: the run's pruner
  gives the start), then every ``update_every`` optimiser steps between ``update_begin`` and ``update_end``
  (fractions of the training's steps) prune within the current mask to the density of the cubic schedule
  s_t = s_f + (s_i - s_f)(1 - (t - t_0)/(n dt))^3 (`plantseek.mask_updates.zhu_gupta_density`), reaching
  the run's density at ``update_end``; then keep training. Pruned weights stay pruned (masks are nested).
  The run's pruner is the criterion (magnitude: gradual magnitude pruning; any ScorePruner works), scoring
  the trained weights in the planted parametrisation (the rescale divided out), as multishot's rounds do.
  Defaults for the paper's 10-epoch budget: updates every 100 steps from the start to 3/4 of training, the
  last quarter trains the final mask.
- ``dynamic`` (SET, Mocanu et al. 2018; RigL, Evci et al. 2020): the run's pruner gives the initial mask at
  the run's density (``random`` by default in sweeps; ``random-erk`` for RigL's Erdos-Renyi-kernel layer
  budgets, scope ``layer`` for uniform ones); every ``update_every`` steps until ``update_end`` drop the
  fraction ``drop_fraction`` (cosine-annealed to 0 at ``update_end``, RigL's schedule) of the kept weights
  with the smallest magnitude and grow as many elsewhere: ``grow = "random"`` (SET) or ``"gradient"`` (RigL:
  largest dense-gradient magnitude on the last batch). Grown weights start at zero with zero optimiser
  state; the kept count stays exactly the run's after every update, in its scope
  (`plantseek.mask_updates.drop_and_grow`).

Both train with the weak protocols' settings, rescale the masked network before training (the
function-preserving rule of `plantseek.rescale`), and add to every run's metrics ``recall_curve`` and
``functional_recall_curve`` (against the ticket, at the start and after every mask update), ``curve_steps``
(the optimiser step of each point), ``mask_updates`` and ``regrown_into_ticket`` (distinct ticket parameters
that entered the mask at an update after being absent or dropped). The ticket oracle's mask stays the ticket
through training under both (its pruner says ``fixed = True``): it is the reference row, as under every
protocol. The MLP family only.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from . import mask_updates as mu
from . import metrics as _metrics
from . import protocols as P
from . import train as _train
from .masks import Mask
from .pruners.base import check_kept

GROW = ("random", "gradient")
# the functional recall curve reads this many evenly spaced test points (the final functional_recall: 1000)
CURVE_POINTS = 250


def check_schedule(settings: P.Settings, total_steps: int, *, at_end: bool = False) -> tuple[int, int, list[int]]:
    """The (begin, end, update steps) of the settings' mask updates over ``total_steps`` optimiser steps (with
    ``at_end``, a last update at ``end`` itself when the interval does not land there: gradual reaches its
    final density at ``end``); ValueError naming the option when the schedule cannot run (before any training
    starts)."""
    every, begin_f, end_f = settings.update_every, settings.update_begin, settings.update_end
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"update_every must be a whole number of optimiser steps >= 1, got {every!r}")
    for name, v in (("update_begin", begin_f), ("update_end", end_f)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
            raise ValueError(f"{name} must be a fraction of the training's steps in [0, 1], got {v!r}")
    if begin_f >= end_f:
        raise ValueError(f"update_begin ({begin_f}) must come before update_end ({end_f})")
    begin, end = int(round(begin_f * total_steps)), int(round(end_f * total_steps))
    steps = mu.update_steps(total_steps, every, begin=begin, end=min(end, total_steps))
    if at_end and steps and steps[-1] < min(end, total_steps - 1):
        steps.append(min(end, total_steps - 1))
    if not steps:
        raise ValueError(f"no mask update fits: update_every={every} steps, but the updates run from step {begin} "
                         f"to {end} of the training's {total_steps} (epochs x batches per epoch); lower "
                         f"update_every or widen update_begin/update_end")
    return begin, end, steps


def _total_steps(runs: list[P.Run], settings: P.Settings) -> int:
    n = int(runs[0].data.x_train.shape[0])
    return int(settings.epochs) * math.ceil(n / int(settings.batch_size))


class _Tracker:
    """Recall curves and regrowth of one run against its ticket (an update at a time)."""

    def __init__(self, run: P.Run) -> None:
        self.run = run
        self.ticket: Mask = [(tw.to(run.net.device), tb.to(run.net.device)) for tw, tb in run.net.ticket_mask]
        self.ticket_size = sum(int(tw.sum()) + int(tb.sum()) for tw, tb in self.ticket)
        # the ticket's activations once (every point of the functional recall curve reads them)
        self.units = _metrics.TicketUnits(run.net.ticket.weights, run.net.ticket.biases, run.data.x_test,
                                          max_points=CURVE_POINTS)
        self.steps: list[int] = []
        self.recall: list[float] = []
        self.functional: list[float] = []
        self.regrown = [(torch.zeros_like(tw), torch.zeros_like(tb)) for tw, tb in self.ticket]
        self.updates = 0

    def point(self, step: int, mask: Mask, weights=None, biases=None) -> None:
        self.steps.append(int(step))
        kept = sum(int((wm & tw).sum()) + int((bm & tb).sum()) for (wm, bm), (tw, tb) in zip(mask, self.ticket))
        self.recall.append(kept / self.ticket_size if self.ticket_size else 1.0)  # `metrics.recovery`'s recall
        if weights is None:  # before training: the planted weights under the mask
            weights = [w * wm.to(w.dtype) for w, (wm, _) in zip(self.run.net.weights, mask)]
            biases = [b * bm.to(b.dtype) for b, (_, bm) in zip(self.run.net.biases, mask)]
        self.functional.append(float(self.units.recall(weights, biases)["functional_recall"]))

    def grew(self, old: Mask, new: Mask) -> None:
        self.updates += 1
        for (rw, rb), (ow, ob), (nw, nb), (tw, tb) in zip(self.regrown, old, new, self.ticket):
            rw |= nw & ~ow & tw
            rb |= nb & ~ob & tb

    def metrics(self) -> dict[str, Any]:
        return {"recall_curve": self.recall, "functional_recall_curve": self.functional, "curve_steps": self.steps,
                "mask_updates": self.updates,
                "regrown_into_ticket": int(sum(int(rw.sum()) + int(rb.sum()) for rw, rb in self.regrown))}


def _fixed(run: P.Run) -> bool:
    """The oracle (a pruner with ``fixed = True``): its mask stays the ticket through training."""
    return bool(getattr(run.pruner, "fixed", False))


def _stacked(masks: list[Mask]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.stack([m[l][0] for m in masks]), torch.stack([m[l][1] for m in masks]))
            for l in range(len(masks[0]))]


def _run_masks(stacked, k: int) -> Mask:
    return [(wm[k].clone(), bm[k].clone()) for wm, bm in stacked]


def _train_tracked(protocol: str, runs: list[P.Run], dense: list[P.Run], settings: P.Settings, new_mask) -> None:
    """Train `runs` (their `mask` set) and the dense baselines, calling ``new_mask(k, run, step, weights,
    biases, mask, grads) -> Mask`` for every live run whose mask moves at every update step; records the curves.

    The runs whose mask never changes (the dense baselines, the oracle) train in a batch of their own without
    the update schedule: a run's result does not depend on its batch, and the moving runs' segments then
    rebuild and carry only what changes."""
    live = [r for r in runs if r.ok]
    if not live and not dense:
        return
    total = _total_steps(live + list(dense), settings)
    _, _, steps = check_schedule(settings, total, at_end=protocol == "gradual")
    trackers = {id(r): _Tracker(r) for r in live}
    for r in live:
        trackers[id(r)].point(0, r.mask)
    moving = [r for r in live if not _fixed(r)]
    still = [r for r in live if _fixed(r)]

    def update(step, weights, biases, masks, alive, dense_grads):  # its time is the training's (train_runs)
        grads = dense_grads() if settings.grow == "gradient" and protocol == "dynamic" else None
        out = [_run_masks(masks, k) for k in range(len(moving))]
        for k, r in enumerate(moving):
            if not alive[k] or not r.ok:
                continue
            w, b = [t[k] for t in weights], [t[k] for t in biases]
            g = None if grads is None else [(gw[k], gb[k]) for gw, gb in grads]
            try:
                new = new_mask(k, r, step, w, b, out[k], g)
            except Exception as exc:  # noqa: BLE001 - a failing run must not stop the group
                r.error = exc
                continue
            tr = trackers[id(r)]
            tr.grew(out[k], new)
            out[k] = r.mask = new
            tr.point(step, new, [wi * nm.to(wi.dtype) for wi, (nm, _) in zip(w, new)],
                     [bi * nb.to(bi.dtype) for bi, (_, nb) in zip(b, new)])
        return _stacked(out)

    if moving:
        P.train_runs(moving, [r.mask for r in moving], settings, settings.epochs, desc=protocol,
                     schedule=_train.MaskSchedule(steps=steps, update=update))
    if still or dense:
        P.train_with_dense(still, [r.mask for r in still], list(dense), settings, settings.epochs, desc=protocol)
    for r in live:
        if r.ok:
            r.extra.update(trackers[id(r)].metrics())


@P.register("gradual")
class Gradual(P.Protocol):
    """Prune by the run's pruner on Zhu & Gupta's cubic schedule while training (gradual magnitude pruning)."""

    def run(self, runs, dense, settings):
        initial = float(settings.gradual_initial)
        for r in runs:
            if not (math.isfinite(initial) and r.density <= initial <= 1.0):
                r.error = ValueError(f"gradual_initial must lie in [density, 1] = [{r.density:g}, 1], got {initial!r}")
        live = [r for r in runs if r.ok]
        P._pruned([r for r in live if _fixed(r)], lambda r: r.density)  # the oracle: the ticket from the start
        moving = [r for r in live if not _fixed(r)]
        if initial < 1.0:
            P._pruned(moving, lambda r: initial)
        else:
            for r in moving:
                r.mask = P.full_mask(r.net)
        total = _total_steps(live + list(dense), settings) if (live or dense) else 0
        begin, end, _ = check_schedule(settings, total) if total else (0, 0, [])
        planted = {id(r): r.net for r in live}

        def new_mask(k, r, step, w, b, mask, grads):
            density = mu.zhu_gupta_density(step, final=r.density, initial=initial, begin=begin, end=end)
            r.weights, r.biases = w, b
            tw, tb = P.planted_parametrisation(r)
            net0 = planted[id(r)]
            try:
                r.net = replace(net0, weights=tw, biases=tb)  # the pruner scores the trained weights
                return P.prune_run(r, density, mask)
            finally:
                r.net = net0
                r.weights = r.biases = None

        _train_tracked("gradual", live, dense, settings, new_mask)


@P.register("dynamic")
class Dynamic(P.Protocol):
    """Sparse from the start at the run's density; drop by magnitude and grow at random (SET) or by gradient
    (RigL) every few steps, with exact kept counts."""

    def run(self, runs, dense, settings):
        if settings.grow not in GROW:
            raise ValueError(f"grow must be one of {', '.join(repr(g) for g in GROW)}, got {settings.grow!r}")
        fraction = settings.drop_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ValueError(f"drop_fraction must lie in (0, 1), got {fraction!r}")
        P._pruned(runs, lambda r: r.density)
        live = [r for r in runs if r.ok]
        total = _total_steps(live + list(dense), settings) if (live or dense) else 0
        begin, end, _ = check_schedule(settings, total) if total else (0, 0, [])

        def new_mask(k, r, step, w, b, mask, grads):
            frac = mu.cosine_drop_fraction(step - begin, initial=float(fraction), end=end - begin)
            scope = getattr(r.pruner, "update_scope", None) or P._scope_of(r)  # random-erk keeps its layer budgets
            new, _ = mu.drop_and_grow(w, b, mask, frac, scope=scope, prune_bias=r.prune_bias,
                                      grow=settings.grow, grads=grads, generator=r.prune_generator)
            check_kept(new, float(r.density), f"{settings.grow} growth", scope=P._scope_of(r),
                       prune_bias=r.prune_bias)
            return new

        _train_tracked("dynamic", live, dense, settings, new_mask)
