"""Masks: bit packing and overlap counts (dispatcher, PyTorch reference, CUDA launchers side by side).

Every mask in plantseek is a list with one ``(weight_mask, bias_mask)`` pair of bool tensors per layer (the
`plantseek.masks.Mask` type). Packed form: each weight or bias tensor is one *segment*, flattened and padded
to a whole number of 64-bit words, so per-segment popcounts never straddle two segments.

Backends of `overlap_counts`: the native popcount kernel (``plantseek._C``, masks on the CPU), one CUDA launch
for all masks and segments (``plantseek._C_cuda``, masks on a CUDA device), and `overlap_counts_reference`
(PyTorch, any device; what ``PLANTSEEK_NATIVE=0`` runs). All three check their arguments alike first
(`plantseek.kernels.checks`). The reachability counts behind `plantseek.metrics.connectivity` live here too
(`reachability_counts`: native on the CPU, `cuda_reachability` on CUDA, `reachability_counts_reference`).

C++: csrc/masks.{h,cpp}, csrc/bindings/masks.cpp, csrc/cuda/masks_cuda.{h,cu}, csrc/cuda/bindings/masks.cpp.
Tests: tests/kernels/test_masks.py.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .. import native
from ..masks import Mask, segments
from .checks import ArgumentError, check_int, check_list, check_mask, check_masks, fail

# dispatcher -> its reference (tests/kernels/test_layout.py checks every concept module has such pairs)
KERNELS = {"overlap_counts": "overlap_counts_reference", "reachability_counts": "reachability_counts_reference"}

Counts = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------------------- packing

def segment_word_offsets(sizes: Sequence[int]) -> np.ndarray:
    """Word offsets (length S + 1, int64) of segments of the given element counts, each padded to 64 bits."""
    words = [(int(n) + 63) // 64 for n in sizes]
    return np.concatenate([[0], np.cumsum(words, dtype=np.int64)]).astype(np.int64)


def pack(masks: Sequence[Mask]) -> tuple[np.ndarray, np.ndarray]:
    """Bit-pack M masks of one structure into a (M, W) uint64 array and the (S + 1,) segment word offsets.

    Bit j of segment s sits in word offsets[s] + j // 64 at bit j % 64 (little-endian bit order). Native on
    the CPU (masks on other devices are copied there), NumPy otherwise.
    """
    return _pack(check_masks("masks", masks))


def _pack(masks: list[Mask]) -> tuple[np.ndarray, np.ndarray]:
    """`pack` of validated masks."""
    segs = [segments(m) for m in masks]
    sizes = [s.numel() for s in segs[0]]
    offsets = segment_word_offsets(sizes)
    ext = native.cpu_module()
    if ext is not None:
        flat = [[t.detach().reshape(-1).cpu().contiguous().numpy() for t in s] for s in segs]
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


def unpack(packed: np.ndarray, offsets: np.ndarray, like: Mask) -> list[Mask]:
    """Inverse of `pack`: bool masks shaped like `like` (on the CPU)."""
    like = check_mask("like", like)
    shapes = [t.shape for pair in like for t in pair]
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or len(offsets) != len(shapes) + 1:
        raise fail("offsets", f"have {len(shapes) + 1} entries (one per segment of like, and the end)", offsets)
    packed = np.ascontiguousarray(packed, dtype=np.uint64)
    if packed.ndim != 2 or packed.shape[1] < int(offsets[-1]):
        raise fail("packed", f"be a (M, {int(offsets[-1])}) array of words", packed)
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

def overlap_counts(found: Sequence[Mask], reference: Mask) -> Counts:
    """Per-segment counts for M found masks against one reference (ticket) mask.

    Returns (intersection (M, S), found_kept (M, S), reference_kept (S,)) as int64 CPU tensors, with segments
    ordered weight 0, bias 0, weight 1, bias 1, ...  The reference's device picks the kernel: the native
    popcount on the CPU (found masks anywhere), the CUDA kernel on a CUDA device (found masks on that device),
    else `overlap_counts_reference`.
    """
    found, reference = _overlap_problem(found, reference)
    device = reference[0][0].device
    if device.type == "cuda" and native.cuda_module() is not None:
        return _cuda_overlap_counts(_on_device(found, device), reference)
    ext = native.cpu_module()
    if device.type == "cpu" and ext is not None:
        packed, offsets = _pack(found)
        ref_packed, _ = _pack([reference])
        inter, kept = ext.overlap_counts(packed, ref_packed[0], offsets)
        ref_kept = torch.tensor([int(s.sum()) for s in segments(reference)], dtype=torch.int64)
        return torch.from_numpy(np.asarray(inter)), torch.from_numpy(np.asarray(kept)), ref_kept
    return _overlap_counts_torch(found, reference)


def overlap_counts_reference(found: Sequence[Mask], reference: Mask) -> Counts:
    """Pure-PyTorch reference of `overlap_counts` on bool tensors (any device)."""
    return _overlap_counts_torch(*_overlap_problem(found, reference))


def _overlap_problem(found, reference) -> tuple[list[Mask], Mask]:
    """Validated (found, reference): masks of the reference's structure, the found ones on one device."""
    reference = check_mask("reference", reference)
    shapes = [(tuple(wm.shape), tuple(bm.shape)) for wm, bm in reference]
    return check_masks("found", found, shapes), reference


