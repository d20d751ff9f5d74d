"""Found masks as bytes (the results database's ``masks`` column) and as files that any framework reads.

A mask is the usual list of ``(weight_mask, bias_mask)`` pairs (`plantseek.masks.Mask`), MLP or conv (4-D
weight masks). Stored form, decoded without knowing the network::

    b"PSMK"  version (u8, 1)  codec (u8, 1 = zlib)  tensors (u32)      the header, little-endian
    per tensor: ndim (u8), dims (u32 each)                             weight 0, bias 0, weight 1, ...
    zlib( packbits(tensor 0) + packbits(tensor 1) + ... )              bits little-endian, each tensor byte-aligned

The bit order is that of `plantseek.kernels.masks.pack` (bit j of a tensor is bit j % 8 of its byte j // 8);
the kernel's form also pads every segment to 64-bit words for its popcounts, which storage does not need,
and needs torch and the network (its ``like``) to decode, which the store must not. So packing here is NumPy
and zlib only; safetensors (and torch, for `load_masks`'s tensors) are imported where they are used.

Files: `write_masks` writes ``layers.{i}.weight`` / ``layers.{i}.bias`` (i = the i-th weight layer) bool arrays
to ``.safetensors`` or ``.npz``; `load_masks` reads such a file (or a name -> array dict, e.g. a module's
state dict of masks, ``0.weight``, ``2.weight``, ...) back as a mask.
"""
from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["MAGIC", "FORMATS", "pack", "unpack", "shapes", "parameter_names", "named", "file_format", "write_masks",
           "read_named", "from_named", "load_masks"]

MAGIC = b"PSMK"
VERSION = 1
ZLIB = 1
ZLIB_LEVEL = 6  # bench/bench_masks.py: 9 saves 2-15% at width 1000 but takes 3-15x longer (0.15-0.2 s a run)
FORMATS = (".safetensors", ".npz")
_HEAD = struct.Struct("<4sBBI")
_NAME = re.compile(r"^(?:(?P<prefix>.*)\.)?(?P<index>\d+)\.(?P<kind>weight|bias)(?:_mask)?$")

Pair = tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------------------------- bytes

def _array(t: Any, name: str) -> np.ndarray:
    """A bool NumPy array of a mask tensor (torch on any device, NumPy, nested lists); 0/1 values only."""
    if hasattr(t, "detach"):  # a torch tensor, without importing torch
        t = t.detach().cpu().numpy()
    a = np.asarray(t)
    if a.dtype == bool:
        return a
    if a.dtype.kind not in "biuf" or a.size and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be a boolean mask (or 0/1 values), got dtype {a.dtype}"
                         + ("" if a.dtype.kind not in "biuf" else " with values other than 0 and 1"))
    return a.astype(bool)


def _pairs(masks: Any, name: str = "masks") -> list[Pair]:
    if not isinstance(masks, (list, tuple)):
        raise ValueError(f"{name} must be a list of (weight_mask, bias_mask) pairs, got {type(masks).__name__}")
    out = []
    for i, pair in enumerate(masks):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{name}[{i}] must be a (weight_mask, bias_mask) pair")
        out.append((_array(pair[0], f"{name}[{i}][0]"), _array(pair[1], f"{name}[{i}][1]")))
    return out


def pack(masks: Sequence) -> bytes:
    """The stored form of a mask (see the module docstring): bit-packed, zlib-compressed, shapes in the header."""
    tensors = [t for pair in _pairs(masks) for t in pair]
    head = [_HEAD.pack(MAGIC, VERSION, ZLIB, len(tensors))]
    for t in tensors:
        head.append(struct.pack(f"<B{t.ndim}I", t.ndim, *t.shape))
    body = b"".join(np.packbits(t.reshape(-1), bitorder="little").tobytes() for t in tensors)
    return b"".join(head) + zlib.compress(body, ZLIB_LEVEL)


