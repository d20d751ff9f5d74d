"""Pruners compute on the network's device and dtype: nothing is created on another device or in another dtype."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from plantseek import pruners

from pruner_helpers import planted, task_data

ALL = ["random", "magnitude", "snip", "grasp", "synflow", "ticket"]


class Created(TorchDispatchMode):
    """Records (op, device, dtype) of every tensor an op returns (views of existing tensors excepted)."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "is_view", False):
            return out
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.outputs.append((str(func), t.device, t.dtype))
        return out


def _run(name, device, dtype, generator):
    net = planted("circle", 20, 3).to(device, dtype)
    data = task_data("circle")  # float64 CPU data: the pruner moves what it uses
    opts = {"iterations": 3} if name == "synflow" else {}
    with Created() as rec:
        m = pruners.get(name, **opts).prune(net, data, 0.1, generator=generator)
    assert all(a.device == net.device and b.device == net.device for a, b in m)
    return net, rec.outputs


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_dtype_is_respected(name, dtype):
    net, outputs = _run(name, "cpu", dtype, torch.Generator().manual_seed(0))
    floats = {(op, dt) for op, _, dt in outputs if dt.is_floating_point}
    # SynFlow scores in float64 by design (plantseek.kernels: the product of layer norms must stay finite)
    allowed = {dtype, torch.float64} if name == "synflow" else {dtype}
    other = {(op, dt) for op, dt in floats if dt not in allowed}
    assert not other, f"{name} created tensors in another dtype: {sorted(other, key=str)[:5]}"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("gen_device", ["cuda", "cpu", None])
def test_cuda_everything_on_the_device(name, gen_device):
    gen = None if gen_device is None else torch.Generator(device=gen_device).manual_seed(0)
    net, outputs = _run(name, "cuda", torch.float32, gen)
    # the only CPU tensor allowed: the one-element seed drawn from a CPU generator
    cpu = [(op, dt) for op, dev, dt in outputs if dev.type != "cuda"]
    allowed = {"aten.randint.low_generator"} if gen_device == "cpu" else set()
    bad = [o for o in cpu if o[0] not in allowed]
    assert not bad, f"{name} created CPU tensors: {bad[:8]}"
    floats = {dt for op, dev, dt in outputs if dt.is_floating_point and dev.type == "cuda"}
    assert floats <= ({torch.float32, torch.float64} if name == "synflow" else {torch.float32})
