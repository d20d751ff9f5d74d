"""Memory-aware batching: how many runs of one group fit in the device's free memory at once.

`run_footprint` estimates the bytes one run of a group holds at its peak from its shape and density:

- planting: the host is drawn and hidden in float64 on the CPU (counted for the CPU device only);
- the planted host on the device in the training dtype;
- dense scoring at initialisation: the pruners score every parameter of the dense host (a float64 copy, the
  kept entries, order keys and masks: about 34 bytes per parameter);
- training: the parameters that train (kept weights on the sparse path, below the measured crossover
  density; the dense host otherwise) with their gradient and optimiser state (Adam: two more copies), the
  mask, and the trained weights scattered back into a dense tensor for the metrics;
- activations at the batch size (forward and backward, every layer) and the evaluation of the test split;
- the data (train split shuffled once per epoch: two copies).

`free_memory(device)` reads what is free now (``torch.cuda.mem_get_info`` on CUDA; the available RAM on the
CPU from psutil when installed, else ``/proc/meminfo``), and `group_size` keeps a safety margin and divides.
The estimate is deliberately on the generous side: the executor halves a group on an out-of-memory error
anyway (`is_out_of_memory`), so a low estimate costs a retry, never a run.

`check_fits` (one run of ``seek``), `check_host_fits` (``plant``) and the sweep refuse a run whose estimate
exceeds the free memory, before anything is allocated, with `RunTooLargeError` (a ValueError: the CLI prints
it on one line). ``PLANTSEEK_SKIP_MEMORY_CHECK=1`` in the environment turns the refusal off.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .spec import RunSpec
from .spec import defaults as spec_defaults

__all__ = [
    "Footprint", "run_footprint", "footprint_of", "free_memory", "group_size", "is_out_of_memory",
    "SAFETY_FRACTION", "RESERVE_BYTES", "RunTooLargeError", "check_fits", "check_host_fits",
    "memory_check_skipped", "SKIP_ENV",
]

SAFETY_FRACTION = 0.7  # of the free memory, the share a group may plan to use
RESERVE_BYTES = 256 * 2**20  # kept free besides (allocator slack, CUDA context, Python objects)
_DTYPE_BYTES = {"float32": 4, "float64": 8, "float": 4, "double": 8}
SKIP_ENV = "PLANTSEEK_SKIP_MEMORY_CHECK"  # set to 1 to run what the estimate says cannot fit


@dataclass(frozen=True)
class Footprint:
    """Bytes one run holds at its peak, by part (all on the run's device unless said otherwise)."""

    host: int  # planted weights on the device in the training dtype
    planting: int  # drawing and hiding the float64 host (CPU memory; counted on the CPU device only)
    scoring: int  # float64 copy, kept entries, order keys and masks while the pruner scores the dense host
    training: int  # stacked copies, parameters that train with gradients and optimiser state, the dense result
    activations: int  # forward/backward activations at the batch size, the test-split evaluation
    data: int  # train/test tensors and the per-epoch shuffled copy

    @property
    def total(self) -> int:
        # the phases follow each other: planting (before the device copy exists), scoring, training
        return max(self.planting, self.host + max(self.scoring, self.training)) + self.activations + self.data

    def as_dict(self) -> dict[str, int]:
        return {"host": self.host, "planting": self.planting, "scoring": self.scoring, "training": self.training,
                "activations": self.activations, "data": self.data, "total": self.total}


def _layer_sizes(input_dim: int, output_dim: int, depth: int, width: int | Sequence[int]) -> list[int]:
    widths = list(width) if isinstance(width, (list, tuple)) else [int(width)] * (depth - 1)
    return [int(input_dim)] + [int(w) for w in widths] + [int(output_dim)]


def _n_params(sizes: Sequence[int]) -> int:
    """Weights and biases of a host of layer sizes `sizes` (input, hidden..., output)."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def run_footprint(
    *,
    input_dim: int,
    output_dim: int,
    depth: int,
    width: int | Sequence[int],
    density: float | str = 1.0,
    protocol: str = "singleshot",
    batch_size: int = 32,
    n_samples: int = 10_000,
    dtype: str = "float32",
    device: str = "cpu",
    impl: str = "auto",
    dense_baseline: bool = False,
    crossover: float | None = None,
) -> Footprint:
    """The peak bytes of one run (see the module docstring for the parts). ``density="ticket"`` counts as
    0.1 (tickets are sparse, but no sweep should plan on their density being tiny)."""
    sizes = _layer_sizes(input_dim, output_dim, depth, width)
    n_w = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    n_b = sum(sizes[1:])
    n_p = n_w + n_b
    e = _DTYPE_BYTES.get(str(dtype).replace("torch.", ""), 4)
    d = 0.1 if isinstance(density, str) else float(density)
    d = min(1.0, max(0.0, d))
    if crossover is None:
        try:
            from .kernels.sparse_linear import crossover_density

            crossover = float(crossover_density(str(device)))
        except Exception:  # noqa: BLE001 - no native module: dense path
            crossover = 0.0
    # multishot trains near-dense in its first rounds; strong searches scores over the dense host
    train_density = 1.0 if protocol in ("multishot", "strong") else d
    sparse = impl == "sparse" or (impl == "auto" and train_density < crossover)
    on_cpu = str(device).startswith("cpu")

    # Calibrated on the CPU (circle, SynFlow with one iteration, float32; timeline of RSS by phase): width
    # 10 000, depth 4 (200M parameters) peaked at 3.65 GB while planting, 8.0 GB while scoring (native SynFlow:
    # float64 copy 8 B, kept entry 16 B, order key 8 B, two bool masks per parameter) and 3.25 GB while
    # training at density 1e-4, with 0.4 GB of interpreter and PyTorch under each; width 4 000, depth 5:
    # 2.1 GB peak.
    host = n_p * e
    planting = n_p * 16 if on_cpu else 0  # float64 host and a float64 temporary of the hiding statistics
    scoring = n_p * (8 + 16 + 8 + 1 + 1)
    if protocol == "strong":
        scoring += n_p * e * 4  # edge-popup: scores, their gradient and momentum, the straight-through mask
    kept = int(math.ceil(train_density * n_w))
    if sparse:
        # values, gradient, Adam's two moments; CSR + CSC structure (int64 positions, int32 indices)
        trainable = kept * (4 * e + 8 + 4 + 4 + 4 + 8)
    else:
        trainable = n_w * (4 * e + e)  # parameter, gradient, two moments, float mask
    # biases with their state; the stacked weights and masks; the bool masks; the trained weights scattered
    # back into a dense tensor for the metrics
    training = trainable + n_b * 5 * e + 2 * n_w * e + 2 * n_p
    if dense_baseline:
        training += n_p * 5 * e
    test_n = max(1, n_samples // 10)
    activations = 3 * batch_size * sum(sizes) * e + test_n * max(sizes) * e * 2
    data = 2 * n_samples * (sizes[0] + sizes[-1]) * e + n_samples * 8
    return Footprint(host=int(host), planting=int(planting), scoring=int(scoring), training=int(training),
                     activations=int(activations), data=int(data))


def _resolve(kwargs: Mapping[str, Any] | RunSpec, device: str | None) -> tuple[dict, Any, str]:
    """One run's full configuration (the spec's defaults filled in), its task and its device ("auto" resolved)."""
    from . import tasks as _tasks

    cfg = {**spec_defaults(), **(kwargs.flat() if isinstance(kwargs, RunSpec) else dict(kwargs))}
    dev = str(device or cfg.get("device") or "cpu")
    if dev == "auto":
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
    return cfg, _tasks.get(cfg["task"]), dev


def footprint_of(kwargs: Mapping[str, Any] | RunSpec, device: str | None = None) -> Footprint:
    """`run_footprint` for one run: a `plantseek.spec.RunSpec`, or its flat options (defaults filled in)."""
    return _footprint(*_resolve(kwargs, device))


def _footprint(cfg: Mapping[str, Any], task: Any, dev: str) -> Footprint:
    return run_footprint(
        input_dim=task.input_dim, output_dim=task.output_dim, depth=int(cfg["depth"]), width=cfg["width"],
        density=cfg["density"], protocol=cfg["protocol"], batch_size=int(cfg["batch_size"]),
        n_samples=int(cfg["n_samples"]), dtype=str(cfg["dtype"]), device=str(dev), impl=str(cfg["impl"]),
        dense_baseline=bool(cfg["dense_baseline"]),
    )


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def free_memory(device: Any = "cpu") -> int:
    """Bytes free now on `device`: ``torch.cuda.mem_get_info`` on CUDA (plus what PyTorch's allocator caches
    but does not use), the available RAM on the CPU (psutil, else /proc/meminfo; 4 GiB if neither answers)."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return int(free + max(0, cached))
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    avail = _meminfo_available()
    return int(avail) if avail is not None else 4 * 2**30


