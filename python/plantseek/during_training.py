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
# curve points wait until their stored parameters reach this size, then are measured together
PENDING_BYTES = 256 * 2**20


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


class _Curves:
    """Recall curves and regrowth of a batch of runs against their tickets: every run at once, and the points
    of many updates in one batched computation."""

    def __init__(self, runs: list[P.Run]) -> None:
        self.runs = runs
        device = runs[0].net.device
        self.ticket = _stacked([[(tw.to(device), tb.to(device)) for tw, tb in r.net.ticket_mask] for r in runs])
        self.ticket_size = _per_network_count(self.ticket).tolist()
        # the tickets' activations once (every point of the functional recall curves reads them)
        self.units = _metrics.StackedTicketUnits([_metrics.TicketUnits(r.net.ticket.weights, r.net.ticket.biases,
                                                                       r.data.x_test, max_points=CURVE_POINTS)
                                                  for r in runs])
        self.steps: list[list[int]] = [[] for _ in runs]
        self.recall: list[list[float]] = [[] for _ in runs]
        self.functional: list[list[float]] = [[] for _ in runs]
        self.regrown = [(torch.zeros_like(tw), torch.zeros_like(tb)) for tw, tb in self.ticket]
        self.updates = [0] * len(runs)
        self.pending: list[tuple] = []  # points not yet measured: (step, rows, masks, weights, biases)
        self.pending_bytes = 0

    def point(self, step: int, rows: list[int], masks, weights, biases) -> None:
        """A point of each curve of the runs ``rows`` at ``step``: their stacked masks and masked parameters
        (kept, not copied: the caller hands over fresh tensors). Points are measured in batches (`_flush`):
        one recall computation for many updates costs about what one costs."""
        self.pending.append((int(step), list(rows), masks, weights, biases))
        self.pending_bytes += sum(t.numel() * t.element_size() for t in weights)
        if self.pending_bytes > PENDING_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        rows = [k for _, r, _, _, _ in self.pending for k in r]
        L = len(self.pending[0][2])

        def cat(i, j=None):
            return [torch.cat([p[i][l] if j is None else p[i][l][j] for p in self.pending]) for l in range(L)]

        masks = list(zip(cat(2, 0), cat(2, 1)))
        pick = torch.tensor(rows, device=masks[0][0].device)
        ticket = [(tw.index_select(0, pick), tb.index_select(0, pick)) for tw, tb in self.ticket]
        kept = _per_network_count([(wm & tw, bm & tb) for (wm, bm), (tw, tb) in zip(masks, ticket)]).tolist()
        functional = self.units.recall(cat(3), cat(4), rows)
        steps = [step for step, r, _, _, _ in self.pending for _ in r]
        for i, k in enumerate(rows):
            self.steps[k].append(steps[i])
            size = self.ticket_size[k]
            self.recall[k].append(kept[i] / size if size else 1.0)  # `metrics.recovery`'s recall
            self.functional[k].append(functional[i])
        self.pending, self.pending_bytes = [], 0

    def grew(self, rows: list[int], old, new) -> None:
        """Count an update of the runs ``rows`` (stacked masks of every run; the others unchanged)."""
        for k in rows:
            self.updates[k] += 1
        for (rw, rb), (ow, ob), (nw, nb), (tw, tb) in zip(self.regrown, old, new, self.ticket):
            rw |= nw & ~ow & tw
            rb |= nb & ~ob & tb

    def metrics(self, k: int) -> dict[str, Any]:
        self._flush()
        regrown = _per_network_count(self.regrown)
        return {"recall_curve": self.recall[k], "functional_recall_curve": self.functional[k],
                "curve_steps": self.steps[k], "mask_updates": self.updates[k],
                "regrown_into_ticket": int(regrown[k])}


def _per_network_count(stacked) -> torch.Tensor:
    """Kept parameters (weights and biases) per network of stacked masks."""
    M = stacked[0][0].shape[0]
    return sum(wm.reshape(M, -1).sum(dim=1) + bm.reshape(M, -1).sum(dim=1) for wm, bm in stacked)


def _fixed(run: P.Run) -> bool:
    """The oracle (a pruner with ``fixed = True``): its mask stays the ticket through training."""
    return bool(getattr(run.pruner, "fixed", False))


def _stacked(masks: list[Mask]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.stack([m[l][0] for m in masks]), torch.stack([m[l][1] for m in masks]))
            for l in range(len(masks[0]))]


def _run_masks(stacked, k: int) -> Mask:
    return [(wm[k].clone(), bm[k].clone()) for wm, bm in stacked]


