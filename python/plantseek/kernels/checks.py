"""The argument checks of every kernel dispatcher, shared with `plantseek.metrics` and the mask helpers.

One convention for every backend: a dispatcher checks all its arguments (types, shapes, dtypes, devices, and
values where a kernel needs them) before it picks the native kernel, the CUDA kernel or the PyTorch reference,
so a bad argument raises the same `ArgumentError` whatever runs. The error names the argument as the caller
wrote it (``weights[1]``, ``masks[0][1]``), says what it got and what is allowed. The compiled core keeps its
own cheap checks (csrc/bindings/checks.h), which throw rather than crash when it is called directly.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np
import torch


class ArgumentError(ValueError, TypeError):
    """A bad argument to a kernel dispatcher. A ValueError, as plantseek's argument errors are; also a TypeError,
    which the dispatchers raised for wrong types and dtypes before, so that existing handlers still catch it."""


def describe(value) -> str:
    """A short description of a value found where something else was expected (for error messages)."""
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        where = "a meta tensor (no data)" if value.is_meta else f"a tensor on {value.device}"
        return f"{where} of dtype {str(value.dtype).replace('torch.', '')} and shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    text = repr(value)
    return f"a {type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def fail(name: str, need: str, value) -> ArgumentError:
    """The error for argument `name` that must `need` (e.g. "be a bool tensor") but is `value`."""
    return ArgumentError(f"{name} must {need}, got {describe(value)}")


def _range(lo, hi) -> str:
    return f"[{lo}, {hi}]" if hi is not None else f"[{lo}, inf)"


def _scalar(value):
    """Python scalar of a one-element tensor or array (they were accepted through float() and int())."""
    if (isinstance(value, torch.Tensor) and value.numel() == 1) or (isinstance(value, np.ndarray) and value.size == 1):
        return value.item()
    return value


def check_real(name: str, value, lo: float | None = None, hi: float | None = None) -> float:
    """A finite real number (not a bool) in [lo, hi], as a float."""
    v = _scalar(value)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise fail(name, f"be a finite real number in {_range(lo, hi)}", value)
    v = float(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ArgumentError(f"{name} = {v!r} is outside {_range(lo, hi)}")
    return v


def check_int(name: str, value, lo: int | None = 0, hi: int | None = None) -> int:
    """An integer (or an integral float such as 10.0; not a bool) in [lo, hi], as an int."""
    v = _scalar(value)
    integral = isinstance(v, numbers.Integral) or (isinstance(v, numbers.Real) and float(v).is_integer())
    if isinstance(v, (bool, np.bool_)) or not integral:
        raise fail(name, f"be an integer in {_range(lo, hi)}", value)
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ArgumentError(f"{name} = {v} is outside {_range(lo, hi)}")
    return v


_KINDS = {  # kind -> (what the error says is allowed, dtype test)
    "float": ("a floating-point", lambda d: d.is_floating_point),
    "real": ("a real (floating-point or integer, not bool)", lambda d: not d.is_complex and d != torch.bool),
    "bool": ("a bool", lambda d: d == torch.bool),
}


def check_tensor(name: str, t, kind: str = "float", *, shape=None, device=None, dtype=None,
                 finite: bool = False) -> torch.Tensor:
    """A tensor of a dtype kind ("float", "real", "bool"), or of exactly ``dtype`` when given; ``shape`` a tuple
    whose None entries match any size; on ``device`` when given; without inf or NaN when ``finite``."""
    label, dtype_ok = _KINDS[kind]
    if not isinstance(t, torch.Tensor) or not dtype_ok(t.dtype):
        raise fail(name, f"be {label} tensor", t)
    if dtype is not None and t.dtype != dtype:
        raise fail(name, f"have dtype {str(dtype).replace('torch.', '')}", t)
    if shape is not None and _shape_differs(t.shape, shape):
        text = ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "")
        raise fail(name, f"have shape ({text})", t)
    if device is not None and t.device != (device if isinstance(device, torch.device) else torch.device(device)):
        raise fail(name, f"be on {device} (with the other tensors)", t)
    if finite and t.is_floating_point() and t.numel() and not all(map(math.isfinite, value_range(t))):
        bad = ~torch.isfinite(t.detach())
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ArgumentError(f"{name} must be finite, got {int(bad.sum())} inf/NaN value(s), the first "
                            f"{t[first].item()} at index {first}")
    return t


def _shape_differs(have, want) -> bool:
    if len(have) != len(want):
        return True
    for n, w in zip(have, want):
        if w is not None and w != n:
            return True
    return False


def value_range(t: torch.Tensor) -> tuple[float, float]:
    """(min, max) of a non-empty tensor, NaN when it holds a NaN (one pass, unlike ``isfinite(t).all()``)."""
    lo, hi = torch.aminmax(t.detach())
    return float(lo), float(hi)


def check_list(name: str, seq, what: str, min_len: int = 1) -> list:
    """A list (or other non-tensor iterable) of at least ``min_len`` items, as a list."""
    if isinstance(seq, (torch.Tensor, np.ndarray, str, bytes, dict)) or not isinstance(seq, Iterable):
        raise fail(name, f"be a list of {what}", seq)
    out = list(seq)
    if len(out) < min_len:
        raise fail(name, f"be a list of {what} with at least {min_len} item(s)" if min_len > 1
                   else f"be a non-empty list of {what}", seq)
    return out


def check_pair(name: str, pair, what: str = "a (weight, bias) pair") -> tuple:
    """The two items of a 2-tuple or 2-list."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise fail(name, f"be {what}", pair)
    return pair[0], pair[1]


