"""Sparse stack: training steps of M sparse MLPs network by network on the native CPU kernels (`NativeStack`),
and the PyTorch reference they must agree with (`ReferenceStack`).

Both train stacked networks whose layers keep only their masked weights, with ReLU between layers: `forward(x)`
returns the outputs (M, B, out), the caller differentiates its loss with respect to them, and
`backward_step(grad_out, lr)` computes every parameter's gradient and applies the optimiser (Adam, or SGD with
momentum and weight decay, as `plantseek.train.TrainConfig` says). The native stack runs each network's
whole forward pass, and later its whole backward pass with the optimiser fused in, while that network's
activations stay in the core's caches (see csrc/sparse_stack.h for why that matters for sweeps).

Backends: the native stack serves CPU float32/float64 parameters (`available`); elsewhere the trainer takes the
layer-by-layer path of `plantseek.kernels.sparse_linear`. Arguments are checked once, when a stack is built
(ArgumentError naming the argument); each step's tensors are checked by the core's own cheap checks only, so a
step costs no more Python than before (the step is the trainer's inner loop).

C++: csrc/sparse_stack.{h,cpp}, csrc/bindings/sparse_stack.cpp. Tests: tests/kernels/test_sparse_stack.py.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import native
from ..losses import per_network_loss  # the trainer's loss: the reference of the native one
from .checks import ArgumentError, check_int, check_list, check_real, check_tensor, fail
from .sparse_linear import CsrStructure, native_pattern

# dispatcher -> its reference (tests/kernels/test_layout.py checks every concept module has such pairs)
KERNELS = {"NativeStack": "ReferenceStack"}

Tensor = torch.Tensor


def available(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether `NativeStack` serves parameters of this device and dtype (CPU, float32/float64, native module on)."""
    ext = native.cpu_module()
    return (torch.device(device).type == "cpu" and dtype in (torch.float32, torch.float64) and ext is not None
            and hasattr(ext, "SparseStack"))


