"""Training steps of M sparse MLPs network by network on the native CPU kernels (`NativeStack`), and the
PyTorch reference they must agree with (`ReferenceStack`).

Both train stacked networks whose layers keep only their masked weights, with ReLU between layers: `forward(x)`
returns the outputs (M, B, out), the caller differentiates its loss with respect to them, and
`backward_step(grad_out, lr)` computes every parameter's gradient and applies the optimiser (Adam, or SGD with
momentum and weight decay, as `plantseek.train.TrainConfig` says). The native stack runs each network's
whole forward pass, and later its whole backward pass with the optimiser fused in, while that network's
activations stay in the core's caches (see csrc/sparse_stack.h for why that matters for sweeps).
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import native
from . import nn as pnn
from .losses import per_network_loss  # the trainer's loss: the reference of the native one

Tensor = torch.Tensor


def available(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether `NativeStack` serves parameters of this device and dtype (CPU, float32/float64, native module on)."""
    ext = native.cpu_module()
    return (torch.device(device).type == "cpu" and dtype in (torch.float32, torch.float64) and ext is not None
            and hasattr(ext, "SparseStack"))


class NativeStack:
    """M sparse MLPs trained on `plantseek._C.SparseStack`; `vals[l]` (nnz,) and `biases[l]` (M, out) are updated
    in place (CPU tensors, contiguous, one float dtype), `bias_masks[l]` is None or a bool (M, out) mask."""

    def __init__(self, structures: Sequence[pnn.CsrStructure], vals: Sequence[Tensor], biases: Sequence[Tensor],
                 bias_masks: Sequence[Tensor | None], cfg) -> None:
        if not available("cpu", vals[0].dtype):
            raise RuntimeError(f"the native CPU module with SparseStack does not serve {vals[0].dtype} here "
                               "(see `plantseek info`)")
        for name, ts in (("vals", vals), ("biases", biases)):
            for l, t in enumerate(ts):
                if t.device.type != "cpu" or not t.is_contiguous():
                    raise ValueError(f"{name}[{l}] must be a contiguous CPU tensor")
        self.vals, self.biases = list(vals), list(biases)
        self._masks = [None if m is None else m.to(vals[0].dtype).contiguous() for m in bias_masks]
        self._stack = native.cpu_module().SparseStack(
            [pnn.native_pattern(s) for s in structures], [v.detach().numpy() for v in vals],
            [b.detach().numpy() for b in biases], [None if m is None else m.numpy() for m in self._masks],
            optimizer=cfg.optimizer, beta1=cfg.betas[0], beta2=cfg.betas[1], eps=cfg.eps,
            weight_decay=cfg.weight_decay, momentum=cfg.momentum)

    def forward(self, x: Tensor) -> Tensor:
        """Outputs (M, B, out) for inputs (M, B, in); the activations are kept for `backward_step`."""
        return torch.from_numpy(self._stack.forward(x.detach().contiguous().numpy(), torch.get_num_threads()))

    def backward_step(self, grad_out: Tensor, lr: float) -> None:
        """Gradients for `grad_out` at the last forward's outputs and one optimiser step, in place."""
        self._stack.backward_step(grad_out.detach().contiguous().numpy(), float(lr), torch.get_num_threads())

    def train_step(self, x: Tensor, y: Tensor, kind: str, lr: float, alive: Tensor | None = None) -> Tensor:
        """One whole step in a single pass over each network: forward, the built-in loss of `kind`
        ("classification": cross-entropy against int64 labels (M, B); else mean squared error against (M, B, out)
        targets), backward and optimiser. Returns each network's mean loss (M,); networks whose `alive` entry
        is False get no gradient (their loss is still returned)."""
        if kind == "classification" and y.dtype != torch.int64:
            raise ValueError(f"classification targets must be int64 labels, got {y.dtype}")
        targets = y.detach().to(x.dtype) if kind != "classification" else y.detach()
        live = None if alive is None else alive.detach().to(torch.bool).contiguous().numpy()
        return torch.from_numpy(self._stack.train_step(x.detach().contiguous().numpy(), targets.contiguous().numpy(),
                                                        live, float(lr), torch.get_num_threads()))

    @property
    def steps(self) -> int:
        return self._stack.steps


class ReferenceStack:
    """The same steps on dense masked (M, out, in) weights with torch autograd and `torch.optim.Adam` / `SGD`:
    pruned weights start at zero and their gradients are masked, so they stay zero."""

    def __init__(self, weights: Sequence[Tensor], biases: Sequence[Tensor],
                 masks: Sequence[tuple[Tensor, Tensor]], cfg) -> None:
        self.masks = [(wm.to(weights[0].dtype), bm.to(weights[0].dtype)) for wm, bm in masks]
        self.weights = [(w * wm).detach().clone().requires_grad_(True) for w, (wm, _) in zip(weights, self.masks)]
        self.biases = [(b * bm).detach().clone().requires_grad_(True) for b, (_, bm) in zip(biases, self.masks)]
        params = [p for pair in zip(self.weights, self.biases) for p in pair]
        if cfg.optimizer == "adam":
            self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                        weight_decay=cfg.weight_decay, foreach=False)
        else:
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                       foreach=False)
        self._out: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if l < len(self.weights) - 1:
                h = torch.relu(h)
        self._out = h
        return h.detach()

    def backward_step(self, grad_out: Tensor, lr: float) -> None:
        self.opt.zero_grad(set_to_none=True)
        self._out.backward(grad_out)
        with torch.no_grad():
            for (wm, bm), w, b in zip(self.masks, self.weights, self.biases):
                w.grad.mul_(wm)
                b.grad.mul_(bm)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        self._out = None

    def train_step(self, x: Tensor, y: Tensor, kind: str, lr: float, alive: Tensor | None = None) -> Tensor:
        self.forward(x)
        losses = per_network_loss(self._out, y, kind)
        live = losses if alive is None else torch.where(alive, losses, torch.zeros_like(losses))
        (grad,) = torch.autograd.grad(live.sum(), self._out, retain_graph=True)
        self.backward_step(grad, lr)
        return losses.detach()

    def kept_values(self, structures: Sequence[pnn.CsrStructure]) -> list[Tensor]:
        """Each layer's kept weights in the CSR order of `structures` (to compare with `NativeStack.vals`)."""
        return [w.detach().reshape(-1)[s.pos] for w, s in zip(self.weights, structures)]
