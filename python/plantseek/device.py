"""Device and dtype resolution shared by every entry point."""
from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float": torch.float32, "double": torch.float64}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn "auto", "cpu", "cuda" or "cuda:N" into a torch.device; a CUDA request without CUDA is a ValueError."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N' ({available_devices()})") from exc
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested but CUDA is not available here ({available_devices()})")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r} does not exist: {count} CUDA device(s) visible ({available_devices()})")
        return dev
    raise ValueError(f"unsupported device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N' ({available_devices()})")


def available_devices() -> str:
    """A short human-readable list of the devices this process can use."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return "available: " + ", ".join(names)


def cuda_devices() -> str:
    """The visible CUDA devices in words: "none", or their count and names ("1 (cuda:0 NVIDIA H200)")."""
    if not torch.cuda.is_available():
        return "none"
    count = torch.cuda.device_count()
    names = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(count))
    return f"{count} ({names})"


def resolve_dtype(dtype: str | torch.dtype | None = "float32") -> torch.dtype:
    """Accept torch dtypes or their names; only float32 and float64 are supported for training."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.float64):
            return dtype
        raise ValueError(f"unsupported dtype {dtype}: use float32 or float64")
    key = str(dtype).replace("torch.", "").strip().lower()
    if key not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}: use 'float32' or 'float64'")
    return _DTYPES[key]