def _on_device(found: list[Mask], device: torch.device) -> list[Mask]:
    """The found masks, which the CUDA kernel needs on the reference's device."""
    dev = found[0][0][0].device
    if dev != device:
        raise fail("found[0][0][0]", f"be on {device} (with the reference)", found[0][0][0])
    return found


def _overlap_counts_torch(found: list[Mask], reference: Mask) -> Counts:
    ref_segs = segments(reference)
    inter = torch.zeros(len(found), len(ref_segs), dtype=torch.int64)
    kept = torch.zeros_like(inter)
    for m, mask in enumerate(found):
        for s, (a, r) in enumerate(zip(segments(mask), ref_segs)):
            inter[m, s] = int((a & r.to(a.device)).sum())
            kept[m, s] = int(a.sum())
    ref_kept = torch.tensor([int(r.sum()) for r in ref_segs], dtype=torch.int64)
    return inter, kept, ref_kept


# --------------------------------------------------------------------------------------------- CUDA launchers
# plantseek._C_cuda takes device pointers (tensor.data_ptr()) and the current stream of the tensors' device;
# the tensors are checked before (the dispatcher's checks, or the same checks here for a direct call).


def _pointer_table(tensors, device) -> torch.Tensor:
    return torch.tensor([t.data_ptr() for t in tensors], dtype=torch.int64, device=device)


def _cuda_device(name: str, t: torch.Tensor) -> torch.device:
    if t.device.type != "cuda":
        raise fail(name, "be on a CUDA device", t)
    return t.device


def cuda_overlap_counts(found: Sequence[Mask], reference: Mask) -> Counts:
    """`overlap_counts` on the CUDA kernel, for masks on a CUDA device: one launch for all masks and segments."""
    found, reference = _overlap_problem(found, reference)
    _cuda_device("reference[0][0]", reference[0][0])
    return _cuda_overlap_counts(_on_device(found, reference[0][0].device), reference)


