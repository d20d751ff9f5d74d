"""The challenge's files: parameter names, arrays in safetensors or npz (read and written with NumPy only, as
a participant would), and SHA-256 hashes of files and of their arrays.

Arrays are named as `PlantedNetwork.to_module` names its parameters once the ReLUs are left out:
``layers.{i}.weight`` (PyTorch ``(out, in)`` layout) and ``layers.{i}.bias`` for linear layer i. This module
imports NumPy only (safetensors when that format is read or written)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..mask_io import parameter_names  # noqa: F401 - the one naming rule of mask and parameter files

FORMATS = ("safetensors", "npz")
EXTENSIONS = {"safetensors": ".safetensors", "npz": ".npz"}
DATA_ARRAYS = ("x_train", "y_train", "x_prune", "y_prune", "x_test", "y_test")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return fmt


def format_of(path: str | os.PathLike) -> str:
    """The format a file name says (by its extension), or ValueError naming the allowed extensions."""
    suffix = Path(path).suffix.lower()
    for fmt, ext in EXTENSIONS.items():
        if suffix == ext:
            return fmt
    raise ValueError(f"{str(path)!r}: unknown file type {suffix or '(none)'!r}; allowed: "
                     f"{', '.join(EXTENSIONS.values())}")


def write_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named arrays as safetensors or npz (by the file's extension); arrays are made C-contiguous."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    if format_of(path) == "safetensors":
        from safetensors.numpy import save

        with open(path, "wb") as fh:  # an ordinary file (safetensors' own writer makes it owner-only)
            fh.write(save(arrays))
    else:
        with open(path, "wb") as fh:  # a file object: np.savez would append .npz to a name without it
            np.savez(fh, **arrays)


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The named arrays of a safetensors or npz file; a file that is neither is a ValueError naming it."""
    fmt = format_of(path)
    try:
        if fmt == "safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
        with np.load(str(path), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors and NumPy raise several types for foreign files
        raise ValueError(f"{str(path)!r} is not a readable {fmt} file ({type(exc).__name__}: {exc})") from None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and little-endian bytes, in name order: the same for
    the same arrays whatever file format holds them (what `score` checks a rebuilt network against)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(f"{name}|{a.dtype.str}|{list(a.shape)}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()
