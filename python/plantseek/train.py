"""Training of M masked MLPs of one shape together, as one batched computation.

Every network of a batch has the same layer shapes but its own weights, mask, data and shuffling generator:
weights are stacked as ``(M, out, in)``, biases as ``(M, out)``, inputs as ``(M, N, in)``. The loss that is
differentiated is the sum of the M per-network mean losses, so each network receives exactly the gradient of
its own loss, and the optimisers (Adam, SGD with momentum and weight decay) are elementwise: training M
networks together gives what training each alone gives (float64: equal to ~1e-12), and ``M = 1`` is the
single run.

Masks: pruned weights and biases are set to zero before training and their gradients are masked after every
backward pass, so they stay exactly zero (Adam's moments stay zero there; SGD's weight decay of a zero is
zero). The forward pass then needs no mask multiplication on the dense path. A stack whose kept fraction is
below ``plantseek.nn.crossover_density()`` trains on its kept values only, through the native feature-major
kernels (`plantseek.nn.sparse_linear_fm`), when the native module serves the device (`layer_impls`); networks
with nothing pruned (dense baselines) train in a block of their own in the same loop (`_Block`). Adam is torch's
fused kernel (`AdamState`). Python's cyclic garbage collector is paused during the loop.

The loop runs over pre-shuffled, pre-batched tensors (one ``randperm`` per run and epoch from the run's own
generator, one gather, then slices); no Dataset indexing. A non-finite loss in some epoch marks that run as
failed with a `TrainingDiverged` error naming the epoch; the other runs of the batch carry on.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch.optim.adam import adam as _functional_adam

from . import stack as native_stack
from .losses import per_network_loss

Tensor = torch.Tensor
LayerMasks = list[tuple[Tensor, Tensor]]  # per layer: (M, out, in) bool, (M, out) bool


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite; `epoch` (1-based) says when."""

    def __init__(self, message: str, epoch: int, run: int | None = None):
        super().__init__(message)
        self.epoch = epoch
        self.run = run


@dataclass
class TrainConfig:
    """Optimiser and loop settings (the paper's weak-ticket defaults: Adam, lr 1e-3, batch 32, 10 epochs)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"  # "adam" or "sgd"
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "constant"  # or "cosine" (per epoch, as torch's CosineAnnealingLR with T_max = epochs)
    impl: str = "auto"  # "auto" (sparse native path below the crossover when available), "dense", "sparse"

    def __post_init__(self) -> None:
        if int(self.epochs) < 0:
            raise ValueError(f"epochs must be >= 0 (got {self.epochs})")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1 (got {self.batch_size})")
        if not (math.isfinite(float(self.lr)) and float(self.lr) > 0):
            raise ValueError(f"lr must be a positive number (got {self.lr})")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; available: adam, sgd")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown schedule {self.schedule!r}; available: constant, cosine")
        if self.impl not in ("auto", "dense", "sparse"):
            raise ValueError(f"unknown impl {self.impl!r}; available: auto, dense, sparse")
        self.epochs, self.batch_size, self.lr = int(self.epochs), int(self.batch_size), float(self.lr)


@dataclass
class TrainResult:
    """Trained stacked parameters (zero where pruned) and, per run, None or the error that stopped it."""

    weights: list[Tensor]
    biases: list[Tensor]
    failed: list[Exception | None]
    train_loss: list[float]  # last completed epoch's mean loss per run (nan if none)
    time_s: float = 0.0
    history: list[list[float]] = field(default_factory=list)  # per epoch, per run mean training loss


# ------------------------------------------------------------------------------------------------ stacking

def stack_params(nets: Sequence[tuple[Sequence[Tensor], Sequence[Tensor]]]) -> tuple[list[Tensor], list[Tensor]]:
    """[(weights, biases) per network] -> (per layer (M, out, in), per layer (M, out))."""
    if not nets:
        raise ValueError("stack_params needs at least one network")
    depth = len(nets[0][0])
    for k, (ws, bs) in enumerate(nets):
        if len(ws) != depth or len(bs) != depth:
            raise ValueError(f"network {k} has {len(ws)} layers, network 0 has {depth}")
    weights = [torch.stack([n[0][l] for n in nets]) for l in range(depth)]
    biases = [torch.stack([n[1][l] for n in nets]) for l in range(depth)]
    return weights, biases


def stack_masks(masks: Sequence[Sequence[tuple[Tensor, Tensor]]]) -> LayerMasks:
    """[mask per network] -> per layer ((M, out, in), (M, out)) bool."""
    if not masks:
        raise ValueError("stack_masks needs at least one mask")
    depth = len(masks[0])
    for k, m in enumerate(masks):
        if len(m) != depth:
            raise ValueError(f"mask {k} has {len(m)} layers, mask 0 has {depth}")
    return [(torch.stack([m[l][0] for m in masks]), torch.stack([m[l][1] for m in masks])) for l in range(depth)]


def unstack(weights: Sequence[Tensor], biases: Sequence[Tensor], k: int) -> tuple[list[Tensor], list[Tensor]]:
    """Network k's own (weights, biases) from stacked parameters."""
    return [w[k] for w in weights], [b[k] for b in biases]