def _cuda_overlap_counts(found: list[Mask], reference: Mask) -> Counts:
    dev = reference[0][0].device
    ext = native.require_cuda_module()
    ref_segs = [t.reshape(-1).contiguous() for pair in reference for t in pair]
    segs = [t.reshape(-1).contiguous() for mask in found for pair in mask for t in pair]
    M, S = len(found), len(ref_segs)
    sizes = [t.numel() for t in ref_segs]
    inter = torch.zeros(M, S, dtype=torch.int64, device=dev)
    kept = torch.zeros(M, S, dtype=torch.int64, device=dev)
    # empty segments may have a null pointer; the kernel never reads them
    with torch.cuda.device(dev):
        found_tab = _pointer_table(segs, dev)
        ref_tab = _pointer_table(ref_segs, dev)
        size_tab = torch.tensor(sizes, dtype=torch.int64, device=dev)
        ext.overlap_bytes(found_tab.data_ptr(), ref_tab.data_ptr(), size_tab.data_ptr(), max(sizes) if sizes else 0,
                          M, S, inter.data_ptr(), kept.data_ptr(), native.cuda_stream(dev))
        ref_kept = torch.stack([t.sum() for t in ref_segs]) if S else torch.zeros(0, dtype=torch.int64, device=dev)
    return inter.cpu(), kept.cpu(), ref_kept.to(torch.int64).cpu()


def cuda_reachability(masks_list: Sequence[Mask], widths: Sequence[int]) -> Counts:
    """Reachability counts (kept, effective, dead) for MLP masks on a CUDA device; see
    `reachability_counts`. One launch per layer and pass for all masks."""
    widths = [check_int(f"widths[{i}]", w, 0)
              for i, w in enumerate(check_list("widths", widths, "layer widths (inputs first)", min_len=2))]
    shapes = [((widths[l + 1], widths[l]), (widths[l + 1],)) for l in range(len(widths) - 1)]
    masks_list = check_masks("masks_list", masks_list, shapes)
    dev = _cuda_device("masks_list[0][0][0]", masks_list[0][0][0])
    ext = native.require_cuda_module()
    M, L = len(masks_list), len(widths) - 1
    wsegs = [[m[l][0].contiguous() for m in masks_list] for l in range(L)]
    bsegs = [[m[l][1].contiguous() for m in masks_list] for l in range(L)]
    kept = torch.zeros(M, 2 * L, dtype=torch.int64, device=dev)
    eff = torch.zeros(M, 2 * L, dtype=torch.int64, device=dev)
    dead = torch.zeros(M, max(L - 1, 0), dtype=torch.int64, device=dev)
    with torch.cuda.device(dev):
        stream = native.cuda_stream(dev)
        wtab = [_pointer_table(wsegs[l], dev) for l in range(L)]
        btab = [_pointer_table(bsegs[l], dev) for l in range(L)]
        fwd = [torch.ones(M, widths[0], dtype=torch.uint8, device=dev)]
        for l in range(L):
            fwd.append(torch.empty(M, widths[l + 1], dtype=torch.uint8, device=dev))
            ext.reach_forward(wtab[l].data_ptr(), btab[l].data_ptr(), fwd[l].data_ptr(), fwd[l + 1].data_ptr(), M,
                              widths[l], widths[l + 1], kept.data_ptr(), L, l, stream)
        bout = torch.ones(M, widths[L], dtype=torch.uint8, device=dev)
        for l in range(L - 1, -1, -1):
            bin_ = torch.empty(M, widths[l], dtype=torch.uint8, device=dev)
            ext.reach_backward(wtab[l].data_ptr(), btab[l].data_ptr(), fwd[l].data_ptr(), bout.data_ptr(),
                               bin_.data_ptr(), M, widths[l], widths[l + 1], eff.data_ptr(),
                               dead.data_ptr() if l >= 1 else 0, L, l, stream)
            bout = bin_
    return kept.cpu(), eff.cpu(), dead.cpu()


# --------------------------------------------------------------------------------------------- reachability

