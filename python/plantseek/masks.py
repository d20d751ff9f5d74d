"""Mask structure helpers, bit packing and overlap counts (native kernel + PyTorch reference side by side).

Every mask in plantseek is a list with one `(weight_mask, bias_mask)` pair of bool tensors per layer.
Packed form: each weight or bias tensor is one *segment*, flattened and padded to a whole number of 64-bit
words, so per-segment popcounts never straddle two segments.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from . import native

Mask = list[tuple[torch.Tensor, torch.Tensor]]


def describe(value) -> str:
    """A short description of a value found where a mask or scores were expected (for error messages)."""
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        where = "a meta tensor (no data)" if value.is_meta else f"a tensor on {value.device}"
        return f"{where} of dtype {str(value.dtype).replace('torch.', '')} and shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    return f"a {type(value).__name__}"


def layer_pairs(value, depth: int, name: str, what: str = "(weight_mask, bias_mask) pair") -> list[tuple]:
    """`value` as a list of `depth` pairs, or a ValueError naming `name` and what it was instead."""
    expected = f"expected one {what} per layer ({depth} layers)"
    if value is None or isinstance(value, (torch.Tensor, str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} is {describe(value)}; {expected}")
    items = list(value)
    if len(items) != depth:
        raise ValueError(f"{name} has {len(items)} layers, the network has {depth}; {expected}")
    for i, pair in enumerate(items):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{name} layer {i} is {describe(pair)}, not a {what}; {expected}")
    return [tuple(pair) for pair in items]


def check_mask(mask: Mask, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], name: str = "mask") -> Mask:
    """Raise ValueError unless `mask` has one bool (weight, bias) pair of tensors per layer with the layers'
    shapes; returns it as a list of tuples."""
    mask = layer_pairs(mask, len(weights), name)
    for i, ((wm, bm), w, b) in enumerate(zip(mask, weights, biases)):
        for part, t in (("weight", wm), ("bias", bm)):
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{name} layer {i}: the {part} mask is {describe(t)}, not a bool tensor")
        if tuple(wm.shape) != tuple(w.shape) or tuple(bm.shape) != tuple(b.shape):
            raise ValueError(
                f"{name} layer {i}: shapes {tuple(wm.shape)}/{tuple(bm.shape)} do not match the network's "
                f"{tuple(w.shape)}/{tuple(b.shape)}"
            )
        if wm.dtype != torch.bool or bm.dtype != torch.bool:
            raise ValueError(f"{name} layer {i}: masks must be bool tensors, got {wm.dtype}/{bm.dtype}")
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


# --------------------------------------------------------------------------------------------- packing

def segment_word_offsets(sizes: Sequence[int]) -> np.ndarray:
    """Word offsets (length S + 1, int64) of segments of the given element counts, each padded to 64 bits."""
    words = [(int(n) + 63) // 64 for n in sizes]
    return np.concatenate([[0], np.cumsum(words, dtype=np.int64)]).astype(np.int64)


def pack(masks: Sequence[Mask]) -> tuple[np.ndarray, np.ndarray]:
    """Bit-pack M masks of one structure into a (M, W) uint64 array and the (S + 1,) segment word offsets.

    Bit j of segment s sits in word offsets[s] + j // 64 at bit j % 64 (little-endian bit order).
    """
    if len(masks) == 0:
        raise ValueError("pack needs at least one mask")
    segs = [segments(m) for m in masks]
    sizes = [s.numel() for s in segs[0]]
    for i, s in enumerate(segs):
        if [t.numel() for t in s] != sizes:
            raise ValueError(f"mask {i} does not have the structure of mask 0")
    offsets = segment_word_offsets(sizes)
    ext = native.cpu_module()
    if ext is not None:
        flat = [[_bool_numpy(t) for t in s] for s in segs]
        return np.asarray(ext.pack_masks(flat, offsets, torch.get_num_threads())), offsets
    out = np.zeros((len(masks), int(offsets[-1])), dtype=np.uint64)
    out_bytes = out.view(np.uint8)
    for k, n in enumerate(sizes):
        if n == 0:
            continue
        stacked = torch.stack([s[k] for s in segs]).cpu().numpy()  # (M, n) bool
        packed = np.packbits(stacked, axis=1, bitorder="little")  # (M, ceil(n/8)) uint8
        start = int(offsets[k]) * 8
        out_bytes[:, start:start + packed.shape[1]] = packed
    return out, offsets


def _bool_numpy(t: torch.Tensor) -> np.ndarray:
    """A flat, C-contiguous NumPy bool view (or copy) of a mask tensor, on the CPU."""
    if t.dtype != torch.bool:
        raise ValueError(f"masks must be bool tensors, got {t.dtype}")
    return t.detach().reshape(-1).cpu().contiguous().numpy()


def unpack(packed: np.ndarray, offsets: np.ndarray, like: Mask) -> list[Mask]:
    """Inverse of `pack`: bool masks shaped like `like` (on the CPU)."""
    packed = np.ascontiguousarray(packed, dtype=np.uint64)
    shapes = [t.shape for pair in like for t in pair]
    result = []
    for row in packed:
        as_bytes = row.view(np.uint8)
        tensors = []
        for k, shape in enumerate(shapes):
            n = int(np.prod(shape)) if len(shape) else 1
            start = int(offsets[k]) * 8
            bits = np.unpackbits(as_bytes[start:start + (n + 7) // 8], bitorder="little")[:n].astype(bool)
            tensors.append(torch.from_numpy(bits.copy()).reshape(shape))
        result.append([(tensors[2 * i], tensors[2 * i + 1]) for i in range(len(tensors) // 2)])
    return result


# --------------------------------------------------------------------------------------------- overlap counts

def overlap_counts(found: Sequence[Mask], reference: Mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-segment counts for M found masks against one reference (ticket) mask.

    Returns (intersection (M, S), found_kept (M, S), reference_kept (S,)) as int64 CPU tensors, with segments
    ordered weight 0, bias 0, weight 1, bias 1, ...  Uses the native popcount kernel when it is available.
    """
    found = list(found)
    if not found:
        raise ValueError("overlap_counts needs at least one found mask")
    device = reference[0][0].device
    ext = native.module_for(device)
    if ext is not None and device.type == "cpu":
        packed, offsets = pack(found)
        ref_packed, _ = pack([reference])
        inter, kept = ext.overlap_counts(packed, ref_packed[0], offsets)
        ref_kept = torch.tensor([int(s.sum()) for s in segments(reference)], dtype=torch.int64)
        return torch.from_numpy(np.asarray(inter)), torch.from_numpy(np.asarray(kept)), ref_kept
    return overlap_counts_reference(found, reference)


def overlap_counts_reference(found: Sequence[Mask], reference: Mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pure-PyTorch reference of `overlap_counts` on bool tensors (any device)."""
    ref_segs = segments(reference)
    inter = torch.zeros(len(found), len(ref_segs), dtype=torch.int64)
    kept = torch.zeros_like(inter)
    for m, mask in enumerate(found):
        segs = segments(mask)
        if len(segs) != len(ref_segs):
            raise ValueError(f"found mask {m} has {len(segs) // 2} layers, the reference has {len(ref_segs) // 2}")
        for s, (a, r) in enumerate(zip(segs, ref_segs)):
            if a.shape != r.shape:
                raise ValueError(f"found mask {m} segment {s}: shape {tuple(a.shape)} != {tuple(r.shape)}")
            inter[m, s] = int((a & r.to(a.device)).sum())
            kept[m, s] = int(a.sum())
    ref_kept = torch.tensor([int(r.sum()) for r in ref_segs], dtype=torch.int64)
    return inter, kept, ref_kept
