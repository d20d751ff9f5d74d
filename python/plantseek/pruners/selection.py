"""Exact top-k selection of scores into masks: the part every score pruner shares.

Rules (DESIGN.md, "Seeking: pruners"):
- the kept count is exactly ``kept_count(density, n) = round(density * n)`` where n is the number of prunable
  parameters in the scope (``"global"``: all layers together; ``"layer"``: each layer on its own);
- with ``prune_bias=False`` biases are not prunable: they are not counted and keep their current mask;
- parameters that the current mask has already pruned are never selected again (masks only shrink);
- ties are broken deterministically: among equal scores the lowest flat index wins, where the flat order is
  weight 0, bias 0, weight 1, bias 1, ... (each tensor row-major).

The selection itself goes through `plantseek.kernels.global_topk` (native threshold search on the CPU, its
PyTorch reference elsewhere) when the kernels module provides it; the pure-PyTorch `topk_keep` below is the
fallback (and the tests' second opinion) and follows the same tie rule.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

Mask = list[tuple[torch.Tensor, torch.Tensor]]
Scores = Sequence[tuple[torch.Tensor, torch.Tensor]]

SCOPES = ("global", "layer")


def kept_count(density: float, n: int) -> int:
    """The exact number of parameters kept out of ``n`` at ``density``: Python's ``round(density * n)``."""
    return int(round(float(density) * int(n)))


def topk_keep(scores: torch.Tensor, k: int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask (same shape as the flat ``scores``) keeping the ``k`` largest eligible scores.

    Ties at the threshold go to the lowest indices. Works on any device; O(n) apart from ``torch.topk``.
    """
    scores = scores.reshape(-1)
    n = scores.numel()
    if eligible is None:
        eligible = torch.ones(n, dtype=torch.bool, device=scores.device)
    else:
        eligible = eligible.reshape(-1)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=scores.device)
    n_eligible = int(eligible.sum())
    if k > n_eligible:
        raise ValueError(f"cannot keep {k} parameters: only {n_eligible} are still unpruned")
    if k == n_eligible:
        return eligible.clone()
    candidates = scores[eligible]
    threshold = torch.topk(candidates, k, largest=True, sorted=False).values.min()
    above = (scores > threshold) & eligible
    at = (scores == threshold) & eligible
    need = k - int(above.sum())
    # lowest flat indices first among the tied scores
    at_rank = torch.cumsum(at.to(torch.int64), dim=0)
    return above | (at & (at_rank <= need))


def _kernels():
    """`plantseek.kernels` when it is importable (it holds the native selection), else None."""
    try:
        from .. import kernels  # the native-core wrappers (python/plantseek/kernels.py)
    except ImportError:
        return None
    return kernels


def _native_topk():
    """`plantseek.kernels.global_topk` when the kernels module defines it, else None."""
    return getattr(_kernels(), "global_topk", None)


def select_flat(scores: torch.Tensor, k: int, eligible: torch.Tensor) -> torch.Tensor:
    """Keep the top ``k`` eligible entries of a flat score vector (native kernel when present)."""
    fn = _native_topk()
    if fn is not None:
        return fn(scores, k, eligible)
    return topk_keep(scores, k, eligible)


def select(
    scores: Scores,
    density: float,
    current: Mask,
    *,
    scope: str = "global",
    prune_bias: bool = True,
) -> Mask:
    """Masks that keep exactly ``kept_count(density, n)`` of the prunable parameters of each scope.

    ``scores`` has one (weight_scores, bias_scores) pair per layer, shaped like the parameters; ``current`` is
    the current mask (a full mask when nothing has been pruned yet), which the result never grows.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(map(repr, SCOPES))}, got {scope!r}")
    fn = _native_topk()
    if fn is None:
        return select_reference(scores, density, current, scope=scope, prune_bias=prune_bias)
    # one call for all scopes (native on the CPU); same counts, tie rule and eligibility as select_reference
    _check_counts(current, density, scope, prune_bias)
    pairs = [(ws, bs if prune_bias else None) for ws, bs in scores]
    return [(wm, bm) for wm, bm in fn(pairs, density=density, eligible=current, scope=scope)]


def select_reference(
    scores: Scores,
    density: float,
    current: Mask,
    *,
    scope: str = "global",
    prune_bias: bool = True,
) -> Mask:
    """Pure-PyTorch `select` (one `topk_keep` per scope group), used when `plantseek.kernels` is missing."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(map(repr, SCOPES))}, got {scope!r}")
    n_layers = len(current)
    groups_layers = [list(range(n_layers))] if scope == "global" else [[i] for i in range(n_layers)]
    result: list[list] = [[None, None] for _ in current]
    for layers in groups_layers:
        seg_scores, seg_elig, seg_ref = [], [], []
        for i in layers:
            seg_scores.append(scores[i][0].reshape(-1))
            seg_elig.append(current[i][0].reshape(-1))
            seg_ref.append((i, 0, current[i][0].shape))
            if prune_bias:
                seg_scores.append(scores[i][1].reshape(-1))
                seg_elig.append(current[i][1].reshape(-1))
                seg_ref.append((i, 1, current[i][1].shape))
        flat_scores = torch.cat(seg_scores) if len(seg_scores) > 1 else seg_scores[0]
        flat_elig = torch.cat(seg_elig) if len(seg_elig) > 1 else seg_elig[0]
        n = flat_scores.numel()
        k = kept_count(density, n)
        n_eligible = int(flat_elig.sum())
        if k > n_eligible:
            _check_counts(current, density, scope, prune_bias)
        kept = topk_keep(flat_scores, k, flat_elig)
        offset = 0
        for (i, j, shape) in seg_ref:
            size = math.prod(shape)
            result[i][j] = kept[offset:offset + size].reshape(shape)
            offset += size
    out: Mask = []
    for i, (wm, bm) in enumerate(result):
        if bm is None:  # biases not prunable: they keep their current mask
            bm = current[i][1].clone()
        out.append((wm, bm))
    return out


def _check_counts(current: Mask, density: float, scope: str, prune_bias: bool) -> None:
    """ValueError unless the current mask still keeps at least what ``density`` asks for in every scope."""
    groups = [current] if scope == "global" else [[pair] for pair in current]
    for i, g in enumerate(groups):
        kept, total = prunable_count(g, prune_bias)
        k = kept_count(density, total)
        if k > kept:
            where = "in total" if scope == "global" else f"in layer {i}"
            raise ValueError(
                f"density {density:g} asks to keep {k} of {total} prunable parameters {where}, but the current "
                f"mask keeps only {kept}; pruned parameters never come back (lower the density)"
            )


def prunable_count(current: Mask, prune_bias: bool = True) -> tuple[int, int]:
    """(kept, total) prunable parameters of a mask over all layers."""
    kept = sum(int(wm.sum()) + (int(bm.sum()) if prune_bias else 0) for wm, bm in current)
    total = sum(wm.numel() + (bm.numel() if prune_bias else 0) for wm, bm in current)
    return kept, total
