"""Mask arithmetic of during-training sparsity: gradual magnitude pruning, SET and RigL.

Pure and deterministic functions on `plantseek.masks.Mask` values (one ``(weight_mask, bias_mask)`` pair of
bool tensors per layer); the training loop that applies them lives elsewhere.

- schedules: `zhu_gupta_density` (the cubic gradual-pruning schedule of Zhu & Gupta, 2017),
  `cosine_drop_fraction` (RigL's annealed drop fraction, Evci et al., 2020) and `update_steps`;
- budgets: `layer_budgets` (uniform or Erdos-Renyi-Kernel per-layer kept counts) and `random_mask`;
- one drop-and-grow update: `drop_and_grow` (SET: random growth, Mocanu et al., 2018; RigL: gradient growth).

Counting follows the pruners (`plantseek.pruners.selection`): a scope (``"global"``: all layers together,
``"layer"``: each layer on its own) keeps exactly ``kept_count(density, n) = round(density * n)`` of its ``n``
prunable parameters; with ``prune_bias=False`` biases are not prunable: they are not counted and keep their
mask. Selections keep the largest scores, ties to the lowest flat index in the order weight 0, bias 0, weight 1,
bias 1, ... (each tensor row-major), as `plantseek.kernels.scores.global_topk` does: drop-and-grow selects each
scope group's parameters as rows (`plantseek.kernels.scores.rows_topk`, one row per network).
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

from .kernels import scores as score_kernels
from .kernels.checks import check_int, check_real
from .masks import Mask, check_mask
from .pruners.selection import SCOPES, kept_count

__all__ = [
    "zhu_gupta_density", "cosine_drop_fraction", "update_steps", "layer_budgets", "random_mask", "drop_and_grow",
    "BUDGET_KINDS", "GROW_MODES",
]

BUDGET_KINDS = ("uniform", "erk")
GROW_MODES = ("random", "gradient")


# ------------------------------------------------------------------------------------------------ schedules

def _step(step) -> float:
    return check_real("step", step, 0, None)


def zhu_gupta_density(step: float, *, final: float, initial: float = 1.0, begin: int, end: int) -> float:
    """Density (1 - sparsity) at optimiser step ``step`` on Zhu & Gupta's (2017) cubic gradual-pruning schedule:
    ``initial`` up to ``begin``, ``final`` from ``end`` on, s_f + (s_i - s_f)(1 - (t - begin)/(end - begin))^3 between."""
    t = _step(step)
    final = check_real("final", final)
    initial = check_real("initial", initial)
    if not 0.0 < final <= 1.0:
        raise ValueError(f"final (the final density) must be in (0, 1], got {final!r}")
    if not 0.0 < initial <= 1.0:
        raise ValueError(f"initial (the initial density) must be in (0, 1], got {initial!r}")
    if final > initial:
        raise ValueError(f"final density {final!r} exceeds the initial density {initial!r}; gradual pruning only "
                         f"lowers the density (need 0 < final <= initial <= 1)")
    begin = check_int("begin", begin, 0)
    end = check_int("end", end, 0)
    if begin >= end:
        raise ValueError(f"begin ({begin}) must be before end ({end}) (need 0 <= begin < end)")
    if t <= begin:
        return initial
    if t >= end:
        return final
    # 1 - s_t with s = 1 - density: final + (initial - final) * (1 - progress)^3
    return final + (initial - final) * (1.0 - (t - begin) / (end - begin)) ** 3


def cosine_drop_fraction(step: float, *, initial: float, end: int) -> float:
    """RigL's drop fraction at ``step``: initial/2 * (1 + cos(pi * step / end)) up to ``end``, 0 after (the
    cosine annealing of Evci et al., 2020, so that the mask settles before training ends)."""
    t = _step(step)
    initial = check_real("initial", initial)
    if not 0.0 < initial < 1.0:
        raise ValueError(f"initial (the initial drop fraction) must be in the open interval (0, 1), got {initial!r}")
    end = check_int("end", end, 1)
    if t > end:
        return 0.0
    return initial / 2.0 * (1.0 + math.cos(math.pi * t / end))


def update_steps(total: int, every: int, *, begin: int = 0, end: int | None = None) -> list[int]:
    """The optimiser-step counts after which masks update: begin + every, begin + 2*every, ... up to ``end``
    (default ``total``) and strictly below ``total`` (an update after the last step would never be trained)."""
    total = check_int("total", total, 0)
    every = check_int("every", every, None)
    if every < 1:
        raise ValueError(f"update interval must be >= 1 step, got every={every}")
    begin = check_int("begin", begin, None)
    if begin < 0:
        raise ValueError(f"the update schedule cannot begin before step 0, got begin={begin}")
    end = total if end is None else check_int("end", end, None)
    if end > total:
        raise ValueError(f"the update schedule ends at step {end} but training has only {total} steps")
    if begin >= end:
        raise ValueError(f"the update schedule begins at step {begin}, not before its end at step {end} "
                         f"(need begin < end)")
    return [s for s in range(begin + every, end + 1, every) if s < total]


# ------------------------------------------------------------------------------------------------ budgets

def _shape(shape, i: int) -> tuple[int, ...]:
    if isinstance(shape, torch.Tensor):
        shape = tuple(shape.shape)
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"shapes[{i}] must be a weight shape such as (out, in), got {shape!r}") from None
    if len(dims) < 2 or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or int(d) < 1 for d in dims):
        raise ValueError(f"shapes[{i}] must be a weight shape of positive integers such as (out, in) or "
                         f"(out, in, kh, kw), got {shape!r}")
    return tuple(int(d) for d in dims)


def _shapes(shapes) -> list[tuple[int, ...]]:
    if isinstance(shapes, (str, bytes)) or not isinstance(shapes, Sequence) or len(shapes) == 0:
        raise ValueError(f"shapes must be a non-empty list of per-layer weight shapes, got {shapes!r}")
    return [_shape(s, i) for i, s in enumerate(shapes)]


def _apportion(ideal: Sequence[float], caps: Sequence[int], target: int) -> list[int]:
    """Integers c_i in [0, caps_i] summing to ``target``, as close to ``ideal`` as the largest-remainder (Hamilton)
    method gets: floors first, then one more to the largest remainders (ties to the lowest index)."""
    base = [min(int(cap), max(0, int(math.floor(x)))) for x, cap in zip(ideal, caps)]
    left = target - sum(base)
    if left < 0:  # the floors overshoot only through float noise: take back from the smallest remainders
        order = sorted(range(len(base)), key=lambda i: (ideal[i] - math.floor(ideal[i]), i))
        for i in order:
            if left == 0:
                break
            if base[i] > 0:
                base[i] -= 1
                left += 1
    while left > 0:
        order = sorted((i for i in range(len(base)) if base[i] < caps[i]),
                       key=lambda i: (-(ideal[i] - base[i]), i))
        if not order:
            raise AssertionError("target exceeds the total capacity")  # callers pass target <= sum(caps)
        for i in order[:left]:
            base[i] += 1
        left = target - sum(base)
    return base


def _erk_densities(shapes: list[tuple[int, ...]], sizes: list[int], target: int) -> list[float]:
    """Per-layer densities proportional to sum(dims)/prod(dims) that keep ``target`` of ``sizes`` in total; the
    layers that would exceed density 1 are made dense and the rest rescaled, repeatedly (RigL's
    ``get_sparsities_erdos_renyi``)."""
    raw = [sum(s) / math.prod(s) for s in shapes]
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense]
        if not free:
            return [1.0] * len(shapes)
        budget = target - sum(sizes[i] for i in dense)
        eps = budget / sum(raw[i] * sizes[i] for i in free)
        top = max(raw[i] for i in free)
        if eps * top > 1.0 + 1e-12:
            dense.update(i for i in free if raw[i] == top)
            continue
        return [1.0 if i in dense else min(1.0, max(0.0, eps * raw[i])) for i in range(len(shapes))]


def layer_budgets(shapes: Sequence[Sequence[int]], density: float, *, kind: str = "erk",
                  prune_bias: bool = True) -> list[tuple[int, int]]:
    """Per-layer (weight kept count, bias kept count) that keep exactly round(density * total prunable) in all,
    at the same density in every layer (``"uniform"``) or Erdos-Renyi-Kernel densities (``"erk"``, as in RigL).

    ``shapes`` are weight shapes (out, in) or (out, in, kh, kw); a layer's bias has ``out`` entries. ERK gives a
    layer a density proportional to sum(dims)/prod(dims) (small layers denser), capping at 1 and rescaling the
    rest. With ``prune_bias=False`` biases are not prunable (always kept, count ``out``) and only the weights
    share the budget; with ``prune_bias=True`` a layer's bias gets the same density as its weights: the layer's
    count (weights + bias) is apportioned first over layers, then within the layer between weights and bias in
    proportion to their sizes, both by the largest-remainder method, so the total is exact.
    """
    shapes = _shapes(shapes)
    density = check_real("density", density, 0, 1)
    if density <= 0.0:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    if kind not in BUDGET_KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, BUDGET_KINDS))}, got {kind!r}")
    prune_bias = bool(prune_bias)
    n_w = [math.prod(s) for s in shapes]
    n_b = [s[0] for s in shapes]
    sizes = [w + (b if prune_bias else 0) for w, b in zip(n_w, n_b)]
    target = kept_count(density, sum(sizes))
    if kind == "uniform":
        dens = [density] * len(shapes)
    else:
        dens = _erk_densities(shapes, sizes, target)
    counts = _apportion([d * n for d, n in zip(dens, sizes)], sizes, target)
    out = []
    for c, w, b, n in zip(counts, n_w, n_b, sizes):
        if not prune_bias:
            out.append((c, b))
            continue
        cw, cb = _apportion([c * w / n, c * b / n], [w, b], c)
        out.append((cw, cb))
    return out


def _layer_shapes(spec) -> list[tuple[tuple[int, ...], torch.device | None]]:
    """(weight shape, device or None) per layer of shapes, weight tensors or (weight, bias) tensor pairs."""
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or len(spec) == 0:
        raise ValueError("random_mask needs a non-empty list of weight shapes, weight tensors or (weight, bias) pairs")
    out = []
    for i, item in enumerate(spec):
        if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(t, torch.Tensor) for t in item):
            item = item[0]
        out.append((_shape(item, i), item.device if isinstance(item, torch.Tensor) else None))
    return out


def random_mask(shapes_or_net_params, budgets: Sequence[tuple[int, int]], generator: torch.Generator,
                prune_bias: bool = True) -> Mask:
    """A uniformly random mask keeping exactly ``budgets[i]`` = (weights, biases) in layer i, e.g. the starting
    mask of SET/RigL from `layer_budgets`; drawn with ``torch.randperm`` on the generator's device (weight 0,
    bias 0, weight 1, ...), so a seed gives one mask. With ``prune_bias=False`` every bias is kept."""
    layers = _layer_shapes(shapes_or_net_params)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"random_mask needs a torch.Generator, got {type(generator).__name__}")
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence) or len(budgets) != len(layers):
        raise ValueError(f"budgets must hold one (weight count, bias count) pair per layer ({len(layers)})")
    device = generator.device
    mask: Mask = []
    for i, ((shape, _), pair) in enumerate(zip(layers, budgets)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"budgets[{i}] must be a (weight count, bias count) pair, got {pair!r}")
        n_w, n_b = math.prod(shape), shape[0]
        kw = check_int(f"budgets[{i}][0]", pair[0], 0, n_w)
        kb = check_int(f"budgets[{i}][1]", pair[1], 0, n_b)
        if not prune_bias and kb != n_b:
            raise ValueError(f"budgets[{i}] keeps {kb} of {n_b} biases, but with prune_bias=False every bias is kept")
        wm = torch.zeros(n_w, dtype=torch.bool, device=device)
        wm[torch.randperm(n_w, generator=generator, device=device)[:kw]] = True
        if prune_bias:
            bm = torch.zeros(n_b, dtype=torch.bool, device=device)
            bm[torch.randperm(n_b, generator=generator, device=device)[:kb]] = True
        else:
            bm = torch.ones(n_b, dtype=torch.bool, device=device)
        mask.append((wm.reshape(shape), bm))
    return mask


# ------------------------------------------------------------------------------------------------ drop and grow

def _common(pairs) -> list:
    """Score pairs in one dtype (a scope group is selected as one row of scores)."""
    dtype = None
    for p in pairs:
        for t in p:
            if t is not None:
                dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    return [tuple(None if t is None else t.to(dtype) for t in p) for p in pairs]


def _check_grads(grads, weights, biases, prune_bias: bool) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    if grads is None:
        raise ValueError('grow="gradient" (RigL) needs grads: one (grad_w, grad_b) pair per layer, the dense gradient')
    if isinstance(grads, (str, bytes)) or not isinstance(grads, Sequence) or len(grads) != len(weights):
        raise ValueError(f"grads must hold one (grad_w, grad_b) pair per layer ({len(weights)})")
    out = []
    for i, (pair, w, b) in enumerate(zip(grads, weights, biases)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"grads[{i}] must be a (grad_w, grad_b) pair")
        gw, gb = pair
        if not isinstance(gw, torch.Tensor) or tuple(gw.shape) != tuple(w.shape):
            raise ValueError(f"grads[{i}][0] must be a tensor shaped like weights[{i}] {tuple(w.shape)}, got "
                             f"{tuple(gw.shape) if isinstance(gw, torch.Tensor) else type(gw).__name__}")
        if prune_bias and (not isinstance(gb, torch.Tensor) or tuple(gb.shape) != tuple(b.shape)):
            raise ValueError(f"grads[{i}][1] must be a tensor shaped like biases[{i}] {tuple(b.shape)} "
                             f"(biases are prunable), got "
                             f"{tuple(gb.shape) if isinstance(gb, torch.Tensor) else type(gb).__name__}")
        for t in (gw, gb):
            if isinstance(t, torch.Tensor) and (t.is_complex() or t.dtype == torch.bool):
                raise ValueError(f"grads[{i}] must be real tensors, got {t.dtype}")
        out.append((gw.detach().to(w.device).abs(), gb.detach().to(b.device).abs() if prune_bias else None))
    return out


def drop_and_grow(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], mask: Mask, fraction: float, *,
                  scope: str = "global", prune_bias: bool = True, grow: str = "random",
                  grads: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                  generator: torch.Generator | Sequence[torch.Generator] | None = None,
                  stacked: bool = False) -> tuple[Mask, dict]:
    """One SET/RigL mask update: drop the k = round(fraction * kept) smallest-magnitude kept prunable parameters
    (per scope group), then grow exactly k among the non-kept ones, at random (SET) or by largest |grad| (RigL).

    - Drop: the kept parameters with the largest |value| stay (the top-k within ``mask``), so among equal
      magnitudes the highest flat index (order weight 0, bias 0, weight 1, ...) is dropped first; the
      post-drop mask is the magnitude pruner's mask at the lower count.
    - Grow candidates: every prunable parameter not kept after the drop, the just-dropped ones included (as in
      RigL's reference code). ``grow="random"`` scores them with ``torch.rand`` drawn from ``generator`` on its
      device (weight 0, bias 0, weight 1, ...; prunable biases only) and keeps the top k, a uniform draw;
      ``grow="gradient"`` keeps the largest |grad| (``grads``: one (grad_w, grad_b) pair of dense gradients per
      layer). Ties go to the lowest flat index. The candidates always number at least k (the dropped ones
      are among them), so the grown count equals the dropped count in every group: the kept count of each
      scope group (all layers for ``"global"``, each layer for ``"layer"``) is unchanged.
    - With ``prune_bias=False`` biases are not counted and keep their mask.
    - ``stacked=True``: M networks at once, every tensor with a leading network dimension (M, ...), one
      generator per network for SET (each draws what it would alone); the networks must keep the same counts
      per scope group, and the result equals M separate calls (one selection call for all, for speed).

    Returns the new mask (on the mask's devices) and ``{"dropped": k, "grown": k, "grown_mask": positions the
    grow step chose, "regrown": how many of those were just dropped}`` (k per network; "regrown" a list per
    network when stacked); the new connections are
    ``grown_mask & ~mask`` (RigL zero-initialises those).
    """
    if isinstance(weights, torch.Tensor) or not isinstance(weights, Sequence) or len(weights) == 0:
        raise ValueError("weights must be a non-empty list of per-layer weight tensors")
    if isinstance(biases, torch.Tensor) or not isinstance(biases, Sequence) or len(biases) != len(weights):
        raise ValueError(f"biases must be a list with one bias tensor per layer ({len(weights)})")
    mask = check_mask(mask, weights, biases)
    stacked = bool(stacked)
    if stacked and any(w.dim() != 3 for w in weights):
        raise ValueError("stacked=True takes MLP layers stacked over networks: weights (M, out, in), biases (M, out)")
    fraction = check_real("fraction", fraction)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction (the drop fraction) must be in [0, 1), got {fraction!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(map(repr, SCOPES))}, got {scope!r}")
    if grow not in GROW_MODES:
        raise ValueError(f"grow must be one of {', '.join(map(repr, GROW_MODES))}, got {grow!r}")
    prune_bias = bool(prune_bias)
    if grow == "gradient":
        grow_scores = _check_grads(grads, weights, biases, prune_bias)
    else:
        grow_scores = None  # drawn below, once the groups are known
    for i, (w, b) in enumerate(zip(weights, biases)):
        for t, what in ((w, "weights"), (b, "biases")):
            if t.is_complex() or t.dtype == torch.bool:
                raise ValueError(f"{what}[{i}] must be a real tensor, got {t.dtype}")
    mask = [(wm.to(w.device), bm.to(b.device)) for (wm, bm), w, b in zip(mask, weights, biases)]

    M = mask[0][0].shape[0] if stacked else 1
    groups = _Groups(mask, scope, prune_bias, M)
    held = groups.rows(mask)
    kept = groups.counts(held)
    ks = [kept_count(fraction, n) for n in kept]
    stay = [n - k for n, k in zip(kept, ks)]

    # drop: keep the largest magnitudes among the kept
    mag = groups.rows(_common([(w.detach().abs(), b.detach().abs()) for w, b in zip(weights, biases)]))
    after = [score_kernels.rows_topk(s, n, h) for s, n, h in zip(mag, stay, held)]
    # grow: the largest grow scores among the prunable non-kept (just-dropped included); the candidates always
    # number at least k: the k dropped are among them
    if grow_scores is None:
        grow_rows = groups.split(_random_scores(generator, groups, stacked, weights[0].device))
    else:
        grow_rows = groups.rows(_common([(sw, sb if prune_bias else torch.zeros_like(b, dtype=sw.dtype))
                                         for (sw, sb), b in zip(grow_scores, biases)]))
    grown = [score_kernels.rows_topk(s, k, ~a) for s, k, a in zip(grow_rows, ks, after)]
    regrown = sum((g & h).sum(dim=1) for g, h in zip(grown, held))
    new_mask = groups.pairs([a | g for a, g in zip(after, grown)], keep=mask)
    grown_mask = groups.pairs(grown, keep=None)
    total = sum(ks)
    regrown = regrown.tolist() if stacked else int(regrown[0])
    return new_mask, {"dropped": total, "grown": total, "grown_mask": grown_mask, "regrown": regrown}


class _Groups:
    """A mask's prunable parameters as one (M, n) row matrix per scope group (weight l, then bias l when
    biases are prunable; all layers in one group for scope "global"), and back."""

    def __init__(self, mask: Mask, scope: str, prune_bias: bool, M: int) -> None:
        self.mask, self.scope, self.prune_bias, self.M = mask, scope, prune_bias, M
        self.sizes = [(wm.numel() // M, bm.numel() // M) for wm, bm in mask]

    def rows(self, pairs) -> list[torch.Tensor]:
        layers = [[w.reshape(self.M, -1)] + ([b.reshape(self.M, -1)] if self.prune_bias else []) for w, b in pairs]
        if self.scope == "global":
            return [torch.cat([t for layer in layers for t in layer], dim=1)]
        return [torch.cat(layer, dim=1) if len(layer) > 1 else layer[0] for layer in layers]

    @property
    def prunable(self) -> int:
        """Prunable parameters per network."""
        return sum(n_w + (n_b if self.prune_bias else 0) for n_w, n_b in self.sizes)

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """(M, prunable) rows in flat order as the groups' rows (one, or one per layer)."""
        if self.scope == "global":
            return [flat]
        return list(flat.split([n_w + (n_b if self.prune_bias else 0) for n_w, n_b in self.sizes], dim=1))

    def counts(self, held: list[torch.Tensor]) -> list[int]:
        """Kept entries per group; stacked networks must keep the same counts."""
        per = torch.stack([h.sum(dim=1) for h in held])  # (groups, M)
        if bool((per != per[:, :1]).any()):
            raise ValueError("stacked networks must keep the same number of prunable parameters in each scope "
                             f"group (scope {self.scope!r}); kept per group and network: {per.tolist()}: update "
                             f"them in groups of equal counts, or one at a time")
        return [int(n) for n in per[:, 0]]

    def pairs(self, rows: list[torch.Tensor], keep: Mask | None) -> Mask:
        """Rows back to (weight, bias) pairs in the mask's shapes; unprunable biases from ``keep`` (or False)."""
        per_group = [range(len(self.sizes))] if self.scope == "global" else [range(l, l + 1) for l in range(len(self.sizes))]
        parts = []
        for r, layers in zip(rows, per_group):
            parts += r.split([n for l in layers for n in self.sizes[l][:2 if self.prune_bias else 1]], dim=1)
        out, i = [], 0
        for l, (wm, bm) in enumerate(self.mask):
            w = parts[i].reshape(wm.shape)
            i += 1
            if self.prune_bias:
                b = parts[i].reshape(bm.shape)
                i += 1
            else:
                b = keep[l][1].clone() if keep is not None else torch.zeros_like(bm)
            out.append((w, b))
        return out


def _random_scores(generator, groups: "_Groups", stacked: bool, device) -> torch.Tensor:
    """SET's grow scores as (M, prunable parameters) rows in flat order (weight 0, bias 0 when prunable, ...):
    one ``torch.rand`` (float64) of each network's prunable parameters from its own generator, on the
    generator's device, so a network draws the same whether it is updated alone or stacked."""
    gens = list(generator) if stacked and isinstance(generator, (list, tuple)) else [generator]
    if stacked and len(gens) != groups.M:
        raise ValueError(f'grow="random" (SET) on stacked networks needs one torch.Generator per network '
                         f'({groups.M}), got {len(gens)}')
    if not all(isinstance(g, torch.Generator) for g in gens):
        raise ValueError('grow="random" (SET) needs a torch.Generator (generator=...)' if not stacked else
                         'grow="random" (SET) on stacked networks needs a list of torch.Generators, one per network')
    n = groups.prunable
    rows = [torch.rand(n, generator=g, device=g.device, dtype=torch.float64) for g in gens]
    return (torch.stack(rows) if len(rows) > 1 else rows[0].unsqueeze(0)).to(device)