def check_structure(masks: Sequence[Mask], name: str, chained: bool = True) -> list[int]:
    """Validate bool dtype and shapes; return the widths. `chained`: MLP masks whose layers feed each other
    (reachability needs that); otherwise any (out, ...) weight mask with an (out,) bias mask (Conv2d too).
    Errors are `plantseek.kernels.ArgumentError` (a ValueError and a TypeError)."""
    masks = check_list(name, masks, "masks (lists of (weight_mask, bias_mask) pairs)")
    first = check_mask(f"{name}[0]", masks[0])
    widths = []
    for l, (wm, bm) in enumerate(first):
        form = "(out, in)" if chained else "(out, ...)"
        if (wm.dim() != 2 if chained else wm.dim() < 2) or bm.dim() != 1 or bm.shape[0] != wm.shape[0]:
            raise ArgumentError(f"{name}[0][{l}] must be a {form} weight mask with an (out,) bias mask, got "
                                        f"shapes {tuple(wm.shape)} and {tuple(bm.shape)}")
        if l == 0:
            widths.append(int(wm.shape[1]))
        elif chained and wm.shape[1] != widths[-1]:
            raise ArgumentError(f"{name}[0][{l}][0] must take {widths[-1]} inputs (the outputs of layer "
                                        f"{l - 1}), got shape {tuple(wm.shape)}")
        widths.append(int(wm.shape[0]))
    shapes = [(tuple(wm.shape), tuple(bm.shape)) for wm, bm in first]
    for i, m in enumerate(masks[1:], 1):
        check_mask(f"{name}[{i}]", m, shapes, first[0][0].device)
    return widths


def reachability_counts(masks_list: list[Mask]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kept (M, 2L), effective (M, 2L), dead (M, L-1)) int64 counts; segments weight 0, bias 0, ...

    ``masks_list``: a non-empty list of MLP masks of one structure on one device. Native on CPU (and CUDA when
    built), PyTorch reference otherwise."""
    return reachability(masks_list, "masks_list")


def reachability(masks_list, name: str):
    """`reachability_counts` with the argument's name for errors (the dispatcher)."""
    widths = check_structure(masks_list, name)
    device = masks_list[0][0][0].device
    if device.type == "cuda":
        if native.cuda_module() is not None:
            return cuda_reachability(masks_list, widths)
        return reachability_counts_reference(masks_list)
    ext = native.cpu_module()
    if ext is None:
        return reachability_counts_reference(masks_list)
    arrays = [[t.detach().contiguous().numpy() for pair in m for t in pair] for m in masks_list]
    kept, eff, dead = ext.reachability(arrays, widths, max(1, torch.get_num_threads()))
    return torch.from_numpy(np.asarray(kept)), torch.from_numpy(np.asarray(eff)), torch.from_numpy(np.asarray(dead))


def reachability_counts_reference(masks_list: list[Mask]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch reference of `reachability_counts` (float64 matrix-vector products on the masks' device)."""
    widths = check_structure(masks_list, "masks_list")
    L = len(widths) - 1
    M = len(masks_list)
    kept = torch.zeros(M, 2 * L, dtype=torch.int64)
    eff = torch.zeros(M, 2 * L, dtype=torch.int64)
    dead = torch.zeros(M, max(L - 1, 0), dtype=torch.int64)
    for m, mask in enumerate(masks_list):
        dev = mask[0][0].device
        fwd = [torch.ones(widths[0], dtype=torch.bool, device=dev)]
        for l, (wm, bm) in enumerate(mask):
            kept[m, 2 * l] = int(wm.sum())
            kept[m, 2 * l + 1] = int(bm.sum())
            fwd.append(bm | ((wm.double() @ fwd[-1].double()) > 0))
        bwd = torch.ones(widths[L], dtype=torch.bool, device=dev)
        for l in range(L - 1, -1, -1):
            wm, bm = mask[l]
            eff[m, 2 * l] = int((wm & bwd[:, None] & fwd[l][None, :]).sum())
            eff[m, 2 * l + 1] = int((bm & bwd).sum())
            bwd_in = (wm.double().t() @ bwd.double()) > 0
            if l >= 1:
                dead[m, l - 1] = int((~(fwd[l] & bwd_in)).sum())
            bwd = bwd_in
    return kept, eff, dead