def check_stacked(weights: Sequence[Tensor], biases: Sequence[Tensor], masks: LayerMasks | None) -> int:
    """Validate stacked shapes (and masks) and return M."""
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(f"need one bias per weight and at least one layer (got {len(weights)} and {len(biases)})")
    M = weights[0].shape[0]
    for l, (w, b) in enumerate(zip(weights, biases)):
        if w.dim() != 3 or b.dim() != 2 or w.shape[0] != M or b.shape != (M, w.shape[1]):
            raise ValueError(f"layer {l}: stacked weight {tuple(w.shape)} / bias {tuple(b.shape)} are not (M, out, in) / (M, out)")
        if l > 0 and w.shape[2] != weights[l - 1].shape[1]:
            raise ValueError(f"layer {l} takes {w.shape[2]} inputs but layer {l - 1} has {weights[l - 1].shape[1]} outputs")
    if masks is not None:
        if len(masks) != len(weights):
            raise ValueError(f"masks have {len(masks)} layers, the networks have {len(weights)}")
        for l, ((wm, bm), w, b) in enumerate(zip(masks, weights, biases)):
            if wm.shape != w.shape or bm.shape != b.shape:
                raise ValueError(
                    f"mask layer {l}: shapes {tuple(wm.shape)}/{tuple(bm.shape)} do not match the parameters' "
                    f"{tuple(w.shape)}/{tuple(b.shape)}"
                )
            if wm.dtype != torch.bool or bm.dtype != torch.bool:
                raise ValueError(f"mask layer {l}: masks must be bool tensors, got {wm.dtype}/{bm.dtype}")
    return M


# ------------------------------------------------------------------------------------------------ threads

# Per-step work (multiply-adds) below which a CPU loop runs on one thread: for the paper's small networks the
# OpenMP start-up of every tiny op costs more than the op, and on a machine whose cores are shared it is
# catastrophic (measured here, 2 busy cores: one epoch of 16 width-100 networks 1.5 s on 1 thread, 32 s on 2).
# Not for a training that runs only the fused native step on several networks (`parallel_networks`): it runs
# the networks in parallel, one per thread, in one parallel region per step with a dynamic schedule. Measured on
# bench/bench_sweep.py's 68 networks (ms per step, 1 thread / 2 threads): idle 5.0 / 2.7, one busy process
# beside it 5.1 / 6.0, two busy processes 7.7 / 8.0.
SMALL_WORK = 5e7


@contextlib.contextmanager
def cpu_threads_for(work: float, device: torch.device | str = "cpu", parallel_networks: bool = False):
    """Run the block on one CPU thread when `work` (multiply-adds per step) is small, unless
    `parallel_networks`; `PLANTSEEK_TRAIN_THREADS` (a number) forces a thread count. Restores the previous
    setting afterwards. No effect off the CPU."""
    env = os.environ.get("PLANTSEEK_TRAIN_THREADS", "").strip()
    if env:
        n = int(env)
    elif torch.device(device).type == "cpu" and work < SMALL_WORK and not parallel_networks:
        n = 1
    else:
        n = 0
    if n <= 0 or n == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------------ forward

def _native_nn():
    try:
        from . import nn as pnn  # the native colleague's module; optional
    except ImportError:
        return None
    return pnn if hasattr(pnn, "masked_linear") else None


