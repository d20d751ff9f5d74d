"""Fixtures of the kernel tests (one file per concept of plantseek.kernels: test_<concept>.py).

`backend` runs a test once per backend in ("reference", "cpu", "cuda"); "cuda" is skipped without a GPU or
without plantseek._C_cuda, "cpu" without the native core (and so under PLANTSEEK_NATIVE=0, which forces the
reference everywhere). A test module whose concept cannot run a backend names it in ``NO_BACKEND`` with the
reason (e.g. the native training stack has no reference backend: ReferenceStack is what it is compared with).
"""
import pytest
import torch

from plantseek import native

from kernel_helpers import BACKENDS, Backend


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch) -> Backend:
    name = request.param
    reason = getattr(request.module, "NO_BACKEND", {}).get(name)
    if reason:
        pytest.skip(reason)
    if name == "reference":
        monkeypatch.setenv("PLANTSEEK_NATIVE", "0")
    elif name == "cpu" and native.cpu_module() is None:
        pytest.skip("the native core plantseek._C is not built, or PLANTSEEK_NATIVE=0")
    elif name == "cuda" and not (torch.cuda.is_available() and native.cuda_module() is not None):
        pytest.skip("no CUDA device, or plantseek._C_cuda not built (or PLANTSEEK_NATIVE=0)")
    return Backend(name)