def check_mask(name: str, mask, shapes=None, device=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A mask: a non-empty list of (weight_mask, bias_mask) pairs of bool tensors on one device (``device``,
    else the first tensor's); with ``shapes`` (one (weight_shape, bias_shape) per layer) of those shapes."""
    pairs = check_list(name, mask, "(weight_mask, bias_mask) pairs")
    if shapes is not None and len(pairs) != len(shapes):
        raise ArgumentError(f"{name} must have one (weight_mask, bias_mask) pair per layer ({len(shapes)} layers), "
                            f"got {len(pairs)}")
    device = None if device is None else torch.device(device)
    out = []
    for l, pair in enumerate(pairs):
        if not _good_pair(pair, shapes[l] if shapes is not None else None, device):  # then say what is wrong
            wm, bm = check_pair(f"{name}[{l}]", pair, "a (weight_mask, bias_mask) pair")
            ws, bs = shapes[l] if shapes is not None else (None, None)
            check_tensor(f"{name}[{l}][0]", wm, "bool", shape=ws, device=device)
            check_tensor(f"{name}[{l}][1]", bm, "bool", shape=bs, device=device if device is not None else wm.device)
        wm, bm = pair
        device = wm.device if device is None else device
        out.append((wm, bm))
    return out


def _good_pair(pair, shapes, device) -> bool:
    """Whether `pair` is a valid (weight_mask, bias_mask) pair (the fast path of `check_mask`: masks are checked
    once per call of every metric and kernel, many per sweep)."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        return False
    wm, bm = pair
    if not (isinstance(wm, torch.Tensor) and isinstance(bm, torch.Tensor)
            and wm.dtype == torch.bool and bm.dtype == torch.bool):
        return False
    if device is not None and wm.device != device:
        return False
    if bm.device != wm.device:
        return False
    return shapes is None or (tuple(wm.shape) == tuple(shapes[0]) and tuple(bm.shape) == tuple(shapes[1]))


def check_masks(name: str, masks, shapes=None) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """A non-empty list of masks of one structure on one device: that of ``shapes``, else of the first mask."""
    masks = check_list(name, masks, "masks (lists of (weight_mask, bias_mask) pairs)")
    first = check_mask(f"{name}[0]", masks[0], shapes)
    shapes = [(tuple(wm.shape), tuple(bm.shape)) for wm, bm in first]
    return [first] + [check_mask(f"{name}[{m}]", mask, shapes, first[0][0].device)
                      for m, mask in enumerate(masks[1:], 1)]


def check_scope(scope) -> str:
    if scope not in ("global", "layer"):
        raise fail("scope", "be 'global' or 'layer'", scope)
    return scope


def layer_pairs(value, depth: int, name: str, what: str = "(weight_mask, bias_mask) pair") -> list[tuple]:
    """`value` as a list of `depth` pairs, or an ArgumentError naming `name` (a phrase such as "the mask that
    pruner 'x' returned") and what it was instead: the form for masks and scores that users' code hands in."""
    expected = f"expected one {what} per layer ({depth} layers)"
    if value is None or isinstance(value, (torch.Tensor, str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ArgumentError(f"{name} is {describe(value)}; {expected}")
    items = list(value)
    if len(items) != depth:
        raise ArgumentError(f"{name} has {len(items)} layers, the network has {depth}; {expected}")
    for i, pair in enumerate(items):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ArgumentError(f"{name} layer {i} is {describe(pair)}, not a {what}; {expected}")
    return [tuple(pair) for pair in items]