def _native_serves(device: torch.device) -> bool:
    """Whether a compiled native module serves tensors on `device` (and PLANTSEEK_NATIVE is not 0)."""
    try:
        from . import native
        return native.module_for(device) is not None
    except Exception:  # noqa: BLE001
        return False


def _crossover(pnn, device: torch.device | str = "cpu") -> float:
    """The measured crossover of `device`'s type (CUDA has its own, `plantseek.nn.crossover_density`)."""
    try:
        try:
            return float(pnn.crossover_density(device))
        except TypeError:  # an nn module whose crossover takes no device
            return float(pnn.crossover_density())
    except Exception:  # not measured / not available: never switch automatically
        return 0.0


# Below this many weights, summed over every layer of the M networks trained together, the dense batched
# matmuls beat the layer-by-layer sparse path (autograd; CUDA, or CPU without the native stack) whatever the
# density. Measured here (one thread, float64, batch 32, ms per step, dense vs sparse): one network of width
# 50 / 70 / 100 with 3, 3 and 2 hidden layers (5k to 10k weights) at density 0.05: 0.50/0.57, 0.53/0.56,
# 0.49/0.52; width 100 with 4 hidden layers (30k weights) at density 0.01 and 0.2: 0.73/0.62 and 0.75/0.68.
SPARSE_MIN_STACK_SIZE = 20_000

# Where a CPU stack trains on the native network-major step (`plantseek.stack`): below this kept fraction
# whatever its size, and at any kept fraction for networks of at most `STACK_SMALL_NETWORK` weights. Measured
# here (one network, one thread, float64, batch 32, ms per step, dense path vs native stack): 5.3k weights
# (width 50, 3 hidden) at density 0.05 / 0.6: 0.67/0.30 and 0.65/0.31; 30.6k (width 100, 4 hidden) at 0.05 /
# 0.6 / 1.0: 0.69/0.22, 0.69/0.35, 0.65/0.46 (four such networks at 1.0: 1.69/1.26); 81k (width 200, 3 hidden)
# at 0.8 / 1.0: 1.03/1.02, 1.05/1.30; 322k (width 400, 3 hidden) at 0.2 / 0.6 / 0.8 / 1.0: 3.7/0.93, 3.7/2.7,
# 4.0/3.8, 3.7/4.8; 1M (width 1000, 2 hidden) at 0.1 / 0.25 / 0.4 / 0.6: 11.8/1.4, 9.4/4.3, 12.1/7.1, 11.7/10.2.
# The stack wins up to 0.6 to 0.8 from width 200 on, and at every density for the paper's width-100 networks.
STACK_CROSSOVER_DENSITY = 0.5
STACK_SMALL_NETWORK = 50_000


def layer_impls(masks: LayerMasks | None, impl: str = "auto", dtype: torch.dtype = torch.float32) -> list[str]:
    """Per layer "dense" or "sparse" for the given stacked masks and the requested implementation.

    "auto" takes the sparse path for every layer when the kept fraction of all weights of the stack is below
    `STACK_CROSSOVER_DENSITY`, or each network has at most `STACK_SMALL_NETWORK` weights, where the native
    stack serves the masks' device and `dtype` (`plantseek.stack.available`); elsewhere when the kept fraction
    is below `plantseek.nn.crossover_density()` and the stack holds at least `SPARSE_MIN_STACK_SIZE` weights.
    One decision for the whole stack, not one per layer: a chain of sparse layers stays feature-major, and a
    dense layer inside it costs two transposes and a separate ReLU of its whole output. (Measured on
    bench/bench_sweep.py's stack: the 2-input first layer keeps 43% of its 200 weights, and deciding it alone
    put it on the dense path at a cost of about 1 ms per step for a layer of 5.5k kept weights.)
    """
    if not masks:
        return []
    kept = sum(float(wm.sum()) for wm, _ in masks)
    total = sum(wm.numel() for wm, _ in masks)
    return _stack_impls(len(masks), masks[0][0].shape[0], kept, total, masks[0][0].device, impl, dtype)