def group_size(per_run: int | Footprint, free: int, *, limit: int | None = None,
               safety: float = SAFETY_FRACTION, reserve: int = RESERVE_BYTES) -> int:
    """How many runs of `per_run` bytes fit in `free` bytes with a margin: at least 1, at most `limit`."""
    per = per_run.total if isinstance(per_run, Footprint) else int(per_run)
    usable = max(0.0, (free - reserve) * float(safety))
    n = int(usable // max(1, per))
    n = max(1, n)
    if limit is not None:
        n = min(n, int(limit))
    return n


_OOM_TEXT = ("out of memory", "cannot allocate memory", "std::bad_alloc", "defaultcpuallocator: can't allocate")


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether an exception (or the exception a run came back with) is an out-of-memory error: CUDA's
    ``torch.cuda.OutOfMemoryError``, a ``MemoryError``, or a RuntimeError saying so."""
    if exc is None:
        return False
    try:
        import torch

        oom_cls = getattr(torch.cuda, "OutOfMemoryError", None) or getattr(torch, "OutOfMemoryError", None)
        if oom_cls is not None and isinstance(exc, oom_cls):
            return True
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(t in text for t in _OOM_TEXT)
    return False


def release_cached(device: Any = None) -> None:
    """After an out-of-memory error: collect garbage and give PyTorch's cached CUDA blocks back."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def env_max_batch() -> int | None:
    """``PLANTSEEK_MAX_BATCH`` (an integer >= 1), if set."""
    v = os.environ.get("PLANTSEEK_MAX_BATCH", "").strip()
    return int(v) if v else None


# ---------------------------------------------------------------------------------------------------------
# refusing runs that cannot fit


class RunTooLargeError(ValueError):
    """A run whose estimated peak memory exceeds the free memory of its device, refused before allocating.

    A ValueError (not a MemoryError): it is a property of the configuration, so the sweep executors do not
    halve a batch over it and the CLI prints it on one line. ``estimate`` and ``free`` are in bytes."""

    def __init__(self, message: str, *, estimate: int = 0, free: int = 0, device: str = "cpu") -> None:
        super().__init__(message)
        self.estimate = int(estimate)
        self.free = int(free)
        self.device = str(device)


def memory_check_skipped() -> bool:
    """Whether ``PLANTSEEK_SKIP_MEMORY_CHECK`` is set (to anything but "", 0, false, no, off)."""
    return os.environ.get(SKIP_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def format_bytes(n: int | float) -> str:
    """``12 KiB``, ``512 MiB``, ``22.6 GiB``, ``2.9 TiB``."""
    n = float(n)
    if n >= 2**40:
        return f"{n / 2**40:.1f} TiB"
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB"


def _count(n: int) -> str:
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= f:
            return f"{n / f:.1f}{unit}"
    return str(n)


def _shape_text(sizes: Sequence[int]) -> str:
    """What dominates: the host's parameter count and its widest layer."""
    n_p = _n_params(sizes)
    hidden = list(sizes[1:-1])
    widths = f"width {hidden[0]}" if hidden and len(set(hidden)) == 1 else f"widths {hidden}"
    big = max(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return (f"the host (depth {len(sizes) - 1}, {widths}) has {_count(n_p)} parameters, {_count(big)} in its "
            f"largest layer: the memory grows with width squared times depth")


def _advice() -> str:
    return f"use a narrower or shallower host, or set {SKIP_ENV}=1 to run it anyway"


def _refuse(what: str, need: int, device: str, sizes: Sequence[int], part: str) -> None:
    free = free_memory(device)
    if need <= free:
        return
    raise RunTooLargeError(
        f"{what} cannot fit: it needs about {format_bytes(need)} on {device} at its peak (estimate; {part}), "
        f"but only {format_bytes(free)} is free there; {_shape_text(sizes)}; {_advice()}",
        estimate=need, free=free, device=device)


def check_params_fit(n_params: int, device: str, *, dtype: str = "float32", protocol: str = "singleshot",
                     what: str = "this run", shape: str = "") -> None:
    """A check for hosts that are not MLPs (the conv family): the peak of `run_footprint`'s per-parameter parts
    (planting in float64 on the CPU, scoring, training with Adam; edge-popup's state under strong) for a host of
    `n_params` parameters must fit the free memory of `device`. Activations and data are not counted."""
    if memory_check_skipped():
        return
    e = _DTYPE_BYTES.get(str(dtype).replace("torch.", ""), 4)
    scoring = n_params * (8 + 16 + 8 + 1 + 1) + (n_params * e * 4 if protocol == "strong" else 0)
    peak = max(n_params * 16 if str(device).startswith("cpu") else 0, n_params * e + max(scoring, n_params * 5 * e))
    free = free_memory(device)
    if peak > free:
        raise RunTooLargeError(
            f"{what} cannot fit: it needs about {format_bytes(peak)} on {device} at its peak (estimate from its "
            f"{_count(n_params)} parameters{'; ' + shape if shape else ''}), but only {format_bytes(free)} is free "
            f"there; {_advice()}", estimate=peak, free=free, device=str(device))


def host_bytes(sizes: Sequence[int]) -> int:
    """The CPU bytes of drawing and hiding a host of layer sizes `sizes` (input, hidden..., output): the
    float64 weights and a float64 temporary of the hiding statistics, and the bool masks."""
    return _n_params(sizes) * (16 + 1)


def check_host_fits(sizes: Sequence[int], device: Any = "cpu", *, what: str = "plant") -> None:
    """``plant``'s check: the float64 host drawn on the CPU (and its float64 copy on `device` when that is
    not the CPU) must fit the free memory; raises `RunTooLargeError` before anything is allocated."""
    if memory_check_skipped():
        return
    sizes = [int(s) for s in sizes]
    _refuse(what, host_bytes(sizes), "cpu", sizes, "drawing the float64 host on the CPU")
    dev = str(device)
    if not dev.startswith("cpu"):
        _refuse(what, _n_params(sizes) * 8, dev, sizes, "the float64 host on the device")


def check_fits(kwargs: Mapping[str, Any], device: str | None = None, *, what: str = "this run") -> None:
    """One ``seek`` run's check, before planting: the device-side peak (`footprint_of`) must fit the free
    memory of the run's device and, on another device, the CPU-side planting (the float64 host) the free
    RAM. Raises `RunTooLargeError` naming the estimate, the free memory, the host shape and the override
    (``PLANTSEEK_SKIP_MEMORY_CHECK=1``)."""
    if memory_check_skipped():
        return
    cfg, task, dev = _resolve(kwargs, device)
    fp = _footprint(cfg, task, dev)
    sizes = _layer_sizes(task.input_dim, task.output_dim, int(cfg["depth"]), cfg["width"])
    parts = {k: v for k, v in fp.as_dict().items() if k != "total"}
    top = max(parts, key=parts.get)
    _refuse(what, fp.total, dev, sizes, f"largest part: {top}, {format_bytes(parts[top])}")
    if not dev.startswith("cpu"):
        _refuse(what, host_bytes(sizes), "cpu", sizes, "planting: the float64 host drawn on the CPU")