class NativeStack:
    """M sparse MLPs trained on `plantseek._C.SparseStack`; `vals[l]` (nnz,) and `biases[l]` (M, out) are updated
    in place (CPU tensors, contiguous, one float dtype), `bias_masks[l]` is None or a bool (M, out) mask."""

    def __init__(self, structures: Sequence[CsrStructure], vals: Sequence[Tensor], biases: Sequence[Tensor],
                 bias_masks: Sequence[Tensor | None], cfg, *, checked: bool = False) -> None:
        """``checked=True``: the caller built the arguments itself (the trainer's blocks, from masks it has
        checked), so the per-argument checks are skipped; the native constructor still checks shapes."""
        if not checked:
            structures, vals, biases, bias_masks = _check_stack(structures, vals, biases, bias_masks, cfg)
        if not available("cpu", vals[0].dtype):
            raise RuntimeError(f"the native CPU module with SparseStack does not serve {vals[0].dtype} here "
                               "(see `plantseek info`)")
        self.vals, self.biases = vals, biases
        self._masks = [None if m is None else m.to(vals[0].dtype).contiguous() for m in bias_masks]
        self._stack = native.cpu_module().SparseStack(
            [native_pattern(s) for s in structures], [v.detach().numpy() for v in vals],
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

    def train_step_arrays(self, x, targets, alive, lr: float, threads: int):
        """`train_step` on NumPy arrays the caller has prepared: x (M, B, in) and targets (int64 labels (M, B),
        or (M, B, out) values) contiguous in the stack's dtype, alive a bool (M,) array or None; returns the
        losses (M,) as an array. The trainer's inner loop (`plantseek.train`): it lays an epoch's batches out
        once so that a step costs no tensor operations in Python. The core checks shapes and dtypes."""
        return self._stack.train_step(x, targets, alive, lr, threads)

    def dense_gradients(self, x: Tensor, y: Tensor, kind: str, alive: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Per layer (grad_w (M, out, in), grad_b (M, out)): the gradient of the built-in loss of `kind` (as in
        `train_step`) on the batch at every position, pruned ones included (RigL's grow criterion); networks
        whose `alive` entry is False get zeros. No optimiser step: parameters and state are unchanged."""
        if kind == "classification" and y.dtype != torch.int64:
            raise ValueError(f"classification targets must be int64 labels, got {y.dtype}")
        targets = y.detach().to(x.dtype) if kind != "classification" else y.detach()
        live = None if alive is None else alive.detach().to(torch.bool).contiguous().numpy()
        out = self._stack.dense_gradients(x.detach().contiguous().numpy(), targets.contiguous().numpy(), live,
                                          torch.get_num_threads())
        return [(torch.from_numpy(gw), torch.from_numpy(gb)) for gw, gb in out]

    @property
    def steps(self) -> int:
        return self._stack.steps

    def state(self, layer: int, which: int) -> Tensor:
        """A copy of layer `layer`'s optimiser state `which`: 0 the first moment (Adam) or momentum buffer (SGD) of
        the kept values (nnz,), 1 their second moment (empty for SGD), 2 and 3 the same for the biases (M * out,)."""
        layer, which = self._state_index(layer, which)
        return torch.from_numpy(self._stack.state(layer, which))

    def set_state(self, layer: int, which: int, value: Tensor) -> None:
        """Overwrite an optimiser state array (`which` as in `state`) with `value`: a contiguous 1-D CPU tensor of
        the stack's dtype and the state's length (e.g. another stack's `state(layer, which)`)."""
        layer, which = self._state_index(layer, which)
        n = self._stack.state(layer, which).shape[0]
        name = f"state[{layer}][{which}]"
        t = check_tensor(name, value, shape=(n,), device="cpu", dtype=self.vals[0].dtype)
        if not t.is_contiguous():
            raise fail(name, "be contiguous", t)
        self._stack.set_state(layer, which, t.detach().numpy())

    def set_steps(self, steps: int) -> None:
        """Set the step count, so that training continues as if this stack had trained `steps` steps (Adam's bias
        corrections; SGD's first step, which copies the gradient into the momentum buffer, only after 0)."""
        self._stack.set_steps(check_int("steps", steps, 0))

    def adopt_state(self, old: "NativeStack", old_structures: Sequence[CsrStructure],
                    structures: Sequence[CsrStructure]) -> None:
        """Take over `old`'s optimiser state and step count after a mask change: the same networks and layer
        shapes, `old_structures` its structures and `structures` this stack's. A weight kept by both keeps its
        state, a new one starts at zero, and bias state is zeroed where this stack's bias masks prune (as
        masking the dense state would do, in one native pass)."""
        if not isinstance(old, NativeStack):
            raise fail("old", "be a NativeStack", old)
        for name, seq in (("old_structures", old_structures), ("structures", structures)):
            seq = check_list(name, seq, "CsrStructure, one per layer")
            if len(seq) != len(self.vals) or not all(isinstance(st, CsrStructure) for st in seq):
                raise ArgumentError(f"{name} must hold one CsrStructure per layer ({len(self.vals)})")
        self._stack.adopt_state(old._stack, [st.pos.numpy() for st in old_structures],
                                [st.pos.numpy() for st in structures])

    def _state_index(self, layer, which) -> tuple[int, int]:
        return check_int("layer", layer, 0, len(self.vals) - 1), check_int("which", which, 0, 3)


def _check_stack(structures, vals, biases, bias_masks, cfg):
    """Validated (structures, vals, biases, bias_masks) of a `NativeStack`: chained CSR structures of one M, and
    per layer contiguous CPU tensors of one float dtype (vals (nnz,), biases (M, out), bias masks bool (M, out)
    or None); the optimiser settings of `cfg` in range."""
    structures = check_list("structures", structures, "CsrStructure (mask_structure(mask)), one per layer")
    L = len(structures)
    for l, s in enumerate(structures):
        if not isinstance(s, CsrStructure):
            raise fail(f"structures[{l}]", "be a CsrStructure (mask_structure(mask))", s)
        if s.M != structures[0].M:
            raise ArgumentError(f"structures[{l}] holds {s.M} networks, structures[0] holds {structures[0].M}")
        if l and s.n_in != structures[l - 1].n_out:
            raise ArgumentError(f"structures[{l}] takes {s.n_in} inputs, but structures[{l - 1}] has "
                                f"{structures[l - 1].n_out} outputs")
    M = structures[0].M
    lists = {}
    for name, seq in (("vals", vals), ("biases", biases), ("bias_masks", bias_masks)):
        lists[name] = check_list(name, seq, "tensors, one per layer", min_len=0)
        if len(lists[name]) != L:
            raise ArgumentError(f"{name} must hold one entry per layer ({L}), got {len(lists[name])}")
    v0 = check_tensor("vals[0]", lists["vals"][0], device="cpu")
    if v0.dtype not in (torch.float32, torch.float64):
        raise fail("vals[0]", "be a float32 or float64 tensor", v0)
    for l, s in enumerate(structures):
        for name, shape in (("vals", (s.nnz,)), ("biases", (M, s.n_out))):
            t = check_tensor(f"{name}[{l}]", lists[name][l], shape=shape, device="cpu", dtype=v0.dtype)
            if not t.is_contiguous():
                raise fail(f"{name}[{l}]", "be contiguous (it is updated in place)", t)
        if lists["bias_masks"][l] is not None:
            check_tensor(f"bias_masks[{l}]", lists["bias_masks"][l], "bool", shape=(M, s.n_out), device="cpu")
    if getattr(cfg, "optimizer", None) not in ("adam", "sgd"):
        raise fail("cfg.optimizer", "be 'adam' or 'sgd'", getattr(cfg, "optimizer", None))
    for i, beta in enumerate(cfg.betas):
        if check_real(f"cfg.betas[{i}]", beta, 0, 1) >= 1:
            raise ArgumentError(f"cfg.betas[{i}] = {beta!r} must be below 1")
    for name in ("eps", "weight_decay", "momentum"):
        check_real(f"cfg.{name}", getattr(cfg, name), 0)
    return structures, lists["vals"], lists["biases"], lists["bias_masks"]


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

    def dense_gradients(self, x: Tensor, y: Tensor, kind: str, alive: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """`NativeStack.dense_gradients` by autograd over the dense masked weights (no step)."""
        W = [w.detach().clone().requires_grad_(True) for w in self.weights]
        B = [b.detach().clone().requires_grad_(True) for b in self.biases]
        h = x
        for l, (w, b) in enumerate(zip(W, B)):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if l < len(W) - 1:
                h = torch.relu(h)
        losses = per_network_loss(h, y, kind)
        live = losses if alive is None else torch.where(alive, losses, torch.zeros_like(losses))
        grads = torch.autograd.grad(live.sum(), W + B)
        return [(grads[l], grads[len(W) + l]) for l in range(len(W))]

    def kept_values(self, structures: Sequence[CsrStructure]) -> list[Tensor]:
        """Each layer's kept weights in the CSR order of `structures` (to compare with `NativeStack.vals`)."""
        return [w.detach().reshape(-1)[s.pos] for w, s in zip(self.weights, structures)]
