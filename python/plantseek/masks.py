"""The mask structure: every mask in plantseek is a list with one `(weight_mask, bias_mask)` pair of bool
tensors per layer (`Mask`). Helpers to build, count and check masks against a network live here; the mask
kernels (bit packing, overlap counts) are the concept module `plantseek.kernels.masks`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .kernels.checks import ArgumentError, describe, layer_pairs

Mask = list[tuple[torch.Tensor, torch.Tensor]]


def check_mask(mask: Mask, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], name: str = "mask") -> Mask:
    """Raise ArgumentError (a ValueError) unless `mask` has one bool (weight, bias) pair of tensors per layer
    with the layers' shapes; returns it as a list of tuples. `name` is a phrase for the messages ("the mask
    that pruner 'x' returned"); the kernels' argument form is `plantseek.kernels.checks.check_mask`."""
    mask = layer_pairs(mask, len(weights), name)
    for i, ((wm, bm), w, b) in enumerate(zip(mask, weights, biases)):
        for part, t in (("weight", wm), ("bias", bm)):
            if not isinstance(t, torch.Tensor):
                raise ArgumentError(f"{name} layer {i}: the {part} mask is {describe(t)}, not a bool tensor")
        if tuple(wm.shape) != tuple(w.shape) or tuple(bm.shape) != tuple(b.shape):
            raise ArgumentError(
                f"{name} layer {i}: shapes {tuple(wm.shape)}/{tuple(bm.shape)} do not match the network's "
                f"{tuple(w.shape)}/{tuple(b.shape)}"
            )
        if wm.dtype != torch.bool or bm.dtype != torch.bool:
            raise ArgumentError(f"{name} layer {i}: masks must be bool tensors, got {wm.dtype}/{bm.dtype}")
    return mask


def segments(mask: Mask) -> list[torch.Tensor]:
    """The flat segments of a mask in packing order: weight 0, bias 0, weight 1, bias 1, ..."""
    out = []
    for wm, bm in mask:
        out.append(wm.reshape(-1))
        out.append(bm.reshape(-1))
    return out


def full_mask(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], value: bool = True) -> Mask:
    """A mask that keeps (value=True) or drops every parameter, on the parameters' device."""
    return [
        (torch.full(w.shape, value, dtype=torch.bool, device=w.device),
         torch.full(b.shape, value, dtype=torch.bool, device=b.device))
        for w, b in zip(weights, biases)
    ]


def count(mask: Mask, include_bias: bool = True) -> int:
    """Number of kept parameters."""
    return int(sum(int(wm.sum()) + (int(bm.sum()) if include_bias else 0) for wm, bm in mask))


def size(mask: Mask, include_bias: bool = True) -> int:
    """Number of parameters the mask covers."""
    return int(sum(wm.numel() + (bm.numel() if include_bias else 0) for wm, bm in mask))
