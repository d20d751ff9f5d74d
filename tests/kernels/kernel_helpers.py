"""Helpers of the kernel tests: the backends every dispatcher is compared on (the `backend` fixture of
conftest.py), as pytorch_scatter's tests run over devices."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck

# the fixture sets PLANTSEEK_NATIVE once per test, for all its examples
FIXTURE_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]

# "reference": PLANTSEEK_NATIVE=0, so every dispatcher takes its PyTorch reference; "cpu": the native core
# (plantseek._C) on CPU tensors; "cuda": CUDA tensors (plantseek._C_cuda where the concept has CUDA kernels,
# the references on the device where it has none), run only where a GPU exists (`pytest -m cuda`).
BACKENDS = ["reference", "cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


class Backend:
    """Where a test's inputs live and which kernels the dispatchers pick."""

    def __init__(self, name: str):
        self.name = name
        self.device = torch.device("cuda" if name == "cuda" else "cpu")

    def to(self, obj):
        """`obj` (tensors, and lists or tuples of them, nested) on this backend's device."""
        return moved(obj, self.device)

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


def moved(obj, device):
    """`obj` with every tensor in it (through lists and tuples) on `device`; other values as they are."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(moved(o, device) for o in obj)
    return obj


def cpu(obj):
    """`obj` with every tensor in it on the CPU (to compare a backend's result with a reference's)."""
    return moved(obj, torch.device("cpu"))
