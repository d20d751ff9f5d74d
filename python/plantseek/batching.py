"""M networks of one shape as batched tensors and back: weights ``(M, out, in)``, biases ``(M, out)`` and bool
masks of those shapes, per layer (the layout `plantseek.train` trains)."""
from __future__ import annotations

from typing import Sequence

import torch

Tensor = torch.Tensor
LayerMasks = list[tuple[Tensor, Tensor]]  # per layer: (M, out, in) bool, (M, out) bool


def stack_params(nets: Sequence[tuple[Sequence[Tensor], Sequence[Tensor]]]) -> tuple[list[Tensor], list[Tensor]]:
    """[(weights, biases) per network] -> (per layer (M, out, in), per layer (M, out))."""
    if not nets:
        raise ValueError("stack_params needs at least one network")
    depth = len(nets[0][0])
    for k, (ws, bs) in enumerate(nets):
        if len(ws) != depth or len(bs) != depth:
            raise ValueError(f"network {k} has {len(ws)} layers, network 0 has {depth}")
    weights = [torch.stack([n[0][l] for n in nets]) for l in range(depth)]
    biases = [torch.stack([n[1][l] for n in nets]) for l in range(depth)]
    return weights, biases


def stack_masks(masks: Sequence[Sequence[tuple[Tensor, Tensor]]]) -> LayerMasks:
    """[mask per network] -> per layer ((M, out, in), (M, out)) bool."""
    if not masks:
        raise ValueError("stack_masks needs at least one mask")
    depth = len(masks[0])
    for k, m in enumerate(masks):
        if len(m) != depth:
            raise ValueError(f"mask {k} has {len(m)} layers, mask 0 has {depth}")
    return [(torch.stack([m[l][0] for m in masks]), torch.stack([m[l][1] for m in masks])) for l in range(depth)]


def unstack(weights: Sequence[Tensor], biases: Sequence[Tensor], k: int) -> tuple[list[Tensor], list[Tensor]]:
    """Network k's own (weights, biases) from stacked parameters."""
    return [w[k] for w in weights], [b[k] for b in biases]


def check_stacked(weights: Sequence[Tensor], biases: Sequence[Tensor], masks: LayerMasks | None) -> int:
    """Validate stacked shapes (and masks) and return M."""
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(f"need one bias per weight and at least one layer (got {len(weights)} and {len(biases)})")
    M = weights[0].shape[0]
    for l, (w, b) in enumerate(zip(weights, biases)):
        if w.dim() != 3 or b.dim() != 2 or w.shape[0] != M or b.shape != (M, w.shape[1]):
            raise ValueError(f"layer {l}: stacked weight {tuple(w.shape)} / bias {tuple(b.shape)} are not (M, out, in) / (M, out)")
        if l > 0 and w.shape[2] != weights[l - 1].shape[1]:
            raise ValueError(f"layer {l} takes {w.shape[2]} inputs but layer {l - 1} has {weights[l - 1].shape[1]} outputs")
    if masks is not None:
        if len(masks) != len(weights):
            raise ValueError(f"masks have {len(masks)} layers, the networks have {len(weights)}")
        for l, ((wm, bm), w, b) in enumerate(zip(masks, weights, biases)):
            if wm.shape != w.shape or bm.shape != b.shape:
                raise ValueError(
                    f"mask layer {l}: shapes {tuple(wm.shape)}/{tuple(bm.shape)} do not match the parameters' "
                    f"{tuple(w.shape)}/{tuple(b.shape)}"
                )
            if wm.dtype != torch.bool or bm.dtype != torch.bool:
                raise ValueError(f"mask layer {l}: masks must be bool tensors, got {wm.dtype}/{bm.dtype}")
    return M
