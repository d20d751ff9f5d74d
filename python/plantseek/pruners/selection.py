"""Exact top-k selection of scores into masks: the part every score pruner shares.

Rules (DESIGN.md, "Seeking: pruners"):
- the kept count is exactly ``kept_count(density, n) = round(density * n)`` where n is the number of prunable
  parameters in the scope (``"global"``: all layers together; ``"layer"``: each layer on its own);
- with ``prune_bias=False`` biases are not prunable: they are not counted and keep their current mask;
- parameters that the current mask has already pruned are never selected again (masks only shrink);
- ties are broken deterministically: among equal scores the lowest flat index wins, where the flat order is
  weight 0, bias 0, weight 1, bias 1, ... (each tensor row-major).

The selection itself is `plantseek.kernels.scores.global_topk` (native threshold search on the CPU, its PyTorch
reference `global_topk_reference` elsewhere); this module adds the counting rules and clear errors.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..kernels import scores as score_kernels

Mask = list[tuple[torch.Tensor, torch.Tensor]]
Scores = Sequence[tuple[torch.Tensor, torch.Tensor]]

SCOPES = ("global", "layer")


def kept_count(density: float, n: int) -> int:
    """The exact number of parameters kept out of ``n`` at ``density``: Python's ``round(density * n)``."""
    return int(round(float(density) * int(n)))


def topk_keep(scores: torch.Tensor, k: int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask (same shape as ``scores``) keeping the ``k`` largest eligible scores, ties to the lowest
    indices: `plantseek.kernels.scores.global_topk_reference` on a flat score vector (any device)."""
    if k <= 0:
        return torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    return score_kernels.global_topk_reference(scores, int(k), eligible)


def select_flat(scores: torch.Tensor, k: int, eligible: torch.Tensor) -> torch.Tensor:
    """Keep the top ``k`` eligible entries of a flat score vector (native on the CPU)."""
    return score_kernels.global_topk(scores, k, eligible)


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
    return _select(score_kernels.global_topk, scores, density, current, scope, prune_bias)


def select_reference(
    scores: Scores,
    density: float,
    current: Mask,
    *,
    scope: str = "global",
    prune_bias: bool = True,
) -> Mask:
    """`select` through `plantseek.kernels.scores.global_topk_reference` (pure PyTorch, any device)."""
    return _select(score_kernels.global_topk_reference, scores, density, current, scope, prune_bias)


def _select(topk, scores: Scores, density: float, current: Mask, scope: str, prune_bias: bool) -> Mask:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(map(repr, SCOPES))}, got {scope!r}")
    # more than the current mask keeps is refused by global_topk (the pruners call check_reachable once, up front)
    pairs = [(ws, bs if prune_bias else None) for ws, bs in scores]
    return [(wm, bm) for wm, bm in topk(pairs, density=density, eligible=current, scope=scope)]


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
