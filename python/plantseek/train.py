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
below ``kernels.sparse_linear.crossover_density()`` trains on its kept values only, through the native feature-major
kernels (`plantseek.kernels.sparse_linear.sparse_linear_fm`), when the native module serves the device
(`plantseek.impl_choice.layer_impls`); networks with nothing pruned (dense baselines) train in a block of their
own in the same loop (`_Block`). Adam is torch's fused kernel (`plantseek.optim.AdamState`). Python's cyclic
garbage collector is paused during the loop. Stacking networks into these tensors and back: `plantseek.batching`.

The loop runs over pre-shuffled, pre-batched tensors (one ``randperm`` per run and epoch from the run's own
generator, one gather, then slices); no Dataset indexing. A non-finite loss in some epoch marks that run as
failed with a `TrainingDiverged` error naming the epoch; the other runs of the batch carry on.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from . import native
from .kernels import sparse_linear as pnn
from .kernels import sparse_stack as native_stack
from .batching import LayerMasks, check_stacked
from .impl_choice import plan_training
from .losses import per_network_loss
from .optim import OPTIMIZERS, AdamState, sgd_step_
from .threads import cpu_threads_for

Tensor = torch.Tensor


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
    optimizer: str = "adam"  # one of plantseek.optim.OPTIMIZERS
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
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; available: {', '.join(OPTIMIZERS)}")
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


def forward(weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor, masks: LayerMasks | None = None) -> Tensor:
    """Outputs (M, N, out) of the stacked MLPs for inputs (M, N, in); ReLU after every layer but the last.

    With `masks`, pruned parameters count as zero; without, the parameters are used as they are (training keeps
    them zero where pruned).
    """
    h = x
    depth = len(weights)
    for l, (w, b) in enumerate(zip(weights, biases)):
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
    plan = plan_training(masks, cfg.impl, dtype)
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
        values = "sparse" in impls and native.module_for(device) is not None
        # every layer on the values path of the CPU kernels: the whole step runs natively, network by network,
        # and updates the parameters itself (no autograd, no gradient masks)
        native_step = values and all(i == "sparse" for i in impls) and native_stack.available(device, dtype)
        self.kinds: list[str] = []
        self.structures: dict[int, Any] = {}
        self.masks = wms
        self.params: list[Tensor] = []
        self.grad_masks: list[tuple[int, Tensor]] = []  # (index into params, mask) where something is pruned
        for l, (w, b, (wm, bm)) in enumerate(zip(weights, biases, wms)):
            w = w[sl].detach()
            if impls[l] == "sparse" and values:
                st = pnn.mask_structure(wm)
                self.structures[l] = st
                self.kinds.append("values")
                self.params.append(w.reshape(-1)[st.pos].clone().requires_grad_(not native_step))
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
            self.params.append((b[sl].detach() * fb).requires_grad_(not native_step))
            if not native_step and not bool(bm.all()):
                self.grad_masks.append((len(self.params) - 1, fb))
        self.stack = None
        if native_step:
            self.stack = native_stack.NativeStack(
                [self.structures[l] for l in range(len(self.kinds))], self.params[0::2], self.params[1::2],
                [None if bool(bm.all()) else bm for _, bm in wms], cfg)

    def forward(self, xb: Tensor) -> Tensor:
        """Outputs (stop - start, B, out); for a native stack, a leaf whose gradient `backward_step` takes.
        Consecutive layers on the values path stay feature-major (bias and ReLU
        fused into the kernels): activations are transposed only where such a chain starts and ends."""
        if self.stack is not None:
            return self.stack.forward(xb).requires_grad_(True)
        depth = len(self.kinds)
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
    stacks compute themselves (`plantseek.kernels.sparse_stack.NativeStack.train_step`)."""
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
            if f is not None:  # a TrainingDiverged naming its index in `order`
                f.run = order[f.run]
        last_loss = [last_loss[back[k]] for k in range(M)]
        history = [[h[back[k]] for k in range(M)] for h in history]
    return TrainResult(out_w, out_b, failed, last_loss, time.perf_counter() - start, history)


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
