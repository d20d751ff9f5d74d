"""Loading of the compiled core (`plantseek._C`, `plantseek._C_cuda`) and the switch to the reference path.

`PLANTSEEK_NATIVE=0` forces every kernel onto its pure-PyTorch reference; import never needs the CUDA module.
The dispatchers of `plantseek.kernels` ask `cpu_module` / `cuda_module` (None: take the reference) and launch
CUDA kernels on `cuda_stream`.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

_cpu: ModuleType | None = None
_cuda: ModuleType | None = None
_cpu_error: str | None = None
_cuda_error: str | None = None
_cuda_built = False  # the module file exists, whether or not it loaded
_loaded = False


def _load() -> None:
    global _cpu, _cuda, _cpu_error, _cuda_error, _cuda_built, _loaded
    if _loaded:
        return
    _loaded = True
    try:
        _cpu = importlib.import_module("plantseek._C")
    except ImportError as exc:  # a source checkout without a build, or a broken build
        _cpu, _cpu_error = None, str(exc)
    try:
        _cuda = importlib.import_module("plantseek._C_cuda")
        _cuda_built = True
    except ImportError as exc:  # built without nvcc, or no CUDA runtime on this machine
        _cuda, _cuda_error = None, str(exc)
        _cuda_built = not (isinstance(exc, ModuleNotFoundError) and exc.name == "plantseek._C_cuda")


def enabled() -> bool:
    """False when the user forced the reference path with PLANTSEEK_NATIVE=0."""
    return os.environ.get("PLANTSEEK_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def available() -> bool:
    """True when the compiled CPU core loaded (regardless of PLANTSEEK_NATIVE)."""
    _load()
    return _cpu is not None


def cuda_available() -> bool:
    """True when the compiled CUDA core loaded."""
    _load()
    return _cuda is not None


def cpu_module() -> ModuleType | None:
    """The CPU extension if it loaded and is enabled, else None (callers then use the reference)."""
    _load()
    return _cpu if enabled() else None


def cuda_module() -> ModuleType | None:
    """The CUDA extension if it loaded and is enabled, else None."""
    _load()
    return _cuda if enabled() else None


def require_cuda_module() -> ModuleType:
    """The CUDA extension, or RuntimeError when it did not load or PLANTSEEK_NATIVE=0 (for the CUDA launchers)."""
    ext = cuda_module()
    if ext is None:
        raise RuntimeError("the CUDA kernels are not available (plantseek._C_cuda did not load or PLANTSEEK_NATIVE=0)")
    return ext


def cuda_stream(device) -> int:
    """The current CUDA stream of `device` as the int the CUDA module's launchers take."""
    import torch

    return int(torch.cuda.current_stream(device).cuda_stream)


def module_for(device) -> ModuleType | None:
    """The extension that serves tensors on `device` (a torch.device or str), or None for the reference."""
    kind = device.type if hasattr(device, "type") else str(device).split(":")[0]
    return cuda_module() if kind == "cuda" else cpu_module()


def info() -> dict:
    """What loaded and why not, for `plantseek info` and bug reports."""
    _load()
    return {
        "enabled": enabled(),
        "cpu": _cpu is not None,
        "cpu_error": _cpu_error,
        "cuda": _cuda is not None,
        "cuda_error": _cuda_error,
    }


def describe(cuda_devices: str) -> list[str]:
    """`plantseek info`'s lines: whether each module is built and loaded, and the CUDA devices in words.

    A CUDA module can be built (nvcc was found) on a machine without a GPU, so the two are said apart.
    """
    _load()
    cpu = "loaded" if _cpu is not None else f"not loaded ({_cpu_error})"
    use = "native kernels" if enabled() else "PyTorch references (PLANTSEEK_NATIVE=0)"
    if _cuda is not None:
        built = "yes"
    elif _cuda_built:
        built = f"yes, but it did not load ({_cuda_error})"
    else:
        built = "no (no CUDA compiler at build time, or PLANTSEEK_CUDA=OFF)"
    return [f"C++ core: {cpu}; kernels in use: {use}",
            f"CUDA module built: {built}; CUDA device: {cuda_devices}"]