def _header(blob: bytes) -> tuple[list[tuple[int, ...]], int]:
    """(tensor shapes, offset of the compressed body) of a stored mask."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise ValueError(f"a stored mask must be bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _HEAD.size or blob[:4] != MAGIC:
        raise ValueError("not a plantseek stored mask (no PSMK header)")
    _, version, codec, n = _HEAD.unpack_from(blob)
    if version != VERSION or codec != ZLIB:
        raise ValueError(f"stored mask format {version} (codec {codec}) is newer than this plantseek reads "
                         f"({VERSION}, zlib); upgrade plantseek")
    if n % 2:
        raise ValueError(f"a stored mask holds (weight, bias) pairs, but this one has {n} tensors")
    at, out = _HEAD.size, []
    try:
        for _ in range(n):
            (ndim,) = struct.unpack_from("<B", blob, at)
            out.append(tuple(struct.unpack_from(f"<{ndim}I", blob, at + 1)))
            at += 1 + 4 * ndim
    except struct.error:
        raise ValueError("stored mask is truncated (in its header)") from None
    return out, at


def shapes(blob: bytes) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (weight shape, bias shape) of each layer, read from the header alone."""
    flat, _ = _header(blob)
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def unpack(blob: bytes) -> list[Pair]:
    """A stored mask back as (weight_mask, bias_mask) pairs of bool NumPy arrays."""
    flat, at = _header(blob)
    try:
        body = zlib.decompress(bytes(blob)[at:])
    except zlib.error as exc:
        raise ValueError(f"stored mask is corrupt ({exc})") from None
    sizes = [int(np.prod(s, dtype=np.int64)) for s in flat]
    if len(body) != sum((n + 7) // 8 for n in sizes):
        raise ValueError(f"stored mask is corrupt: {len(body)} bytes of bits for shapes {flat}")
    raw, tensors, pos = np.frombuffer(body, dtype=np.uint8), [], 0
    for shape, n in zip(flat, sizes):
        nbytes = (n + 7) // 8
        bits = np.unpackbits(raw[pos:pos + nbytes], count=n, bitorder="little")
        tensors.append(bits.astype(bool).reshape(shape))
        pos += nbytes
    return [(tensors[i], tensors[i + 1]) for i in range(0, len(tensors), 2)]


# --------------------------------------------------------------------------------------------- files

def parameter_names(n_layers: int) -> list[str]:
    """``layers.0.weight``, ``layers.0.bias``, ``layers.1.weight``, ...: the names the files use."""
    return [f"layers.{i}.{kind}" for i in range(int(n_layers)) for kind in ("weight", "bias")]


def named(masks: Sequence) -> dict[str, np.ndarray]:
    """A mask (pairs, or a stored mask's bytes) as ``{"layers.0.weight": bool array, ...}`` in layer order."""
    pairs = unpack(masks) if isinstance(masks, (bytes, bytearray, memoryview)) else _pairs(masks)
    return dict(zip(parameter_names(len(pairs)), (t for pair in pairs for t in pair)))


def file_format(path: str | Path) -> str:
    """The format of a mask file, from its suffix: ``.safetensors`` or ``.npz`` (anything else is a ValueError)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"mask file {str(path)!r} must end in {' or '.join(FORMATS)} (the format follows the "
                         f"suffix), not {suffix or 'no suffix'!r}")
    return suffix


def write_masks(path: str | Path, masks: Sequence, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a mask as ``layers.{i}.weight``/``.bias`` bool arrays to ``.safetensors`` or ``.npz`` (by the
    suffix); ``metadata`` (JSON-able) goes in the safetensors header, or as the npz entry ``__metadata__``."""
    path = Path(path)
    fmt = file_format(path)
    arrays = {k: np.ascontiguousarray(v) for k, v in named(masks).items()}
    meta = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(path), metadata={"format": "plantseek.masks", **meta})
    else:
        with open(path, "wb") as fh:  # a file object: np.savez would append .npz to another suffix's name
            np.savez_compressed(fh, **arrays, __metadata__=np.array(json.dumps({"format": "plantseek.masks", **meta})))
    return path


def read_named(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(name -> array, metadata) of a ``.safetensors`` or ``.npz`` mask file."""
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file {str(path)!r} does not exist")
    if fmt == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="np") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as exc:  # safetensors raises its own error types for a damaged header
            raise ValueError(f"mask file {str(path)!r} is not a readable safetensors file ({exc})") from None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"mask file {str(path)!r} is not a readable npz file ({exc})") from None
    meta = arrays.pop("__metadata__", None)
    return arrays, ({} if meta is None else json.loads(str(meta)))


def from_named(arrays: Mapping[str, Any], source: str = "masks") -> list[Pair]:
    """Pairs from ``{prefix.i.weight: ..., prefix.i.bias: ...}`` (``_mask`` suffixes too), ordered by i: the
    files' ``layers.i`` names and a module's state-dict names (``0.weight``, ``2.weight``, ...) alike."""
    layers: dict[int, dict[str, Any]] = {}
    prefixes, unknown = set(), []
    for name, value in arrays.items():
        if str(name).startswith("__"):
            continue  # metadata entries
        m = _NAME.match(str(name))
        if m is None:
            unknown.append(name)
            continue
        prefixes.add(m["prefix"] or "")
        slot = layers.setdefault(int(m["index"]), {})
        if m["kind"] in slot:
            raise ValueError(f"{source}: two entries for layer {m['index']}'s {m['kind']} mask")
        slot[m["kind"]] = value
    if unknown:
        raise ValueError(f"{source}: entries {unknown[:5]} are not named like 'layers.0.weight' / 'layers.0.bias'")
    if not layers:
        raise ValueError(f"{source} holds no masks (expected entries 'layers.0.weight', 'layers.0.bias', ...)")
    if len(prefixes) > 1:
        raise ValueError(f"{source}: entries mix the prefixes {sorted(prefixes)}; one network's masks have one")
    out = []
    for i in sorted(layers):
        missing = [k for k in ("weight", "bias") if k not in layers[i]]
        if missing:
            raise ValueError(f"{source}: layer {i} has no {missing[0]} mask")
        out.append((_array(layers[i]["weight"], f"{source} layer {i} weight"),
                    _array(layers[i]["bias"], f"{source} layer {i} bias")))
    return out


def load_masks(source: str | Path | Mapping[str, Any]) -> list:
    """A mask written by `write_masks` / ``plantseek masks --out`` (``.safetensors`` or ``.npz``), or a name ->
    array dict, as the usual list of ``(weight_mask, bias_mask)`` bool torch tensors (on the CPU)."""
    import torch

    if isinstance(source, Mapping):
        pairs = from_named(source)
    else:
        arrays, _ = read_named(source)
        pairs = from_named(arrays, f"mask file {str(source)!r}")
    return [(torch.from_numpy(np.ascontiguousarray(w)), torch.from_numpy(np.ascontiguousarray(b))) for w, b in pairs]