def _stack_impls(depth: int, M: int, kept: float, total: int, device: torch.device, impl: str,
                 dtype: torch.dtype) -> list[str]:
    """`layer_impls` from the counts: M networks of `depth` layers with `kept` of `total` weights kept."""
    if impl == "dense":
        return ["dense"] * depth
    pnn = _native_nn()
    if impl == "sparse":
        if pnn is None:
            raise ValueError("impl='sparse' needs plantseek.nn.masked_linear, which is not available here")
        return ["sparse"] * depth
    if pnn is None or depth == 0:
        return ["dense"] * depth
    fraction = kept / max(1, total)
    if native_stack.available(device, dtype):
        small = total // max(1, M) <= STACK_SMALL_NETWORK
        return ["sparse" if fraction < STACK_CROSSOVER_DENSITY or small else "dense"] * depth
    if total < SPARSE_MIN_STACK_SIZE:
        return ["dense"] * depth
    return ["sparse" if fraction < _crossover(pnn, device) else "dense"] * depth


@dataclass
class _Plan:
    """How one training runs: the networks' order (those with something pruned first, then those with nothing
    pruned, the dense baselines), the blocks [start, stop) of that order, each block's path per layer, and
    the multiply-adds per sample of one forward pass (kept weights only on the sparse path)."""

    order: list[int]
    spans: list[tuple[int, int]]
    impls: list[list[str]]
    work: float

    def stack_only(self, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether every block of these (at least two) networks runs the native network-major step
        (`plantseek.stack`), whose networks can run in parallel, one per thread."""
        return (len(self.order) >= 2 and native_stack.available(device, dtype)
                and all(i == "sparse" for block in self.impls for i in block))


def _plan(masks: LayerMasks, impl: str, dtype: torch.dtype) -> _Plan:
    """One pass over the masks: per network its kept weights and whether nothing is pruned, then the blocks (a
    dense member would otherwise pull every layer of a sparse stack onto the dense path) and their paths."""
    M, device = masks[0][0].shape[0], masks[0][0].device
    kept = torch.zeros(M, dtype=torch.float64, device=device)
    full = torch.ones(M, dtype=torch.bool, device=device)
    per_network = 0
    for wm, bm in masks:
        w = wm.reshape(M, -1)
        kept += w.sum(dim=1)
        full &= w.all(dim=1) & bm.reshape(M, -1).all(dim=1)
        per_network += w.shape[1]
    kept_list, full_list = kept.tolist(), full.tolist()
    pruned = [k for k in range(M) if not full_list[k]]
    dense = [k for k in range(M) if full_list[k]]
    if not pruned or not dense or impl in ("dense", "sparse"):
        order, spans = list(range(M)), [(0, M)]
    else:
        order, spans = pruned + dense, [(0, len(pruned)), (len(pruned), M)]
    impls, work = [], 0.0
    for a, b in spans:
        block_kept = sum(kept_list[k] for k in order[a:b])
        block = _stack_impls(len(masks), b - a, block_kept, per_network * (b - a), device, impl, dtype)
        impls.append(block)
        work += block_kept if block and block[0] == "sparse" else per_network * (b - a)
    return _Plan(order, spans, impls, work)


def stack_only(masks: LayerMasks, impl: str = "auto", dtype: torch.dtype = torch.float32) -> bool:
    """Whether every block of a training of these (at least two) networks runs on the native network-major step
    (`plantseek.stack`), whose networks can run in parallel, one per thread."""
    return bool(masks) and _plan(masks, impl, dtype).stack_only(masks[0][0].device, dtype)


def forward(weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor, masks: LayerMasks | None = None,
            impls: Sequence[str] | None = None) -> Tensor:
    """Outputs (M, N, out) of the stacked MLPs for inputs (M, N, in); ReLU after every layer but the last.

    With `masks`, pruned parameters count as zero (dense layers multiply, sparse layers use the native path);
    without, the parameters are used as they are (training keeps them zero where pruned).
    """
    h = x
    depth = len(weights)
    pnn = None
    for l, (w, b) in enumerate(zip(weights, biases)):
        mode = impls[l] if impls is not None else "dense"
        if mode == "sparse":
            pnn = pnn or _native_nn()
            wm, bm = masks[l] if masks is not None else (None, None)
            h = pnn.masked_linear(h, w, wm, b, bm, impl="auto")
        else:
            if masks is not None:
                w = w * masks[l][0]
                b = b * masks[l][1]
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if l < depth - 1:
            h = torch.relu(h)
    return h


def train(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    masks: LayerMasks,
    x: Tensor,
    y: Tensor,
    *,
    kind: str,
    generators: Sequence[torch.Generator],
    config: TrainConfig | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    progress: bool = False,
    desc: str = "train",
    labels: Sequence[str] | None = None,
) -> TrainResult:
    """Train M masked MLPs together; returns new stacked parameters (inputs are not modified).

    weights/biases: per layer (M, out, in) / (M, out); masks: per layer bool pairs of those shapes;
    x: (M, N, in); y: (M, N, out) float targets (regression) or (M, N) int64 labels (classification);
    generators: one per run, on the run's device, used for the per-epoch shuffle; loss_fn(outputs, targets)
    may replace the built-in loss and must return the (M,) per-network losses.
    `labels` name the runs in error messages. Small problems run on one CPU thread (`cpu_threads_for`).
    """
    cfg = config or TrainConfig()
    if masks is None:
        raise ValueError("train needs masks (all-True masks for a network with nothing pruned)")
    M = check_stacked(weights, biases, masks)
    if x.dim() != 3 or x.shape[0] != M or x.shape[2] != weights[0].shape[2]:
        raise ValueError(f"inputs must be (M={M}, N, {weights[0].shape[2]}), got {tuple(x.shape)}")
    if y.shape[0] != M or y.shape[1] != x.shape[1]:
        raise ValueError(f"targets must have shape (M={M}, N={x.shape[1]}, ...), got {tuple(y.shape)}")
    if len(generators) != M:
        raise ValueError(f"need one generator per run: {M} runs, {len(generators)} generators")
    if x.shape[1] == 0:
        raise ValueError("no training samples")
    loss_of = loss_fn or (lambda out, tgt: per_network_loss(out, tgt, kind))
    labels = list(labels) if labels is not None else [f"run {k}" for k in range(M)]
    device, dtype = weights[0].device, weights[0].dtype
    plan = _plan(masks, cfg.impl, dtype)
    parallel = loss_fn is None and plan.stack_only(device, dtype)
    with cpu_threads_for(plan.work * cfg.batch_size, device, parallel_networks=parallel):
        gc_was_enabled = gc.isenabled()
        gc.disable()  # the loop allocates many small objects and no cycles: collections only cost time (7% here)
        try:
            return _train_loop(weights, biases, masks, x, y, plan=plan, cfg=cfg, loss_of=loss_of, labels=labels,
                               kind=kind, fused=loss_fn is None, generators=generators, progress=progress,
                               desc=desc)
        finally:
            if gc_was_enabled:
                gc.enable()


class _Block:
    """Networks [start, stop) of the (reordered) stack that share one path per layer, with their parameters.

    Layers on the native values path keep only their kept weights (`nn.sparse_linear_fm`: no dense weight,
    no dense gradient, optimiser state in proportion to the kept weights); dense layers keep their weight
    transposed, (M, in, out), which is the layout whose gradient autograd returns contiguous (the fused
    optimiser needs that; the (M, out, in) layout cost one copy per layer and step); other "sparse" layers
    (no native values path) keep (M, out, in) weights for `nn.masked_linear`. Weights and biases are zero where
    pruned and their gradients are masked after each step, except where nothing is pruned.
    """

    def __init__(self, start: int, stop: int, weights, biases, masks, impls: list[str], cfg: "TrainConfig"):
        self.start, self.stop = start, stop
        sl = slice(start, stop)
        wms = [(wm[sl], bm[sl]) for wm, bm in masks]
        self.impls = impls
        device, dtype = weights[0].device, weights[0].dtype
        self.pnn = _native_nn() if "sparse" in impls else None
        values = self.pnn is not None and _native_serves(device)
        # every layer on the values path of the CPU kernels: the whole step runs natively, network by network,
        # and updates the parameters itself (no autograd, no gradient masks)
        native = values and bool(impls) and all(i == "sparse" for i in impls) and native_stack.available(device, dtype)
        self.kinds: list[str] = []
        self.structures: dict[int, Any] = {}
        self.masks = wms
        self.params: list[Tensor] = []
        self.grad_masks: list[tuple[int, Tensor]] = []  # (index into params, mask) where something is pruned
        for l, (w, b, (wm, bm)) in enumerate(zip(weights, biases, wms)):
            w = w[sl].detach()
            if impls[l] == "sparse" and values:
                st = self.pnn.mask_structure(wm)
                self.structures[l] = st
                self.kinds.append("values")
                self.params.append(w.reshape(-1)[st.pos].clone().requires_grad_(not native))
            else:
                transposed = impls[l] == "dense"
                self.kinds.append("dense" if transposed else "masked")
                fw = wm.to(dtype)
                if transposed:
                    fw = fw.transpose(1, 2).contiguous()
                    w = w.transpose(1, 2)
                self.params.append((w * fw).contiguous().requires_grad_(True))
                if not bool(wm.all()):
                    self.grad_masks.append((len(self.params) - 1, fw))
            fb = bm.to(dtype)
            self.params.append((b[sl].detach() * fb).requires_grad_(not native))
            if not native and not bool(bm.all()):
                self.grad_masks.append((len(self.params) - 1, fb))
        self.stack = None
        if native:
            self.stack = native_stack.NativeStack(
                [self.structures[l] for l in range(len(self.kinds))], self.params[0::2], self.params[1::2],
                [None if bool(bm.all()) else bm for _, bm in wms], cfg)

    def forward(self, xb: Tensor) -> Tensor:
        """Outputs (stop - start, B, out); for a native stack, a leaf whose gradient `backward_step` takes.
        Consecutive layers on the values path stay feature-major (bias and ReLU
        fused into the kernels): activations are transposed only where such a chain starts and ends."""
        if self.stack is not None:
            return self.stack.forward(xb).requires_grad_(True)
        pnn, depth = self.pnn, len(self.kinds)
        h, ht, n = xb, None, xb.shape[1]
        for l, kind in enumerate(self.kinds):
            w, b, relu = self.params[2 * l], self.params[2 * l + 1], l < depth - 1
            if kind == "values":
                ht = pnn.sparse_linear_fm(pnn.to_feature_major(h) if ht is None else ht, w, self.structures[l], n, b,
                                          relu)
                continue
            if ht is not None:
                h, ht = pnn.from_feature_major(ht, n), None
            if kind == "masked":
                h = pnn.masked_linear(h, w, self.masks[l][0], b, self.masks[l][1], impl="auto")
            else:
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            if relu:
                h = torch.relu(h)
        return h if ht is None else pnn.from_feature_major(ht, n)

    def weights_out(self, shapes: Sequence[torch.Size]) -> list[Tensor]:
        """The trained (stop - start, out, in) weights, zero where pruned."""
        out = []
        for l, kind in enumerate(self.kinds):
            p = self.params[2 * l].detach()
            if kind == "values":  # scatter the kept values back into a dense weight
                dense = torch.zeros((self.stop - self.start,) + tuple(shapes[l][1:]), dtype=p.dtype, device=p.device)
                dense.view(-1)[self.structures[l].pos] = p
                p = dense
            elif kind == "dense":
                p = p.transpose(1, 2).contiguous()
            out.append(p)
        return out


def _train_loop(weights, biases, masks, x, y, *, plan, cfg, loss_of, labels, kind, fused, generators, progress, desc):
    """The epochs of `train` (arguments already checked). `fused`: the built-in loss of `kind`, which native
    stacks compute themselves (`plantseek.stack.NativeStack.train_step`)."""
    start = time.perf_counter()
    device, dtype = weights[0].device, weights[0].dtype
    M, N = x.shape[0], x.shape[1]
    order = plan.order
    if order != list(range(M)):
        idx = torch.tensor(order, device=device)
        weights = [w.index_select(0, idx) for w in weights]
        biases = [b.index_select(0, idx) for b in biases]
        masks = [(wm.index_select(0, idx), bm.index_select(0, idx)) for wm, bm in masks]
        x, y = x.index_select(0, idx), y.index_select(0, idx)
        generators = [generators[k] for k in order]
        labels = [labels[k] for k in order]
    blocks = [_Block(a, b, weights, biases, masks, impls, cfg) for (a, b), impls in zip(plan.spans, plan.impls)]
    # parameters that autograd and torch's optimisers handle (native stacks update their own)
    torch_blocks = [blk for blk in blocks if blk.stack is None]
    stacks = [blk for blk in blocks if blk.stack is not None]
    params = [p for blk in torch_blocks for p in blk.params]
    offsets = [0]
    for blk in torch_blocks:
        offsets.append(offsets[-1] + len(blk.params))
    masked = [(offsets[i] + k, m) for i, blk in enumerate(torch_blocks) for k, m in blk.grad_masks]
    masked_idx = [k for k, _ in masked]
    grad_masks = [m for _, m in masked]

    # optimiser: torch's Adam (fused: 3.9x faster than the ~8 foreach passes on bench/bench_sweep.py's stack),
    # or the elementwise SGD step of `sgd_step_`
    adam = AdamState(params, cfg) if cfg.optimizer == "adam" and params else None
    with torch.no_grad():
        bufs = [torch.zeros_like(p) for p in params] if cfg.optimizer == "sgd" else []
    step = 0
    alive = torch.ones(M, dtype=torch.bool, device=device)
    alive_host = [True] * M
    failed: list[Exception | None] = [None] * M
    last_loss = [float("nan")] * M
    history: list[list[float]] = []
    batches = [(s, min(s + cfg.batch_size, N)) for s in range(0, N, cfg.batch_size)]
    idx_m = torch.arange(M, device=device).unsqueeze(1)

    bar = None
    if progress and cfg.epochs > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs * len(batches), desc=desc, unit="step", leave=False, dynamic_ncols=True)
    try:
        for epoch in range(1, cfg.epochs + 1):
            if cfg.schedule == "cosine":
                lr = 0.5 * cfg.lr * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
            else:
                lr = cfg.lr
            perm = torch.stack([torch.randperm(N, generator=g, device=device) for g in generators])
            xs = x[idx_m, perm]
            ys = y[idx_m, perm]
            epoch_sum = torch.zeros(M, dtype=dtype, device=device)
            for s, e in batches:
                xb, yb = xs[:, s:e], ys[:, s:e]
                if fused:  # native stacks step whole (loss included); the other blocks through autograd
                    parts, tracked = [], []
                    for blk in blocks:
                        sl = slice(blk.start, blk.stop)
                        if blk.stack is not None:
                            parts.append(blk.stack.train_step(xb[sl], yb[sl], kind, lr, alive[sl]))
                        else:
                            parts.append(loss_of(blk.forward(xb[sl]), yb[sl]))
                            tracked.append(torch.where(alive[sl], parts[-1], torch.zeros_like(parts[-1])).sum())
                    losses = parts[0] if len(parts) == 1 else torch.cat(parts)
                    grads = list(torch.autograd.grad(sum(tracked), params)) if params else []
                else:  # a caller's loss sees every output at once: the stacks' outputs are autograd leaves
                    outs = [blk.forward(xb[blk.start:blk.stop]) for blk in blocks]
                    leaves = [o for o, blk in zip(outs, blocks) if blk.stack is not None]
                    losses = loss_of(outs[0] if len(outs) == 1 else torch.cat(outs), yb)
                    total = torch.where(alive, losses, torch.zeros_like(losses)).sum()
                    grads = list(torch.autograd.grad(total, params + leaves))
                    for blk, g in zip(stacks, grads[len(params):]):
                        blk.stack.backward_step(g, lr)
                    grads = grads[:len(params)]
                with torch.no_grad():
                    epoch_sum += losses.detach() * (e - s)
                if masked_idx:
                    with torch.no_grad():
                        torch._foreach_mul_([grads[i] for i in masked_idx], grad_masks)
                step += 1
                if adam is not None:
                    adam.step(grads, lr)
                elif params:
                    sgd_step_(params, grads, bufs, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              step=step)
            if bar is not None:
                bar.update(len(batches))
            mean = (epoch_sum / N).tolist()
            history.append(mean)
            for k in range(M):
                if not alive_host[k]:
                    continue
                if not math.isfinite(mean[k]):
                    alive_host[k] = False
                    failed[k] = TrainingDiverged(
                        f"training diverged: the loss became {mean[k]} in epoch {epoch} of {cfg.epochs} "
                        f"({labels[k]}; lr={cfg.lr}, optimizer={cfg.optimizer})", epoch, k)
                else:
                    last_loss[k] = mean[k]
            if not all(alive_host):
                alive = torch.tensor(alive_host, dtype=torch.bool, device=device)
                if not any(alive_host):
                    break
            if bar is not None:
                bar.set_postfix(loss=f"{_nanmean([last_loss[k] for k in range(M) if alive_host[k]]):.3g}")
    finally:
        if bar is not None:
            bar.close()
    parts = [blk.weights_out([w.shape for w in weights]) for blk in blocks]
    out_w = [torch.cat([p[l] for p in parts]) if len(parts) > 1 else parts[0][l] for l in range(len(weights))]
    out_b = [torch.cat([blk.params[2 * l + 1].detach() for blk in blocks]) for l in range(len(weights))]
    if order != list(range(M)):  # back to the caller's order
        inv = torch.empty(M, dtype=torch.long, device=device)
        inv[torch.tensor(order, device=device)] = torch.arange(M, device=device)
        out_w = [w.index_select(0, inv) for w in out_w]
        out_b = [b.index_select(0, inv) for b in out_b]
        back = {k: i for i, k in enumerate(order)}
        failed = [failed[back[k]] for k in range(M)]
        for f in failed:
            if isinstance(f, TrainingDiverged) and f.run is not None:
                f.run = order[f.run]
        last_loss = [last_loss[back[k]] for k in range(M)]
        history = [[h[back[k]] for k in range(M)] for h in history]
    return TrainResult(out_w, out_b, failed, last_loss, time.perf_counter() - start, history)


class AdamState:
    """Adam for a list of tensors through torch's functional `torch.optim.adam.adam`, fused where torch has a
    fused kernel for the device (one pass over each tensor instead of ~8 foreach passes).

    The functional form skips `torch.optim.Adam.step`'s per-call bookkeeping (0.35 ms of a 3 ms step of
    bench/bench_sweep.py's stack). Adam is elementwise, so M stacked networks get what M single runs get;
    masked gradients are zero, so the moments and the steps of pruned parameters stay zero."""

    def __init__(self, params: list[Tensor], cfg: TrainConfig):
        self.params, self.cfg = params, cfg
        device = params[0].device if params else torch.device("cpu")
        self.fused = device.type in ("cpu", "cuda") and all(
            p.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16) for p in params)
        with torch.no_grad():
            self.exp_avg = [torch.zeros_like(p) for p in params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        # fused kernels keep the step count on the device (float32), the foreach path on the CPU
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device if self.fused else "cpu") for p in params]

    @torch.no_grad()
    def step(self, grads: list[Tensor], lr: float) -> None:
        """One step with `grads` (laid out as the parameters: the fused kernel walks both linearly)."""
        cfg = self.cfg
        _functional_adam(self.params, [g.contiguous() for g in grads], self.exp_avg, self.exp_avg_sq, [], self.steps,
                         foreach=None if self.fused else True, fused=True if self.fused else None, amsgrad=False,
                         beta1=cfg.betas[0], beta2=cfg.betas[1], lr=lr, weight_decay=cfg.weight_decay, eps=cfg.eps,
                         maximize=False)


@torch.no_grad()
def sgd_step_(params: list[Tensor], grads: list[Tensor], bufs: list[Tensor], *, lr: float, momentum: float,
              weight_decay: float, step: int) -> None:
    """One SGD step in place (heavy-ball momentum as torch.optim.SGD: the first step copies the gradient)."""
    if weight_decay:
        torch._foreach_add_(grads, params, alpha=weight_decay)
    if momentum:
        if step == 1:
            torch._foreach_copy_(bufs, grads)
        else:
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads)
        torch._foreach_add_(params, bufs, alpha=-lr)
    else:
        torch._foreach_add_(params, grads, alpha=-lr)


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def evaluate_outputs(weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor, masks: LayerMasks | None = None,
                     chunk: int = 65536) -> Tensor:
    """No-grad outputs (M, N, out) in chunks of samples (parameters used as they are unless `masks`)."""
    with torch.no_grad():
        if x.shape[1] <= chunk:
            return forward(weights, biases, x, masks)
        return torch.cat([forward(weights, biases, x[:, s:s + chunk], masks) for s in range(0, x.shape[1], chunk)], dim=1)