def _train_tracked(protocol: str, runs: list[P.Run], dense: list[P.Run], settings: P.Settings, new_masks) -> None:
    """Train `runs` (their `mask` set) and the dense baselines, calling ``new_masks(moving, rows, step, weights,
    biases, masks, grads)`` at every update step for the live runs whose mask moves (``moving[k]`` for k in
    ``rows``; stacked tensors of every moving run): it returns one new Mask, or the exception that stopped
    the run, per row. Records the curves.

    The runs whose mask never changes (the dense baselines, the oracle) train in a batch of their own without
    the update schedule: a run's result does not depend on its batch, and the moving runs' segments then
    rebuild and carry only what changes."""
    live = [r for r in runs if r.ok]
    if not live and not dense:
        return
    total = _total_steps(live + list(dense), settings)
    _, _, steps = check_schedule(settings, total, at_end=protocol == "gradual")
    moving = [r for r in live if not _fixed(r)]
    still = [r for r in live if _fixed(r)]
    curves = {id(r): (c, k) for group in (moving, still) if group
              for c in [_Curves(group)] for k, r in enumerate(group)}
    for group in (moving, still):  # the first points: the planted weights under the starting masks
        if group:
            masks = _stacked([r.mask for r in group])
            W = torch.stack
            curves[id(group[0])][0].point(
                0, list(range(len(group))), masks,
                [W([r.net.weights[l] for r in group]) * wm.to(group[0].net.weights[l].dtype) for l, (wm, _) in enumerate(masks)],
                [W([r.net.biases[l] for r in group]) * bm.to(group[0].net.biases[l].dtype) for l, (_, bm) in enumerate(masks)])

    def update(step, weights, biases, masks, alive, dense_grads):  # its time is the training's (train_runs)
        rows = [k for k, r in enumerate(moving) if alive[k] and r.ok]
        if not rows:
            return None
        grads = dense_grads() if settings.grow == "gradient" and protocol == "dynamic" else None
        out = [[(wm[k], bm[k]) for wm, bm in masks] for k in range(len(moving))]  # views: replaced, never written
        done = []
        for k, new in zip(rows, new_masks(moving, rows, step, weights, biases, masks, grads)):
            if isinstance(new, BaseException):  # a failing run must not stop the group
                moving[k].error = new
                continue
            out[k] = moving[k].mask = new
            done.append(k)
        new = _stacked(out)
        c = curves[id(moving[0])][0]
        c.grew(done, masks, new)
        if done:
            sub, W, B = new, weights, biases
            if done != list(range(len(moving))):
                pick = torch.tensor(done, device=weights[0].device)
                sub = [(wm.index_select(0, pick), bm.index_select(0, pick)) for wm, bm in new]
                W, B = [w.index_select(0, pick) for w in weights], [b.index_select(0, pick) for b in biases]
            c.point(step, done, sub, [w * wm.to(w.dtype) for w, (wm, _) in zip(W, sub)],
                    [b * bm.to(b.dtype) for b, (_, bm) in zip(B, sub)])
        return new

    if moving:
        P.train_runs(moving, [r.mask for r in moving], settings, settings.epochs, desc=protocol,
                     schedule=_train.MaskSchedule(steps=steps, update=update, keeps_counts=protocol == "dynamic"))
    if still or dense:
        P.train_with_dense(still, [r.mask for r in still], list(dense), settings, settings.epochs, desc=protocol)
    for r in live:
        if r.ok:
            c, k = curves[id(r)]
            r.extra.update(c.metrics(k))


def _each(new_mask):
    """``new_masks`` of `_train_tracked` from a per-run ``new_mask(run, step, weights, biases, mask)``."""
    def new_masks(moving, rows, step, weights, biases, masks, grads):
        out = []
        for k in rows:
            try:
                out.append(new_mask(moving[k], step, [t[k] for t in weights], [t[k] for t in biases],
                                    _run_masks(masks, k)))
            except Exception as exc:  # noqa: BLE001 - a failing run must not stop the group
                out.append(exc)
        return out
    return new_masks


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

        def new_mask(r, step, w, b, mask):
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

        _train_tracked("gradual", live, dense, settings, _each(new_mask))


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

        run_scope = {id(r): P._scope_of(r) for r in live}
        # random-erk keeps its per-layer budgets through the updates
        update_scope = {id(r): getattr(r.pruner, "update_scope", None) or run_scope[id(r)] for r in live}

        def new_masks(moving, rows, step, weights, biases, masks, grads):
            """One stacked `drop_and_grow` per set of runs that agree on scope, bias pruning and kept counts."""
            frac = mu.cosine_drop_fraction(step - begin, initial=float(fraction), end=end - begin)
            M = masks[0][0].shape[0]
            w_kept = torch.stack([wm.reshape(M, -1).sum(dim=1) for wm, _ in masks]).T.tolist()  # (M, L)
            b_kept = torch.stack([bm.reshape(M, -1).sum(dim=1) for _, bm in masks]).T.tolist()
            sets: dict[tuple, list[int]] = {}
            for k in rows:
                r = moving[k]
                scope = update_scope[id(r)]
                per_layer = [w + (b if r.prune_bias else 0) for w, b in zip(w_kept[k], b_kept[k])]
                counts = (sum(per_layer),) if scope == "global" else tuple(per_layer)
                sets.setdefault((scope, bool(r.prune_bias), counts), []).append(k)
            out: dict[int, Any] = {}
            for (scope, prune_bias, _), ks in sets.items():
                pick = None if ks == list(range(M)) else torch.tensor(ks, device=masks[0][0].device)

                def sel(t):
                    return t if t is None or pick is None else t.index_select(0, pick)
                try:
                    new, _ = mu.drop_and_grow(
                        [sel(w) for w in weights], [sel(b) for b in biases],
                        [(sel(wm), sel(bm)) for wm, bm in masks], frac, scope=scope, prune_bias=prune_bias,
                        grow=settings.grow, grads=None if grads is None else [(sel(gw), sel(gb)) for gw, gb in grads],
                        generator=[moving[k].prune_generator for k in ks], stacked=True)
                except Exception as exc:  # noqa: BLE001 - a failing update stops these runs, not the group
                    out.update({k: exc for k in ks})
                    continue
                for i, k in enumerate(ks):
                    mask = [(wm[i], bm[i]) for wm, bm in new]
                    try:
                        check_kept(mask, float(moving[k].density), f"{settings.grow} growth",
                                   scope=run_scope[id(moving[k])], prune_bias=moving[k].prune_bias)
                        out[k] = mask
                    except Exception as exc:  # noqa: BLE001
                        out[k] = exc
            return [out[k] for k in rows]

        _train_tracked("dynamic", live, dense, settings, new_masks)
